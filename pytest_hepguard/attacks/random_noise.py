"""``random``: noise inside the envelope, the baseline every other fooling rate is compared to."""

from __future__ import annotations

import torch

from pytest_hepguard.attacks.base import Attack, Perturbation
from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model


class RandomNoise(Attack):
    """Independent noise per entry, in sigmas.

    ``gaussian``: N(0, epsilon) sigmas, clipped to +-epsilon (a 1-sigma smearing at epsilon 1);
    ``uniform``: U(-epsilon, epsilon); ``sign``: +-epsilon with equal probability (the corners
    FGSM also reaches). Integer features round to whole steps; bounds are respected.
    """

    name = "random"

    def __init__(self, epsilon: float, distribution: str = "gaussian") -> None:
        super().__init__(epsilon)
        self.distribution = distribution

    def perturb(
        self,
        model: Model,
        x0: torch.Tensor,
        labels: torch.Tensor,
        envelope: Envelope,
        generator: torch.Generator,
    ) -> Perturbation:
        eps = self.epsilon
        shape, dev = x0.shape, x0.device
        if self.distribution == "gaussian":
            delta = (eps * torch.randn(shape, generator=generator, device=dev)).clamp(-eps, eps)
        elif self.distribution == "uniform":
            delta = eps * (2 * torch.rand(shape, generator=generator, device=dev) - 1)
        else:
            delta = eps * torch.randint(0, 2, shape, generator=generator, device=dev) * 2.0 - eps
        box = envelope.box(x0, eps)
        return Perturbation(envelope.project(x0, envelope.displace(x0, delta), box))
