"""Recurrent layers: LSTM and GRU, forward, reverse and bidirectional, ``layout`` 0 and 1.

Shapes (``layout=0``; ``layout=1`` swaps the sequence and batch axes of X, Y and the states):
X ``[seq, batch, input]``; W ``[dirs, gates*hidden, input]``; R ``[dirs, gates*hidden,
hidden]``; B ``[dirs, 2*gates*hidden]`` (input biases, then recurrent biases); initial_h/c
``[dirs, batch, hidden]``. Outputs Y ``[seq, dirs, batch, hidden]``, Y_h/Y_c ``[dirs, batch,
hidden]``.

Each direction runs on its own: the weights are reordered from ONNX gate order to torch's
(LSTM i,o,f,c -> i,f,g,o; GRU z,r,h -> r,z,n), then torch's LSTM/GRU kernel runs it (the reverse
direction on the time-flipped sequence). ONNX's default GRU (``linear_before_reset=0``, what Keras
exports) applies the reset gate before the recurrent matmul, which no torch kernel does: it runs
as an explicit, differentiable loop over time.

Activations other than the defaults (Keras exports GRUs with ``HardSigmoid``; DeepDoubleX does)
run as the same explicit loop, for LSTM too: Sigmoid, Tanh, Relu, HardSigmoid, LeakyRelu,
ThresholdedRelu, ScaledTanh, Affine, Elu, Softsign, Softplus, with ``activation_alpha`` /
``activation_beta`` consumed in order by the activations that take them (as onnxruntime reads
them), ONNX's defaults otherwise.

Not supported (the check, or for inputs the run, raises :class:`OpNotSupported`): other
activations, ``clip``, ``input_forget=1``, LSTM peepholes (a non-zero P), and
``sequence_lens`` entries shorter than the sequence (an all-full ``sequence_lens``, which some
converters write, is accepted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .registry import Node, OpNotSupported, op

#: direction -> whether each of its directions runs time-reversed.
_DIRECTIONS: dict[str, tuple[bool, ...]] = {
    "forward": (False,),
    "reverse": (True,),
    "bidirectional": (False, True),
}
#: ONNX gate blocks in torch's order: LSTM i,o,f,c -> i,f,c,o; GRU z,r,h -> r,z,h.
_GATE_ORDER: dict[str, list[int]] = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}
_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "LSTM": ("sigmoid", "tanh", "tanh"),
    "GRU": ("sigmoid", "tanh"),
}

#: One direction: (x ``[seq, batch, input]``, states ``[batch, hidden]`` each, torch-ordered
#: ``[w_ih, w_hh, b_ih, b_hh]``) -> (y ``[seq, batch, hidden]``, final states).
Direction = Callable[
    [torch.Tensor, tuple[torch.Tensor, ...], list[torch.Tensor]],
    tuple[torch.Tensor, tuple[torch.Tensor, ...]],
]


#: ONNX activation name (lower case) -> (function of (x, alpha, beta), default alpha, default
#: beta); None defaults mark a parameter the activation does not take.
_ACTIVATION_FNS: dict[str, tuple[Callable[..., torch.Tensor], float | None, float | None]] = {
    "sigmoid": (lambda x, a, b: torch.sigmoid(x), None, None),
    "tanh": (lambda x, a, b: torch.tanh(x), None, None),
    "relu": (lambda x, a, b: torch.relu(x), None, None),
    "hardsigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), 0.2, 0.5),
    "leakyrelu": (lambda x, a, b: F.leaky_relu(x, a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: torch.where(x > a, x, 0.0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * torch.tanh(b * x), 1.0, 1.0),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "elu": (lambda x, a, b: F.elu(x, a), 1.0, None),
    "softsign": (lambda x, a, b: F.softsign(x), None, None),
    "softplus": (lambda x, a, b: F.softplus(x), None, None),
}

Activation = Callable[[torch.Tensor], torch.Tensor]


def _activations(node: Node) -> list[tuple[Activation, ...]]:
    """Per direction, the node's activations (f, g[, h]) as functions of one tensor; raises
    :class:`OpNotSupported` for an unknown name or a list of the wrong length."""
    n_dirs = len(_DIRECTIONS[node.attr("direction", "forward")])
    per_dir = len(_ACTIVATIONS[node.op_type])
    names = [a.lower() for a in node.attr("activations") or _ACTIVATIONS[node.op_type] * n_dirs]
    if len(names) != per_dir * n_dirs:
        raise OpNotSupported(
            f"{node.where()}: {len(names)} activations for {n_dirs} direction(s) of {per_dir} each"
        )
    alphas = list(node.attr("activation_alpha") or [])
    betas = list(node.attr("activation_beta") or [])
    funcs: list[Activation] = []
    for name in names:
        if name not in _ACTIVATION_FNS:
            raise OpNotSupported(
                f"{node.where()}: activation {name!r} is not supported (supported: "
                f"{', '.join(sorted(_ACTIVATION_FNS))})"
            )
        fn, alpha, beta = _ACTIVATION_FNS[name]
        a = alphas.pop(0) if alpha is not None and alphas else alpha
        b = betas.pop(0) if beta is not None and betas else beta
        funcs.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    return [tuple(funcs[d * per_dir : (d + 1) * per_dir]) for d in range(n_dirs)]


def _is_default(node: Node) -> bool:
    """True when the node uses ONNX's default activations (torch's kernels apply)."""
    names = node.attr("activations")
    n_dirs = len(_DIRECTIONS[node.attr("direction", "forward")])
    return names is None or tuple(a.lower() for a in names) == _ACTIVATIONS[node.op_type] * n_dirs


def _check_rnn(node: Node) -> None:
    """Load-time check of the attributes shared by LSTM and GRU."""
    direction = node.attr("direction", "forward")
    if direction not in _DIRECTIONS:
        raise OpNotSupported(f"{node.where()}: direction={direction!r} is not an ONNX value")
    _activations(node)
    if node.attr("clip") is not None:
        raise OpNotSupported(f"{node.where()}: cell clipping (clip) is not supported")
    if node.attr("input_forget", 0):
        raise OpNotSupported(f"{node.where()}: input_forget=1 (coupled gates) is not supported")
    if node.attr("layout", 0) not in (0, 1):
        raise OpNotSupported(f"{node.where()}: layout={node.attr('layout')} is not an ONNX value")


def _reorder(t: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """Permute the gate blocks of ``t`` ``[gates*hidden, ...]`` into ``order``."""
    return t.unflatten(0, (len(order), -1))[list(order)].flatten(0, 1)


def _recurrent(
    node: Node,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor | None,
    sequence_lens: torch.Tensor | None,
    initial: Sequence[torch.Tensor | None],
    runs: Sequence[Direction],
) -> tuple[torch.Tensor, ...]:
    """Run direction ``d`` of an LSTM/GRU node with ``runs[d]``; returns (Y, *final states) in
    the node's layout. ``initial``: the initial-state inputs (None: zeros)."""
    batch_first = node.attr("layout", 0) == 1
    if batch_first:
        x = x.transpose(0, 1)
        initial = [None if s is None else s.transpose(0, 1) for s in initial]
    seq, batch = x.shape[:2]
    if sequence_lens is not None and bool((sequence_lens != seq).any()):
        raise OpNotSupported(
            f"{node.where()}: sequence_lens {sequence_lens.tolist()} shorter than the sequence "
            f"({seq}) are not supported"
        )
    time_reversed = _DIRECTIONS[node.attr("direction", "forward")]
    hidden = r.shape[-1]
    states = [x.new_zeros(len(time_reversed), batch, hidden) if s is None else s for s in initial]
    if b is None:
        b = x.new_zeros(len(time_reversed), 2 * w.shape[1])
    order = _GATE_ORDER[node.op_type]
    ys, finals = [], []
    for d, (reverse, run) in enumerate(zip(time_reversed, runs, strict=True)):
        params = [_reorder(t, order) for t in (w[d], r[d], *b[d].chunk(2))]
        y, final = run(x.flip(0) if reverse else x, tuple(s[d] for s in states), params)
        ys.append(y.flip(0) if reverse else y)
        finals.append(final)
    y = torch.stack(ys, 1)
    outs = [torch.stack(s) for s in zip(*finals, strict=True)]
    if batch_first:
        return y.permute(2, 0, 1, 3), *(s.transpose(0, 1) for s in outs)
    return y, *outs


def _lstm_direction(
    x: torch.Tensor, states: tuple[torch.Tensor, ...], params: list[torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One LSTM direction on torch's kernel; states (h, c)."""
    hx = [s.unsqueeze(0) for s in states]
    y, h, c = torch.lstm(x, hx, params, True, 1, 0.0, False, False, False)
    return y, (h[0], c[0])


def _gru_direction(
    x: torch.Tensor, states: tuple[torch.Tensor, ...], params: list[torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One GRU direction, ``linear_before_reset=1``, on torch's kernel; states (h,)."""
    y, h = torch.gru(x, states[0].unsqueeze(0), params, True, 1, 0.0, False, False, False)
    return y, (h[0],)


def _gru_loop(f: Activation, g: Activation, linear_before_reset: bool) -> Direction:
    """One GRU direction as a differentiable loop over time; states (h,).

    ``r, z = f(x W_rz + b_rz + h R_rz + c_rz)``; ``n = g(x W_n + b_n + (r * h) R_n + c_n)``, or
    with ``linear_before_reset`` ``n = g(x W_n + b_n + r * (h R_n + c_n))``; ``h = (1 - z) * n +
    z * h``.
    """

    def run(
        x: torch.Tensor, states: tuple[torch.Tensor, ...], params: list[torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        w_ih, w_hh, b_ih, b_hh = params
        (h,) = states
        hidden = h.shape[-1]
        gx = F.linear(x, w_ih, b_ih)
        gx_rz, gx_n = gx[..., : 2 * hidden], gx[..., 2 * hidden :]
        w_rz, w_n = w_hh[: 2 * hidden], w_hh[2 * hidden :]
        b_rz, b_n = b_hh[: 2 * hidden], b_hh[2 * hidden :]
        ys = []
        for t in range(x.shape[0]):
            r, z = f(gx_rz[t] + F.linear(h, w_rz, b_rz)).chunk(2, dim=-1)
            if linear_before_reset:
                n = g(gx_n[t] + r * F.linear(h, w_n, b_n))
            else:
                n = g(gx_n[t] + F.linear(r * h, w_n, b_n))
            h = (1 - z) * n + z * h
            ys.append(h)
        return torch.stack(ys), (h,)

    return run


def _lstm_loop(f: Activation, g: Activation, h_act: Activation) -> Direction:
    """One LSTM direction as a differentiable loop over time (non-default activations);
    states (h, c): ``i, f, o = f(.)``, ``c~ = g(.)``, ``c = f * c + i * c~``, ``h = o * h(c)``."""

    def run(
        x: torch.Tensor, states: tuple[torch.Tensor, ...], params: list[torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        w_ih, w_hh, b_ih, b_hh = params
        h, c = states
        gx = F.linear(x, w_ih, b_ih)
        ys = []
        for t in range(x.shape[0]):
            i, forget, cell, o = (gx[t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
            c = f(forget) * c + f(i) * g(cell)
            h = f(o) * h_act(c)
            ys.append(h)
        return torch.stack(ys), (h, c)

    return run


def _runs(node: Node, kernel: Direction | None, loop: Callable[..., Direction]) -> list[Direction]:
    """Per direction, torch's ``kernel`` when it applies (default activations), else the
    explicit ``loop`` built from the direction's activations."""
    if kernel is not None:
        return [kernel] * len(_DIRECTIONS[node.attr("direction", "forward")])
    return [loop(*acts) for acts in _activations(node)]


@op("LSTM", check=_check_rnn)
def lstm(
    node: Node,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor | None = None,
    sequence_lens: torch.Tensor | None = None,
    initial_h: torch.Tensor | None = None,
    initial_c: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """ONNX LSTM (4 gates); returns (Y, Y_h, Y_c), shapes in the module docstring."""
    if p is not None and bool(p.any()):
        raise OpNotSupported(f"{node.where()}: peephole connections (input P) are not supported")
    runs = _runs(node, _lstm_direction if _is_default(node) else None, _lstm_loop)
    return _recurrent(node, x, w, r, b, sequence_lens, (initial_h, initial_c), runs)


@op("GRU", check=_check_rnn)
def gru(
    node: Node,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor | None = None,
    sequence_lens: torch.Tensor | None = None,
    initial_h: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """ONNX GRU (3 gates); returns (Y, Y_h), shapes in the module docstring."""
    lbr = bool(node.attr("linear_before_reset", 0))
    kernel = _gru_direction if lbr and _is_default(node) else None
    runs = _runs(node, kernel, lambda f, g: _gru_loop(f, g, lbr))
    return _recurrent(node, x, w, r, b, sequence_lens, (initial_h,), runs)
