"""Adversarial training (``pytest_hepguard.defense``): examples inside the declared envelope,
FGSM equal to a hand computation, no side effects on the module, the batch hook, the schedule,
and the training loop making a model measurably more robust.

References: boxes computed with numpy from the YAML's numbers, input gradients taken with
torch.autograd on a copy of the inputs, and a fooling rate computed by a separate FGSM written
here.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_hepguard.defense import (
    FitHistory,
    adversarial_batch,
    adversarial_examples,
    fit,
    linear_schedule,
    training_envelope,
)
from pytest_hepguard.exceptions import AttackError, HepguardError
from pytest_hepguard.uncertainties import parse_uncertainties

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Every envelope rule: relative with a lower bound, asymmetric absolute between bounds, integer
#: with a bound, std with a sentinel, frozen.
UNC = """\
version: 1
features:
  pt:   {relative: 0.05, min: 20}
  eta:  {absolute: true, up: 0.2, down: 0.1, min: -2.5, max: 2.5}
  ntrk: {absolute: 1.5, integer: true, min: 0}
  ip:   {std: 0.5, sentinel: [-999]}
  flag: {frozen: true}
"""
SENTINEL = -999.0


def make_rows(n: int = 300, seed: int = 0) -> np.ndarray:
    """Rows [n, 5] for UNC: pt near its min, eta up to the bounds, integer ntrk with zeros, ip
    with sentinels, a 0/1 flag."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 5), dtype=np.float32)
    x[:, 0] = 20 + rng.exponential(5.0, n)
    x[:, 1] = rng.uniform(-2.5, 2.5, n)
    x[: n // 10, 1] = 2.5
    x[:, 2] = rng.integers(0, 8, n)
    x[:, 3] = rng.normal(0.5, 2.0, n)
    x[::4, 3] = SENTINEL
    x[:, 4] = rng.integers(0, 2, n)
    return x


def hand_box(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The box [n, 5] x [n, 5] of UNC at ``eps`` sigmas, from the YAML's numbers."""
    x = x.astype(np.float64)
    lo, hi = x.copy(), x.copy()
    lo[:, 0] = np.maximum(x[:, 0] - eps * 0.05 * np.abs(x[:, 0]), 20)
    hi[:, 0] = x[:, 0] + eps * 0.05 * np.abs(x[:, 0])
    lo[:, 1] = np.maximum(x[:, 1] - eps * 0.1, -2.5)
    hi[:, 1] = np.minimum(x[:, 1] + eps * 0.2, 2.5)
    steps = math.floor(eps * 1.5)
    lo[:, 2] = np.maximum(x[:, 2] - steps, 0)
    hi[:, 2] = x[:, 2] + steps
    ip = x[:, 3]
    real = ip != SENTINEL
    sigma = 0.5 * ip[real].std()
    lo[real, 3] = ip[real] - eps * sigma
    hi[real, 3] = ip[real] + eps * sigma
    return lo, hi


def mlp(n_in: int = 5, n_out: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.Tanh(), nn.Linear(16, n_out))


@pytest.fixture(scope="module")
def setup() -> tuple[object, np.ndarray, torch.Tensor, torch.Tensor]:
    unc = parse_uncertainties(UNC)
    x = make_rows()
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 3, len(x)))
    return unc, x, torch.from_numpy(x), y


# ---- 1. examples stay inside the declared envelope -------------------------------------------


@pytest.mark.parametrize(("attack", "eps"), [("fgsm", 1.0), ("fgsm", 2.5), ("pgd", 1.0)])
def test_examples_stay_inside_the_hand_computed_envelope(setup, attack: str, eps: float) -> None:
    unc, x_np, x, y = setup
    envelope = training_envelope(unc, x_np)
    adv = (
        adversarial_examples(
            mlp(),
            x,
            y,
            envelope,
            attack=attack,
            epsilon=eps,
            steps=5,
            generator=torch.Generator().manual_seed(0),
        )
        .numpy()
        .astype(np.float64)
    )
    lo, hi = hand_box(x_np, eps)
    tol = 1e-5 * (1 + np.abs(x_np))
    assert (adv >= lo - tol).all() and (adv <= hi + tol).all()
    sentinel = x_np[:, 3] == SENTINEL
    assert np.array_equal(adv[sentinel, 3], x_np[sentinel, 3])
    assert np.array_equal(adv[:, 4], x_np[:, 4])  # frozen
    offsets = adv[:, 2] - x_np[:, 2]
    assert np.array_equal(offsets, np.round(offsets))
    assert np.abs(offsets).max() == math.floor(eps * 1.5)
    if attack == "fgsm":  # one full signed step: every moved continuous entry on a face
        for j in (0, 1, 3):
            moved = adv[:, j] != x_np[:, j]
            on_face = np.isclose(adv[:, j], lo[:, j], rtol=1e-5) | np.isclose(
                adv[:, j], hi[:, j], rtol=1e-5
            )
            # the tanh saturates on the sentinel rows (-999): zero gradient there
            assert moved[~sentinel].mean() > 0.8 and on_face[moved].all()


def test_training_envelope_std_excludes_sentinels(setup) -> None:
    unc, x_np, x, _ = setup
    envelope = training_envelope(unc, x)  # a tensor works as well as an array
    ip = x_np[:, 3].astype(np.float64)
    expected = 0.5 * ip[ip != SENTINEL].std()
    assert envelope.abs_up[3].item() == pytest.approx(expected, rel=1e-6)
    assert envelope.names == ("pt", "eta", "ntrk", "ip", "flag")


# ---- 2. FGSM equals an independent computation -----------------------------------------------


def hand_fgsm(linear: nn.Linear, x: np.ndarray, y: torch.Tensor, eps: float) -> np.ndarray:
    """x + eps * sigma * sign(dCE/dx) with sigma_up / sigma_down by side, integer steps floored,
    sentinels and frozen fixed, then clipped to the physical bounds."""
    xt = torch.from_numpy(x).clone().requires_grad_(True)
    F.cross_entropy(linear(xt), y, reduction="sum").backward()
    sign = np.sign(xt.grad.numpy().astype(np.float64))
    x = x.astype(np.float64)
    up = np.zeros_like(x)
    down = np.zeros_like(x)
    up[:, 0] = down[:, 0] = 0.05 * np.abs(x[:, 0])
    up[:, 1], down[:, 1] = 0.2, 0.1
    up[:, 2] = down[:, 2] = 1.5
    real = x[:, 3] != SENTINEL
    up[real, 3] = down[real, 3] = 0.5 * x[real, 3].std()
    step = eps * np.where(sign > 0, up, -down) * (sign != 0)
    step[:, 2] = np.sign(step[:, 2]) * np.floor(np.abs(step[:, 2]))
    out = x + step
    out[:, 0] = np.maximum(out[:, 0], 20)
    out[:, 1] = np.clip(out[:, 1], -2.5, 2.5)
    out[:, 2] = np.maximum(out[:, 2], 0)
    return out


@pytest.mark.parametrize("output", ["logits", "probabilities"])
@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_fgsm_equals_hand_computation_on_a_linear_model(setup, output: str, eps: float) -> None:
    unc, x_np, x, y = setup
    torch.manual_seed(3)
    linear = nn.Linear(5, 3)
    module = linear if output == "logits" else nn.Sequential(linear, nn.Softmax(dim=1))
    envelope = training_envelope(unc, x_np)
    adv = adversarial_examples(module, x, y, envelope, epsilon=eps, output=output)
    expected = hand_fgsm(linear, x_np, y, eps)
    # softmax underflows to exactly 0 on the sentinel rows (-999 in a linear model): the
    # probability of the true class has no gradient there, only the logits do
    rows = x_np[:, 3] != SENTINEL if output == "probabilities" else slice(None)
    np.testing.assert_allclose(adv.numpy()[rows], expected[rows], rtol=1e-5, atol=1e-5)
    assert not adv.requires_grad and adv.dtype == x.dtype


# ---- 3. no side effects on the module ----------------------------------------------------------


def test_parameters_gradients_and_modes_are_untouched(setup) -> None:
    unc, x_np, x, y = setup
    envelope = training_envelope(unc, x_np)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))
    assert module.training
    first = adversarial_examples(module, x, y, envelope)
    assert all(p.grad is None for p in module.parameters())
    assert all(m.training for m in module.modules())
    # crafted in eval mode: dropout off, so the same examples again and as on an eval copy
    assert torch.equal(first, adversarial_examples(module, x, y, envelope))
    assert torch.equal(first, adversarial_examples(copy.deepcopy(module).eval(), x, y, envelope))
    # existing gradients keep their values; a mixed train/eval state is restored per submodule
    F.cross_entropy(module(x), y).backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module[1].eval()
    adversarial_batch(module, x, y, envelope, attack="pgd", steps=3, fraction=0.5)
    assert all(torch.equal(p.grad, g) for p, g in zip(module.parameters(), grads, strict=True))
    assert [m.training for m in module.modules()] == [True, True, False, True, True]
    assert all(p.requires_grad for p in module.parameters())
    module.eval()
    adversarial_examples(module, x, y, envelope)
    assert not any(m.training for m in module.modules())


# ---- 4. the batch hook -------------------------------------------------------------------------


def test_adversarial_batch_replaces_the_requested_share(setup) -> None:
    unc, x_np, x, y = setup
    real = torch.from_numpy(x_np[:, 3] != SENTINEL)  # a saturated softmax has no gradient
    x, y = x[real][:64], y[real][:64]
    envelope = training_envelope(unc, x_np)
    torch.manual_seed(3)
    module = nn.Linear(5, 3)
    full = adversarial_examples(module, x, y, envelope)
    assert (full != x).any(1).all()  # every row moves under FGSM
    for fraction, k in ((0.5, 32), (0.25, 16)):
        out = adversarial_batch(
            module, x, y, envelope, fraction=fraction, generator=torch.Generator().manual_seed(5)
        )
        changed = (out != x).any(1)
        assert int(changed.sum()) == k
        assert torch.equal(out[~changed], x[~changed])  # bit-identical
        torch.testing.assert_close(out[changed], full[changed], rtol=1e-6, atol=1e-6)
    assert torch.equal(adversarial_batch(module, x, y, envelope, fraction=0.0), x)
    assert torch.equal(adversarial_batch(module, x, y, envelope, epsilon=0.0), x)
    # fraction 1 draws no rows: the same as adversarial_examples with the same generator
    for attack in ("fgsm", "pgd"):
        a = adversarial_batch(
            module,
            x,
            y,
            envelope,
            attack=attack,
            steps=4,
            generator=torch.Generator().manual_seed(7),
        )
        b = adversarial_examples(
            module,
            x,
            y,
            envelope,
            attack=attack,
            steps=4,
            generator=torch.Generator().manual_seed(7),
        )
        assert torch.equal(a, b)


def test_adversarial_batch_draws_rows_with_the_generator(setup) -> None:
    unc, x_np, x, y = setup
    envelope = training_envelope(unc, x_np)
    module = mlp()

    def changed(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (adversarial_batch(module, x, y, envelope, fraction=0.5, generator=g) != x).any(1)

    assert torch.equal(changed(1), changed(1))
    assert not torch.equal(changed(1), changed(2))


# ---- 5. the schedule ---------------------------------------------------------------------------


def test_linear_schedule_values() -> None:
    ramp = linear_schedule(0.0, 1.0, 4)
    assert [ramp(e) for e in range(7)] == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1, 1])
    down = linear_schedule(2.0, 0.5, 3)
    assert [down(e) for e in range(5)] == pytest.approx([2, 1.5, 1, 0.5, 0.5])
    assert linear_schedule(1.0, 1.0, 1)(0) == 1.0


# ---- 6. the training loop ----------------------------------------------------------------------

#: Two fragile inputs whose declared sigma (0.7 std of ~1.4 = 1.0) equals half their class
#: separation, two robust ones (0.03 std) slightly better separated.
SYNTH = """\
version: 1
features:
  fragile_a: {std: 0.7}
  fragile_b: {std: 0.7}
  robust_a: {std: 0.03}
  robust_b: {std: 0.03}
"""
MEANS = np.array([1.0, 1.0, 1.2, 1.2])
EPOCHS = 20


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes [n, 4] with means -MEANS / +MEANS and unit widths; labels [n]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) + np.where(y[:, None] == 1, MEANS, -MEANS)
    return x.astype(np.float32), y


def net(seed: int = 0, softmax: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)]
    return nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else []))


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def fooling_rate(module: nn.Module, x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> float:
    """Share of events whose predicted class changes under one FGSM step of 1 sigma."""
    xt = torch.from_numpy(x).requires_grad_(True)
    F.cross_entropy(module(xt), torch.from_numpy(y), reduction="sum").backward()
    x_adv = x + sigma.astype(np.float32) * np.sign(xt.grad.numpy())
    with torch.no_grad():
        before = module(torch.from_numpy(x)).argmax(1)
        after = module(torch.from_numpy(x_adv)).argmax(1)
    return float((before != after).double().mean())


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    unc = parse_uncertainties(SYNTH)
    x, y = synthetic(2000, 1)
    x_test, y_test = synthetic(2000, 2)
    out: dict[str, object] = {"unc": unc, "x": x, "y": y, "x_test": x_test, "y_test": y_test}
    for name, attack in (("nominal", None), ("adversarial", "fgsm")):
        module = net()
        history = fit(module, x, y, unc, epochs=EPOCHS, lr=1e-2, attack=attack, epsilon=1.0)
        out[name] = module.eval()
        out[f"{name}_history"] = history
    out["sigma"] = np.array([0.7, 0.7, 0.03, 0.03]) * x.astype(np.float64).std(0)
    return out


def test_fit_trains_and_adversarial_training_lowers_the_fooling_rate(trained) -> None:
    x, y, sigma = trained["x_test"], trained["y_test"], trained["sigma"]
    nominal, adversarial = trained["nominal"], trained["adversarial"]
    acc_nom, acc_adv = accuracy(nominal, x, y), accuracy(adversarial, x, y)
    fool_nom = fooling_rate(nominal, x, y, sigma)
    fool_adv = fooling_rate(adversarial, x, y, sigma)
    print(f"accuracy {acc_nom:.4f} / {acc_adv:.4f}, fooling rate {fool_nom:.4f} / {fool_adv:.4f}")
    assert acc_nom > 0.85
    assert abs(acc_nom - acc_adv) < 0.05
    assert fool_adv < 0.5 * fool_nom
    # the library's own FGSM against the final weights agrees on the ordering
    envelope = training_envelope(trained["unc"], trained["x"])
    rates = []
    for module in (nominal, adversarial):
        xt = torch.from_numpy(x)
        adv = adversarial_examples(module, xt, torch.from_numpy(y), envelope)
        with torch.no_grad():
            rates.append(float((module(xt).argmax(1) != module(adv).argmax(1)).double().mean()))
    assert rates[0] == pytest.approx(fool_nom, abs=2e-3)
    assert rates[1] == pytest.approx(fool_adv, abs=2e-3)


def test_fit_history(trained) -> None:
    for name, eps in (("nominal", 0.0), ("adversarial", 1.0)):
        history = trained[f"{name}_history"]
        assert isinstance(history, FitHistory)
        assert history.epsilon == [eps] * EPOCHS
        assert len(history.loss) == EPOCHS and history.loss[-1] < history.loss[0]
        assert history.seconds > 0
    # the adversarial loss is measured on adversarial batches: higher than the nominal one
    assert trained["adversarial_history"].loss[-1] > trained["nominal_history"].loss[-1]


def weights_after(**options: object) -> list[torch.Tensor]:
    """Parameters of ``net()`` after a short fit on a small synthetic sample."""
    x, y = synthetic(500, 3)
    module = net()
    defaults = {"epochs": 3, "batch_size": 64, "lr": 1e-2, "seed": 0}
    fit(module, x, y, parse_uncertainties(SYNTH), **(defaults | options))
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_fit_is_deterministic_for_a_seed() -> None:
    for attack in (None, "fgsm", "pgd"):
        options = {"attack": attack, "steps": 3}
        assert same(weights_after(**options), weights_after(**options))
        assert not same(weights_after(**options), weights_after(seed=1, **options))
    assert not same(weights_after(attack=None), weights_after(attack="fgsm"))


def test_fit_weights() -> None:
    ones = np.ones(500)
    assert same(weights_after(attack=None), weights_after(attack=None, weights=ones * 3))
    x, y = synthetic(500, 3)
    x_test, _ = synthetic(2000, 4)
    share = []
    for w in (ones, np.where(y == 1, 20.0, 1.0)):
        module = net()
        fit(module, x, y, parse_uncertainties(SYNTH), epochs=3, lr=1e-2, weights=w, attack=None)
        with torch.no_grad():
            share.append(float((module(torch.from_numpy(x_test)).argmax(1) == 1).double().mean()))
    assert share[1] > share[0] + 0.05  # class 1 weighted up: predicted more often


def test_fit_probabilities_output_and_schedule() -> None:
    x, y = synthetic(1000, 5)
    module = net(softmax=True)
    history = fit(
        module,
        x,
        y,
        parse_uncertainties(SYNTH),
        epochs=5,
        lr=1e-2,
        output="probabilities",
        epsilon=linear_schedule(0.0, 1.0, 2),
        fraction=0.5,
    )
    assert history.epsilon == [0.0, 0.5, 1.0, 1.0, 1.0]
    x_test, y_test = synthetic(2000, 6)
    assert accuracy(module, x_test, y_test) > 0.85
    assert module.training  # the mode the module had before fit


# ---- 7. bad inputs ----------------------------------------------------------------------------

MULTI = """\
version: 1
features:
  jet_pt: {relative: 0.02}
  c_pt:   {relative: 0.05}
inputs:
  jet: [jet_pt]
  tracks: {features: [c_pt], per: constituent, length: 3}
"""


def test_bad_inputs_name_the_problem(setup) -> None:
    unc, x_np, x, y = setup
    envelope = training_envelope(unc, x_np)
    module = mlp()
    bad_calls = [
        (lambda: adversarial_examples(module, x, y, envelope, attack="cw"), "unknown attack 'cw'"),
        (lambda: adversarial_batch(module, x, y, envelope, attack="spsa"), "unknown attack"),
        (lambda: adversarial_batch(module, x, y, envelope, fraction=1.5), "fraction must be in"),
        (lambda: adversarial_batch(module, x, y, envelope, fraction=-0.1), "fraction must be"),
        (lambda: adversarial_examples(module, x, y, envelope, epsilon=0.0), "epsilon must be"),
        (lambda: adversarial_batch(module, x, y, envelope, epsilon=-1.0), "epsilon must be"),
        (lambda: adversarial_examples(module, x, y, envelope, epsilon=math.nan), "epsilon"),
        (lambda: adversarial_examples(module, x, y[:-1], envelope), "300 rows but y has 299"),
        (lambda: adversarial_examples(module, x, y + 1, envelope), "label 3 is outside"),
        (lambda: adversarial_examples(module, x[:, :4], y, envelope), r"expected \[batch, 5\]"),
        (lambda: adversarial_examples(module, x, y, envelope, output="softmax"), "output must"),
        (lambda: adversarial_examples(module, x, y, envelope, steps=0), "steps must"),
        (lambda: linear_schedule(0.0, 1.0, 0), "epochs must be"),
        (lambda: linear_schedule(-1.0, 1.0, 3), "start must be"),
        (lambda: training_envelope(parse_uncertainties(MULTI), np.ones((4, 4))), "inputs:"),
        (lambda: training_envelope(unc, x_np[:, :3]), r"expected \[n_events, 5\]"),
    ]
    for call, message in bad_calls:
        with pytest.raises(HepguardError, match=message):
            call()
    with pytest.raises(
        AttackError, match="unknown attack 'cw' for adversarial training; expected one of fgsm, pgd"
    ):
        adversarial_examples(module, x, y, envelope, attack="cw")


def test_bad_fit_inputs_name_the_problem() -> None:
    unc = parse_uncertainties(SYNTH)
    x, y = synthetic(100, 0)
    bad = [
        ({"attack": "deepfool"}, "unknown attack 'deepfool'"),
        ({"fraction": 2.0}, "fraction must be in"),
        ({"epsilon": 0.0}, "epsilon must be a finite size > 0"),
        ({"epsilon": lambda epoch: -1.0}, "epsilon of epoch 0"),
        ({"epochs": 0}, "epochs must be"),
        ({"lr": -1.0}, "lr must be"),
        ({"weights": np.ones(3)}, r"weights have shape \[3\]"),
        ({"output": "scores", "attack": None}, "output must be one of"),
    ]
    for options, message in bad:
        with pytest.raises(HepguardError, match=message):
            fit(net(), x, y, unc, epochs=options.pop("epochs", 1), **options)
    with pytest.raises(HepguardError, match="100 rows but y has 99"):
        fit(net(), x, y[:-1], unc, epochs=1)
    with pytest.raises(HepguardError, match=r"label 2 is outside the module's classes 0\.\.1"):
        fit(net(), x, y * 2, unc, epochs=1)
    with pytest.raises(HepguardError, match="single-input models only"):
        fit(net(), x, y, parse_uncertainties(MULTI), epochs=1)
