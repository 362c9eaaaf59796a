"""Model inputs from a weaver ``preprocess.json`` (the file CMS ships beside ParticleNet models).

The file names the model's inputs (``input_names``) and, per input, its variables in order
(``var_names``), its constituent count (``min_length``/``max_length``) and per variable the
scaling the model expects (``var_infos``: ``median``, ``norm_factor``, ``lower_bound``,
``upper_bound``, ``pad``): the model sees ``x' = clip((x - median) * norm_factor, lower_bound,
upper_bound)`` and ``pad`` in padded constituents. :func:`read_preprocess` turns it into
:class:`~pytest_hepguard.uncertainties.InputSpec` s (every input channels-first, per
constituent, ``max_length`` long; an input ``<x>_mask`` of one variable is the mask of the
inputs named ``<x>_*``), and :func:`complete_uncertainties` gives an uncertainty file without
``inputs:`` the inputs of the ``preprocess.json`` beside its ONNX model, freezing every variable
the file gives no envelope.

Torch-free, like :mod:`pytest_hepguard.uncertainties`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pytest_hepguard.exceptions import UncertaintyFileError
from pytest_hepguard.uncertainties import (
    FeatureSpec,
    InputScaling,
    InputSpec,
    UncertaintyModel,
    check_shared,
)

#: The file hepguard looks for beside an ONNX model.
PREPROCESS_NAME = "preprocess.json"

_SCALING_KEYS = ("median", "norm_factor", "lower_bound", "upper_bound", "pad")


def read_preprocess(path: str | Path) -> tuple[InputSpec, ...]:
    """The model inputs of the weaver ``preprocess.json`` at ``path``, in ``input_names`` order,
    each with its :class:`~pytest_hepguard.uncertainties.InputScaling`.

    Raises :class:`~pytest_hepguard.exceptions.UncertaintyFileError` naming the file and the
    key for an unreadable or malformed file.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UncertaintyFileError(
            f"{path}: cannot read the weaver preprocess file: {exc}"
        ) from exc

    def fail(key: str, what: str) -> UncertaintyFileError:
        return UncertaintyFileError(f"{path}: {key}: {what}")

    if not isinstance(doc, dict):
        raise fail("top level", "expected a JSON object with input_names")
    names = doc.get("input_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise fail("input_names", f"got {names!r}; expected a non-empty list of input names")
    if len(set(names)) != len(names):
        raise fail("input_names", f"got {names!r}; each input once")
    groups = {name: _group(doc.get(name), name, fail) for name in names}
    specs: list[InputSpec] = []
    used: dict[str, InputSpec] = {}
    for name, (features, length, scaling) in groups.items():
        if name.endswith("_mask") and len(features) == 1:
            prefix = name.removesuffix("mask")
            targets = tuple(n for n in names if n.startswith(prefix) and n != name)
            if not targets:
                raise fail(name, f"a mask, but no input is named {prefix}*")
            spec = InputSpec(name, "mask", length=length, channels_first=True, mask_of=targets)
        else:
            spec = InputSpec(
                name, "constituent", features, length, channels_first=True, scaling=scaling
            )
            for feature in features:
                check_shared(
                    feature, used.get(feature), spec, lambda w, e, at=name: fail(at, f"{w}; {e}")
                )
                used[feature] = spec
        specs.append(spec)
    for spec in specs:
        for target in spec.mask_of:
            if groups[target][1] != spec.length:
                raise fail(spec.name, f"max_length differs from its input {target!r}'s")
    return tuple(specs)


def _group(
    value: object, name: str, fail: Callable[[str, str], UncertaintyFileError]
) -> tuple[tuple[str, ...], int, InputScaling]:
    """One input group: its var_names, max_length and scaling from var_infos."""
    if not isinstance(value, dict):
        raise fail(name, "missing, or not an object with var_names, var_infos, max_length")
    features = value.get("var_names")
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) for f in features)
    ):
        raise fail(f"{name}.var_names", f"got {features!r}; expected a list of variable names")
    length = value.get("max_length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise fail(f"{name}.max_length", f"got {length!r}; expected a whole number >= 1")
    infos = value.get("var_infos")
    if not isinstance(infos, dict):
        raise fail(f"{name}.var_infos", "missing, or not an object of variable -> scaling")
    columns: list[list[float]] = [[] for _ in _SCALING_KEYS]
    for feature in features:
        info = infos.get(feature)
        if not isinstance(info, dict):
            raise fail(f"{name}.var_infos.{feature}", "missing")
        for key, column in zip(_SCALING_KEYS, columns, strict=True):
            number = info.get(key)
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise fail(
                    f"{name}.var_infos.{feature}.{key}", f"got {number!r}; expected a number"
                )
            if math.isnan(number):
                raise fail(f"{name}.var_infos.{feature}.{key}", "is NaN")
            column.append(float(number))
    median, norm, lower, upper, pad = (tuple(c) for c in columns)
    return tuple(features), length, InputScaling(median, norm, lower, upper, pad)


def preprocess_beside(model: str | Path | None) -> Path | None:
    """The ``preprocess.json`` beside the ONNX file ``model``, or None (no such file, or
    ``model`` is not an ONNX file path)."""
    if model is None or not str(model).endswith(".onnx"):
        return None
    candidate = Path(model).parent / PREPROCESS_NAME
    return candidate if candidate.is_file() else None


def complete_uncertainties(
    uncertainties: UncertaintyModel, model: str | Path | None
) -> UncertaintyModel:
    """``uncertainties`` with the inputs of the ``preprocess.json`` beside ``model`` when it has
    no ``inputs:`` (unchanged otherwise, or without such a file).

    Its ``features:`` then only list variables that have uncertainties; every other variable
    of the file is added frozen. A declared feature the file lacks is an
    :class:`~pytest_hepguard.exceptions.UncertaintyFileError` with the YAML's line.
    """
    path = None if uncertainties.inputs else preprocess_beside(model)
    if path is None:
        return uncertainties
    inputs = read_preprocess(path)
    variables = list(dict.fromkeys(f for spec in inputs for f in spec.features))
    for feature in uncertainties.features:
        if feature.name not in variables:
            raise UncertaintyFileError(
                f"{uncertainties.source or '<string>'}, line {feature.line}: features."
                f"{feature.name}: not a variable of {path}; its variables: {', '.join(variables)}"
            )
    declared = {f.name: f for f in uncertainties.features}
    features = tuple(
        declared.get(name) or FeatureSpec(name, None, 0.0, 0.0, frozen=True) for name in variables
    )
    return replace(uncertainties, features=features, inputs=inputs)


def frozen_by_preprocess(uncertainties: UncertaintyModel) -> tuple[str, ...]:
    """The variables :func:`complete_uncertainties` froze (no line in the YAML)."""
    if not any(spec.scaling is not None for spec in uncertainties.inputs):
        return ()
    return tuple(f.name for f in uncertainties.features if f.frozen and f.line is None)
