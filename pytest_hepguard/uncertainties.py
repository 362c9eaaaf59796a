"""The uncertainty file (YAML, format version 1) -> a validated :class:`UncertaintyModel`.

Only the data model lives here; nothing imports torch. The per-event box that attacks move in is
built from it in :mod:`pytest_hepguard.envelope`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SigmaKind = Literal["absolute", "relative", "std"]

#: Gate limit keys in ``gates:`` -> the check metric each one bounds from above. Metrics that can
#: move either way (mean shift, efficiency change) are bounded in absolute value.
GATE_LIMITS: dict[str, str] = {
    "max_fooling_rate": "fooling_rate",
    "max_fooling_rate_correct": "fooling_rate_correct",
    "max_auc_drop": "auc_drop",
    "max_output_ks": "output_ks",
    "max_output_wasserstein": "output_wasserstein",
    "max_mean_shift": "mean_shift",
    "max_efficiency_change": "efficiency_change",
}


@dataclass(frozen=True)
class FeatureSpec:
    """How far one feature may move.

    ``up``/``down`` are the sigma on each side in the unit of ``kind``: absolute (the feature's own
    unit, e.g. GeV), relative (a fraction of ``|x|``), or std (a fraction of the feature's standard
    deviation over the sample, sentinel values excluded). Displacements are ``epsilon * sigma``.
    """

    name: str
    kind: SigmaKind | None  # None only for frozen features
    up: float
    down: float
    min: float | None = None
    max: float | None = None
    integer: bool = False
    sentinels: tuple[float, ...] = ()
    frozen: bool = False
    line: int | None = None  # line of the feature's key in the YAML, for messages


@dataclass(frozen=True)
class Ratio:
    """Discriminant ``sum(P[numerator]) / sum(P[denominator])``; class indices, 0-based."""

    numerator: tuple[int, ...]
    denominator: tuple[int, ...]


@dataclass(frozen=True)
class WorkingPoint:
    """Exactly one of ``cut`` (discriminant value) or ``efficiency`` (signal efficiency, 0..1)."""

    cut: float | None = None
    efficiency: float | None = None


@dataclass(frozen=True)
class DecisionSpec:
    """How model outputs become a discriminant and a decision.

    ``discriminant`` is an output column index, ``"argmax"``, a :class:`Ratio`, or ``None`` (the
    default: the single output of a one-output model, else argmax). ``signal``/``background`` are
    class indices (names in the YAML are resolved through ``classes``); ``background=None`` means
    every label that is not signal. ``output`` says whether the model returns ``"probabilities"``
    or ``"logits"``; ``"auto"`` detects it from the nominal outputs and reports what was assumed.
    """

    discriminant: int | str | Ratio | None = None
    classes: tuple[str, ...] | None = None
    signal: tuple[int, ...] | None = None
    background: tuple[int, ...] | None = None
    working_point: WorkingPoint | None = None
    output: Literal["auto", "probabilities", "logits"] = "auto"


@dataclass(frozen=True)
class DataSpec:
    """Where the events are. ``path`` is resolved against the YAML file's folder."""

    path: Path | None = None
    tree: str | None = None
    label: str | tuple[str, ...] | None = None
    weight: str | None = None


@dataclass(frozen=True)
class GateSpec:
    """One built-in check: an attack with its parameters, and the limits that make it a gate.

    ``params`` holds the attack's keyword arguments (``epsilon`` in sigmas, ``steps``, ...);
    ``limits`` maps a metric limit key (``max_fooling_rate``, ``max_auc_drop``, ...) to its value.
    A gate with no limits runs and reports but cannot fail.
    """

    name: str
    attack: str
    params: dict[str, object] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UncertaintyModel:
    """A validated uncertainty file. ``features`` are in the model's input order."""

    features: tuple[FeatureSpec, ...]
    decision: DecisionSpec
    data: DataSpec
    gates: tuple[GateSpec, ...]
    source: Path | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)
