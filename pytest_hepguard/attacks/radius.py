"""``radius``: the robustness radius of every event, the smallest epsilon that flips it.

Per event, bisection over PGD's budget: PGD at ``epsilon`` (the largest budget searched) first;
an event it cannot flip has a radius above ``epsilon`` (reported as infinite); for the others the
interval [0, epsilon] is halved ``bisections`` times, each round one PGD run with a per-event
epsilon, so the radius is known to ``epsilon / 2**bisections`` sigmas. The perturbed sample is
each event at the PGD point of its radius (the nominal point where none flips), so the check's
fooling rate is the share of events with a radius up to ``epsilon``. The distribution of radii
per class and its median answer "how many sigma of mis-modelling does it take".
"""

from __future__ import annotations

import numpy as np
import torch

from pytest_hepguard.attacks.base import Sample, SampleAttack, SamplePerturbation
from pytest_hepguard.attacks.pgd import PGD
from pytest_hepguard.models.base import Model

#: Quantiles of the radius distribution in the report.
QUANTILES = (0.16, 0.5, 0.84)


class Radius(SampleAttack):
    """Robustness radius by bisection over PGD's epsilon (sigmas); see the module docstring."""

    name = "radius"

    def __init__(self, epsilon: float, steps: int = 10, bisections: int = 6) -> None:
        super().__init__(epsilon)
        self.steps = int(steps)
        self.bisections = int(bisections)

    def _pgd(
        self,
        model: Model,
        sample: Sample,
        x0: torch.Tensor,
        labels: torch.Tensor,
        eps: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        attack = PGD(self.epsilon, steps=self.steps)
        attack.epsilon = eps.unsqueeze(1)  # per-event budgets broadcast over the features
        attack.step_size = 2.5 * attack.epsilon / self.steps
        return attack.perturb(model, x0, labels, sample.envelope, generator).x

    def perturb_sample(
        self, model: Model, sample: Sample, generator: torch.Generator
    ) -> SamplePerturbation:
        x_all = sample.x0.clone()
        radius = np.full(len(sample.x0), np.inf)
        for start, stop in sample.batches():
            x0 = sample.x0[start:stop].to(sample.device)
            labels = sample.labels[start:stop].to(sample.device)
            nominal = sample.nominal_decisions[start:stop].to(sample.device)
            hi = torch.full((len(x0),), self.epsilon, device=x0.device)
            best = self._pgd(model, sample, x0, labels, hi, generator)
            with torch.no_grad():
                found = sample.decide(model, best) != nominal
            lo = torch.zeros_like(hi)
            for _ in range(self.bisections):
                mid = (lo + hi) / 2
                x = self._pgd(model, sample, x0, labels, mid, generator)
                with torch.no_grad():
                    ok = found & (sample.decide(model, x) != nominal)
                best = torch.where(ok.unsqueeze(1), x, best)
                hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
            x_all[start:stop] = torch.where(found.unsqueeze(1), best, x0).cpu()
            radius[start:stop] = torch.where(found, hi, torch.inf).cpu().numpy()
        return SamplePerturbation(x_all, details={"radius": radius})
