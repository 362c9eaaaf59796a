"""Templates: histograms of the discriminant per sample, nominal and varied, turned into the data
of pyhf modifiers and linted before anything is written (numpy only).

A variation (one nuisance parameter: a ±1σ group shift, or the hidden-systematics attack pushed up
and down) gives an up and a down histogram per sample. They become modifiers the way cabinetry
builds them, which analysts know:

- the normalisation part is a ``normsys`` with ``hi = Σup / Σnominal`` and ``lo = Σdown /
  Σnominal`` (left out where both are 1: events only migrate between bins);
- the shape part is a ``histosys`` whose ``hi_data``/``lo_data`` are the up/down histograms
  rescaled to the nominal yield (no ``histosys`` in a one-bin channel, where there is no shape);
- without the split (``normsys=False``) one ``histosys`` carries both;
- a one-sided variation (only ``up`` known) is symmetrised: ``down = 2·nominal − up``.

Yields are sums of event weights; ``sumw2`` (sum of squared weights) gives the statistical error
``sqrt(sumw2)`` of each bin (pyhf's ``staterror``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pytest_hepguard.exceptions import PyhfError

#: A normalisation effect beyond this fraction is linted (the CombineHarvester convention).
LARGE_NORMALISATION = 0.10

#: The smallest normsys factor written: pyhf interpolates normsys in its logarithm (code4).
MIN_NORMSYS = 1e-3

#: Relative size below which a bin's change counts as no change (float noise of the histograms).
_TINY = 1e-9


@dataclass(frozen=True)
class Histogram:
    """Sum of weights and of squared weights per bin, both [n_bins]."""

    yields: np.ndarray
    sumw2: np.ndarray


def histogram(
    values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None
) -> Histogram:
    """Histogram of ``values`` [n] over ``edges`` [n_bins + 1] (numpy's convention: bins
    ``[e_i, e_i+1)``, the last one closed); values outside the edges are not counted (the edges
    are the region's selection). ``weights`` [n] default to 1."""
    values = np.asarray(values, dtype=np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    yields, _ = np.histogram(values, bins=edges, weights=w)
    sumw2, _ = np.histogram(values, bins=edges, weights=w * w)
    return Histogram(yields.astype(np.float64), sumw2.astype(np.float64))


def bin_edges(bins: int | Sequence[float], low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Edges [n_bins + 1]: ``bins`` equal bins over ``[low, high]``, or the given edges (checked
    where they are read: the uncertainty file, ``--hepguard-bins``)."""
    if isinstance(bins, (int, np.integer)):
        return np.linspace(low, high, int(bins) + 1)
    return np.asarray(bins, dtype=np.float64)


@dataclass(frozen=True)
class SampleTemplate:
    """One pyhf sample: its nominal histogram; ``signal`` samples get the POI's normfactor."""

    name: str
    nominal: np.ndarray  # [n_bins] sum of weights
    sumw2: np.ndarray  # [n_bins] sum of squared weights
    signal: bool = False


@dataclass(frozen=True)
class Variation:
    """One nuisance parameter: its up and down histograms per sample (yields [n_bins]).

    ``down`` is None for a one-sided variation, which is symmetrised around the nominal."""

    name: str
    up: Mapping[str, np.ndarray]
    down: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class ModifierTemplate:
    """The pyhf modifiers of one variation on one sample: ``normsys`` as ``(hi, lo)`` factors,
    ``histosys`` as ``(hi_data, lo_data)`` absolute yields [n_bins]; either may be absent."""

    name: str
    sample: str
    normsys: tuple[float, float] | None
    histosys: tuple[np.ndarray, np.ndarray] | None


@dataclass(frozen=True)
class Templates:
    """Everything a workspace or a patch is written from: bin edges [n_bins + 1], the samples,
    the modifiers (in variation order, then sample order) and the lint warnings."""

    edges: np.ndarray
    samples: tuple[SampleTemplate, ...]
    modifiers: tuple[ModifierTemplate, ...]
    warnings: tuple[str, ...] = ()
    #: every variation's up/down histograms per sample, after symmetrising and clipping
    varied: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The modifier (nuisance parameter) names, each once, in order."""
        return tuple(dict.fromkeys(m.name for m in self.modifiers))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: edges, nominal yields and errors per sample, up/down yields and the
        normsys factors per variation and sample."""
        nominal = {s.name: s.nominal for s in self.samples}
        norm = {(m.name, m.sample): m.normsys for m in self.modifiers}
        return {
            "edges": self.edges.tolist(),
            "samples": [
                {
                    "name": s.name,
                    "signal": s.signal,
                    "nominal": s.nominal.tolist(),
                    "stat_error": np.sqrt(s.sumw2).tolist(),
                }
                for s in self.samples
            ],
            "variations": [
                {
                    "name": name,
                    "sample": sample,
                    "up": up.tolist(),
                    "down": down.tolist(),
                    "up_yield_ratio": _ratio(up.sum(), nominal[sample].sum()),
                    "down_yield_ratio": _ratio(down.sum(), nominal[sample].sum()),
                    "normsys": _pair(norm.get((name, sample))),
                }
                for name, per_sample in self.varied.items()
                for sample, (up, down) in per_sample.items()
            ],
            "warnings": list(self.warnings),
        }


def _pair(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else list(pair)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _bins(edges: np.ndarray, where: np.ndarray) -> str:
    """'bins 3 [0.3, 0.4), 7 [0.7, 0.8)' for the true entries of ``where``."""
    idx = np.flatnonzero(where)
    shown = ", ".join(f"{i} [{edges[i]:g}, {edges[i + 1]:g})" for i in idx[:8])
    more = f" and {len(idx) - 8} more" if len(idx) > 8 else ""
    return f"bin{'s' if len(idx) > 1 else ''} {shown}{more}"


def symmetrize(nominal: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The down histogram of a one-sided variation: ``2·nominal − up`` (may be negative)."""
    return 2.0 * nominal - up


def clip_negative(yields: np.ndarray) -> tuple[np.ndarray, int]:
    """``yields`` with negative bins set to 0, and how many were."""
    negative = yields < 0
    return np.where(negative, 0.0, yields), int(negative.sum())


def lint(
    name: str,
    sample: SampleTemplate,
    up: np.ndarray,
    down: np.ndarray,
    edges: np.ndarray,
) -> list[str]:
    """Warnings about one variation of one sample, each naming the bins: up and down moving a
    bin the same way by more than its statistical error ``sqrt(sumw2)`` (smaller same-way
    changes are bin-to-bin migration noise), identical up and down, a normalisation effect
    over 10 %."""
    out = []
    where = f"{name} on {sample.name}"
    nominal = sample.nominal
    scale = _TINY * max(float(np.abs(nominal).max(initial=0.0)), 1.0)
    d_up, d_down = up - nominal, down - nominal
    moved = (np.abs(d_up) > scale) | (np.abs(d_down) > scale)
    if not moved.any():
        return out
    stat = np.maximum(np.sqrt(sample.sumw2), scale)
    same_way = (d_up * d_down > 0) & (np.abs(d_up) > stat) & (np.abs(d_down) > stat)
    if same_way.any():
        out.append(
            f"{where}: up and down move the yield the same way, by more than its statistical "
            f"error, in {_bins(edges, same_way)}"
        )
    if np.allclose(up, down, rtol=1e-9, atol=scale):
        out.append(f"{where}: up and down are identical (the variation has no direction)")
    total = float(nominal.sum())
    if total > 0:
        for side, hist in (("up", up), ("down", down)):
            change = float(hist.sum()) / total - 1.0
            if abs(change) > LARGE_NORMALISATION:
                out.append(
                    f"{where}: {side} changes the normalisation by {change:+.1%} (over "
                    f"{LARGE_NORMALISATION:.0%}: check that the shift is what the analysis means)"
                )
    return out


def _split(
    name: str,
    sample: SampleTemplate,
    up: np.ndarray,
    down: np.ndarray,
    normsys: bool,
) -> tuple[ModifierTemplate | None, list[str]]:
    """cabinetry's split of one variation of one sample into normsys and shape histosys."""
    total = float(sample.nominal.sum())
    one_bin = len(sample.nominal) == 1
    if not (normsys or one_bin):
        return ModifierTemplate(name, sample.name, None, (up, down)), []
    if total <= 0:
        return None, [
            f"{name} on {sample.name}: the nominal yield is {total:g}, so the variation cannot be "
            "expressed as a normalisation factor; no modifier written for this sample"
        ]
    notes = []
    factors = [float(up.sum()) / total, float(down.sum()) / total]
    for i, side in enumerate(("up", "down")):
        if factors[i] < MIN_NORMSYS:
            notes.append(
                f"{name} on {sample.name}: the {side} yield ratio {factors[i]:.3g} is floored at "
                f"{MIN_NORMSYS:g} (pyhf's normsys interpolation takes its logarithm)"
            )
            factors[i] = MIN_NORMSYS
    norm: tuple[float, float] | None = (factors[0], factors[1])
    if max(abs(f - 1.0) for f in factors) <= _TINY:
        norm = None  # no normalisation effect: a normsys of 1/1 would be a no-op
    if one_bin:
        return (None if norm is None else ModifierTemplate(name, sample.name, norm, None)), notes
    shape = tuple(
        hist * (total / hist.sum()) if hist.sum() > 0 else sample.nominal.copy()
        for hist in (up, down)
    )
    return ModifierTemplate(name, sample.name, norm, shape), notes  # type: ignore[arg-type]


def build_templates(
    edges: np.ndarray,
    samples: Sequence[SampleTemplate],
    variations: Sequence[Variation],
    *,
    normsys: bool = True,
) -> Templates:
    """Modifiers of every variation on every sample, linted.

    Args:
        edges: bin edges [n_bins + 1] (for messages).
        samples: the nominal histograms; a bin with a negative nominal yield is set to 0.
        variations: up (and down) histograms per sample; a sample missing from a variation gets
            no modifier from it.
        normsys: split each variation into a normsys and a shape-only histosys (cabinetry);
            False: one histosys with the full up/down.

    Raises:
        PyhfError: a bin whose total nominal yield over all samples is not positive (pyhf's
            likelihood is undefined there); the message names the bins.
    """
    warnings: list[str] = []
    clean = []
    for s in samples:
        nominal, n_neg = clip_negative(np.asarray(s.nominal, dtype=np.float64))
        if n_neg:
            warnings.append(
                f"sample {s.name}: {n_neg} bin(s) with a negative nominal yield (negative event "
                "weights) clipped to 0"
            )
        clean.append(SampleTemplate(s.name, nominal, np.asarray(s.sumw2, np.float64), s.signal))
    total = np.sum([s.nominal for s in clean], axis=0)
    empty = total <= 0
    if empty.any():
        raise PyhfError(
            f"the binning leaves {_bins(edges, empty)} without any nominal event (no sample has "
            "a positive yield there), which pyhf cannot fit; use fewer bins or edges that "
            "merge them (bins: in the pyhf: section, or --hepguard-bins)"
        )
    modifiers: list[ModifierTemplate] = []
    varied: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for var in variations:
        moved_any = False
        for s in clean:
            if s.name not in var.up:
                continue
            up = np.asarray(var.up[s.name], dtype=np.float64)
            if var.down is None:
                down = symmetrize(s.nominal, up)
            else:
                down = np.asarray(var.down[s.name], dtype=np.float64)
            up, n_up = clip_negative(up)
            down, n_down = clip_negative(down)
            clipped = n_up + n_down
            if clipped:
                warnings.append(
                    f"{var.name} on {s.name}: {clipped} varied bin(s) below 0 clipped to 0"
                )
            varied.setdefault(var.name, {})[s.name] = (up, down)
            if np.array_equal(up, s.nominal) and np.array_equal(down, s.nominal):
                continue
            moved_any = True
            warnings += lint(var.name, s, up, down, edges)
            modifier, notes = _split(var.name, s, up, down, normsys)
            warnings += notes
            if modifier is not None:
                modifiers.append(modifier)
        if not moved_any:
            warnings.append(f"{var.name}: changes no sample's template; no modifier written")
    return Templates(
        np.asarray(edges, np.float64), tuple(clean), tuple(modifiers), tuple(warnings), varied
    )
