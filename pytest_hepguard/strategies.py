"""hypothesis strategies built from the uncertainty file, for property-based ``robustness_*`` tests.

- :func:`perturbations` draws per-feature displacements in sigmas inside the envelope of size
  ``epsilon``: floats in ``[-epsilon, epsilon]`` (whole steps for integer features with an
  absolute sigma), shrinking toward zero, so a failing example shrinks to a small displacement
  that still breaks the property.
- :func:`nuisance_shifts` draws coherent group shifts ``theta = L z`` (``L L^T`` the declared
  correlation matrix of ``groups:``, ``|z_i| <= max_sigma``), shrinking toward ``theta = 0``.
- :func:`events` draws event indices of the audited sample, optionally of one class.

Used with the ``hepguard_properties`` fixture (:class:`Properties`), which applies a drawn
displacement to an event under the same envelope rules as every attack (bounds, integer steps,
sentinels and frozen features untouched), runs the model, and turns a broken property into a
counterexample in sigmas per feature that reaches the report::

    from hypothesis import given
    from pytest_hepguard.strategies import events, perturbations

    @given(event=events(label="b"), delta=perturbations(epsilon=1.0))
    def robustness_b_tag_is_stable(hepguard_properties, event, delta):
        hepguard_properties.assert_decision_unchanged(event, delta)

The strategies read the uncertainty file and the sample of the running hepguard session when they
are first drawn from (or the ``uncertainties`` given to them), so they can be written in a
``@given`` decorator at import time. Needs hypothesis (imported by this module only).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.session import STRATEGY_SOURCE
from pytest_hepguard.uncertainties import FeatureSpec, UncertaintyModel


class StrategyError(HepguardError):
    """A strategy was asked for something the uncertainty file does not have."""


@dataclass(frozen=True)
class Displacement:
    """Per-feature displacements in sigmas (features not listed stay where they are).

    A positive value moves by that many up-sigmas, a negative one by down-sigmas; integer
    features move by whole steps, sentinel entries and frozen features never move."""

    sigmas: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> float:
        """The largest |displacement| in sigmas (the L-infinity norm)."""
        return max((abs(v) for v in self.sigmas.values()), default=0.0)

    def __str__(self) -> str:
        moved = [f"{name} {value:+.3g}σ" for name, value in self.sigmas.items() if value]
        return ", ".join(moved) or "no displacement"


@dataclass(frozen=True)
class NuisanceShift:
    """Coherent shifts of nuisance groups: theta per group, in sigmas of the group's parameter."""

    theta: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> float:
        """The largest |theta|."""
        return max((abs(v) for v in self.theta.values()), default=0.0)

    def __str__(self) -> str:
        moved = [f"{name} θ={value:+.3g}" for name, value in self.theta.items() if value]
        return ", ".join(moved) or "no shift"


#: The running session (set by the plugin and the hepguard_properties fixture).
SESSION = STRATEGY_SOURCE


def _model(uncertainties: UncertaintyModel | None) -> UncertaintyModel:
    model = uncertainties or SESSION.uncertainties
    if model is None:
        raise StrategyError(
            "no uncertainty file: run pytest with --hepguard-uncertainties, or pass "
            "uncertainties=load_uncertainties(path) to the strategy"
        )
    return model


def _check_epsilon(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise StrategyError(f"{name} must be a number > 0 (sigmas), got {value!r}")
    if not math.isfinite(value):
        raise StrategyError(f"{name} must be finite, got {value!r}")
    return float(value)


def _movable(spec: FeatureSpec) -> bool:
    return not spec.frozen and (spec.up > 0 or spec.down > 0)


def _feature_strategy(spec: FeatureSpec, epsilon: float) -> st.SearchStrategy[float]:
    """Displacement in sigmas of one feature: whole steps for an integer feature with an
    absolute sigma (k / sigma), else a float in [-epsilon, epsilon] (a side with sigma 0
    cannot move)."""
    low = -epsilon if spec.down > 0 else 0.0
    high = epsilon if spec.up > 0 else 0.0
    if spec.integer and spec.kind == "absolute":
        steps_up = math.floor(epsilon * spec.up + 1e-6)
        steps_down = math.floor(epsilon * spec.down + 1e-6)
        return st.integers(-steps_down, steps_up).map(
            lambda k: k / spec.up if k > 0 else (k / spec.down if k < 0 else 0.0)
        )
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def perturbations(
    epsilon: float = 1.0,
    features: Sequence[str] | None = None,
    *,
    size: int | None = None,
    uncertainties: UncertaintyModel | None = None,
) -> st.SearchStrategy[Any]:
    """Displacements inside the envelope of size ``epsilon`` (sigmas).

    Args:
        epsilon: the envelope size in sigmas (> 0).
        features: the features that may move (default: every feature that is not frozen and
            has a sigma); the others stay.
        size: None for one :class:`Displacement`; N for a tuple of N (one per event of a batch).
        uncertainties: the uncertainty file (default: the running hepguard session's).

    Raises:
        StrategyError: epsilon <= 0; a feature the file does not declare, or a frozen one.
    """
    epsilon = _check_epsilon(epsilon, "epsilon")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise StrategyError(f"size must be a whole number >= 1 or None, got {size!r}")
    if uncertainties is not None or SESSION.uncertainties is not None:
        _chosen(_model(uncertainties), features)  # bad names fail where the strategy is made

    def build() -> st.SearchStrategy[Any]:
        specs = _chosen(_model(uncertainties), features)
        one = st.fixed_dictionaries({s.name: _feature_strategy(s, epsilon) for s in specs}).map(
            Displacement
        )
        return one if size is None else st.tuples(*([one] * size))

    return st.deferred(build)


def _chosen(model: UncertaintyModel, features: Sequence[str] | None) -> list[FeatureSpec]:
    by_name = {s.name: s for s in model.features}
    if features is None:
        return [s for s in model.features if _movable(s)]
    if isinstance(features, str):
        features = [features]
    unknown = [f for f in features if f not in by_name]
    if unknown:
        raise StrategyError(
            f"perturbations: unknown feature(s) {', '.join(map(repr, unknown))}; the uncertainty "
            f"file declares {', '.join(by_name)}"
        )
    still = [f for f in features if not _movable(by_name[f])]
    if still:
        raise StrategyError(
            f"perturbations: feature(s) {', '.join(map(repr, still))} cannot move (frozen, or a "
            "sigma of 0 in the uncertainty file)"
        )
    return [by_name[f] for f in features]


def nuisance_shifts(
    groups: Sequence[str] | None = None,
    max_sigma: float = 1.0,
    *,
    uncertainties: UncertaintyModel | None = None,
) -> st.SearchStrategy[NuisanceShift]:
    """Coherent shifts of the nuisance groups of ``groups:``: ``theta = L z`` with ``z_i`` in
    ``[-max_sigma, max_sigma]`` and ``L`` the Cholesky factor of the declared correlation
    matrix (uncorrelated groups: ``theta = z``), shrinking toward ``theta = 0``. With
    ``groups`` only those move (their correlations among themselves kept).

    Raises:
        StrategyError: max_sigma <= 0; the file has no ``groups:``; an unknown group.
    """
    max_sigma = _check_epsilon(max_sigma, "max_sigma")
    if uncertainties is not None or SESSION.uncertainties is not None:
        _group_factor(_model(uncertainties), groups)

    def build() -> st.SearchStrategy[NuisanceShift]:
        names, factor = _group_factor(_model(uncertainties), groups)
        z = st.tuples(*[st.floats(-max_sigma, max_sigma, allow_nan=False)] * len(names))

        def theta(values: tuple[float, ...]) -> NuisanceShift:
            return NuisanceShift(
                {
                    name: sum(factor[i][j] * values[j] for j in range(i + 1))
                    for i, name in enumerate(names)
                }
            )

        return z.map(theta)

    return st.deferred(build)


def _group_factor(
    model: UncertaintyModel, groups: Sequence[str] | None
) -> tuple[list[str], list[list[float]]]:
    """The chosen group names and the lower Cholesky factor of their correlation matrix."""
    declared = [g.name for g in model.groups]
    if not declared:
        raise StrategyError(
            "nuisance_shifts: the uncertainty file declares no groups: (see docs/uncertainties.md)"
        )
    if isinstance(groups, str):
        groups = [groups]
    names = declared if groups is None else list(groups)
    unknown = [g for g in names if g not in declared]
    if unknown:
        raise StrategyError(
            f"nuisance_shifts: unknown group(s) {', '.join(map(repr, unknown))}; the uncertainty "
            f"file declares {', '.join(declared)}"
        )
    full = model.group_correlation()
    index = [declared.index(g) for g in names]
    corr = [[full[i][j] for j in index] for i in index]
    return names, _cholesky(corr)


def _cholesky(matrix: list[list[float]]) -> list[list[float]]:
    """Lower factor ``L`` with ``L L^T = matrix`` for a positive semi-definite matrix (a zero
    pivot, as in a correlation of exactly ±1, gives a zero column)."""
    n = len(matrix)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            rest = matrix[i][j] - sum(low[i][k] * low[j][k] for k in range(j))
            if i == j:
                low[i][j] = math.sqrt(max(rest, 0.0))
            else:
                low[i][j] = rest / low[j][j] if low[j][j] > 1e-12 else 0.0
    return low


def events(label: str | int | None = None, near_cut: float | None = None) -> st.SearchStrategy[int]:
    """Indices of events of the running session's sample, shrinking toward the first: all, or
    those of class ``label`` (a class name of ``decision.classes`` or an index), and with
    ``near_cut`` only those whose nominal discriminant is within ``near_cut`` of the
    working-point cut (the events a small change can flip).

    Raises:
        StrategyError: no sample loaded (no hepguard session), an unknown class, near_cut
            without a cut or <= 0, or no event left to draw.
    """
    if near_cut is not None:
        _check_epsilon(near_cut, "near_cut")

    def build() -> st.SearchStrategy[int]:
        import numpy as np

        if SESSION.n_events == 0:
            raise StrategyError(
                "events(): no sample is loaded: use it in a test that takes the "
                "hepguard_properties fixture (which loads the session's data)"
            )
        keep = np.ones(SESSION.n_events, dtype=bool)
        if label is not None:
            if SESSION.labels is None:
                raise StrategyError("events(label=...): the sample has no labels (data.label)")
            keep &= SESSION.labels == _class_index(label)
        if near_cut is not None:
            if SESSION.cut is None:
                raise StrategyError(
                    "events(near_cut=...): the decision has no working-point cut "
                    "(decision.working_point)"
                )
            keep &= np.abs(SESSION.discriminant - SESSION.cut) < near_cut
        chosen = np.flatnonzero(keep)
        if chosen.size == 0:
            raise StrategyError(
                f"events: no event of the sample matches (label={label!r}, near_cut={near_cut!r})"
            )
        return st.sampled_from(chosen.tolist())

    return st.deferred(build)


def _class_index(label: str | int) -> int:
    classes = _model(None).decision.classes or ()
    if isinstance(label, str):
        if label not in classes:
            raise StrategyError(
                f"events: unknown class {label!r}; the classes are "
                f"{', '.join(classes) or '(no names: give an index)'}"
            )
        return classes.index(label)
    return int(label)
