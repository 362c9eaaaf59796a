"""One-line robustness properties for hypothesis tests: the ``hepguard_properties`` fixture.

:class:`Properties` applies a drawn :class:`~pytest_hepguard.strategies.Displacement` or
:class:`~pytest_hepguard.strategies.NuisanceShift` to events of the audited sample under the
envelope rules every attack obeys (physical bounds, whole integer steps, sentinels and frozen
features untouched), runs the model, and checks a property. A broken property raises an
``AssertionError`` that reads in sigmas per feature, and is recorded as a counterexample; the last
one of a test (hypothesis replays the shrunk, minimal example last) reaches the JSON, HTML and
terminal reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pytest_hepguard.attacks.systematic import correlated_shift
from pytest_hepguard.audit import Auditor
from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.report.terminal import describe_counterexample
from pytest_hepguard.strategies import Displacement, NuisanceShift

Change = Displacement | NuisanceShift


#: Bisection rounds that scale a broken change down along its direction (resolution 1/4096).
BISECTIONS = 12


def _scaled(change: Change, factor: float) -> Change:
    """``change`` with every displacement (or theta) times ``factor``."""
    if isinstance(change, NuisanceShift):
        return NuisanceShift({g: factor * v for g, v in change.theta.items()})
    return Displacement({f: factor * v for f, v in change.sigmas.items()})


class PropertyModelError(HepguardError):
    """The model raised on a perturbed event; the message names the event and the change."""


@dataclass(frozen=True)
class Outcome:
    """The model on events before and after a change: discriminants and decisions [k]."""

    discriminant_before: np.ndarray
    discriminant_after: np.ndarray
    decision_before: np.ndarray
    decision_after: np.ndarray


@dataclass(frozen=True)
class Counterexample:
    """A broken property, as it reaches the report."""

    test: str
    property: str
    event: int
    label: str | None
    change: dict[str, float]  # feature -> sigmas, or group -> theta
    kind: str  # "displacement" or "nuisance shift"
    discriminant_before: float
    discriminant_after: float
    decision_before: int
    decision_after: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:
        return describe_counterexample(self.to_dict())


class Properties:
    """The ``hepguard_properties`` fixture: properties over events and drawn changes.

    Args:
        auditor: the session's auditor (model, sample, envelope, decision).
        record: called with each broken property's :class:`Counterexample`.
        current_test: gives the node id of the running test (for the record).
    """

    def __init__(
        self,
        auditor: Auditor,
        record: Callable[[Counterexample], None] | None = None,
        current_test: Callable[[], str] | None = None,
    ) -> None:
        self.auditor = auditor
        self._record = record
        self._current_test = current_test or (lambda: "")
        self._groups = {g.name: g for g in auditor.nuisance_groups()}

    # -- changes ----------------------------------------------------------------------------

    def rows(
        self, event: int | Sequence[int], change: Change | Sequence[Change]
    ) -> tuple[list[int], torch.Tensor]:
        """The event indices [k] and their changed rows [k, n_features] (model's device) of
        ``event`` (an index or k indices) under ``change`` (one for all, or one per event)."""
        index = [int(e) for e in np.atleast_1d(np.asarray(event))]
        changes = list(change) if isinstance(change, Sequence) else [change] * len(index)
        if len(changes) != len(index):
            raise HepguardError(f"{len(changes)} changes for {len(index)} events")
        x0 = torch.from_numpy(self.auditor.events.features[index]).to(self.auditor.device)
        return index, torch.cat([self._apply(x0[i : i + 1], c) for i, c in enumerate(changes)])

    def _apply(self, x0: torch.Tensor, change: Change) -> torch.Tensor:
        if isinstance(change, NuisanceShift):
            unknown = [g for g in change.theta if g not in self._groups]
            if unknown:
                raise HepguardError(
                    f"unknown group(s) {', '.join(unknown)}; the groups are "
                    f"{', '.join(self._groups)}"
                )
            names = list(change.theta)
            theta = torch.tensor([[change.theta[g] for g in names]], device=x0.device)
            return correlated_shift([self._groups[g] for g in names], x0, theta)
        env = self.auditor.envelope
        of = self.auditor.layout.feature_of
        unknown = sorted(set(change.sigmas) - set(of))
        if unknown:
            raise HepguardError(f"unknown feature(s) {', '.join(unknown)}")
        delta = torch.tensor(
            [[change.sigmas.get(f, 0.0) for f in of]], dtype=x0.dtype, device=x0.device
        )
        box = env.box(x0, change.size)
        return env.project(x0, env.displace(x0, delta), box)

    # -- the model --------------------------------------------------------------------------

    def outcome(self, event: int | Sequence[int], change: Change | Sequence[Change]) -> Outcome:
        """Discriminants and decisions of ``event`` before and after ``change``.

        Raises:
            PropertyModelError: the model raised on the changed rows (the event and the change
                are named, the model's error chained).
        """
        index, x = self.rows(event, change)
        model, decision = self.auditor.model, self.auditor.decision
        try:
            with torch.no_grad():
                after = model.probabilities(model.score(x)).cpu()
        except Exception as exc:
            raise PropertyModelError(
                f"the model raised on event {event} changed by {change}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return Outcome(
            self.auditor.nominal_disc[index],
            decision.discriminant_of(after).numpy(),
            self.auditor.nominal_decisions[index],
            decision.decide(after).numpy(),
        )

    # -- properties -------------------------------------------------------------------------

    def assert_decision_unchanged(self, event: int, change: Change) -> None:
        """The decision of ``event`` (cut on the discriminant, or argmax) stays the same."""

        def broken(out: Outcome) -> bool:
            return bool(out.decision_after[0] != out.decision_before[0])

        self._check("decision unchanged", event, change, broken)

    def assert_discriminant_stable(self, event: int, change: Change, max_shift: float) -> None:
        """The discriminant of ``event`` moves by at most ``max_shift`` (its own units)."""

        def broken(out: Outcome) -> bool:
            return abs(float(out.discriminant_after[0] - out.discriminant_before[0])) > max_shift

        self._check(f"discriminant moves less than {max_shift:g}", event, change, broken)

    def _check(
        self, name: str, event: int, change: Change, broken: Callable[[Outcome], bool]
    ) -> None:
        """Raise (and record) when ``broken`` holds for ``change``, reporting the change scaled
        down along its own direction to the smallest fraction that still breaks the property
        (bisection, 1/4096): hypothesis shrinks feature by feature toward simple values, this
        brings the counterexample close to the smallest displacement in its direction."""
        out = self.outcome(event, change)
        if not broken(out):
            return
        low, high = 0.0, 1.0
        for _ in range(BISECTIONS):
            mid = (low + high) / 2
            if broken(self.outcome(event, _scaled(change, mid))):
                high = mid
            else:
                low = mid
        if high < 1.0:
            change = _scaled(change, high)
            out = self.outcome(event, change)
        self._fail(name, event, change, out)

    def _fail(self, name: str, event: int, change: Change, out: Outcome) -> None:
        labels = self.auditor.labels
        classes = self.auditor.uncertainties.decision.classes
        label = None
        if labels is not None:
            k = int(labels[int(event)])
            label = classes[k] if classes and k < len(classes) else str(k)
        found = Counterexample(
            test=self._current_test(),
            property=name,
            event=int(event),
            label=label,
            change=dict(change.sigmas if isinstance(change, Displacement) else change.theta),
            kind="displacement" if isinstance(change, Displacement) else "nuisance shift",
            discriminant_before=float(out.discriminant_before[0]),
            discriminant_after=float(out.discriminant_after[0]),
            decision_before=int(out.decision_before[0]),
            decision_after=int(out.decision_after[0]),
        )
        if self._record is not None:
            self._record(found)
        raise AssertionError(f"property '{name}' broken: {found}")
