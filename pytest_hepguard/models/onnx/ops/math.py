"""Linear algebra and normalised exponentials: Gemm, MatMul, Einsum, Softmax, LogSoftmax,
Hardmax, CumSum."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .registry import Node, op


@op("Gemm")
def gemm(
    node: Node, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None
) -> torch.Tensor:
    """``alpha * A' @ B' + beta * C`` with ``A'`` = A ``[M, K]`` (or its transpose with
    ``transA``), ``B'`` = B ``[K, N]`` (or its transpose with ``transB``), C broadcast to
    ``[M, N]``. The plain ``Linear`` form (``alpha = beta = 1``, C ``[N]``) runs ``F.linear``."""
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if node.attr("transA", 0):
        a = a.t()
    weight = b if node.attr("transB", 0) else b.t()  # F.linear's weight is [N, K]
    if alpha == 1.0 and beta == 1.0 and (c is None or c.dim() == 1):
        return F.linear(a, weight, c)
    y = F.linear(a, weight)
    if alpha != 1.0:
        y = alpha * y
    if c is None:
        return y
    return y + (c if beta == 1.0 else beta * c)


@op("MatMul")
def matmul(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """numpy ``matmul``: ``[..., M, K] @ [..., K, N] -> [..., M, N]`` (1-D operands as in numpy)."""
    return torch.matmul(a, b)


@op("Einsum")
def einsum(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """``torch.einsum`` of the ``equation`` attribute (numpy syntax, ``...`` allowed)."""
    return torch.einsum(node.attr("equation").replace(" ", ""), *xs)


def _along_axis(
    node: Node, x: torch.Tensor, fn: Callable[[torch.Tensor, int], torch.Tensor]
) -> torch.Tensor:
    """``fn(t, dim)`` applied the way the opset defines ``axis``: from opset 13 over the single
    axis (default -1); before, over x flattened to 2-D at ``axis`` (default 1), i.e. over all
    axes from ``axis`` on together. Output shaped like x."""
    if node.opset >= 13:
        return fn(x, node.attr("axis", -1))
    axis = node.attr("axis", 1) % max(x.dim(), 1)
    if axis >= x.dim() - 1:
        return fn(x, -1)
    return fn(x.flatten(axis), -1).reshape(x.shape)


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """1 at the first maximum along ``dim``, 0 elsewhere (constant: no gradient)."""
    hot = F.one_hot(x.argmax(dim), x.shape[dim]).to(x.dtype)
    return hot.movedim(-1, dim)


@op("Softmax")
def softmax(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Softmax along ``axis`` (see :func:`_along_axis` for the pre-13 semantics); shape of x."""
    return _along_axis(node, x, lambda t, dim: torch.softmax(t, dim))


@op("LogSoftmax")
def log_softmax(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Log-softmax along ``axis`` (pre-13: flattened at ``axis``); shape of x."""
    return _along_axis(node, x, lambda t, dim: torch.log_softmax(t, dim))


@op("Hardmax")
def hardmax(node: Node, x: torch.Tensor) -> torch.Tensor:
    """One-hot of the first maximum along ``axis`` (pre-13: flattened at ``axis``)."""
    return _along_axis(node, x, _hardmax)


@op("CumSum")
def cumsum(node: Node, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the scalar ``axis`` input; ``reverse`` sums from the end,
    ``exclusive`` leaves out the element itself (the first sum is 0). Shape of x."""
    dim = int(axis) % x.dim()
    reverse = bool(node.attr("reverse", 0))
    if reverse:
        x = x.flip(dim)
    y = torch.cumsum(x, dim)
    if node.attr("exclusive", 0):
        first = torch.zeros_like(y.narrow(dim, 0, 1))
        y = torch.cat([first, y.narrow(dim, 0, x.shape[dim] - 1)], dim)
    return y.flip(dim) if reverse else y
