"""Every number of a check, recomputed independently: a linear softmax tagger whose FGSM
perturbation is known in closed form, evaluated in numpy, scored with scikit-learn and scipy."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from pytest_hepguard.audit import Auditor, CheckResult
from pytest_hepguard.events import Events
from pytest_hepguard.models import wrap_model
from pytest_hepguard.uncertainties import (
    DataSpec,
    DecisionSpec,
    FeatureSpec,
    Ratio,
    UncertaintyModel,
    WorkingPoint,
)

SPECS = (
    FeatureSpec("a", "absolute", 0.3, 0.3),
    FeatureSpec("b", "relative", 0.1, 0.1),
    FeatureSpec("c", "absolute", 0.5, 0.2, sentinels=(-999.0,)),
    FeatureSpec("d", None, 0.0, 0.0, frozen=True),
)
N = 3000


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 4)).astype(np.float32)
    x[:, 1] = x[:, 1] * 2 + 5
    x[rng.random(N) < 0.2, 2] = -999.0
    w = torch.tensor([[1.5, 0.4, 0.8, 0.3], [0.2, -0.3, 0.1, 0.5], [-1.0, 0.1, -0.6, 0.2]])
    lin = torch.nn.Linear(4, 3, bias=False)
    lin.weight.data = w
    xc = np.where(x == -999.0, 0.0, x)  # the model sees 0 for the sentinel
    logits = xc @ w.numpy().T + rng.gumbel(size=(N, 3))
    labels = logits.argmax(1)
    weights = rng.uniform(0.5, 2.0, N)
    events = Events(x, tuple(s.name for s in SPECS), labels, weights, Path("mem.npz"))
    spec = DecisionSpec(
        discriminant=Ratio((0,), (0, 2)),
        signal=(0,),
        background=(2,),
        working_point=WorkingPoint(efficiency=0.6),
        output="logits",
    )
    unc = UncertaintyModel(SPECS, spec, DataSpec(), ())

    class Model(torch.nn.Module):
        def forward(self, t):
            return lin(torch.where(t == -999.0, 0.0, t))

    model = wrap_model(Model(), torch.device("cpu"), "linear")
    auditor = Auditor(model, events, unc, seed=3, batch_size=700)
    return auditor, x.astype(np.float64), w.numpy().astype(np.float64), labels, weights


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _probs(x, w):
    return _softmax(np.where(x == -999.0, 0.0, x) @ w.T)


def _weighted_ks(a, b, wa, wb):
    grid = np.concatenate([a, b])
    fa = (wa[None, :] * (a[None, :] <= grid[:, None])).sum(1) / wa.sum()
    fb = (wb[None, :] * (b[None, :] <= grid[:, None])).sum(1) / wb.sum()
    return np.abs(fa - fb).max()


def _rate(changed, w):
    r = np.sum(w * changed) / np.sum(w)
    n_eff = np.sum(w) ** 2 / np.sum(w**2)
    return r, np.sqrt(r * (1 - r) / n_eff)


def test_every_fgsm_number_against_numpy_sklearn_scipy(setup) -> None:
    auditor, x, w, labels, weights = setup
    res = auditor.run("fgsm", epsilon=1.0)

    # FGSM in closed form: dCE/dx = W^T (softmax - onehot), zero for sentinel entries
    p0 = _probs(x, w)
    grad = (p0 - np.eye(3)[labels]) @ w
    sentinel = x[:, 2] == -999.0
    sig_up = np.stack([np.full(N, 0.3), 0.1 * np.abs(x[:, 1]), np.full(N, 0.5), np.zeros(N)], 1)
    sig_dn = np.stack([np.full(N, 0.3), 0.1 * np.abs(x[:, 1]), np.full(N, 0.2), np.zeros(N)], 1)
    sig_up[sentinel, 2] = sig_dn[sentinel, 2] = 0.0
    x_adv = x + np.where(grad > 0, sig_up, np.where(grad < 0, -sig_dn, 0.0))
    p1 = _probs(x_adv, w)

    bvl = lambda p: p[:, 0] / (p[:, 0] + p[:, 2])  # noqa: E731
    d0, d1 = bvl(p0), bvl(p1)
    sig, bkg = labels == 0, labels == 2
    cut = res.cut
    eff0 = np.sum(weights[sig] * (d0[sig] > cut)) / np.sum(weights[sig])
    assert abs(eff0 - 0.6) <= weights[sig].max() / weights[sig].sum()  # the working point

    t0, t1 = d0 > cut, d1 > cut
    correct = (sig & t0) | (bkg & ~t0)
    r, e = _rate(t0 != t1, weights)
    rc, ec = _rate((t0 != t1)[correct], weights[correct])
    both = sig | bkg
    auc0 = roc_auc_score(sig[both], d0[both], sample_weight=weights[both])
    auc1 = roc_auc_score(sig[both], d1[both], sample_weight=weights[both])
    eff1 = np.sum(weights[sig] * t1[sig]) / np.sum(weights[sig])
    mis0 = np.sum(weights[bkg] * t0[bkg]) / np.sum(weights[bkg])
    mis1 = np.sum(weights[bkg] * t1[bkg]) / np.sum(weights[bkg])
    delta = np.divide(
        x_adv - x, np.where(x_adv >= x, sig_up, sig_dn), where=sig_up > 0, out=np.zeros_like(x)
    )
    movable = sig_up > 0

    expected = {
        "n_events": N,
        "fooling_rate": r,
        "fooling_rate_err": e,
        "n_correct": int(correct.sum()),
        "fooling_rate_correct": rc,
        "fooling_rate_correct_err": ec,
        "auc_nominal": auc0,
        "auc_perturbed": auc1,
        "auc_drop": auc0 - auc1,
        "output_ks": _weighted_ks(d0, d1, weights, weights),
        "output_wasserstein": scipy.stats.wasserstein_distance(d0, d1, weights, weights),
        "mean_shift": np.average(d1, weights=weights) - np.average(d0, weights=weights),
        "efficiency_nominal": eff0,
        "efficiency_perturbed": eff1,
        "efficiency_change": eff1 - eff0,
        "mistag_nominal": mis0,
        "mistag_perturbed": mis1,
        "rejection_nominal": 1 / mis0,
        "rejection_perturbed": 1 / mis1,
        "envelope_violations": 0,
        "zero_gradient_fraction": 0.0,
    }
    # float32 (model) vs float64 (reference): an event within 1e-5 of the cut may fall on either
    # side; the decision-based numbers may differ by those events' weight, no more
    near = (np.abs(d0 - cut) < 1e-5) | (np.abs(d1 - cut) < 1e-5)
    assert near.sum() <= 3
    smallest = min(weights[sig].sum(), weights[bkg].sum(), weights[correct].sum())
    slack = weights[near].sum() / smallest  # largest effect on any rate
    tolerance = {
        "n_correct": near.sum(),
        **{
            k: slack
            for k in (
                "fooling_rate",
                "fooling_rate_correct",
                "efficiency_nominal",
                "efficiency_perturbed",
                "mistag_nominal",
                "mistag_perturbed",
            )
        },
        "efficiency_change": 2 * slack,
        "rejection_nominal": slack / (mis0 * (mis0 - slack)),
        "rejection_perturbed": slack / (mis1 * (mis1 - slack)),
    }
    got = res.to_dict()
    for key, value in expected.items():
        tol = tolerance.get(key, 0.0)
        assert got[key] == pytest.approx(value, rel=2e-5, abs=tol + 2e-5), key
    for j, name in enumerate("abcd"):
        assert got["max_displacement_sigma"][name] == pytest.approx(
            np.abs(delta[:, j]).max(), abs=1e-4
        )
        mean_abs = np.abs(delta[movable[:, j], j]).mean() if movable[:, j].any() else 0.0
        assert got["mean_abs_displacement_sigma"][name] == pytest.approx(mean_abs, abs=1e-4)
        assert got["moved_fraction"][name] == pytest.approx(
            np.mean(x_adv[:, j] != x[:, j]), abs=1e-3
        )
    assert got["moved_fraction"]["d"] == 0.0 and got["passed"] is True

    # plots' data: weighted histograms per class, ROC sampled at 101 signal efficiencies
    edges = np.asarray(got["histograms"]["edges"])
    assert edges[0] == 0.0 and edges[-1] == 1.0 and len(edges) == 51
    for i, name in enumerate(("class 0", "class 1", "class 2")):
        for tag, d in (("nominal", d0), ("perturbed", d1)):
            ref, _ = np.histogram(d[labels == i], edges, weights=weights[labels == i])
            hist = got["histograms"]["groups"][name][tag]
            np.testing.assert_allclose(hist, ref, atol=2 * weights.max())  # bin-edge rounding
    for tag, d in (("roc_nominal", d0), ("roc_perturbed", d1)):
        fpr, tpr, _ = roc_curve(
            sig[both], d[both], sample_weight=weights[both], drop_intermediate=False
        )
        grid = np.asarray(got[tag]["signal_efficiency"])
        ref = np.interp(grid, tpr, fpr)
        np.testing.assert_allclose(got[tag]["background_efficiency"], ref, atol=1e-4)


def test_random_baseline_agrees_with_an_independent_monte_carlo(setup) -> None:
    """Gaussian smearing drawn by numpy with another seed flips the same share of decisions
    within the two binomial errors."""
    auditor, x, w, _, weights = setup
    res = auditor.run("random", epsilon=2.0)
    rng = np.random.default_rng(99)
    z = np.clip(2.0 * rng.normal(size=x.shape), -2.0, 2.0)
    sigma = np.stack(
        [np.full(N, 0.3), 0.1 * np.abs(x[:, 1]), np.where(z[:, 2] > 0, 0.5, 0.2), np.zeros(N)], 1
    )
    sigma[x[:, 2] == -999.0, 2] = 0.0
    bvl = lambda p: p[:, 0] / (p[:, 0] + p[:, 2])  # noqa: E731
    t0 = bvl(_probs(x, w)) > res.cut
    t1 = bvl(_probs(x + z * sigma, w)) > res.cut
    r, e = _rate(t0 != t1, weights)
    assert res.fooling_rate > 0.01
    assert abs(res.fooling_rate - r) < 4 * np.hypot(e, res.fooling_rate_err)
    assert res.random_fooling_rate == res.fooling_rate  # the noise check is its own baseline


def test_gate_limits_and_baseline_of_gradient_attacks(setup) -> None:
    auditor = setup[0]
    noise = auditor.run("random", epsilon=1.0)
    pgd = auditor.run(
        "pgd", name="g", limits={"max_fooling_rate": 0.0, "max_auc_drop": 1.0}, epsilon=1.0, steps=5
    )
    assert pgd.random_fooling_rate == noise.fooling_rate
    assert pgd.fooling_rate > noise.fooling_rate
    assert not pgd.passed and len(pgd.failures) == 1
    assert pgd.failures[0].startswith("fooling_rate ") and "max_fooling_rate 0" in pgd.failures[0]
    again = auditor.run("pgd", epsilon=1.0, steps=5)  # same attack: same numbers, no limits
    assert again.passed and again.fooling_rate == pgd.fooling_rate and again.name == "pgd"


def test_same_seed_same_numbers_whatever_the_order(setup) -> None:
    auditor = setup[0]
    fresh = Auditor(auditor.model, auditor.events, auditor.uncertainties, seed=3, batch_size=700)
    b = fresh.run("pgd", epsilon=0.5, steps=3)
    a = auditor.run("pgd", epsilon=0.5, steps=3)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k != "seconds"}  # noqa: E731
    assert strip(a) == strip(b)


def test_report_docs_list_every_check_key() -> None:
    """docs/report.md documents every key a check entry carries, and nothing else."""
    text = (Path(__file__).parents[1] / "docs" / "report.md").read_text()
    section = text.split("Each entry of `checks`:")[1].split("\n\n")[1]  # its table
    documented = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            documented |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    keys = set(CheckResult.__dataclass_fields__) | {"passed", "test", "outcome", "assumptions"}
    assert documented == keys


def test_output_kind_is_detected_on_the_whole_sample() -> None:
    """One-output logits that happen to lie in [0, 1] for the first events are still logits."""
    x = np.linspace(0, 3, 1000, dtype=np.float32)[:, None]
    events = Events(x, ("x",), (x[:, 0] > 1.5).astype(np.int64), None, Path("mem.npz"))
    unc = UncertaintyModel(
        (FeatureSpec("x", "absolute", 0.1, 0.1),), DecisionSpec(), DataSpec(), ()
    )
    model = wrap_model(lambda t: t - 1.5, torch.device("cpu"), "logit")
    auditor = Auditor(model, events, unc, batch_size=256)
    assert model.output_kind == "logits"
    assert "model outputs read as logits" in auditor.decision.assumptions
    np.testing.assert_allclose(auditor.nominal_disc, 1 / (1 + np.exp(-(x[:, 0] - 1.5))), rtol=1e-5)
