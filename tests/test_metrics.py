"""metrics.py against hand-computed numbers and independent references (sklearn, scipy, numpy).

Nothing here checks the module against itself: every expected value is written out by hand or
comes from ``sklearn.metrics``, ``scipy.stats``, ``numpy.average`` or a brute-force ECDF.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from pytest_hepguard.metrics import (
    OutputShift,
    Rate,
    cut_for_efficiency,
    efficiency,
    fooling_rate,
    output_shift,
    weighted_auc,
    weighted_ks,
    weighted_mean,
    weighted_roc,
    weighted_wasserstein,
)

SEEDS = (0, 1, 2, 3, 4)


def _sample(seed: int, n: int, *, ties: bool, weighted: bool):
    """Scores [n] (rounded to 1 decimal when ``ties``), labels [n] (both classes), weights."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    y[:2] = (True, False)
    s = rng.normal(size=n) + 0.8 * y
    if ties:
        s = np.round(s, 1)
    w = rng.uniform(0.1, 3.0, size=n) if weighted else None
    return s, y, w


def _brute_ecdf(sample, weights, grid):
    """F(x) = sum w[sample <= x] / sum w on every grid point, by broadcasting (no sorting)."""
    w = np.ones(len(sample)) if weights is None else np.asarray(weights, dtype=float)
    return (w[None, :] * (sample[None, :] <= grid[:, None])).sum(axis=1) / w.sum()


# ---------------------------------------------------------------------------------------------
# fooling rate, by hand


def test_fooling_rate_hand_weighted():
    # changed: [no, no, yes, no, yes]; changed weight 1 + 3 = 4 of 8; n_eff = 8^2 / 16 = 4
    r = fooling_rate([0, 1, 1, 0, 2], [0, 1, 0, 0, 1], weights=[1, 2, 1, 1, 3])
    assert isinstance(r, Rate)
    assert r.value == pytest.approx(0.5)
    assert r.error == pytest.approx(0.25)  # sqrt(0.5 * 0.5 / 4)
    assert r.n == 5


def test_fooling_rate_hand_unweighted():
    r = fooling_rate(np.array([0, 1, 1, 0, 2]), np.array([0, 1, 0, 0, 1]))
    assert r.value == pytest.approx(0.4)  # 2 of 5
    assert r.error == pytest.approx(math.sqrt(0.4 * 0.6 / 5))
    assert r.n == 5


def test_fooling_rate_hand_masked():
    # mask keeps events 0, 1, 2: changed [no, no, yes], weights [1, 2, 1] -> 1/4;
    # n_eff = 4^2 / (1 + 4 + 1) = 16/6
    mask = np.array([True, True, True, False, False])
    r = fooling_rate([0, 1, 1, 0, 2], [0, 1, 0, 0, 1], weights=[1, 2, 1, 1, 3], mask=mask)
    assert r.value == pytest.approx(0.25)
    assert r.error == pytest.approx(math.sqrt(0.25 * 0.75 / (16 / 6)))
    assert r.n == 3


def test_fooling_rate_empty_mask_is_nan():
    r = fooling_rate([0, 1, 1], [1, 1, 0], mask=np.zeros(3, dtype=bool))
    assert math.isnan(r.value) and math.isnan(r.error) and r.n == 0


def test_fooling_rate_no_events_is_nan():
    r = fooling_rate(np.array([], dtype=int), np.array([], dtype=int))
    assert math.isnan(r.value) and math.isnan(r.error) and r.n == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_fooling_rate_random_against_numpy(seed):
    rng = np.random.default_rng(seed)
    n = 1000
    nom = rng.integers(0, 3, n)
    pert = np.where(rng.random(n) < 0.2, rng.integers(0, 3, n), nom)
    w = rng.uniform(-0.2, 2.0, n)  # some negative MC weights
    mask = rng.random(n) < 0.7
    r = fooling_rate(nom, pert, w, mask=mask)
    wm, ch = w[mask], (nom != pert)[mask]
    expected = np.average(ch.astype(float), weights=wm)
    n_eff = wm.sum() ** 2 / (wm**2).sum()
    assert r.value == pytest.approx(expected)
    assert r.error == pytest.approx(math.sqrt(expected * (1 - expected) / n_eff))
    assert r.n == mask.sum()


# ---------------------------------------------------------------------------------------------
# ROC and AUC


def test_auc_and_roc_hand_with_tie():
    # pairs (signal, background): 0.9>0.5, 0.9>0.1, 0.5=0.5 (counts 1/2), 0.5>0.1 -> 3.5 / 4
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    is_sig = np.array([True, True, False, False])
    assert weighted_auc(scores, is_sig) == pytest.approx(0.875)
    fpr, tpr, thr = weighted_roc(scores, is_sig)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5, 0.1])


def test_auc_hand_weighted_with_tie():
    # weights s0=1, s1=2, b2=3, b3=1. pair weights: s0-b2 win 3, s0-b3 win 1,
    # s1-b2 tie 6 * 1/2 = 3, s1-b3 win 2 -> 9 of (1 + 2) * (3 + 1) = 12
    auc = weighted_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0], weights=[1, 2, 3, 1])
    assert auc == pytest.approx(0.75)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_roc_and_auc_against_sklearn(seed, ties, weighted):
    s, y, w = _sample(seed, 500 + 137 * seed, ties=ties, weighted=weighted)
    fpr, tpr, thr = weighted_roc(s, y, w)
    ref_fpr, ref_tpr, ref_thr = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thr, ref_thr)
    assert weighted_auc(s, y, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def _pairwise_auc(scores, is_sig, w):
    """sum over (signal i, background j) of w_i w_j ([s_i > s_j] + [s_i == s_j] / 2) / (W_s W_b)."""
    si, sj = scores[is_sig][:, None], scores[~is_sig][None, :]
    wins = (si > sj) + 0.5 * (si == sj)
    ws, wb = w[is_sig], w[~is_sig]
    return float(ws @ wins @ wb) / (ws.sum() * wb.sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_negative_weights_against_pairwise(seed):
    # sklearn refuses negative weights that make the ROC non-monotonic; the pairwise
    # (Mann-Whitney) sum is the signed-measure AUC, and equals sklearn on positive weights
    s, y, _ = _sample(seed, 400, ties=True, weighted=False)
    w = np.random.default_rng(100 + seed).uniform(-0.3, 2.0, len(s))
    assert weighted_auc(s, y, w) == pytest.approx(_pairwise_auc(s, y, w), abs=1e-12)
    w_pos = np.abs(w)
    assert _pairwise_auc(s, y, w_pos) == pytest.approx(
        roc_auc_score(y, s, sample_weight=w_pos), abs=1e-12
    )


def test_auc_single_class_is_nan():
    assert math.isnan(weighted_auc([0.1, 0.5, 0.7], [True, True, True]))
    assert math.isnan(weighted_auc([0.1, 0.5, 0.7], [False, False, False]))
    assert math.isnan(weighted_auc([], np.array([], dtype=bool)))
    fpr, tpr, thr = weighted_roc([0.1, 0.5, 0.5], [True, True, True])
    assert np.isnan(fpr).all() and thr.shape == tpr.shape == fpr.shape == (3,)
    np.testing.assert_allclose(tpr, [0.0, 2 / 3, 1.0])
    fpr, tpr, thr = weighted_roc([], np.array([], dtype=bool))
    assert thr.shape == tpr.shape == fpr.shape == (1,)


def test_output_shift_no_events():
    empty = np.array([])
    out = output_shift(empty, empty, empty.astype(bool), empty.astype(bool), cut=0.5)
    assert all(math.isnan(v) for k, v in out.to_dict().items() if k != "cut")


# ---------------------------------------------------------------------------------------------
# efficiency and working points


def test_efficiency_hand():
    scores, w = [0.1, 0.4, 0.4, 0.8], [1, 2, 3, 4]
    assert efficiency(scores, 0.4, w) == pytest.approx(0.4)  # only 0.8 (weight 4 of 10)
    assert efficiency(scores, 0.3, w) == pytest.approx(0.9)  # 0.4, 0.4, 0.8 -> 9 of 10
    assert efficiency(scores, 0.3) == pytest.approx(0.75)  # 3 of 4 unweighted
    assert efficiency(scores, 0.8, w) == 0.0
    assert math.isnan(efficiency([], 0.5))


def test_cut_for_efficiency_hand():
    # weights total 8: keeping 0.8 gives 4/8 = 0.5; keeping the tie at 0.4 too gives 7/8;
    # keeping 0.1 too gives 1. The cut is the highest score not kept.
    scores, w = np.array([0.1, 0.4, 0.4, 0.8]), np.array([1.0, 1.0, 2.0, 4.0])
    assert cut_for_efficiency(scores, w, 0.5) == 0.4
    assert cut_for_efficiency(scores, w, 0.8) == 0.1  # 7/8 is closest
    assert cut_for_efficiency(scores, w, 0.0) == 0.8  # nothing > 0.8
    assert cut_for_efficiency(scores, w, 0.2) == 0.8  # 0 (0.2 away) beats 0.5 (0.3 away)
    all_cut = cut_for_efficiency(scores, w, 1.0)
    assert all_cut < 0.1 and np.nextafter(all_cut, np.inf) == 0.1
    # exactly halfway between 0.5 and 0.875: the tighter cut wins
    assert cut_for_efficiency(scores, w, 0.6875) == 0.4
    # unweighted: 1/4, 3/4, 1 -> 0.7 is closest to 3/4
    assert cut_for_efficiency(scores, None, 0.7) == 0.1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.0, 0.05, 0.3, 0.5, 0.77, 0.95, 1.0])
def test_cut_for_efficiency_within_one_event(seed, target):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=2000)
    w = rng.uniform(0.5, 2.0, size=2000)
    cut = cut_for_efficiency(s, w, target)
    achieved = w[s > cut].sum() / w.sum()
    assert abs(achieved - target) <= w.max() / w.sum()
    # unweighted: within one event
    cut = cut_for_efficiency(s, None, target)
    assert abs(np.mean(s > cut) - target) <= 1 / len(s)


def test_cut_for_efficiency_rejects_bad_input():
    with pytest.raises(ValueError, match=r"0\.\.1"):
        cut_for_efficiency([0.1, 0.2], None, 1.5)
    with pytest.raises(ValueError, match="positive total weight"):
        cut_for_efficiency([], None, 0.5)
    with pytest.raises(ValueError, match="positive total weight"):
        cut_for_efficiency([0.1, 0.2], [1.0, -1.0], 0.5)


# ---------------------------------------------------------------------------------------------
# KS, Wasserstein, mean


def test_ks_and_wasserstein_hand():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0, 5.0])
    # F_a - F_b at 1, 2, 2.5, 3, 4, 5: 1/3, 2/3, 1/3, 2/3, 1/3, 0
    assert weighted_ks(a, b) == pytest.approx(2 / 3)
    # weights_a [2, 1, 1]: F_a = 1/2, 3/4, 1 -> at 2: 3/4 - 0
    assert weighted_ks(a, b, weights_a=[2, 1, 1]) == pytest.approx(0.75)
    # integral: 1/3 * 1 + 2/3 * 0.5 + 1/3 * 0.5 + 2/3 * 1 + 1/3 * 1 = 11/6
    assert weighted_wasserstein(a, b) == pytest.approx(11 / 6)


def test_weighted_mean_hand():
    assert weighted_mean([1.0, 2.0, 4.0], [1.0, 1.0, 2.0]) == pytest.approx(11 / 4)
    assert weighted_mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)
    assert math.isnan(weighted_mean([]))
    assert math.isnan(weighted_mean([1.0, 2.0], [1.0, -1.0]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_ks_unweighted_against_scipy(seed, ties):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=300 + 50 * seed)
    b = rng.normal(0.2, 1.1, size=450)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    assert weighted_ks(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("negative", [False, True])
def test_ks_weighted_against_brute_force(seed, negative):
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(size=200), 1)
    b = np.round(rng.normal(0.3, 1.0, size=150), 1)
    low = -0.3 if negative else 0.1
    wa, wb = rng.uniform(low, 2.0, a.size), rng.uniform(low, 2.0, b.size)
    grid = np.concatenate([a, b])
    expected = np.max(np.abs(_brute_ecdf(a, wa, grid) - _brute_ecdf(b, wb, grid)))
    assert weighted_ks(a, b, wa, wb) == pytest.approx(expected, abs=1e-12)
    # one side weighted only
    expected = np.max(np.abs(_brute_ecdf(a, wa, grid) - _brute_ecdf(b, None, grid)))
    assert weighted_ks(a, b, weights_a=wa) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_wasserstein_against_scipy(seed, ties, weighted):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=250)
    b = rng.exponential(size=400)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    wa = rng.uniform(0.0, 2.0, a.size) if weighted else None
    wb = rng.uniform(0.0, 2.0, b.size) if weighted else None
    expected = stats.wasserstein_distance(a, b, wa, wb)
    assert weighted_wasserstein(a, b, wa, wb) == pytest.approx(expected, rel=1e-10)


def test_wasserstein_rejects_negative_weights():
    with pytest.raises(ValueError, match="negative"):
        weighted_wasserstein([1.0, 2.0], [1.5], weights_a=[1.0, -0.5])


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_mean_against_numpy(seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=1000), rng.uniform(-0.2, 2.0, 1000)
    assert weighted_mean(x, w) == pytest.approx(np.average(x, weights=w))


# ---------------------------------------------------------------------------------------------
# output shift


def _event_sample(seed: int, n: int = 1500):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)  # 0 background, 1 signal, 2 neither
    label[:2] = (0, 1)
    nom = np.round(rng.normal(size=n) + 0.7 * (label == 1), 2)
    pert = np.round(nom + rng.normal(0.05, 0.2, n), 2)
    w = rng.uniform(0.2, 2.0, n)
    return nom, pert, label == 1, label == 0, w


@pytest.mark.parametrize("seed", SEEDS)
def test_output_shift_against_references(seed):
    nom, pert, sig, bkg, w = _event_sample(seed)
    cut = 0.3
    out = output_shift(nom, pert, sig, bkg, w, cut)
    lab = sig | bkg
    auc_nom = roc_auc_score(sig[lab], nom[lab], sample_weight=w[lab])
    auc_pert = roc_auc_score(sig[lab], pert[lab], sample_weight=w[lab])
    assert out.auc_nominal == pytest.approx(auc_nom, abs=1e-12)
    assert out.auc_perturbed == pytest.approx(auc_pert, abs=1e-12)
    assert out.auc_drop == pytest.approx(auc_nom - auc_pert, abs=1e-12)
    grid = np.concatenate([nom, pert])
    ks = np.max(np.abs(_brute_ecdf(nom, w, grid) - _brute_ecdf(pert, w, grid)))
    assert out.output_ks == pytest.approx(ks, abs=1e-12)
    assert out.output_wasserstein == pytest.approx(
        stats.wasserstein_distance(nom, pert, w, w), rel=1e-10
    )
    assert out.mean_shift == pytest.approx(
        np.average(pert, weights=w) - np.average(nom, weights=w), abs=1e-12
    )
    assert out.cut == cut
    for disc, eff, mistag, rej in (
        (nom, out.efficiency_nominal, out.mistag_nominal, out.rejection_nominal),
        (pert, out.efficiency_perturbed, out.mistag_perturbed, out.rejection_perturbed),
    ):
        exp_eff = w[sig & (disc > cut)].sum() / w[sig].sum()
        exp_mistag = w[bkg & (disc > cut)].sum() / w[bkg].sum()
        assert eff == pytest.approx(exp_eff)
        assert mistag == pytest.approx(exp_mistag)
        assert rej == pytest.approx(1 / exp_mistag)


def test_output_shift_hand():
    # 4 events, unweighted: signal [0.9, 0.6], background [0.2, 0.6]; perturbed moves 0.9 -> 0.1
    nom = np.array([0.9, 0.6, 0.2, 0.6])
    pert = np.array([0.1, 0.6, 0.2, 0.6])
    sig = np.array([True, True, False, False])
    out = output_shift(nom, pert, sig, ~sig, cut=0.5)
    # nominal pairs: 0.9>0.2, 0.9>0.6, 0.6>0.2, 0.6=0.6 -> 3.5/4; perturbed: 0.1<0.2, 0.1<0.6,
    # 0.6>0.2, 0.6=0.6 -> 1.5/4
    assert out.auc_nominal == pytest.approx(0.875)
    assert out.auc_perturbed == pytest.approx(0.375)
    assert out.auc_drop == pytest.approx(0.5)
    # ECDFs: nominal jumps at 0.2, 0.6 (x2), 0.9; perturbed at 0.1, 0.2, 0.6 (x2): max diff 1/4
    assert out.output_ks == pytest.approx(0.25)
    assert out.output_wasserstein == pytest.approx(0.8 / 4)  # one event moved by 0.8
    assert out.mean_shift == pytest.approx(-0.2)
    assert out.efficiency_nominal == pytest.approx(1.0)
    assert out.efficiency_perturbed == pytest.approx(0.5)
    assert out.mistag_nominal == pytest.approx(0.5)
    assert out.rejection_nominal == pytest.approx(2.0)


def test_output_shift_without_cut_and_single_class():
    nom = np.array([0.1, 0.4, 0.8])
    pert = np.array([0.2, 0.4, 0.7])
    sig = np.array([True, True, True])
    out = output_shift(nom, pert, sig, ~sig)
    assert isinstance(out, OutputShift)
    assert math.isnan(out.auc_nominal) and math.isnan(out.auc_perturbed)
    assert math.isnan(out.auc_drop)
    assert out.output_ks == pytest.approx(1 / 3)
    assert out.cut is None
    d = out.to_dict()
    assert set(d) == {
        "auc_nominal",
        "auc_perturbed",
        "auc_drop",
        "output_ks",
        "output_wasserstein",
        "mean_shift",
        "cut",
        "efficiency_nominal",
        "efficiency_perturbed",
        "mistag_nominal",
        "mistag_perturbed",
        "rejection_nominal",
        "rejection_perturbed",
    }
    assert d["efficiency_nominal"] is None and d["rejection_perturbed"] is None
    assert d["mean_shift"] == pytest.approx(0.0)
    assert all(v is None or isinstance(v, float) for v in d.values())


def test_output_shift_no_labels_and_zero_mistag():
    nom = np.array([0.1, 0.4, 0.8, 0.3])
    none = np.zeros(4, dtype=bool)
    out = output_shift(nom, nom, none, none, cut=0.5)
    assert math.isnan(out.auc_nominal)
    assert math.isnan(out.efficiency_nominal) and math.isnan(out.rejection_nominal)
    assert out.output_ks == 0.0 and out.output_wasserstein == 0.0
    bkg = np.array([True, True, False, True])  # background all below the cut
    out = output_shift(nom, nom, ~bkg, bkg, cut=0.5)
    assert out.mistag_nominal == 0.0 and out.rejection_nominal == math.inf
    assert out.auc_nominal == pytest.approx(1.0)


def test_output_shift_negative_weights():
    nom, pert, sig, bkg, w = _event_sample(7, 400)
    w = w - 0.3  # some negative
    out = output_shift(nom, pert, sig, bkg, w)
    assert math.isnan(out.output_wasserstein)
    grid = np.concatenate([nom, pert])
    ks = np.max(np.abs(_brute_ecdf(nom, w, grid) - _brute_ecdf(pert, w, grid)))
    assert out.output_ks == pytest.approx(ks, abs=1e-12)
    lab = sig | bkg
    expected = _pairwise_auc(nom[lab], sig[lab], w[lab])
    assert out.auc_nominal == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# input checks and import hygiene


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shapes"):
        fooling_rate([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="weights"):
        fooling_rate([0, 1], [0, 1], weights=[1.0])
    with pytest.raises(ValueError, match="NaN"):
        weighted_auc([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="overlap"):
        output_shift([0.1, 0.2], [0.1, 0.2], [True, True], [True, False])
    with pytest.raises(ValueError, match="disc_perturbed"):
        output_shift([0.1, 0.2], [0.1], [True, False], [False, True])
    with pytest.raises(ValueError, match="1-D"):
        weighted_mean(np.zeros((2, 2)))


def test_import_does_not_load_torch():
    code = "import sys, pytest_hepguard.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
