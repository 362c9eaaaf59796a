"""End-to-end tests of the hidden-systematics gates through the pytest plugin: the bundled
example (examples/unc.yaml with ``groups:``, ``correlations:``, ``constraints:`` and the gates
``systematic``, ``hidden``, ``worst``) run in pytest subprocesses on examples/tagger.pt and
examples/jets.root, from a copy of the uncertainty file in a temporary folder.

Covered: the JSON report's details of the three checks and the terminal's "hidden systematics"
line; ``--hepguard-save-perturbed`` (npz and parquet) with the fooling rate recomputed from the
saved model outputs; bad ``groups:``/``correlations:``/``constraints:`` refused with a message
naming the file and key, every input file unchanged; failing and passing gates.

The first 3000 events keep every run short; runs shared by several tests are module-scoped.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from example_runs import (
    CLASSES,
    EXAMPLE_YAML,
    FEATURES,
    MODEL,
    N_EVENTS,
    USAGE_ERROR,
    Run,
    assert_says,
    checks_by_name,
    example_columns,
    example_yaml,
    load_json,
    project,
    run_pytest,
    snapshot,
)

# -- helpers --------------------------------------------------------------------------------


def bvl_decisions(outputs: np.ndarray, cut: float) -> np.ndarray:
    """Tag decisions of class probabilities [n, (b, c, light)]: BvL = P(b) / (P(b) + P(light))
    above the cut (computed in the outputs' float32, as hepguard does)."""
    outputs = np.asarray(outputs, dtype=np.float32)
    b, light = outputs[:, CLASSES.index("b")], outputs[:, CLASSES.index("light")]
    return (b / (b + light)) > np.float32(cut)


def recomputed_fooling_rate(nominal: np.ndarray, perturbed: np.ndarray, cut: float) -> float:
    return float(np.mean(bvl_decisions(nominal, cut) != bvl_decisions(perturbed, cut)))


# -- shared runs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> tuple[Path, Run, dict]:
    """The example's systematic, hidden and worst gates on 3000 events, with a JSON report and
    the perturbed events saved as npz; the data and model files' hashes checked unchanged."""
    root = project(tmp_path_factory.mktemp("example"), example_yaml())
    before = snapshot(root)
    run = run_pytest(
        root,
        "-k",
        "systematic or hidden or worst",
        "--hepguard-json",
        "report.json",
        "--hepguard-save-perturbed",
        "perturbed",
    )
    assert run.returncode == 0, run.output
    after = snapshot(root)
    for name in ("DATA", "MODEL", "unc.yaml"):
        assert after[name] == before[name], name
    return root, run, load_json(root / "report.json")


# -- 1. the example's hidden-systematics gates ----------------------------------------------------


def test_example_report_has_systematic_hidden_and_worst_details(example_run) -> None:
    """The JSON report holds the three checks with their ``details``: the hidden check's
    certificate passed (every feature's KS p-value >= 0.05, max |delta rho| <= 0.01), the
    systematic check's up and down variation of each group, and the worst-case cascade."""
    _, run, report = example_run
    assert "3 passed, 4 deselected" in run.output  # random, fgsm, pgd, pyhf_impact
    assert report["passed"] is True
    checks = checks_by_name(report)
    assert list(checks) == ["systematic", "hidden", "worst"]
    for entry in checks.values():
        assert entry["n_events"] == N_EVENTS
        assert entry["passed"] is True and entry["outcome"] == "passed"

    hidden = checks["hidden"]
    assert hidden["attack"] == "hidden"
    details = hidden["details"]
    assert details["direction"] == "fool"
    assert 0 < details["kept"] <= details["candidates"]
    cert = details["certificate"]
    assert cert["passed"] is True and cert["violations"] == []
    features = {f["name"]: f for f in cert["features"]}
    # every movable feature is certified; frozen ones never move
    assert set(features) == set(FEATURES) - {"jet_phi", "n_sv"}
    for name, numbers in features.items():
        assert numbers["ks_pvalue"] >= 0.05, (name, numbers)
    assert cert["max_abs_delta_rho"] <= 0.01
    assert hidden["fooling_rate"] > 0.0
    assert hidden["envelope_violations"] == 0

    systematic = checks["systematic"]
    variations = {(v["group"], v["shift"]): v for v in systematic["details"]["variations"]}
    groups = ("JES", "track_resolution", "sv_calibration")
    assert set(variations) == {(g, s) for g in groups for s in ("up", "down")}
    worst_rate = max(v["fooling_rate"] for v in variations.values())
    assert systematic["fooling_rate"] == worst_rate
    group, shift = systematic["details"]["worst_variation"].split()
    assert variations[(group, shift)]["fooling_rate"] == worst_rate
    correlated = systematic["details"]["correlated"]
    assert correlated["draws"] == len(correlated["fooling_rates"]) > 0

    cascade = checks["worst"]["details"]["cascade"]
    assert [stage["attack"] for stage in cascade] == ["random", "fgsm", "pgd", "margin"]
    fooled = sum(stage["fooled"] for stage in cascade)
    assert fooled == pytest.approx(checks["worst"]["fooling_rate"] * N_EVENTS, abs=1e-6)


def test_terminal_hidden_systematics_line_has_the_ratio_of_the_json_rates(example_run) -> None:
    """The summary's "hidden systematics:" line states the hidden and systematic fooling rates
    of the JSON report and their ratio (to the printed precision)."""
    _, run, report = example_run
    checks = checks_by_name(report)
    hidden, systematic = checks["hidden"]["fooling_rate"], checks["systematic"]["fooling_rate"]
    assert systematic > 0
    lines = [line for line in run.output.splitlines() if line.startswith("hidden systematics:")]
    assert len(lines) == 1, run.output
    line = lines[0]
    assert f"'hidden' flips {hidden:.4f} of decisions" in line
    assert f"of 'systematic' ({systematic:.4f}, worst: " in line
    assert checks["systematic"]["details"]["worst_variation"] in line
    match = re.search(r", (\d+\.\d)x the ±1σ group shifts", line)
    assert match, line
    assert match.group(1) == f"{hidden / systematic:.1f}"
    assert abs(float(match.group(1)) - hidden / systematic) <= 0.05 + 1e-12


# -- 2. --hepguard-save-perturbed ----------------------------------------------------------------


def test_saved_hidden_npz_holds_the_perturbed_events_and_outputs(example_run) -> None:
    """``hidden.npz`` (and ``worst.npz``) are written; ``systematic`` (several samples) writes
    none. hidden.npz holds the example's features, the label and the nominal and perturbed
    model outputs; the fooling rate recomputed from these outputs (BvL against the JSON cut)
    equals the JSON's, the frozen features and labels equal the data file's, and the model
    outputs on the saved features are the saved perturbed outputs."""
    root, run, report = example_run
    folder = root / "perturbed"
    assert sorted(p.name for p in folder.iterdir()) == ["hidden.npz", "worst.npz"]
    assert f"hepguard --hepguard-save-perturbed: {folder / 'hidden.npz'}" in run.output
    hidden = checks_by_name(report)["hidden"]

    with np.load(folder / "hidden.npz", allow_pickle=False) as npz:
        saved = {key: npz[key] for key in npz.files}
    assert str(saved.pop("hepguard_report")) == "pytest-hepguard"  # hepguard's marker
    assert set(saved) == {*FEATURES, "label", "hepguard_nominal", "hepguard_perturbed"}
    for name in FEATURES:
        assert saved[name].shape == (N_EVENTS,), name
    assert saved["hepguard_nominal"].shape == (N_EVENTS, len(CLASSES))
    assert saved["hepguard_perturbed"].shape == (N_EVENTS, len(CLASSES))

    cut = hidden["cut"]
    rate = recomputed_fooling_rate(saved["hepguard_nominal"], saved["hepguard_perturbed"], cut)
    assert rate == pytest.approx(hidden["fooling_rate"], abs=1e-12)
    assert 0 < rate < 1

    nominal = example_columns(N_EVENTS)
    np.testing.assert_array_equal(saved["label"], nominal["label"])
    for frozen in ("jet_phi", "n_sv"):
        np.testing.assert_array_equal(saved[frozen], nominal[frozen].astype(np.float32))
    moved = [n for n in FEATURES if not np.array_equal(saved[n], nominal[n].astype(np.float32))]
    assert moved, "the hidden attack moved no feature"

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
        model = torch.jit.load(str(MODEL)).eval()
    x = torch.from_numpy(np.stack([saved[name] for name in FEATURES], axis=1))
    with torch.no_grad():
        outputs = model(x).numpy()
    np.testing.assert_allclose(outputs, saved["hepguard_perturbed"], rtol=1e-5, atol=1e-6)


def test_saved_parquet_matches_its_report(tmp_path: Path) -> None:
    """With ``--hepguard-perturbed-format parquet`` the hidden gate writes ``hidden.parquet``
    with the features, the label and one column per class of nominal and perturbed outputs;
    the recomputed fooling rate equals the JSON's; the data file is unchanged."""
    pq = pytest.importorskip("pyarrow.parquet")
    root = project(tmp_path, example_yaml())
    before = snapshot(root)
    run = run_pytest(
        root,
        "-k",
        "hidden",
        "--hepguard-json",
        "report.json",
        "--hepguard-save-perturbed",
        "out",
        "--hepguard-perturbed-format",
        "parquet",
    )
    assert run.returncode == 0, run.output
    after = snapshot(root)
    for name, digest in before.items():  # data, model and unc.yaml: unchanged
        assert after[name] == digest, name
    assert sorted(p.name for p in (root / "out").iterdir()) == ["hidden.parquet"]
    hidden = checks_by_name(load_json(root / "report.json"))["hidden"]

    table = pq.read_table(root / "out" / "hidden.parquet")
    outputs = [f"hepguard_{kind}_{k}" for kind in ("nominal", "perturbed") for k in range(3)]
    assert set(table.column_names) == {*FEATURES, "label", *outputs}
    assert table.num_rows == N_EVENTS
    columns = table.to_pydict()
    nominal = np.stack([columns[f"hepguard_nominal_{k}"] for k in range(3)], axis=1)
    perturbed = np.stack([columns[f"hepguard_perturbed_{k}"] for k in range(3)], axis=1)
    rate = recomputed_fooling_rate(nominal, perturbed, hidden["cut"])
    assert rate == pytest.approx(hidden["fooling_rate"], abs=1e-12)


def test_save_perturbed_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    """``--hepguard-save-perturbed`` inside a folder that does not exist stops the run (exit
    code 4) naming the path; nothing is created and no input changes."""
    root = project(tmp_path, example_yaml())
    before = snapshot(root)
    target = root / "missing" / "perturbed"
    run = run_pytest(root, "--hepguard-save-perturbed", "missing/perturbed")
    assert run.returncode == USAGE_ERROR, run.output
    assert_says(run.output, "ERROR: hepguard:", f"--hepguard-save-perturbed {target}")
    assert_says(run.output, f"the folder {root / 'missing'} does not exist")
    assert "Traceback" not in run.output
    assert not (root / "missing").exists()
    assert snapshot(root) == before


def test_save_perturbed_onto_a_file_is_refused(tmp_path: Path) -> None:
    """A file where the ``--hepguard-save-perturbed`` folder should be stops the run (exit code
    4) with a message naming it; the file is left as it was."""
    root = project(tmp_path, example_yaml())
    (root / "perturbed").write_text("my notes\n", encoding="utf-8")
    before = snapshot(root)
    run = run_pytest(root, "--hepguard-save-perturbed", "perturbed")
    assert run.returncode == USAGE_ERROR, run.output
    assert_says(
        run.output,
        f"--hepguard-save-perturbed {root / 'perturbed'}",
        "a file of that name is in the way",
    )
    assert "Traceback" not in run.output
    assert (root / "perturbed").read_text(encoding="utf-8") == "my notes\n"
    assert snapshot(root) == before


# -- 3. bad groups, correlations and constraints ------------------------------------------------


def run_refused(root: Path) -> str:
    """Run the audit with a JSON report; assert a non-zero exit (usage error), no traceback,
    no report, and every input file unchanged. Returns the output."""
    before = snapshot(root)
    run = run_pytest(root, "--hepguard-json", "report.json")
    assert run.returncode == USAGE_ERROR, run.output
    assert "Traceback" not in run.output and "INTERNALERROR" not in run.output, run.output
    assert not (root / "report.json").exists()
    assert snapshot(root) == before
    return run.output


THREE_GROUPS = """\
groups:
  A: {relative: {jet_pt: 0.02}}
  B: {absolute: {jet_eta: 0.005}}
  C: {relative: {sv_mass: 0.05}}
"""


def test_correlations_not_positive_semidefinite(tmp_path: Path) -> None:
    """A strongly, B strongly with C, A anti-correlated with C: no systematics can have these
    correlations. The run stops naming the file, ``correlations`` and every pair involved."""
    correlations = "correlations:\n  - [A, B, 0.9]\n  - [B, C, 0.9]\n  - [A, C, -0.9]\n"
    root = project(tmp_path, example_yaml(groups=THREE_GROUPS, correlations=correlations))
    output = run_refused(root)
    unc = root / "unc.yaml"
    lines = unc.read_text(encoding="utf-8").splitlines()
    pairs = ("[A, B, 0.9]", "[B, C, 0.9]", "[A, C, -0.9]")
    line_of = {pair: lines.index(f"  - {pair}") + 1 for pair in pairs}
    assert_says(
        output,
        "ERROR: hepguard:",
        f"{unc}, line {lines.index('correlations:') + 1}: correlations: the correlation matrix "
        "of the groups is not positive semi-definite",
        "no single pair's removal makes it valid",
    )
    for pair, line in line_of.items():
        assert_says(output, f"{pair} (line {line})")


def test_group_naming_an_unknown_feature(tmp_path: Path) -> None:
    """A group shifting a feature not declared under ``features:`` is refused with the file,
    the group's dotted key and the feature, and a suggestion."""
    groups = "groups:\n  JES: {relative: {jet_ptt: 0.02}}\n"
    root = project(tmp_path, example_yaml(groups=groups, correlations=""))
    output = run_refused(root)
    assert_says(
        output,
        f"{root / 'unc.yaml'}, line",
        "groups.JES.relative.jet_ptt: unknown feature 'jet_ptt'",
        "did you mean 'jet_pt'?",
    )


def test_integer_feature_in_a_relative_group(tmp_path: Path) -> None:
    """The integer feature n_tracks in a ``relative`` shift is refused: integer features move
    in whole steps."""
    groups = EXAMPLE_YAML.split("groups:", 1)[1].split("correlations:", 1)[0]
    groups = "groups:" + groups + "  tracking: {relative: {n_tracks: 0.1}}\n"
    root = project(tmp_path, example_yaml(groups=groups))
    output = run_refused(root)
    assert_says(
        output,
        f"{root / 'unc.yaml'}, line",
        "groups.tracking.relative.n_tracks",
        "feature 'n_tracks' is an integer feature in a relative shift",
    )


def test_unsatisfiable_constraints_fail_the_hidden_gate(tmp_path: Path) -> None:
    """``constraints: {ks_max: 0}`` leaves the hidden attack no perturbation to hide: its gate
    fails (exit code 1) saying it could not satisfy the constraints, and reports the nominal
    sample (no decision flipped)."""
    gates = "gates:\n  hidden: {epsilon: 1.0, max_fooling_rate: 0.5}\n"
    root = project(tmp_path, example_yaml(constraints="constraints: {ks_max: 0}\n", gates=gates))
    before = snapshot(root)
    run = run_pytest(root, "--hepguard-json", "report.json")
    assert run.returncode == 1, run.output
    assert "hepguard gate 'hidden' failed" in run.output
    assert "could not satisfy the constraints" in run.output
    assert "1 failed" in run.output
    after = snapshot(root)
    for name in ("DATA", "MODEL", "unc.yaml"):
        assert after[name] == before[name], name
    hidden = checks_by_name(load_json(root / "report.json"))["hidden"]
    assert hidden["passed"] is False
    assert hidden["failures"][0].startswith("could not satisfy the constraints")
    assert hidden["details"]["kept"] == 0
    assert hidden["fooling_rate"] == 0.0


# -- 4. gates ---------------------------------------------------------------------------------


def test_systematic_gate_fails_and_hidden_gate_passes(tmp_path: Path, example_run) -> None:
    """``systematic`` with max_fooling_rate 0.0001 fails (exit code 1) naming fooling_rate;
    ``hidden`` with a limit just above its rate (from the example run) passes."""
    limit = round(checks_by_name(example_run[2])["hidden"]["fooling_rate"] + 0.002, 4)
    gates = (
        "gates:\n"
        "  systematic: {epsilon: 1.0, max_fooling_rate: 0.0001}\n"
        f"  hidden: {{epsilon: 1.0, steps: 20, max_fooling_rate: {limit}}}\n"
    )
    root = project(tmp_path, example_yaml(gates=gates))
    run = run_pytest(root, "--hepguard-json", "report.json")
    assert run.returncode == 1, run.output
    assert "hepguard gate 'systematic' failed" in run.output
    assert "exceeds max_fooling_rate 0.0001" in run.output
    assert "1 failed, 1 passed" in run.output
    assert "hepguard gate 'hidden' failed" not in run.output
    report = load_json(root / "report.json")
    assert report["passed"] is False
    checks = checks_by_name(report)
    systematic = checks["systematic"]
    assert systematic["passed"] is False and systematic["outcome"] == "failed"
    assert systematic["failures"][0].startswith(f"fooling_rate {systematic['fooling_rate']:.4g}")
    assert systematic["fooling_rate"] > 0.0001
    hidden = checks["hidden"]
    assert hidden["passed"] is True and hidden["outcome"] == "passed"
    assert hidden["fooling_rate"] <= limit
