"""``pgd``: projected gradient descent on the envelope (Madry et al.), steps in sigmas.

Each step moves every entry by ``step_size`` of its own up/down sigma along the sign of the
cross-entropy gradient and projects back onto the envelope box and the physical bounds. Integer
features keep a continuous iterate but the model always sees them rounded to whole steps (the
gradient at the rounded point drives the continuous iterate). The highest-loss point seen is
returned, per event.
"""

from __future__ import annotations

import torch

from pytest_hepguard.attacks.base import Attack, Perturbation, input_gradient, signed_step
from pytest_hepguard.attacks.base import zero_gradient as no_gradient
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model


class PGD(Attack):
    """L-infinity PGD in sigma units with optional uniform random start."""

    name = "pgd"

    def __init__(
        self,
        epsilon: float,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
    ) -> None:
        super().__init__(epsilon)
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
        for _ in range(self.steps):
            x_eval = envelope.project(x0, x, box)
            grad, loss = input_gradient(model, x_eval, labels)
            if masked is None:
                masked = no_gradient(grad, envelope.movable(x0))
            best_x, best_loss = _keep_best(best_x, best_loss, x_eval, loss)
            x = torch.minimum(
                torch.maximum(x + signed_step(grad, up, down, self.step_size), lo), hi
            )
        x_eval = envelope.project(x0, x, box)
        with torch.no_grad():
            loss = model.loss(x_eval, labels)
        best_x, _ = _keep_best(best_x, best_loss, x_eval, loss)
        return Perturbation(best_x, masked)


def _keep_best(
    best_x: torch.Tensor, best_loss: torch.Tensor | None, x: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per event, keep whichever of ``best_x`` and ``x`` has the higher loss."""
    if best_loss is None:
        return x, loss
    better = loss > best_loss
    return torch.where(better.unsqueeze(1), x, best_x), torch.where(better, loss, best_loss)
