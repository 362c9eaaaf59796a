"""The box an attack may move each event in: per-event sigmas, masks, bounds and projection.

Built once per audit from the :class:`~pytest_hepguard.uncertainties.UncertaintyModel`; holds only
per-feature vectors ([n_features]) on the attack's device, so the per-event box of a batch
``x0`` [batch, n_features] is computed on the fly and nothing of size n_events is kept.

Units: a displacement of ``delta`` sigmas moves ``x0`` by ``delta * sigma_up`` when ``delta > 0``
and by ``delta * sigma_down`` when ``delta < 0``; the box of an attack of size ``epsilon`` is
``|delta| <= epsilon``, intersected with the physical bounds. Integer features move by whole
steps only (at most ``floor(epsilon * sigma)``); sentinel entries and frozen features never move.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from pytest_hepguard.uncertainties import FeatureSpec

#: Tolerance when flooring ``epsilon * sigma`` to whole integer steps (1.0 * 1 must give 1 step).
_INT_TOL = 1e-6


#: Events per block of the moments behind ``std`` envelopes: the sample's standard deviations
#: are merged from blocks of this many events in order, so a chunked audit (chunks a multiple of
#: it) gets the same floats as one process.
MOMENT_BLOCK = 65536


def feature_moments(
    features: np.ndarray,
    specs: Sequence[FeatureSpec],
    feature_of: Sequence[str] | None = None,
    padded: np.ndarray | None = None,
    block: int = MOMENT_BLOCK,
) -> np.ndarray:
    """Count, mean and summed squared deviation [n_blocks, 3, n_features] of each ``std``
    feature's values in consecutive blocks of ``block`` events of ``features`` [n_events,
    n_features], sentinels excluded, the columns of one feature (``feature_of``) pooled without
    their ``padded`` entries (Bool [n_events, n_features]); 0 for the other features."""
    groups: dict[str, list[int]] = {}
    for j, spec in enumerate(specs):
        if spec.kind == "std" and not spec.frozen:
            groups.setdefault(spec.name if feature_of is None else feature_of[j], []).append(j)
    starts = range(0, max(len(features), 1), block)
    out = np.zeros((len(starts), 3, len(specs)), dtype=np.float64)
    for b, start in enumerate(starts):
        rows = slice(start, start + block)
        for cols in groups.values():
            values = features[rows][:, cols].astype(np.float64)
            values = values.ravel() if padded is None else values[~padded[rows][:, cols]]
            sentinels = specs[cols[0]].sentinels
            if sentinels:
                values = values[~np.isin(values, np.asarray(sentinels, dtype=np.float64))]
            if values.size:
                mean = values.sum() / values.size
                dev = values - mean
                out[b, :, cols] = (values.size, mean, np.sum(dev * dev))
    return out


def std_from_moments(moments: np.ndarray) -> np.ndarray:
    """Standard deviations [n_features] of blocks' moments [n_blocks, 3, n_features] (from
    :func:`feature_moments`), merged in block order (Chan et al.); fewer than two values give
    0 (the feature cannot move)."""
    n, mean, m2 = moments[0].copy()
    for nb, mb, m2b in moments[1:]:
        total = n + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb - mean
            share = np.where(total > 0, nb / np.maximum(total, 1), 0.0)
            mean = np.where(nb > 0, mean + delta * share, mean)
            m2 = np.where(nb > 0, m2 + m2b + delta * delta * n * share, m2)
        n = total
    return np.where(n > 1, np.sqrt(m2 / np.maximum(n, 1)), 0.0)


def feature_std(
    features: np.ndarray,
    specs: Sequence[FeatureSpec],
    feature_of: Sequence[str] | None = None,
    padded: np.ndarray | None = None,
) -> np.ndarray:
    """Standard deviation [n_features] of each column of ``features`` [n_events, n_features],
    sentinels excluded.

    Used for ``std`` envelopes (the convention of arXiv 2203.13890); computed for those features
    only, 0 for the others. Columns that belong to the same feature (``feature_of``: the
    constituents of a multi-input model's per-constituent feature) are pooled, without their
    ``padded`` entries (Bool [n_events, n_features]). Fewer than two values give 0 (the feature
    cannot move). Merged from blocks of :data:`MOMENT_BLOCK` events (numpy's ``std`` below it).
    """
    return std_from_moments(feature_moments(features, specs, feature_of, padded))


class Envelope:
    """Per-feature envelope parameters on one device.

    Args:
        specs: the features in model input order.
        std: per-feature standard deviation over the sample [n_features] (for ``std`` kinds).
        device: where the attack runs.
        padding: Bool [batch, n_features] of the entries of ``x0`` [batch, n_features] that are
            padding (constituents a multi-input model does not have: never moved), or None.
    """

    def __init__(
        self,
        specs: Sequence[FeatureSpec],
        std: np.ndarray,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        padding: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        n = len(specs)
        abs_up, abs_down, rel_up, rel_down = (np.zeros(n) for _ in range(4))
        lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
        k = max((len(s.sentinels) for s in specs), default=0)
        sentinels = np.full((n, max(k, 1)), np.nan)
        for j, s in enumerate(specs):
            if not s.frozen:
                if s.kind == "relative":
                    rel_up[j], rel_down[j] = s.up, s.down
                elif s.kind == "std":
                    abs_up[j], abs_down[j] = s.up * std[j], s.down * std[j]
                else:
                    abs_up[j], abs_down[j] = s.up, s.down
            lower[j] = -np.inf if s.min is None else s.min
            upper[j] = np.inf if s.max is None else s.max
            sentinels[j, : len(s.sentinels)] = s.sentinels

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        self.names = tuple(s.name for s in specs)
        self.device = torch.device(device)
        self.abs_up, self.abs_down, self.rel_up, self.rel_down = map(
            t, (abs_up, abs_down, rel_up, rel_down)
        )
        self.lower, self.upper, self.sentinels = t(lower), t(upper), t(sentinels)
        self.integer = torch.as_tensor([s.integer for s in specs], device=device)
        #: the integer features' columns as slices (strided views are far cheaper to round
        #: than a gather of the columns)
        self.integer_slices = _column_slices([j for j, s in enumerate(specs) if s.integer])
        self.frozen = torch.as_tensor([s.frozen for s in specs], device=device)
        self.padding = padding

    def sigmas(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigma up and down of each entry of ``x0`` [batch, n_features], in the feature's unit.

        Zero where the entry may not move (frozen feature or sentinel value).
        """
        movable = self.movable(x0)
        mag = x0.abs()
        # sigmas are finite and >= 0, so a product with the mask is where(movable, sigma, 0),
        # bit for bit, and several times faster than torch.where on a CPU
        up = (self.abs_up + self.rel_up * mag) * movable
        down = (self.abs_down + self.rel_down * mag) * movable
        return up, down

    def movable(self, x0: torch.Tensor) -> torch.Tensor:
        """Bool [batch, n_features]: entries that are neither frozen, a sentinel value, nor
        padding."""
        is_sentinel = (x0.unsqueeze(-1) == self.sentinels).any(-1)
        movable = ~is_sentinel & ~self.frozen
        return movable if self.padding is None else movable & ~self.padding(x0)

    def box(self, x0: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest value [batch, n_features] each entry may take at size ``epsilon``.

        The box always contains ``x0``: a nominal value already outside its physical bounds stays
        where it is on that side. Integer features get whole-step offsets.
        """
        up, down = self.sigmas(x0)
        return self.limits(x0, epsilon * up, epsilon * down)

    def limits(
        self, x0: torch.Tensor, reach_up: torch.Tensor, reach_down: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest value [batch, n_features] of entries that may move by up to
        ``reach_up`` above and ``reach_down`` below ``x0`` (feature units, [batch, n_features]):
        cut at the physical bounds (a nominal value outside them stays where it is on that
        side), whole steps for integer features."""
        room_up = (self.upper - x0).clamp_min(0.0)
        room_down = (x0 - self.lower).clamp_min(0.0)
        reach_up = torch.minimum(reach_up, room_up)
        reach_down = torch.minimum(reach_down, room_down)
        reach_up = torch.where(self.integer, torch.floor(reach_up + _INT_TOL), reach_up)
        reach_down = torch.where(self.integer, torch.floor(reach_down + _INT_TOL), reach_down)
        return x0 - reach_down, x0 + reach_up

    def project(
        self, x0: torch.Tensor, x: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Project ``x`` onto the ``box`` of ``x0``: clamped, integer offsets rounded (the
        box's integer offsets are whole steps, so the order does not matter)."""
        return self.round(x0, torch.clamp(x, box[0], box[1]), box)

    def round(
        self, x0: torch.Tensor, x: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`project` of an ``x`` already inside the ``box``: only the integer columns
        change (a new tensor then; ``x`` itself without integer features), so an attack
        step's cost does not grow with the number of float features."""
        return self.rounding(x0, box)(x)

    def rounding(
        self, x0: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor]
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`round` for one batch ``x0`` and its ``box``, as a function of ``x``: the
        integer columns' nominal values and bounds are copied out once, for a loop that rounds
        every step."""
        parts = [
            (c, x0[:, c].contiguous(), box[0][:, c].contiguous(), box[1][:, c].contiguous())
            for c in self.integer_slices
        ]

        def apply(x: torch.Tensor) -> torch.Tensor:
            if not parts:
                return x
            out = x.clone()
            for c, base, lo, hi in parts:
                out[:, c] = (x[:, c] - base).round_().add_(base).clamp_(lo, hi)
            return out

        return apply

    def displace(
        self,
        x0: torch.Tensor,
        delta: torch.Tensor,
        sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x0`` moved by ``delta`` sigmas (per entry, sign chooses the up or down sigma;
        ``sigmas``: :meth:`sigmas` of ``x0`` when the caller has them)."""
        up, down = self.sigmas(x0) if sigmas is None else sigmas
        return x0 + torch.where(delta > 0, delta * up, delta * down)

    def contains(self, x0: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Bool [batch, n_features]: ``x`` is a legal perturbation of ``x0`` at size ``epsilon``.

        Legal: inside the box up to float32 rounding of ``x0 + delta * sigma``, whole steps for
        integer features, untouched where the entry may not move.
        """
        lo, hi = self.box(x0, epsilon)
        slack = 4 * torch.finfo(x0.dtype).eps * (x0.abs() + (hi - lo))
        inside = (x >= lo - slack) & (x <= hi + slack)
        offset = x - x0
        whole = ~self.integer | (offset == torch.round(offset))
        still = self.movable(x0) | (x == x0)
        return inside & whole & still

    def in_sigmas(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Displacement ``x - x0`` in sigmas [batch, n_features]; 0 where sigma is 0 and x == x0.

        An entry moved although its sigma is 0 (which an attack must never do) gives ``inf``.
        """
        up, down = self.sigmas(x0)
        d = x - x0
        sigma = torch.where(d > 0, up, down)
        ratio = d / torch.where(sigma > 0, sigma, 1.0)
        return torch.where(sigma > 0, ratio, torch.where(d == 0, 0.0, math.inf))


def _column_slices(columns: Sequence[int]) -> list[slice]:
    """Increasing column indices as few slices as greedy arithmetic progressions make them
    (the per-constituent columns of one feature are evenly strided)."""
    out: list[slice] = []
    i = 0
    while i < len(columns):
        j = i
        step = columns[i + 1] - columns[i] if i + 1 < len(columns) else 1
        while j + 1 < len(columns) and columns[j + 1] - columns[j] == step:
            j += 1
        out.append(slice(columns[i], columns[j] + 1, step))
        i = j + 1
    return out
