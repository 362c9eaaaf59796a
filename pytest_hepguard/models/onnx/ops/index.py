"""Indexing: Gather, GatherElements, GatherND, Slice, TopK, ScatterND, ScatterElements (and
its opset-9 name Scatter), NonZero, OneHot, Trilu.

Indices are int64 (or int32) tensors; negative indices count from the end of their axis. The
gathers select with differentiable torch indexing, so the gradient flows back to the selected
elements of the data (summed where an element is selected twice).
"""

from __future__ import annotations

import torch

from .registry import Node, OpNotSupported, op


def _wrap(indices: torch.Tensor, size: int) -> torch.Tensor:
    """``indices`` with negative entries counted from the end of an axis of ``size``."""
    return torch.where(indices < 0, indices + size, indices)


@op("Gather")
def gather(node: Node, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Slices of data along ``axis`` (default 0) picked by indices: output
    ``[*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]]``."""
    axis = node.attr("axis", 0) % data.dim()
    picked = data.index_select(axis, _wrap(indices, data.shape[axis]).reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1 :])


@op("GatherElements")
def gather_elements(node: Node, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``out[i][j][k] = data[indices[i][j][k]][j][k]`` for ``axis=0`` (``torch.gather``);
    output shaped like indices."""
    axis = node.attr("axis", 0) % data.dim()
    return torch.gather(data, axis, _wrap(indices, data.shape[axis]))


@op("GatherND")
def gather_nd(node: Node, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """With b = ``batch_dims`` and indices ``[*batch, *rest, k]``: for each batch entry, the
    slice of data at the k leading non-batch coordinates. Output
    ``[*batch, *rest, *data.shape[b + k:]]``."""
    b, k = node.attr("batch_dims", 0), indices.shape[-1]
    batch = data.shape[:b]
    n_batch = data.shape[:b].numel()
    flat_data = data.reshape(n_batch, *data.shape[b:])
    flat_idx = indices.reshape(n_batch, -1, k)
    coords = [_wrap(flat_idx[..., j], data.shape[b + j]) for j in range(k)]
    rows = torch.arange(n_batch, device=data.device)[:, None].expand_as(flat_idx[..., 0])
    picked = flat_data[(rows, *coords)]
    return picked.reshape(*batch, *indices.shape[b:-1], *data.shape[b + k :])


@op("Slice")
def slice_(
    node: Node,
    x: torch.Tensor,
    starts: torch.Tensor | None = None,
    ends: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
    steps: torch.Tensor | None = None,
) -> torch.Tensor:
    """x[start:end:step] along each of ``axes`` (default the first ``len(starts)``): the
    bounds are attributes before opset 10 (step 1) and inputs after. Out-of-range bounds clamp
    (``INT64_MAX`` means "to the end"); a negative step walks backwards, as in Python."""
    if node.opset < 10:
        begin, end, dims = node.attr("starts"), node.attr("ends"), node.attr("axes")
        strides = None
    else:
        begin, end = starts.tolist(), ends.tolist()
        dims = None if axes is None else axes.tolist()
        strides = None if steps is None else steps.tolist()
    dims = list(range(len(begin))) if dims is None else dims
    strides = [1] * len(begin) if strides is None else strides
    index = [slice(None)] * x.dim()
    flips = []
    for dim, lo, hi, step in zip(dims, begin, end, strides, strict=True):
        dim %= x.dim()
        n = x.shape[dim]
        lo, hi, step = slice(lo, hi, step).indices(n)
        if step < 0:  # the same elements, read forwards from the flipped axis
            flips.append(dim)
            lo, hi, step = n - 1 - lo, n - 1 - hi, -step
        index[dim] = slice(lo, hi, step)
    if flips:
        x = x.flip(flips)
    return x[tuple(index)]


@op("TopK")
def topk(
    node: Node, x: torch.Tensor, k: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest (``largest=0``: smallest) entries along ``axis`` (default -1), in order,
    ties broken by the lower index as ONNX specifies (a stable sort). k: attribute before
    opset 10, else a one-element input. Returns values (differentiable) and int64 indices,
    x's shape with ``k`` along ``axis``."""
    count = node.attr("k") if k is None else int(k.reshape(-1)[0])
    dim = node.attr("axis", -1) % x.dim()
    largest = bool(node.attr("largest", 1))
    values, indices = torch.sort(x, dim=dim, descending=largest, stable=True)
    return values.narrow(dim, 0, count), indices.narrow(dim, 0, count)


def _check_scatter_nd(node: Node) -> None:
    if node.attr("reduction", "none") not in ("none", "add"):
        raise OpNotSupported(f"reduction={node.attr('reduction')!r} (supported: none, add)")


@op("ScatterND", check=_check_scatter_nd)
def scatter_nd(
    node: Node, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    """A copy of data with the slices at indices ``[*rest, k]`` replaced by (``reduction=add``:
    increased by) updates ``[*rest, *data.shape[k:]]``."""
    coords = tuple(_wrap(indices[..., j], data.shape[j]) for j in range(indices.shape[-1]))
    return data.index_put(coords, updates, accumulate=node.attr("reduction", "none") == "add")


#: ScatterElements' ``reduction`` -> ``torch.scatter_reduce``'s.
_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _check_scatter_elements(node: Node) -> None:
    if node.attr("reduction", "none") not in ("none", *_SCATTER_REDUCE):
        raise OpNotSupported(f"reduction={node.attr('reduction')!r}")


@op("ScatterElements", "Scatter", check=_check_scatter_elements)
def scatter_elements(
    node: Node, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    """A copy of data with ``data[indices[i][j]][j] = updates[i][j]`` for ``axis=0``
    (``torch.scatter``), or combined with the data by ``reduction``."""
    axis = node.attr("axis", 0) % data.dim()
    indices = _wrap(indices, data.shape[axis])
    reduction = node.attr("reduction", "none")
    if reduction == "none":
        return data.scatter(axis, indices, updates)
    return data.scatter_reduce(axis, indices, updates, _SCATTER_REDUCE[reduction])


@op("NonZero")
def non_zero(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Coordinates of the non-zero entries of x, int64 ``[x.dim(), n_nonzero]``."""
    return torch.nonzero(x).t()


@op("OneHot")
def one_hot(
    node: Node, indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """``values[1]`` where the new axis ``axis`` (default -1, size ``depth``) equals the index,
    ``values[0]`` elsewhere (also for indices outside ``[-depth, depth)``). Output
    ``indices.shape`` with ``depth`` inserted at ``axis``."""
    n = int(depth.reshape(-1)[0])
    idx = _wrap(indices.long(), n)
    axis = node.attr("axis", -1) % (idx.dim() + 1)
    classes = torch.arange(n, device=idx.device).reshape(n, *[1] * (idx.dim() - axis))
    return torch.where(idx.unsqueeze(axis) == classes, values[1], values[0])


@op("Trilu")
def trilu(node: Node, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    """The upper (``upper=1``, default) or lower triangle of the last two axes from diagonal
    k (default 0); the rest zero."""
    diagonal = 0 if k is None else int(k)
    return torch.triu(x, diagonal) if node.attr("upper", 1) else torch.tril(x, diagonal)
