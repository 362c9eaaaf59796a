"""Weaver ``preprocess.json`` inputs: features shared between per-constituent inputs, the
per-input scaling applied in ``Layout.unpack``, reading the real CMS files, and an end-to-end
audit of the CHS ParticleNet ONNX whose inputs come from its ``preprocess.json``.

References: the JSON read with :mod:`json`, tensors indexed by hand, and numpy's
``clip((x - median) * norm_factor, lower, upper)``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from realdata_cases import REALDATA

from pytest_hepguard.attacks import get_attack
from pytest_hepguard.audit import Auditor
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import UncertaintyFileError
from pytest_hepguard.layout import Layout
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.preprocess import complete_uncertainties, read_preprocess
from pytest_hepguard.uncertainties import InputScaling, parse_uncertainties

CPU = torch.device("cpu")
L = 4

#: points (eta, phi) and features (pt, eta, phi) share eta and phi, as ParticleNet's do.
SHARED = f"""\
version: 1
features:
  c_eta: {{absolute: 0.1}}
  c_phi: {{absolute: 0.1}}
  c_pt:  {{relative: 0.1}}
inputs:
  points: {{features: [c_eta, c_phi], per: constituent, length: {L}, layout: channels_first}}
  feats: {{features: [c_pt, c_eta, c_phi], per: constituent, length: {L}, layout: channels_first}}
  mask: {{per: mask, mask_of: [points, feats], layout: channels_first}}
"""

needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(),
    reason=f"{REALDATA} is absent (the production models live beside the repository, not in it)",
)
PREPROCESS_FILES = [
    REALDATA / "cms-particlenet-ak4-chs" / "preprocess.json",
    REALDATA / "cms-particlenet-ak4-hlt" / "preprocess.json",
]


SHARED_FEATS = ("c_eta", "c_phi", "c_pt")


def shared_rows(layout: Layout, n: int, seed: int = 0) -> torch.Tensor:
    """Rows of ``layout`` with 1..L real constituents (padding 0, mask 1 for real ones)."""
    gen = np.random.default_rng(seed)
    counts = gen.integers(1, L + 1, n)
    real = np.arange(L)[None, :] < counts[:, None]
    constituents = {f: np.where(real, gen.normal(1.0, 0.5, (n, L)), 0.0) for f in SHARED_FEATS}
    events = Events(
        np.zeros((n, 0), np.float32),
        (),
        None,
        None,
        Path("synthetic"),
        {f: v.astype(np.float32) for f, v in constituents.items()},
        {f: counts for f in SHARED_FEATS},
    )
    return torch.from_numpy(layout.flatten(events).features)


def test_shared_features_are_held_once_and_read_by_both_inputs() -> None:
    layout = Layout(parse_uncertainties(SHARED))
    assert layout.names.count("c_eta[0]") == 1
    assert len(layout.names) == 3 * L + L  # three features and the mask, once each
    assert layout.input_shapes() == [(2, L), (3, L), (1, L)]
    rows = shared_rows(layout, 5)
    points, feats, mask = layout.unpack(rows)
    index = {name: j for j, name in enumerate(layout.names)}
    for k in range(L):
        assert torch.equal(points[:, 0, k], rows[:, index[f"c_eta[{k}]"]])
        assert torch.equal(feats[:, 1, k], rows[:, index[f"c_eta[{k}]"]])
        assert torch.equal(feats[:, 2, k], rows[:, index[f"c_phi[{k}]"]])
        assert torch.equal(feats[:, 0, k], rows[:, index[f"c_pt[{k}]"]])
        assert torch.equal(mask[:, 0, k], rows[:, index[f"mask[{k}]"]])
    assert torch.equal(layout.padded(rows)[:, index["c_eta[3]"]], mask[:, 0, 3] == 0)


class _Tagger(torch.nn.Module):
    """points [B, 2, L], feats [B, 3, L], mask [B, 1, L] -> softmax [B, 2]; the angles enter
    through both inputs with different weights."""

    def forward(self, points, feats, mask):
        s = (points[:, 0] * 3 - points[:, 1] + feats[:, 0] + feats[:, 1] * feats[:, 2]) * mask[:, 0]
        z = s.sum(1, keepdim=True)
        return torch.softmax(torch.cat([z, -z], 1), 1)


def test_pgd_moves_both_copies_of_a_shared_feature_identically() -> None:
    layout = Layout(parse_uncertainties(SHARED))
    model = wrap_model(_Tagger(), CPU, "tagger")
    model.bind(layout)
    x0 = shared_rows(layout, 64, seed=1)
    model.probe(x0, "auto")
    envelope = Envelope(layout.specs, np.ones(len(layout.specs)), CPU, padding=layout.padded)
    labels = torch.zeros(64, dtype=torch.long)
    attack = get_attack("pgd", {"epsilon": 1.0, "steps": 3})
    x = attack.perturb(model, x0, labels, envelope, torch.Generator().manual_seed(0)).x
    (p0, f0, _), (p, f, m) = layout.unpack(x0), layout.unpack(x)
    real = m[:, 0] == 1
    assert (p[:, 0] - p0[:, 0])[real].abs().min() > 0
    assert torch.equal(p[:, 0] - p0[:, 0], f[:, 1] - f0[:, 1])
    assert torch.equal(p[:, 1] - p0[:, 1], f[:, 2] - f0[:, 2])
    assert not (x != x0)[layout.padded(x0)].any()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            "  a: {features: [c_eta], per: constituent, length: 4}\n"
            "  b: {features: [c_eta, c_phi], per: constituent, length: 5}\n",
            r"line 8: inputs.b: feature 'c_eta' is also in input 'a' with length 4, pad_value 0, "
            r"here length 5",
        ),
        (
            "  a: [c_eta]\n  b: {features: [c_eta, c_phi], per: constituent, length: 4}\n",
            r"line 8: inputs.b: feature 'c_eta' is already in input 'a'; only per: constituent",
        ),
    ],
)
def test_sharing_errors(inputs: str, message: str) -> None:
    text = "version: 1\nfeatures:\n  c_eta: {absolute: 0.1}\n  c_phi: {absolute: 0.1}\n"
    with pytest.raises(UncertaintyFileError, match=message):
        parse_uncertainties(text + "\ninputs:\n" + inputs)


def test_scaling_matches_numpy_and_pads_after_the_transform() -> None:
    unc = parse_uncertainties(SHARED)
    scaling = InputScaling(
        median=(0.5, 1.0, -0.2), norm_factor=(2.0, 0.5, 3.0), lower=(-1, -0.1, -5),
        upper=(1.5, 5, 0.3), pad=(-7.0, 0.0, 9.0),
    )  # fmt: skip
    inputs = (unc.inputs[0], replace(unc.inputs[1], scaling=scaling), unc.inputs[2])
    layout = Layout(replace(unc, inputs=inputs))
    rows = shared_rows(layout, 50, seed=2).requires_grad_(True)
    points, feats, mask = layout.unpack(rows)
    plain = Layout(unc).unpack(rows.detach())[1].numpy()
    m, n = np.array(scaling.median)[None, :, None], np.array(scaling.norm_factor)[None, :, None]
    lo, hi = np.array(scaling.lower)[None, :, None], np.array(scaling.upper)[None, :, None]
    expected = np.clip((plain - m) * n, lo, hi)
    pad = np.broadcast_to(np.array(scaling.pad)[None, :, None], expected.shape)
    expected = np.where(mask.detach().numpy() == 0, pad, expected)
    np.testing.assert_allclose(feats.detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(points, Layout(unc).unpack(rows)[0])  # unscaled input untouched
    feats.sum().backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0  # differentiable


@needs_realdata
@pytest.mark.parametrize("path", PREPROCESS_FILES, ids=lambda p: p.parent.name)
def test_read_real_preprocess_files(path: Path) -> None:
    doc = json.loads(path.read_text())
    specs = read_preprocess(path)
    assert [s.name for s in specs] == doc["input_names"]
    for spec in specs:
        group = doc[spec.name]
        assert spec.length == group["max_length"] and spec.channels_first
        if spec.name.endswith("_mask"):
            prefix = spec.name[: -len("mask")]
            assert spec.per == "mask"
            assert spec.mask_of == tuple(
                n for n in doc["input_names"] if n.startswith(prefix) and n != spec.name
            )
            continue
        assert spec.per == "constituent"
        assert spec.features == tuple(group["var_names"])
        assert spec.scaling is not None
        infos = [group["var_infos"][v] for v in group["var_names"]]
        assert spec.scaling.median == tuple(i["median"] for i in infos)
        assert spec.scaling.norm_factor == tuple(i["norm_factor"] for i in infos)
        assert spec.scaling.lower == tuple(i["lower_bound"] for i in infos)
        assert spec.scaling.upper == tuple(i["upper_bound"] for i in infos)
        assert spec.scaling.pad == tuple(i["pad"] for i in infos)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("input_names"), r"input_names: got None"),
        (lambda d: d["a_x"].pop("var_infos"), r"a_x.var_infos: missing"),
        (lambda d: d["a_x"]["var_infos"]["x"].pop("median"), r"a_x.var_infos.x.median: got None"),
        (lambda d: d["a_x"].update(max_length=0), r"a_x.max_length: got 0"),
        (lambda d: d["a_mask"].update(max_length=3), r"a_mask: max_length differs"),
    ],
)
def test_malformed_preprocess_files(tmp_path: Path, edit, message: str) -> None:
    info = {"median": 0, "norm_factor": 1, "lower_bound": -5, "upper_bound": 5, "pad": 0}
    doc = {
        "input_names": ["a_x", "a_mask"],
        "a_x": {"var_names": ["x"], "var_infos": {"x": dict(info)}, "max_length": 4},
        "a_mask": {"var_names": ["m"], "var_infos": {"m": dict(info)}, "max_length": 4},
    }
    edit(doc)
    path = tmp_path / "preprocess.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UncertaintyFileError, match=re.escape(f"{path}: ") + message):
        read_preprocess(path)


# ---- end to end: the CHS ParticleNet ONNX ------------------------------------------------

CHS = REALDATA / "cms-particlenet-ak4-chs"
MINIMAL = """\
version: 1
features:
  pfcand_etarel: {absolute: 0.01}
  pfcand_phirel: {absolute: 0.01}
  pfcand_pt_log_nopuppi: {absolute: 0.05}
"""


def raw_events(unc, n: int, seed: int = 0) -> Events:
    """Synthetic raw (unscaled) variables by their var_names: per variable ``median +
    N(0, 1) / norm_factor`` (scaled values about standard normal), angles N(0, 0.1), charge
    in {-1, 0, 1}; 8..25 particle-flow candidates and 1..4 secondary vertices per jet, zero
    padded to the input's length."""
    gen = np.random.default_rng(seed)
    constituents, counts = {}, {}
    for spec in unc.inputs:
        if spec.per != "constituent" or spec.features[0] in constituents:
            continue
        k = gen.integers(8, 26, n) if spec.name.startswith("pf_") else gen.integers(1, 5, n)
        real = np.arange(spec.length)[None, :] < k[:, None]
        for j, f in enumerate(spec.features):
            if f in constituents:
                continue
            if f.endswith(("etarel", "phirel")):
                v = gen.normal(0, 0.1, real.shape)
            elif f.endswith("charge"):
                v = gen.integers(-1, 2, real.shape).astype(float)
            else:
                v = (
                    spec.scaling.median[j]
                    + gen.normal(size=real.shape) / spec.scaling.norm_factor[j]
                )
            constituents[f] = np.where(real, v, 0.0).astype(np.float32)
            counts[f] = k
    return Events(np.zeros((n, 0), np.float32), (), None, None, CHS, constituents, counts)


@needs_realdata
def test_particlenet_audit_from_preprocess_json() -> None:
    """Inputs from preprocess.json, envelopes for three variables: PGD (3 steps) moves only
    those, never padding or masks, and moves etarel identically in pf_points and pf_features."""
    unc = complete_uncertainties(parse_uncertainties(MINIMAL), CHS / "particlenet_ak4.onnx")
    assert [s.name for s in unc.inputs] == json.loads((CHS / "preprocess.json").read_text())[
        "input_names"
    ]
    declared = {"pfcand_etarel", "pfcand_phirel", "pfcand_pt_log_nopuppi"}
    assert {f.name for f in unc.features if not f.frozen} == declared
    model = load_model(CHS / "particlenet_ak4.onnx", CPU)
    auditor = Auditor(model, raw_events(unc, 128), unc, seed=0)
    assert any("sv_mass" in a and "frozen" in a for a in auditor.decision.assumptions)
    pgd = auditor.run("pgd", epsilon=1.0, steps=3)
    for feature, fraction in pgd.moved_fraction.items():
        assert (fraction > 0) == (feature in declared), feature
    assert max(pgd.max_displacement_sigma.values()) <= 1.0 + 1e-4

    layout = auditor.layout
    x0 = torch.from_numpy(auditor.events.features[:32])
    labels = torch.from_numpy(auditor.nominal_probs[:32].argmax(1))
    attack = get_attack("pgd", {"epsilon": 1.0, "steps": 3})
    x = attack.perturb(model, x0, labels, auditor.envelope, torch.Generator().manual_seed(0)).x
    moved = x != x0
    assert moved.any() and not moved[layout.padded(x0)].any()
    assert not moved[:, [f.endswith("_mask") for f in layout.feature_of]].any()
    (p0, f0, *_), (p, f, m, *_) = layout.unpack(x0), layout.unpack(x)
    d_points, d_features = p[:, 0] - p0[:, 0], f[:, 2] - f0[:, 2]  # etarel in both
    assert d_points[m[:, 0] == 1].abs().max() > 0
    assert torch.equal(d_points, d_features)


def _tiny_preprocess(folder: Path) -> Path:
    """A preprocess.json of one input ``c_x`` (variables a, b; 3 long) and its mask, beside
    a (never opened) ``model.onnx``; the model's path."""
    info = {"median": 0, "norm_factor": 1, "lower_bound": -5, "upper_bound": 5, "pad": 0}
    doc = {
        "input_names": ["c_x", "c_mask"],
        "c_x": {"var_names": ["a", "b"], "var_infos": {"a": info, "b": info}, "max_length": 3},
        "c_mask": {"var_names": ["m"], "var_infos": {"m": info}, "max_length": 3},
    }
    (folder / "preprocess.json").write_text(json.dumps(doc))
    return folder / "model.onnx"


def test_complete_uncertainties(tmp_path: Path) -> None:
    """Without inputs: the file's inputs, undeclared variables frozen; with inputs:, another
    model kind, or no preprocess.json: unchanged; an unknown declared feature: its line."""
    model = _tiny_preprocess(tmp_path)
    unc = parse_uncertainties("version: 1\nfeatures:\n  b: {absolute: 0.1}\n")
    done = complete_uncertainties(unc, model)
    assert [s.name for s in done.inputs] == ["c_x", "c_mask"]
    assert [(f.name, f.frozen) for f in done.features] == [("a", True), ("b", False)]
    assert complete_uncertainties(unc, tmp_path / "model.pt") is unc
    assert complete_uncertainties(unc, tmp_path / "sub" / "model.onnx") is unc
    assert complete_uncertainties(parse_uncertainties(SHARED), model).inputs[0].name == "points"
    bad = parse_uncertainties("version: 1\nfeatures:\n  b: {absolute: 0.1}\n  zz: {std: 1}\n")
    with pytest.raises(UncertaintyFileError, match=r"line 4: features.zz: not a variable of"):
        complete_uncertainties(bad, model)


@needs_realdata
def test_plugin_takes_the_inputs_of_preprocess_json(tmp_path: Path) -> None:
    """The plugin run on the CHS ParticleNet ONNX with an uncertainty file without inputs:
    reads the raw per-constituent columns of an npz by their var_names, runs the gate, and
    lists the frozen variables among the check's assumptions."""
    unc = complete_uncertainties(parse_uncertainties(MINIMAL), CHS / "particlenet_ak4.onnx")
    events = raw_events(unc, 128)
    labels = np.random.default_rng(4).integers(0, 8, 128)
    np.savez(tmp_path / "jets.npz", label=labels, **events.constituents)
    (tmp_path / "unc.yaml").write_text(
        MINIMAL + "data: {path: jets.npz, label: label}\ngates:\n  pgd: {epsilon: 1.0, steps: 2}\n"
    )
    command = [
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
        *("--hepguard-model", str(CHS / "particlenet_ak4.onnx")),
        *("--hepguard-uncertainties", "unc.yaml", "--hepguard-json", "report.json"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = json.loads((tmp_path / "report.json").read_text())["checks"]
    assert entry["moved_fraction"]["pfcand_etarel"] > 0
    assert entry["moved_fraction"]["sv_mass"] == 0
    assert any("sv_mass" in a for a in entry["assumptions"])
