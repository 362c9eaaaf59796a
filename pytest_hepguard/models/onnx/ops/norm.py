"""Normalisation: BatchNormalization (inference), LayerNormalization, InstanceNormalization,
LpNormalization.

BatchNormalization, LayerNormalization and InstanceNormalization call ``F.batch_norm``,
``F.layer_norm`` and ``F.instance_norm``, the kernels of the torch layers, so a model exported
from torch gets its own numerics back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Node, OpNotSupported, op


def _check_batch_norm(node: Node) -> None:
    """Only the inference form: no ``training_mode``, no running-statistics outputs."""
    if node.attr("training_mode", 0):
        raise OpNotSupported(
            f"{node.where()}: training_mode=1 (batch statistics, running-mean updates) is not "
            "supported; export the model in eval mode"
        )
    if node.n_outputs > 1:
        raise OpNotSupported(
            f"{node.where()}: the running mean/variance outputs (training form) are not supported"
        )


@op("BatchNormalization", check=_check_batch_norm)
def batch_norm(
    node: Node,
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` per channel. x ``[N, C, *rest]``,
    the others ``[C]``; output like x."""
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, node.attr("epsilon", 1e-5))


@op("LayerNormalization")
def layer_norm(
    node: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Normalise over the axes from ``axis`` on. x ``[*outer, *inner]``; scale and bias
    broadcast to ``inner``. Returns Y (like x), and when the graph uses them Mean and InvStdDev
    ``[*outer, 1, ..., 1]``. The statistics are computed in x's dtype (``stash_type`` ignored).
    """
    axis = node.attr("axis", -1) % x.dim()
    inner = x.shape[axis:]
    eps = node.attr("epsilon", 1e-5)
    weight = scale.expand(inner)
    y = F.layer_norm(x, inner, weight, None if bias is None else bias.expand(inner), eps)
    if node.n_outputs == 1:
        return y, None, None
    var, mean = torch.var_mean(x, dim=tuple(range(axis, x.dim())), correction=0, keepdim=True)
    return y, mean, torch.rsqrt(var + eps)


@op("InstanceNormalization")
def instance_norm(
    node: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Normalise each (sample, channel) over its spatial axes. x ``[N, C, *spatial]``, scale
    and bias ``[C]``; output like x."""
    return F.instance_norm(x, weight=scale, bias=bias, eps=node.attr("epsilon", 1e-5))


def _check_lp_norm(node: Node) -> None:
    """ONNX allows p = 1 or 2 only."""
    if node.attr("p", 2) not in (1, 2):
        raise OpNotSupported(f"{node.where()}: p={node.attr('p')} (ONNX allows only 1 and 2)")


@op("LpNormalization", check=_check_lp_norm)
def lp_norm(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||_p`` along ``axis`` (no epsilon, as in ONNX); output like x."""
    norm = torch.linalg.vector_norm(
        x, ord=node.attr("p", 2), dim=node.attr("axis", -1), keepdim=True
    )
    return x / norm
