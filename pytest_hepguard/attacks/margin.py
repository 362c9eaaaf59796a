"""The margin ascent: a sign-gradient search for the smallest flip of each event's decision.

Where PGD climbs the cross-entropy of the true label, this climbs the decision itself: the flip
margin (:meth:`Decision.flip_margin`, the log-odds distance to the cut on the far side, or the
Carlini-Wagner margin for argmax decisions), or the discriminant's log-odds up or down. It
starts at the nominal point, takes PGD's signed steps in sigma units inside the envelope box,
and freezes each event at the first point where its decision flips; each flip is then shrunk by
bisection along its own direction to the smallest fraction that still flips under the deployed
runtime's outputs. The hidden-systematics attack draws its candidates from it and the
worst-case cascade ends with it (AutoAttack's cascade likewise follows cross-entropy with a
margin loss).
"""

from __future__ import annotations

import torch

from pytest_hepguard.attacks.base import Sample, ascend
from pytest_hepguard.models.base import Model

#: Bisection rounds that shrink each flip along its own direction (1/128 of the step).
SHRINK_ROUNDS = 7


class MarginAscent:
    """Sign-gradient ascent of the flip margin (``direction="fool"``) or of the discriminant's
    log-odds (``"up"``/``"down"``), ``steps`` steps of ``step_size`` sigmas (default
    ``2.5 * epsilon / steps``) inside the box of size ``epsilon``."""

    def __init__(
        self, epsilon: float, steps: int, step_size: float | None = None, direction: str = "fool"
    ) -> None:
        self.epsilon = float(epsilon)
        self.steps = int(steps)
        self.step_size = 2.5 * self.epsilon / self.steps if step_size is None else step_size
        self.direction = direction

    def objective(
        self, model: Model, sample: Sample, x: torch.Tensor, nominal: torch.Tensor
    ) -> torch.Tensor:
        """What the ascent climbs [batch] at rows ``x``, differentiable."""
        log_probs = model.log_probabilities(model.raw(x))
        if self.direction == "fool":
            return sample.decision.flip_margin(log_probs, nominal)
        sign = 1.0 if self.direction == "up" else -1.0
        return sign * sample.decision.log_odds(log_probs)

    def candidates(
        self,
        model: Model,
        sample: Sample,
        x0: torch.Tensor,
        nominal: torch.Tensor,
        box: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For one batch ``x0`` [batch, n] with ``nominal`` decisions [batch]: the candidate
        points [batch, n], the same flips extended along their direction to the edge of the
        box ([batch, n]; where that still flips, else the candidate itself; for ``up``/``down``
        the candidates again), and their priorities [batch] float64 (lower first; inf where the
        event is no candidate): the summed |delta| in sigmas of a flip, or minus the gain of
        the objective per summed sigma."""
        env = sample.envelope
        up, down = env.sigmas(x0)
        step_up, step_down = self.step_size * up, self.step_size * down
        rounded = env.rounding(x0, box)
        x, best = x0, x0
        done = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        best_obj: torch.Tensor | None = None
        for step in range(self.steps + 1):
            # ascent steps stay inside the box; only integer offsets need rounding
            x_eval = env.project(x0, x, box) if step == 0 else rounded(x)
            x_eval = x_eval.detach().requires_grad_(True)
            with torch.enable_grad():
                obj = self.objective(model, sample, x_eval, nominal)
                (grad,) = torch.autograd.grad(obj.sum(), x_eval)
            obj = obj.detach()
            if self.direction == "fool":
                newly = (obj > 0) & ~done
                best = _rows_from(best, x_eval.detach(), newly)
                done |= newly
                grad = grad.masked_fill_(done.unsqueeze(1), 0.0)
            else:
                better = torch.ones_like(done) if best_obj is None else obj > best_obj
                best = _rows_from(best, x_eval.detach(), better)
                best_obj = obj if best_obj is None else torch.maximum(best_obj, obj)
            x = ascend(x, grad, step_up, step_down, box)
        if self.direction == "fool":
            best, flipped = _shrink(model, sample, x0, nominal, best, done, box)
            delta = env.in_sigmas(x0, best).abs()
            extended = _extend(model, sample, x0, nominal, best, flipped, box, self.epsilon)
            cost = delta.sum(1).double()
            return best, extended, torch.where(flipped, cost, torch.inf)
        assert best_obj is not None
        with torch.no_grad():
            gain = best_obj - self.objective(model, sample, x0, nominal)
        cost = env.in_sigmas(x0, best).abs().sum(1).clamp_min(1e-12)
        return best, best, torch.where(gain > 0, -(gain / cost).double(), torch.inf)


def _rows_from(x: torch.Tensor, other: torch.Tensor, take: torch.Tensor) -> torch.Tensor:
    """``x`` [batch, n] with the rows where ``take`` [batch] replaced by ``other``'s (a new
    tensor; row copies instead of an elementwise select)."""
    rows = torch.nonzero(take).flatten()
    return x.index_copy(0, rows, other.index_select(0, rows))


def _extend(
    model: Model,
    sample: Sample,
    x0: torch.Tensor,
    nominal: torch.Tensor,
    x: torch.Tensor,
    flipped: torch.Tensor,
    box: tuple[torch.Tensor, torch.Tensor],
    epsilon: float,
) -> torch.Tensor:
    """Each flip ``x`` scaled along its own direction until its largest displacement is
    ``epsilon`` sigmas (where the scaled point still flips; else ``x``)."""
    env = sample.envelope
    with torch.no_grad():
        reach = env.in_sigmas(x0, x).abs().amax(1)
        scale = torch.where(reach > 0, epsilon / reach.clamp_min(1e-12), 1.0)
        far = env.project(x0, x0 + scale.unsqueeze(1) * (x - x0), box)
        ok = flipped & (sample.decide(model, far) != nominal)
        return torch.where(ok.unsqueeze(1), far, x)


def _shrink(
    model: Model,
    sample: Sample,
    x0: torch.Tensor,
    nominal: torch.Tensor,
    x: torch.Tensor,
    found: torch.Tensor,
    box: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each flip ``x`` (where ``found``) moved back along its own direction to the smallest
    fraction (bisection) that still flips under the deployed runtime; returns the points and
    which of them flip."""
    env = sample.envelope
    with torch.no_grad():

        def at(alpha: torch.Tensor) -> torch.Tensor:
            return env.project(x0, x0 + alpha.unsqueeze(1) * (x - x0), box)

        def flips(point: torch.Tensor) -> torch.Tensor:
            return found & (sample.decide(model, point) != nominal)

        lo = torch.zeros(len(x0), device=x0.device)
        hi = torch.ones(len(x0), device=x0.device)
        flipped = flips(x)
        for _ in range(SHRINK_ROUNDS):
            mid = (lo + hi) / 2
            ok = flips(at(mid))
            hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
        shrunk = at(hi)
        keep = flips(shrunk)
        return torch.where(keep.unsqueeze(1), shrunk, x), flipped | keep
