"""The one interface every attack implements (torchattacks' shape: one class, one call).

``attack.perturb(model, x0, labels, envelope, generator) -> Perturbation`` on one batch
``x0`` [batch, n_features] already on the model's device. The result always lies inside
``envelope.box(x0, epsilon)``; attacks never leave the device inside their step loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from pytest_hepguard.attacks.spsa import score_loss, spsa_gradient
from pytest_hepguard.decision import Decision
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model
from pytest_hepguard.uncertainties import ConstraintSpec


@dataclass
class Perturbation:
    """A perturbed batch.

    x: perturbed inputs [batch, n_features].
    zero_gradient: bool [batch], events whose input gradient was exactly zero on every movable
        entry at the first gradient evaluation (gradient masking); ``None`` without exact
        gradients (random noise, SPSA estimates).
    """

    x: torch.Tensor
    zero_gradient: torch.Tensor | None = None


def input_gradient(
    model: Model, x: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the per-event cross-entropy w.r.t. ``x`` [batch, n_features], and the loss.

    A model whose output does not depend differentiably on its input gets a zero gradient
    (reported as gradient masking), not an error.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = model.loss(x, labels)
        if not loss.requires_grad:
            return torch.zeros_like(x), loss.detach()
        (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    return (torch.zeros_like(x) if grad is None else grad), loss.detach()


def signed_step(
    grad: torch.Tensor, up: torch.Tensor, down: torch.Tensor, size: float = 1.0
) -> torch.Tensor:
    """A step of ``size`` sigmas along ``sign(grad)`` using the up or down sigma of each entry
    (0 where the gradient is 0 or NaN). Loops pass ``size * up`` and ``size * down`` once per
    batch and ``size=1``.

    Float arithmetic only (``max(sign, 0) * up + min(sign, 0) * down``): the same numbers as
    selecting with boolean masks, which on a CPU cost several times more than the float ops.
    """
    sign = torch.sign(grad).nan_to_num_(0.0)
    step = sign.clamp_min(0.0).mul_(up).add_(sign.clamp_max_(0.0).mul_(down))
    return step if size == 1.0 else step.mul_(size)


def ascend(
    x: torch.Tensor,
    grad: torch.Tensor,
    up: torch.Tensor,
    down: torch.Tensor,
    box: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """One step of a sign-gradient ascent: ``x`` moved along ``sign(grad)`` by ``up`` or
    ``down`` (the step sizes, feature units [batch, n_features]) and clamped to ``box``."""
    return signed_step(grad, up, down).add_(x).clamp_(box[0], box[1])


def zero_gradient(grad: torch.Tensor, movable: torch.Tensor) -> torch.Tensor:
    """Bool [batch]: no movable entry of the event has a non-zero gradient."""
    return ~((grad != 0) & movable).any(1)


class Attack(ABC):
    """Base class; subclasses take their parameters as keyword arguments (see ``PARAMETERS``)."""

    name: ClassVar[str]

    def __init__(self, epsilon: float) -> None:
        self.epsilon = float(epsilon)

    @abstractmethod
    def perturb(
        self,
        model: Model,
        x0: torch.Tensor,
        labels: torch.Tensor,
        envelope: Envelope,
        generator: torch.Generator,
    ) -> Perturbation:
        """Perturb ``x0`` [batch, n_features] inside ``envelope`` at size ``self.epsilon``.

        ``labels`` [batch] int64 are the classes whose cross-entropy gradient attacks maximise.
        """


class GradientAttack(Attack):
    """An attack driven by the input gradient of the cross-entropy: exact (autograd, through
    :meth:`Model.raw`) or estimated by SPSA from forward passes of :meth:`Model.score` alone.

    Args:
        epsilon: attack size in sigmas.
        gradient: ``"exact"`` or ``"spsa"``.
        spsa_directions: random directions per SPSA estimate (2 forward passes each).
        spsa_delta: SPSA finite-difference half-step in sigmas.
    """

    def __init__(
        self,
        epsilon: float,
        gradient: str = "exact",
        spsa_directions: int = 32,
        spsa_delta: float = 0.01,
    ) -> None:
        super().__init__(epsilon)
        self.gradient = gradient
        self.spsa_directions = int(spsa_directions)
        self.spsa_delta = float(spsa_delta)

    def loss_gradient(
        self,
        model: Model,
        x: torch.Tensor,
        labels: torch.Tensor,
        envelope: Envelope,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient ``dL/dx`` [batch, n_features] of the cross-entropy of ``labels`` [batch] at
        ``x`` [batch, n_features], exact or estimated, and the loss [batch]."""
        if self.gradient == "spsa":
            return spsa_gradient(
                model, x, labels, envelope, generator, self.spsa_directions, self.spsa_delta
            )
        return input_gradient(model, x, labels)

    def masking(self, grad: torch.Tensor, movable: torch.Tensor) -> torch.Tensor | None:
        """The gradient-masking flags [batch] of :func:`zero_gradient` for an exact gradient;
        ``None`` for an SPSA estimate, where an all-zero estimate means nothing."""
        return None if self.gradient == "spsa" else zero_gradient(grad, movable)

    def loss(self, model: Model, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy [batch] at ``x`` without gradient, from the model the gradient comes
        from (:meth:`Model.raw` for exact gradients, :meth:`Model.score` for SPSA)."""
        if self.gradient == "spsa":
            return score_loss(model, x, labels)
        with torch.no_grad():
            return model.loss(x, labels)


@dataclass
class Sample:
    """What an attack on the whole sample sees (the hidden-systematics attack, the worst-case
    cascade, the robustness radius): their constraints or bookkeeping span every event.

    x0: nominal rows [n, n_features] on the CPU (moved to ``device`` a batch at a time).
    labels: int64 [n] classes whose cross-entropy gradient attacks use (true labels where known).
    nominal_decisions: int64 [n] decisions on nominal input.
    decision: the resolved decision (discriminant, cut).
    envelope: the per-feature envelope on ``device``.
    feature_of: the feature of each row entry [n_features] (constituents of one feature share it).
    names: each row entry's name [n_features] (``trk_pt[3]`` for a constituent).
    constraints: the uncertainty file's ``constraints:`` (:class:`ConstraintSpec`).
    """

    x0: torch.Tensor
    labels: torch.Tensor
    nominal_decisions: torch.Tensor
    decision: Decision
    envelope: Envelope
    feature_of: tuple[str, ...]
    names: tuple[str, ...]
    constraints: ConstraintSpec
    batch_size: int
    device: torch.device
    progress: Callable[[int, int], None] | None = None

    def batches(self) -> Iterator[tuple[int, int]]:
        """(start, stop) of each batch."""
        n = len(self.x0)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            yield start, stop
            if self.progress is not None:
                self.progress(stop, n)

    def decide(self, model: Model, x: torch.Tensor) -> torch.Tensor:
        """Decisions [batch] of ``model`` at rows ``x`` (the deployed runtime's outputs)."""
        return self.decision.decide(model.probabilities(model.score(x)))


@dataclass
class SamplePerturbation:
    """A perturbed sample: rows [n, n_features] on the CPU, the numbers the attack reports
    beside the usual ones (``details``: a certificate, per-attack shares, radii ...), and what
    makes the result invalid (``failures``) or weaker (``warnings``)."""

    x: torch.Tensor
    details: dict[str, object] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SampleAttack(ABC):
    """An attack that perturbs the whole sample at once (subclasses take their parameters as
    keyword arguments, see ``PARAMETERS``)."""

    name: ClassVar[str]

    def __init__(self, epsilon: float) -> None:
        self.epsilon = float(epsilon)

    @abstractmethod
    def perturb_sample(
        self, model: Model, sample: Sample, generator: torch.Generator
    ) -> SamplePerturbation:
        """Perturb every event of ``sample`` inside ``sample.envelope`` at ``self.epsilon``."""
