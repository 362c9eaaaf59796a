"""Fooling rates, output shifts, ROC/AUC and working points (DESIGN.md "Terms").

Every function takes 1-D arrays of length ``n_events`` (one entry per event) and optional
per-event ``weights`` (float ``[n_events]``; ``None`` means all ones). Negative Monte Carlo
weights are accepted wherever the quantity stays meaningful as a signed sum; the exceptions are
documented per function. Scores (discriminant values) are dimensionless; rates, efficiencies,
AUCs and KS statistics are fractions in 0..1; a Wasserstein distance and a mean shift are in the
units of the discriminant.

All functions are vectorised: one ``O(n log n)`` sort per call (``output_shift`` sorts the pooled
nominal and perturbed discriminant once for KS, Wasserstein and both AUCs), no Python loop over
events. ROC, AUC, KS, Wasserstein and working points share one helper, :func:`_step_cumsums`,
which sorts the values and returns the cumulative weights of two groups of events at the end of
each run of equal values, so ties are treated the same way everywhere (one step per distinct
value).

Only numpy is imported: this module must stay importable without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Rate:
    """A weighted fraction of events with its binomial uncertainty.

    ``value`` is ``sum(w[selected]) / sum(w)`` over the ``n`` events of the denominator;
    ``error`` is ``sqrt(value * (1 - value) / n_eff)`` with the Kish effective count
    ``n_eff = (sum w)^2 / sum w^2`` (``n_eff = n`` without weights). With no events, or a
    denominator whose weights sum to zero, ``value`` and ``error`` are nan.
    """

    value: float
    error: float
    n: int


@dataclass(frozen=True)
class OutputShift:
    """How the discriminant's distribution moved between nominal and perturbed input.

    AUCs are computed on the signal and background events only (nan when either class is
    missing); ``output_ks``, ``output_wasserstein`` and ``mean_shift`` (perturbed minus nominal,
    in discriminant units) use all events. The working-point fields are ``None`` without a cut:
    ``efficiency_*`` is the signal efficiency and ``mistag_*`` the background efficiency of
    ``score > cut``; ``rejection_* = 1 / mistag_*`` (inf when the mistag rate is 0).
    """

    auc_nominal: float
    auc_perturbed: float
    auc_drop: float
    output_ks: float
    output_wasserstein: float
    mean_shift: float
    cut: float | None
    efficiency_nominal: float | None
    efficiency_perturbed: float | None
    mistag_nominal: float | None
    mistag_perturbed: float | None
    rejection_nominal: float | None
    rejection_perturbed: float | None

    def to_dict(self) -> dict[str, float | None]:
        """The fields as plain Python floats (or ``None``), keyed by field name."""
        return {k: None if v is None else float(v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Input checks


def _values(x: ArrayLike, name: str, n: int | None = None) -> FloatArray:
    """``x`` as a float64 1-D array (of length ``n`` if given); NaN is refused."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [n_events], got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _weights(weights: ArrayLike | None, n: int, name: str = "weights") -> FloatArray:
    """Per-event weights [n] as float64 (ones for ``None``); they must be finite."""
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or inf")
    return w


def _flags(x: ArrayLike, name: str, n: int) -> NDArray[np.bool_]:
    """A boolean 1-D array [n] (0/1 values are read as False/True)."""
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr.astype(bool, copy=False)


def _ratio(num: float, den: float) -> float:
    """``num / den``, nan when the denominator is zero."""
    return num / den if den != 0 else math.nan


# ---------------------------------------------------------------------------------------------
# The shared sort helper


def _step_cumsums(
    values: FloatArray,
    w_first: FloatArray,
    w_second: FloatArray,
    order: NDArray[np.intp] | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative weights of two event groups at each distinct value, in ascending order.

    ``values``, ``w_first`` and ``w_second`` are [n]; an event outside a group has weight 0 in
    that group's column. ``order`` [n] is ``argsort(values)`` when the caller already has it.
    The running sums of both weight columns are read at the LAST element of each run of equal
    values, so tied values form one step. Returns ``(x [m], cum_first [m], cum_second [m])``:
    the m distinct values ascending and the weight of each group with ``value <= x[k]``.
    """
    if values.shape[0] == 0:
        empty = np.empty(0, dtype=np.float64)
        return empty, empty, empty
    if order is None:
        # not stable: a run's sum does not depend on the order inside it (up to rounding)
        order = np.argsort(values)
    v = values[order]
    ends = np.append(np.flatnonzero(v[1:] != v[:-1]), v.shape[0] - 1)
    return v[ends], np.cumsum(w_first[order])[ends], np.cumsum(w_second[order])[ends]


def _ecdf_pair(
    a: FloatArray,
    b: FloatArray,
    w_a: FloatArray,
    w_b: FloatArray,
    order: NDArray[np.intp] | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weighted ECDFs of two samples on their pooled distinct values.

    ``a`` [n_a], ``b`` [n_b] with weights of the same shapes; ``order`` [n_a + n_b] is
    ``argsort(concatenate([a, b]))`` when the caller already has it. Returns ``(x [m], F_a(x)
    [m], F_b(x) [m])`` with ``F(x) = sum w[value <= x] / sum w`` (right-continuous), ``x``
    ascending. A sample whose weights sum to zero gives a nan ECDF.
    """
    x, cum_a, cum_b = _step_cumsums(
        np.concatenate([a, b]),
        np.concatenate([w_a, np.zeros_like(w_b)]),
        np.concatenate([np.zeros_like(w_a), w_b]),
        order,
    )
    total_a, total_b = w_a.sum(), w_b.sum()
    f_a = cum_a / total_a if total_a != 0 else np.full_like(cum_a, np.nan)
    f_b = cum_b / total_b if total_b != 0 else np.full_like(cum_b, np.nan)
    return x, f_a, f_b


def _auc_from_cumsums(cum_sig: FloatArray, cum_bkg: FloatArray) -> float:
    """AUC from the ascending cumulative signal and background weights [m] of :func:`_step_cumsums`.

    ``sum_k s_k (B_{k-1} + b_k / 2) / (S B)``: the weight of (signal, background) pairs in which
    the signal scores higher, ties counting one half, which is the trapezoid area under the ROC.
    nan when the signal or background weight is <= 0 (as sklearn, whose ROC is then nan).
    """
    if cum_sig.shape[0] == 0 or cum_sig[-1] <= 0 or cum_bkg[-1] <= 0:
        return math.nan
    sig_step = np.diff(cum_sig, prepend=0.0)
    bkg_mid = cum_bkg - 0.5 * np.diff(cum_bkg, prepend=0.0)
    return float(np.dot(sig_step, bkg_mid) / (cum_sig[-1] * cum_bkg[-1]))


def _class_cumsums(
    scores: ArrayLike, is_signal: ArrayLike, weights: ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Checked inputs of ROC/AUC through :func:`_step_cumsums` (signal, background columns)."""
    s = _values(scores, "scores")
    n = s.shape[0]
    sig = _flags(is_signal, "is_signal", n)
    w = _weights(weights, n)
    return _step_cumsums(s, np.where(sig, w, 0.0), np.where(sig, 0.0, w))


def _ks_from_ecdfs(f_a: FloatArray, f_b: FloatArray) -> float:
    """``max |F_a - F_b|`` over the pooled points (nan for an empty or nan ECDF)."""
    if f_a.shape[0] == 0:
        return math.nan
    return float(np.max(np.abs(f_a - f_b)))


def _wasserstein_from_ecdfs(x: FloatArray, f_a: FloatArray, f_b: FloatArray) -> float:
    """``integral |F_a - F_b| dx``: the ECDFs are constant between consecutive pooled points."""
    if x.shape[0] == 0:
        return math.nan
    return float(np.sum(np.abs(f_a[:-1] - f_b[:-1]) * np.diff(x)))


# ---------------------------------------------------------------------------------------------
# Public metrics


def fooling_rate(
    decision_nominal: ArrayLike,
    decision_perturbed: ArrayLike,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> Rate:
    """Weighted fraction of events whose decision changed between nominal and perturbed input.

    ``decision_nominal`` and ``decision_perturbed`` are [n_events] decisions of any comparable
    dtype (tag 0/1, or the argmax class); ``weights`` [n_events]; ``mask`` (bool [n_events])
    restricts the denominator, e.g. to the events classified correctly on nominal input. ``n`` of
    the result is the unweighted number of events in the denominator. With negative weights the
    rate is a signed sum; its error uses ``max(r (1 - r), 0)``.
    """
    nominal = np.asarray(decision_nominal)
    perturbed = np.asarray(decision_perturbed)
    if nominal.ndim != 1 or nominal.shape != perturbed.shape:
        raise ValueError(
            "decision_nominal and decision_perturbed must be 1-D arrays of one length, got "
            f"shapes {nominal.shape} and {perturbed.shape}"
        )
    n = nominal.shape[0]
    w = _weights(weights, n)
    changed = nominal != perturbed
    if mask is not None:
        keep = _flags(mask, "mask", n)
        w, changed = w[keep], changed[keep]
    return weighted_rate(float(w[changed].sum()), float(w.sum()), float(np.dot(w, w)), len(w))


def weighted_rate(selected: float, total: float, total_w2: float, n: int) -> Rate:
    """The :class:`Rate` ``selected / total`` of ``n`` events whose weights sum to ``total``
    (their squares to ``total_w2``); nan for no events or a zero total."""
    if n == 0 or total == 0:
        return Rate(math.nan, math.nan, n)
    value = selected / total
    n_eff = total * total / total_w2
    return Rate(value, math.sqrt(max(value * (1.0 - value), 0.0) / n_eff), n)


def rejection(mistag: float) -> float:
    """``1 / mistag`` (inf for a mistag rate of 0, nan for nan)."""
    return math.inf if mistag == 0 else (math.nan if math.isnan(mistag) else 1.0 / mistag)


def weighted_roc(
    scores: ArrayLike, is_signal: ArrayLike, weights: ArrayLike | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weighted ROC curve: ``(fpr, tpr, thresholds)``, each [m + 1] for m distinct scores.

    ``scores`` [n_events] (higher = more signal-like), ``is_signal`` (bool [n_events]: True for
    signal, False for background), ``weights`` [n_events]. Point k selects ``score >=
    thresholds[k]``; ``fpr`` is the background efficiency and ``tpr`` the signal efficiency.
    Semantics of ``sklearn.metrics.roc_curve(..., sample_weight=w, drop_intermediate=False)``:
    thresholds are the distinct scores in decreasing order (tied scores form one point), preceded
    by ``inf`` for the point (0, 0). A class whose weights sum to <= 0 gives a nan rate; with
    negative weights the rates need not be monotonic.
    """
    x, cum_sig, cum_bkg = _class_cumsums(scores, is_signal, weights)
    # weight with score >= x[k] is the total minus the weight below x[k]; read top down
    total_sig = cum_sig[-1] if cum_sig.size else 0.0
    total_bkg = cum_bkg[-1] if cum_bkg.size else 0.0
    tps = np.concatenate([[0.0], (total_sig - np.concatenate([[0.0], cum_sig])[:-1])[::-1]])
    fps = np.concatenate([[0.0], (total_bkg - np.concatenate([[0.0], cum_bkg])[:-1])[::-1]])
    tpr = tps / total_sig if total_sig > 0 else np.full_like(tps, np.nan)
    fpr = fps / total_bkg if total_bkg > 0 else np.full_like(fps, np.nan)
    return fpr, tpr, np.concatenate([[np.inf], x[::-1]])


def weighted_auc(
    scores: ArrayLike, is_signal: ArrayLike, weights: ArrayLike | None = None
) -> float:
    """Area under :func:`weighted_roc` by the trapezoid rule (tied pairs count one half).

    Shapes as in :func:`weighted_roc`. Equals ``sklearn.metrics.roc_auc_score(is_signal, scores,
    sample_weight=weights)``; nan (not an exception) when the signal or background weight is
    <= 0. With negative weights it is the signed pair sum ``sum w_i w_j [s_i > s_j] / (S B)``
    (sklearn refuses such weights once the ROC stops being monotonic).
    """
    _, cum_sig, cum_bkg = _class_cumsums(scores, is_signal, weights)
    return _auc_from_cumsums(cum_sig, cum_bkg)


def efficiency(scores: ArrayLike, cut: float, weights: ArrayLike | None = None) -> float:
    """Weighted fraction of events with ``score > cut``.

    ``scores`` and ``weights`` are [n_events]; nan for no events or weights summing to zero.
    """
    s = _values(scores, "scores")
    w = _weights(weights, s.shape[0])
    return _ratio(float(w[s > cut].sum()), float(w.sum()))


def cut_for_efficiency(scores: ArrayLike, weights: ArrayLike | None, efficiency: float) -> float:
    """The cut ``c`` whose weighted efficiency of ``score > c`` is closest to ``efficiency``.

    ``scores`` and ``weights`` are [n_events] (``weights=None``: all ones); ``efficiency`` in
    0..1. A weighted upper quantile: the achievable efficiencies are those of keeping the events
    with the k highest distinct scores (tied events are kept or dropped together, since the
    decision is ``score > cut``). Tie rule: the returned cut is the highest score NOT kept, so
    events exactly at the cut are rejected; keeping every event returns the float just below the
    smallest score, keeping none returns the largest score. Between two equally close
    efficiencies the lower one (the tighter cut) wins. Raises ``ValueError`` for no events,
    weights summing to <= 0, or an efficiency outside 0..1.
    """
    if not 0.0 <= efficiency <= 1.0:
        raise ValueError(f"efficiency must lie in 0..1, got {efficiency}")
    s = _values(scores, "scores")
    w = _weights(weights, s.shape[0])
    if s.shape[0] == 0 or w.sum() <= 0:
        raise ValueError("cut_for_efficiency needs events with a positive total weight")
    x, below, _ = _step_cumsums(s, w, np.zeros_like(w))
    # cut x[k] keeps the weight above x[k]; a cut just below x[0] keeps every event
    cuts = np.concatenate([[np.nextafter(x[0], -np.inf)], x])
    achieved = np.concatenate([[1.0], (below[-1] - below) / below[-1]])
    distance = np.abs(achieved - efficiency)
    # equally close candidates: the last one, i.e. the tighter cut
    k = distance.shape[0] - 1 - int(np.argmin(distance[::-1]))
    return float(cuts[k])


def weighted_ks(
    a: ArrayLike,
    b: ArrayLike,
    weights_a: ArrayLike | None = None,
    weights_b: ArrayLike | None = None,
) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup_x |F_a(x) - F_b(x)|`` of weighted ECDFs.

    ``a`` [n_a] with ``weights_a`` [n_a], ``b`` [n_b] with ``weights_b`` [n_b]; ``F(x) = sum
    w[value <= x] / sum w``. Without weights this equals ``scipy.stats.ks_2samp(a, b).statistic``.
    Negative weights are allowed: ``F`` is then the normalised CDF of a signed measure, still a
    right-continuous step function, and the supremum of the difference is still attained at a
    sample point (it may exceed 1, and no p-value is defined). nan for an empty sample or weights
    summing to zero.
    """
    xa, xb = _values(a, "a"), _values(b, "b")
    _, f_a, f_b = _ecdf_pair(
        xa,
        xb,
        _weights(weights_a, xa.shape[0], "weights_a"),
        _weights(weights_b, xb.shape[0], "weights_b"),
    )
    return _ks_from_ecdfs(f_a, f_b)


def weighted_wasserstein(
    a: ArrayLike,
    b: ArrayLike,
    weights_a: ArrayLike | None = None,
    weights_b: ArrayLike | None = None,
) -> float:
    """1-Wasserstein (earth mover's) distance ``integral |F_a(x) - F_b(x)| dx``, in units of x.

    Shapes as in :func:`weighted_ks`; equals ``scipy.stats.wasserstein_distance(a, b, weights_a,
    weights_b)``. The distance is defined between probability distributions only, so any negative
    weight, or a non-finite value, raises ``ValueError``. nan for an empty sample or weights
    summing to zero.
    """
    xa, xb = _values(a, "a"), _values(b, "b")
    w_a = _weights(weights_a, xa.shape[0], "weights_a")
    w_b = _weights(weights_b, xb.shape[0], "weights_b")
    if (w_a < 0).any() or (w_b < 0).any():
        raise ValueError("weighted_wasserstein: negative weights do not define a distribution")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("weighted_wasserstein: the samples contain inf")
    return _wasserstein_from_ecdfs(*_ecdf_pair(xa, xb, w_a, w_b))


def weighted_mean(x: ArrayLike, weights: ArrayLike | None = None) -> float:
    """``sum(w x) / sum(w)`` of ``x`` [n_events]; nan for no events or weights summing to zero."""
    v = _values(x, "x")
    w = _weights(weights, v.shape[0])
    return _ratio(float(np.dot(w, v)), float(w.sum()))


def output_shift(
    disc_nominal: ArrayLike,
    disc_perturbed: ArrayLike,
    is_signal: ArrayLike,
    is_background: ArrayLike,
    weights: ArrayLike | None = None,
    cut: float | None = None,
) -> OutputShift:
    """The change of the discriminant between nominal and perturbed input (DESIGN.md "Terms").

    ``disc_nominal``, ``disc_perturbed``: discriminant [n_events] of the same events before and
    after the perturbation; ``is_signal``, ``is_background``: disjoint bool masks [n_events]
    (events in neither are ignored by AUC, efficiency and mistag rate); ``weights`` [n_events];
    ``cut``: working point, the decision being ``disc > cut``.

    The AUC fields are nan when there is no signal or no background. KS, Wasserstein distance and
    mean shift compare the weighted distributions of ALL events. With any negative weight the
    Wasserstein distance is nan (see :func:`weighted_wasserstein`); KS is then the signed-measure
    statistic of :func:`weighted_ks`.
    """
    nom = _values(disc_nominal, "disc_nominal")
    n = nom.shape[0]
    pert = _values(disc_perturbed, "disc_perturbed", n)
    sig = _flags(is_signal, "is_signal", n)
    bkg = _flags(is_background, "is_background", n)
    if (sig & bkg).any():
        raise ValueError("is_signal and is_background overlap")
    w = _weights(weights, n)

    # One sort of the pooled sample serves the ECDFs and, split back into its two halves (a
    # filtered sorted order stays sorted), both AUCs. Events that are neither signal nor
    # background weigh 0 in both AUC columns, so they add no area.
    order = np.argsort(np.concatenate([nom, pert]))
    x, f_nom, f_pert = _ecdf_pair(nom, pert, w, w, order)
    w_sig, w_bkg = np.where(sig, w, 0.0), np.where(bkg, w, 0.0)
    auc_nom, auc_pert = (
        _auc_from_cumsums(*_step_cumsums(disc, w_sig, w_bkg, half)[1:])
        for disc, half in ((nom, order[order < n]), (pert, order[order >= n] - n))
    )
    wasserstein_ok = not (w < 0).any() and np.isfinite(x).all()
    wasserstein = _wasserstein_from_ecdfs(x, f_nom, f_pert) if wasserstein_ok else math.nan

    wp: dict[str, float | None] = dict.fromkeys(
        (
            "efficiency_nominal",
            "efficiency_perturbed",
            "mistag_nominal",
            "mistag_perturbed",
            "rejection_nominal",
            "rejection_perturbed",
        )
    )
    if cut is not None:
        for tag, disc in (("nominal", nom), ("perturbed", pert)):
            mistag = efficiency(disc[bkg], cut, w[bkg])
            wp[f"efficiency_{tag}"] = efficiency(disc[sig], cut, w[sig])
            wp[f"mistag_{tag}"] = mistag
            wp[f"rejection_{tag}"] = rejection(mistag)

    return OutputShift(
        auc_nominal=auc_nom,
        auc_perturbed=auc_pert,
        auc_drop=auc_nom - auc_pert,
        output_ks=_ks_from_ecdfs(f_nom, f_pert),
        output_wasserstein=wasserstein,
        mean_shift=weighted_mean(pert, w) - weighted_mean(nom, w),
        cut=None if cut is None else float(cut),
        **wp,
    )


def roc_points(
    scores: ArrayLike, is_signal: ArrayLike, weights: ArrayLike | None = None, n_points: int = 101
) -> dict[str, list[float]] | None:
    """The weighted ROC sampled at ``n_points`` signal efficiencies ``linspace(0, 1)``.

    Returns ``{"signal_efficiency": [...], "background_efficiency": [...]}`` (fractions, for
    plots and reports: a fixed size whatever the number of events), or ``None`` when the signal
    or background weight is <= 0.
    """
    fpr, tpr, _ = weighted_roc(scores, is_signal, weights)
    if not (np.isfinite(fpr).all() and np.isfinite(tpr).all()):
        return None
    return roc_on_grid(fpr, tpr, n_points)


def roc_on_grid(fpr: FloatArray, tpr: FloatArray, n_points: int = 101) -> dict[str, list[float]]:
    """A ROC (background and signal efficiencies [k], tpr non-decreasing along the curve's
    points) sampled at ``n_points`` signal efficiencies ``linspace(0, 1)``."""
    grid = np.linspace(0.0, 1.0, n_points)
    fpr_at = np.interp(grid, np.maximum.accumulate(tpr), fpr)
    return {"signal_efficiency": grid.tolist(), "background_efficiency": fpr_at.tolist()}


def discriminant_histograms(
    disc_nominal: ArrayLike,
    disc_perturbed: ArrayLike,
    groups: dict[str, NDArray[np.bool_]],
    weights: ArrayLike | None = None,
    bins: int = 50,
) -> dict[str, object]:
    """Weighted histograms of the discriminant before and after, per group of events.

    ``groups`` maps a name (a class) to a bool mask [n_events]. The binning is ``bins`` equal
    bins over [0, 1] when both samples lie inside it (probabilities and ratios), else over their
    joint range. Returns ``{"edges": [bins + 1], "groups": {name: {"nominal": [bins],
    "perturbed": [bins]}}}`` with sums of weights per bin.
    """
    nom = _values(disc_nominal, "disc_nominal")
    pert = _values(disc_perturbed, "disc_perturbed", nom.shape[0])
    w = _weights(weights, nom.shape[0])
    lo = min(nom.min(initial=0.0), pert.min(initial=0.0))
    hi = max(nom.max(initial=1.0), pert.max(initial=1.0))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    out = {
        name: {
            tag: np.histogram(d[mask], edges, weights=w[mask])[0].tolist()
            for tag, d in (("nominal", nom), ("perturbed", pert))
        }
        for name, mask in groups.items()
        if mask.any()
    }
    return {"edges": edges.tolist(), "groups": out}


def weighted_quantile(x: ArrayLike, q: float, weights: ArrayLike | None = None) -> float:
    """The ``q`` quantile (0..1) of ``x`` [n] with weights: the smallest value whose weighted
    ECDF reaches ``q`` (inf values allowed, NaN for an empty or weightless sample)."""
    v = np.asarray(x, dtype=np.float64)
    w = _weights(weights, v.shape[0])
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    if v.size == 0 or cum[-1] <= 0:
        return math.nan
    return float(v[order][min(np.searchsorted(cum, q * cum[-1], side="left"), v.size - 1)])


def radius_summary(
    radius: ArrayLike,
    groups: dict[str, NDArray[np.bool_]],
    weights: ArrayLike | None = None,
    quantiles: tuple[float, ...] = (0.16, 0.5, 0.84),
    bins: int = 20,
) -> dict[str, object]:
    """The distribution of per-event robustness radii [n] (sigmas; inf: not flipped within
    the largest budget searched), per group of events (``{name: bool mask [n]}``): weighted
    quantiles (``q16``, ``median``, ``q84``; inf when fewer events than that flip), the median
    over the events that flip (``median_flipped``), the share not flipped, and a histogram of
    the finite radii over [0, their max]."""
    r = np.asarray(radius, dtype=np.float64)
    w = _weights(weights, r.shape[0])
    finite = np.isfinite(r)
    top = float(r[finite].max()) if finite.any() else 1.0
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    names = {0.5: "median"}
    out: dict[str, object] = {"edges": edges.tolist(), "groups": {}}
    for name, mask in groups.items():
        if not mask.any():
            continue
        total = w[mask].sum()
        entry: dict[str, object] = {
            names.get(q, f"q{round(100 * q)}"): weighted_quantile(r[mask], q, w[mask])
            for q in quantiles
        }
        entry["median_flipped"] = weighted_quantile(r[mask & finite], 0.5, w[mask & finite])
        entry["not_flipped"] = _ratio(w[mask & ~finite].sum(), total)
        entry["histogram"] = np.histogram(r[mask & finite], edges, weights=w[mask & finite])[
            0
        ].tolist()
        out["groups"][name] = entry  # type: ignore[index]
    return out
