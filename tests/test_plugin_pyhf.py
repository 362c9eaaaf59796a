"""End-to-end tests of the pyhf export through the pytest plugin: the bundled example
(examples/unc.yaml with its ``pyhf:`` section and ``pyhf_impact`` gate) run in pytest subprocesses
on examples/tagger.pt and examples/jets.root, from a copy of the uncertainty file and of
examples/analysis_workspace.json in a temporary folder.

Covered: ``--hepguard-pyhf`` (a workspace pyhf validates, builds and fits), the templates against
numpy histograms of the TorchScript model's own outputs on hand-shifted events, the
``pyhf_impact`` numbers against fits written here with pyhf and MINUIT on the analysis workspace
with and without ``--hepguard-pyhf-patch``'s patch, the patch on a fresh
``pyhf.simplemodels`` workspace, bad inputs refused with every user file unchanged, and the
failing gate.

The first 3000 events keep every run short; runs shared by several tests are module-scoped.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from example_runs import (
    CLASSES,
    EXAMPLE_UNC,
    FEATURES,
    MODEL,
    N_EVENTS,
    USAGE_ERROR,
    WORKSPACE,
    Run,
    assert_says,
    checks_by_name,
    example_columns,
    example_yaml,
    load_json,
    project,
    replace_once,
    run_pytest,
    snapshot,
)

from pytest_hepguard.attacks import check_params
from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import load_events
from pytest_hepguard.models import load_model

#: The example's pyhf samples (unc.yaml ``pyhf.samples``) as label sets, and its 10 equal bins.
SAMPLES = {"b_jets": (0,), "other_jets": (1, 2)}
EDGES = np.linspace(0.0, 1.0, 11)

#: The hepguard nuisance parameters of the example: one per group, and the hidden attack.
HEPGUARD_PARAMETERS = {
    "hepguard_systematic_JES",
    "hepguard_systematic_track_resolution",
    "hepguard_systematic_sv_calibration",
    "hepguard_hidden",
}

#: Relative tolerance of a fit repeated here against hepguard's.
FIT_RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- helpers --------------------------------------------------------------------------------


def sample_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.isin(labels, classes) for name, classes in SAMPLES.items()}


@contextmanager
def minuit_backend() -> Iterator[None]:
    """pyhf's numpy backend (float64) with MINUIT; the global backend restored afterwards."""
    import pyhf

    before = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0), precision="64b")
    try:
        with warnings.catch_warnings():
            # pyhf 0.7 validates with jsonschema's deprecated RefResolver
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        pyhf.set_backend(*before)


def fit_poi(spec: dict) -> tuple[float, float]:
    """Best fit and Hesse uncertainty of the POI of workspace ``spec`` (its first measurement)
    on its own observations, fitted here directly with pyhf and MINUIT."""
    import pyhf

    with minuit_backend():
        workspace = pyhf.Workspace(spec)
        model = workspace.model()
        fitted = pyhf.infer.mle.fit(workspace.data(model), model, return_uncertainties=True)
        poi = model.config.poi_index
        return float(fitted[poi, 0]), float(fitted[poi, 1])


def apply_patch(spec: dict, patch: list[dict]) -> dict:
    import jsonpatch

    return jsonpatch.apply_patch(copy.deepcopy(spec), patch)


def assert_patch_carries_relative_effects(
    patch: list[dict], spec: dict, templates: dict, mapping: dict[str, str]
) -> None:
    """Recompute each ``add`` of hepguard's patch from the JSON report's templates: a histosys
    has ``hi_data = ws_nominal * (up / sum(up) * sum(nominal)) / nominal`` per bin (the shape
    part of cabinetry's split carried over relative to the workspace's nominal), a normsys the
    yield ratios ``sum(up) / sum(nominal)`` and ``sum(down) / sum(nominal)``; no other
    operation than the leading ``test``s and these ``add``s."""
    channel = spec["channels"][0]
    ws_nominal = {s["name"]: np.asarray(s["data"], dtype=np.float64) for s in channel["samples"]}
    index = {s["name"]: i for i, s in enumerate(channel["samples"])}
    nominal = {s["name"]: np.asarray(s["nominal"], dtype=np.float64) for s in templates["samples"]}
    tests = [op for op in patch if op["op"] == "test"]
    adds = [op for op in patch if op["op"] == "add"]
    assert patch == tests + adds
    assert {"op": "test", "path": "/channels/0/name", "value": channel["name"]} in tests
    for ws_sample in mapping.values():
        path = f"/channels/0/samples/{index[ws_sample]}/name"
        assert {"op": "test", "path": path, "value": ws_sample} in tests
    expected = []
    for variation in templates["variations"]:
        sample = variation["sample"]
        up, down = np.asarray(variation["up"]), np.asarray(variation["down"])
        nom = nominal[sample]
        if np.array_equal(up, nom) and np.array_equal(down, nom):
            continue
        ws = mapping[sample]
        total = nom.sum()
        shapes = [hist * total / hist.sum() for hist in (up, down)]
        hi, lo = (
            np.where(nom > 0, ws_nominal[ws] * shape / np.where(nom > 0, nom, 1.0), ws_nominal[ws])
            for shape in shapes
        )
        expected.append((variation["name"], ws, "histosys", hi, lo))
        ratios = (up.sum() / total, down.sum() / total)
        if max(abs(r - 1.0) for r in ratios) > 1e-9:
            expected.append((variation["name"], ws, "normsys", *ratios))
    assert len(adds) == len(expected), (adds, expected)
    for op, (name, ws, kind, hi, lo) in zip(adds, expected, strict=True):
        assert op["path"] == f"/channels/0/samples/{index[ws]}/modifiers/-"
        value = op["value"]
        assert (value["name"], value["type"]) == (name, kind)
        if kind == "histosys":
            np.testing.assert_allclose(value["data"]["hi_data"], hi, rtol=1e-12)
            np.testing.assert_allclose(value["data"]["lo_data"], lo, rtol=1e-12)
        else:
            assert value["data"] == pytest.approx({"hi": hi, "lo": lo}, rel=1e-12)


# -- shared runs and references -------------------------------------------------------------


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> tuple[Path, Run, dict]:
    """The example (every gate, pyhf_impact included) on 3000 events writing the workspace, the
    patch and the JSON report; the user's files checked unchanged."""
    root = project(tmp_path_factory.mktemp("example"), example_yaml())
    before = snapshot(root)
    run = run_pytest(
        root,
        "--hepguard-pyhf",
        "ws.json",
        "--hepguard-pyhf-patch",
        "patch.json",
        "--hepguard-json",
        "r.json",
    )
    assert run.returncode == 0, run.output
    after = snapshot(root)
    for name in ("DATA", "MODEL", "WORKSPACE", "unc.yaml", "analysis_workspace.json"):
        assert after[name] == before[name], name
    assert set(after) - set(before) == {"ws.json", "patch.json", "r.json"}
    return root, run, load_json(root / "r.json")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def impact(example_run) -> dict:
    """``details.pyhf`` of the example's ``pyhf_impact`` check."""
    return checks_by_name(example_run[2])["pyhf_impact"]["details"]["pyhf"]


@pytest.fixture(scope="module")
def tagger():
    """The TorchScript tagger, loaded with torch alone (no hepguard wrapper)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
        module = torch.jit.load(str(MODEL), map_location="cpu")
    return module.eval()


def bvl(module, rows: np.ndarray) -> np.ndarray:
    """BvL = P(b) / (P(b) + P(light)) of the tagger at ``rows`` [n, 11], in the outputs'
    float32 (as hepguard computes it), all rows in one forward pass."""
    import torch

    with torch.no_grad():
        p = module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).numpy()
    b, light = p[:, CLASSES.index("b")], p[:, CLASSES.index("light")]
    return b / (b + light)


def histograms(disc: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """numpy's histogram of ``disc`` per sample over the example's 10 bins."""
    return {
        name: np.histogram(disc[mask], bins=EDGES)[0].astype(np.float64)
        for name, mask in sample_masks(labels).items()
    }


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    return example_columns(N_EVENTS)


@pytest.fixture(scope="module")
def in_process(columns):
    """An auditor of the example built in this process on the same 3000 events, keeping the
    perturbed rows of every check, and its templates."""
    import torch

    unc = EXAMPLE_UNC
    events = load_events(
        unc.data.path, unc.feature_names, tree="Events", label="label", max_events=N_EVENTS
    )
    np.testing.assert_array_equal(events.labels, columns["label"])
    model = load_model(MODEL, torch.device("cpu"))
    auditor = Auditor(model, events, unc, on_perturbed=lambda *args: None)
    templates, _ = auditor.templates()
    return auditor, templates


def assert_counts_match(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    """Equal counts but for events on a bin edge where float32 rounding may tip them: at most 1
    event per bin, at most 2 over all bins, the same total."""
    diff = np.abs(np.asarray(ours) - reference)
    assert ours.sum() == reference.sum(), (what, ours, reference)
    assert diff.max() <= 1 and diff.sum() <= 2, (what, ours, reference)


# -- 1. the complete workspace ------------------------------------------------------------------


def test_workspace_builds_and_fits_in_pyhf(example_run, impact, columns) -> None:
    """``--hepguard-pyhf`` writes a workspace pyhf validates, whose model has the POI ``mu``,
    the staterror and the four hepguard nuisance parameters; its samples' yields are the
    JSON's templates and count every event of their classes; MINUIT fits the Asimov data
    back to mu = 1."""
    import pyhf

    root, run, _ = example_run
    assert f"hepguard --hepguard-pyhf: {root / 'ws.json'}" in run.output
    spec = load_json(root / "ws.json")
    assert isinstance(spec, dict)
    assert spec["measurements"][0]["name"] == "hepguard"
    with minuit_backend():
        workspace = pyhf.Workspace(spec)
        model = workspace.model()
        assert set(model.config.parameters) == {"mu", "staterror_hepguard", *HEPGUARD_PARAMETERS}
        assert model.config.poi_name == "mu"
        data = workspace.data(model)
        fitted = pyhf.infer.mle.fit(data, model, return_uncertainties=True)
    poi = model.config.poi_index
    mu_hat, mu_err = float(fitted[poi, 0]), float(fitted[poi, 1])
    assert mu_hat == pytest.approx(1.0, abs=1e-3)
    assert 0.0 < mu_err < 1.0

    templates = {s["name"]: s for s in impact["templates"]["samples"]}
    assert impact["templates"]["edges"] == pytest.approx(EDGES.tolist(), abs=1e-15)
    samples = {s["name"]: s for s in spec["channels"][0]["samples"]}
    assert list(samples) == ["b_jets", "other_jets"]
    masks = sample_masks(columns["label"])
    for name, sample in samples.items():
        assert sample["data"] == templates[name]["nominal"]
        assert sum(sample["data"]) == masks[name].sum()  # unit weights, every BvL in [0, 1]
        modifiers = {(m["name"], m["type"]): m for m in sample["modifiers"]}
        stat = modifiers[("staterror_hepguard", "staterror")]["data"]
        np.testing.assert_allclose(stat, np.sqrt(sample["data"]), rtol=1e-12)
        assert (("mu", "normfactor") in modifiers) == (name == "b_jets")
    observed = np.sum([s["data"] for s in samples.values()], axis=0)
    np.testing.assert_allclose(spec["observations"][0]["data"], observed, rtol=1e-12)


# -- 2. the templates against numpy ------------------------------------------------------------


def test_nominal_and_jes_templates_match_numpy_histograms(in_process, columns, tagger) -> None:
    """The nominal templates and the JES variation (jet_pt times 1.02 and 0.98, shifted here by
    hand) equal numpy's histograms of the TorchScript model's BvL on the same events; the
    variations move events between bins only (every BvL stays in [0, 1]), so hepguard writes
    them as shape-only histosys with up/down as they are."""
    _, templates = in_process
    np.testing.assert_allclose(templates.edges, EDGES, rtol=0, atol=1e-15)
    x = np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float32)
    labels = columns["label"]
    nominal = histograms(bvl(tagger, x), labels)
    by_name = {s.name: s for s in templates.samples}
    assert list(by_name) == list(SAMPLES)
    assert [s.signal for s in templates.samples] == [True, False]
    for name, reference in nominal.items():
        assert_counts_match(by_name[name].nominal, reference, f"nominal {name}")
        np.testing.assert_array_equal(by_name[name].sumw2, by_name[name].nominal)
    assert nominal["b_jets"].sum() == 735 and nominal["other_jets"].sum() == 2265

    # JES: relative 2 % on jet_pt (min 0 is no bound here: every jet_pt is positive)
    pt = FEATURES.index("jet_pt")
    assert x[:, pt].min() > 0
    jes = templates.varied["hepguard_systematic_JES"]
    moved = 0
    for side, factor in (("up", 1.02), ("down", 0.98)):
        shifted = x.copy()
        shifted[:, pt] = (x[:, pt].astype(np.float64) * factor).astype(np.float32)
        reference = histograms(bvl(tagger, shifted), labels)
        for name, hist in reference.items():
            ours = jes[name][0 if side == "up" else 1]
            assert_counts_match(ours, hist, f"JES {side} {name}")
            moved += int(np.abs(hist - nominal[name]).sum())
    assert moved > 0, "JES moved no event between bins"

    for m in templates.modifiers:
        assert m.normsys is None, m  # no normalisation effect over the full [0, 1] range
        up, down = templates.varied[m.name][m.sample]
        np.testing.assert_allclose(m.histosys[0], up, rtol=1e-12)
        np.testing.assert_allclose(m.histosys[1], down, rtol=1e-12)
    assert set(templates.names) == HEPGUARD_PARAMETERS


def test_hidden_templates_match_the_model_on_the_perturbed_rows(in_process, tagger) -> None:
    """The hidden variation's up and down templates equal numpy's histograms of the TorchScript
    model's BvL on the attack's perturbed rows (kept by the auditor), and the attack pushes
    BvL the way it says: up raises the mean BvL, down lowers it."""
    auditor, templates = in_process
    hidden = templates.varied["hepguard_hidden"]
    labels = auditor.labels
    nominal_mean = float(np.mean(auditor.nominal_disc))
    for side, sign in (("up", 1.0), ("down", -1.0)):
        params = check_params("hidden", {"epsilon": 1.0, "steps": 20, "direction": side})
        rows, probs = auditor._rows_of[("hidden", tuple(sorted(params.items())))]
        assert rows.shape == (N_EVENTS, len(FEATURES))
        disc = bvl(tagger, rows)
        np.testing.assert_allclose(disc, auditor.discriminant(probs), rtol=1e-5, atol=1e-6)
        assert sign * (float(np.mean(disc)) - nominal_mean) > 0, side
        for name, reference in histograms(disc, labels).items():
            assert_counts_match(hidden[name][0 if side == "up" else 1], reference, f"{side} {name}")


# -- 3. the impact fit against pyhf --------------------------------------------------------------

#: The example's ``pyhf.patch.samples``: hepguard sample -> workspace sample.
MAPPING = {"b_jets": "signal", "other_jets": "background"}


def test_impact_fit_agrees_with_a_direct_pyhf_fit(example_run, impact) -> None:
    """``pyhf_impact`` fitted the analysis workspace with the patch applied: fitting the copy
    of analysis_workspace.json here with pyhf and MINUIT, with and without the written patch,
    gives its mu_err and mu_err_without; mu_uncertainty_increase is their ratio minus 1; the
    hepguard parameters are the four of the example; the terminal line states the numbers."""
    root, run, report = example_run
    check = checks_by_name(report)["pyhf_impact"]
    assert check["passed"] is True and check["outcome"] == "passed"
    assert impact["workspace"] == f"{root / 'analysis_workspace.json'} with the patch"
    assert impact["poi"] == "mu"
    analysis = load_json(root / "analysis_workspace.json")
    patch = load_json(root / "patch.json")
    assert isinstance(analysis, dict) and isinstance(patch, list)

    mu_hat, mu_err = fit_poi(apply_patch(analysis, patch))
    mu_hat_without, mu_err_without = fit_poi(analysis)
    assert impact["mu_err"] == pytest.approx(mu_err, rel=FIT_RTOL)
    assert impact["mu_err_without"] == pytest.approx(mu_err_without, rel=FIT_RTOL)
    assert impact["mu_hat"] == pytest.approx(mu_hat, abs=FIT_RTOL)
    assert impact["mu_hat_without"] == pytest.approx(mu_hat_without, abs=FIT_RTOL)
    assert mu_hat == pytest.approx(1.0, abs=1e-3)  # Asimov observations, nuisances at 0
    assert mu_err > mu_err_without > 0

    increase = impact["mu_err"] / impact["mu_err_without"] - 1.0
    assert check["mu_uncertainty_increase"] == pytest.approx(increase, rel=1e-12)
    assert impact["increase"] == pytest.approx(increase, rel=1e-12)
    assert 0 < increase <= 0.40  # the example's gate
    assert {p["name"] for p in impact["parameters"]} == HEPGUARD_PARAMETERS
    for p in impact["parameters"]:
        assert 0 < p["constraint"] <= 1.0 + 1e-6, p  # the data can only constrain
        assert abs(p["pull"]) < 1e-3, p  # Asimov: no pull
    name, side = impact["largest_impact"].split()
    assert name in HEPGUARD_PARAMETERS and side in ("up", "down")
    lines = [line for line in run.output.splitlines() if line.startswith("pyhf: σ(mu) ")]
    assert len(lines) == 1, run.output
    assert lines[0].startswith(
        f"pyhf: σ(mu) {mu_err_without:.4g} → {mu_err:.4g} ({increase:+.1%}) with the 4 hepguard "
        f"nuisance parameters, on {impact['workspace']}"
    )

    assert_patch_carries_relative_effects(patch, analysis, impact["templates"], MAPPING)
    assert f"hepguard --hepguard-pyhf-patch: {root / 'patch.json'}" in run.output


# -- 4. the patch on a workspace pyhf.simplemodels makes ------------------------------------------

#: Yields of an analysis of its own, unlike the example's (10 bins).
FRESH_SIGNAL = [12.0, 9.0, 7.5, 6.0, 5.0, 5.5, 7.0, 11.0, 20.0, 160.0]
FRESH_BACKGROUND = [900.0, 240.0, 90.0, 55.0, 40.0, 36.0, 31.0, 33.0, 41.0, 95.0]


def test_example_workspace_is_a_simplemodels_workspace() -> None:
    """examples/analysis_workspace.json is what pyhf.simplemodels.uncorrelated_background makes
    of its yields (10 % uncorrelated background uncertainty), with Asimov observations."""
    import pyhf

    spec = load_json(WORKSPACE)
    assert isinstance(spec, dict)
    samples = {s["name"]: s["data"] for s in spec["channels"][0]["samples"]}
    with minuit_backend():
        model = pyhf.simplemodels.uncorrelated_background(
            signal=samples["signal"],
            bkg=samples["background"],
            bkg_uncertainty=[0.1 * b for b in samples["background"]],
        )
    assert spec["channels"] == model.spec["channels"]
    asimov = np.add(samples["signal"], samples["background"])
    np.testing.assert_allclose(spec["observations"][0]["data"], asimov, rtol=1e-12)


def test_patch_applies_to_a_fresh_simplemodels_workspace(tmp_path: Path) -> None:
    """A workspace made here with pyhf.simplemodels (10 bins, other yields, another name) as
    ``pyhf.patch.workspace``: the patch carries hepguard's relative effects onto its yields,
    applies with jsonpatch, validates and fits; ``pyhf_impact`` fitted exactly that."""
    import pyhf

    with minuit_backend():
        model = pyhf.simplemodels.uncorrelated_background(
            signal=FRESH_SIGNAL,
            bkg=FRESH_BACKGROUND,
            bkg_uncertainty=[0.05 * b for b in FRESH_BACKGROUND],
        )
    observed = [s + b for s, b in zip(FRESH_SIGNAL, FRESH_BACKGROUND, strict=True)]
    fresh = {
        "channels": model.spec["channels"],
        "observations": [{"name": "singlechannel", "data": observed}],
        "measurements": [{"name": "fresh", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    text = replace_once(
        example_yaml(gates="gates:\n  pyhf_impact: {max_mu_uncertainty_increase: 10}\n"),
        "workspace: analysis_workspace.json",
        "workspace: fresh_ws.json",
    )
    root = project(tmp_path, text)
    (root / "fresh_ws.json").write_text(json.dumps(fresh, indent=1), encoding="utf-8")
    before = snapshot(root)
    run = run_pytest(root, "--hepguard-pyhf-patch", "patch.json", "--hepguard-json", "r.json")
    assert run.returncode == 0, run.output
    after = snapshot(root)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"patch.json", "r.json"}

    patch = load_json(root / "patch.json")
    assert isinstance(patch, list)
    impact = checks_by_name(load_json(root / "r.json"))["pyhf_impact"]["details"]["pyhf"]
    assert impact["workspace"] == f"{root / 'fresh_ws.json'} with the patch"
    assert_patch_carries_relative_effects(patch, fresh, impact["templates"], MAPPING)

    patched = apply_patch(fresh, patch)
    with minuit_backend():
        patched_model = pyhf.Workspace(patched).model()
    assert set(patched_model.config.parameters) == {
        "mu",
        "uncorr_bkguncrt",
        *HEPGUARD_PARAMETERS,
    }
    mu_hat, mu_err = fit_poi(patched)
    _, mu_err_without = fit_poi(fresh)
    assert mu_hat == pytest.approx(1.0, abs=1e-3)
    assert impact["mu_err"] == pytest.approx(mu_err, rel=FIT_RTOL)
    assert impact["mu_err_without"] == pytest.approx(mu_err_without, rel=FIT_RTOL)
    assert mu_err > mu_err_without


# -- 5. bad inputs ------------------------------------------------------------------------------


def run_refused(root: Path, *args: str, code: int = USAGE_ERROR) -> str:
    """Run the audit with ``args``; assert the exit code, no traceback, no workspace or patch
    written, and every file (the data, the model, the workspaces, under ``root``) unchanged.
    Returns the output."""
    before = snapshot(root)
    run = run_pytest(root, *args)
    assert run.returncode == code, run.output
    assert "Traceback" not in run.output and "INTERNALERROR" not in run.output, run.output
    assert not (root / "ws.json").exists() and not (root / "patch.json").exists()
    assert snapshot(root) == before
    return run.output


PATCH_TARGETS = {
    "missing_sample": (
        ("other_jets: background}", "other_jets: backgrnd}"),
        "channel 'singlechannel' has no sample 'backgrnd'; its samples are 'signal', 'background'",
    ),
    "missing_channel": (
        ("channel: singlechannel", "channel: signalregion"),
        "no channel 'signalregion'; its channels are 'singlechannel'",
    ),
}


@pytest.mark.parametrize("case", PATCH_TARGETS, ids=list(PATCH_TARGETS))
def test_patch_target_missing_from_the_workspace(case: str, tmp_path: Path) -> None:
    """``pyhf.patch`` naming a sample or channel the workspace lacks: checked before any attack
    runs (exit code 4), the message naming the workspace, what is missing and what exists."""
    (old, new), message = PATCH_TARGETS[case]
    root = project(tmp_path, replace_once(example_yaml(), old, new))
    output = run_refused(root, "-k", "pyhf_export", "--hepguard-pyhf-patch", "patch.json")
    assert_says(output, f"hepguard: pyhf workspace {root / 'analysis_workspace.json'}: {message}")


def test_workspace_failing_pyhfs_schema(tmp_path: Path) -> None:
    """A user workspace without ``observations`` stops the run before any attack (exit code 4)
    naming the file and the missing property."""
    root = project(tmp_path, example_yaml())
    spec = load_json(root / "analysis_workspace.json")
    assert isinstance(spec, dict)
    del spec["observations"]
    (root / "analysis_workspace.json").write_text(json.dumps(spec), encoding="utf-8")
    output = run_refused(root, "--hepguard-pyhf-patch", "patch.json")
    assert_says(
        output,
        f"ERROR: hepguard: pyhf workspace {root / 'analysis_workspace.json'}: fails pyhf's "
        "workspace schema: 'observations' is a required property",
    )


def test_binning_with_empty_bins(tmp_path: Path, columns, tagger) -> None:
    """Edges that leave the first two bins without any event (the smallest BvL of the 3000
    events is above 0.0001, checked here): the ``pyhf_export`` item fails naming both bins and
    no workspace is written."""
    x = np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float32)
    counts, _ = np.histogram(bvl(tagger, x), bins=[0, 0.00005, 0.0001, 0.5, 1])
    assert counts[0] == counts[1] == 0 and counts[2] > 0 and counts[3] > 0
    root = project(tmp_path, example_yaml())
    output = run_refused(
        root,
        "-k",
        "pyhf_export",
        "--hepguard-pyhf",
        "ws.json",
        "--hepguard-bins",
        "0,0.00005,0.0001,0.5,1",
        code=1,
    )
    assert_says(
        output,
        "hepguard: the binning leaves bins 0 [0, 5e-05), 1 [5e-05, 0.0001) without any nominal "
        "event",
    )


def test_patch_option_without_a_patch_section(tmp_path: Path) -> None:
    """``--hepguard-pyhf-patch`` with a ``pyhf:`` section that has no ``patch:``: exit code 4
    naming pyhf.patch and the file."""
    pyhf_section = "pyhf:\n  bins: 10\n  samples: {b_jets: [b], other_jets: [c, light]}\n"
    root = project(tmp_path, example_yaml(pyhf=pyhf_section))
    output = run_refused(root, "--hepguard-pyhf-patch", "patch.json")
    assert_says(
        output,
        f"ERROR: hepguard: --hepguard-pyhf-patch needs a pyhf.patch section in {root / 'unc.yaml'}",
    )


def test_bins_not_a_number(tmp_path: Path) -> None:
    """``--hepguard-bins x``: exit code 4 saying what is expected."""
    root = project(tmp_path, example_yaml())
    output = run_refused(root, "--hepguard-pyhf", "ws.json", "--hepguard-bins", "x")
    assert_says(output, "ERROR: hepguard: --hepguard-bins 'x': expected a number of bins")


def test_workspace_path_holding_a_users_file(tmp_path: Path) -> None:
    """An existing JSON file that is not a hepguard workspace at the ``--hepguard-pyhf`` path:
    exit code 4, the file left as it was."""
    root = project(tmp_path, example_yaml())
    (root / "mine.json").write_text('{"mine": 1}\n', encoding="utf-8")
    output = run_refused(root, "--hepguard-pyhf", "mine.json")
    assert_says(
        output,
        f"ERROR: hepguard: --hepguard-pyhf {root / 'mine.json'}: the file exists and is not a "
        "hepguard report",
    )
    assert (root / "mine.json").read_text(encoding="utf-8") == '{"mine": 1}\n'


def test_mu_uncertainty_limit_in_a_pgd_gate(tmp_path: Path) -> None:
    """``max_mu_uncertainty_increase`` in the pgd gate: exit code 4 naming the file, the line,
    the key and the check it belongs to."""
    text = replace_once(
        example_yaml(), "max_auc_drop: 0.08}", "max_auc_drop: 0.08, max_mu_uncertainty_increase: 1}"
    )
    root = project(tmp_path, text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("  pgd:"))
    output = run_refused(root, "--hepguard-pyhf", "ws.json")
    assert_says(
        output,
        f"ERROR: hepguard: {root / 'unc.yaml'}, line {line}: "
        "gates.pgd.max_mu_uncertainty_increase: max_mu_uncertainty_increase is a limit of the "
        "pyhf_impact check, not of pgd",
    )


# -- 6. the gate ------------------------------------------------------------------------------


def test_pyhf_impact_gate_fails_over_its_limit(tmp_path: Path, impact) -> None:
    """``max_mu_uncertainty_increase: 0.0001`` fails the gate (exit code 1) with the increase of
    the example's run (same events, same seed) and the "pyhf: σ(mu)" summary line."""
    gates = "gates:\n  pyhf_impact: {max_mu_uncertainty_increase: 0.0001}\n"
    root = project(tmp_path, example_yaml(gates=gates))
    before = snapshot(root)
    run = run_pytest(root, "--hepguard-json", "r.json")
    assert run.returncode == 1, run.output
    after = snapshot(root)
    assert {k: after[k] for k in before} == before
    assert "hepguard gate 'pyhf_impact' failed" in run.output
    assert_says(
        run.output,
        f"mu_uncertainty_increase {impact['increase']:.4g} exceeds max_mu_uncertainty_increase "
        "0.0001",
    )
    summary = [line for line in run.output.splitlines() if line.startswith("pyhf: σ(mu) ")]
    assert len(summary) == 1, run.output
    assert f"({impact['increase']:+.1%})" in summary[0]
    check = checks_by_name(load_json(root / "r.json"))["pyhf_impact"]
    assert check["passed"] is False and check["outcome"] == "failed"
    assert check["mu_uncertainty_increase"] == pytest.approx(impact["increase"], rel=1e-9)
    assert check["details"]["pyhf"]["mu_err"] == pytest.approx(impact["mu_err"], rel=1e-9)
