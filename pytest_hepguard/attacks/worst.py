"""``worst``: the worst case over the audit's attacks, in the spirit of AutoAttack's cascade.

The attacks run in order of cost (random noise, FGSM, PGD on the cross-entropy, then the margin
ascent of :mod:`pytest_hepguard.attacks.margin` that climbs the decision itself, as AutoAttack
follows its cross-entropy attack with a margin loss), each only on the events not yet fooled;
an event counts as fooled by the first attack that flips its decision, so the worst-case
fooling rate is the share of events any of them flips, and each attack's contribution is the
share it added. The hidden-systematics attack is not part of the cascade: its constraints bind
the whole sample, so its flips are a subset of what the envelope alone allows.
"""

from __future__ import annotations

import time

import torch

from pytest_hepguard.attacks.base import Sample, SampleAttack, SamplePerturbation
from pytest_hepguard.attacks.fgsm import FGSM
from pytest_hepguard.attacks.margin import MarginAscent
from pytest_hepguard.attacks.pgd import PGD
from pytest_hepguard.attacks.random_noise import RandomNoise
from pytest_hepguard.models.base import Model


class Worst(SampleAttack):
    """The cascade random -> FGSM -> PGD -> margin ascent at one epsilon (sigmas); ``steps``
    are PGD's and the margin ascent's, the gradient options go to FGSM and PGD (the margin
    ascent needs exact gradients and is left out for a forward-only model)."""

    name = "worst"

    def __init__(
        self,
        epsilon: float,
        steps: int = 20,
        gradient: str = "exact",
        spsa_directions: int = 32,
        spsa_delta: float = 0.01,
    ) -> None:
        super().__init__(epsilon)
        grad = {"gradient": gradient, "spsa_directions": spsa_directions, "spsa_delta": spsa_delta}
        self.cascade = (
            RandomNoise(self.epsilon),
            FGSM(self.epsilon, **grad),
            PGD(self.epsilon, steps=steps, **grad),
        )
        self.margin = MarginAscent(self.epsilon, steps) if gradient == "exact" else None

    def _stages(self) -> list[str]:
        return [a.name for a in self.cascade] + (["margin"] if self.margin is not None else [])

    def perturb_sample(
        self, model: Model, sample: Sample, generator: torch.Generator
    ) -> SamplePerturbation:
        x_all = sample.x0.clone()
        stages = self._stages()
        fooled = [0] * len(stages)
        seconds = [0.0] * len(stages)
        for start, stop in sample.batches():
            x0 = sample.x0[start:stop].to(sample.device)
            labels = sample.labels[start:stop].to(sample.device)
            nominal = sample.nominal_decisions[start:stop].to(sample.device)
            x = x0.clone()
            todo = torch.arange(len(x0), device=x0.device)
            for i, attack in enumerate(self.cascade):
                if len(todo) == 0:
                    break
                t0 = time.perf_counter()
                pert = attack.perturb(model, x0[todo], labels[todo], sample.envelope, generator)
                with torch.no_grad():
                    flipped = sample.decide(model, pert.x) != nominal[todo]
                x[todo[flipped]] = pert.x[flipped]
                fooled[i] += int(flipped.sum())
                todo = todo[~flipped]
                seconds[i] += time.perf_counter() - t0
            if self.margin is not None and len(todo):
                t0 = time.perf_counter()
                sub = x0[todo]
                box = sample.envelope.box(sub, self.epsilon)
                points, _, priority = self.margin.candidates(model, sample, sub, nominal[todo], box)
                flipped = torch.isfinite(priority)
                x[todo[flipped]] = points[flipped]
                fooled[-1] += int(flipped.sum())
                seconds[-1] += time.perf_counter() - t0
            x_all[start:stop] = x.cpu()
        total = sum(fooled)
        return SamplePerturbation(
            x_all,
            details={
                "cascade": [
                    {
                        "attack": name,
                        "fooled": n,
                        "share": n / total if total else 0.0,
                        "seconds": t,
                    }
                    for name, n, t in zip(stages, fooled, seconds, strict=True)
                ]
            },
        )
