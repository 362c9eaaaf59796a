"""``fgsm``: one signed-gradient step of epsilon sigmas (Goodfellow et al.; arXiv 2203.13890).

Untargeted: it raises the cross-entropy of the true label, each entry moving by epsilon times its
own up or down sigma, then projected onto the envelope and the bounds.
"""

from __future__ import annotations

import torch

from pytest_hepguard.attacks.base import Attack, Perturbation, input_gradient, signed_step
from pytest_hepguard.attacks.base import zero_gradient as no_gradient
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model


class FGSM(Attack):
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
        grad, _ = input_gradient(model, x0, labels)
        up, down = envelope.sigmas(x0)
        box = envelope.box(x0, self.epsilon)
        x = envelope.project(x0, x0 + signed_step(grad, up, down, self.epsilon), box)
        return Perturbation(x, no_gradient(grad, envelope.movable(x0)))
