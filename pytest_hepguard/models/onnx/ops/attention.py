"""The ``Attention`` operator (ai.onnx opset 23 on), on ``F.scaled_dot_product_attention``.

Shapes, 4-D form: Q ``[batch, q_heads, q_seq, head]``, K ``[batch, kv_heads, kv_seq, head]``,
V ``[batch, kv_heads, kv_seq, v_head]`` -> Y ``[batch, q_heads, q_seq, v_head]``. 3-D form
(``q_num_heads``/``kv_num_heads`` given): Q ``[batch, q_seq, q_heads*head]``, K and V
``[batch, kv_seq, kv_heads*head]`` -> Y ``[batch, q_seq, q_heads*v_head]``. ``kv_heads`` may
divide ``q_heads`` (grouped-query attention). ``past_key``/``past_value`` ``[batch, kv_heads,
past, head]`` are prepended to K and V, and the results are the present_key/present_value
outputs. ``attn_mask`` (bool: True attends; float: added to the scores) broadcasts to
``[batch, q_heads, q_seq, past+kv_seq]``; a shorter last axis is padded with "do not attend".
``is_causal`` lets query ``i`` attend key ``j <= i + past``. ``softcap > 0`` caps the scores
(``softcap * tanh(s / softcap)``) before the mask is added, computed explicitly.

Not supported: the qk_matmul_output output, ``nonpad_kv_seqlen`` (opset 24), sliding windows
(opset 25). Softmax runs in the inputs' dtype (``softmax_precision`` is ignored).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import Node, OpNotSupported, op


def _check_attention(node: Node) -> None:
    """Load-time check: no qk_matmul_output, no sliding window."""
    if node.opset < 23:
        raise OpNotSupported(f"{node.where()}: ai.onnx Attention needs opset 23 or later")
    if node.n_outputs > 3:
        raise OpNotSupported(f"{node.where()}: the qk_matmul_output output is not supported")
    if node.attr("left_window_size", -1) != -1 or node.attr("right_window_size", -1) != -1:
        raise OpNotSupported(f"{node.where()}: sliding-window attention is not supported")


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[batch, seq, heads*size]`` -> ``[batch, heads, seq, size]``."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _with_causal(
    mask: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor, offset: int
) -> torch.Tensor:
    """``mask`` combined with the causal rule ``key <= query + offset``, broadcast to
    ``[..., q_seq, kv_seq]`` of the 4-D q and k; bool stays bool, a float mask gets -inf where
    causality forbids."""
    allowed = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril(offset)
    if mask is None:
        return allowed
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, -math.inf)


def _softcapped(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None,
    softcap: float,
) -> torch.Tensor:
    """Attention with capped scores, written out; 4-D shapes as in the module docstring."""
    if q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = softcap * torch.tanh(scores / softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, dim=-1) @ v


@op("Attention", check=_check_attention)
def attention(
    node: Node,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    past_key: torch.Tensor | None = None,
    past_value: torch.Tensor | None = None,
    nonpad_kv_seqlen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention; returns (Y, present_key, present_value)."""
    if nonpad_kv_seqlen is not None:
        raise OpNotSupported(f"{node.where()}: the nonpad_kv_seqlen input is not supported")
    three_d = q.dim() == 3
    if three_d:
        q = _heads_first(q, node.attr("q_num_heads"))
        k = _heads_first(k, node.attr("kv_num_heads"))
        v = _heads_first(v, node.attr("kv_num_heads"))
    past = 0
    if past_key is not None:  # ONNX requires past_value with it
        past = past_key.shape[2]
        k, v = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)
    mask = attn_mask
    if mask is not None and mask.shape[-1] < k.shape[2]:
        fill = False if mask.dtype == torch.bool else -math.inf
        mask = F.pad(mask, (0, k.shape[2] - mask.shape[-1]), value=fill)
    scale = node.attr("scale")
    softcap = node.attr("softcap", 0.0)
    causal = bool(node.attr("is_causal", 0))
    if causal and (past or mask is not None or softcap > 0):
        mask, causal = _with_causal(mask, q, k, past), False
    if softcap > 0:
        y = _softcapped(q, k, v, mask, scale, softcap)
    else:
        y = F.scaled_dot_product_attention(
            q, k, v, mask, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
    if three_d:
        y = y.transpose(1, 2).flatten(2)
    return y, k, v
