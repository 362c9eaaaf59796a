"""Shapes and layout: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Concat, Split, Expand,
Tile, Transpose, Range, ConstantOfShape, Constant, Pad.

Shape tensors are int64 1-D tensors on the data's device, computed from the real tensors at run
time, so a symbolic (dynamic) batch axis works; operators that read one call ``.tolist()``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import Node, OpNotSupported, op


def _axes(node: Node, axes: torch.Tensor | None) -> list[int] | None:
    """``axes`` from the optional input (newer opsets) or else the attribute; None if neither."""
    if axes is not None:
        return axes.tolist()
    return node.attr("axes")


@op("Shape")
def shape(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``x.shape[start:end]`` as int64 ``[n]`` (``start``/``end`` clamp like Python slices)."""
    dims = x.shape[node.attr("start", 0) : node.attr("end")]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@op("Size")
def size(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Number of elements of x, an int64 scalar."""
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("Reshape")
def reshape(node: Node, x: torch.Tensor, new_shape: torch.Tensor) -> torch.Tensor:
    """x with shape ``new_shape``: -1 is inferred; 0 copies x's size at that position unless
    ``allowzero=1`` (then it is a literal 0)."""
    dims = new_shape.tolist()
    if not node.attr("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def flatten(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x as 2-D ``[prod(shape[:axis]), prod(shape[axis:])]`` (``axis`` default 1)."""
    axis = node.attr("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Squeeze")
def squeeze(node: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """x without the listed size-1 axes (without every size-1 axis when none are listed)."""
    listed = _axes(node, axes)
    if not listed:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in listed))


@op("Unsqueeze")
def unsqueeze(node: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    """x with size-1 axes inserted at ``axes`` (positions in the output)."""
    listed = _axes(node, axes) or []
    rank = x.dim() + len(listed)
    for axis in sorted(a % rank for a in listed):
        x = x.unsqueeze(axis)
    return x


@op("Concat")
def concat(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """The inputs joined along ``axis``."""
    return torch.cat(xs, node.attr("axis"))


@op("Split")
def split(
    node: Node, x: torch.Tensor, sizes: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """x cut along ``axis`` (default 0) into pieces of the ``split`` sizes (input, or attribute
    before opset 13), or else into ``num_outputs`` equal pieces (the last one smaller when the
    size does not divide). The graph sets ``num_outputs`` to the node's output count for the
    equal form of older opsets."""
    axis = node.attr("axis", 0) % x.dim()
    if sizes is not None:
        parts = sizes.tolist()
    elif node.attr("split"):
        parts = node.attr("split")
    else:
        n = node.attr("num_outputs")
        chunk = -(-x.shape[axis] // n)
        parts = [chunk] * (n - 1) + [x.shape[axis] - chunk * (n - 1)]
    return torch.split(x, parts, axis)


@op("Expand")
def expand(node: Node, x: torch.Tensor, new_shape: torch.Tensor) -> torch.Tensor:
    """x broadcast with ``new_shape`` (bidirectionally: 1s in ``new_shape`` keep x's sizes)."""
    return x.expand(torch.broadcast_shapes(x.shape, tuple(new_shape.tolist())))


@op("Tile")
def tile(node: Node, x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    """x repeated ``repeats[i]`` times along axis i."""
    return x.repeat(repeats.tolist())


@op("Transpose")
def transpose(node: Node, x: torch.Tensor) -> torch.Tensor:
    """x with axes permuted by ``perm`` (default: reversed)."""
    return x.permute(node.attr("perm") or list(reversed(range(x.dim()))))


@op("Range")
def arange(
    node: Node, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor
) -> torch.Tensor:
    """``[start, start + delta, ...]`` below ``limit`` (above, for a negative delta); 1-D, of
    start's dtype."""
    return torch.arange(
        start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device
    )


@op("ConstantOfShape")
def constant_of_shape(node: Node, new_shape: torch.Tensor) -> torch.Tensor:
    """A tensor of shape ``new_shape`` filled with the one-element ``value`` attribute (default
    float32 0), of its dtype."""
    value = node.attr("value")
    if value is None:
        value = torch.zeros(1)
    return torch.full(new_shape.tolist(), value.item(), dtype=value.dtype, device=new_shape.device)


#: Constant's attribute -> the tensor it stands for (``value``/``sparse_value`` arrive decoded).
_CONSTANT_FORMS = {
    "value": lambda v: v,
    "sparse_value": lambda v: v,
    "value_float": lambda v: torch.tensor(v, dtype=torch.float32),
    "value_floats": lambda v: torch.tensor(v, dtype=torch.float32),
    "value_int": lambda v: torch.tensor(v, dtype=torch.int64),
    "value_ints": lambda v: torch.tensor(v, dtype=torch.int64),
}


def _check_constant(node: Node) -> None:
    if not any(key in node.attrs for key in _CONSTANT_FORMS):
        raise OpNotSupported(
            f"only numeric values are supported, not {', '.join(node.attrs) or 'no value'}"
        )


@op("Constant", check=_check_constant)
def constant(node: Node) -> torch.Tensor:
    """The tensor of whichever ``value*`` attribute the node sets."""
    key = next(key for key in _CONSTANT_FORMS if key in node.attrs)
    return _CONSTANT_FORMS[key](node.attrs[key])


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _check_pad(node: Node) -> None:
    if node.attr("mode", "constant") not in _PAD_MODES:
        raise OpNotSupported(f"mode={node.attr('mode')!r} (supported: {', '.join(_PAD_MODES)})")


def _source_index(mode: str, begin: int, end: int, n: int, device: torch.device) -> torch.Tensor:
    """For an axis of size ``n`` padded by ``begin``/``end`` (negative: cropped), the index in x
    of each output position: ``edge`` repeats the border, ``reflect`` mirrors without repeating
    it, ``wrap`` continues periodically."""
    i = torch.arange(-begin, n + end, device=device)
    if mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i % n
    period = 2 * (n - 1)
    j = i.abs() % period
    return torch.where(j >= n, period - j, j)


@op("Pad", check=_check_pad)
def pad(
    node: Node,
    x: torch.Tensor,
    pads: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
) -> torch.Tensor:
    """x padded by ``pads`` = ``[begin_0, ..., begin_k, end_0, ..., end_k]`` over ``axes``
    (default all): attributes ``pads``/``value`` before opset 11, inputs after; negative pads
    crop. ``constant`` fills with the value (default 0); the other modes copy from x."""
    mode = node.attr("mode", "constant")
    widths = node.attr("pads") if pads is None else pads.tolist()
    dims = [a % x.dim() for a in axes.tolist()] if axes is not None else list(range(x.dim()))
    begins, ends = widths[: len(dims)], widths[len(dims) :]
    if mode == "constant":
        fill = node.attr("value", 0.0) if value is None else value.item()
        flat = [0] * (2 * x.dim())  # F.pad order: last axis first, (begin, end) pairs
        for dim, begin, end in zip(dims, begins, ends, strict=True):
            flat[2 * (x.dim() - 1 - dim)] = begin
            flat[2 * (x.dim() - 1 - dim) + 1] = end
        return F.pad(x, flat, value=fill)
    for dim, begin, end in zip(dims, begins, ends, strict=True):
        if begin or end:
            x = x.index_select(dim, _source_index(mode, begin, end, x.shape[dim], x.device))
    return x
