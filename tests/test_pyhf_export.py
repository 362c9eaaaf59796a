"""pyhf export: the workspace and the patch checked against pyhf itself and against yields
computed here from the template numbers."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_hepguard.exceptions import PyhfError, ReportPathError
from pytest_hepguard.pyhf_export import (
    check_workspace,
    is_own_patch,
    is_own_workspace,
    load_workspace,
    workspace_patch,
    workspace_spec,
    write_patch,
    write_workspace,
)
from pytest_hepguard.templates import (
    ModifierTemplate,
    SampleTemplate,
    Templates,
    Variation,
    build_templates,
)

pyhf = pytest.importorskip("pyhf")
jsonpatch = pytest.importorskip("jsonpatch")

EDGES = np.array([0.0, 0.5, 0.8, 1.0])

SIG_NOM = np.array([2.0, 5.0, 9.0])
SIG_SUMW2 = np.array([0.5, 1.2, 2.0])
BKG_NOM = np.array([40.0, 20.0, 6.0])
BKG_SUMW2 = np.array([4.0, 2.5, 1.5])

# hepguard_jes: split into a normsys and a shape-only histosys (up/down sum to the nominal).
JES_SIG_NORM = (1.08, 0.93)
JES_SIG_HI = np.array([2.2, 5.1, 8.7])
JES_SIG_LO = np.array([1.8, 4.9, 9.3])
JES_BKG_NORM = (1.03, 0.96)
JES_BKG_HI = np.array([41.0, 19.5, 5.5])
JES_BKG_LO = np.array([39.0, 20.5, 6.5])
# hepguard_attack: one histosys carrying the whole effect, on the background only.
ATT_BKG_HI = np.array([42.0, 19.0, 5.0])
ATT_BKG_LO = np.array([38.0, 21.0, 7.0])


def make_templates(
    sig_nominal: np.ndarray = SIG_NOM,
    bkg_nominal: np.ndarray = BKG_NOM,
    sig_signal: bool = True,
) -> Templates:
    samples = (
        SampleTemplate("sig", sig_nominal, SIG_SUMW2, signal=sig_signal),
        SampleTemplate("bkg", bkg_nominal, BKG_SUMW2),
    )
    modifiers = (
        ModifierTemplate("hepguard_jes", "sig", JES_SIG_NORM, (JES_SIG_HI, JES_SIG_LO)),
        ModifierTemplate("hepguard_jes", "bkg", JES_BKG_NORM, (JES_BKG_HI, JES_BKG_LO)),
        ModifierTemplate("hepguard_attack", "bkg", None, (ATT_BKG_HI, ATT_BKG_LO)),
    )
    return Templates(EDGES, samples, modifiers)


@pytest.fixture
def minuit() -> Iterator[None]:
    """pyhf's numpy backend with the minuit optimizer, the previous backend restored after."""
    before = pyhf.get_backend()
    pyhf.set_backend("numpy", "minuit")
    yield
    pyhf.set_backend(*before)


def json_types_only(obj: Any) -> bool:
    """True when ``obj`` holds only dict/list/str/float/None (no numpy, no int)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and json_types_only(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(json_types_only(v) for v in obj)
    return obj is None or type(obj) in (str, float)


def sample_yields(model: Any, pars: Any) -> dict[str, np.ndarray]:
    """Expected yields per sample name [n_bins] at ``pars``."""
    by_sample = model.main_model.expected_data(pars, return_by_sample=True)
    return {name: np.asarray(by_sample[i]) for i, name in enumerate(model.config.samples)}


def at(model: Any, **values: float) -> list[float]:
    """The suggested initial parameters with the named scalar parameters set."""
    pars = list(model.config.suggested_init())
    for name, value in values.items():
        pars[model.config.par_slice(name)] = [value]
    return pars


# --- the workspace ---------------------------------------------------------------------------


def test_workspace_is_pyhf_valid_with_the_expected_parameters_and_yields() -> None:
    spec = workspace_spec(make_templates(), channel="SR")
    assert json_types_only(spec)
    assert spec["version"] == "1.0.0"
    assert spec["measurements"] == [{"name": "hepguard", "config": {"poi": "mu", "parameters": []}}]
    ws = pyhf.Workspace(spec)
    model = ws.model()
    assert set(model.config.parameters) == {
        "mu",
        "staterror_SR",
        "hepguard_jes",
        "hepguard_attack",
    }
    assert model.config.poi_name == "mu"
    asimov = SIG_NOM + BKG_NOM
    expected = model.expected_data(model.config.suggested_init(), include_auxdata=False)
    np.testing.assert_allclose(expected, asimov, rtol=1e-12)
    np.testing.assert_allclose(ws.data(model, include_auxdata=False), asimov, rtol=1e-12)

    # default interpolation: normsys code4 and histosys code4p give exactly their "hi" (and
    # "lo") at alpha = +1 (-1), and normsys multiplies the histosys-shifted yield
    up = sample_yields(model, at(model, hepguard_jes=1.0))
    np.testing.assert_allclose(up["sig"], JES_SIG_HI * JES_SIG_NORM[0], rtol=1e-10)
    np.testing.assert_allclose(up["bkg"], JES_BKG_HI * JES_BKG_NORM[0], rtol=1e-10)
    down = sample_yields(model, at(model, hepguard_jes=-1.0))
    np.testing.assert_allclose(down["sig"], JES_SIG_LO * JES_SIG_NORM[1], rtol=1e-10)
    attack = sample_yields(model, at(model, hepguard_attack=1.0))
    np.testing.assert_allclose(attack["bkg"], ATT_BKG_HI, rtol=1e-10)
    np.testing.assert_allclose(attack["sig"], SIG_NOM, rtol=1e-10)
    doubled = sample_yields(model, at(model, mu=2.0))
    np.testing.assert_allclose(doubled["sig"], 2 * SIG_NOM, rtol=1e-12)
    np.testing.assert_allclose(doubled["bkg"], BKG_NOM, rtol=1e-12)


def test_workspace_modifiers_in_documented_order() -> None:
    spec = workspace_spec(make_templates())
    (channel,) = spec["channels"]
    assert channel["name"] == "hepguard"
    sig, bkg = channel["samples"]
    assert [s["name"] for s in (sig, bkg)] == ["sig", "bkg"]
    assert sig["data"] == SIG_NOM.tolist()
    assert [(m["name"], m["type"]) for m in sig["modifiers"]] == [
        ("mu", "normfactor"),
        ("staterror_hepguard", "staterror"),
        ("hepguard_jes", "histosys"),
        ("hepguard_jes", "normsys"),
    ]
    assert [(m["name"], m["type"]) for m in bkg["modifiers"]] == [
        ("staterror_hepguard", "staterror"),
        ("hepguard_jes", "histosys"),
        ("hepguard_jes", "normsys"),
        ("hepguard_attack", "histosys"),
    ]
    assert sig["modifiers"][0]["data"] is None
    assert sig["modifiers"][2]["data"] == {
        "hi_data": JES_SIG_HI.tolist(),
        "lo_data": JES_SIG_LO.tolist(),
    }
    assert sig["modifiers"][3]["data"] == {"hi": 1.08, "lo": 0.93}


def test_workspace_fits_with_minuit(minuit: None) -> None:
    ws = pyhf.Workspace(workspace_spec(make_templates()))
    model = ws.model()
    best, errors = pyhf.infer.mle.fit(ws.data(model), model, return_uncertainties=True).T
    # the Asimov data are the nominal prediction: mu = 1, every alpha = 0, every gamma = 1
    assert best[model.config.poi_index] == pytest.approx(1.0, abs=1e-3)
    assert best[model.config.par_slice("hepguard_jes")][0] == pytest.approx(0.0, abs=1e-3)
    assert best[model.config.par_slice("hepguard_attack")][0] == pytest.approx(0.0, abs=1e-3)
    assert np.all(errors[model.config.par_slice("hepguard_jes")] > 0)


def test_staterror_is_sqrt_sumw2() -> None:
    spec = workspace_spec(make_templates(), channel="SR")
    sig, bkg = spec["channels"][0]["samples"]
    (stat_sig,) = (m for m in sig["modifiers"] if m["type"] == "staterror")
    (stat_bkg,) = (m for m in bkg["modifiers"] if m["type"] == "staterror")
    assert stat_sig["name"] == stat_bkg["name"] == "staterror_SR"
    np.testing.assert_allclose(stat_sig["data"], [0.5**0.5, 1.2**0.5, 2.0**0.5], rtol=1e-15)
    np.testing.assert_allclose(stat_bkg["data"], [2.0, 2.5**0.5, 1.5**0.5], rtol=1e-15)


def test_explicit_observations_are_used() -> None:
    spec = workspace_spec(make_templates(), channel="SR", observations=[45, 27.0, 13])
    assert spec["observations"] == [{"name": "SR", "data": [45.0, 27.0, 13.0]}]
    ws = pyhf.Workspace(spec)
    np.testing.assert_array_equal(ws.data(ws.model(), include_auxdata=False), [45, 27, 13])


def test_observations_of_wrong_length() -> None:
    with pytest.raises(PyhfError, match=r"observations: 2 value\(s\) given, expected 3"):
        workspace_spec(make_templates(), observations=[1.0, 2.0])


def test_observations_not_finite() -> None:
    with pytest.raises(PyhfError, match="observations: non-finite"):
        workspace_spec(make_templates(), observations=[1.0, float("nan"), 2.0])


def test_no_signal_sample() -> None:
    with pytest.raises(PyhfError, match=r"needs a sample marked signal.*\(sig, bkg\)"):
        workspace_spec(make_templates(sig_signal=False))


def test_poi_name_taken_by_a_modifier() -> None:
    with pytest.raises(PyhfError, match="hepguard_attack"):
        workspace_spec(make_templates(), poi="hepguard_attack")


def test_workspace_from_build_templates_fits(minuit: None) -> None:
    rng = np.random.default_rng(7)
    n = 4000
    score_sig, score_bkg = rng.beta(5, 2, n), rng.beta(2, 5, 4 * n)
    edges = np.linspace(0, 1, 5)
    sig, _ = np.histogram(score_sig, edges)
    bkg, _ = np.histogram(score_bkg, edges)
    sig_up, _ = np.histogram(np.clip(score_sig * 1.05, 0, 1), edges)
    bkg_up, _ = np.histogram(np.clip(score_bkg * 1.05, 0, 1), edges)
    templates = build_templates(
        edges,
        [SampleTemplate("sig", sig * 0.01, sig * 1e-4, True), SampleTemplate("bkg", bkg, bkg)],
        [Variation("hepguard_scale", {"sig": sig_up * 0.01, "bkg": bkg_up.astype(float)})],
    )
    ws = pyhf.Workspace(workspace_spec(templates))
    model = ws.model()
    assert "hepguard_scale" in model.config.parameters
    best = pyhf.infer.mle.fit(ws.data(model), model)
    assert best[model.config.poi_index] == pytest.approx(1.0, abs=1e-2)


def test_module_imports_without_pyhf() -> None:
    code = (
        "import sys, pytest_hepguard.pyhf_export; "
        "assert 'pyhf' not in sys.modules and 'jsonpatch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the patch -------------------------------------------------------------------------------

WS_SIG = [5.0, 6.0, 7.0]
WS_BKG = [50.0, 52.0, 55.0]
MAPPING = {"sig": "signal", "bkg": "background"}
# hepguard's signal has no event in bin 0: the relative effect there is unknown
PATCH_SIG_NOM = np.array([0.0, 3.0, 4.0])


def analysis_workspace() -> dict:
    """A user's workspace: pyhf's uncorrelated_background model, Asimov observations."""
    model = pyhf.simplemodels.uncorrelated_background(
        signal=WS_SIG, bkg=WS_BKG, bkg_uncertainty=[5.0, 6.0, 7.0]
    )
    return {
        "channels": copy.deepcopy(model.spec["channels"]),
        "observations": [
            {"name": "singlechannel", "data": (np.add(WS_SIG, WS_BKG)).tolist()},
        ],
        "measurements": [{"name": "analysis", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def patch_templates() -> Templates:
    return make_templates(sig_nominal=PATCH_SIG_NOM, bkg_nominal=np.array([20.0, 25.0, 30.0]))


def make_patch(workspace: dict | None = None, **kwargs: Any) -> list[dict]:
    args: dict[str, Any] = {"channel": "singlechannel", "samples": MAPPING, "source": "ws.json"}
    args.update(kwargs)
    templates = args.pop("templates", patch_templates())
    ws = analysis_workspace() if workspace is None else workspace
    return workspace_patch(templates, ws, **args)


def modifier(ws: dict, sample: str, name: str, kind: str) -> dict:
    (channel,) = ws["channels"]
    (s,) = (s for s in channel["samples"] if s["name"] == sample)
    (m,) = (m for m in s["modifiers"] if m["name"] == name and m["type"] == kind)
    return m["data"]


def test_patch_operations() -> None:
    ws = analysis_workspace()
    assert [s["name"] for s in ws["channels"][0]["samples"]] == ["signal", "background"]
    patch = make_patch(ws)
    assert patch[:3] == [
        {"op": "test", "path": "/channels/0/name", "value": "singlechannel"},
        {"op": "test", "path": "/channels/0/samples/0/name", "value": "signal"},
        {"op": "test", "path": "/channels/0/samples/1/name", "value": "background"},
    ]
    adds = patch[3:]
    assert [op["op"] for op in adds] == ["add"] * 5
    assert [(op["path"], op["value"]["name"], op["value"]["type"]) for op in adds] == [
        ("/channels/0/samples/0/modifiers/-", "hepguard_jes", "histosys"),
        ("/channels/0/samples/0/modifiers/-", "hepguard_jes", "normsys"),
        ("/channels/0/samples/1/modifiers/-", "hepguard_jes", "histosys"),
        ("/channels/0/samples/1/modifiers/-", "hepguard_jes", "normsys"),
        ("/channels/0/samples/1/modifiers/-", "hepguard_attack", "histosys"),
    ]
    assert json_types_only(patch)


def test_patch_applies_transfers_relative_effects_and_fits(minuit: None) -> None:
    ws = analysis_workspace()
    pristine = copy.deepcopy(ws)
    patch = make_patch(ws)
    assert ws == pristine
    patched = jsonpatch.apply_patch(ws, patch)
    assert ws == pristine

    ws_sig, ws_bkg = np.array(WS_SIG), np.array(WS_BKG)
    bkg_nom = np.array([20.0, 25.0, 30.0])
    sig_hi = modifier(patched, "signal", "hepguard_jes", "histosys")
    # bin 0: hepguard's signal nominal is 0, so the workspace's nominal is kept
    np.testing.assert_allclose(sig_hi["hi_data"][0], 5.0, rtol=1e-15)
    np.testing.assert_allclose(sig_hi["lo_data"][0], 5.0, rtol=1e-15)
    np.testing.assert_allclose(
        sig_hi["hi_data"][1:], ws_sig[1:] * JES_SIG_HI[1:] / PATCH_SIG_NOM[1:], rtol=1e-12
    )
    np.testing.assert_allclose(
        sig_hi["lo_data"][1:], ws_sig[1:] * JES_SIG_LO[1:] / PATCH_SIG_NOM[1:], rtol=1e-12
    )
    bkg_jes = modifier(patched, "background", "hepguard_jes", "histosys")
    np.testing.assert_allclose(bkg_jes["hi_data"], ws_bkg * JES_BKG_HI / bkg_nom, rtol=1e-12)
    np.testing.assert_allclose(bkg_jes["lo_data"], ws_bkg * JES_BKG_LO / bkg_nom, rtol=1e-12)
    bkg_att = modifier(patched, "background", "hepguard_attack", "histosys")
    np.testing.assert_allclose(bkg_att["hi_data"], ws_bkg * ATT_BKG_HI / bkg_nom, rtol=1e-12)
    np.testing.assert_allclose(bkg_att["lo_data"], ws_bkg * ATT_BKG_LO / bkg_nom, rtol=1e-12)
    assert modifier(patched, "signal", "hepguard_jes", "normsys") == {"hi": 1.08, "lo": 0.93}
    assert modifier(patched, "background", "hepguard_jes", "normsys") == {"hi": 1.03, "lo": 0.96}
    # nothing else was added: the workspace keeps its own normfactor and shapesys
    kinds = [
        (m["name"], m["type"])
        for s in patched["channels"][0]["samples"]
        for m in s["modifiers"]
        if not m["name"].startswith("hepguard_")
    ]
    assert kinds == [("mu", "normfactor"), ("uncorr_bkguncrt", "shapesys")]

    model = pyhf.Workspace(patched).model()
    assert {"mu", "uncorr_bkguncrt", "hepguard_jes", "hepguard_attack"} == set(
        model.config.parameters
    )
    up = sample_yields(model, at(model, hepguard_jes=1.0))
    np.testing.assert_allclose(up["background"], ws_bkg * JES_BKG_HI / bkg_nom * 1.03, rtol=1e-10)
    best = pyhf.infer.mle.fit(pyhf.Workspace(patched).data(model), model)
    assert best[model.config.poi_index] == pytest.approx(1.0, abs=1e-3)


def test_patch_fails_on_reordered_workspace() -> None:
    patch = make_patch()
    reordered = analysis_workspace()
    reordered["channels"][0]["samples"].reverse()
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(reordered, patch)


def test_unmapped_hepguard_samples_get_nothing() -> None:
    patch = make_patch(samples={"bkg": "background"})
    assert [op for op in patch if op["op"] == "test"] == [
        {"op": "test", "path": "/channels/0/name", "value": "singlechannel"},
        {"op": "test", "path": "/channels/0/samples/1/name", "value": "background"},
    ]
    adds = [op for op in patch if op["op"] == "add"]
    assert {op["path"] for op in adds} == {"/channels/0/samples/1/modifiers/-"}
    assert len(adds) == 3


def test_patch_channel_missing_lists_channels() -> None:
    with pytest.raises(PyhfError, match=r"ws\.json: no channel 'SR'.*'singlechannel'"):
        make_patch(channel="SR")


def test_patch_mapped_sample_missing_lists_samples() -> None:
    with pytest.raises(PyhfError, match=r"no sample 'ttbar'; its samples are 'signal', 'backgr"):
        make_patch(samples={"sig": "signal", "bkg": "ttbar"})


def test_patch_unknown_hepguard_sample() -> None:
    with pytest.raises(PyhfError, match=r"'qcd' in the sample mapping.*'sig', 'bkg'"):
        make_patch(samples={"qcd": "background"})


def test_patch_two_samples_onto_one() -> None:
    with pytest.raises(PyhfError, match="several hepguard samples map to 'background'"):
        make_patch(samples={"sig": "background", "bkg": "background"})


def test_patch_bin_count_mismatch() -> None:
    two_bins = Templates(
        np.array([0.0, 0.5, 1.0]),
        (SampleTemplate("sig", np.array([1.0, 2.0]), np.array([1.0, 2.0]), True),),
        (ModifierTemplate("hepguard_x", "sig", (1.1, 0.9), None),),
    )
    with pytest.raises(PyhfError, match=r"has 3 bins, hepguard's templates .* have 2"):
        make_patch(templates=two_bins, samples={"sig": "signal"})


def test_patch_modifier_already_present() -> None:
    patched = jsonpatch.apply_patch(analysis_workspace(), make_patch())
    with pytest.raises(
        PyhfError, match=r"sample 'signal' .* already has .*hepguard_jes.*applied already\?"
    ):
        make_patch(patched)


def test_patch_name_clash_with_other_modifier_type() -> None:
    ws = analysis_workspace()
    ws["channels"][0]["samples"][1]["modifiers"][0]["name"] = "hepguard_attack"
    with pytest.raises(PyhfError, match="shapesys modifier 'hepguard_attack'"):
        make_patch(ws, samples={"sig": "signal"})


def test_patch_with_nothing_to_add() -> None:
    templates = make_templates()
    only_bkg = Templates(templates.edges, templates.samples, templates.modifiers[1:])
    with pytest.raises(PyhfError, match=r"would add no modifier.*act on 'bkg'"):
        make_patch(templates=only_bkg, samples={"sig": "signal"})


def test_patch_of_schema_invalid_workspace() -> None:
    ws = analysis_workspace()
    del ws["observations"]
    with pytest.raises(PyhfError, match=r"ws\.json: fails pyhf's workspace schema: 'observations'"):
        make_patch(ws)


# --- loading and checking --------------------------------------------------------------------


def test_load_workspace_reads_without_modifying(tmp_path: Path) -> None:
    path = tmp_path / "analysis_ws.json"
    path.write_text(json.dumps(analysis_workspace()))
    before = path.read_bytes()
    assert load_workspace(path) == analysis_workspace()
    assert path.read_bytes() == before


def test_load_workspace_failing_the_schema(tmp_path: Path) -> None:
    ws = analysis_workspace()
    ws["channels"][0]["samples"][0]["modifiers"][0]["type"] = "bogus"
    path = tmp_path / "analysis_ws.json"
    path.write_text(json.dumps(ws))
    with pytest.raises(PyhfError) as info:
        load_workspace(path)
    message = str(info.value)
    assert str(path) in message
    assert "fails pyhf's workspace schema" in message
    assert "channels[0].samples[0].modifiers[0]" in message
    assert "'type': 'bogus'" in message


def test_load_workspace_extra_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    path.write_text(json.dumps({**analysis_workspace(), "tool": "pytest-hepguard"}))
    with pytest.raises(PyhfError, match=r"'tool' was unexpected.*at the top level"):
        load_workspace(path)


def test_load_workspace_not_json(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    path.write_text('{"channels": [\n  1,,\n]}\n')
    with pytest.raises(PyhfError, match=r"ws\.json: not JSON: .* at line 2, column 5"):
        load_workspace(path)


def test_load_workspace_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(PyhfError, match=r"nope\.json: the file does not exist"):
        load_workspace(path)


def test_load_workspace_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PyhfError, match="is a folder"):
        load_workspace(tmp_path)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ([1, 2], "a workspace is a JSON object.*got a list"),
        ({**analysis_workspace(), "version": 1}, "version must be a string"),
        ({**analysis_workspace(), "version": "9.9.9"}, "version '9.9.9' is not a schema version"),
    ],
)
def test_check_workspace_messages(spec: Any, reason: str) -> None:
    with pytest.raises(PyhfError, match=f"my source: fails pyhf's workspace schema: {reason}"):
        check_workspace(spec, "my source")


# --- writing ---------------------------------------------------------------------------------


def test_write_workspace_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "hepguard_ws.json"
    spec = workspace_spec(make_templates())
    write_workspace(path, spec, inputs={}, force=False)
    loaded = json.loads(path.read_text())
    assert loaded == spec
    pyhf.Workspace(loaded).model()
    assert path.read_text().endswith("}\n")
    assert is_own_workspace(path)


def test_write_workspace_refuses_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    foreign = json.dumps(analysis_workspace(), indent=1).encode()
    path.write_bytes(foreign)
    assert not is_own_workspace(path)
    spec = workspace_spec(make_templates())
    with pytest.raises(ReportPathError, match=r"--hepguard-pyhf .* is not a hepguard report"):
        write_workspace(path, spec, inputs={}, force=False)
    assert path.read_bytes() == foreign
    write_workspace(path, spec, inputs={}, force=True)
    assert json.loads(path.read_text()) == spec


def test_write_workspace_overwrites_its_own(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    write_workspace(path, workspace_spec(make_templates()), inputs={}, force=False)
    second = workspace_spec(make_templates(), observations=[40, 30, 20])
    write_workspace(path, second, inputs={}, force=False)
    assert json.loads(path.read_text())["observations"][0]["data"] == [40.0, 30.0, 20.0]


def test_write_workspace_never_over_an_input(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    write_workspace(path, workspace_spec(make_templates()), inputs={}, force=False)
    before = path.read_bytes()
    with pytest.raises(ReportPathError, match="is the workspace file"):
        write_workspace(
            path, workspace_spec(make_templates()), inputs={"workspace": path}, force=True
        )
    assert path.read_bytes() == before


def test_write_workspace_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ReportPathError, match="does not exist"):
        write_workspace(
            tmp_path / "no" / "ws.json", workspace_spec(make_templates()), inputs={}, force=False
        )


def test_write_patch_round_trip_and_refusals(tmp_path: Path) -> None:
    patch = make_patch()
    path = tmp_path / "hepguard_patch.json"
    write_patch(path, patch, inputs={}, force=False)
    assert json.loads(path.read_text()) == patch
    assert is_own_patch(path)
    write_patch(path, patch, inputs={}, force=False)

    ws_path = tmp_path / "analysis_ws.json"
    ws_path.write_text(json.dumps(analysis_workspace()))
    before = ws_path.read_bytes()
    with pytest.raises(ReportPathError, match="is the workspace file"):
        write_patch(ws_path, patch, inputs={"workspace": ws_path}, force=True)
    assert ws_path.read_bytes() == before
    foreign = b'[{"op": "add", "path": "/channels/0/samples/0/modifiers/-", "value": {}}]\n'
    other = tmp_path / "other_patch.json"
    other.write_bytes(foreign)
    with pytest.raises(ReportPathError, match="--hepguard-pyhf-patch"):
        write_patch(other, patch, inputs={}, force=False)
    assert other.read_bytes() == foreign


@pytest.mark.parametrize(
    ("content", "own"),
    [
        ("[]", False),
        ('[{"op": "test", "path": "/channels/0/name", "value": "SR"}]', False),
        ('[{"op": "add", "path": "/x", "value": {"name": "hepguard_a"}}]', True),
        (
            '[{"op": "add", "path": "/x", "value": {"name": "hepguard_a"}},'
            ' {"op": "add", "path": "/y", "value": {"name": "lumi"}}]',
            False,
        ),
        ('{"op": "add"}', False),
        ("[1]", False),
        ("not json", False),
    ],
)
def test_is_own_patch(tmp_path: Path, content: str, own: bool) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    assert is_own_patch(path) is own


def test_is_own_workspace(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    spec = workspace_spec(make_templates())
    path.write_text(json.dumps(spec))
    assert is_own_workspace(path)
    path.write_text(json.dumps(workspace_spec(make_templates(), measurement="other")))
    assert not is_own_workspace(path)
    path.write_text(json.dumps(jsonpatch.apply_patch(analysis_workspace(), make_patch())))
    assert not is_own_workspace(path)
    path.write_text('{"measurements": 3}')
    assert not is_own_workspace(path)
    assert not is_own_workspace(tmp_path / "missing.json")
