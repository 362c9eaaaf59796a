"""``fgsm``: one signed-gradient step of epsilon sigmas (Goodfellow et al.; arXiv 2203.13890).

Untargeted: it raises the cross-entropy of the true label, each entry moving by epsilon times its
own up or down sigma, then projected onto the envelope and the bounds. The gradient is exact or,
with ``gradient: spsa``, estimated from forward passes (see :mod:`pytest_hepguard.attacks.spsa`).
"""

from __future__ import annotations

import torch

from pytest_hepguard.attacks.base import GradientAttack, Perturbation, signed_step
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model


class FGSM(GradientAttack):
    """Fast gradient sign method in sigma units."""

    name = "fgsm"

    def perturb(
        self,
        model: Model,
        x0: torch.Tensor,
        labels: torch.Tensor,
        envelope: Envelope,
        generator: torch.Generator,
    ) -> Perturbation:
        grad, _ = self.loss_gradient(model, x0, labels, envelope, generator)
        up, down = envelope.sigmas(x0)
        box = envelope.box(x0, self.epsilon)
        x = envelope.project(x0, x0 + signed_step(grad, up, down, self.epsilon), box)
        return Perturbation(x, self.masking(grad, envelope.movable(x0)))
