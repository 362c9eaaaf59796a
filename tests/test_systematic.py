"""The ``systematic`` check against hand counts: a linear model whose decision is x0 > x1, each
nuisance group's +-1 sigma variation recounted in float32 numpy, correlated draws against their
closed-form expectation, and a relative group that must leave sentinel values where they are."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from pytest_hepguard.attacks.systematic import build_groups
from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import Events
from pytest_hepguard.models import wrap_model
from pytest_hepguard.uncertainties import parse_uncertainties

N = 4000
F32 = np.float32
SIGMA_A, SIGMA_B = 0.5, 0.25  # group sigmas (exact in binary)
SIGMA_X0, SIGMA_X1 = 0.3, 0.4  # the features' own envelopes

HEAD = f"""\
version: 1
features:
  x0: {{absolute: {SIGMA_X0}}}
  x1: {{absolute: {SIGMA_X1}}}
decision:
  discriminant: 1
  working_point: {{cut: 0.5}}
  output: logits
"""
GROUPS = f"""\
groups:
  A: {{absolute: {{x0: {SIGMA_A}}}}}
  B: {{absolute: {{x1: {SIGMA_B}}}}}
"""
#: (group, feature column, sigma) of every variation of each uncertainty file
SHIFTS = {
    "groups": [("A", 0, SIGMA_A), ("B", 1, SIGMA_B)],
    "features": [("x0", 0, SIGMA_X0), ("x1", 1, SIGMA_X1)],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _shifted(x: np.ndarray, column: int, shift: float) -> np.ndarray:
    """``x`` [n, 2] float32 with ``column`` moved by ``shift``, in float32 like the model."""
    out = x.copy()
    out[:, column] = x[:, column] + F32(shift)
    return out


def _tagged(x: np.ndarray) -> np.ndarray:
    """The decision of logit = x0 - x1 with P(1) > 0.5: strictly x0 > x1 (a float32 difference
    has the sign of the exact one, and a logit of exactly 0 gives P = 0.5, not tagged)."""
    return x[:, 0] > x[:, 1]


def _sample() -> np.ndarray:
    """x0 ~ N(0.2, 1), x1 ~ N(0, 1) in float32, without events so close to the decision
    boundary, nominal or shifted, that float32 softmax rounding could call them either way; plus
    events exactly on the boundary after one variation (the strict '>' decides them)."""
    rng = np.random.default_rng(17)
    x = rng.normal(size=(N + 200, 2)).astype(F32)
    x[:, 0] += F32(0.2)
    ok = np.abs(x[:, 0] - x[:, 1]) > 1e-4
    for _, column, sigma in SHIFTS["groups"] + SHIFTS["features"]:
        for sign in (1, -1):
            y = _shifted(x, column, sign * sigma)
            ok &= np.abs(y[:, 0].astype(np.float64) - y[:, 1]) > 1e-4
    x = x[ok][: N - 4]
    exact = np.array([[0.25, 0.75], [1.0, 0.5], [0.25, 0.5], [0.75, 0.5]], dtype=F32)
    return np.concatenate([x, exact])


class XMinusY(torch.nn.Module):
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        logit = t[:, 0] - t[:, 1]
        return torch.stack([torch.zeros_like(logit), logit], 1)


def _auditor(text: str, x: np.ndarray, model: torch.nn.Module | None = None) -> Auditor:
    unc = parse_uncertainties(text)
    names = tuple(f.name for f in unc.features)
    events = Events(x, names, None, None, Path("toy.npz"))
    module = XMinusY() if model is None else model
    return Auditor(wrap_model(module, torch.device("cpu"), "toy"), events, unc, seed=4)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    x = _sample()
    assert len(x) == N
    return x


def _expected_rates(x: np.ndarray, which: str) -> dict[tuple[str, str], float]:
    nominal = _tagged(x)
    out = {}
    for group, column, sigma in SHIFTS[which]:
        for label, sign in (("up", 1), ("down", -1)):
            flipped = _tagged(_shifted(x, column, sign * sigma)) != nominal
            out[group, label] = flipped.sum() / len(x)
    return out


@pytest.mark.parametrize("which", ["groups", "features"])
def test_variation_rates_are_the_hand_counts(x, which) -> None:
    text = HEAD + (GROUPS if which == "groups" else "")
    result = _auditor(text, x).run("systematic", epsilon=1.0, draws=2)
    expected = _expected_rates(x, which)
    got = {(v["group"], v["shift"]): v for v in result.details["variations"]}
    assert set(got) == set(expected)  # one up/down pair per group (per feature without groups)
    for key, rate in expected.items():
        assert got[key]["fooling_rate"] == pytest.approx(rate, abs=1e-12), key
        assert got[key]["fooling_rate_err"] == pytest.approx(
            math.sqrt(rate * (1 - rate) / N), abs=1e-12
        )
    assert result.fooling_rate == pytest.approx(max(expected.values()), abs=1e-12)
    worst = max(expected, key=expected.get)
    assert result.details["worst_variation"] == f"{worst[0]} {worst[1]}"


def test_strict_cut_decides_events_landing_on_the_boundary(x) -> None:
    """Events that one variation puts exactly on x0 == x1 stay untagged there (logit 0,
    P = 0.5, not > 0.5): A up takes (0.25, 0.75) onto the boundary (unchanged), A down takes
    (1.0, 0.5) there (flipped); B down takes (0.25, 0.5) there (unchanged), B up takes
    (0.75, 0.5) there (flipped)."""
    edge = x[-4:].copy()
    assert list(_tagged(edge)) == [False, True, False, True]
    assert list(_tagged(_shifted(edge, 0, SIGMA_A))) == [False, True, True, True]
    assert list(_tagged(_shifted(edge, 0, -SIGMA_A))) == [False, False, False, False]
    assert list(_tagged(_shifted(edge, 1, SIGMA_B))) == [False, True, False, False]
    assert list(_tagged(_shifted(edge, 1, -SIGMA_B))) == [False, True, False, True]
    auditor = _auditor(HEAD + GROUPS, edge)
    got = {
        (v["group"], v["shift"]): v["fooling_rate"]
        for v in auditor.run("systematic", epsilon=1.0, draws=2).details["variations"]
    }
    assert got == {("A", "up"): 0.25, ("A", "down"): 0.5, ("B", "up"): 0.25, ("B", "down"): 0.0}


# ---------------------------------------------------------------------------------------------
# correlated draws

EQUAL = """\
groups:
  A: {absolute: {x0: 0.5}}
  B: {absolute: {x1: 0.5}}
"""


def test_fully_correlated_equal_shifts_never_flip(x) -> None:
    text = HEAD + EQUAL + "correlations:\n  - [A, B, 1.0]\n"
    result = _auditor(text, x).run("systematic", epsilon=1.0, draws=10)
    rates = result.details["correlated"]["fooling_rates"]
    assert len(rates) == 10
    assert rates == [0.0] * 10
    assert result.random_fooling_rate == 0.0


def test_anti_correlated_shifts_flip_as_expected(x) -> None:
    text = HEAD + EQUAL + "correlations:\n  - [A, B, -1.0]\n"
    draws = 20
    result = _auditor(text, x).run("systematic", epsilon=1.0, draws=draws)
    rates = np.array(result.details["correlated"]["fooling_rates"])
    assert rates.mean() > 0
    assert result.random_fooling_rate == pytest.approx(rates.mean(), abs=1e-15)
    # theta_B = -theta_A = -theta: x0 - x1 moves by theta ~ N(0, 1); an event at d = x0 - x1
    # flips with probability Phi(-|d|) (d > 0: theta <= -d; d <= 0: theta > -d)
    d = x[:, 0].astype(np.float64) - x[:, 1]
    expected = np.mean(scipy.stats.norm.cdf(-np.abs(d)))
    assert abs(rates.mean() - expected) <= 4 * rates.std(ddof=1) / math.sqrt(draws)


def _per_event_draws(x: np.ndarray, per_event: bool) -> np.ndarray:
    flag = ", per_event: true" if per_event else ""
    text = HEAD + f"groups:\n  A: {{absolute: {{x0: 0.5}}{flag}}}\n"
    result = _auditor(text, x).run("systematic", epsilon=1.0, draws=20)
    return np.array(result.details["correlated"]["fooling_rates"])


def test_per_event_group_draws_theta_per_event(x) -> None:
    """theta ~ N(0, 1) per event: an event at d = x0 - x1 flips with p = Phi(-2 |d|), so each
    draw's rate has mean mean(p) and the binomial spread sqrt(sum p (1 - p)) / n; one theta per
    sample instead moves every event together and spreads the rates far wider."""
    d = x[:, 0].astype(np.float64) - x[:, 1]
    p = scipy.stats.norm.cdf(-2 * np.abs(d))
    spread = math.sqrt(np.sum(p * (1 - p))) / N
    per_event = _per_event_draws(x, True)
    assert abs(per_event.mean() - p.mean()) <= 4 * spread / math.sqrt(len(per_event))
    assert 0.5 * spread < per_event.std(ddof=1) < 2 * spread
    per_sample = _per_event_draws(x, False)
    assert per_sample.std(ddof=1) > 5 * spread


# ---------------------------------------------------------------------------------------------
# relative group on a feature with a sentinel

SENTINEL_TEXT = """\
version: 1
features:
  s: {relative: 0.02, sentinel: -999}
  y: {absolute: 0.1}
decision:
  discriminant: 1
  working_point: {cut: 0.5}
  output: logits
groups:
  S: {relative: {s: 0.02}}
"""


class SentinelAlarm(torch.nn.Module):
    """Tagged when s > 5; a sentinel (-999) is untagged, but tagged once moved by >= 0.001."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        s = t[:, 0]
        logit = torch.where(s < -500, 1000 * (s + 999).abs() - 1, s - 5)
        return torch.stack([torch.zeros_like(logit), logit], 1)


@pytest.fixture(scope="module")
def sentinel_sample() -> np.ndarray:
    rng = np.random.default_rng(23)
    s = rng.uniform(1, 10, size=3 * N).astype(F32)
    far = np.ones(len(s), dtype=bool)
    for edge in (5.0, 5.0 / 1.02, 5.0 / 0.98):
        far &= np.abs(s - edge) > 1e-3
    s = s[far][:N]
    s[rng.random(N) < 0.3] = F32(-999)
    y = rng.normal(size=N).astype(F32)
    return np.stack([s, y], 1)


def _rel_shift(s: np.ndarray, sign: int) -> np.ndarray:
    """s moved by sign * 2 % of |s| in float32; sentinels left alone."""
    moved = s + F32(sign) * (F32(0.02) * np.abs(s))
    return np.where(s == F32(-999), s, moved)


def test_relative_group_moves_real_values_two_percent_and_never_sentinels(
    sentinel_sample,
) -> None:
    x = sentinel_sample
    s = x[:, 0]
    real = s != F32(-999)
    assert 0.2 < 1 - real.mean() < 0.4
    auditor = _auditor(SENTINEL_TEXT, x, SentinelAlarm())
    result = auditor.run("systematic", epsilon=1.0, draws=2)
    got = {v["shift"]: v["fooling_rate"] for v in result.details["variations"]}
    nominal = s > 5
    expected = {
        label: np.sum((_rel_shift(s, sign) > 5) != nominal) / N
        for label, sign in (("up", 1), ("down", -1))
    }
    assert expected["up"] > 0 and expected["down"] > 0
    assert got == pytest.approx(expected, abs=1e-12)
    # the worst variation moved every real s (none is 0) by exactly its 1-sigma, y not at all
    assert result.moved_fraction["s"] == pytest.approx(real.mean(), abs=1e-12)
    assert result.moved_fraction["y"] == 0.0
    assert result.max_displacement_sigma["s"] == pytest.approx(1.0, abs=1e-5)
    assert result.mean_abs_displacement_sigma["s"] == pytest.approx(1.0, abs=1e-5)

    unc = parse_uncertainties(SENTINEL_TEXT)
    (group,) = build_groups(unc.groups, unc.features, ("s", "y"), np.zeros(2), torch.device("cpu"))
    for sign in (1, -1):
        rows = group.shift(torch.from_numpy(x), float(sign)).numpy()
        np.testing.assert_array_equal(rows[~real, 0], s[~real])
        np.testing.assert_array_equal(rows[:, 1], x[:, 1])
        ratio = (rows[real, 0].astype(np.float64) - s[real]) / (0.02 * np.abs(s[real]))
        np.testing.assert_allclose(ratio, sign, atol=1e-4)
        np.testing.assert_array_equal(rows[:, 0], _rel_shift(s, sign))
