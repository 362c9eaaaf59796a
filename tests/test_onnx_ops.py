"""The ONNX bridge's operators (elementwise, math, reduce, shape, index families) and the graph
machinery around them: loading, folding, float64 mode, and the errors a user meets.

Two kinds of cases:

- small torch modules exported through every ``(exporter, opset)`` of ``EXPORTS`` with a
  dynamic batch axis (batch 3), run at batch 5: outputs against onnxruntime (1e-5), input
  gradients of ``sum(out * v)`` against torch autograd on the module (1e-5), and in float64
  mode against the float64 module (1e-6);
- single nodes built with ``onnx.helper`` in the forms exporters do not write (old opsets,
  attribute forms, rare attributes): outputs against onnxruntime, and for differentiable ones
  the float64 gradient against finite differences (``torch.autograd.gradcheck``).

An export the exporter itself cannot produce is skipped with the exporter's reason.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx_helpers import EXPORTS, export, ort_run, rel_err, vjp

from pytest_hepguard.exceptions import ModelError, UnsupportedOnnxOpError
from pytest_hepguard.models.onnx import OnnxGraph, load_onnx_graph

EXPORT_BATCH, RUN_BATCH = 3, 5


class Fn(torch.nn.Module):
    """``forward(x) = fn(self, x)``; keyword arguments become submodules or parameters. (The
    signature is explicit: torch.export takes ``*args`` for a single tuple input.)"""

    def __init__(self, fn: Callable[..., Any], **members: torch.nn.Module | torch.Tensor):
        super().__init__()
        self.fn = fn
        for name, member in members.items():
            if isinstance(member, torch.nn.Module):
                self.add_module(name, member)
            else:
                self.register_parameter(name, torch.nn.Parameter(member))

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self, x)


class Fn2(Fn):
    """``forward(a, b) = fn(self, a, b)``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Any:  # type: ignore[override]
        return self.fn(self, a, b)


@dataclass(frozen=True)
class Case:
    """A module (built seeded) and its input shapes without the batch axis."""

    build: Callable[[], torch.nn.Module]
    shapes: tuple[tuple[int, ...], ...]


def _knn_edges(m: Fn, points: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """ParticleNet's EdgeConv input: pairwise distances [B, P, P] -> the k nearest neighbours'
    indices (TopK) -> their features gathered [B, P, k, F] -> mean of (neighbour - centre)."""
    k = 3
    batch, n_points, n_feats = feats.shape
    inner = -2 * torch.matmul(points, points.transpose(2, 1))
    sq = torch.sum(points**2, dim=2, keepdim=True)
    dist = sq + inner + sq.transpose(2, 1)
    idx = (-dist).topk(k + 1, dim=-1)[1][:, :, 1:]
    base = torch.arange(batch).view(-1, 1, 1) * n_points
    flat = (idx + base).reshape(-1)
    neighbours = feats.reshape(batch * n_points, n_feats)[flat].view(batch, n_points, k, n_feats)
    return (neighbours - feats.unsqueeze(2)).mean(2)


def _attention(m: Fn, x: torch.Tensor) -> torch.Tensor:
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v


def _scatters(m: Fn, x: torch.Tensor) -> torch.Tensor:
    """Index assignment (ScatterND in dynamo exports), scatter and gather by argsort."""
    y = x.clone()
    y[:, 1] = x[:, 0] * 2
    y[:, 3:] = 0.5
    order = x.argsort(1)
    return y * x + torch.zeros_like(x).scatter(1, order, x * 2) + x.gather(1, order.flip(1))


def _masked_mean(m: Fn, x: torch.Tensor) -> torch.Tensor:
    """Mean over the particles whose first feature is positive: Where, and Clip(min=1) of the
    count. x [B, P, F] -> [B, F]."""
    mask = x[..., 0] > 0
    count = mask.float().sum(1, keepdim=True).clamp(min=1)
    return torch.where(mask[..., None], x, torch.zeros_like(x)).sum(1) / count


def _integer_ops(m: Fn, x: torch.Tensor) -> torch.Tensor:
    """Integer counts with truncating division and Python-style remainder, float fmod."""
    n = (x > 0).sum(-1, keepdim=True)
    q = torch.div(n * 7 - 9, 2, rounding_mode="trunc")
    r = torch.remainder(n * 5 - 7, 3)
    return x * (q + r).float() + torch.fmod(x * 3, 1.3)


def _compare_where(m: Fn, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mask = ((a > b) & (a < 1.0)) | ((a == b) ^ (b >= 0.2))
    out = torch.where(mask, a * 2, b) + torch.where(a <= 0, a, torch.zeros_like(a))
    return out + (~mask).float() * b + torch.isnan(a).float()


def _activations(x: torch.Tensor) -> list[torch.Tensor]:
    return [
        F.relu(x),
        F.leaky_relu(x, 0.1),
        F.elu(x),
        F.selu(x),
        F.celu(x, 0.7),
        F.relu6(x * 4),
        F.hardtanh(x, -0.5, 0.5),
        torch.sigmoid(x),
        torch.tanh(x),
        F.softplus(x),
        F.softsign(x),
        F.mish(x),
        F.hardsigmoid(x * 3),
        F.hardswish(x * 3),
        F.silu(x),
        F.gelu(x),
        F.gelu(x, approximate="tanh"),
    ]


def _unary_math(m: Fn, x: torch.Tensor) -> torch.Tensor:
    smooth = torch.exp(x * 0.5) + torch.log(x.abs() + 1) + torch.sqrt(x.abs() + 0.1)
    smooth = smooth + torch.reciprocal(x.abs() + 1) + torch.sin(x) + torch.cos(x)
    smooth = smooth + torch.atan(x) + torch.erf(x) - x.abs() + torch.sign(x) * x
    return smooth + torch.floor(x) + torch.ceil(x) + torch.round(x * 3)


def _reductions(m: Fn, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x [B, 4, 5]: reductions over one axis, two axes with keepdims, and norms."""
    return (
        x.sum(1) + x.amax(1) + x.amin(1) + x.logsumexp(1) + (x * 0.5 + 1).prod(1),
        x.mean((1, 2), keepdim=True),
        x.norm(dim=-1) + x.norm(p=1, dim=-1) + (x**2).sum(-1),
        x.max(dim=1).values + x.var(dim=1),
    )


def _layout(m: Fn, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x [B, 4, 6]: view, flatten, reshape with -1, permute, transpose."""
    return (
        x.view(x.shape[0], 2, 12).flatten(1).reshape(-1, 3, 8) * 2 + x.reshape(x.shape[0], 3, 8),
        torch.flatten(x, 1),
        torch.nn.Flatten()(x) + 1,
        x.unsqueeze(1).permute(0, 3, 1, 2) * 2,
        x.transpose(1, 2),
    )


def _topk_argmax(m: Fn, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    values, indices = x.topk(3, dim=-1)
    return (
        values * 2,
        x.gather(-1, indices) + 1,
        x.topk(2, dim=-1, largest=False)[0],
        x.gather(-1, x.argmax(-1, keepdim=True)) * 2 + x.gather(-1, x.argmin(-1, keepdim=True)),
    )


def _dynamic_shapes(m: Fn, x: torch.Tensor) -> torch.Tensor:
    """Tensors sized by the (dynamic) batch: Range, ConstantOfShape, numel."""
    rows = torch.arange(x.shape[0], dtype=x.dtype)[:, None] * 0.1 + torch.arange(4.0)
    filled = [torch.zeros(x.shape[0], 2), torch.ones_like(x) * 2, x.new_full((x.shape[0], 1), 3.0)]
    return torch.cat([x + rows, *filled, x / x.numel() + x.sum() / x.shape[0]], 1)


CASES: dict[str, Case] = {
    "activations": Case(lambda: Fn(lambda m, x: torch.cat(_activations(x), -1)), ((8,),)),
    "prelu": Case(lambda: Fn(lambda m, x: m.act(x), act=torch.nn.PReLU(4, 0.3)), ((4, 6),)),
    "unary_math": Case(lambda: Fn(_unary_math), ((6,),)),
    "binary_broadcast": Case(
        lambda: Fn2(
            lambda m, a, b: (
                a + b - b * 2 + a * b,
                a / (b.abs() + 1) + (a.abs() + 0.5) ** b + a**2 + a.pow(3),
            )
        ),
        ((4, 1), (1, 5)),
    ),
    "min_max_clamp": Case(
        lambda: Fn2(
            lambda m, a, b: (
                torch.maximum(a, b)
                + torch.minimum(a, b * 0.5)
                + a.clamp(-0.5, 0.5)
                + a.clamp(min=0.1)
                + a.clamp(max=b)
            )
        ),
        ((6,), (6,)),
    ),
    "integer_ops": Case(lambda: Fn(_integer_ops), ((6,),)),
    "compare_where": Case(lambda: Fn2(_compare_where), ((6,), (6,))),
    "casts": Case(
        lambda: Fn(
            lambda m, x: (
                x.to(torch.int32).float()
                + x.double().mul(2).sum(-1, keepdim=True).float()
                + x * (x > 0).to(x.dtype)
            )
        ),
        ((6,),),
    ),
    "linear": Case(
        lambda: Fn2(
            lambda m, a, b: (m.mlp(a), m.lin(b)),
            mlp=torch.nn.Sequential(
                torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3, bias=False)
            ),
            lin=torch.nn.Linear(5, 4),
        ),
        ((6,), (7, 5)),
    ),
    "matmul_einsum": Case(
        lambda: Fn2(
            lambda m, a, b: (
                a @ b + a @ m.w,
                torch.einsum("bij,bjk->bik", a, b),
                torch.einsum("bij,bij->bi", a, a),
            ),
            w=torch.randn(4, 5),
        ),
        ((3, 4), (4, 5)),
    ),
    "softmax_middle_axis": Case(
        lambda: Fn(lambda m, x: (torch.softmax(x, 2), torch.log_softmax(x, 1))), ((3, 4, 5),)
    ),
    "reductions": Case(lambda: Fn(_reductions), ((4, 5),)),
    "masked_mean": Case(lambda: Fn(_masked_mean), ((6, 3),)),
    "layout": Case(lambda: Fn(_layout), ((4, 6),)),
    "cat_split_chunk": Case(
        lambda: Fn2(
            lambda m, a, b: (
                torch.cat([a, b], 1).split([3, 7], 1)[0] * 2,
                torch.cat([a, b], 1).split([3, 7], 1)[1] + 1,
                a.chunk(3, 1)[0] - a.chunk(3, 1)[2],
            )
        ),
        ((6,), (4,)),
    ),
    "expand_repeat_squeeze": Case(
        lambda: Fn(
            lambda m, x: (
                x.expand(-1, 3, -1) + x.repeat(1, 3, 1),
                x.squeeze(1).unsqueeze(-1) * x.squeeze(1).unsqueeze(1),
            )
        ),
        ((1, 4),),
    ),
    "gather_index": Case(
        lambda: Fn(
            lambda m, x: (
                x[:, 2]
                + x.index_select(1, torch.tensor([0, 4, 6])).sum(1)
                + x[:, [1, 1, 5]].mean(1)
                + x[:, -1]
            )
        ),
        ((7, 3),),
    ),
    "slice_steps": Case(
        lambda: Fn(lambda m, x: (x[:, 1:8:2], x[:, -3:], x[:, ::3], x[:, 2:-2] * 2)), ((10,),)
    ),
    "flip_cumsum": Case(
        lambda: Fn(
            lambda m, x: (
                x + x.flip(1) * 0.5 + x.flip(-1) * x.flip(1, 2),
                x.cumsum(1) + x.flip(1).cumsum(1).flip(1),
            )
        ),
        ((5, 4),),
    ),
    "topk_argmax": Case(lambda: Fn(_topk_argmax), ((8,),)),
    "pad": Case(
        lambda: Fn(
            lambda m, x: (
                F.pad(x, (1, 2)),
                F.pad(x, (2, 1), mode="reflect"),
                F.pad(x, (1, 1), mode="replicate"),
                F.pad(x, (1, 0, 0, 1), value=0.5),
            )
        ),
        ((3, 6),),
    ),
    "knn_edges": Case(lambda: Fn2(_knn_edges), ((8, 2), (8, 4))),
    "dynamic_shapes": Case(lambda: Fn(_dynamic_shapes), ((4,),)),
    "attention_math": Case(lambda: Fn(_attention, qkv=torch.nn.Linear(8, 24)), ((5, 8),)),
    "scatters": Case(lambda: Fn(_scatters), ((5,),)),
    "triu_one_hot": Case(
        lambda: Fn2(
            lambda m, a, b: (
                torch.triu(a, 1) + torch.tril(a) * 2,
                F.one_hot(b.argmax(-1), 5).to(b.dtype) * b,
            )
        ),
        ((4, 4), (5,)),
    ),
}


def _assert_grads_close(
    ours: list[torch.Tensor | None], theirs: list[torch.Tensor | None], tol: float
) -> None:
    """Gradients agree to ``tol`` relative; an input the reference does not depend on (None,
    e.g. points that only choose neighbours) must get no or a zero gradient."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if b is None:
            assert a is None or not a.any(), i
        else:
            assert rel_err(a, b) < tol, (i, rel_err(a, b))


def _inputs(case: Case, batch: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((batch, *shape), generator=gen) for shape in case.shapes]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``get(case, exporter, opset) -> (model, module)``, each export made once per module;
    an export the exporter fails on is skipped with its reason."""
    folder = tmp_path_factory.mktemp("onnx_ops")
    cache: dict[tuple[str, str, int], tuple[onnx.ModelProto, torch.nn.Module] | str] = {}

    def get(name: str, exporter: str, opset: int) -> tuple[onnx.ModelProto, torch.nn.Module]:
        key = (name, exporter, opset)
        if key not in cache:
            torch.manual_seed(0)
            module = CASES[name].build().eval()
            path = folder / f"{name}-{exporter}-{opset}.onnx"
            try:
                model = export(module, _inputs(CASES[name], EXPORT_BATCH), path, exporter, opset)
            except Exception as exc:  # the exporter's own failure, outside the bridge
                cache[key] = f"{exporter} exporter (opset {opset}) fails: {str(exc)[:300]}"
            else:
                cache[key] = (model, module)
        entry = cache[key]
        if isinstance(entry, str):
            pytest.skip(entry)
        return entry

    return get


EXPORT_IDS = [f"{exporter}{opset}" for exporter, opset in EXPORTS]


@pytest.mark.parametrize(("exporter", "opset"), EXPORTS, ids=EXPORT_IDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_export_matches_onnxruntime_and_torch_gradients(exported, name, exporter, opset) -> None:
    """At a batch size other than the export's: outputs equal onnxruntime's and input
    gradients equal torch autograd's on the original module, both to 1e-5 relative."""
    model, module = exported(name, exporter, opset)
    xs = _inputs(CASES[name], RUN_BATCH, seed=1)
    graph = OnnxGraph(model, source=f"{name}.onnx")
    outs, grads = vjp(graph, xs)
    runtime = ort_run(model, xs)
    assert len(outs) == len(runtime)
    for i, (ours, theirs) in enumerate(zip(outs, runtime, strict=True)):
        assert ours.shape == theirs.shape, (i, ours.shape, theirs.shape)
        assert rel_err(ours, theirs) < 1e-5, (i, rel_err(ours, theirs))
    _assert_grads_close(grads, vjp(module, xs)[1], 1e-5)


@pytest.mark.parametrize(("exporter", "opset"), EXPORTS, ids=EXPORT_IDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_export_in_float64_matches_the_float64_module(exported, name, exporter, opset) -> None:
    """``graph.double()`` runs entirely in float64 (every float output is float64) and its
    input gradients equal the float64 module's to 1e-6 relative."""
    model, module = exported(name, exporter, opset)
    xs = [x.double() for x in _inputs(CASES[name], RUN_BATCH, seed=2)]
    graph = OnnxGraph(model).double()
    outs, grads = vjp(graph, xs)
    assert all(o.dtype == torch.float64 for o in outs if o.is_floating_point())
    _assert_grads_close(grads, vjp(copy.deepcopy(module).double(), xs)[1], 1e-6)


# -- single nodes in the forms exporters do not write ----------------------------------------

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


def _f(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _i(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass(frozen=True)
class Single:
    """One ONNX node: its inputs (the first ``n_runtime`` are graph inputs, the others
    initializers; None = omitted), attributes, opset, output count, and whether its first
    output is differentiable in its float graph inputs."""

    op_type: str
    inputs: tuple[np.ndarray | None, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 13
    n_runtime: int = 1
    n_outputs: int = 1
    grad: bool = True


SINGLES: dict[str, Single] = {
    "softmax11_flatten_axis1": Single("Softmax", (_f(2, 3, 4),), {"axis": 1}, 11),
    "softmax11_default_axis": Single("Softmax", (_f(2, 3, 4),), {}, 11),
    "logsoftmax11_axis0": Single("LogSoftmax", (_f(2, 3, 4),), {"axis": 0}, 11),
    "hardmax11_axis1": Single("Hardmax", (_f(2, 3, 4),), {"axis": 1}, 11, grad=False),
    "hardmax13_axis1": Single("Hardmax", (_f(2, 3, 4),), {"axis": 1}, 13, grad=False),
    "reducesum11_attr": Single("ReduceSum", (_f(2, 3, 4),), {"axes": [1], "keepdims": 0}, 11),
    "reducesum13_input": Single("ReduceSum", (_f(2, 3, 4), _i(0, -1)), {}, 13),
    "reducesum13_all": Single("ReduceSum", (_f(2, 3, 4),), {"keepdims": 0}, 13),
    "reducesum13_noop": Single("ReduceSum", (_f(2, 3, 4), _i()), {"noop_with_empty_axes": 1}, 13),
    "reducemean13_attr": Single("ReduceMean", (_f(2, 3, 4),), {"axes": [-1]}, 13),
    "reducel2_13_attr": Single("ReduceL2", (_f(2, 3, 4),), {"axes": [0, 2]}, 13),
    "reducel1_13_attr": Single("ReduceL1", (_f(2, 3, 4),), {"axes": [1], "keepdims": 0}, 13),
    "reducemax18_input": Single("ReduceMax", (_f(2, 3, 4), _i(1)), {"keepdims": 0}, 18),
    "reducemin11_attr": Single("ReduceMin", (_f(2, 3, 4),), {"axes": [2]}, 11),
    "reduceprod13_attr": Single("ReduceProd", (_f(2, 3, 4),), {"axes": [1, 2]}, 13),
    "reducesumsquare13": Single("ReduceSumSquare", (_f(2, 3, 4),), {"axes": [1]}, 13),
    "reducelogsumexp13": Single("ReduceLogSumExp", (_f(2, 3, 4),), {"axes": [2]}, 13),
    "reducelogsum18": Single(
        "ReduceLogSum", (np.abs(_f(2, 3, 4)) + 0.1, _i(1)), {"keepdims": 0}, 18
    ),
    "argmax_last_index": Single(
        "ArgMax",
        (np.round(_f(3, 5)),),
        {"axis": 1, "keepdims": 0, "select_last_index": 1},
        13,
        grad=False,
    ),
    "argmin_first_index": Single("ArgMin", (np.round(_f(3, 5)),), {"axis": 0}, 13, grad=False),
    "slice9_attr": Single(
        "Slice", (_f(2, 4, 5),), {"starts": [1, 0], "ends": [3, 1000], "axes": [1, 2]}, 9
    ),
    "slice13_negative_step": Single(
        "Slice", (_f(2, 7), _i(-1), _i(INT64_MIN), _i(1), _i(-2)), {}, 13
    ),
    "slice13_clamped": Single(
        "Slice", (_f(3, 7), _i(-100, 2), _i(2, INT64_MAX), _i(0, 1), _i(1, 3)), {}, 13
    ),
    "clip6_attrs_opset10": Single("Clip", (_f(3, 4),), {"min": -0.5, "max": 0.3}, 10),
    "clip11_min_only": Single("Clip", (_f(3, 4), np.array(-0.2, np.float32), None), {}, 11),
    "clip13_computed": Single(
        "Clip", (_f(3, 4), np.array(-0.4, np.float32), np.array(0.6, np.float32)), {}, 13, 3
    ),
    "reshape14_allowzero": Single(
        "Reshape", (np.zeros((0, 6), np.float32), _i(0, 2, 3)), {"allowzero": 1}, 14, grad=False
    ),
    "reshape14_zero_copies": Single("Reshape", (_f(2, 3, 4), _i(0, -1)), {}, 14),
    "split18_num_outputs": Single("Split", (_f(2, 7),), {"axis": 1, "num_outputs": 3}, 18, 1, 3),
    "split11_equal": Single("Split", (_f(2, 6),), {"axis": 1}, 11, 1, 3),
    "split11_attr": Single("Split", (_f(2, 5),), {"axis": 1, "split": [1, 4]}, 11, 1, 2),
    "split13_input": Single("Split", (_f(6, 2), _i(2, 4)), {}, 13, 1, 2),
    "pad11_reflect": Single("Pad", (_f(3, 5), _i(0, 2, 0, 1)), {"mode": "reflect"}, 11),
    "pad18_edge_axes": Single("Pad", (_f(2, 3, 4), _i(1, 2), None, _i(-1)), {"mode": "edge"}, 18),
    "pad10_attr_value": Single("Pad", (_f(3, 4),), {"pads": [0, 1, 1, 0], "value": 1.5}, 10),
    "pad11_negative": Single("Pad", (_f(3, 4), _i(0, -1, 0, 2), np.array(2.0, np.float32)), {}, 11),
    "pad19_wrap": Single("Pad", (_f(2, 4), _i(0, 2, 0, 3)), {"mode": "wrap"}, 19),
    "gathernd_batch_dims1": Single(
        "GatherND",
        (_f(2, 3, 4), np.array([[[1], [2]], [[0], [-1]]], np.int64)),
        {"batch_dims": 1},
        13,
    ),
    "gathernd": Single("GatherND", (_f(3, 4, 5), np.array([[0, 1], [2, 3]], np.int64)), {}, 13),
    "gather_negative_scalar": Single("Gather", (_f(3, 4), np.array(-1, np.int64)), {"axis": 1}),
    "gatherelements_negative": Single(
        "GatherElements", (_f(3, 4), np.array([[0, -1], [3, 1], [-2, 2]], np.int64)), {"axis": 1}
    ),
    "gelu20_tanh": Single("Gelu", (_f(3, 4),), {"approximate": "tanh"}, 20),
    "gelu20_exact": Single("Gelu", (_f(3, 4),), {}, 20),
    "thresholded_relu": Single("ThresholdedRelu", (_f(3, 4),), {"alpha": 0.3}, 10),
    "hardsigmoid": Single("HardSigmoid", (_f(3, 4),), {"alpha": 0.3, "beta": 0.4}),
    "selu_custom": Single("Selu", (_f(3, 4),), {"alpha": 1.5, "gamma": 0.7}),
    "celu": Single("Celu", (_f(3, 4),), {"alpha": 2.0}, 12),
    "elu": Single("Elu", (_f(3, 4),), {"alpha": 0.5}),
    "prelu_broadcast": Single(
        "PRelu", (_f(2, 3, 4), np.array([[0.1], [0.2], [0.3]], np.float32)), {}, 9
    ),
    "mish": Single("Mish", (_f(3, 4),), {}, 18),
    "softplus": Single("Softplus", (_f(3, 4),)),
    "tan": Single("Tan", (_f(3, 4) * 0.5,)),
    "atanh": Single("Atanh", (_f(3, 4) * 0.3,)),
    "asin": Single("Asin", (_f(3, 4) * 0.3,)),
    "acos": Single("Acos", (_f(3, 4) * 0.3,)),
    "asinh": Single("Asinh", (_f(3, 4),)),
    "acosh": Single("Acosh", (np.abs(_f(3, 4)) + 1.2,)),
    "sinh": Single("Sinh", (_f(3, 4),)),
    "cosh": Single("Cosh", (_f(3, 4),)),
    "softsign": Single("Softsign", (_f(3, 4),)),
    "round_half_even": Single(
        "Round", (np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32),), {}, 11, grad=False
    ),
    "mod_integer": Single("Mod", (_i(-7, 7, -7, 7, 5), _i(3, -3, -3, 3, 2)), {}, 13, 2, grad=False),
    "mod_fmod": Single(
        "Mod", (_f(3, 4) * 3, np.float32(1.3) * np.ones(4, np.float32)), {"fmod": 1}
    ),
    "div_integer_truncates": Single(
        "Div", (_i(-7, 7, -7, 9), _i(2, -2, -2, 4)), {}, 13, 2, grad=False
    ),
    "sum_variadic": Single("Sum", (_f(3, 4), _f(4, seed=1), _f(3, 1, seed=2)), {}, 13, 3),
    "mean_variadic": Single("Mean", (_f(3, 4), _f(4, seed=1), _f(3, 1, seed=2)), {}, 13, 3),
    "max_variadic": Single("Max", (_f(3, 4), _f(4, seed=1), _f(3, 1, seed=2)), {}, 13, 3),
    "min_variadic": Single("Min", (_f(3, 4), _f(4, seed=1), _f(3, 1, seed=2)), {}, 13, 3),
    "where_broadcast": Single(
        "Where", (np.array([[True], [False]]), _f(2, 3), _f(3, seed=1)), {}, 13, 3, grad=False
    ),
    "xor_not": Single(
        "Xor", (np.array([True, False, True]), np.array([True, True, False])), {}, 13, 2, grad=False
    ),
    "isinf_negative_only": Single(
        "IsInf",
        (np.array([np.inf, -np.inf, 1.0, np.nan], np.float32),),
        {"detect_positive": 0},
        grad=False,
    ),
    "isnan": Single("IsNaN", (np.array([np.inf, np.nan, 1.0], np.float32),), grad=False),
    "trilu_lower": Single("Trilu", (_f(2, 4, 4), np.array(-1, np.int64)), {"upper": 0}, 14),
    "trilu_upper": Single("Trilu", (_f(4, 5),), {}, 14),
    "onehot_axis1": Single(
        "OneHot",
        (
            np.array([[0, 3, -1], [5, 1, 2]], np.int64),
            np.array(4, np.int64),
            np.array([0.0, 2.0], np.float32),
        ),
        {"axis": 1},
        11,
        grad=False,
    ),
    "scatter_elements_add": Single(
        "ScatterElements",
        (_f(3, 4), np.array([[0, 1], [0, 0]], np.int64), _f(2, 2, seed=1)),
        {"axis": 1, "reduction": "add"},
        18,
    ),
    "scatter_elements": Single(
        "ScatterElements",
        (_f(3, 4), np.array([[1, 0, 2]], np.int64), _f(1, 3, seed=1)),
        {"axis": 0},
        13,
        n_runtime=3,
    ),
    "scatter10": Single(
        "Scatter",
        (_f(3, 4), np.array([[1, 0, 2]], np.int64), _f(1, 3, seed=1)),
        {"axis": 0},
        10,
        n_runtime=3,
    ),
    "scatternd": Single(
        "ScatterND", (_f(4, 3), np.array([[1], [3]], np.int64), _f(2, 3, seed=1)), {}, 13, 3
    ),
    "nonzero": Single("NonZero", (np.array([[0.0, 1.5], [2.0, 0.0]], np.float32),), grad=False),
    "range_float": Single(
        "Range", tuple(np.array(v, np.float32) for v in (1.0, 4.0, 0.7)), {}, 11, 3, grad=False
    ),
    "range_negative_delta": Single(
        "Range",
        (np.array(5, np.int64), np.array(-2, np.int64), np.array(-3, np.int64)),
        {},
        11,
        3,
        grad=False,
    ),
    "cumsum_exclusive_reverse": Single(
        "CumSum", (_f(2, 5), np.array(1, np.int64)), {"exclusive": 1, "reverse": 1}, 14
    ),
    "einsum_spaces": Single(
        "Einsum", (_f(2, 3, 4), _f(2, 4, 5, seed=1)), {"equation": "bij, bjk -> bik"}, 12, 2
    ),
    "squeeze11_attr": Single("Squeeze", (_f(2, 1, 3, 1),), {"axes": [1, -1]}, 11),
    "squeeze13_all": Single("Squeeze", (_f(2, 1, 3, 1),), {}, 13),
    "unsqueeze11_attr": Single("Unsqueeze", (_f(2, 3),), {"axes": [0, -1]}, 11),
    "unsqueeze13_input": Single("Unsqueeze", (_f(2, 3), _i(1, 3)), {}, 13),
    "gemm_alpha_beta_trans": Single(
        "Gemm",
        (_f(4, 3), _f(5, 4, seed=1), _f(1, 5, seed=2)),
        {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 1},
        13,
        3,
    ),
    "gemm11_no_c": Single("Gemm", (_f(3, 4), _f(4, 5, seed=1)), {"alpha": 1.5}, 11),
    "expand_bidirectional": Single("Expand", (_f(3, 1), _i(2, 1, 4)), {}, 13),
    "tile": Single("Tile", (_f(2, 1, 3), _i(2, 1, 3)), {}, 13),
    "transpose_default": Single("Transpose", (_f(2, 3, 4),)),
    "flatten_negative_axis": Single("Flatten", (_f(2, 3, 4),), {"axis": -1}),
    "shape_start_end": Single("Shape", (_f(2, 3, 4, 5),), {"start": 1, "end": -1}, 15, grad=False),
    "size": Single("Size", (_f(2, 3),), grad=False),
    "topk9_attr": Single("TopK", (_f(3, 6),), {"k": 2}, 9, 1, 2),
    "topk11_smallest": Single("TopK", (_f(3, 6), _i(3)), {"largest": 0, "axis": 0}, 11, 1, 2),
    "dropout_mask": Single("Dropout", (_f(3, 4),), {}, 13, 1, 2),
    "castlike": Single("CastLike", (_f(3, 4) * 3, np.zeros(1, np.int32)), {}, 15, grad=False),
    "cast_bool": Single(
        "Cast", (np.array([0.0, -0.5, 2.0], np.float32),), {"to": TensorProto.BOOL}, 13, grad=False
    ),
    "constant_value_floats": Single(
        "Constant", (), {"value_floats": [1.0, 2.5]}, 13, 0, grad=False
    ),
    "constant_of_shape_int": Single(
        "ConstantOfShape",
        (_i(2, 3),),
        {"value": numpy_helper.from_array(np.array([7], np.int64))},
        13,
        grad=False,
    ),
}


def _single_model(case: Single) -> onnx.ModelProto:
    """A one-node model of ``case``: graph inputs, initializers, untyped outputs."""
    names = ["" if x is None else f"in{i}" for i, x in enumerate(case.inputs)]
    graph_inputs, initializers = [], []
    for i, (name, x) in enumerate(zip(names, case.inputs, strict=True)):
        if x is None:
            continue
        if i < case.n_runtime:
            dtype = helper.np_dtype_to_tensor_dtype(x.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, dtype, x.shape))
        else:
            initializers.append(numpy_helper.from_array(x, name))
    outputs = [f"out{i}" for i in range(case.n_outputs)]
    node = helper.make_node(case.op_type, names, outputs, name=f"{case.op_type}_0", **case.attrs)
    graph = helper.make_graph(
        [node], "single", graph_inputs, [onnx.ValueInfoProto(name=n) for n in outputs], initializers
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])


@pytest.mark.parametrize("name", sorted(SINGLES))
def test_single_node_matches_onnxruntime(name) -> None:
    case = SINGLES[name]
    model = _single_model(case)
    xs = [torch.from_numpy(np.array(x)) for x in case.inputs[: case.n_runtime]]
    with torch.no_grad():
        ours = OnnxGraph(model)(*xs)
    runtime = ort_run(model, xs)
    for i, (a, b) in enumerate(zip(ours, runtime, strict=True)):
        assert tuple(a.shape) == b.shape, (i, a.shape, b.shape)
        assert a.dtype == torch.from_numpy(np.asarray(b)).dtype, (i, a.dtype, b.dtype)
        if a.is_floating_point():
            assert rel_err(a, b) < 1e-5, (i, rel_err(a, b))
        else:
            assert np.array_equal(a.numpy(), b), i
    if case.grad:
        graph = OnnxGraph(model).double()
        xs = [x.double() if x.is_floating_point() else x for x in xs]
        floats = [i for i, x in enumerate(xs) if x.is_floating_point()]

        def first_output(*leaves: torch.Tensor) -> torch.Tensor:
            args = list(xs)
            for i, leaf in zip(floats, leaves, strict=True):
                args[i] = leaf
            return graph(*args)[0]

        leaves = [xs[i].clone().requires_grad_() for i in floats]
        assert torch.autograd.gradcheck(first_output, leaves)


def test_sparse_constant_is_densified() -> None:
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5, -2.0], np.float32)),
        numpy_helper.from_array(np.array([1, 5], np.int64)),
        [2, 3],
    )
    node = helper.make_node("Constant", [], ["out"], sparse_value=sparse)
    (out,) = OnnxGraph(_graph([node], [], [onnx.ValueInfoProto(name="out")]))()
    assert torch.equal(out, torch.tensor([[0.0, 1.5, 0.0], [0.0, 0.0, -2.0]]))


# -- the graph machinery ---------------------------------------------------------------------


def _graph(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _float_input(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_graph_describes_its_inputs_and_outputs(exported) -> None:
    model, _ = exported("binary_broadcast", "legacy", 17)
    graph = OnnxGraph(model, source="tagger.onnx")
    assert graph.input_names == ["in0", "in1"]
    assert graph.input_shapes == [("batch", 4, 1), ("batch", 1, 5)]
    assert graph.input_dtypes == [torch.float32, torch.float32]
    assert graph.output_names == ["out0", "out1"]
    assert graph.opset == 17
    assert graph.source == "tagger.onnx"


def test_constants_are_folded_into_buffers_that_follow_double() -> None:
    """Shape arithmetic on constants runs once at load; the folded float constant is a buffer,
    so ``.double()`` converts it; a Cast to float32 follows the graph into float64; integer
    buffers stay integer; intermediates are freed but ``values()`` keeps them."""
    weights = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    nodes = [
        helper.make_node("Shape", ["w"], ["w_shape"]),
        helper.make_node("ReduceProd", ["w_shape"], ["n"], keepdims=0),
        helper.make_node("Transpose", ["w"], ["wt"]),
        helper.make_node("MatMul", ["x", "wt"], ["y"]),
        helper.make_node("Cast", ["y"], ["y32"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        helper.make_node("Concat", ["n1", "two"], ["shape"], axis=0),
        helper.make_node("Reshape", ["y32", "shape"], ["out"]),
    ]
    zero = numpy_helper.from_array(_i(0), "zero")
    two = numpy_helper.from_array(_i(2), "two")
    model = _graph(
        nodes, [_float_input("x", 6, 3)], [onnx.ValueInfoProto(name="out")], [weights, zero, two]
    )
    graph = OnnxGraph(model)
    assert [step.node.op_type for step in graph._steps] == ["MatMul", "Cast", "Reshape"]
    x = torch.randn(6, 3)
    (out,) = graph(x)
    assert torch.equal(out, (x @ torch.arange(6.0).reshape(2, 3).T).reshape(6, 2))
    assert set(graph.values(x)) >= {"x", "y", "y32", "out"}
    graph.double()
    buffers = dict(graph.named_buffers())
    assert {b.dtype for b in buffers.values()} >= {torch.float64, torch.int64}
    (out64,) = graph(x.double())
    assert out64.dtype == torch.float64
    graph.float()
    assert graph(x)[0].dtype == torch.float32


def test_unused_outputs_and_dead_nodes() -> None:
    """An old-opset Split into 3 equal pieces of which only the first is read still cuts in 3;
    a node nothing reads is not run (even one that would fail)."""
    nodes = [
        helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1),
        helper.make_node("Reshape", ["x", "bad"], ["dead"]),
        helper.make_node("Neg", ["a"], ["out"]),
    ]
    bad = numpy_helper.from_array(_i(7, 7), "bad")
    model = _graph(
        nodes, [_float_input("x", 2, 6)], [onnx.ValueInfoProto(name="out")], [bad], (("", 11),)
    )
    x = torch.randn(2, 6)
    (out,) = OnnxGraph(model)(x)
    assert torch.equal(out, -x[:, :2])


def test_model_local_functions_are_inlined() -> None:
    body = [
        helper.make_node("Relu", ["t"], ["r"]),
        helper.make_node("Neg", ["r"], ["u"]),
    ]
    function = helper.make_function(
        "local", "NegRelu", ["t"], ["u"], body, [helper.make_opsetid("", 17)]
    )
    model = _graph(
        [helper.make_node("NegRelu", ["x"], ["out"], domain="local")],
        [_float_input("x", 4)],
        [onnx.ValueInfoProto(name="out")],
        opsets=(("", 17), ("local", 1)),
    )
    model.functions.append(function)
    x = torch.randn(4)
    assert torch.equal(OnnxGraph(model)(x)[0], -torch.relu(x))


def test_unsupported_operators_are_all_listed_at_once() -> None:
    """An ORT-fused op (twice), an ``If`` with subgraphs and an unknown domain's op: one error
    naming the file, each op once with count, opset, an example node and the advice."""
    branch = helper.make_graph([], "b", [], [_float_input("x", 2)])
    nodes = [
        helper.make_node("FusedConv", ["x", "w"], ["c1"], domain="com.microsoft", name="/sv/Conv"),
        helper.make_node(
            "FusedConv", ["c1", "w"], ["c2"], domain="com.microsoft", name="/sv/Conv_1"
        ),
        helper.make_node("Greater", ["c2", "c2"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="if0"),
        helper.make_node("Mystery", ["y"], ["out"], domain="my.domain", name="mystery"),
    ]
    model = _graph(
        nodes,
        [_float_input("x", 2), _float_input("w", 2)],
        [onnx.ValueInfoProto(name="out")],
        opsets=(("", 17), ("com.microsoft", 1), ("my.domain", 3)),
    )
    with pytest.raises(UnsupportedOnnxOpError) as info:
        OnnxGraph(model, source="tagger.onnx")
    message = str(info.value)
    assert message.startswith("tagger.onnx: ")
    assert "com.microsoft::FusedConv (opset 1) x2, e.g. node '/sv/Conv'" in message
    assert "ai.onnx::If (opset 17) x1, e.g. node 'if0': control flow with subgraphs" in message
    assert "my.domain::Mystery (opset 3) x1, e.g. node 'mystery'" in message
    assert "Greater" not in message
    assert "Re-export" in message and "gradient-free" in message


def test_unsupported_attribute_forms_are_reported_with_the_reason() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["s"], to=TensorProto.STRING, name="to_string"),
        helper.make_node("Pad", ["x", "pads"], ["out"], mode="mirror", name="pad"),
    ]
    pads = numpy_helper.from_array(_i(1, 1), "pads")
    model = _graph(nodes, [_float_input("x", 2)], [onnx.ValueInfoProto(name="out")], [pads])
    with pytest.raises(
        UnsupportedOnnxOpError, match=r"(?s)Cast \(opset 17\).*not a numeric.*mode='mirror'"
    ):
        OnnxGraph(model)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A valid exported model file (legacy exporter) and its bytes."""
    path = tmp_path_factory.mktemp("files") / "tagger.onnx"
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    export(mlp, [torch.randn(2, 6)], path)
    return path


def test_load_onnx_graph_reads_a_file(small_file) -> None:
    graph = load_onnx_graph(small_file)
    assert graph.source == str(small_file)
    x = torch.randn(4, 6)
    assert rel_err(graph(x)[0], ort_run(small_file, [x])[0]) < 1e-5


def test_text_and_torch_zip_files_are_refused(tmp_path) -> None:
    text = tmp_path / "tagger.onnx"
    text.write_text("version: 1\nthis is a YAML file saved as .onnx\n")
    with pytest.raises(ModelError, match=r"tagger\.onnx: not a (readable|valid) ONNX model"):
        load_onnx_graph(text)
    scripted = tmp_path / "scripted.onnx"
    torch.save(torch.nn.Linear(2, 2).state_dict(), scripted)  # a zip archive, like TorchScript
    with pytest.raises(ModelError, match=r"scripted\.onnx: this is a zip archive"):
        load_onnx_graph(scripted)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_file_is_refused(tmp_path, small_file, fraction) -> None:
    data = small_file.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match=r"cut\.onnx: not a (readable|valid) ONNX model"):
        load_onnx_graph(path)


def test_opset_8_is_refused(tmp_path) -> None:
    model = _graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_float_input("x", 2)],
        [_float_input("y", 2)],
        opsets=(("", 8),),
    )
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"old\.onnx: opset 8 .*re-export with opset >= 9"):
        load_onnx_graph(path)


def test_external_data_is_read_from_beside_the_model(tmp_path, small_file) -> None:
    model = onnx.load(str(small_file))
    path = tmp_path / "external.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    x = torch.randn(4, 6)
    assert rel_err(load_onnx_graph(path)(x)[0], ort_run(small_file, [x])[0]) < 1e-5
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match=r"external\.onnx: .*\['weights\.bin'\].* missing"):
        load_onnx_graph(path)


def test_run_time_failure_names_the_node(small_file) -> None:
    graph = load_onnx_graph(small_file)
    with pytest.raises(ModelError, match=r"tagger\.onnx: Gemm node .* failed"):
        graph(torch.randn(4, 5))
