"""The loss landscape against direct evaluations: every curve point and surface point is
recomputed here from rows displaced in float64 numpy by the YAML sigmas (bounds clipped, integer
steps floored, sentinels and frozen features left alone) and torch's own cross-entropy; the
adversarial direction against autograd, its point at epsilon against FGSM, and the sharpness
against quadratic losses whose curvature is known."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_hepguard.attacks.fgsm import FGSM
from pytest_hepguard.audit import Auditor
from pytest_hepguard.decision import Decision
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import AttackError, HepguardError
from pytest_hepguard.landscape import (
    Curve,
    adversarial_direction,
    displaced,
    loss_curves,
    loss_surface,
    random_directions,
)
from pytest_hepguard.models import wrap_model
from pytest_hepguard.models.base import Model
from pytest_hepguard.uncertainties import FeatureSpec, parse_uncertainties

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 300
SENTINEL = -999.0
UNC = """\
version: 1
features:
  a: {absolute: true, up: 0.5, down: 0.25, max: 2.0}
  n: {absolute: 1, integer: true, min: 0}
  s: {absolute: 0.3, sentinel: -999}
  r: {relative: 0.4, min: 0}
  f: {frozen: true}
decision:
  classes: [b, c, light]
  discriminant: {numerator: [b], denominator: [b, light]}
  signal: b
  background: [light]
  working_point: {cut: 0.5}
  output: logits
groups:
  JES: {relative: {r: 0.5}, absolute: {a: {up: 0.4, down: 0.2}}}
  TRK: {absolute: {n: 1, s: 0.3}}
"""
NAMES = ("a", "n", "s", "r", "f")
CLASSES = ("b", "c", "light")
LOWER = np.array([-np.inf, 0.0, -np.inf, 0.0, -np.inf])
UPPER = np.array([2.0, np.inf, np.inf, np.inf, np.inf])
INTEGER = np.array([False, True, False, False, False])
FROZEN = np.array([False, False, False, False, True])
#: symmetric about 0, with half and whole sigmas (integer steps floor at 0.5 and 1.5)
TS = [-3.0, -2.0, -1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]


@dataclass(frozen=True)
class Sigmas:
    """Absolute and relative sigmas [5] per side, as written in the YAML."""

    abs_up: np.ndarray
    abs_down: np.ndarray
    rel_up: np.ndarray
    rel_down: np.ndarray


def _sigmas(abs_up: list[float], abs_down: list[float], rel: list[float]) -> Sigmas:
    return Sigmas(np.array(abs_up), np.array(abs_down), np.array(rel), np.array(rel))


FEATURE_SIGMAS = _sigmas([0.5, 1, 0.3, 0, 0], [0.25, 1, 0.3, 0, 0], [0, 0, 0, 0.4, 0])
GROUP_SIGMAS = {
    "JES": _sigmas([0.4, 0, 0, 0, 0], [0.2, 0, 0, 0, 0], [0, 0, 0, 0.5, 0]),
    "TRK": _sigmas([0, 1, 0.3, 0, 0], [0, 1, 0.3, 0, 0], [0, 0, 0, 0, 0]),
}


def reference_rows(x: np.ndarray, delta: np.ndarray, sig: Sigmas) -> np.ndarray:
    """``x`` [m, 5] float32 moved by ``delta`` [m, 5] sigmas in float64: up or down sigma by the
    sign, integer steps floored, clipped to the bounds (never past a nominal value already
    outside them), sentinel and frozen entries unchanged; returned in float32."""
    x64 = x.astype(np.float64)
    movable = ~FROZEN & ~((x64 == SENTINEL) & (np.arange(5) == 2))
    up = sig.abs_up + sig.rel_up * np.abs(x64)
    down = sig.abs_down + sig.rel_down * np.abs(x64)
    step = np.where(delta > 0, delta * up, delta * down) * movable
    step = np.where(INTEGER, np.sign(step) * np.floor(np.abs(step) + 1e-6), step)
    y = np.clip(x64 + step, np.minimum(LOWER, x64), np.maximum(UPPER, x64))
    return y.astype(np.float32)


class Tagger(nn.Module):
    """5 -> 16 -> 3 tanh MLP with fixed weights; the sentinel enters as 0."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
        rng = np.random.default_rng(5)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.from_numpy(rng.normal(0.0, 0.8, size=tuple(p.shape))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.where(x == SENTINEL, torch.zeros_like(x), x))


MODULE = Tagger()


def direct_losses(rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch's cross-entropy [m] and the BvL discriminant P(b) / (P(b) + P(light)) [m]."""
    with torch.no_grad():
        logits = MODULE(torch.from_numpy(rows))
        loss = F.cross_entropy(logits, torch.from_numpy(labels), reduction="none")
        p = torch.softmax(logits, 1)
    return loss.double().numpy(), (p[:, 0] / (p[:, 0] + p[:, 2])).double().numpy()


def mean(values: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * values) / np.sum(w))


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = np.stack(
        [
            rng.uniform(-2.0, 2.0, N),
            rng.poisson(1.5, N),
            np.where(rng.random(N) < 0.3, SENTINEL, rng.normal(0.0, 1.0, N)),
            np.where(rng.random(N) < 0.1, 0.0, rng.exponential(1.0, N)),
            rng.normal(0.0, 1.0, N),
        ],
        1,
    ).astype(np.float32)
    labels = rng.integers(0, 3, N).astype(np.int64)
    weights = rng.uniform(0.5, 2.0, N)
    return x, labels, weights


@pytest.fixture(scope="module")
def auditor(sample) -> Auditor:
    x, labels, weights = sample
    events = Events(x, NAMES, labels, weights, Path("toy.npz"))
    model = wrap_model(MODULE, torch.device("cpu"), "toy")
    return Auditor(model, events, parse_uncertainties(UNC), seed=0)


@pytest.fixture(scope="module")
def tensors(sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, labels, weights = sample
    return torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(weights)


def autograd_direction(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """sign of d(sum of cross-entropies)/dx, 0 on sentinel and frozen entries."""
    xt = torch.from_numpy(x).requires_grad_(True)
    F.cross_entropy(MODULE(xt), torch.from_numpy(labels), reduction="sum").backward()
    assert xt.grad is not None
    sign = np.sign(xt.grad.numpy()).astype(np.float64)
    sign[:, FROZEN] = 0.0
    sign[:, 2][x[:, 2] == SENTINEL] = 0.0
    return sign


@pytest.fixture(scope="module")
def curves(auditor, tensors) -> dict[str, Curve]:
    x, labels, weights = tensors
    out = loss_curves(
        auditor.model,
        auditor.decision,
        x,
        labels,
        auditor.envelope,
        ts=TS,
        groups=auditor.nuisance_groups(),
        weights=weights,
        class_names=CLASSES,
        random_draws=3,
        generator=torch.Generator().manual_seed(11),
    )
    return {c.direction: c for c in out}


# ---------------------------------------------------------------------------------------------
# displaced rows and directions


def test_displaced_rows_follow_the_envelope_rules(auditor, sample, tensors) -> None:
    x, _, _ = sample
    direction = random_directions(tensors[0], auditor.envelope, torch.Generator().manual_seed(1))
    d = direction.numpy().astype(np.float64)
    for t in TS:
        got = displaced(auditor.envelope, tensors[0], direction, t).numpy()
        want = reference_rows(x, t * d, FEATURE_SIGMAS)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got[:, [1, 4]], want[:, [1, 4]])  # integer, frozen
        sentinel = x[:, 2] == SENTINEL
        np.testing.assert_array_equal(got[sentinel, 2], x[sentinel, 2])
    # the rules bite: a stops at its max, r at its min 0, n by whole floored steps
    up = displaced(auditor.envelope, tensors[0], torch.ones_like(direction), 3.0).numpy()
    down = displaced(auditor.envelope, tensors[0], torch.ones_like(direction), -3.0).numpy()
    half = displaced(auditor.envelope, tensors[0], torch.ones_like(direction), 1.5).numpy()
    assert (up[:, 0] == 2.0).sum() > 50 and (down[:, 3] == 0.0).sum() > 200
    np.testing.assert_array_equal(half[:, 1], x[:, 1] + 1)
    np.testing.assert_array_equal(down[:, 1], np.maximum(x[:, 1] - 3, 0))


def test_adversarial_direction_is_the_sign_of_the_autograd_gradient(
    auditor, sample, tensors
) -> None:
    x, labels, _ = sample
    got = adversarial_direction(auditor.model, tensors[0], tensors[1], auditor.envelope)
    want = autograd_direction(x, labels)
    np.testing.assert_array_equal(got.numpy(), want)
    assert (want[:, :4] != 0).mean() > 0.9  # the movable entries have a gradient


def test_random_directions_are_rademacher_on_movable_entries(auditor, sample, tensors) -> None:
    x, _, _ = sample
    draw = [
        random_directions(tensors[0], auditor.envelope, gen).numpy()
        for gen in (torch.Generator().manual_seed(3),) * 4
    ]
    movable = np.ones_like(x, dtype=bool)
    movable[:, 4] = False
    movable[:, 2] = x[:, 2] != SENTINEL
    for d in draw:
        assert set(np.unique(d[movable])) == {-1.0, 1.0}
        assert (d[~movable] == 0).all()
        assert abs(d[movable].mean()) < 4 / np.sqrt(movable.sum())
    assert not np.array_equal(draw[0], draw[1])
    again = random_directions(tensors[0], auditor.envelope, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(again.numpy(), draw[0])


# ---------------------------------------------------------------------------------------------
# curves against direct evaluation


def _check_curve(curve: Curve, per_t: list[tuple[np.ndarray, np.ndarray]], sample) -> None:
    """``per_t``: the direct (loss, discriminant) [N] at each t of TS."""
    _, labels, w = sample
    assert curve.t == TS
    assert list(curve.loss_by_class) == list(CLASSES)
    for i, (loss, disc) in enumerate(per_t):
        assert curve.loss[i] == pytest.approx(mean(loss, w), abs=1e-5)
        assert curve.discriminant[i] == pytest.approx(mean(disc, w), abs=1e-5)
        for c, name in enumerate(CLASSES):
            own = labels == c
            assert curve.loss_by_class[name][i] == pytest.approx(mean(loss[own], w[own]), abs=1e-5)


def test_adversarial_curve_is_direct_evaluation(curves, sample) -> None:
    x, labels, _ = sample
    d = autograd_direction(x, labels)
    per_t = [direct_losses(reference_rows(x, t * d, FEATURE_SIGMAS), labels) for t in TS]
    _check_curve(curves["adversarial"], per_t, sample)
    loss = curves["adversarial"].loss
    assert loss[TS.index(1.0)] > loss[TS.index(0.0)] > loss[TS.index(-1.0)]


def test_random_curve_is_the_average_of_its_draws(auditor, curves, sample, tensors) -> None:
    x, labels, _ = sample
    gen = torch.Generator().manual_seed(11)
    draws = [random_directions(tensors[0], auditor.envelope, gen).numpy() for _ in range(3)]
    per_t = []
    for t in TS:
        each = [direct_losses(reference_rows(x, t * d, FEATURE_SIGMAS), labels) for d in draws]
        per_t.append((np.mean([e[0] for e in each], 0), np.mean([e[1] for e in each], 0)))
    _check_curve(curves["random"], per_t, sample)


@pytest.mark.parametrize("group", ["JES", "TRK"])
def test_group_curve_is_the_group_shift(auditor, curves, sample, tensors, group) -> None:
    x, labels, _ = sample
    (shift,) = [g for g in auditor.nuisance_groups() if g.name == group]
    per_t = []
    for t in TS:
        rows = reference_rows(x, np.full(x.shape, t), GROUP_SIGMAS[group])
        np.testing.assert_allclose(shift.shift(tensors[0], t).numpy(), rows, rtol=1e-6, atol=1e-6)
        per_t.append(direct_losses(rows, labels))
    _check_curve(curves[f"group:{group}"], per_t, sample)


def test_curves_come_in_order_and_at_zero_agree(curves, sample) -> None:
    x, labels, w = sample
    assert list(curves) == ["adversarial", "random", "group:JES", "group:TRK"]
    nominal = mean(direct_losses(x, labels)[0], w)
    for curve in curves.values():
        assert curve.loss[TS.index(0.0)] == pytest.approx(nominal, abs=1e-6)
        assert json.loads(json.dumps(curve.to_dict())) == curve.to_dict()


def test_batches_give_the_same_curves(auditor, curves, tensors) -> None:
    x, labels, weights = tensors
    small = loss_curves(
        auditor.model,
        auditor.decision,
        x,
        labels,
        auditor.envelope,
        ts=TS,
        groups=auditor.nuisance_groups(),
        weights=weights,
        class_names=CLASSES,
        random_draws=1,
        batch_size=64,
    )
    for curve in small:
        if curve.direction != "random":  # its draws follow the batches
            whole = curves[curve.direction]
            assert curve.loss == pytest.approx(whole.loss, rel=1e-12)
            for name in CLASSES:
                assert curve.loss_by_class[name] == pytest.approx(
                    whole.loss_by_class[name], rel=1e-12
                )


@pytest.mark.parametrize("eps", [0.5, 1.0, 1.5])
def test_adversarial_curve_at_epsilon_is_fgsm(auditor, sample, tensors, eps) -> None:
    """FGSM's rows at epsilon, integer feature included (floored to whole steps by both)."""
    _, _, w = sample
    x, labels, weights = tensors
    env = auditor.envelope
    fgsm = FGSM(epsilon=eps).perturb(auditor.model, x, labels, env, torch.Generator()).x
    direction = adversarial_direction(auditor.model, x, labels, env)
    assert torch.equal(displaced(env, x, direction, eps), fgsm)
    (curve, *_) = loss_curves(
        auditor.model, auditor.decision, x, labels, env, ts=[-eps, 0.0, eps], weights=weights
    )
    with torch.no_grad():
        fgsm_loss = auditor.model.loss(fgsm, labels).double().numpy()
    assert curve.loss[2] == pytest.approx(mean(fgsm_loss, w), abs=1e-9)


# ---------------------------------------------------------------------------------------------
# sharpness


def test_sharpness_of_a_hand_made_quadratic() -> None:
    c = 0.7
    t = np.linspace(-3.0, 3.0, 25).round(9)
    curve = Curve("adversarial", t.tolist(), (c * t**2 + 1).tolist(), {}, [0.5] * 25)
    sharp = curve.sharpness(1.0)
    assert sharp["curvature"] == pytest.approx(2 * c, rel=1e-12)
    assert sharp["max_increase"] == pytest.approx(c * 1.0**2, rel=1e-12)
    assert curve.sharpness(1.1)["max_increase"] == pytest.approx(c, rel=1e-12)  # |t| <= 1.1
    assert curve.sharpness(2.0)["max_increase"] == pytest.approx(4 * c, rel=1e-12)
    uneven = [-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]  # step 0.5 next to 0 on both sides
    sharp = Curve("random", uneven, [c * v**2 + 1 for v in uneven], {}, []).sharpness(0.7)
    assert sharp == pytest.approx({"curvature": 2 * c, "max_increase": c * 0.25})
    for bad in ([-1.0, 0.0, 0.5], [-1.0, 1.0], [0.0, 1.0]):
        with pytest.raises(AttackError, match="landscape random"):
            Curve("random", bad, [1.0] * len(bad), {}, []).sharpness(1.0)


class QuadraticLoss(nn.Module):
    """P(class 0) = exp(-(C q**2 + 1)): the cross-entropy of class 0 is exactly C q**2 + 1."""

    C = 0.8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0 = torch.exp(-(self.C * x[:, 0] ** 2 + 1))
        return torch.stack([p0, 1 - p0], 1)


def test_sharpness_of_a_model_with_quadratic_loss() -> None:
    """Events at q = 0 with sigma 0.5: along +-1 directions the loss is C (0.5 t)**2 + 1, so the
    curvature is 0.5 C and the increase within epsilon 0.25 C eps**2."""
    env = Envelope([FeatureSpec("q", "absolute", 0.5, 0.5)], np.zeros(1))
    model = Model(QuadraticLoss(), torch.device("cpu"), "quadratic")
    model.n_outputs, model.output_kind = 2, "probabilities"
    decision = Decision(2, 1, (1,), (0,), 0.5, ())
    x0, labels = torch.zeros(20, 1), torch.zeros(20, dtype=torch.int64)
    ts = np.linspace(-2.0, 2.0, 17).round(9).tolist()
    curves = loss_curves(model, decision, x0, labels, env, ts=ts, random_draws=2)
    random = curves[1]
    assert random.direction == "random"
    assert list(random.loss_by_class) == ["class 0"]  # the only class with events
    assert random.loss == pytest.approx([0.2 * t**2 + 1 for t in ts], abs=1e-6)
    sharp = random.sharpness(1.5)
    assert sharp["curvature"] == pytest.approx(0.5 * QuadraticLoss.C, abs=1e-4)
    assert sharp["max_increase"] == pytest.approx(0.25 * QuadraticLoss.C * 1.5**2, abs=1e-6)
    # at q = 0 the gradient is 0: the adversarial direction is 0, its curve flat
    assert curves[0].loss == pytest.approx([1.0] * len(ts), abs=1e-7)


# ---------------------------------------------------------------------------------------------
# surface


def _surface_reference(
    x: np.ndarray, labels: np.ndarray, w: np.ndarray, cols: tuple[int, int], grid: list[float]
) -> np.ndarray:
    out = np.zeros((len(grid), len(grid)))
    for a, gi in enumerate(grid):
        for b, gj in enumerate(grid):
            delta = np.zeros(x.shape)
            delta[:, cols[0]], delta[:, cols[1]] = gi, gj
            out[a, b] = mean(direct_losses(reference_rows(x, delta, FEATURE_SIGMAS), labels)[0], w)
    return out


GRID = [-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


@pytest.mark.parametrize("features", [("n", "r"), ("a", "s")])
def test_surface_of_one_event_is_a_double_loop(auditor, sample, tensors, features) -> None:
    x, labels, _ = sample
    ok = (x[:, 1] > 0) & (x[:, 2] != SENTINEL) & (x[:, 3] > 0) & (x[:, 0] > 1.0)
    k = int(np.flatnonzero(ok)[0])
    surface = loss_surface(
        auditor.model,
        tensors[0][k : k + 1],
        tensors[1][k : k + 1],
        auditor.envelope,
        auditor.layout.feature_of,
        features,
        GRID,
        batch_size=7,  # grid points stacked 7 at a time
    )
    cols = (NAMES.index(features[0]), NAMES.index(features[1]))
    want = _surface_reference(x[k : k + 1], labels[k : k + 1], np.ones(1), cols, GRID)
    assert surface.features == features and surface.events == 1
    assert surface.grid_i == GRID and surface.grid_j == GRID
    np.testing.assert_allclose(np.array(surface.loss), want, rtol=0, atol=1e-5)
    assert np.ptp(want) > 0.1  # the surface is not flat
    assert json.loads(json.dumps(surface.to_dict()))["features"] == list(features)


def test_surface_averages_weighted_events(auditor, sample, tensors) -> None:
    x, labels, w = sample
    m = 40  # a third of them with s at its sentinel, which stays
    surface = loss_surface(
        auditor.model,
        tensors[0][:m],
        tensors[1][:m],
        auditor.envelope,
        auditor.layout.feature_of,
        ("s", "a"),
        GRID,
        weights=tensors[2][:m],
        batch_size=16,  # events in batches of 16, one grid point per forward
    )
    want = _surface_reference(x[:m], labels[:m], w[:m], (2, 0), GRID)
    assert surface.events == m
    np.testing.assert_allclose(np.array(surface.loss), want, rtol=0, atol=1e-5)
    centre = GRID.index(0.0)
    assert surface.loss[centre][centre] == pytest.approx(
        mean(direct_losses(x[:m], labels[:m])[0], w[:m]), abs=1e-6
    )


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (("a", "zz"), "'zz' is not a feature; movable features: a, n, s, r"),
        (("f", "a"), "'f' is frozen; movable features: a, n, s, r"),
        (("a", "a"), "two different features"),
    ],
)
def test_surface_rejects_bad_features(auditor, tensors, features, message) -> None:
    with pytest.raises(HepguardError, match=message):
        loss_surface(
            auditor.model,
            tensors[0][:2],
            tensors[1][:2],
            auditor.envelope,
            auditor.layout.feature_of,
            features,
            [0.0, 1.0],
        )


# ---------------------------------------------------------------------------------------------
# the landscape check


def test_landscape_check_reports_curves_with_sharpness(auditor) -> None:
    result = auditor.run("landscape", epsilon=1.0, span=2.0, points=9, draws=2)
    land = result.details["landscape"]
    assert land["epsilon"] == 1.0
    got = [c["direction"] for c in land["curves"]]
    assert got == ["adversarial", "random", "group:JES", "group:TRK"]
    for c in land["curves"]:
        assert c["t"] == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
        assert set(c["sharpness"]) == {"curvature", "max_increase"}
        assert c["sharpness"]["max_increase"] >= 0.0
    adversarial = land["curves"][0]["sharpness"]["max_increase"]
    assert adversarial > land["curves"][1]["sharpness"]["max_increase"]
