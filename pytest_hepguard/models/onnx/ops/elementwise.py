"""Elementwise operators: arithmetic, activations, comparisons and logic, Where, casts.

Every operator here maps its inputs of any shape to an output of their numpy-style broadcast
shape (``[*broadcast(a.shape, b.shape, ...)]``). The plain ones are registered from tables
(:data:`_UNARY`, :data:`_BINARY`, :data:`_ACTIVATIONS`, :data:`_VARIADIC`); activations call
the kernel the torch layer uses (``F.relu``, ``F.gelu`` ...), so autograd gives torch's own
derivative conventions at kinks (``relu'(0) = 0``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .registry import TORCH_DTYPES, Node, OpNotSupported, op

Unary = Callable[[torch.Tensor], torch.Tensor]
Binary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: One-input operators without attributes: ONNX name -> torch function of x.
_UNARY: dict[str, Unary] = {
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX
    "Sign": torch.sign,
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "Erf": torch.erf,
    "Mish": F.mish,
    "HardSwish": F.hardswish,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
}


def _integer_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Div: true division for floats, truncation towards zero for integers."""
    if a.is_floating_point() or b.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Pow: the result has the base's type (an integer base stays integer)."""
    return torch.pow(a, b).to(a.dtype)


#: Two-input operators without attributes (numpy broadcasting): ONNX name -> torch function.
_BINARY: dict[str, Binary] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _integer_div,
    "Pow": _pow,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}

#: Variadic operators (one or more inputs, broadcast): ONNX name -> pairwise torch function.
_VARIADIC: dict[str, Binary] = {
    "Min": torch.minimum,
    "Max": torch.maximum,
    "Sum": torch.add,
}


def _selu(node: Node, x: torch.Tensor) -> torch.Tensor:
    alpha = node.attr("alpha", 1.67326319217681884765625)
    gamma = node.attr("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def _check_gelu(node: Node) -> None:
    if node.attr("approximate", "none") not in ("none", "tanh"):
        raise OpNotSupported(f"approximate={node.attr('approximate')!r} (only 'none', 'tanh')")


#: Activations with attributes: ONNX name -> function of (node, x). Defaults as in ONNX.
_ACTIVATIONS: dict[str, Callable[[Node, torch.Tensor], torch.Tensor]] = {
    "LeakyRelu": lambda node, x: F.leaky_relu(x, node.attr("alpha", 0.01)),
    "Elu": lambda node, x: F.elu(x, node.attr("alpha", 1.0)),
    "Celu": lambda node, x: F.celu(x, node.attr("alpha", 1.0)),
    "Selu": _selu,
    "HardSigmoid": lambda node, x: torch.clamp(
        node.attr("alpha", 0.2) * x + node.attr("beta", 0.5), 0.0, 1.0
    ),
    "ThresholdedRelu": lambda node, x: torch.where(
        x > node.attr("alpha", 1.0), x, torch.zeros_like(x)
    ),
    "Gelu": lambda node, x: F.gelu(x, approximate=node.attr("approximate", "none")),
}


def _register_tables() -> None:
    """Register the table-driven operators, each as a function of ``(node, *inputs)``."""

    def unary(fn: Unary) -> Callable[..., torch.Tensor]:
        return lambda node, x: fn(x)

    def binary(fn: Binary) -> Callable[..., torch.Tensor]:
        return lambda node, a, b: fn(a, b)

    def variadic(fn: Binary) -> Callable[..., torch.Tensor]:
        return lambda node, *xs: functools.reduce(fn, xs)

    for name, fn in _UNARY.items():
        op(name)(unary(fn))
    for name, fn in _BINARY.items():
        op(name)(binary(fn))
    for name, fn in _VARIADIC.items():
        op(name)(variadic(fn))
    for name, act in _ACTIVATIONS.items():
        op(name, check=_check_gelu if name == "Gelu" else None)(act)


_register_tables()


@op("Mean")
def mean(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """Elementwise mean of the (broadcast) inputs."""
    return functools.reduce(torch.add, xs) / len(xs)


@op("Mod")
def mod(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``fmod=0``: remainder with the divisor's sign (integers only); ``fmod=1``: C ``fmod``
    (the dividend's sign)."""
    if node.attr("fmod", 0):
        return torch.fmod(a, b)
    if a.is_floating_point() or b.is_floating_point():
        raise OpNotSupported(f"{node.where()}: fmod=0 on floating-point inputs is not valid ONNX")
    return torch.remainder(a, b)


@op("IsInf")
def is_inf(node: Node, x: torch.Tensor) -> torch.Tensor:
    """True at +inf (unless ``detect_positive=0``) and at -inf (unless ``detect_negative=0``)."""
    positive = torch.isposinf(x) & bool(node.attr("detect_positive", 1))
    return positive | (torch.isneginf(x) & bool(node.attr("detect_negative", 1)))


@op("PRelu")
def prelu(node: Node, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``x`` where ``x > 0``, else ``slope * x``; slope broadcasts to x (torch's convention at
    0: the derivative there is the slope, as in ``F.prelu``)."""
    return torch.where(x > 0, x, slope * x)


def _clip_bound(node: Node, name: str, value: torch.Tensor | None) -> torch.Tensor | float | None:
    """A Clip bound: the attribute (opset < 11) or the optional input; None when absent."""
    return node.attr(name) if node.opset < 11 else value


@op("Clip")
def clip(
    node: Node,
    x: torch.Tensor,
    low: torch.Tensor | None = None,
    high: torch.Tensor | None = None,
) -> torch.Tensor:
    """``min(max(x, low), high)``; bounds from the ``min``/``max`` attributes before opset 11,
    else from the optional scalar inputs (computed at run time, or absent = unbounded)."""
    low, high = _clip_bound(node, "min", low), _clip_bound(node, "max", high)
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


@op("Where")
def where(node: Node, cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` where ``cond`` else ``b``, all three broadcast."""
    return torch.where(cond, a, b)


def _check_cast(node: Node) -> None:
    if node.attr("to") not in TORCH_DTYPES:
        raise OpNotSupported(f"cast to ONNX data type {node.attr('to')} (not a numeric type)")


@op("Cast", check=_check_cast)
def cast(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x converted to the ``to`` data type (float to integer truncates towards zero)."""
    return x.to(TORCH_DTYPES[node.attr("to")])


@op("CastLike")
def cast_like(node: Node, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x converted to ``target``'s dtype."""
    return x.to(target.dtype)


@op("Identity")
def identity(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x itself."""
    return x


@op("Dropout")
def dropout(
    node: Node, x: torch.Tensor, *_ratio_and_training: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inference: x unchanged; the mask output, when the graph uses it, is all true."""
    mask = torch.ones_like(x, dtype=torch.bool) if node.n_outputs > 1 else None
    return x, mask
