"""The ONNX bridge on production CMS taggers from ``../shared/realdata`` (skipped with a reason
where that folder is absent, as in a user's clone).

For each model: load it through the bridge (every operator supported), run it at a batch size
it was not exported with, and compare

- the outputs with onnxruntime's (relative error below 1e-5),
- the input gradient of ``sum(out * v)`` (a fixed random cotangent ``v``), taken through the
  bridge in float64, with central finite differences of onnxruntime-free float64 bridge
  evaluations along random directions, and the float32 gradient with the float64 one.

Inputs follow each model's documented signature (SOURCE.md): standard-normal features, and for
ParticleNet channels-first constituents with a 0/1 mask whose padded entries are zero, as
weaver pads them.
"""

from __future__ import annotations

import math

import pytest
import torch
from onnx_helpers import grads_or_zeros, ort_run, rel_err
from realdata_cases import CASES, REALDATA, make_inputs, rows, uncertainty_yaml

from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import Events
from pytest_hepguard.layout import Layout
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.models.onnx import load_onnx_graph
from pytest_hepguard.uncertainties import parse_uncertainties

pytestmark = pytest.mark.skipif(
    not REALDATA.is_dir(),
    reason=f"{REALDATA} is absent (the production models live beside the repository, not in it)",
)


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request):
    case = CASES[request.param]
    return request.param, case, load_onnx_graph(REALDATA / case.path)


def test_outputs_match_onnxruntime(loaded) -> None:
    name, case, graph = loaded
    xs = make_inputs(case, batch=7)
    with torch.no_grad():
        ours = graph(*xs)
    runtime = ort_run(REALDATA / case.path, xs)
    assert len(ours) == len(runtime)
    for o, r in zip(ours, runtime, strict=True):
        assert rel_err(o, r) < 1e-5, name


def test_input_gradients_match_finite_differences(loaded) -> None:
    """float64 bridge: <grad, d> equals the central difference of sum(out * v) along random
    directions d (zero on padded entries) to 1e-6 relative; the float32 gradient equals the
    float64 one to 1e-4."""
    name, case, graph = loaded
    xs = make_inputs(case, batch=3, seed=1)
    movable = case.movable
    mask_of = {j: m for m, padded in case.masks.items() for j in padded}
    gen = torch.Generator().manual_seed(2)
    graph.double()
    try:
        xs64 = [x.double() for x in xs]
        with torch.no_grad():
            v = torch.randn(graph(*xs64)[case.output].shape, generator=gen, dtype=torch.float64)

        def objective(inputs: list[torch.Tensor]) -> torch.Tensor:
            return (graph(*inputs)[case.output] * v).sum()

        def shifted(step: float, directions: dict[int, torch.Tensor]) -> list[torch.Tensor]:
            return [x + step * directions[i] if i in directions else x for i, x in enumerate(xs64)]

        leaves = [x.clone().requires_grad_(i in movable) for i, x in enumerate(xs64)]
        grads = dict(
            zip(
                movable,
                grads_or_zeros(objective(leaves), [leaves[i] for i in movable]),
                strict=True,
            )
        )
        assert any(float(g.abs().max()) > 0 for g in grads.values()), name
        h = 1e-6
        for _ in range(3):
            directions = {}
            for i in movable:
                d = torch.randn(xs64[i].shape, generator=gen, dtype=torch.float64)
                directions[i] = d * xs64[mask_of[i]] if i in mask_of else d
            with torch.no_grad():
                numeric = float(
                    objective(shifted(h, directions)) - objective(shifted(-h, directions))
                ) / (2 * h)
            analytic = float(sum((grads[i] * d).sum() for i, d in directions.items()))
            assert abs(numeric - analytic) <= 1e-6 * max(abs(analytic), 1e-3), (
                name,
                numeric,
                analytic,
            )
    finally:
        graph.float()
    leaves32 = [x.clone().requires_grad_(i in movable) for i, x in enumerate(xs)]
    out32 = graph(*leaves32)[case.output]
    grads32 = grads_or_zeros((out32 * v.float()).sum(), [leaves32[i] for i in movable])
    for i, g32 in zip(movable, grads32, strict=True):
        assert rel_err(g32, grads[i]) < 1e-4, (name, i)


def test_particlenet_onnx_and_torchscript_agree() -> None:
    """The CHS ParticleNet shipped as ONNX and as TorchScript (saved on a GPU: map_location):
    the bridge's float32 outputs equal TorchScript's to 1e-5, and its float64 input gradients
    equal TorchScript's float32 ones to 1e-5.

    The gradient is compared in float64 on the bridge's side because a float32 kNN can pick
    another neighbour where two distances tie to float32 precision (the function jumps there):
    a jet of this sample does so when the summation order differs from TorchScript's by one
    rounding, while the float64 bridge agrees with TorchScript on every jet."""
    case = CASES["particlenet_ak4_chs"]
    graph = load_onnx_graph(REALDATA / case.path)
    scripted = torch.jit.load(
        str(REALDATA / "cms-particlenet-ak4-chs/particlenet_ak4_torchscript.pt"),
        map_location="cpu",
    ).eval()
    xs = make_inputs(case, batch=6, seed=3)
    with torch.no_grad():
        assert rel_err(graph(*xs)[0], scripted(*xs)) < 1e-5
    v = torch.randn(6, 8, generator=torch.Generator().manual_seed(4))
    leaves = [x.clone().requires_grad_(True) for x in xs]
    native = torch.autograd.grad((scripted(*leaves) * v).sum(), leaves[1])[0]
    graph.double()
    try:
        leaves64 = [x.double().requires_grad_(True) for x in xs]
        ours = torch.autograd.grad((graph(*leaves64)[0] * v.double()).sum(), leaves64[1])[0]
    finally:
        graph.float()
    assert float(native.abs().max()) > 0
    assert rel_err(ours, native) < 1e-5


def _audit_setup(case, n: int = 128):
    unc = parse_uncertainties(uncertainty_yaml(case))
    layout = Layout(unc)
    x = rows(case, make_inputs(case, batch=n, seed=5)).numpy()
    events = Events(x, layout.names, None, None, REALDATA / case.path)
    return unc, layout, events


@pytest.mark.parametrize("name", sorted(CASES))
def test_short_pgd_audit_of_each_real_model(name) -> None:
    """Each production tagger audited end to end through the plugin's Auditor (inputs matched
    by name, the load-time self-check against onnxruntime, onnxruntime scoring): PGD flips at
    least as many decisions as noise of the same size, stays inside the envelope, and never
    moves a mask or a padded constituent."""
    case = CASES[name]
    unc, _, events = _audit_setup(case)
    model = load_model(REALDATA / case.path, torch.device("cpu"))
    auditor = Auditor(model, events, unc, seed=0)
    noise = auditor.run("random", epsilon=1.0)
    pgd = auditor.run("pgd", epsilon=1.0, steps=3)
    assert pgd.fooling_rate >= noise.fooling_rate, (name, pgd.fooling_rate, noise.fooling_rate)
    assert pgd.fooling_rate > 0
    assert max(pgd.max_displacement_sigma.values()) <= 1.0 + 1e-4
    for i in case.masks:
        assert pgd.max_displacement_sigma[case.names[i]] == 0
        assert pgd.moved_fraction[case.names[i]] == 0


def test_particlenet_onnx_and_torchscript_audits_agree() -> None:
    """The CHS ParticleNet audited from its ONNX file and from its TorchScript file (the same
    network, shipped by CMS): the same nominal outputs and PGD fooling rates within errors."""
    case = CASES["particlenet_ak4_chs"]
    unc, _, events = _audit_setup(case)
    scripted = torch.jit.load(
        str(REALDATA / "cms-particlenet-ak4-chs/particlenet_ak4_torchscript.pt"),
        map_location="cpu",
    )
    models = [
        load_model(REALDATA / case.path, torch.device("cpu")),
        wrap_model(scripted, torch.device("cpu"), "particlenet_ak4_torchscript.pt"),
    ]
    audits = [Auditor(m, events, unc, seed=0) for m in models]
    assert rel_err(audits[0].nominal_probs, audits[1].nominal_probs) < 1e-5
    a, b = (audit.run("pgd", epsilon=1.0, steps=3) for audit in audits)
    assert a.fooling_rate > 0
    assert abs(a.fooling_rate - b.fooling_rate) <= 2 * math.hypot(
        a.fooling_rate_err, b.fooling_rate_err
    )
