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

from pytest_hepguard.attacks.base import GradientAttack, Perturbation, ascend
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
        up, down = envelope.sigmas(x0)
        box = envelope.limits(x0, eps * up, eps * down)  # envelope.box, sigmas computed once
        step_up, step_down = self.step_size * up, self.step_size * down
        x = x0
        if self.random_start:
            u = torch.rand(x0.shape, generator=generator, device=x0.device)
            x = envelope.project(x0, envelope.displace(x0, eps * (2 * u - 1), (up, down)), box)
        best = _Best(x0)
        rounded = envelope.rounding(x0, box)
        masked = None
        for step in range(self.steps):
            # ascent steps stay inside the box; only integer offsets need rounding
            x_eval = envelope.project(x0, x, box) if step == 0 else rounded(x)
            grad, loss = self.loss_gradient(model, x_eval, labels, envelope, generator)
            if step == 0:
                masked = self.masking(grad, envelope.movable(x0))
            best.keep(x_eval, loss)
            x = ascend(x, grad, step_up, step_down, box)
        x_eval = rounded(x)
        best.keep(x_eval, self.loss(model, x_eval, labels))
        return Perturbation(best.x, masked)


class _Best:
    """Per event, the point with the highest loss seen so far (``x0`` until a loss is seen)."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x = x0
        self.loss: torch.Tensor | None = None

    def keep(self, x: torch.Tensor, loss: torch.Tensor) -> None:
        """Replace the rows where ``loss`` [batch] beats the best so far by ``x``'s rows."""
        if self.loss is None:
            self.x, self.loss = x.clone(), loss.clone()
            return
        rows = torch.nonzero(loss > self.loss).flatten()  # only the improved rows are copied
        self.x.index_copy_(0, rows, x.index_select(0, rows))
        self.loss.index_copy_(0, rows, loss.index_select(0, rows))
