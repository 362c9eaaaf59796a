"""The uncertainty-file parser: exact dataclasses for valid files, located messages for bad ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_hepguard.exceptions import UncertaintyFileError
from pytest_hepguard.uncertainties import (
    DataSpec,
    DecisionSpec,
    FeatureSpec,
    GateSpec,
    Ratio,
    UncertaintyModel,
    WorkingPoint,
    load_uncertainties,
    parse_uncertainties,
)

REPO = Path(__file__).resolve().parents[1]

FULL = """\
version: 1
features:
  jet_pt:   {relative: 0.02, min: 0}
  jet_eta:  {absolute: 0.005}
  n_tracks: {absolute: 1, integer: true, min: 0}
  sv_mass:  {relative: 0.05, min: 0, sentinel: -999}
  trk_ip: {absolute: 0.3, sentinel: [-999, 0]}
  width: {std: 0.1}
  jet_phi:  {frozen: true}
  asym: {up: 0.03, down: 0.01, relative: true}
decision:
  discriminant: {numerator: [b], denominator: [b, light]}
  classes: [b, c, light]
  signal: [b]
  background: [light]
  working_point: {efficiency: 0.70}
  output: auto
data:
  path: jets.root
  tree: Events
  label: label
  weight: null
gates:
  random: {epsilon: 1.0, max_fooling_rate: 0.02}
  fgsm:   {epsilon: 1.0, max_fooling_rate: 0.10}
  pgd:    {epsilon: 1.0, steps: 20, max_fooling_rate: 0.15, max_auc_drop: 0.02}
  pgd_big: {attack: pgd, epsilon: 2.0}
"""

#: The smallest valid file; bad-input cases append to it or replace it.
MINIMAL = "version: 1\nfeatures:\n  a: {absolute: 1}\n"


def write(tmp_path: Path, text: str, name: str = "unc.yaml") -> Path:
    """Write ``text`` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> UncertaintyModel:
    """Parse ``text`` as the file ``unc.yaml`` in ``tmp_path``."""
    return load_uncertainties(write(tmp_path, text))


def error_of(tmp_path: Path, text: str) -> str:
    """The message of the :class:`UncertaintyFileError` that ``text`` raises."""
    with pytest.raises(UncertaintyFileError) as info:
        load_text(tmp_path, text)
    return str(info.value)


def feature(name: str, kind: str | None, up: float, down: float, line: int, **kw) -> FeatureSpec:
    """A :class:`FeatureSpec` with its YAML line."""
    return FeatureSpec(name, kind, up, down, line=line, **kw)  # type: ignore[arg-type]


# ---- valid files ------------------------------------------------------------------------------


def test_full_example_gives_the_exact_model(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    model = load_uncertainties(path)
    gradient_defaults = {"gradient": "exact", "spsa_directions": 32, "spsa_delta": 0.01}
    pgd_defaults = {"random_start": True, "step_size": None, **gradient_defaults}
    expected = UncertaintyModel(
        features=(
            feature("jet_pt", "relative", 0.02, 0.02, 3, min=0.0),
            feature("jet_eta", "absolute", 0.005, 0.005, 4),
            feature("n_tracks", "absolute", 1.0, 1.0, 5, min=0.0, integer=True),
            feature("sv_mass", "relative", 0.05, 0.05, 6, min=0.0, sentinels=(-999.0,)),
            feature("trk_ip", "absolute", 0.3, 0.3, 7, sentinels=(-999.0, 0.0)),
            feature("width", "std", 0.1, 0.1, 8),
            feature("jet_phi", None, 0.0, 0.0, 9, frozen=True),
            feature("asym", "relative", 0.03, 0.01, 10),
        ),
        decision=DecisionSpec(
            discriminant=Ratio(numerator=(0,), denominator=(0, 2)),
            classes=("b", "c", "light"),
            signal=(0,),
            background=(2,),
            working_point=WorkingPoint(efficiency=0.70),
            output="auto",
        ),
        data=DataSpec(path=tmp_path / "jets.root", tree="Events", label="label", weight=None),
        gates=(
            GateSpec(
                "random",
                "random",
                {"epsilon": 1.0, "distribution": "gaussian"},
                {"max_fooling_rate": 0.02},
            ),
            GateSpec(
                "fgsm", "fgsm", {"epsilon": 1.0, **gradient_defaults}, {"max_fooling_rate": 0.10}
            ),
            GateSpec(
                "pgd",
                "pgd",
                {"epsilon": 1.0, "steps": 20, **pgd_defaults},
                {"max_fooling_rate": 0.15, "max_auc_drop": 0.02},
            ),
            GateSpec("pgd_big", "pgd", {"epsilon": 2.0, "steps": 10, **pgd_defaults}, {}),
        ),
        source=path,
    )
    assert model == expected
    assert model.feature_names == (
        "jet_pt",
        "jet_eta",
        "n_tracks",
        "sv_mass",
        "trk_ip",
        "width",
        "jet_phi",
        "asym",
    )
    assert [g.name for g in model.gates] == ["random", "fgsm", "pgd", "pgd_big"]
    assert all(isinstance(g.params["epsilon"], float) for g in model.gates)


def test_asymmetric_envelopes_in_each_kind(tmp_path: Path) -> None:
    text = (
        "version: 1\nfeatures:\n"
        "  a: {up: 0.3, down: 0.1, absolute: true}\n"
        "  b:\n    relative: true\n    up: 0.03\n    down: 0\n"
        "  c: {std: true, up: 1, down: 2}\n"
    )
    a, b, c = load_text(tmp_path, text).features
    assert (a.kind, a.up, a.down) == ("absolute", 0.3, 0.1)
    assert (b.kind, b.up, b.down, b.line) == ("relative", 0.03, 0.0, 4)
    assert (c.kind, c.up, c.down) == ("std", 1.0, 2.0)


def test_std_envelope(tmp_path: Path) -> None:
    (spec,) = load_text(tmp_path, "version: 1\nfeatures:\n  w: {std: 0.25, max: 3}\n").features
    assert spec == FeatureSpec("w", "std", 0.25, 0.25, max=3.0, line=3)


def test_frozen_feature_keeps_a_given_sigma(tmp_path: Path) -> None:
    (spec,) = load_text(
        tmp_path, "version: 1\nfeatures:\n  a: {relative: 0.1, frozen: true}\n"
    ).features
    assert (spec.kind, spec.up, spec.down, spec.frozen) == ("relative", 0.1, 0.1, True)


def test_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    (spec,) = load_text(tmp_path, "version: 1\nfeatures:\n  a: {relative: 2e-2}\n").features
    assert spec.up == pytest.approx(0.02)


def test_defaults_when_optional_sections_are_missing(tmp_path: Path) -> None:
    model = load_text(tmp_path, MINIMAL)
    assert model.decision == DecisionSpec()
    assert model.data == DataSpec()
    assert model.gates == ()


def test_null_gate_runs_its_attack_with_defaults(tmp_path: Path) -> None:
    (gate,) = load_text(tmp_path, MINIMAL + "gates:\n  fgsm:\n").gates
    defaults = {"epsilon": 1.0, "gradient": "exact", "spsa_directions": 32, "spsa_delta": 0.01}
    assert gate == GateSpec("fgsm", "fgsm", defaults, {})


def test_decision_forms(tmp_path: Path) -> None:
    named = "decision:\n  classes: [b, c, light]\n  discriminant: light\n  signal: c\n"
    spec = load_text(tmp_path, MINIMAL + named).decision
    assert (spec.discriminant, spec.signal, spec.background) == (2, (1,), None)
    spec = load_text(tmp_path, MINIMAL + "decision:\n  discriminant: argmax\n").decision
    assert spec.discriminant == "argmax"
    indexed = "decision: {discriminant: 1, signal: [1, 2], working_point: {cut: 0.5}}\n"
    spec = load_text(tmp_path, MINIMAL + indexed).decision
    assert (spec.discriminant, spec.signal) == (1, (1, 2))
    assert spec.working_point == WorkingPoint(cut=0.5)


def test_data_paths_and_one_hot_label(tmp_path: Path) -> None:
    data = "data:\n  path: sub/jets.h5\n  label: [is_b, is_light]\n  weight: w\n"
    spec = load_text(tmp_path, MINIMAL + data).data
    assert spec == DataSpec(tmp_path / "sub" / "jets.h5", None, ("is_b", "is_light"), "w")
    assert parse_uncertainties(MINIMAL + data).data.path == Path("sub/jets.h5")
    absolute = f"data: {{path: {tmp_path / 'x.root'}}}\n"
    assert load_text(tmp_path, MINIMAL + absolute).data.path == tmp_path / "x.root"


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = (
        "version: 1\nfeatures:\n  a: &rel {relative: 0.1, min: 0}\n  b: {<<: *rel, relative: 0.2}\n"
    )
    a, b = load_text(tmp_path, text).features
    assert (a.up, b.up, b.min) == (0.1, 0.2, 0.0)


def test_string_source_is_named_in_messages() -> None:
    with pytest.raises(UncertaintyFileError, match=r"^<string>, line 3: features\.a: "):
        parse_uncertainties("version: 1\nfeatures:\n  a: {}\n")


def test_docs_example_parses(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "uncertainties.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- tested: docs-example -->\n```yaml\n(.*?)\n```", docs, re.DOTALL)
    assert found, "docs/uncertainties.md lost its tested example"
    model = parse_uncertainties(found.group(1), tmp_path / "unc.yaml")
    assert model.feature_names[:3] == ("jet_pt", "jet_eta", "jet_phi")
    assert model.data.path == tmp_path / "jets.root"
    assert model.data.label == ("is_b", "is_c", "is_light")
    assert [g.attack for g in model.gates] == ["random", "fgsm", "pgd", "pgd", "random"]


def test_import_is_torch_free() -> None:
    code = (
        "import sys, pytest_hepguard.uncertainties; "
        "print(sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# ---- bad files --------------------------------------------------------------------------------

BAD = {
    "unknown_key": (
        MINIMAL.replace("absolute", "absolut"),
        3,
        "features.a.absolut",
        [
            "unknown key 'absolut'",
            "allowed keys: absolute, down, frozen, integer, max, min, relative, sentinel, std, up",
            "did you mean 'absolute'?",
        ],
    ),
    "unknown_top_level_key": (
        MINIMAL + "gate:\n  pgd:\n",
        4,
        "gate",
        [
            "allowed keys: constraints, correlations, data, decision, features, gates, groups, "
            "inputs, pyhf, version",
            "did you mean 'gates'?",
        ],
    ),
    "negative_sigma": (
        "version: 1\nfeatures:\n  a: {absolute: 1}\n  b:\n    relative: -0.1\n",
        5,
        "features.b.relative",
        ["sigma must be >= 0"],
    ),
    "infinite_sigma": (MINIMAL.replace("1}", ".inf}"), 3, "features.a.absolute", ["finite"]),
    "absolute_and_relative": (
        MINIMAL.replace("1}", "1, relative: 0.1}"),
        3,
        "features.a.relative",
        ["give only one of absolute, relative, std"],
    ),
    "no_sigma": (
        MINIMAL.replace("absolute: 1", "min: 0"),
        3,
        "features.a",
        ["one of absolute, relative, std, or `frozen: true`"],
    ),
    "asymmetric_with_numeric_kind": (
        MINIMAL.replace("1}", "0.2, up: 0.1, down: 0.3}"),
        3,
        "features.a.absolute",
        ["together with up/down", "up: 0.03, down: 0.01, relative: true"],
    ),
    "up_without_down": (
        "version: 1\nfeatures:\n  a:\n    relative: true\n    up: 0.1\n",
        5,
        "features.a.up",
        ["'up' given without 'down'"],
    ),
    "kind_true_without_up_down": (
        MINIMAL.replace("1}", "true}"),
        3,
        "features.a.absolute",
        ["without up and down"],
    ),
    "min_above_max": (
        "version: 1\nfeatures:\n  a:\n    absolute: 1\n    min: 2\n    max: 1\n",
        6,
        "features.a.max",
        ["max 1 is below min 2", "min <= max"],
    ),
    "boolean_for_number": (
        MINIMAL.replace("1}", "1, min: true}"),
        3,
        "features.a.min",
        ["got true (a boolean); expected a number"],
    ),
    "sentinel_not_a_number": (
        "version: 1\nfeatures:\n  a:\n    absolute: 1\n    sentinel:\n      - -999\n      - x\n",
        7,
        "features.a.sentinel[1]",
        ["got 'x'; expected a number"],
    ),
    "feature_name_not_a_string": (
        "version: 1\nfeatures:\n  a: {absolute: 1}\n  1: {absolute: 1}\n",
        4,
        "features.1",
        ["feature name 1 is not a string", "quote"],
    ),
    "missing_version": ("features:\n  a: {absolute: 1}\n", 1, "version", ["missing"]),
    "version_2": (
        MINIMAL.replace("version: 1", "version: 2"),
        1,
        "version",
        ["unsupported version 2; supported versions: 1"],
    ),
    "version_true": (MINIMAL.replace("version: 1", "version: true"), 1, "version", ["true"]),
    "empty_features": ("version: 1\nfeatures: {}\n", 2, "features", ["empty"]),
    "missing_features": ("version: 1\n", 1, "features", ["missing"]),
    "duplicate_feature": (
        MINIMAL + "  b: {absolute: 1}\n  a: {absolute: 2}\n",
        5,
        "features.a",
        ["duplicate key (first given on line 3)"],
    ),
    "duplicate_key_in_feature": (
        "version: 1\nfeatures:\n  a:\n    absolute: 1\n    absolute: 2\n",
        5,
        "features.a.absolute",
        ["duplicate key (first given on line 4)"],
    ),
    "unknown_class_in_signal": (
        MINIMAL + "decision:\n  classes: [b, c, light]\n  signal: [b, ligth]\n",
        6,
        "decision.signal[1]",
        ["unknown class 'ligth'", "one of b, c, light", "did you mean 'light'?"],
    ),
    "class_name_without_classes": (
        MINIMAL + "decision:\n  signal: b\n",
        5,
        "decision.signal",
        ["add `classes: [...]`"],
    ),
    "class_index_out_of_range": (
        MINIMAL + "decision:\n  classes: [b, light]\n  background: 2\n",
        6,
        "decision.background",
        ["only 2 classes are declared"],
    ),
    "duplicate_class_names": (
        MINIMAL + "decision:\n  classes: [b, b]\n",
        5,
        "decision.classes[1]",
        ["duplicate class name 'b'"],
    ),
    "signal_background_overlap": (
        MINIMAL
        + "decision:\n  classes: [b, c, light]\n  signal: [b, c]\n  background: [c, light]\n",
        7,
        "decision.background",
        ["class 'c' is also in signal", "must not overlap"],
    ),
    "working_point_with_both_keys": (
        MINIMAL + "decision:\n  working_point: {cut: 0.5, efficiency: 0.7}\n",
        5,
        "decision.working_point",
        ["both cut and efficiency given", "give exactly one of cut, efficiency"],
    ),
    "efficiency_above_one": (
        MINIMAL + "decision:\n  working_point:\n    efficiency: 1.5\n",
        6,
        "decision.working_point.efficiency",
        ["efficiency 1.5 is outside (0, 1)"],
    ),
    "bad_output_kind": (
        MINIMAL + "decision: {output: logit}\n",
        4,
        "decision.output",
        ["expected one of auto, probabilities, logits", "did you mean 'logits'?"],
    ),
    "empty_label_list": (MINIMAL + "data:\n  label: []\n", 5, "data.label", ["empty list"]),
    "unknown_attack": (
        MINIMAL + "gates:\n  pgd_big: {attack: pgdd, epsilon: 2}\n",
        5,
        "gates.pgd_big.attack",
        [
            "unknown attack 'pgdd'",
            "known attacks: fgsm, hidden, landscape, pgd, pyhf_impact, radius, random, scan, "
            "systematic, worst",
            "did you mean 'pgd'?",
        ],
    ),
    "unknown_attack_from_gate_name": (
        MINIMAL + "gates:\n  cw: {epsilon: 1}\n",
        5,
        "gates.cw",
        ["unknown attack 'cw'", "gate without `attack:` runs the attack of its name"],
    ),
    "unknown_gate_parameter": (
        MINIMAL + "gates:\n  pgd:\n    epsilon: 1\n    step: 5\n",
        7,
        "gates.pgd.step",
        [
            "unknown key 'step'",
            "allowed keys: attack, epsilon, gradient, max_auc_drop, max_efficiency_change, "
            "max_fooling_rate, max_fooling_rate_correct, max_mean_shift, max_output_ks, "
            "max_output_wasserstein, random_start, spsa_delta, spsa_directions, step_size, steps",
            "did you mean 'steps'?",
        ],
    ),
    "bad_epsilon": (
        MINIMAL + "gates:\n  pgd:\n    steps: 5\n    epsilon: -1\n",
        7,
        "gates.pgd.epsilon",
        ["parameter 'epsilon'", "expected a finite number > 0, got -1"],
    ),
    "bad_choice_parameter": (
        MINIMAL + "gates:\n  random: {distribution: normal}\n",
        5,
        "gates.random.distribution",
        ["expected one of gaussian, uniform, sign"],
    ),
    "negative_limit": (
        MINIMAL + "gates:\n  fgsm: {max_fooling_rate: -0.1}\n",
        5,
        "gates.fgsm.max_fooling_rate",
        ["a limit must be >= 0"],
    ),
}


@pytest.mark.parametrize(("text", "line", "key", "fragments"), BAD.values(), ids=BAD.keys())
def test_bad_input_is_located(
    tmp_path: Path, text: str, line: int, key: str, fragments: list[str]
) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'unc.yaml'}, line {line}: {key}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "version: 1\nfeatures:\n  a: {absolute: [1}\n")
    assert message.startswith(f"{tmp_path / 'unc.yaml'}, line 3, column "), message
    assert "malformed YAML" in message


def test_unsafe_tag_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "version: 1\nfeatures: !!python/object/apply:os.getcwd []\n")
    assert message.startswith(f"{tmp_path / 'unc.yaml'}, line 2, column "), message
    assert "malformed YAML" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(UncertaintyFileError, match=re.escape(f"{path}: no such file")):
        load_uncertainties(path)


@pytest.mark.parametrize("text", ["", "\n# only a comment\n"], ids=["empty", "comment"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'unc.yaml'}: the file is empty"), message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = error_of(tmp_path, "- version: 1\n")
    assert "line 1: top level: got a list" in message
