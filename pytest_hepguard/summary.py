"""Mergeable summaries of a check on a chunk of events, and the check's numbers from their merge.

A chunked audit (:mod:`pytest_hepguard.distributed`) never gathers per-event arrays: each chunk
returns a :class:`CheckSummary` of sums that add up over chunks —

- exact: event counts and weighted sums for the fooling rates (all events and correctly
  classified ones), the discriminant's weighted sums (mean shift), the signal and background
  weights above the working-point cut (efficiency, mistag rate), the displacement statistics;
- binned: weighted histograms of the discriminant per class on :data:`FINE_BINS` bins equal in
  ``logit(D)`` (fine where taggers saturate), from which AUC, ROC, output KS and Wasserstein
  distance come, each with a bound on its binning error stated in the result's
  ``details["binning"]``;
- for the hidden attack's certificate: per feature, counts on quantile edges of the nominal
  sample (a KS statistic with its bound, the Jensen-Shannon distance on the global equal-width
  bins) and the pairwise moment sums of the correlation matrix (:class:`CertificateParts`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from pytest_hepguard.constraints import (
    Certificate,
    ConstraintLimits,
    FeatureCheck,
    _corr_change,
    _ks_pvalue_asymptotic,
    _violations,
    correlation_from_sums,
    moment_sums,
)
from pytest_hepguard.metrics import roc_on_grid

#: Bins of the fine discriminant histograms, equal in logit(D) over [LOGIT_LO, LOGIT_HI];
#: D = 0 and D = 1 (and beyond) fall in the under- and overflow bins.
FINE_BINS = 1 << 17
LOGIT_LO, LOGIT_HI = -110.0, 30.0
_WIDTH = (LOGIT_HI - LOGIT_LO) / FINE_BINS

#: The report's discriminant histograms: equal bins over [0, 1].
REPORT_BINS = 50


def fine_bin(disc: np.ndarray) -> np.ndarray:
    """Bin index [n] in 0 .. FINE_BINS + 1 of discriminant values [n] (0: D <= e^-110 / (1 +
    e^-110), i.e. D = 0; FINE_BINS + 1: logit(D) >= 30, i.e. D = 1 in float32)."""
    d = np.clip(np.asarray(disc, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        t = np.log(d) - np.log1p(-d)
    t = np.clip(t, LOGIT_LO - _WIDTH, LOGIT_HI)
    return np.clip(np.floor((t - LOGIT_LO) / _WIDTH).astype(np.int64) + 1, 0, FINE_BINS + 1)


def fine_edges() -> np.ndarray:
    """The discriminant values [FINE_BINS + 3] bounding the fine bins (0 and 1 outermost)."""
    t = LOGIT_LO + _WIDTH * np.arange(FINE_BINS + 1)
    return np.concatenate([[0.0], 1.0 / (1.0 + np.exp(-t)), [1.0]])


def _hist(index: np.ndarray, weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    if mask is not None:
        index, weights = index[mask], weights[mask]
    return np.bincount(index, weights=weights, minlength=FINE_BINS + 2)


@dataclass
class Side:
    """Sums of one sample of discriminant values (nominal or perturbed) over a chunk."""

    fine_all: np.ndarray  # [FINE_BINS + 2] weighted, all events
    fine_sig: np.ndarray  # [FINE_BINS + 2] weighted, signal events
    fine_bkg: np.ndarray  # [FINE_BINS + 2] weighted, background events
    report: np.ndarray  # [n_classes, REPORT_BINS] weighted, per true class
    sum_wd: float  # sum of w * D
    sig_pass: float  # signal weight with D > cut
    bkg_pass: float  # background weight with D > cut

    @classmethod
    def of(
        cls,
        disc: np.ndarray,
        w: np.ndarray,
        sig: np.ndarray,
        bkg: np.ndarray,
        classes: np.ndarray,
        n_classes: int,
        cut: float | None,
    ) -> Side:
        """The sums of discriminant values ``disc`` [n] with weights ``w`` [n], signal and
        background masks [n] and class index [n] (-1: no labels) of each event."""
        index = fine_bin(disc)
        report = np.zeros((n_classes, REPORT_BINS))
        for c in range(n_classes):
            mask = classes == c
            report[c] = np.histogram(
                np.clip(disc[mask], 0.0, 1.0), REPORT_BINS, (0.0, 1.0), weights=w[mask]
            )[0]
        above = disc > cut if cut is not None else np.zeros(len(disc), dtype=bool)
        return cls(
            _hist(index, w),
            _hist(index, w, sig),
            _hist(index, w, bkg),
            report,
            float(np.dot(w, disc.astype(np.float64))),
            float(w[sig & above].sum()),
            float(w[bkg & above].sum()),
        )

    def merge(self, other: Side) -> Side:
        """The sums of both chunks."""
        return _merged(self, other)  # type: ignore[return-value]


@dataclass
class CheckSummary:
    """The sums of one check (one perturbed sample) over a chunk; ``merge`` adds two chunks.

    Arrays add, ``max_disp`` takes the maximum, lists concatenate, ``zero_gradient`` stays None
    for attacks without gradients.
    """

    n: int
    sum_w: float
    sum_w2: float
    sum_w_flip: float
    n_correct: int
    sum_w_correct: float
    sum_w2_correct: float
    sum_w_flip_correct: float
    sum_w_sig: float
    sum_w_bkg: float
    perturbed: Side
    max_disp: np.ndarray  # [n_columns] in sigmas
    sum_abs_disp: np.ndarray  # [n_columns]
    n_movable: np.ndarray  # [n_columns]
    n_moved: np.ndarray  # [n_columns]
    violations: int
    zero_gradient: int | None
    seconds: float
    #: per draw of a systematic check's correlated variations: weighted flips
    draw_flips: np.ndarray | None = None
    certificate: CertificateParts | None = None
    kept: int = 0
    candidates: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: CheckSummary) -> CheckSummary:
        """The sums of both chunks."""
        return _merged(self, other)


def _merged(a: object, b: object) -> object:
    """Field-wise merge of two summaries of the same type (see :class:`CheckSummary`)."""
    values = {}
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "max_disp":
            values[f.name] = np.maximum(x, y)
        elif x is None or y is None:
            values[f.name] = x if y is None else y
        elif isinstance(x, list):
            values[f.name] = x + y
        elif isinstance(x, (CertificateParts, Side)):
            values[f.name] = x.merge(y)
        else:
            values[f.name] = x + y
    return type(a)(**values)


@dataclass
class CertificateParts:
    """The hidden attack's certificate sums over a chunk: per feature counts of nominal and
    perturbed valid entries on the feature's quantile edges (at the left edge, and strictly
    inside each bin) and on its equal-width JS bins; the pairwise moment sums of the centred
    columns (nominal and perturbed)."""

    at_edge: list[np.ndarray]  # per feature [2, n_bins]: nominal, perturbed
    inside: list[np.ndarray]  # per feature [2, n_bins]
    js: list[np.ndarray]  # per feature [2, jsd_bins]
    moments_nominal: np.ndarray  # [4, d, d] counts, sums, cross, squares
    moments_perturbed: np.ndarray  # [4, d, d]

    def merge(self, other: CertificateParts) -> CertificateParts:
        return CertificateParts(
            [a + b for a, b in zip(self.at_edge, other.at_edge, strict=True)],
            [a + b for a, b in zip(self.inside, other.inside, strict=True)],
            [a + b for a, b in zip(self.js, other.js, strict=True)],
            self.moments_nominal + other.moments_nominal,
            self.moments_perturbed + other.moments_perturbed,
        )


@dataclass(frozen=True)
class CertificateBins:
    """What the whole sample fixes for the merged certificate: per feature (its pooled columns)
    the quantile edges [k + 1] of its nominal valid values, the equal-width JS edges over their
    range, and the column centres [d] of the moment sums."""

    names: tuple[str, ...]
    columns: tuple[tuple[int, ...], ...]
    quantile_edges: tuple[np.ndarray, ...]
    js_edges: tuple[np.ndarray, ...]
    centre: np.ndarray


def certificate_parts(
    bins: CertificateBins, nominal: np.ndarray, perturbed: np.ndarray, valid: np.ndarray
) -> CertificateParts:
    """The certificate sums of one chunk: rows [n, d] before and after, movable entries [n, d]."""
    at_edge, inside, js = [], [], []
    for cols, edges, jedges in zip(bins.columns, bins.quantile_edges, bins.js_edges, strict=True):
        mask = valid[:, list(cols)]
        pair_edge, pair_inside, pair_js = [], [], []
        for rows in (nominal, perturbed):
            v = rows[:, list(cols)][mask].astype(np.float64)
            k = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
            on = v == edges[k]
            pair_edge.append(np.bincount(k[on], minlength=len(edges) - 1))
            pair_inside.append(np.bincount(k[~on], minlength=len(edges) - 1))
            lo, hi = float(jedges[0]), float(jedges[-1])
            pair_js.append(np.histogram(np.clip(v, lo, hi), len(jedges) - 1, (lo, hi))[0])
        at_edge.append(np.array(pair_edge, dtype=np.int64))
        inside.append(np.array(pair_inside, dtype=np.int64))
        js.append(np.array(pair_js, dtype=np.int64))
    centred = [np.where(valid, rows - bins.centre, 0.0) for rows in (nominal, perturbed)]
    return CertificateParts(
        at_edge,
        inside,
        js,
        np.stack(moment_sums(centred[0], valid)),
        np.stack(moment_sums(centred[1], valid)),
    )


def merged_certificate(
    parts: CertificateParts,
    bins: CertificateBins,
    column_names: Sequence[str],
    limits: ConstraintLimits,
) -> tuple[Certificate, float]:
    """The certificate of the merged sample, and the largest KS binning error bound.

    Per feature the KS statistic is evaluated at every quantile edge and just below the next;
    inside a bin the ECDF difference moves by the two samples' masses strictly inside it, so the
    exact statistic exceeds the evaluated one by at most the smaller of them (0 where values sit
    on edges, as integer features do, or where one sample has none inside); the certificate
    uses the upper bound (statistic + that bound) and its asymptotic p-value, so a pass is a
    pass of the exact test. The JS distance is
    the single-process one (equal-width bins over the whole nominal range); the correlations are
    exact up to float64 rounding of the moment sums.
    """
    from scipy.spatial.distance import jensenshannon

    features, worst_bound = [], 0.0
    for name, edge, inside, js in zip(
        bins.names, parts.at_edge, parts.inside, parts.js, strict=True
    ):
        total = edge.sum(1) + inside.sum(1)
        n = int(total[0])
        if n < 2:
            continue
        through = np.cumsum(edge + inside, axis=1) / total[:, None]  # F just below next edge
        at = (np.cumsum(edge + inside, axis=1) - inside) / total[:, None]  # F at each edge
        d = float(max(np.abs(through[0] - through[1]).max(), np.abs(at[0] - at[1]).max()))
        share = inside / total[:, None]
        bound = float(np.minimum(share[0], share[1]).max())
        worst_bound = max(worst_bound, bound)
        upper = min(d + bound, 1.0)
        p = js / js.sum(1, keepdims=True)
        features.append(
            FeatureCheck(
                name,
                n,
                upper,
                _ks_pvalue_asymptotic(upper, n, n),
                float(jensenshannon(p[0], p[1], base=2)),
            )
        )
    rho = [correlation_from_sums(*m) for m in (parts.moments_nominal, parts.moments_perturbed)]
    corr = _corr_change(rho[0], rho[1], column_names)
    return (
        Certificate(
            features=features,
            max_abs_delta_rho=corr.max_abs_delta_rho,
            max_pair=corr.max_pair,
            corr_frob_change=corr.frob_change,
            violations=_violations(features, corr, limits),
        ),
        worst_bound,
    )


# ---------------------------------------------------------------------------------------------
# Numbers from merged histograms


def binned_auc(sig: np.ndarray, bkg: np.ndarray) -> tuple[float, float]:
    """AUC (P(D_sig > D_bkg) + P(tie) / 2) of fine histograms of signal and background, and
    the bound on its binning error (half the weight of pairs sharing a bin)."""
    s, b = float(sig.sum()), float(bkg.sum())
    if s <= 0 or b <= 0:
        return math.nan, math.nan
    below = np.cumsum(bkg) - bkg
    auc = float(np.dot(sig, below) + 0.5 * np.dot(sig, bkg)) / (s * b)
    return auc, float(0.5 * np.dot(np.abs(sig), np.abs(bkg))) / (s * b)


def binned_ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """KS statistic of two fine histograms at the bin edges, and its bound: inside a bin the
    ECDF difference moves by the two samples' shares in it, so the exact statistic exceeds the
    binned one by at most the larger of the smaller shares over bins."""
    fa, fb = np.cumsum(a) / a.sum(), np.cumsum(b) / b.sum()
    bound = float(np.minimum(np.abs(a) / a.sum(), np.abs(b) / b.sum()).max())
    return float(np.abs(fa - fb).max()), bound


def binned_wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance (units of D) of two fine histograms, each bin's mass at its
    lower edge."""
    edges = fine_edges()
    fa, fb = np.cumsum(a) / a.sum(), np.cumsum(b) / b.sum()
    return float(np.dot(np.abs(fa - fb)[:-1], np.diff(edges)[1:]))


def binned_roc(sig: np.ndarray, bkg: np.ndarray) -> dict[str, list[float]] | None:
    """The ROC of fine histograms at 101 signal efficiencies (as ``roc_points``)."""
    s, b = float(sig.sum()), float(bkg.sum())
    if s <= 0 or b <= 0:
        return None
    tpr = np.concatenate([[1.0], 1.0 - np.cumsum(sig) / s])[::-1]
    fpr = np.concatenate([[1.0], 1.0 - np.cumsum(bkg) / b])[::-1]
    return roc_on_grid(fpr, tpr)
