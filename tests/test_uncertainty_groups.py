"""Nuisance groups, their correlations and the constraints of the uncertainty file: exact
dataclasses for valid sections, located messages (file, line, dotted key, hint) for bad ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_hepguard.exceptions import UncertaintyFileError
from pytest_hepguard.uncertainties import (
    ConstraintSpec,
    GroupShift,
    GroupSpec,
    UncertaintyModel,
    load_uncertainties,
    parse_uncertainties,
)

REPO = Path(__file__).resolve().parents[1]

EXAMPLE = """\
version: 1
features:
  jet_pt:         {relative: 0.02, min: 0}
  jet_mass:       {relative: 0.02, min: 0}
  trk_ip2d_sig_1: {absolute: 0.3}
  trk_ip2d_sig_2: {absolute: 0.3}
groups:
  JES: {relative: {jet_pt: 0.02, jet_mass: 0.02}}
  track_resolution: {absolute: {trk_ip2d_sig_1: 0.3, trk_ip2d_sig_2: 0.3}, per_event: true}
correlations:
  - [JES, track_resolution, 0.2]
constraints:
  ks_max: 0.01
  ks_pvalue_min: 0.05
  jsd_max: 0.06
  corr_max: 0.01
  corr_frob_max: 0.006
  jsd_bins: 100
"""

#: Features (lines 3-7) and the `groups:` key on line 8; bad groups start on line 9.
FEATURES = """\
version: 1
features:
  jet_pt:   {relative: 0.02, min: 0}
  jet_mass: {relative: 0.02, min: 0}
  n_tracks: {absolute: 1, integer: true, min: 0}
  jet_phi:  {frozen: true}
  trk_ip:   {absolute: 0.3}
groups:
"""

#: Three valid groups (lines 9-11) and the `correlations:` key on line 12; pairs from line 13.
GROUPS = (
    FEATURES
    + """\
  JES: {relative: {jet_pt: 0.02, jet_mass: 0.02}}
  JER: {relative: {jet_pt: 0.05}, per_event: true}
  TRK: {absolute: {trk_ip: 0.3}}
correlations:
"""
)

MINIMAL = "version: 1\nfeatures:\n  a: {absolute: 1}\n"


def load_text(tmp_path: Path, text: str) -> UncertaintyModel:
    path = tmp_path / "unc.yaml"
    path.write_text(text, encoding="utf-8")
    return load_uncertainties(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(UncertaintyFileError) as info:
        load_text(tmp_path, text)
    return str(info.value)


# ---- valid files ------------------------------------------------------------------------------


def test_example_gives_the_exact_dataclasses(tmp_path: Path) -> None:
    model = load_text(tmp_path, EXAMPLE)
    assert model.groups == (
        GroupSpec(
            "JES",
            (
                GroupShift("jet_pt", "relative", 0.02, 0.02),
                GroupShift("jet_mass", "relative", 0.02, 0.02),
            ),
            per_event=False,
            line=8,
        ),
        GroupSpec(
            "track_resolution",
            (
                GroupShift("trk_ip2d_sig_1", "absolute", 0.3, 0.3),
                GroupShift("trk_ip2d_sig_2", "absolute", 0.3, 0.3),
            ),
            per_event=True,
            line=9,
        ),
    )
    assert model.correlations == (("JES", "track_resolution", 0.2),)
    assert model.constraints == ConstraintSpec(
        ks_max=0.01,
        ks_pvalue_min=0.05,
        jsd_max=0.06,
        corr_max=0.01,
        corr_frob_max=0.006,
        jsd_bins=100,
    )
    assert all(isinstance(s.up, float) for g in model.groups for s in g.shifts)
    assert model.group_correlation() == [[1.0, 0.2], [0.2, 1.0]]


def test_asymmetric_shifts_and_both_kinds_in_one_group(tmp_path: Path) -> None:
    text = FEATURES + (
        "  mixed:\n"
        "    relative: {jet_pt: {up: 0.03, down: 0.01}}\n"
        "    absolute:\n"
        "      trk_ip: {down: 0.2, up: 0.4}\n"
        "      n_tracks: 2\n"
    )
    (group,) = load_text(tmp_path, text).groups
    assert group == GroupSpec(
        "mixed",
        (
            GroupShift("jet_pt", "relative", 0.03, 0.01),
            GroupShift("trk_ip", "absolute", 0.4, 0.2),
            GroupShift("n_tracks", "absolute", 2.0, 2.0),
        ),
        line=9,
    )


def test_integer_feature_takes_whole_steps(tmp_path: Path) -> None:
    text = FEATURES + "  mult: {absolute: {n_tracks: {up: 1.0, down: 3}}}\n"
    (group,) = load_text(tmp_path, text).groups
    assert group.shifts == (GroupShift("n_tracks", "absolute", 1.0, 3.0),)


def test_a_feature_may_be_in_several_groups(tmp_path: Path) -> None:
    model = load_text(tmp_path, GROUPS + "  - [JES, JER, -0.3]\n")
    assert [s.feature for g in model.groups for s in g.shifts].count("jet_pt") == 2


def test_group_correlation_matrix(tmp_path: Path) -> None:
    model = load_text(tmp_path, GROUPS + "  - [TRK, JES, 0.5]\n  - [JER, JES, -0.25]\n")
    assert model.correlations == (("TRK", "JES", 0.5), ("JER", "JES", -0.25))
    assert model.group_correlation() == [
        [1.0, -0.25, 0.5],
        [-0.25, 1.0, 0.0],
        [0.5, 0.0, 1.0],
    ]


def test_no_correlations_gives_the_identity(tmp_path: Path) -> None:
    model = load_text(tmp_path, GROUPS.removesuffix("correlations:\n"))
    assert model.correlations == ()
    assert model.group_correlation() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("rho", [1, -1])
def test_full_correlation_is_positive_semidefinite(tmp_path: Path, rho: int) -> None:
    model = load_text(tmp_path, GROUPS + f"  - [JES, JER, {rho}]\n  - [JES, TRK, 0]\n")
    assert model.group_correlation()[0][1] == rho


def test_singular_but_consistent_matrix_is_accepted(tmp_path: Path) -> None:
    """Three fully correlated groups: eigenvalues 3, 0, 0 (within the tolerance)."""
    pairs = "  - [JES, JER, 1]\n  - [JER, TRK, 1]\n  - [JES, TRK, 1]\n"
    assert len(load_text(tmp_path, GROUPS + pairs).correlations) == 3


def test_many_groups_check_quickly(tmp_path: Path) -> None:
    """40 groups with an equicorrelated (PSD) block of 0.5 between them all."""
    features = "".join(f"  f{i}: {{absolute: 1}}\n" for i in range(40))
    groups = "".join(f"  g{i}: {{absolute: {{f{i}: 1}}}}\n" for i in range(40))
    pairs = "".join(f"  - [g{i}, g{j}, 0.5]\n" for i in range(40) for j in range(i + 1, 40))
    text = f"version: 1\nfeatures:\n{features}groups:\n{groups}correlations:\n{pairs}"
    model = load_text(tmp_path, text)
    assert len(model.correlations) == 780
    assert model.group_correlation()[3][17] == 0.5


def test_constraint_defaults_when_absent(tmp_path: Path) -> None:
    model = load_text(tmp_path, MINIMAL)
    assert model.groups == () and model.correlations == ()
    assert model.constraints == ConstraintSpec()
    assert model.constraints == ConstraintSpec(None, 0.05, 0.06, 0.01, 0.006, 100)
    assert model.group_correlation() == []


@pytest.mark.parametrize("section", ["constraints:\n", "constraints: {}\n"], ids=["null", "empty"])
def test_empty_constraints_take_the_defaults(tmp_path: Path, section: str) -> None:
    assert load_text(tmp_path, MINIMAL + section).constraints == ConstraintSpec()


def test_keys_not_given_keep_their_defaults(tmp_path: Path) -> None:
    spec = load_text(tmp_path, MINIMAL + "constraints:\n  jsd_max: 0.1\n  jsd_bins: 50\n")
    assert spec.constraints == ConstraintSpec(jsd_max=0.1, jsd_bins=50)


def test_null_disables_a_limit(tmp_path: Path) -> None:
    text = MINIMAL + "constraints:\n  ks_pvalue_min: null\n  corr_max: null\n  jsd_max:\n"
    spec = load_text(tmp_path, text).constraints
    assert spec == ConstraintSpec(ks_pvalue_min=None, jsd_max=None, corr_max=None)
    assert spec.corr_frob_max == 0.006


def test_unsatisfiable_ks_max_zero_parses(tmp_path: Path) -> None:
    spec = load_text(tmp_path, MINIMAL + "constraints: {ks_max: 0, corr_frob_max: 0}\n")
    assert (spec.constraints.ks_max, spec.constraints.corr_frob_max) == (0.0, 0.0)
    assert isinstance(spec.constraints.ks_max, float)


def test_boundary_constraint_values_parse(tmp_path: Path) -> None:
    text = MINIMAL + "constraints: {ks_max: 1, ks_pvalue_min: 1, jsd_max: 1, corr_max: 2}\n"
    spec = load_text(tmp_path, text).constraints
    assert (spec.ks_max, spec.ks_pvalue_min, spec.jsd_max, spec.corr_max) == (1, 1, 1, 2)
    assert load_text(tmp_path, MINIMAL + "constraints: {jsd_bins: 2}\n").constraints.jsd_bins == 2


def test_multi_input_group_names_a_per_constituent_feature(tmp_path: Path) -> None:
    text = """\
version: 1
features:
  jet_pt: {relative: 0.02, min: 0}
  trk_pt: {relative: 0.05, min: 0}
  trk_d0: {absolute: 0.002}
inputs:
  jets: [jet_pt]
  tracks: {features: [trk_pt, trk_d0], per: constituent, length: 25}
groups:
  tracking: {absolute: {trk_d0: 0.001}, relative: {trk_pt: 0.01}, per_event: true}
  JES: {relative: {jet_pt: 0.02}}
correlations:
  - [tracking, JES, 0.1]
"""
    model = load_text(tmp_path, text)
    assert [i.name for i in model.inputs] == ["jets", "tracks"]
    assert model.groups[0] == GroupSpec(
        "tracking",
        (
            GroupShift("trk_d0", "absolute", 0.001, 0.001),
            GroupShift("trk_pt", "relative", 0.01, 0.01),
        ),
        per_event=True,
        line=10,
    )


def test_docs_groups_example_parses(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "uncertainties.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- tested: groups-example -->\n```yaml\n(.*?)\n```", docs, re.DOTALL)
    assert found, "docs/uncertainties.md lost its groups example"
    model = parse_uncertainties(found.group(1), tmp_path / "unc.yaml")
    assert [g.name for g in model.groups] == ["JES", "JER", "track_resolution"]
    assert [g.per_event for g in model.groups] == [False, True, True]
    assert model.groups[0].shifts[0] == GroupShift("jet_pt", "relative", 0.02, 0.02)
    assert model.groups[2].shifts[0] == GroupShift("trk_ip2d_sig_1", "absolute", 0.3, 0.25)
    assert model.correlations == (("JES", "JER", 0.3), ("JES", "track_resolution", 0.2))
    assert model.constraints == ConstraintSpec(ks_max=None, ks_pvalue_min=None, jsd_bins=50)


# ---- bad files --------------------------------------------------------------------------------

BAD = {
    "group_unknown_feature": (
        FEATURES + "  JES: {relative: {jet_pt: 0.02, jet_mas: 0.02}}\n",
        9,
        "groups.JES.relative.jet_mas",
        [
            "unknown feature 'jet_mas'",
            "declared under features: (jet_pt, jet_mass, n_tracks, jet_phi, trk_ip)",
            "did you mean 'jet_mass'?",
        ],
    ),
    "group_frozen_feature": (
        FEATURES + "  JES:\n    relative:\n      jet_pt: 0.02\n      jet_phi: 0.01\n",
        12,
        "groups.JES.relative.jet_phi",
        ["feature 'jet_phi' is frozen", "frozen features never move"],
    ),
    "group_integer_feature_relative": (
        FEATURES + "  mult: {relative: {n_tracks: 0.1}}\n",
        9,
        "groups.mult.relative.n_tracks",
        [
            "integer feature in a relative shift",
            "integer features move in whole steps: give an absolute sigma of whole steps",
        ],
    ),
    "group_integer_feature_fractional_sigma": (
        FEATURES + "  mult: {absolute: {n_tracks: 0.5}}\n",
        9,
        "groups.mult.absolute.n_tracks",
        ["got 0.5 for an integer feature", "give an absolute sigma of whole steps (>= 1)"],
    ),
    "group_integer_feature_fractional_down": (
        FEATURES + "  mult:\n    absolute:\n      n_tracks:\n        up: 1\n        down: 1.5\n",
        13,
        "groups.mult.absolute.n_tracks.down",
        ["got 1.5 for an integer feature", "whole steps (>= 1)"],
    ),
    "group_feature_twice": (
        FEATURES + "  JES:\n    absolute: {jet_pt: 1}\n    relative: {jet_pt: 0.02}\n",
        11,
        "groups.JES.relative.jet_pt",
        [
            "feature 'jet_pt' is already shifted by this group (under absolute)",
            "a feature may appear only once per group",
        ],
    ),
    "group_feature_duplicate_key": (
        FEATURES + "  JES:\n    relative:\n      jet_pt: 0.02\n      jet_pt: 0.03\n",
        12,
        "groups.JES.relative.jet_pt",
        ["duplicate key (first given on line 11)"],
    ),
    "group_zero_sigma": (
        FEATURES + "  JES: {relative: {jet_pt: 0}}\n",
        9,
        "groups.JES.relative.jet_pt",
        ["got 0", "a group's sigma must be > 0"],
    ),
    "group_negative_up": (
        FEATURES + "  JES:\n    relative:\n      jet_pt: {up: -0.02, down: 0.02}\n",
        11,
        "groups.JES.relative.jet_pt.up",
        ["got -0.02", "must be > 0"],
    ),
    "group_sigma_not_a_number": (
        FEATURES + "  JES: {relative: {jet_pt: two}}\n",
        9,
        "groups.JES.relative.jet_pt",
        ["got 'two'; expected a number"],
    ),
    "group_up_without_down": (
        FEATURES + "  JES: {relative: {jet_pt: {up: 0.03}}}\n",
        9,
        "groups.JES.relative.jet_pt",
        ["'down' missing", "needs both up and down"],
    ),
    "group_unknown_side": (
        FEATURES + "  JES: {relative: {jet_pt: {up: 0.03, dwn: 0.01}}}\n",
        9,
        "groups.JES.relative.jet_pt.dwn",
        ["unknown key 'dwn'", "allowed keys: down, up", "did you mean 'down'?"],
    ),
    "group_unknown_key": (
        FEATURES + "  JES:\n    relative: {jet_pt: 0.02}\n    per_evnt: true\n",
        11,
        "groups.JES.per_evnt",
        [
            "unknown key 'per_evnt'",
            "allowed keys: absolute, per_event, relative",
            "did you mean 'per_event'?",
        ],
    ),
    "group_std_kind": (
        FEATURES + "  JES: {std: {jet_pt: 0.1}}\n",
        9,
        "groups.JES.std",
        ["unknown key 'std'", "allowed keys: absolute, per_event, relative"],
    ),
    "group_without_shifts": (
        FEATURES + "  JES: {per_event: true}\n",
        9,
        "groups.JES",
        ["no shifts given", "absolute: {feature: sigma} and/or relative: {feature: fraction}"],
    ),
    "group_empty_kind": (
        FEATURES + "  JES:\n    relative: {}\n",
        10,
        "groups.JES.relative",
        ["empty", "a mapping of feature name -> sigma"],
    ),
    "group_per_event_not_boolean": (
        FEATURES + "  JES: {relative: {jet_pt: 0.02}, per_event: 1}\n",
        9,
        "groups.JES.per_event",
        ["got 1; expected true or false"],
    ),
    "group_not_a_mapping": (
        FEATURES + "  JES: [jet_pt]\n",
        9,
        "groups.JES",
        ["got a list", "expected a mapping such as {relative: {jet_pt: 0.02, jet_mass: 0.02}}"],
    ),
    "group_name_not_a_string": (
        FEATURES + "  1: {relative: {jet_pt: 0.02}}\n",
        9,
        "groups.1",
        ["group name 1 is not a string", "quote the name"],
    ),
    "groups_empty": (FEATURES.replace("groups:\n", "groups: {}\n"), 8, "groups", ["empty"]),
    "correlations_not_a_list": (
        GROUPS.replace("correlations:\n", "correlations: {JES: 0.2}\n"),
        12,
        "correlations",
        ["got a mapping", "expected a list of [group, group, rho] entries"],
    ),
    "correlation_two_items": (
        GROUPS + "  - [JES, JER]\n",
        13,
        "correlations[0]",
        ["got a list of 2", "expected [group, group, rho], e.g. [JES, JER, 0.2]"],
    ),
    "correlation_not_a_list": (
        GROUPS + "  - [JES, JER, 0.1]\n  - {JES: JER}\n",
        14,
        "correlations[1]",
        ["got a mapping", "expected [group, group, rho]"],
    ),
    "correlation_unknown_group": (
        GROUPS + "  - [JES, JERR, 0.2]\n",
        13,
        "correlations[0][1]",
        ["unknown group 'JERR'", "one of the groups: JES, JER, TRK", "did you mean 'JER'?"],
    ),
    "correlation_group_not_a_string": (
        GROUPS + "  - [1, JER, 0.2]\n",
        13,
        "correlations[0][0]",
        ["unknown group 1", "one of the groups: JES, JER, TRK"],
    ),
    "correlation_without_groups": (
        MINIMAL + "correlations:\n  - [A, B, 0.1]\n",
        5,
        "correlations[0][0]",
        ["group 'A' but no groups are declared", "declare the systematics under groups: first"],
    ),
    "correlation_group_with_itself": (
        GROUPS + "  - [JES, JES, 0.2]\n",
        13,
        "correlations[0]",
        ["group 'JES' paired with itself", "pair two different groups"],
    ),
    "correlation_pair_twice": (
        GROUPS + "  - [JES, JER, 0.2]\n  - [TRK, JES, 0.1]\n  - [JER, JES, 0.3]\n",
        15,
        "correlations[2]",
        ["the pair JER, JES is already given on line 13", "give each pair once"],
    ),
    "correlation_rho_above_one": (
        GROUPS + "  - [JES, JER, 1.5]\n",
        13,
        "correlations[0][2]",
        ["rho 1.5 is outside [-1, 1]", "a correlation in [-1, 1]"],
    ),
    "correlation_rho_below_minus_one": (
        GROUPS + "  - [JES, JER, -1.01]\n",
        13,
        "correlations[0][2]",
        ["rho -1.01 is outside [-1, 1]"],
    ),
    "correlation_rho_not_a_number": (
        GROUPS + "  - [JES, JER, high]\n",
        13,
        "correlations[0][2]",
        ["got 'high'; expected a number"],
    ),
    "not_psd_no_single_fix": (
        GROUPS + "  - [JES, JER, 0.9]\n  - [JER, TRK, 0.9]\n  - [JES, TRK, -0.9]\n",
        12,
        "correlations",
        [
            "not positive semi-definite (smallest eigenvalue -0.8)",
            "no single pair's removal makes it valid",
            "the pairs involved: [JES, JER, 0.9] (line 13), [JER, TRK, 0.9] (line 14), "
            "[JES, TRK, -0.9] (line 15)",
        ],
    ),
    "not_psd_one_culprit": (
        GROUPS + "  - [JES, JER, 0.5]\n  - [JER, TRK, 0.5]\n  - [JES, TRK, -0.9]\n",
        15,
        "correlations[2]",
        [
            "not positive semi-definite",
            "removing [JES, TRK, -0.9] (line 15) alone makes it valid",
            "loosen or remove that pair",
        ],
    ),
    "not_psd_two_culprits": (
        GROUPS + "  - [JES, JER, 0.9]\n  - [JER, TRK, 0.9]\n  - [JES, TRK, -0.2]\n",
        12,
        "correlations",
        [
            "not positive semi-definite (smallest eigenvalue -0.377)",
            "removing any one of these pairs alone makes it valid: "
            "[JES, JER, 0.9] (line 13), [JER, TRK, 0.9] (line 14); loosen or remove one",
        ],
    ),
    "not_psd_involved_pairs_only": (
        GROUPS.replace("  TRK:", "  X: {absolute: {jet_mass: 1}}\n  TRK:").replace(
            "correlations:", "\ncorrelations:"
        )
        + "  - [JES, X, 0.1]\n  - [JES, JER, 0.9]\n  - [JER, TRK, 0.9]\n  - [JES, TRK, -0.9]\n",
        14,
        "correlations",
        [
            "no single pair's removal makes it valid; the pairs involved: "
            "[JES, JER, 0.9] (line 16), [JER, TRK, 0.9] (line 17), [JES, TRK, -0.9] (line 18); "
            "loosen them"
        ],
    ),
    "constraint_unknown_key": (
        MINIMAL + "constraints:\n  jsd_max: 0.05\n  ks_pvalue: 0.01\n",
        6,
        "constraints.ks_pvalue",
        [
            "unknown key 'ks_pvalue'",
            "allowed keys: corr_frob_max, corr_max, jsd_bins, jsd_max, ks_max, ks_pvalue_min",
            "did you mean 'ks_pvalue_min'?",
        ],
    ),
    "constraints_not_a_mapping": (
        MINIMAL + "constraints: [jsd_max]\n",
        4,
        "constraints",
        ["got a list", "expected a mapping such as {jsd_max: 0.06}"],
    ),
    "constraint_ks_max_above_one": (
        MINIMAL + "constraints:\n  ks_max: 1.5\n",
        5,
        "constraints.ks_max",
        ["got 1.5", "ks_max must be in [0, 1], or null to disable it"],
    ),
    "constraint_ks_pvalue_min_negative": (
        MINIMAL + "constraints:\n  ks_pvalue_min: -0.05\n",
        5,
        "constraints.ks_pvalue_min",
        ["got -0.05", "ks_pvalue_min must be in [0, 1]"],
    ),
    "constraint_jsd_max_above_one": (
        MINIMAL + "constraints:\n  jsd_max: 2\n",
        5,
        "constraints.jsd_max",
        ["got 2", "jsd_max must be in [0, 1]"],
    ),
    "constraint_corr_max_above_two": (
        MINIMAL + "constraints:\n  corr_max: 2.5\n",
        5,
        "constraints.corr_max",
        ["got 2.5", "corr_max must be in [0, 2]"],
    ),
    "constraint_corr_frob_max_negative": (
        MINIMAL + "constraints:\n  corr_frob_max: -0.1\n",
        5,
        "constraints.corr_frob_max",
        ["got -0.1", "corr_frob_max must be >= 0, or null to disable it"],
    ),
    "constraint_not_a_number": (
        MINIMAL + "constraints:\n  jsd_max: small\n",
        5,
        "constraints.jsd_max",
        ["got 'small'; expected a number"],
    ),
    "constraint_boolean": (
        MINIMAL + "constraints:\n  corr_max: true\n",
        5,
        "constraints.corr_max",
        ["got true (a boolean); expected a number"],
    ),
    "constraint_jsd_bins_one": (
        MINIMAL + "constraints:\n  jsd_bins: 1\n",
        5,
        "constraints.jsd_bins",
        ["got 1", "expected a whole number of histogram bins >= 2"],
    ),
    "constraint_jsd_bins_fractional": (
        MINIMAL + "constraints:\n  jsd_bins: 10.5\n",
        5,
        "constraints.jsd_bins",
        ["got 10.5", "whole number of histogram bins >= 2"],
    ),
    "constraint_jsd_bins_null": (
        MINIMAL + "constraints:\n  jsd_max: 0.1\n  jsd_bins: null\n",
        6,
        "constraints.jsd_bins",
        ["got null", "whole number of histogram bins >= 2"],
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
