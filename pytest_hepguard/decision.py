"""From class probabilities to the discriminant and the decision (DESIGN.md "fooling rate").

- discriminant: an output column, a ratio of summed columns (BvL = P(b) / (P(b) + P(light))), or,
  for ``argmax`` decisions, the summed probability of the signal classes.
- decision: with a working point, ``discriminant > cut`` (1 = tagged, 0 = not); without one, the
  argmax class (for a one-output model that is ``p > 0.5``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pytest_hepguard.exceptions import DataError, ModelError
from pytest_hepguard.metrics import cut_for_efficiency
from pytest_hepguard.uncertainties import DecisionSpec, Ratio

#: Floor of a ratio discriminant's denominator.
_TINY = 1e-30
#: How close to 0 or 1 a discriminant may come when its log-odds are taken.
_EPS = 1e-7


@dataclass(frozen=True)
class Decision:
    """A :class:`DecisionSpec` resolved against a model with ``n_classes`` probability columns."""

    n_classes: int
    discriminant: int | Ratio | None  # None: summed signal probability with argmax decisions
    signal: tuple[int, ...]
    background: tuple[int, ...]
    cut: float | None
    assumptions: tuple[str, ...]

    @classmethod
    def resolve(cls, spec: DecisionSpec, n_classes: int, output_kind: str) -> Decision:
        """Check ``spec`` against the model's class count and fill the defaults.

        The cut of an efficiency working point is set later by :meth:`with_efficiency_cut`.
        """
        notes = [f"model outputs read as {output_kind}"]
        if spec.classes is not None and len(spec.classes) != n_classes:
            raise ModelError(
                f"decision.classes lists {len(spec.classes)} classes "
                f"({', '.join(spec.classes)}) but the model gives {n_classes} probability columns"
            )
        for key, idx in (
            ("decision.signal", spec.signal or ()),
            ("decision.background", spec.background or ()),
        ):
            bad = [i for i in idx if i >= n_classes]
            if bad:
                raise ModelError(f"{key}: class index {bad[0]} >= the model's {n_classes} classes")
        disc = spec.discriminant
        if isinstance(disc, int) and disc >= n_classes:
            raise ModelError(
                f"decision.discriminant: column {disc} but the model has {n_classes} columns"
            )
        if isinstance(disc, Ratio) and max(disc.numerator + disc.denominator) >= n_classes:
            raise ModelError(f"decision.discriminant: ratio uses a class >= {n_classes}")
        signal = spec.signal
        if signal is None:
            signal = (1,) if n_classes == 2 else (0,)
            notes.append(f"signal = class {signal[0]} (default)")
        background = spec.background
        if background is None:
            background = tuple(i for i in range(n_classes) if i not in signal)
        if disc is None:
            if n_classes == 2:
                disc = 1
                notes.append("discriminant = the model's single output (default)")
            else:
                notes.append("discriminant = summed signal probability; decision = argmax")
        elif disc == "argmax":
            disc = None
        wp = spec.working_point
        cut = wp.cut if wp is not None else None
        if wp is None:
            notes.append("decision = argmax class (no working point)")
        elif disc is None:
            raise ModelError(
                "decision.working_point needs a discriminant (a column or a ratio), not argmax"
            )
        return cls(n_classes, disc, tuple(signal), tuple(background), cut, tuple(notes))

    def with_efficiency_cut(
        self,
        spec: DecisionSpec,
        disc_nominal: np.ndarray,
        labels: np.ndarray | None,
        weights: np.ndarray | None,
    ) -> Decision:
        """Set the cut that gives ``working_point.efficiency`` on nominal signal events."""
        wp = spec.working_point
        if wp is None or wp.efficiency is None:
            return self
        if labels is None:
            raise DataError("decision.working_point.efficiency needs labels (data.label)")
        sig = self.is_signal(labels)
        if not sig.any():
            raise DataError("decision.working_point.efficiency: the sample has no signal events")
        w = None if weights is None else weights[sig]
        return self.at_efficiency(
            wp.efficiency, cut_for_efficiency(disc_nominal[sig], w, wp.efficiency)
        )

    def at_efficiency(self, efficiency: float, cut: float) -> Decision:
        """This decision with ``cut``, the cut that gives signal ``efficiency`` on nominal
        input (said in its assumptions)."""
        note = f"cut {cut:.6g} gives signal efficiency {efficiency:g} on nominal input"
        return Decision(
            self.n_classes,
            self.discriminant,
            self.signal,
            self.background,
            cut,
            (*self.assumptions, note),
        )

    @property
    def uses_cut(self) -> bool:
        """True when decisions are ``discriminant > cut`` rather than argmax."""
        return self.cut is not None

    def discriminant_of(self, probs: torch.Tensor) -> torch.Tensor:
        """Discriminant [batch] from probabilities [batch, n_classes]."""
        d = self.discriminant
        if isinstance(d, int):
            return probs[:, d]
        if isinstance(d, Ratio):
            num = probs[:, list(d.numerator)].sum(1)
            den = probs[:, list(d.denominator)].sum(1)
            return num / den.clamp_min(_TINY)
        return probs[:, list(self.signal)].sum(1)

    def log_odds(self, log_probs: torch.Tensor) -> torch.Tensor:
        """``log(D / (1 - D))`` [batch] of the discriminant D, from log-probabilities
        [batch, n_classes], differentiable and finite where D saturates at 0 or 1 (an increasing
        function of D: attacks climb it instead of D)."""
        d = self.discriminant
        if isinstance(d, Ratio):
            num, den = list(d.numerator), list(d.denominator)
            rest = [c for c in den if c not in num]
            if rest and set(num) <= set(den):
                return log_probs[:, num].logsumexp(1) - log_probs[:, rest].logsumexp(1)
            disc = self.discriminant_of(log_probs.exp()).clamp(_EPS, 1 - _EPS)
            return disc.log() - (-disc).log1p()
        inside = [d] if isinstance(d, int) else list(self.signal)
        outside = [c for c in range(log_probs.shape[1]) if c not in inside]
        return log_probs[:, inside].logsumexp(1) - log_probs[:, outside].logsumexp(1)

    def flip_margin(self, log_probs: torch.Tensor, nominal: torch.Tensor) -> torch.Tensor:
        """How far [batch] each event is past flipping its ``nominal`` decision [batch]:
        positive once the decision differs. With a cut, the log-odds distance to the cut on
        the far side; with argmax, the best other class's log-probability minus the nominal
        class's (the Carlini-Wagner margin). Differentiable."""
        if self.cut is not None:
            cut = min(max(self.cut, _EPS), 1 - _EPS)
            gap = self.log_odds(log_probs) - math.log(cut / (1 - cut))
            return torch.where(nominal == 1, -gap, gap)
        own = log_probs.gather(1, nominal.unsqueeze(1)).squeeze(1)
        others = log_probs.scatter(1, nominal.unsqueeze(1), -math.inf)
        return others.amax(1) - own

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Decision [batch] int64: 1/0 (tagged or not) with a cut, else the argmax class."""
        if self.cut is not None:
            return (self.discriminant_of(probs) > self.cut).long()
        return probs.argmax(1)

    def is_signal(self, labels: np.ndarray) -> np.ndarray:
        """Bool [n]: labels in the signal classes."""
        return np.isin(labels, self.signal)

    def is_background(self, labels: np.ndarray) -> np.ndarray:
        """Bool [n]: labels in the background classes."""
        return np.isin(labels, self.background)

    def correct(self, decisions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Bool [n]: events classified correctly on nominal input.

        argmax: decision == label. Cut: tagged signal or untagged background; events whose label is
        neither signal nor background are never counted as correct.
        """
        if self.cut is None:
            return decisions == labels
        sig, bkg = self.is_signal(labels), self.is_background(labels)
        return (sig & (decisions == 1)) | (bkg & (decisions == 0))
