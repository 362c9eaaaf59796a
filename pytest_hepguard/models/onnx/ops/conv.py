"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool.

Tensors are ``[N, C, *spatial]`` with 1 to 3 spatial axes. Each operator runs the kernel the
torch layer uses (``F.conv1d``/``F.conv2d``/``F.conv3d``, ``F.max_pool2d`` ...). Symmetric pads go
to the kernel's own ``padding``; asymmetric pads (and ``auto_pad=SAME_*`` with an odd total) are
applied first with an explicit ``F.pad`` (zeros for convolution and average pooling, ``-inf`` for
max pooling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .registry import Node, OpNotSupported, op

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}
_MAX_POOL: dict[int, Callable[..., torch.Tensor]] = {
    1: F.max_pool1d,
    2: F.max_pool2d,
    3: F.max_pool3d,
}
_AVG_POOL: dict[int, Callable[..., torch.Tensor]] = {
    1: F.avg_pool1d,
    2: F.avg_pool2d,
    3: F.avg_pool3d,
}
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _spatial_rank(node: Node, x: torch.Tensor) -> int:
    """Number of spatial axes of ``x`` ``[N, C, *spatial]``; 1 to 3 are supported."""
    n = x.dim() - 2
    if n not in _CONV:
        raise OpNotSupported(f"{node.where()}: {n} spatial axes (only 1 to 3 are supported)")
    return n


def _pads(
    node: Node,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis from ``pads`` or ``auto_pad``.

    ``SAME_*`` pads so that the output size is ``ceil(size / stride)``; an odd total puts the
    extra element at the end (``SAME_UPPER``) or at the beginning (``SAME_LOWER``).
    """
    n = len(kernel)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            first = total - total // 2 if auto_pad == "SAME_LOWER" else total // 2
            begin.append(first)
            end.append(total - first)
        return begin, end
    pads = list(node.attr("pads", [0] * (2 * n)))
    return pads[:n], pads[n:]


def _pad_arg(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX-style begin/end lists -> the ``F.pad`` argument (last axis first)."""
    return [p for b, e in zip(reversed(begin), reversed(end), strict=True) for p in (b, e)]


def _check_window(node: Node) -> None:
    """Load-time check shared by the convolution and pooling operators."""
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in _AUTO_PADS:
        raise OpNotSupported(f"{node.where()}: auto_pad={auto_pad!r} is not an ONNX value")
    kernel = node.attr("kernel_shape")
    if kernel is not None and len(kernel) not in _CONV:
        raise OpNotSupported(
            f"{node.where()}: {len(kernel)} spatial axes (only 1 to 3 are supported)"
        )


@op("Conv", check=_check_window)
def conv(
    node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    """Convolution. x ``[N, C, *spatial]``, w ``[M, C/group, *kernel]``, b ``[M]`` ->
    ``[N, M, *out]``."""
    n = _spatial_rank(node, x)
    strides = node.attr("strides", [1] * n)
    dilations = node.attr("dilations", [1] * n)
    begin, end = _pads(node, x.shape[2:], w.shape[2:], strides, dilations)
    group = node.attr("group", 1)
    pointwise = all(k == 1 for k in w.shape[2:]) and all(st == 1 for st in strides)
    if group == 1 and pointwise and not any(begin) and not any(end):
        return _pointwise(x, w, b)
    if begin != end:
        x, begin = F.pad(x, _pad_arg(begin, end)), [0] * n
    return _CONV[n](x, w, b, strides, begin, dilations, group)


def _pointwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution (stride 1, no padding) as one batched matmul over the channels:
    x ``[N, C, *spatial]``, w ``[M, C, 1, ...]`` -> ``[N, M, *spatial]``. On the CPU this is
    about twice as fast as torch's conv kernels for ParticleNet's EdgeConv blocks
    ([N, C, P, k] inputs), with the same layout."""
    out = (w.flatten(1) @ x.flatten(2)).unflatten(2, x.shape[2:])
    return out if b is None else out + b.view(-1, *[1] * (x.dim() - 2))


def _transpose_crop(
    node: Node, in_sizes: Sequence[int], full: Sequence[int], strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    """What ConvTranspose removes at the begin and end of each axis of the unpadded result
    (spatial sizes ``full``): ``pads``, or the padding that ``output_shape`` (or ``auto_pad``,
    whose output size is ``size * stride``) implies."""
    n = len(full)
    auto_pad = node.attr("auto_pad", "NOTSET")
    shape = node.attr("output_shape")
    if shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = [size * s for size, s in zip(in_sizes, strides, strict=True)]
    if shape is None:
        if auto_pad == "VALID":
            return [0] * n, [0] * n
        pads = list(node.attr("pads", [0] * (2 * n)))
        return pads[:n], pads[n:]
    totals = [f - o for f, o in zip(full, list(shape)[-n:], strict=True)]
    small = [t // 2 for t in totals]
    large = [t - s for t, s in zip(totals, small, strict=True)]
    return (small, large) if auto_pad == "SAME_UPPER" else (large, small)


@op("ConvTranspose", check=_check_window)
def conv_transpose(
    node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    """Transposed convolution. x ``[N, C, *spatial]``, w ``[C, M/group, *kernel]``, b ``[M]``
    -> ``[N, M, *out]``, ``out = stride*(size-1) + output_padding + (kernel-1)*dilation + 1
    - pad_begin - pad_end``."""
    n = _spatial_rank(node, x)
    strides = node.attr("strides", [1] * n)
    dilations = node.attr("dilations", [1] * n)
    output_padding = node.attr("output_padding", [0] * n)
    y = _CONV_T[n](x, w, b, strides, 0, output_padding, node.attr("group", 1), dilations)
    begin, end = _transpose_crop(node, x.shape[2:], y.shape[2:], strides)
    if any(begin) or any(end):
        y = F.pad(y, [-p for p in _pad_arg(begin, end)])
    return y


def _check_max_pool(node: Node) -> None:
    """Window attributes, and no Indices output."""
    _check_window(node)
    if node.n_outputs > 1:
        raise OpNotSupported(f"{node.where()}: the Indices output is not supported")


def _check_avg_pool(node: Node) -> None:
    """Window attributes, and no dilations (torch's average pooling has none)."""
    _check_window(node)
    if any(d != 1 for d in node.attr("dilations", [])):
        raise OpNotSupported(f"{node.where()}: dilated average pooling is not supported")


@dataclass(frozen=True)
class _Window:
    """Geometry of a pooling node on one input (lists have one entry per spatial axis).

    ``native``: torch's own ``padding``/``ceil_mode`` arguments give the ONNX result (symmetric
    pads of at most half the window). Otherwise the input is padded explicitly by ``begin`` and
    ``end + extra`` and pooled in floor mode: ``extra`` are the elements past the end padding
    that ``ceil_mode`` adds, so that the output has ``ceil((size + pads - window) / stride) + 1``
    entries, less a last window that would start in the end padding.
    """

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begin: list[int]
    end: list[int]
    extra: list[int]
    native: bool


def _pool_window(node: Node, x: torch.Tensor, dilated_limit: bool) -> _Window:
    """The :class:`_Window` of a pooling node on x ``[N, C, *spatial]``. ``dilated_limit``:
    torch's padding limit is half the dilated window (max pooling), else half the kernel."""
    kernel = list(node.attr("kernel_shape"))
    n = len(kernel)
    if x.dim() - 2 != n:
        raise OpNotSupported(f"{node.where()}: kernel_shape {kernel} on a rank-{x.dim()} input")
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    sizes = list(x.shape[2:])
    begin, end = _pads(node, sizes, kernel, strides, dilations)
    windows = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    limits = windows if dilated_limit else kernel
    native = begin == end and all(p <= lim // 2 for p, lim in zip(begin, limits, strict=True))
    extra = [0] * n
    if not native and node.attr("ceil_mode", 0):
        for i, (size, win, s) in enumerate(zip(sizes, windows, strides, strict=True)):
            out = math.ceil((size + begin[i] + end[i] - win) / s) + 1
            if (out - 1) * s >= size + begin[i]:
                out -= 1
            extra[i] = max(0, (out - 1) * s + win - size - begin[i] - end[i])
    return _Window(kernel, strides, dilations, begin, end, extra, native)


def _plus(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Elementwise sum of two per-axis lists."""
    return [i + j for i, j in zip(a, b, strict=True)]


@op("MaxPool", check=_check_max_pool)
def max_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Max pooling, x ``[N, C, *spatial]`` -> ``[N, C, *out]`` (padding counts as -inf)."""
    w = _pool_window(node, x, dilated_limit=True)
    pool = _MAX_POOL[len(w.kernel)]
    if w.native:
        ceil_mode = bool(node.attr("ceil_mode", 0))
        return pool(x, w.kernel, w.strides, w.begin, w.dilations, ceil_mode=ceil_mode)
    x = F.pad(x, _pad_arg(w.begin, _plus(w.end, w.extra)), value=-math.inf)
    return pool(x, w.kernel, w.strides, 0, w.dilations)


@op("AveragePool", check=_check_avg_pool)
def average_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Average pooling, x ``[N, C, *spatial]`` -> ``[N, C, *out]``. ``count_include_pad=0``
    divides by the number of input elements in the window; 1 also counts the pads (not the
    elements past them that ``ceil_mode`` adds)."""
    w = _pool_window(node, x, dilated_limit=False)
    include_pad = bool(node.attr("count_include_pad", 0))
    pool = _AVG_POOL[len(w.kernel)]
    if w.native:
        ceil_mode = bool(node.attr("ceil_mode", 0))
        return pool(x, w.kernel, w.strides, w.begin, ceil_mode, include_pad)
    # Window sum / number of counted elements in the window (both as window means).
    padding = _pad_arg(w.begin, _plus(w.end, w.extra))
    counted = x.new_ones((1, 1, *x.shape[2:]))
    if include_pad:
        counted = F.pad(counted, _pad_arg(w.begin, w.end), value=1.0)
        counted = F.pad(counted, _pad_arg([0] * len(w.kernel), w.extra))
    else:
        counted = F.pad(counted, padding)
    return pool(F.pad(x, padding), w.kernel, w.strides) / pool(counted, w.kernel, w.strides)


@op("GlobalAveragePool")
def global_average_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes: ``[N, C, *spatial]`` -> ``[N, C, 1, ...]``."""
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Maximum over the spatial axes: ``[N, C, *spatial]`` -> ``[N, C, 1, ...]``."""
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
