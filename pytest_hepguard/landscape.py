"""The loss of the true label around the inputs, in sigmas (the seed's loss landscape).

arXiv 2303.14511 draws the loss surface in *input* space: one jet, two of its inputs varied on a
fine grid, the cross-entropy of its true label at each point, for a nominally and an
adversarially trained tagger. This module gives that surface (:func:`loss_surface`) and its
one-dimensional cuts through the whole sample (:func:`loss_curves`): the weighted mean loss along
the adversarial (FGSM) direction, random directions and each nuisance group, with a sharpness
summary of each curve (:meth:`Curve.sharpness`).

Units: every displacement is in sigmas of each entry's envelope. ``t`` sigmas along a direction
``d`` (entries +1, -1 or 0) move an entry by ``t * d * sigma_up`` where ``t * d > 0`` and by
``t * d * sigma_down`` where ``t * d < 0`` (:func:`displaced`). The rows then obey the rules every
perturbation obeys (physical bounds, whole integer steps, sentinels, padding and frozen features
never moving) but are not clipped to an attack size: the landscape looks beyond the envelope.
Integer features move by ``floor(|t| * sigma)`` whole steps, as :meth:`Envelope.box` allows, so the
adversarial direction at ``t = epsilon`` gives exactly FGSM's rows at ``epsilon`` and a group at
``t`` exactly :meth:`Group.shift` at ``theta = t``.

The loss is :meth:`Model.loss`, the per-event cross-entropy of the true label that FGSM and PGD
climb, from :meth:`Model.raw` (the differentiable model the gradient comes from).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pytest_hepguard.attacks.base import input_gradient
from pytest_hepguard.attacks.systematic import Group
from pytest_hepguard.decision import Decision
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.exceptions import AttackError
from pytest_hepguard.models.base import Model

#: Relative tolerance (of the largest |t|) when finding t = 0 and checking the grid's symmetry.
_GRID_TOL = 1e-9


def displaced(envelope: Envelope, x0: Tensor, direction: Tensor, t: float) -> Tensor:
    """Rows ``x0`` [batch, n] moved by ``t * direction`` sigmas per entry ([batch, n]).

    The up sigma of an entry applies where ``t * direction > 0``, the down sigma where it is
    negative. The move is then cut at the physical bounds (a nominal value already outside them
    stays where it is on that side), integer features move by whole steps (the move's magnitude
    floored, as :meth:`Envelope.box` does), and entries that may not move (frozen, sentinel,
    padding) keep their nominal value exactly. No attack size clips the move.
    """
    up, down = envelope.sigmas(x0)
    delta = t * direction
    step = torch.where(delta > 0, delta * up, delta * down)
    box = envelope.limits(x0, step.clamp_min(0.0), (-step).clamp_min(0.0))
    return envelope.project(x0, x0 + step, box)


def adversarial_direction(model: Model, x0: Tensor, labels: Tensor, envelope: Envelope) -> Tensor:
    """FGSM's direction [batch, n] at ``x0`` [batch, n]: the sign (+1, -1 or 0, in sigma units)
    of the input gradient of the cross-entropy of ``labels`` [batch]; 0 on entries that may not
    move."""
    grad, _ = input_gradient(model, x0, labels)
    return torch.where(envelope.movable(x0), torch.sign(grad), 0.0).to(x0.dtype)


def random_directions(x0: Tensor, envelope: Envelope, generator: torch.Generator) -> Tensor:
    """Random directions [batch, n] for rows ``x0`` [batch, n]: +1 or -1 with equal probability
    (Rademacher) on each movable entry, 0 elsewhere. Drawn with ``generator`` on its own device
    (one ``randint`` of the batch's shape), then moved to ``x0``'s."""
    bits = torch.randint(0, 2, tuple(x0.shape), generator=generator, device=generator.device)
    signs = (2 * bits - 1).to(device=x0.device, dtype=x0.dtype)
    return torch.where(envelope.movable(x0), signs, 0.0)


@dataclass(frozen=True)
class Curve:
    """The loss along one direction.

    direction: ``"adversarial"``, ``"random"`` or ``"group:<name>"``.
    t: the displacements, in sigmas (along a group: its parameter theta).
    loss: weighted mean cross-entropy of the true label over all events at each ``t``.
    loss_by_class: the same per true class (keyed by class name; classes with events only).
    discriminant: weighted mean discriminant at each ``t``.
    """

    direction: str
    t: list[float]
    loss: list[float]
    loss_by_class: dict[str, list[float]]
    discriminant: list[float]

    def sharpness(self, epsilon: float) -> dict[str, float]:
        """How sharply the loss rises around ``t = 0``.

        ``curvature``: the second difference ``(loss(h) - 2 loss(0) + loss(-h)) / h**2`` with
        ``h`` the grid step next to 0 (per sigma squared); ``max_increase``: the largest
        ``loss(t) - loss(0)`` over the grid points with ``|t| <= epsilon`` (sigmas; >= 0, since
        ``t = 0`` is one of them). The grid must hold 0 and the same step on each side of it;
        otherwise :class:`AttackError`.
        """
        t, loss = np.asarray(self.t, dtype=np.float64), np.asarray(self.loss, dtype=np.float64)
        tol = _GRID_TOL * max(float(np.abs(t).max(initial=0.0)), 1.0)
        zero = np.flatnonzero(np.abs(t) <= tol)
        above, below = np.flatnonzero(t > tol), np.flatnonzero(t < -tol)
        if len(zero) != 1 or not len(above) or not len(below):
            raise AttackError(
                f"landscape {self.direction}: the sharpness needs t = 0 once and points on both "
                f"sides of it; got t = {self.t}"
            )
        plus, minus = above[np.argmin(t[above])], below[np.argmax(t[below])]
        h = float(t[plus])
        if abs(h + float(t[minus])) > tol:
            raise AttackError(
                f"landscape {self.direction}: the grid is not symmetric about 0 (nearest points "
                f"{t[minus]:g} and {h:g})"
            )
        at_zero = loss[zero[0]]
        within = np.abs(t) <= epsilon + tol
        return {
            "curvature": float((loss[plus] - 2 * at_zero + loss[minus]) / h**2),
            "max_increase": float(np.max(loss[within] - at_zero)),
        }

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class Surface:
    """The loss over a 2-D grid of two features.

    features: the two features (names of ``feature_of``).
    grid_i, grid_j: the displacements of the first and the second feature, in sigmas.
    loss: weighted mean cross-entropy of the true label, ``[len(grid_i)][len(grid_j)]``.
    events: how many events were averaged.
    """

    features: tuple[str, str]
    grid_i: list[float]
    grid_j: list[float]
    loss: list[list[float]]
    events: int

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict of the fields."""
        out = asdict(self)
        out["features"] = list(self.features)
        return out


class _Sums:
    """Weighted sums [n_t] of the loss and discriminant, and [n_t, n_classes] of the loss per
    class, of one direction, accumulated on the device in float64."""

    def __init__(self, n_t: int, n_classes: int, device: torch.device) -> None:
        self.loss = torch.zeros(n_t, dtype=torch.float64, device=device)
        self.disc = torch.zeros(n_t, dtype=torch.float64, device=device)
        self.by_class = torch.zeros(n_t, n_classes, dtype=torch.float64, device=device)

    def add(
        self, i: int, loss: Tensor, disc: Tensor, w: Tensor, onehot: Tensor, scale: float
    ) -> None:
        """Add events' ``loss`` and ``disc`` [b] with weights ``w`` [b] at point ``i``."""
        wl = w * loss.double()
        self.loss[i] += scale * wl.sum()
        self.disc[i] += scale * (w * disc.double()).sum()
        self.by_class[i] += scale * (wl @ onehot)


def _evaluate(
    model: Model, decision: Decision, rows: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Cross-entropy of ``labels`` [b] and discriminant, both [b], at ``rows`` [b, n] (one
    forward pass of :meth:`Model.raw`)."""
    raw = model.raw(rows)
    loss = F.nll_loss(model.log_probabilities(raw), labels, reduction="none")
    return loss, decision.discriminant_of(model.probabilities(raw))


def loss_curves(
    model: Model,
    decision: Decision,
    x0: Tensor,
    labels: Tensor,
    envelope: Envelope,
    *,
    ts: Sequence[float],
    groups: Sequence[Group] = (),
    weights: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    random_draws: int = 4,
    generator: torch.Generator | None = None,
    batch_size: int = 65536,
) -> list[Curve]:
    """The loss of the true label along the adversarial direction, random directions and each
    nuisance group, at the displacements ``ts`` (sigmas).

    Args:
        x0: nominal rows [n, n_features] (any device: moved to the envelope's a batch at a time).
        labels: int64 [n] true classes.
        envelope: the per-feature envelope whose sigmas are the unit of ``ts``.
        ts: displacements in sigmas; :meth:`Curve.sharpness` needs 0 and a grid symmetric
            about it.
        groups: nuisance groups; each gives the curve ``group:<name>`` of its coherent shift
            :meth:`Group.shift` at ``theta = t`` (its own sigmas, not the envelope's).
        weights: [n] event weights, or None (every event weighs 1).
        class_names: name of each class index, or None (``class <i>``).
        random_draws: random directions (:func:`random_directions`) averaged into ``random``.
        generator: draws the random directions (for each batch, one direction per draw in
            turn); None: a generator seeded with 0 on the envelope's device.
        batch_size: events per forward pass.

    Returns:
        ``adversarial`` (per event the sign of its input gradient at ``x0``, computed once and
        scanned: at ``t = epsilon`` FGSM's rows), ``random`` and one curve per group, in that
        order.
    """
    ts = [float(t) for t in ts]
    n = len(x0)
    if not ts or n == 0:
        raise AttackError("landscape: needs at least one displacement and one event")
    if random_draws < 1:
        raise AttackError(f"landscape: random_draws must be >= 1, got {random_draws}")
    device = envelope.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    n_classes = int(labels.max()) + 1
    names = [f"class {c}" for c in range(n_classes)] if class_names is None else class_names
    if n_classes > len(names):
        raise AttackError(f"landscape: label {n_classes - 1} but only {len(names)} class names")
    keys = ["adversarial", "random", *(f"group:{g.name}" for g in groups)]
    sums = {key: _Sums(len(ts), n_classes, device) for key in keys}
    w_total = torch.zeros((), dtype=torch.float64, device=device)
    w_class = torch.zeros(n_classes, dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        xb = x0[start : start + batch_size].to(device)
        lb = labels[start : start + batch_size].to(device)
        wb = (
            torch.ones(len(xb), dtype=torch.float64, device=device)
            if weights is None
            else weights[start : start + batch_size].to(device=device, dtype=torch.float64)
        )
        onehot = F.one_hot(lb, n_classes).double()
        w_total += wb.sum()
        w_class += wb @ onehot
        adversarial = adversarial_direction(model, xb, lb, envelope)
        with torch.no_grad():
            scans = [("adversarial", adversarial, 1.0)] + [
                ("random", random_directions(xb, envelope, generator), 1 / random_draws)
                for _ in range(random_draws)
            ]
            for key, direction, scale in scans:
                for i, t in enumerate(ts):
                    rows = displaced(envelope, xb, direction, t)
                    loss, disc = _evaluate(model, decision, rows, lb)
                    sums[key].add(i, loss, disc, wb, onehot, scale)
            for group in groups:
                for i, t in enumerate(ts):
                    loss, disc = _evaluate(model, decision, group.shift(xb, t), lb)
                    sums[f"group:{group.name}"].add(i, loss, disc, wb, onehot, 1.0)
    if float(w_total) == 0.0:
        raise AttackError("landscape: the event weights sum to 0")
    present = [c for c in range(n_classes) if float(w_class[c]) != 0.0]
    return [
        Curve(
            direction=key,
            t=list(ts),
            loss=(s.loss / w_total).tolist(),
            loss_by_class={names[c]: (s.by_class[:, c] / w_class[c]).tolist() for c in present},
            discriminant=(s.disc / w_total).tolist(),
        )
        for key, s in sums.items()
    ]


def _columns(envelope: Envelope, feature_of: Sequence[str], feature: str) -> list[int]:
    """Row entries of ``feature``; :class:`AttackError` naming the movable features when it is
    unknown or frozen."""
    movable = [
        f
        for f in dict.fromkeys(feature_of)
        if not all(bool(envelope.frozen[j]) for j, g in enumerate(feature_of) if g == f)
    ]
    cols = [j for j, g in enumerate(feature_of) if g == feature]
    if not cols or feature not in movable:
        why = "is not a feature" if not cols else "is frozen"
        raise AttackError(
            f"loss_surface: {feature!r} {why}; movable features: {', '.join(movable)}"
        )
    return cols


def loss_surface(
    model: Model,
    x0: Tensor,
    labels: Tensor,
    envelope: Envelope,
    feature_of: Sequence[str],
    features: tuple[str, str],
    grid: Sequence[float],
    *,
    weights: Tensor | None = None,
    batch_size: int = 65536,
) -> Surface:
    """The loss of the true label with two features displaced on a grid, every other at nominal.

    Args:
        x0: nominal rows [n, n_features]: one event gives the seed's plot, several are averaged
            (filter ``x0`` to one class first for a per-class surface).
        labels: int64 [n] true classes.
        envelope: the per-feature envelope whose sigmas are the unit of ``grid``.
        feature_of: the feature of each row entry [n_features] (a per-constituent feature moves
            all its entries together).
        features: the two features, moved by ``grid_i`` and ``grid_j`` sigmas.
        grid: displacements in sigmas, the same for both features.
        weights: [n] event weights, or None (every event weighs 1).
        batch_size: rows per forward pass (grid points are stacked when events are few).

    Raises:
        AttackError: a feature that is unknown, frozen, or named twice; the message lists the
            movable features.
    """
    if len(feature_of) != x0.shape[1]:
        raise AttackError(
            f"loss_surface: feature_of has {len(feature_of)} entries for rows of {x0.shape[1]}"
        )
    first, second = features
    if first == second:
        raise AttackError(f"loss_surface: two different features are needed, got {first!r} twice")
    cols_i, cols_j = _columns(envelope, feature_of, first), _columns(envelope, feature_of, second)
    n, width = x0.shape
    grid = [float(g) for g in grid]
    if not grid or n == 0:
        raise AttackError("loss_surface: needs at least one grid point and one event")
    device = envelope.device
    values = torch.tensor(grid, dtype=x0.dtype, device=device)
    gi, gj = torch.meshgrid(values, values, indexing="ij")
    points = torch.zeros(gi.numel(), width, dtype=x0.dtype, device=device)
    points[:, cols_i] = gi.reshape(-1, 1)
    points[:, cols_j] = gj.reshape(-1, 1)
    total = torch.zeros(len(points), dtype=torch.float64, device=device)
    w_total = 0.0
    per_batch = min(n, batch_size)
    chunk = max(1, batch_size // per_batch)
    with torch.no_grad():
        for start in range(0, n, per_batch):
            xb = x0[start : start + per_batch].to(device)
            lb = labels[start : start + per_batch].to(device)
            b = len(xb)
            wb = (
                torch.ones(b, dtype=torch.float64, device=device)
                if weights is None
                else weights[start : start + per_batch].to(device=device, dtype=torch.float64)
            )
            w_total += float(wb.sum())
            for p in range(0, len(points), chunk):
                k = len(points[p : p + chunk])
                rows = xb.expand(k, b, width).reshape(k * b, width)
                delta = points[p : p + chunk, None, :].expand(k, b, width).reshape(k * b, width)
                loss = model.loss(displaced(envelope, rows, delta, 1.0), lb.repeat(k))
                total[p : p + k] += (loss.double().view(k, b) * wb).sum(1)
    if w_total == 0.0:
        raise AttackError("loss_surface: the event weights sum to 0")
    return Surface(
        features=(first, second),
        grid_i=list(grid),
        grid_j=list(grid),
        loss=(total / w_total).view(len(grid), len(grid)).tolist(),
        events=n,
    )
