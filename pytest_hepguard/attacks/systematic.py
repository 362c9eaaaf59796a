"""``systematic``: the usual estimate, each nuisance group shifted by +-1 sigma coherently.

A group (``groups:`` in the uncertainty file) is one parameter theta ~ N(0, 1) that moves its
features together: ``x -> x + theta * up`` (theta > 0) or ``x + theta * down`` (theta < 0), times
``|x|`` for relative sigmas; sentinels, padding and frozen features stay, physical bounds clip,
integer features move in whole steps. Without ``groups:`` every movable feature is a group of
its own with its envelope's sigma: "vary each input by +-1 sigma".

Besides the +-epsilon variations of each group, the correlated draws: theta ~ N(0, C) with C the
declared correlations between groups, one theta per sample (or per event for ``per_event``
groups), all groups at once, the random counterpart of the variations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from pytest_hepguard.envelope import Envelope
from pytest_hepguard.uncertainties import FeatureSpec, GroupSpec


@dataclass(frozen=True)
class Group:
    """One nuisance group on the row: its name, its envelope (the group's sigmas on its
    features, every other entry frozen) and whether theta is drawn per event."""

    name: str
    envelope: Envelope
    per_event: bool = False

    def shift(self, x0: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
        """Rows ``x0`` [batch, n] with the group at ``theta`` sigmas (a number, or [batch, 1])."""
        theta = torch.as_tensor(theta, dtype=x0.dtype, device=x0.device)
        size = theta.abs().max().item()
        box = self.envelope.box(x0, size)
        return self.envelope.project(x0, self.envelope.displace(x0, theta.expand_as(x0)), box)


def build_groups(
    groups: Sequence[GroupSpec],
    specs: Sequence[FeatureSpec],
    feature_of: Sequence[str],
    std: np.ndarray,
    device: torch.device,
    padding: object = None,
) -> list[Group]:
    """The row's :class:`Group` of each declared group, or one per movable feature (its own
    envelope) when none is declared. ``specs``/``feature_of`` are per row entry."""

    def envelope(row_specs: list[FeatureSpec]) -> Envelope:
        return Envelope(row_specs, std, device, padding=padding)  # type: ignore[arg-type]

    if not groups:
        out = []
        for name in dict.fromkeys(feature_of):
            own = [
                s if of == name else replace(s, frozen=True)
                for s, of in zip(specs, feature_of, strict=True)
            ]
            if not all(s.frozen for s in own):
                out.append(Group(name, envelope(own)))
        return out
    out = []
    for group in groups:
        shifts = {s.feature: s for s in group.shifts}
        row = []
        for spec, of in zip(specs, feature_of, strict=True):
            shift = shifts.get(of)
            row.append(
                replace(spec, frozen=True)
                if shift is None
                else replace(spec, kind=shift.kind, up=shift.up, down=shift.down, frozen=False)
            )
        out.append(Group(group.name, envelope(row), group.per_event))
    return out


def correlated_shift(
    groups: Sequence[Group], x0: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """Rows ``x0`` [batch, n] with every group at once: ``theta`` [batch, n_groups] (per event;
    rows equal for per-sample draws). Displacements add; bounds are respected by each group's
    shift and, for the sum, by clipping to the physical bounds (a nominal value already outside
    them, such as a sentinel, stays where it is)."""
    x = x0.clone()
    for g, group in enumerate(groups):
        x = x + group.shift(x0, theta[:, g : g + 1]) - x0
    lower, upper = groups[0].envelope.lower, groups[0].envelope.upper
    return torch.clamp(x, torch.minimum(lower, x0), torch.maximum(upper, x0))
