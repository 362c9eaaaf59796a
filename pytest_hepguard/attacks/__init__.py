"""Attacks: one file per attack, one call signature, registered here.

This module is torch-free: it holds the registry (name -> implementing class, imported on first
use) and the table of each attack's parameters, so that the YAML parser and ``hepguard.attack()``
validate parameters the same way without importing torch.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_hepguard.exceptions import AttackError

if TYPE_CHECKING:
    from pytest_hepguard.attacks.base import Attack, SampleAttack


@dataclass(frozen=True)
class Param:
    """One attack parameter: its type (``float``, ``int``, ``bool`` or ``choice``) and default."""

    name: str
    kind: str
    default: object
    doc: str
    choices: tuple[str, ...] = ()


_EPSILON = Param("epsilon", "float", 1.0, "attack size in sigmas of each feature's envelope")

#: How a gradient attack gets its gradient (``pytest_hepguard.attacks.spsa`` for ``spsa``).
_GRADIENT = (
    Param(
        "gradient",
        "choice",
        "exact",
        "exact: autograd input gradient; spsa: estimated from 2 * spsa_directions + 1 forward "
        "passes per step, for models that can only run forward (a weaker attack: a lower bound)",
        ("exact", "spsa"),
    ),
    Param("spsa_directions", "int", 32, "random +-1 directions per SPSA gradient estimate"),
    Param("spsa_delta", "float", 0.01, "SPSA finite-difference half-step in sigmas"),
)

PARAMETERS: dict[str, tuple[Param, ...]] = {
    "random": (
        _EPSILON,
        Param(
            "distribution",
            "choice",
            "gaussian",
            "gaussian: N(0, epsilon) sigmas clipped to +-epsilon; uniform: U(-epsilon, epsilon); "
            "sign: +-epsilon at random",
            ("gaussian", "uniform", "sign"),
        ),
    ),
    "fgsm": (_EPSILON, *_GRADIENT),
    "pgd": (
        _EPSILON,
        Param("steps", "int", 10, "number of gradient steps"),
        Param("step_size", "float", None, "step in sigmas; default 2.5 * epsilon / steps"),
        Param("random_start", "bool", True, "start from a uniform random point of the envelope"),
        *_GRADIENT,
    ),
    "hidden": (
        _EPSILON,
        Param("steps", "int", 20, "gradient steps of the candidate search"),
        Param("step_size", "float", None, "step in sigmas; default 2.5 * epsilon / steps"),
        Param(
            "direction",
            "choice",
            "fool",
            "fool: flip decisions; up/down: push the discriminant up or down (templates)",
            ("fool", "up", "down"),
        ),
        Param("ks_max", "float", None, "overrides constraints.ks_max of the uncertainty file"),
    ),
    "systematic": (
        Param("epsilon", "float", 1.0, "group shift in sigmas of each group's parameter theta"),
        Param("draws", "int", 20, "correlated random draws of all groups at once"),
    ),
    "worst": (
        _EPSILON,
        Param("steps", "int", 20, "PGD steps of the cascade random -> fgsm -> pgd"),
        *_GRADIENT,
    ),
    "radius": (
        Param("epsilon", "float", 3.0, "largest budget searched, in sigmas"),
        Param("steps", "int", 10, "PGD steps at each budget"),
        Param("bisections", "int", 6, "bisection rounds: resolution epsilon / 2**bisections"),
    ),
    "scan": (
        Param("epsilons", "floats", (0.5, 1.0, 2.0), "envelope sizes in sigmas"),
        Param("ks_max", "floats", (0.005, 0.01, 0.02), "KS statistic limits of the hidden attack"),
        Param("steps", "int", 20, "gradient steps of the hidden attack and of PGD"),
    ),
    # its variations, binning and samples are those of the uncertainty file's pyhf: section
    "pyhf_impact": (),
    "landscape": (
        Param("epsilon", "float", 1.0, "envelope size in sigmas: the sharpness is measured within"),
        Param("span", "float", 3.0, "the curves run over [-span, span] sigmas"),
        Param("points", "int", 25, "points of each curve (odd: 0 is one of them)"),
        Param("draws", "int", 4, "random directions averaged into the random curve"),
    ),
}

#: Checks made of other checks, run by the auditor itself rather than by an attack class.
COMPOSITE = ("systematic", "scan", "pyhf_impact", "landscape")

_CLASSES: dict[str, tuple[str, str]] = {
    "random": ("pytest_hepguard.attacks.random_noise", "RandomNoise"),
    "fgsm": ("pytest_hepguard.attacks.fgsm", "FGSM"),
    "pgd": ("pytest_hepguard.attacks.pgd", "PGD"),
    "hidden": ("pytest_hepguard.attacks.hidden", "Hidden"),
    "worst": ("pytest_hepguard.attacks.worst", "Worst"),
    "radius": ("pytest_hepguard.attacks.radius", "Radius"),
}


def _check_value(attack: str, p: Param, value: object) -> object:
    where = f"attack '{attack}', parameter '{p.name}'"
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise AttackError(f"{where}: expected true or false, got {value!r}")
        return value
    if p.kind == "choice":
        if value not in p.choices:
            raise AttackError(f"{where}: expected one of {', '.join(p.choices)}, got {value!r}")
        return value
    if p.kind == "floats":
        items = value if isinstance(value, (list, tuple)) else None
        if not items:
            raise AttackError(f"{where}: expected a non-empty list of numbers, got {value!r}")
        return tuple(_check_value(attack, Param(p.name, "float", None, p.doc), v) for v in items)
    if p.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AttackError(f"{where}: expected a whole number >= 1, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AttackError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise AttackError(f"{where}: expected a finite number > 0, got {value!r}")
    return float(value)


def check_params(attack: str, params: dict[str, object]) -> dict[str, object]:
    """Validate ``params`` of ``attack`` and return them complete, defaults filled in.

    Raises :class:`AttackError` naming the attack and the parameter for an unknown attack, an
    unknown parameter or a value of the wrong type.
    """
    if attack not in PARAMETERS:
        raise AttackError(f"unknown attack {attack!r}; known attacks: {', '.join(PARAMETERS)}")
    table = {p.name: p for p in PARAMETERS[attack]}
    unknown = sorted(set(params) - set(table))
    if unknown:
        raise AttackError(
            f"attack '{attack}': unknown parameter {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(table)}"
        )
    out: dict[str, object] = {}
    for name, p in table.items():
        value = params.get(name, p.default)
        out[name] = None if value is None and p.default is None else _check_value(attack, p, value)
    return out


def get_attack(attack: str, params: dict[str, object]) -> Attack | SampleAttack:
    """Build the attack ``attack`` with validated ``params`` (imports torch)."""
    full = check_params(attack, params)
    if attack in COMPOSITE:
        raise AttackError(f"'{attack}' is made of other checks: run it through the auditor")
    module_name, class_name = _CLASSES[attack]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**full)
