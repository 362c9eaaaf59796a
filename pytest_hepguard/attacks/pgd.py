"""``pgd``: projected gradient descent on the envelope (Madry et al.), steps in sigmas.

Each step moves every entry by ``step_size`` of its own up/down sigma along the sign of the
cross-entropy gradient and projects back onto the envelope box and the physical bounds. Integer
features keep a continuous iterate but the model always sees them rounded to whole steps (the
gradient at the rounded point drives the continuous iterate). The highest-loss point seen is
returned, per event. The gradient is exact or, with ``gradient: spsa``, estimated from forward
passes (see :mod:`pytest_hepguard.attacks.spsa`); losses then come from the same forward passes.
"""

from __future__ import annotations

import torch

from pytest_hepguard.attacks.base import GradientAttack, Perturbation, signed_step
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model


class PGD(GradientAttack):
    """L-infinity PGD in sigma units with optional uniform random start."""

    name = "pgd"

    def __init__(
        self,
        epsilon: float,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        gradient: str = "exact",
        spsa_directions: int = 32,
        spsa_delta: float = 0.01,
    ) -> None:
        super().__init__(epsilon, gradient, spsa_directions, spsa_delta)
        self.steps = int(steps)
        self.step_size = 2.5 * self.epsilon / self.steps if step_size is None else step_size
        self.random_start = random_start

    def perturb(
        self,
        model: Model,
        x0: torch.Tensor,
        labels: torch.Tensor,
        envelope: Envelope,
        generator: torch.Generator,
    ) -> Perturbation:
        eps = self.epsilon
        box = envelope.box(x0, eps)
        lo, hi = box
        up, down = envelope.sigmas(x0)
        x = x0
        if self.random_start:
            u = torch.rand(x0.shape, generator=generator, device=x0.device)
            x = envelope.project(x0, envelope.displace(x0, eps * (2 * u - 1)), box)
        best_x, best_loss = x0, None
        masked = None
        for step in range(self.steps):
            x_eval = envelope.project(x0, x, box)
            grad, loss = self.loss_gradient(model, x_eval, labels, envelope, generator)
            if step == 0:
                masked = self.masking(grad, envelope.movable(x0))
            best_x, best_loss = _keep_best(best_x, best_loss, x_eval, loss)
            x = torch.minimum(
                torch.maximum(x + signed_step(grad, up, down, self.step_size), lo), hi
            )
        x_eval = envelope.project(x0, x, box)
        best_x, _ = _keep_best(best_x, best_loss, x_eval, self.loss(model, x_eval, labels))
        return Perturbation(best_x, masked)


def _keep_best(
    best_x: torch.Tensor, best_loss: torch.Tensor | None, x: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per event, keep whichever of ``best_x`` and ``x`` has the higher loss."""
    if best_loss is None:
        return x, loss
    better = loss > best_loss
    return torch.where(better.unsqueeze(1), x, best_x), torch.where(better, loss, best_loss)
