"""The worst-case cascade, the robustness radius and the sensitivity scan against independent
numbers: the radius of a linear model in closed form, the scan's hidden samples re-tested with
scipy and re-scored with the TorchScript tagger, its baselines re-run on a fresh auditor."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from test_hidden import EXAMPLE, FEATURES, MOVABLE, SENTINEL

from pytest_hepguard.attacks.radius import Radius
from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import Events, load_events
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.uncertainties import parse_uncertainties

CONSTRAINTS = (
    "constraints: {ks_pvalue_min: null, jsd_max: null, corr_max: 0.01, corr_frob_max: null}\n"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _example_auditor(seen: dict | None = None) -> Auditor:
    unc = parse_uncertainties(FEATURES + CONSTRAINTS, EXAMPLE / "unc.yaml")
    events = load_events(unc.data.path, unc.feature_names, tree="Events", label="label")
    model = load_model(EXAMPLE / "tagger.pt", torch.device("cpu"))
    keep = None
    if seen is not None:

        def keep(name, rows, nominal, perturbed):
            seen[name] = rows.copy()

    return Auditor(model, events, unc, seed=21, on_perturbed=keep)


@pytest.fixture(scope="module")
def example():
    seen: dict[str, np.ndarray] = {}
    auditor = _example_auditor(seen)
    return auditor, seen, auditor.events.features.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# worst


def test_worst_is_at_least_every_attack_of_its_cascade(example) -> None:
    auditor, _, _ = example
    worst = auditor.run("worst", epsilon=1.0, steps=20)
    assert auditor.events.weights is None
    for attack, params in (("random", {}), ("fgsm", {}), ("pgd", {"steps": 20})):
        other = auditor.run(attack, epsilon=1.0, **params)
        assert worst.fooling_rate >= other.fooling_rate, attack
    cascade = worst.details["cascade"]
    assert [c["attack"] for c in cascade] == ["random", "fgsm", "pgd", "margin"]
    fooled = sum(c["fooled"] for c in cascade)
    n = worst.n_events
    assert fooled == round(worst.fooling_rate * n)
    assert fooled > 0
    assert sum(c["share"] for c in cascade) == pytest.approx(1.0, abs=1e-12)
    for c in cascade:
        assert c["share"] == pytest.approx(c["fooled"] / fooled, abs=1e-12)
    assert worst.envelope_violations == 0


# ---------------------------------------------------------------------------------------------
# radius of a linear model

W = np.array([1.0, -2.0, 0.5])
B = 0.1
SIGMAS = np.array([0.1, 0.05, 0.2])
EPSILON, BISECTIONS = 3.0, 6
RADIUS_TEXT = f"""\
version: 1
features:
  a: {{absolute: {SIGMAS[0]}}}
  b: {{absolute: {SIGMAS[1]}}}
  c: {{absolute: {SIGMAS[2]}}}
decision:
  discriminant: 1
  working_point: {{cut: 0.5}}
  output: logits
"""


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(31)
    x = (0.2 * rng.normal(size=(2000, 3))).astype(np.float32)
    lin = torch.nn.Linear(3, 2)
    lin.weight.data = torch.tensor([[0.0, 0.0, 0.0], W.tolist()], dtype=torch.float32)
    lin.bias.data = torch.tensor([0.0, B], dtype=torch.float32)
    events = Events(x, ("a", "b", "c"), None, None, Path("linear.npz"))
    auditor = Auditor(
        wrap_model(lin, torch.device("cpu"), "linear"),
        events,
        parse_uncertainties(RADIUS_TEXT),
        seed=8,
    )
    # the exact L-infinity distance to w.x + b = 0, in sigmas: |w.x + b| / sum_j |w_j| s_j
    analytic = np.abs(x.astype(np.float64) @ W + B) / np.sum(np.abs(W) * SIGMAS)
    return auditor, analytic


def test_per_event_radius_is_the_analytic_distance(linear) -> None:
    auditor, analytic = linear
    attack = Radius(EPSILON, steps=10, bisections=BISECTIONS)
    gen = torch.Generator().manual_seed(0)
    radius = attack.perturb_sample(auditor.model, auditor._sample(), gen).details["radius"]
    assert isinstance(radius, np.ndarray) and radius.shape == analytic.shape
    inside = analytic < EPSILON
    outside = analytic > EPSILON * 1.01
    assert inside.sum() > 1000 and outside.sum() > 20
    resolution = EPSILON / 2**BISECTIONS
    err = np.abs(radius[inside] - analytic[inside])
    assert np.all(err <= resolution + 1e-3), f"worst {err.max():.4g}"
    # bisection keeps the smallest budget that flips: never below the true radius
    assert np.all(radius[inside] >= analytic[inside] - 1e-3)
    assert np.all(np.isinf(radius[outside]))


def test_radius_summary_median_is_the_analytic_median(linear) -> None:
    auditor, analytic = linear
    result = auditor.run("radius", epsilon=EPSILON, steps=10, bisections=BISECTIONS)
    within = analytic <= EPSILON
    assert within.mean() > 0.5
    summary = result.details["radius"]["groups"]["all events"]
    expected = np.median(np.where(within, analytic, np.inf))
    assert summary["median"] == pytest.approx(expected, abs=EPSILON / 2**BISECTIONS + 1e-3)
    flipped_median = np.median(analytic[within])
    assert summary["median_flipped"] == pytest.approx(
        flipped_median, abs=EPSILON / 2**BISECTIONS + 1e-3
    )
    assert summary["not_flipped"] == pytest.approx(1 - within.mean(), abs=5 / len(analytic))
    assert result.fooling_rate == pytest.approx(within.mean(), abs=5 / len(analytic))


# ---------------------------------------------------------------------------------------------
# scan

EPSILONS, KS_MAX, STEPS = (0.5, 1.0), (0.01, 0.02), 5


@pytest.fixture(scope="module")
def scan(example):
    auditor, _, _ = example
    return auditor.run("scan", epsilons=list(EPSILONS), ks_max=list(KS_MAX), steps=STEPS)


def _bvl(rows: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: still supported
        module = torch.jit.load(str(EXAMPLE / "tagger.pt"), map_location="cpu")
    with torch.no_grad():
        p = module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).double()
    p = p.numpy()
    return p[:, 0] / (p[:, 0] + p[:, 2])


def test_scan_baselines_equal_separate_runs(scan) -> None:
    rows = scan.details["scan"]
    assert [(r["epsilon"], r["ks_max"]) for r in rows] == [(e, k) for e in EPSILONS for k in KS_MAX]
    fresh = _example_auditor()
    for r in rows:
        noise = fresh.run("random", epsilon=r["epsilon"])
        pgd = fresh.run("pgd", epsilon=r["epsilon"], steps=STEPS)
        assert r["random_fooling_rate"] == noise.fooling_rate
        assert r["pgd_fooling_rate"] == pgd.fooling_rate


def test_scan_hidden_rows_are_certified_by_scipy(example, scan) -> None:
    auditor, seen, nominal = example
    names = list(auditor.layout.names)
    cut = auditor.decision.cut
    d0 = _bvl(nominal)
    certified = []
    for r in scan.details["scan"]:
        if not r["certified"]:
            assert r["hidden_fooling_rate"] is None
            continue
        name = f"hidden eps={r['epsilon']} ks={r['ks_max']}"
        same = auditor.run(
            "hidden", name=name, epsilon=r["epsilon"], steps=STEPS, ks_max=r["ks_max"]
        )
        assert same.fooling_rate == r["hidden_fooling_rate"]
        perturbed = seen[name].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for feature in MOVABLE:
                j = names.index(feature)
                real = nominal[:, j] != SENTINEL
                ks = scipy.stats.ks_2samp(nominal[real, j], perturbed[real, j]).statistic
                assert ks <= r["ks_max"] + 1e-12, (name, feature, ks)
        idx = [names.index(f) for f in MOVABLE]
        for a, i in enumerate(idx):
            for j in idx[a + 1 :]:
                both = (nominal[:, i] != SENTINEL) & (nominal[:, j] != SENTINEL)
                r0 = np.corrcoef(nominal[both, i], nominal[both, j])[0, 1]
                r1 = np.corrcoef(perturbed[both, i], perturbed[both, j])[0, 1]
                assert abs(r1 - r0) <= 0.01, (name, names[i], names[j])
        d1 = _bvl(perturbed)
        flipped = int(np.sum((d0 > cut) != (d1 > cut)))
        unsure = int(np.sum((np.abs(d0 - cut) < 1e-6) | (np.abs(d1 - cut) < 1e-6)))
        assert abs(flipped - r["hidden_fooling_rate"] * len(nominal)) <= unsure
        certified.append(r["hidden_fooling_rate"])
    assert certified, "no certified row"
    assert scan.fooling_rate == max(certified)
    assert scan.attack == "scan"
