"""The table of ONNX operators the bridge runs: ``(domain, op_type) -> torch function``.

Each operator is a plain function ``fn(node, *inputs)`` registered with :func:`op`. ``node`` is
the :class:`Node` (attributes already decoded, the opset of its domain); ``inputs`` are torch
tensors in the ONNX input order, ``None`` for an omitted optional input (empty name). It returns
one tensor, or a tuple with one entry per ONNX output (``None`` for an output the function does
not compute). Functions only use differentiable torch operations on float inputs, so that
``torch.autograd`` gives the input gradient; integer tensors (shapes, indices) flow through
unchanged. An operator version the function does not handle raises :class:`OpNotSupported`
with the reason; the graph collects those at load time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

#: What a registered operator function returns: one tensor, or one entry per ONNX output.
OpResult = torch.Tensor | tuple[torch.Tensor | None, ...]
OpFn = Callable[..., OpResult]

#: ONNX ``TensorProto`` data type number -> torch dtype (the ones taggers use).
TORCH_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


class OpNotSupported(Exception):
    """Raised by an operator function (or its ``check``) for a form it does not handle."""


@dataclass(frozen=True)
class Node:
    """One ONNX node as the operator functions see it.

    ``attrs``: attribute name -> value, decoded (ints, floats, ``str`` for strings, lists of
    those, ``torch.Tensor`` for tensor attributes). ``opset``: the model's opset version of the
    node's domain. ``n_outputs``: how many outputs the graph uses (trailing unused ones dropped).
    """

    op_type: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 17
    domain: str = ""
    n_outputs: int = 1

    def attr(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when the node does not set it."""
        return self.attrs.get(key, default)

    def where(self) -> str:
        """``op_type`` and node name, for messages: ``LSTM node '/rnn/LSTM'``."""
        return f"{self.op_type} node {self.name!r}" if self.name else f"{self.op_type} node"


@dataclass(frozen=True)
class Registered:
    """A registered operator: the function and an optional load-time ``check(node)`` that
    raises :class:`OpNotSupported` for attribute combinations the function cannot run."""

    fn: OpFn
    check: Callable[[Node], None] | None = None


OPS: dict[tuple[str, str], Registered] = {}


def op(
    *op_types: str, domain: str = "", check: Callable[[Node], None] | None = None
) -> Callable[[OpFn], OpFn]:
    """Register the decorated function for each of ``op_types`` in ``domain`` ("" = ai.onnx)."""

    def register(fn: OpFn) -> OpFn:
        for op_type in op_types:
            key = (domain, op_type)
            if key in OPS:
                raise RuntimeError(
                    f"ONNX operator {domain or 'ai.onnx'}::{op_type} registered twice"
                )
            OPS[key] = Registered(fn, check)
        return fn

    return register


def lookup(domain: str, op_type: str) -> Registered | None:
    """The registered operator, or None. ``ai.onnx`` is the same domain as ""."""
    return OPS.get(("" if domain == "ai.onnx" else domain, op_type))
