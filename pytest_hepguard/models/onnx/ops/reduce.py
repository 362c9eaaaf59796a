"""Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceSumSquare, ReduceLogSum, ReduceLogSumExp, and ArgMax/ArgMin.

``Reduce*`` take ``axes`` from the attribute (ReduceSum before opset 13, the others before 18)
or from the optional second input (later opsets); no axes reduces every axis, unless
``noop_with_empty_axes=1``, which returns the input. ``keepdims`` (default 1) keeps reduced
axes with size 1. Output ``[*x.shape]`` without (or with size-1) reduced axes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .registry import Node, op

#: A reduction over ``dims`` (non-empty, non-negative), as ``fn(x, dims, keepdim)``.
Reduction = Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]


def _prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    """``torch.prod`` over several axes (torch's takes one at a time), from the last one."""
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim, keepdim=keepdim)
    return x


#: ONNX name -> reduction. L1/L2 use ``torch.linalg.vector_norm`` (as ``x.norm(dim=...)`` does),
#: whose gradient at a zero vector is 0, not NaN.
_REDUCTIONS: dict[str, Reduction] = {
    "ReduceSum": lambda x, dims, keep: torch.sum(x, dims, keepdim=keep),
    "ReduceMean": lambda x, dims, keep: torch.mean(x, dims, keepdim=keep),
    "ReduceMax": lambda x, dims, keep: torch.amax(x, dims, keepdim=keep),
    "ReduceMin": lambda x, dims, keep: torch.amin(x, dims, keepdim=keep),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, dims, keep: torch.linalg.vector_norm(x, 1, dims, keepdim=keep),
    "ReduceL2": lambda x, dims, keep: torch.linalg.vector_norm(x, 2, dims, keepdim=keep),
    "ReduceSumSquare": lambda x, dims, keep: torch.sum(x * x, dims, keepdim=keep),
    "ReduceLogSum": lambda x, dims, keep: torch.log(torch.sum(x, dims, keepdim=keep)),
    "ReduceLogSumExp": lambda x, dims, keep: torch.logsumexp(x, dims, keepdim=keep),
}


def _register_reduction(name: str, reduction: Reduction) -> None:
    def reduce(node: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        listed = node.attr("axes") if axes is None else axes.tolist()
        if not listed and node.attr("noop_with_empty_axes", 0):
            return x
        dims = tuple(range(x.dim())) if not listed else tuple(a % x.dim() for a in listed)
        return reduction(x, dims, bool(node.attr("keepdims", 1)))

    reduce.__doc__ = f"ONNX {name} of x over ``axes`` (attribute or input)."
    op(name)(reduce)


for _name, _reduction in _REDUCTIONS.items():
    _register_reduction(_name, _reduction)


def _arg_extremum(node: Node, x: torch.Tensor, fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Index (int64) of the first extremum along ``axis`` (the last with
    ``select_last_index=1``); ``keepdims`` keeps the axis with size 1."""
    dim = node.attr("axis", 0) % x.dim()
    keep = bool(node.attr("keepdims", 1))
    if not node.attr("select_last_index", 0):
        return fn(x, dim, keepdim=keep)
    return x.shape[dim] - 1 - fn(x.flip(dim), dim, keepdim=keep)


@op("ArgMax")
def arg_max(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Index of the maximum along ``axis``."""
    return _arg_extremum(node, x, torch.argmax)


@op("ArgMin")
def arg_min(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Index of the minimum along ``axis``."""
    return _arg_extremum(node, x, torch.argmin)
