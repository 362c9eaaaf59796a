"""Every attack stays inside its envelope, per feature, checked against an independent numpy
rule; FGSM matches the analytic gradient sign of a linear model; PGD beats FGSM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import MLP, SPECS, make_inputs

from pytest_hepguard.attacks import COMPOSITE, PARAMETERS, check_params, get_attack
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.exceptions import AttackError
from pytest_hepguard.models import wrap_model
from pytest_hepguard.uncertainties import FeatureSpec

ATTACKS = [
    ("random", {"distribution": "gaussian"}),
    ("random", {"distribution": "uniform"}),
    ("random", {"distribution": "sign"}),
    ("fgsm", {}),
    ("pgd", {"steps": 5}),
    ("pgd", {"steps": 5, "random_start": False}),
]


def _model(softmax: bool = False):
    m = wrap_model(MLP(softmax=softmax), torch.device("cpu"), "mlp")
    m.probe(make_inputs(8), "auto")
    return m


def _reference_allowed(x0: np.ndarray, eps: float, std: np.ndarray):
    """Independent statement of the rules of docs/uncertainties.md, one feature at a time."""
    lo, hi = np.empty_like(x0), np.empty_like(x0)
    for j, s in enumerate(SPECS):
        col = x0[:, j]
        if s.frozen:
            lo[:, j] = hi[:, j] = col
            continue
        scale = {"absolute": 1.0, "std": std[j]}.get(s.kind)
        up = s.up * (np.abs(col) if s.kind == "relative" else scale)
        down = s.down * (np.abs(col) if s.kind == "relative" else scale)
        reach_up, reach_down = eps * up, eps * down
        if s.integer:
            reach_up, reach_down = np.floor(reach_up + 1e-6), np.floor(reach_down + 1e-6)
        lo[:, j], hi[:, j] = col - reach_down, col + reach_up
        if s.min is not None:
            lo[:, j] = np.maximum(lo[:, j], np.minimum(s.min, col))
        if s.max is not None:
            hi[:, j] = np.minimum(hi[:, j], np.maximum(s.max, col))
        fixed = np.isin(col, s.sentinels)
        lo[fixed, j], hi[fixed, j] = col[fixed], col[fixed]
    return lo, hi


@pytest.mark.parametrize(("attack", "params"), ATTACKS)
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.5])
def test_attack_stays_inside_envelope_per_feature(attack, params, epsilon) -> None:
    x0 = make_inputs(300, seed=1)
    std = x0.double().std(0).numpy()
    env = Envelope(SPECS, std)
    model = _model()
    labels = torch.randint(0, 3, (len(x0),), generator=torch.Generator().manual_seed(2))
    atk = get_attack(attack, {"epsilon": epsilon, **params})
    x = atk.perturb(model, x0, labels, env, torch.Generator().manual_seed(3)).x
    lo, hi = _reference_allowed(x0.numpy().astype(np.float64), epsilon, std)
    xn = x.numpy().astype(np.float64)
    tol = 1e-5 * (1 + np.abs(x0.numpy()))
    for j, spec in enumerate(SPECS):
        assert (xn[:, j] >= lo[:, j] - tol[:, j]).all(), f"{attack} {spec.name} below envelope"
        assert (xn[:, j] <= hi[:, j] + tol[:, j]).all(), f"{attack} {spec.name} above envelope"
    off = xn[:, 3] - x0.numpy()[:, 3]
    assert np.array_equal(off, np.round(off)), "integer feature moved by a fraction"
    assert torch.equal(x[:, 5], x0[:, 5]), "frozen feature moved"
    sentinel = x0[:, 4] == -999.0
    assert torch.equal(x[sentinel, 4], x0[sentinel, 4]), "sentinel moved"
    assert env.contains(x0, x, epsilon).all()
    assert (x != x0).any(), "the attack did not move anything"


def test_fgsm_follows_the_analytic_gradient_sign_of_a_linear_model() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4)
    lin = torch.nn.Linear(4, 3, bias=False)
    lin.weight.data = w.clone()
    specs = tuple(FeatureSpec(f"x{i}", "absolute", 0.1 * (i + 1), 0.1 * (i + 1)) for i in range(4))
    env = Envelope(specs, np.ones(4))
    model = wrap_model(lin, torch.device("cpu"), "linear")
    x0 = torch.randn(50, 4)
    model.probe(x0, "logits")
    y = torch.randint(0, 3, (50,))
    x = get_attack("fgsm", {"epsilon": 1.0}).perturb(model, x0, y, env, torch.Generator()).x
    # d CE / dx = W^T (softmax(Wx) - onehot(y)), computed in numpy
    xn, wn = x0.numpy().astype(np.float64), w.numpy().astype(np.float64)
    z = xn @ wn.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y.numpy()]) @ wn
    expected = xn + np.sign(grad) * np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-6)


class Cubic(torch.nn.Module):
    """Two-class logits [0, s] with s = -x + 2 x^3: at x = 0 the cross-entropy of class 0,
    log(1 + e^s), falls to the right... of the gradient only locally: FGSM goes to x = -1
    (s = -1), PGD climbs to the local maximum x = -1/sqrt(6) (s = 0.272), and from a random
    start beyond it reaches x = +1 (s = 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = -x[:, :1] + 2 * x[:, :1] ** 3
        return torch.cat([torch.zeros_like(s), s], 1)


def test_pgd_climbs_where_fgsm_follows_the_local_slope() -> None:
    model = wrap_model(Cubic(), torch.device("cpu"), "cubic")
    x0 = torch.zeros(2000, 1)
    model.probe(x0, "logits")
    env = Envelope((FeatureSpec("x", "absolute", 1.0, 1.0),), np.ones(1))
    y = torch.zeros(2000, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)

    def ce(name, **params):
        x = get_attack(name, {"epsilon": 1.0, **params}).perturb(model, x0, y, env, gen).x
        return x, model.loss(x, y).detach()

    x_fgsm, l_fgsm = ce("fgsm")
    assert torch.equal(x_fgsm, -torch.ones_like(x0))
    torch.testing.assert_close(l_fgsm, torch.full((2000,), float(np.log1p(np.exp(-1)))))
    _, l_pgd = ce("pgd", steps=40, random_start=False)
    s_local = 1 / np.sqrt(6) - 2 / np.sqrt(6) ** 3
    assert l_pgd.min() >= np.log1p(np.exp(s_local)) - 0.01
    _, l_start = ce("pgd", steps=40)
    # uniform start: about 1 - 0.408 of the events start right of the barrier and reach x = +1
    share = float((l_start > np.log1p(np.exp(0.99))).float().mean())
    assert share == pytest.approx((1 - 1 / np.sqrt(6)) / 2, abs=0.04)
    _, l_noise = ce("random")
    assert l_pgd.mean() > l_fgsm.mean() and l_start.mean() > l_noise.mean()


def test_probability_outputs_give_the_cross_entropy_gradient_of_the_logits() -> None:
    """A softmax output enters the loss through its logarithm: the input gradient equals the
    analytic cross-entropy gradient -(1 - p0) * 80 of logits [40 x, -40 x], also where p0 is
    within 1e-6 of 1 (a loss on p itself would have a gradient p0 (1 - p0) times smaller)."""

    class Saturated(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(40 * torch.cat([x, -x], 1), 1)

    from pytest_hepguard.attacks.base import input_gradient

    model = wrap_model(Saturated(), torch.device("cpu"), "sat")
    x = torch.linspace(-0.15, 0.15, 61).unsqueeze(1)
    model.probe(x, "auto")
    assert model.output_kind == "probabilities"
    grad, _ = input_gradient(model, x, torch.zeros(61, dtype=torch.long))
    xd = x.double().numpy()[:, 0]
    expected = -(1 - 1 / (1 + np.exp(-80 * xd))) * 80
    np.testing.assert_allclose(grad.numpy()[:, 0], expected, rtol=1e-2, atol=1e-9)


def test_zero_gradient_is_flagged() -> None:
    class Step(torch.nn.Module):
        def forward(self, x):
            s = (x[:, :1] > 0).float()
            return torch.cat([s, 1 - s], 1) * 0.98 + 0.01

    model = wrap_model(Step(), torch.device("cpu"), "step")
    x0 = make_inputs(32)
    model.probe(x0, "auto")
    env = Envelope(SPECS, np.ones(7))
    y = torch.zeros(32, dtype=torch.long)
    pert = get_attack("pgd", {"epsilon": 1.0}).perturb(model, x0, y, env, torch.Generator())
    assert pert.zero_gradient.all()


def test_attack_parameters_are_validated() -> None:
    assert check_params("pgd", {"epsilon": 2})["steps"] == 10
    with pytest.raises(AttackError, match="unknown parameter 'stepz'; allowed: epsilon, steps"):
        check_params("pgd", {"stepz": 3})
    with pytest.raises(AttackError, match="known attacks: random, fgsm, pgd"):
        check_params("cw", {})
    with pytest.raises(AttackError, match="'epsilon': expected a finite number > 0"):
        check_params("fgsm", {"epsilon": -1})
    with pytest.raises(AttackError, match="'steps': expected a whole number"):
        check_params("pgd", {"steps": 2.5})


@pytest.mark.parametrize("attack", COMPOSITE)
def test_composite_checks_are_not_attack_classes(attack) -> None:
    with pytest.raises(AttackError, match="made of other checks"):
        get_attack(attack, {})


@pytest.mark.parametrize("attack", sorted(set(PARAMETERS) - set(COMPOSITE)))
def test_registry_matches_each_attack_signature(attack) -> None:
    import inspect

    cls = type(get_attack(attack, {}))
    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert names == {p.name for p in PARAMETERS[attack]}
