"""Gradient-free (SPSA) gradients: the estimate against autograd and against the closed-form
cosine of Rademacher SPSA, zero where nothing may move, reproducible, made from ``score`` alone;
FGSM and PGD on it stay inside the envelope and, on the bundled example, beat random noise."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MLP, SPECS, make_inputs

from pytest_hepguard.attacks import PARAMETERS, get_attack, spsa
from pytest_hepguard.attacks.base import input_gradient
from pytest_hepguard.attacks.spsa import spsa_gradient
from pytest_hepguard.audit import Auditor
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.events import load_events
from pytest_hepguard.exceptions import AttackError, ModelError
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.models.base import Model
from pytest_hepguard.uncertainties import FeatureSpec, load_uncertainties

EXAMPLE = Path(__file__).resolve().parents[1] / "examples"
CPU = torch.device("cpu")


class ForwardOnly(Model):
    """A model hepguard can only run forward, as an ONNX graph the bridge cannot run: ``raw``
    (the autograd path) raises, ``score`` answers without gradient."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__(module.eval(), CPU, "forward-only")
        self.differentiable = False

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        raise ModelError("forward-only: no exact input gradient")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.check_output(self.forward(x), x)


def _probed(model: Model, x: torch.Tensor) -> Model:
    model.probe(x[:8], "auto")
    return model


def _labels(n: int) -> torch.Tensor:
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(2))


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row cosine [batch] of [batch, n] tensors."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def _wide() -> tuple[Envelope, torch.Tensor, Model]:
    """64 absolute features with sigmas 0.1-0.5 (all movable), inputs [500, 64], a smooth MLP."""
    n = 64
    specs = tuple(
        FeatureSpec(f"x{i}", "absolute", 0.1 * (1 + i % 5), 0.1 * (1 + i % 5)) for i in range(n)
    )
    x = torch.randn(500, n, generator=torch.Generator().manual_seed(1))
    model = _probed(wrap_model(MLP(n_in=n, scale=1.0), CPU, "mlp64"), x)
    return Envelope(specs, np.ones(n)), x, model


@pytest.mark.parametrize(("directions", "floor"), [(32, 0.5), (256, 0.85)])
def test_estimate_has_the_cosine_of_rademacher_spsa_with_autograd(directions, floor) -> None:
    """In sigma units, Rademacher SPSA with ``q`` directions in ``d`` dimensions has cosine
    1 / sqrt(1 + (d - 1) / q) with the true gradient (0.58 at q = 32, 0.90 at q = 256 for
    d = 64): the per-event median against autograd must match it, and so beat ``floor``."""
    env, x, model = _wide()
    labels = _labels(len(x))
    exact, loss = input_gradient(model, x, labels)
    est, est_loss = spsa_gradient(
        model, x, labels, env, torch.Generator().manual_seed(0), directions, 0.01
    )
    up, down = env.sigmas(x)
    sigma = (up + down) / 2
    median = float(_cosines(exact * sigma, est * sigma).median())
    expected = 1 / math.sqrt(1 + (x.shape[1] - 1) / directions)
    assert median == pytest.approx(expected, abs=0.03)
    assert median > floor
    torch.testing.assert_close(est_loss, loss)


def test_estimate_is_zero_where_nothing_may_move_and_follows_autograd_elsewhere() -> None:
    """Frozen and sentinel entries, and relative-sigma entries at 0 (no width), get exactly 0;
    the rest agrees with autograd (integer feature estimated on its continuous value)."""
    x = make_inputs(300, seed=1)
    env = Envelope(SPECS, x.double().std(0).numpy())
    model = _probed(wrap_model(MLP(), CPU, "mlp"), x)
    labels = _labels(len(x))
    est, _ = spsa_gradient(model, x, labels, env, torch.Generator().manual_seed(0), 32, 0.01)
    assert (est[:, 5] == 0).all(), "frozen feature"
    assert (est[x[:, 4] == -999.0, 4] == 0).all(), "sentinel entries"
    assert (est[x[:, 1] == 0.0, 1] == 0).all(), "relative sigma of a zero value"
    up, down = env.sigmas(x)
    width = up + down > 0
    assert (est[width] != 0).all()
    exact, _ = input_gradient(model, x, labels)
    sigma = (up + down) / 2
    assert float(_cosines(exact * sigma, est * sigma).median()) > 0.8
    assert (torch.sign(est[:, 3]) == torch.sign(exact[:, 3])).float().mean() > 0.8


def test_same_generator_state_gives_the_same_estimate_whatever_the_call_size(monkeypatch) -> None:
    """Same seed: the same estimate; another seed: another one. A memory budget of one
    antithetic pair per ``score`` call (q calls) gives the estimate of one call, to rounding."""
    env, x, model = _wide()
    labels = _labels(len(x))

    def estimate(seed: int) -> torch.Tensor:
        return spsa_gradient(model, x, labels, env, torch.Generator().manual_seed(seed), 16, 0.01)[
            0
        ]

    first = estimate(7)
    assert torch.equal(first, estimate(7))
    assert not torch.equal(first, estimate(8))
    calls = []
    score = model.score
    monkeypatch.setattr(model, "score", lambda rows: calls.append(len(rows)) or score(rows))
    monkeypatch.setattr(spsa, "ELEMENTS_PER_CALL", 2 * x.numel())
    chunked = estimate(7)
    assert calls == [3 * len(x)] + [2 * len(x)] * 15
    torch.testing.assert_close(chunked, first, rtol=1e-3, atol=1e-3 * float(first.abs().max()))


def test_a_model_whose_raw_raises_is_estimated_from_score_alone() -> None:
    """The forward-only model gives bit for bit the estimate of the same network with autograd
    (which SPSA does not use), and exact gradients on it fail with the model's message."""
    x = make_inputs(200, seed=3)
    env = Envelope(SPECS, x.double().std(0).numpy())
    labels = _labels(len(x))
    full = _probed(wrap_model(MLP(), CPU, "mlp"), x)
    forward_only = _probed(ForwardOnly(MLP()), x)
    with pytest.raises(ModelError, match="no exact input gradient"):
        input_gradient(forward_only, x, labels)
    a = spsa_gradient(full, x, labels, env, torch.Generator().manual_seed(0), 32, 0.01)
    b = spsa_gradient(forward_only, x, labels, env, torch.Generator().manual_seed(0), 32, 0.01)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("epsilon", [0.5, 2.5])
def test_spsa_attacks_stay_inside_the_envelope(attack, epsilon) -> None:
    x0 = make_inputs(300, seed=1)
    env = Envelope(SPECS, x0.double().std(0).numpy())
    model = _probed(ForwardOnly(MLP()), x0)
    labels = _labels(len(x0))
    params = {"epsilon": epsilon, "gradient": "spsa", **({"steps": 5} if attack == "pgd" else {})}
    pert = get_attack(attack, params).perturb(
        model, x0, labels, env, torch.Generator().manual_seed(3)
    )
    assert env.contains(x0, pert.x, epsilon).all()
    assert torch.equal(pert.x[:, 5], x0[:, 5])
    sentinel = x0[:, 4] == -999.0
    assert torch.equal(pert.x[sentinel, 4], x0[sentinel, 4])
    assert pert.zero_gradient is None, "no gradient-masking diagnostic from an estimate"
    assert (
        spsa.score_loss(model, pert.x, labels) > spsa.score_loss(model, x0, labels)
    ).float().mean() > 0.9


@pytest.fixture(scope="module")
def example() -> tuple[Auditor, Model]:
    """An auditor of the bundled example's tagger behind ``score`` only (its 8000 jets), and
    the tagger itself."""
    unc = load_uncertainties(EXAMPLE / "unc.yaml")
    data = unc.data
    events = load_events(data.path, unc.feature_names, label=data.label, tree=data.tree)
    tagger = load_model(EXAMPLE / "tagger.pt", CPU)
    return Auditor(ForwardOnly(tagger.forward), events, unc, seed=0), tagger


def test_pgd_spsa_on_the_example_beats_random_noise_and_stays_near_exact_pgd(example) -> None:
    """Measured: random 0.0064 +- 0.0009, PGD-SPSA 0.0190 +- 0.0015, exact PGD 0.0201 +-
    0.0016 (10 steps, 32 directions, epsilon 1)."""
    auditor, tagger = example
    estimated = auditor.run("pgd", epsilon=1.0, steps=10, gradient="spsa")
    assert estimated.envelope_violations == 0
    assert estimated.zero_gradient_fraction is None
    noise, noise_err = estimated.random_fooling_rate, estimated.random_fooling_rate_err
    assert estimated.fooling_rate - noise > 3 * math.hypot(estimated.fooling_rate_err, noise_err)
    exact = Auditor(tagger, auditor.events, auditor.uncertainties, seed=0).run(
        "pgd", epsilon=1.0, steps=10
    )
    assert estimated.fooling_rate <= exact.fooling_rate + 2 * math.hypot(
        estimated.fooling_rate_err, exact.fooling_rate_err
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"gradient": "adjoint"},
            "parameter 'gradient': expected one of exact, spsa, got 'adjoint'",
        ),
        (
            {"gradient": "spsa", "spsa_directions": 0},
            "'spsa_directions': expected a whole number >= 1, got 0",
        ),
        (
            {"gradient": "spsa", "spsa_directions": 8.5},
            "'spsa_directions': expected a whole number",
        ),
        (
            {"gradient": "spsa", "spsa_delta": 0},
            "'spsa_delta': expected a finite number > 0, got 0",
        ),
    ],
)
def test_gradient_parameters_are_validated(example, params, message) -> None:
    """What ``hepguard.attack("pgd", ...)`` raises, before anything runs."""
    with pytest.raises(AttackError, match="attack 'pgd', .*" + re.escape(message)):
        example[0].run("pgd", **params)


def test_docs_table_lists_every_attack_parameter() -> None:
    """docs/uncertainties.md's "Attack parameters" table has a row for every parameter of every
    attack, with its default."""
    docs = (EXAMPLE.parent / "docs" / "uncertainties.md").read_text(encoding="utf-8")
    table = docs.split("### Attack parameters")[1].split("\n\n")[1]
    documented = {}
    for row in table.splitlines()[2:]:
        attacks, name, _, default = (c.strip() for c in row.strip("|").split("|")[:4])
        for attack in attacks.split(","):
            documented[attack.strip(" `"), name.strip("`")] = default.strip("`")
    for attack, params in PARAMETERS.items():
        for p in params:
            assert (attack, p.name) in documented, f"{attack}.{p.name} is not in the docs table"
            if isinstance(p.default, tuple):
                default = f"[{', '.join(map(str, p.default))}]"
            else:
                default = "null" if p.default is None else str(p.default).lower()
            assert documented[attack, p.name] == default, (attack, p.name)
