"""The ``pyhf:`` section of the uncertainty file and ``--hepguard-bins``: exact dataclasses for
valid sections (the docs' example included), located messages (file, line, dotted key, hint) for
bad ones, and the pyhf_impact gate limit kept to pyhf_impact gates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_hepguard.exceptions import UncertaintyFileError
from pytest_hepguard.uncertainties import PatchSpec, PyhfSpec, parse_bins, parse_uncertainties

REPO = Path(__file__).resolve().parents[1]

HEAD = """\
version: 1
features:
  jet_pt: {relative: 0.02, min: 0}
  trk_ip: {absolute: 0.3}
  jet_phi: {frozen: true}
decision:
  classes: [b, c, light]
  signal: [b]
  background: [light]
groups:
  JES: {relative: {jet_pt: 0.02}}
"""


def parse(text: str, tmp_path: Path):
    path = tmp_path / "unc.yaml"
    path.write_text(text, encoding="utf-8")
    return parse_uncertainties(text, path)


def test_defaults_without_the_section(tmp_path: Path) -> None:
    assert parse(HEAD, tmp_path).pyhf == PyhfSpec()
    assert PyhfSpec().bins == 10 and PyhfSpec().variations == ("systematic", "hidden")


def test_complete_section(tmp_path: Path) -> None:
    text = HEAD + (
        "pyhf:\n"
        "  bins: [0, 0.5, 0.8, 1]\n"
        "  range: [0.5, 1]\n"
        "  channel: SR\n"
        "  poi: mu_sig\n"
        "  samples: {sig: b, bkg: [c, 2]}\n"
        "  variations: [hidden]\n"
        "  epsilon: 0.5\n"
        "  steps: 5\n"
        "  normsys: false\n"
        "  symmetrize: [JES, hidden]\n"
        "  observations: [3, 4, 5]\n"
        "  patch: {workspace: ws/analysis.json, channel: SR, samples: {sig: ttH}}\n"
    )
    spec = parse(text, tmp_path).pyhf
    assert spec == PyhfSpec(
        bins=(0.0, 0.5, 0.8, 1.0),
        range=(0.5, 1.0),
        channel="SR",
        poi="mu_sig",
        samples=(("sig", (0,)), ("bkg", (1, 2))),
        variations=("hidden",),
        epsilon=0.5,
        steps=5,
        normsys=False,
        symmetrize=("JES", "hidden"),
        observations=(3.0, 4.0, 5.0),
        patch=PatchSpec(tmp_path / "ws" / "analysis.json", "SR", (("sig", "ttH"),)),
    )


def test_symmetrize_names_features_without_groups(tmp_path: Path) -> None:
    text = HEAD.split("groups:")[0] + "pyhf:\n  symmetrize: [trk_ip]\n"
    assert parse(text, tmp_path).pyhf.symmetrize == ("trk_ip",)


def test_docs_example_parses(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "uncertainties.md").read_text(encoding="utf-8")
    section = docs.split("## `pyhf`: templates, workspace and patch")[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    example = (REPO / "examples" / "unc.yaml").read_text(encoding="utf-8")
    head = example.split("\npyhf:")[0].split("\ngates:")[0] + "\n"
    spec = parse(head + block, tmp_path)
    assert spec.pyhf.bins == (0.0, 0.5, 0.8, 0.9, 0.95, 1.0)
    assert spec.pyhf.patch.samples == (("b_jets", "signal"), ("other_jets", "background"))
    (gate,) = spec.gates
    assert (gate.attack, gate.limits) == ("pyhf_impact", {"max_mu_uncertainty_increase": 0.4})


BAD = {
    "unknown_key": ("pyhf: {binz: 3}\n", 12, "pyhf.binz", "did you mean 'bins'?"),
    "zero_bins": ("pyhf: {bins: 0}\n", 12, "pyhf.bins", "a number of bins must be >= 1"),
    "decreasing_edges": (
        "pyhf:\n  bins: [0, 0.5, 0.4]\n",
        13,
        "pyhf.bins",
        "edges must be finite and increase strictly",
    ),
    "range": ("pyhf: {range: [1, 0]}\n", 12, "pyhf.range", "expected low < high"),
    "unknown_class": (
        "pyhf:\n  samples:\n    sig: [bb]\n",
        14,
        "pyhf.samples.sig[0]",
        "unknown class 'bb'; one of b, c, light; did you mean 'b'?",
    ),
    "class_in_two_samples": (
        "pyhf:\n  samples:\n    sig: [b]\n    bkg: [b, light]\n",
        15,
        "pyhf.samples.bkg",
        "class 'b' is already in sample 'sig'",
    ),
    "unknown_variation": (
        "pyhf: {variations: [hiden]}\n",
        12,
        "pyhf.variations[0]",
        "did you mean 'hidden'?",
    ),
    "unknown_symmetrize": (
        "pyhf: {symmetrize: [JER]}\n",
        12,
        "pyhf.symmetrize[0]",
        "expected one of hidden, JES",
    ),
    "negative_observation": (
        "pyhf: {observations: [1, -2]}\n",
        12,
        "pyhf.observations[1]",
        "a count must be >= 0",
    ),
    "epsilon": ("pyhf: {epsilon: 0}\n", 12, "pyhf.epsilon", "epsilon (sigmas) must be > 0"),
    "patch_missing_key": (
        "pyhf:\n  patch: {workspace: ws.json, channel: SR}\n",
        13,
        "pyhf.patch",
        "'samples' missing",
    ),
    "patch_unknown_sample": (
        "pyhf:\n  patch:\n    workspace: ws.json\n    channel: SR\n    samples: {bjets: ttH}\n",
        16,
        "pyhf.patch.samples.bjets",
        "'bjets' is not a hepguard sample; one of b, c, light",
    ),
    "limit_of_another_attack": (
        "gates:\n  pgd: {max_mu_uncertainty_increase: 0.1}\n",
        13,
        "gates.pgd.max_mu_uncertainty_increase",
        "a limit of the pyhf_impact check, not of pgd",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_section_is_located(case: str, tmp_path: Path) -> None:
    tail, line, key, hint = BAD[case]
    with pytest.raises(UncertaintyFileError) as err:
        parse(HEAD + tail, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'unc.yaml'}, line {line}: {key}: "), message
    assert hint in message


def test_bins_option() -> None:
    assert parse_bins("20") == 20
    assert parse_bins(" 0, 0.5,1 ") == (0.0, 0.5, 1.0)
    for bad, hint in (
        ("0", "a number of bins must be >= 1"),
        ("x", "expected a number of bins (20) or comma-separated edges"),
        ("0,0.5,0.5", "edges must be finite and increase strictly"),
        ("0,inf", "edges must be finite"),
        ("1", None),
    ):
        if hint is None:
            assert parse_bins(bad) == 1
            continue
        with pytest.raises(UncertaintyFileError, match=re.escape(hint)):
            parse_bins(bad)
