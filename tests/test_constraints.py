"""constraints.py against independent references: scipy.stats, scipy.spatial, loops, pandas.

Nothing here checks the module against itself: KS statistics and p-values come from
``scipy.stats.ks_2samp`` / ``scipy.stats.kstwo``, JS distances from ``np.histogram`` with the
formula written out and from ``scipy.spatial.distance.jensenshannon``, correlations from a
per-pair ``np.corrcoef`` loop (and ``pandas.DataFrame.corr`` where pandas is installed).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from pytest_hepguard.constraints import (
    Certificate,
    FeatureCheck,
    certify,
    fast_violations,
    js_distance,
    jsd_edges,
    ks_critical,
    ks_statistic,
    pairwise_correlation,
)

NAMES = ("jet_pt", "jet_eta", "jet_mass")


@dataclass(frozen=True)
class Limits:
    """A limits object with the attributes ``certify`` reads."""

    ks_max: float | None = None
    ks_pvalue_min: float | None = None
    jsd_max: float | None = None
    corr_max: float | None = None
    corr_frob_max: float | None = None
    jsd_bins: int = 50


ALL_LIMITS = Limits(
    ks_max=0.02, ks_pvalue_min=0.05, jsd_max=0.05, corr_max=0.02, corr_frob_max=0.02
)


def _correlated(seed: int, n: int) -> np.ndarray:
    """[n, 3] Gaussian sample with correlations 0.8 (0, 1), 0.5 (1, 2), 0.4 (0, 2); the first
    column has an offset of 1e4 and spread 50, like a momentum in GeV."""
    cov = np.array([[1.0, 0.8, 0.4], [0.8, 1.0, 0.5], [0.4, 0.5, 1.0]])
    z = np.random.default_rng(seed).normal(size=(n, 3)) @ np.linalg.cholesky(cov).T
    return z * np.array([50.0, 1.0, 10.0]) + np.array([1e4, 0.0, 80.0])


def _valid_entries(a: np.ndarray, b: np.ndarray, valid: np.ndarray, cols: list[int]):
    """The valid entries of columns ``cols`` of a and b, pooled (row-major order)."""
    mask = valid[:, cols]
    return a[:, cols][mask], b[:, cols][mask]


def _js_by_hand(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """JS distance, base 2, of histograms on equal-width edges over [min a, max a]; b clipped."""
    lo, hi = float(a.min()), float(a.max())
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(a, edges)[0] / a.size
    q = np.histogram(np.clip(b, lo, hi), edges)[0] / b.size
    m = (p + q) / 2
    divergence = 0.0
    for pi, qi, mi in zip(p, q, m, strict=True):
        if pi > 0:
            divergence += 0.5 * pi * math.log2(pi / mi)
        if qi > 0:
            divergence += 0.5 * qi * math.log2(qi / mi)
    return math.sqrt(divergence)


def _scipy_jsd(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """scipy's jensenshannon on histograms built here (range of a, b clipped into it)."""
    lo, hi = float(a.min()), float(a.max())
    p = np.histogram(a, bins=bins, range=(lo, hi))[0]
    q = np.histogram(np.clip(b, lo, hi), bins=bins, range=(lo, hi))[0]
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def _corr_loop(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pairwise-complete Pearson correlation, one np.corrcoef per pair on the mask intersection;
    0 for fewer than 2 common events or a constant column there, 1 on the diagonal."""
    d = x.shape[1]
    out = np.eye(d)
    for i in range(d):
        for j in range(d):
            if i == j:
                continue
            common = valid[:, i] & valid[:, j]
            xi, xj = x[common, i], x[common, j]
            if common.sum() >= 2 and np.ptp(xi) > 0 and np.ptp(xj) > 0:
                out[i, j] = np.corrcoef(xi, xj)[0, 1]
    return out


def _kinds(messages: list[str]) -> list[str]:
    """Each message's kind and, for a marginal check, how many features fail ('KS p-value: 2
    features')."""
    return [
        " ".join(m.split()[:4]) if ":" in m.split()[1] else " ".join(m.split()[:2])
        for m in messages
    ]


# ---------------------------------------------------------------------------------------------
# KS


@pytest.mark.parametrize(
    "n, m", [(7, 3), (1000, 1000), (1234, 5678), (100_000, 100_000), (100_000, 31)]
)
@pytest.mark.parametrize("ties", [True, False])
def test_ks_statistic_matches_scipy(n: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(n + m)
    if ties:
        a, b = rng.integers(0, 20, n).astype(float), rng.integers(1, 21, m).astype(float)
    else:
        a, b = rng.normal(size=n), rng.normal(0.05, 1.1, size=m)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-15)


def test_ks_statistic_identical_and_disjoint() -> None:
    a = np.random.default_rng(0).integers(0, 5, 1000).astype(float)
    assert ks_statistic(a, np.random.default_rng(1).permutation(a)) == 0.0
    assert ks_statistic(a, a + 10.0) == 1.0
    with pytest.raises(ValueError, match="empty"):
        ks_statistic(a, np.array([]))


@pytest.mark.parametrize(
    "n, m", [(1000, 1000), (2000, 5000), (12_345, 67_890), (100_000, 100_000), (1_000_000, 300)]
)
def test_ks_critical_matches_scipy_asymptotic_distribution(n: int, m: int) -> None:
    # ks_2samp(method='asymp') evaluates the two-sided p-value as kstwo.sf(D, round(n m/(n+m)))
    d = ks_critical(n, m, 0.05)
    p = stats.kstwo.sf(d, round(n * m / (n + m)))
    assert p == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize("n", [2000, 20_000, 200_000])
def test_ks_critical_brackets_ks_2samp_asymptotic_pvalue(n: int) -> None:
    """Equal samples shifted by k steps have D = k/n: scipy's asymptotic p-value is >= 0.05 at
    the largest k/n below the critical value, < 0.05 above, and 0.05 at it (interpolated)."""
    crit = ks_critical(n, n, 0.05)
    k = math.floor(crit * n)
    a = np.arange(n, dtype=float)
    below = stats.ks_2samp(a, a + k, method="asymp")
    above = stats.ks_2samp(a, a + k + 1, method="asymp")
    assert below.statistic == pytest.approx(k / n) and above.statistic == pytest.approx((k + 1) / n)
    assert below.pvalue >= 0.05 > above.pvalue
    frac = crit * n - k  # log p is smooth in D: linear interpolation between the two steps
    log_p = (1 - frac) * math.log(below.pvalue) + frac * math.log(above.pvalue)
    assert math.exp(log_p) == pytest.approx(0.05, rel=1e-3)


def test_ks_critical_rejects_bad_pvalue() -> None:
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="pvalue"):
            ks_critical(100, 100, bad)


# ---------------------------------------------------------------------------------------------
# Jensen-Shannon


@pytest.mark.parametrize("bins", [1, 7, 50])
def test_js_distance_matches_hand_formula_and_scipy(bins: int) -> None:
    rng = np.random.default_rng(bins)
    a = rng.normal(size=5000)
    b = rng.normal(0.3, 1.4, size=3000)  # some values outside a's range: edge bins
    expected = _js_by_hand(a, b, bins)
    assert js_distance(a, b, bins) == pytest.approx(expected, abs=1e-12)
    assert js_distance(a, b, bins) == pytest.approx(_scipy_jsd(a, b, bins), abs=1e-7)


def test_js_distance_out_of_range_goes_to_edge_bins() -> None:
    a = np.random.default_rng(3).uniform(0.0, 1.0, 2000)
    b = np.concatenate([a[:1000] - 5.0, a[1000:] + 5.0])
    assert js_distance(a, b, 10) == pytest.approx(_js_by_hand(a, b, 10), abs=1e-12)


def test_js_distance_identical_is_zero_and_disjoint_is_one() -> None:
    a = np.random.default_rng(4).normal(size=1000)
    assert js_distance(a, a[::-1].copy(), 20) == 0.0
    nominal = np.repeat([0.0, 10.0], 500)  # 10 bins: only the first and last are filled
    assert js_distance(nominal, np.full(300, 5.0), 10) == pytest.approx(1.0, abs=1e-12)


def test_jsd_edges_equal_width_and_constant_feature() -> None:
    a = np.array([2.0, -1.0, 5.0, 0.5])
    np.testing.assert_allclose(jsd_edges(a, 6), [-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(jsd_edges(np.full(10, 3.0), 50), [2.5, 3.5])
    assert js_distance(np.full(10, 3.0), np.full(10, 3.2), 50) == 0.0
    with pytest.raises(ValueError, match="bins"):
        jsd_edges(a, 0)


# ---------------------------------------------------------------------------------------------
# Correlations


def _masked_sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[400, 6] correlated values with ~20 % invalid entries (-999), a column constant where
    valid, and a column with a single valid entry."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + rng.normal(0, 1e3, 6)
    valid = rng.random((400, 6)) > 0.2
    x[:, 4] = 7.25
    valid[:, 5] = False
    valid[17, 5] = True
    return np.where(valid, x, -999.0), valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_correlation_matches_per_pair_corrcoef(seed: int) -> None:
    x, valid = _masked_sample(seed)
    np.testing.assert_allclose(pairwise_correlation(x, valid), _corr_loop(x, valid), atol=1e-12)


def test_pairwise_correlation_large_offset_keeps_precision() -> None:
    x, valid = _masked_sample(5)
    shifted = x + np.where(valid, 1e8, 0.0)  # Pearson ignores offsets; the sums must too
    np.testing.assert_allclose(
        pairwise_correlation(shifted, valid), _corr_loop(x, valid), atol=1e-8
    )


def test_pairwise_correlation_matches_pandas() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed (not a dependency)")
    x, valid = _masked_sample(9)
    expected = pd.DataFrame(np.where(valid, x, np.nan)).corr().to_numpy()
    finite = np.isfinite(expected)
    finite[np.diag_indices(6)] = False  # pandas gives nan on a constant column's diagonal
    np.testing.assert_allclose(pairwise_correlation(x, valid)[finite], expected[finite], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# certify


def test_column_permutation_keeps_marginals_but_breaks_correlations() -> None:
    nominal = _correlated(0, 20_000)
    rng = np.random.default_rng(1)
    perturbed = np.column_stack([rng.permutation(col) for col in nominal.T])
    valid = np.ones_like(nominal, dtype=bool)
    limits = Limits(ks_max=0.0, ks_pvalue_min=0.05, jsd_max=0.0, corr_max=0.05)
    cert = certify(nominal, perturbed, valid, NAMES, limits)
    assert [(f.ks, f.ks_pvalue, f.jsd) for f in cert.features] == [(0.0, 1.0, 0.0)] * 3
    assert len(cert.violations) == 1 and cert.violations[0].startswith("max |Δρ|")
    assert cert.max_pair == ("jet_pt", "jet_eta")  # nominal rho 0.8, perturbed ~0
    assert "(jet_pt, jet_eta) exceeds corr_max 0.05" in cert.violations[0]
    assert cert.max_abs_delta_rho == pytest.approx(0.8, abs=0.03)
    c_nom, c_pert = np.corrcoef(nominal.T), np.corrcoef(perturbed.T)
    assert cert.max_abs_delta_rho == pytest.approx(np.abs(c_pert - c_nom).max(), abs=1e-10)
    assert cert.corr_frob_change == pytest.approx(
        np.linalg.norm(c_pert - c_nom) / np.linalg.norm(c_nom), abs=1e-10
    )
    assert not cert.passed


def test_shifted_feature_fails_ks_with_its_name_and_numbers_match_scipy() -> None:
    nominal = _correlated(2, 5000)
    perturbed = nominal.copy()
    perturbed[:, 2] += 0.5 * nominal[:, 2].std()
    valid = np.ones_like(nominal, dtype=bool)
    cert = certify(nominal, perturbed, valid, NAMES, ALL_LIMITS)
    for j, check in enumerate(cert.features):
        ref = stats.ks_2samp(nominal[:, j], perturbed[:, j])
        assert check.name == NAMES[j] and check.n == 5000
        assert check.ks == pytest.approx(ref.statistic, abs=1e-15)
        assert check.ks_pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        assert check.jsd == pytest.approx(_scipy_jsd(nominal[:, j], perturbed[:, j], 50), abs=1e-12)
    assert cert.violations[0].startswith(
        "KS statistic: 1 feature above ks_max 0.02 (worst jet_mass: "
    )
    assert cert.violations[1].startswith(
        "KS p-value: 1 feature below ks_pvalue_min 0.05 (worst jet_mass: "
    )
    assert cert.violations[2].startswith(
        "JS distance: 1 feature above jsd_max 0.05 (worst jet_mass: "
    )
    assert len(cert.violations) == 3  # a shift leaves the correlations exactly as they were
    assert cert.max_abs_delta_rho == pytest.approx(0.0, abs=1e-12)


def test_count_and_worst_feature_in_the_message() -> None:
    nominal = _correlated(3, 4000)
    perturbed = nominal + np.array([0.2, 0.5, 0.0]) * nominal.std(axis=0)
    valid = np.ones_like(nominal, dtype=bool)
    cert = certify(nominal, perturbed, valid, NAMES, Limits(ks_pvalue_min=0.05))
    worst = min(
        NAMES[:2],
        key=lambda k: (
            stats.ks_2samp(nominal[:, NAMES.index(k)], perturbed[:, NAMES.index(k)]).pvalue
        ),
    )
    assert worst == "jet_eta"
    assert cert.violations == [
        f"KS p-value: 2 features below ks_pvalue_min 0.05 (worst jet_eta: "
        f"{stats.ks_2samp(nominal[:, 1], perturbed[:, 1]).pvalue:.3g})"
    ]


def test_limits_none_skip_checks_but_numbers_are_reported() -> None:
    nominal = _correlated(4, 3000)
    perturbed = nominal * 1.3
    valid = np.ones_like(nominal, dtype=bool)
    cert = certify(nominal, perturbed, valid, NAMES, Limits())
    assert cert.passed and cert.violations == []
    assert all(f.ks > 0.02 and f.jsd > 0.0 for f in cert.features)


def test_identical_sample_passes_and_serialises() -> None:
    nominal = _correlated(5, 2000)
    valid = np.ones_like(nominal, dtype=bool)
    cert = certify(nominal, nominal.copy(), valid, NAMES, ALL_LIMITS)
    assert isinstance(cert, Certificate) and cert.passed and cert.violations == []
    data = json.loads(json.dumps(cert.to_dict(), allow_nan=False))
    assert data["passed"] is True and data["violations"] == []
    assert data["features"][0] == {
        "name": "jet_pt",
        "n": 2000,
        "ks": 0.0,
        "ks_pvalue": 1.0,
        "jsd": 0.0,
    }
    assert data["max_pair"] == ["jet_pt", "jet_eta"] and data["max_abs_delta_rho"] == 0.0
    assert isinstance(cert.features[0], FeatureCheck)


def test_groups_pool_constituent_columns_and_skip_invalid_entries() -> None:
    rng = np.random.default_rng(6)
    n = 3000
    names = ["jet_pt", "trk_pt[0]", "trk_pt[1]", "trk_pt[2]", "sv_mass"]
    nominal = np.column_stack(
        [rng.normal(100, 10, n), rng.exponential(5.0, (n, 3)), rng.normal(2, 0.5, n)]
    )
    valid = np.ones_like(nominal, dtype=bool)
    valid[:, 2:4] = rng.random((n, 2)) < np.array([0.7, 0.4])  # padded tracks
    valid[:, 4] = False
    valid[0, 4] = True  # one secondary vertex only: skipped
    nominal[~valid] = -999.0
    perturbed = np.where(valid, nominal * rng.normal(1.0, 0.05, nominal.shape), -999.0)
    cert = certify(nominal, perturbed, valid, names, ALL_LIMITS, groups=[[0], [1, 2, 3], [4]])
    assert [f.name for f in cert.features] == ["jet_pt", "trk_pt"]
    a, b = _valid_entries(nominal, perturbed, valid, [1, 2, 3])
    pooled = cert.features[1]
    assert pooled.n == a.size == valid[:, 1:4].sum()
    ref = stats.ks_2samp(a, b)
    assert pooled.ks == pytest.approx(ref.statistic, abs=1e-15)
    assert pooled.ks_pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    assert pooled.jsd == pytest.approx(_scipy_jsd(a, b, 50), abs=1e-12)
    # the correlation check stays on the unpooled columns: 5 names, pairs of columns
    c_nom = _corr_loop(nominal, valid)
    c_pert = _corr_loop(perturbed, valid)
    assert cert.max_abs_delta_rho == pytest.approx(np.abs(c_pert - c_nom).max(), abs=1e-12)
    assert cert.corr_frob_change == pytest.approx(
        np.linalg.norm(c_pert - c_nom) / np.linalg.norm(c_nom), abs=1e-12
    )


def test_certify_rejects_mismatched_shapes() -> None:
    x = np.zeros((10, 3))
    valid = np.ones((10, 3), dtype=bool)
    with pytest.raises(ValueError, match="same shape"):
        certify(x, np.zeros((10, 2)), valid, NAMES, ALL_LIMITS)
    with pytest.raises(ValueError, match="names"):
        certify(x, x, valid, NAMES[:2], ALL_LIMITS)


# ---------------------------------------------------------------------------------------------
# fast_violations


@pytest.mark.parametrize("shift", [0.0, 0.005, 0.01, 0.02, 0.1, 0.5])
@pytest.mark.parametrize("angle", [0.0, 0.002, 0.3])
def test_fast_violations_agree_with_certify(shift: float, angle: float) -> None:
    """More than 10000 entries, so certify's p-value is scipy's asymptotic one; each case is
    far from every limit (KS critical value 0.0136, shift D ~ 0.4 shift)."""
    nominal = _correlated(7, 20_000)
    z = (nominal - nominal.mean(axis=0)) / nominal.std(axis=0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = z.copy()
    moved[:, 1:] = z[:, 1:] @ rot.T  # mixes jet_eta and jet_mass: correlations move
    moved[:, 0] += shift
    perturbed = moved * nominal.std(axis=0) + nominal.mean(axis=0)
    valid = np.ones_like(nominal, dtype=bool)
    limits = Limits(
        ks_max=0.02, ks_pvalue_min=0.05, jsd_max=0.03, corr_max=0.02, corr_frob_max=0.02
    )
    cert = certify(nominal, perturbed, valid, NAMES, limits)
    fast = fast_violations(nominal, perturbed, valid, limits, names=NAMES)
    assert _kinds(fast) == _kinds(cert.violations)
    assert bool(fast) == (not cert.passed)


def test_fast_violations_with_groups_and_precomputed_correlation() -> None:
    rng = np.random.default_rng(8)
    nominal = rng.exponential(3.0, (15_000, 4))
    valid = rng.random((15_000, 4)) < 0.8
    perturbed = np.where(valid, nominal * 1.1, nominal)
    groups = [[0, 1, 2, 3]]
    names = [f"trk_d0[{i}]" for i in range(4)]
    cert = certify(nominal, perturbed, valid, names, ALL_LIMITS, groups=groups)
    fast = fast_violations(nominal, perturbed, valid, ALL_LIMITS, groups=groups, names=names)
    reused = fast_violations(
        nominal,
        perturbed,
        valid,
        ALL_LIMITS,
        groups=groups,
        corr_nominal=_corr_loop(nominal, valid),
        names=names,
    )
    assert _kinds(fast) == _kinds(cert.violations) == _kinds(reused)
    assert fast[0].startswith("KS statistic: 1 feature above ks_max 0.02 (worst trk_d0: ")
    unnamed = fast_violations(nominal, perturbed, valid, Limits(ks_max=0.02))
    ks = [
        stats.ks_2samp(*_valid_entries(nominal, perturbed, valid, [k])).statistic for k in range(4)
    ]
    worst = int(np.argmax(ks))
    assert unnamed == [
        f"KS statistic: 4 features above ks_max 0.02 (worst column {worst}: {max(ks):.3g})"
    ]


def test_fast_violations_without_limits_is_empty() -> None:
    nominal = _correlated(9, 1000)
    valid = np.ones_like(nominal, dtype=bool)
    assert fast_violations(nominal, nominal * 3.0, valid, Limits()) == []


def test_import_does_not_load_scipy() -> None:
    code = (
        "import sys, pytest_hepguard.constraints; "
        "assert 'scipy' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
