"""Layer operators of the ONNX bridge: convolution and pooling, normalisation, LSTM/GRU and
Attention.

Two kinds of cases, each against references independent of the bridge:

* Torch modules exported through every ``(exporter, opset)`` of :data:`EXPORTS` with a dynamic
  batch, loaded with :class:`OnnxGraph` and run at another batch size than exported: outputs
  against onnxruntime, input gradients (same cotangent) against ``torch.autograd`` on the
  original module, both within 1e-5 relative; a few also in float64 against the float64 module.
* One-node graphs built with ``onnx.helper`` for forms the torch exporters never write (GRU with
  ``linear_before_reset=0``, reverse and bidirectional recurrences with initial states,
  ``auto_pad``, ``ceil_mode``, opset-9 BatchNormalization, 4-D Attention with a bool mask ...):
  outputs against onnxruntime (or the ONNX reference evaluator where onnxruntime lacks the form).

Unsupported forms must be refused when the graph is built (or, for a property of an input, when
it runs), naming the reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnx_helpers import EXPORTS, export, ort_run, rel_err, vjp
from torch import nn

from pytest_hepguard.exceptions import UnsupportedOnnxOpError
from pytest_hepguard.models.onnx.graph import OnnxGraph
from pytest_hepguard.models.onnx.ops.registry import Node, OpNotSupported, lookup

EXPORT_BATCH = 3
RUN_BATCH = 5
TOL = 1e-5
TOL64 = 1e-6


def _randomise_batch_norms(module: nn.Module, seed: int = 7) -> nn.Module:
    """Random affine parameters and running statistics, so that folding them matters."""
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            with torch.no_grad():
                bn.weight.copy_(torch.randn(n, generator=gen))
                bn.bias.copy_(torch.randn(n, generator=gen))
                bn.running_mean.copy_(torch.randn(n, generator=gen))
                bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return module


class LastStepLSTM(nn.Module):
    """LSTM over ``[B, seq, 6]``: the last step's output and h_n."""

    def __init__(self, **kwargs: int | bool) -> None:
        super().__init__()
        self.rnn = nn.LSTM(6, 8, batch_first=True, **kwargs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, (h, _) = self.rnn(x)
        return y[:, -1], h.transpose(0, 1).flatten(1)


class GRUSeq(nn.Module):
    """GRU over ``[B, seq, 6]``: the whole output sequence and h_n."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.rnn(x)
        return y, h[0]


class LSTMWithState(nn.Module):
    """LSTM whose initial h and c ``[B, 8]`` are graph inputs (batch on axis 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(6, 8, batch_first=True)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, (h, c) = self.rnn(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
        return y, h[0], c[0]


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` self-attention over ``[B, seq, 8]``, 2 heads."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class SDPA(nn.Module):
    """``F.scaled_dot_product_attention`` of q, k, v ``[B, heads, seq, dim]``."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


class GlobalPools(nn.Module):
    """Adaptive average and max pooling to one element, over ``[B, C, n]``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.adaptive_avg_pool1d(x, 1), F.adaptive_max_pool2d(x.unsqueeze(1), 1)


class DeepJetLike(nn.Module):
    """Per-particle Conv1d stack over ``[B, 8, n]``, an LSTM over the particles, and a dense
    head with the global features ``[B, 5]``; softmax over 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.particles = nn.Sequential(
            nn.Conv1d(8, 16, 1),
            nn.BatchNorm1d(16),
            nn.LeakyReLU(0.1),
            nn.Conv1d(16, 8, 3, padding=1),
            nn.LeakyReLU(0.1),
        )
        self.rnn = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Sequential(nn.Linear(12 + 5, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, particles: torch.Tensor, jet: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.rnn(self.particles(particles).transpose(1, 2))
        return torch.softmax(self.head(torch.cat([h[-1], jet], dim=1)), dim=1)


#: case -> (module factory, per-sample input shapes).
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[tuple[int, ...], ...]]] = {
    "conv1d_k1": (lambda: nn.Conv1d(4, 6, 1), ((4, 9),)),
    "conv1d_k3_pad": (lambda: nn.Conv1d(4, 6, 3, padding=1), ((4, 9),)),
    "conv2d_stride_groups": (lambda: nn.Conv2d(4, 6, 3, stride=2, groups=2), ((4, 9, 8),)),
    "batchnorm1d": (lambda: _randomise_batch_norms(nn.BatchNorm1d(5)), ((5, 7),)),
    "conv_bn_leaky": (
        lambda: _randomise_batch_norms(
            nn.Sequential(nn.Conv1d(4, 6, 3), nn.BatchNorm1d(6), nn.LeakyReLU(0.2))
        ),
        ((4, 9),),
    ),
    "layernorm": (lambda: nn.LayerNorm(8), ((5, 8),)),
    "maxpool1d": (lambda: nn.MaxPool1d(3, stride=2, padding=1), ((4, 9),)),
    "avgpool2d": (lambda: nn.AvgPool2d(2, stride=2, padding=1), ((3, 7, 6),)),
    "global_pools": (GlobalPools, ((4, 9),)),
    "lstm_last_step": (LastStepLSTM, ((5, 6),)),
    "lstm_bidirectional_2layers": (
        lambda: LastStepLSTM(num_layers=2, bidirectional=True),
        ((5, 6),),
    ),
    "gru": (GRUSeq, ((5, 6),)),
    "lstm_initial_state": (LSTMWithState, ((5, 6), (8,), (8,))),
    "multihead_attention": (SelfAttention, ((5, 8),)),
    "sdpa": (SDPA, ((2, 5, 4), (2, 6, 4), (2, 6, 4))),
    "deepjet_like": (lambda: _randomise_batch_norms(DeepJetLike()), ((8, 10), (5,))),
}
FLOAT64_CASES = ("conv_bn_leaky", "lstm_bidirectional_2layers", "deepjet_like")


def _inputs(case: str, batch: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=gen) for shape in CASES[case][1]]


class _Exports:
    """Module-scoped cache: each case's module and its export per (exporter, opset)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.modules: dict[str, nn.Module] = {}
        self.models: dict[tuple[str, str, int], onnx.ModelProto | str] = {}

    def module(self, case: str) -> nn.Module:
        if case not in self.modules:
            torch.manual_seed(0)
            self.modules[case] = CASES[case][0]().eval()
        return self.modules[case]

    def model(self, case: str, exporter: str, opset: int) -> onnx.ModelProto:
        """The exported model; skips the test when the exporter itself fails."""
        key = (case, exporter, opset)
        if key not in self.models:
            path = self.folder / f"{case}-{exporter}{opset}.onnx"
            module, inputs = self.module(case), _inputs(case, EXPORT_BATCH)
            try:
                self.models[key] = export(module, inputs, path, exporter, opset)
            except Exception as exc:  # the exporter's failure, not the bridge's
                self.models[key] = f"{exporter} exporter (opset {opset}) failed: {exc!r}"[:500]
        model = self.models[key]
        if isinstance(model, str):
            pytest.skip(model)
        return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> _Exports:
    return _Exports(tmp_path_factory.mktemp("onnx_layers"))


@pytest.mark.parametrize(("exporter", "opset"), EXPORTS, ids=[f"{e}{o}" for e, o in EXPORTS])
@pytest.mark.parametrize("case", list(CASES))
def test_exported_layer_matches_onnxruntime_and_torch_gradients(
    exports: _Exports, case: str, exporter: str, opset: int
) -> None:
    """At a batch size other than the exported one: outputs equal onnxruntime's, and input
    gradients equal autograd's on the original module (same cotangent), within 1e-5."""
    model = exports.model(case, exporter, opset)
    graph = OnnxGraph(model)
    inputs = _inputs(case, RUN_BATCH, seed=1)
    outs, grads = vjp(graph, inputs)
    runtime = ort_run(model, inputs)
    assert len(outs) == len(runtime)
    for ours, theirs in zip(outs, runtime, strict=True):
        assert rel_err(ours, theirs) < TOL
    _, expected = vjp(exports.module(case), inputs)
    for ours, theirs in zip(grads, expected, strict=True):
        assert rel_err(ours, theirs) < TOL


def test_dynamo_opset23_writes_the_attention_operator(exports: _Exports) -> None:
    """At opset 23 the dynamo exporter writes F.scaled_dot_product_attention as one ONNX
    ``Attention`` node, so the case above ran it through our Attention operator."""
    model = exports.model("sdpa", "dynamo", 23)
    assert "Attention" in {node.op_type for node in model.graph.node}


@pytest.mark.parametrize("case", FLOAT64_CASES)
def test_float64_gradients_match_the_float64_module(exports: _Exports, case: str) -> None:
    """``graph.double()`` runs in float64: input gradients agree with the float64 module within
    1e-6 (the float32 weights of the file are the same numbers in both)."""
    graph = OnnxGraph(exports.model(case, "legacy", 17)).double()
    reference = copy.deepcopy(exports.module(case)).double()
    inputs = [x.double() for x in _inputs(case, RUN_BATCH, seed=2)]
    outs, grads = vjp(graph, inputs)
    expected_outs, expected_grads = vjp(reference, inputs)
    for ours, theirs in zip([*outs, *grads], [*expected_outs, *expected_grads], strict=True):
        assert ours.dtype == torch.float64
        assert rel_err(ours, theirs) < TOL64


def _array_factory(seed: int) -> Callable[..., np.ndarray]:
    """Seeded float32 normal arrays of a given shape (scale 0.5, gentle on tanh/sigmoid)."""
    rng = np.random.default_rng(seed)
    return lambda *shape: (0.5 * rng.standard_normal(shape)).astype(np.float32)


#: A one-node case: (node, graph inputs, initializers, opset, oracle is the ONNX reference
#: evaluator instead of onnxruntime).
OneNode = tuple[onnx.NodeProto, dict[str, np.ndarray], dict[str, np.ndarray], int, bool]


def _recurrent_case(
    op_type: str,
    direction: str,
    initial_states: bool = True,
    layout: int = 0,
    full_sequence_lens: bool = False,
    **attrs: object,
) -> OneNode:
    """LSTM/GRU over seq 4, batch 3, input 6, hidden 5; W, R, B are initializers."""
    f = _array_factory(3)
    gates, dirs = (4 if op_type == "LSTM" else 3), (2 if direction == "bidirectional" else 1)
    seq, batch, hidden = 4, 3, 5
    inputs = {"X": f(seq, batch, 6) if layout == 0 else f(batch, seq, 6)}
    consts = {
        "W": f(dirs, gates * hidden, 6),
        "R": f(dirs, gates * hidden, hidden),
        "B": f(dirs, 2 * gates * hidden),
    }
    names = ["X", "W", "R", "B", ""]
    if full_sequence_lens:
        consts["sequence_lens"] = np.full(batch, seq, dtype=np.int32)
        names[-1] = "sequence_lens"
    outputs = ["Y", "Y_h", "Y_c"] if op_type == "LSTM" else ["Y", "Y_h"]
    if initial_states:
        for state in ("initial_h", "initial_c")[: len(outputs) - 1]:
            inputs[state] = f(dirs, batch, hidden) if layout == 0 else f(batch, dirs, hidden)
            names.append(state)
    node = helper.make_node(
        op_type, names, outputs, hidden_size=hidden, direction=direction, layout=layout, **attrs
    )
    return node, inputs, consts, 14, layout == 1


def _window_case(op_type: str, shape: tuple[int, ...], weights: bool, **attrs: object) -> OneNode:
    """A pooling node, or Conv/ConvTranspose to 3 channels with kernel 3 and a bias, on an input
    of ``shape``."""
    f = _array_factory(4)
    channels = (shape[1], 3) if op_type == "ConvTranspose" else (3, shape[1])
    kernel = [3] * (len(shape) - 2)
    consts = {"W": f(*channels, *kernel), "B": f(3)} if weights else {}
    node = helper.make_node(op_type, ["x", *consts], ["y"], **attrs)
    return node, {"x": f(*shape)}, consts, 17, False


def _attention_case(three_d: bool, **attrs: object) -> OneNode:
    """Attention: batch 2, 4 query heads over 2 kv heads, q_seq 5, kv_seq 6 (+2 past), head
    4, a bool mask ``[2, 1, 5, 8]`` (first key always attended) and past key/value."""
    f = _array_factory(5)
    inputs = {"Q": f(2, 4, 5, 4), "K": f(2, 2, 6, 4), "V": f(2, 2, 6, 3)}
    if three_d:
        inputs = {k: v.transpose(0, 2, 1, 3).reshape(2, v.shape[2], -1) for k, v in inputs.items()}
        attrs = {"q_num_heads": 4, "kv_num_heads": 2, **attrs}
    mask = np.random.default_rng(6).random((2, 1, 5, 8)) > 0.3
    mask[..., 0] = True
    inputs.update(mask=mask, past_key=f(2, 2, 2, 4), past_value=f(2, 2, 2, 3))
    node = helper.make_node(
        "Attention", list(inputs), ["Y", "present_key", "present_value"], **attrs
    )
    return node, inputs, {}, 23, False


def _batch_norm_case(opset: int) -> OneNode:
    f = _array_factory(8)
    consts = {"scale": f(4), "bias": f(4), "mean": f(4), "var": np.abs(f(4)) + 0.5}
    node = helper.make_node("BatchNormalization", ["x", *consts], ["y"], epsilon=1e-3)
    return node, {"x": f(3, 4, 5)}, consts, opset, False


ONE_NODE: dict[str, Callable[[], OneNode]] = {
    "gru_reset_first_forward": lambda: _recurrent_case("GRU", "forward"),
    "gru_reset_first_reverse": lambda: _recurrent_case("GRU", "reverse"),
    "gru_reset_first_bidirectional": lambda: _recurrent_case("GRU", "bidirectional"),
    "gru_linear_before_reset_bidirectional": lambda: _recurrent_case(
        "GRU", "bidirectional", linear_before_reset=1
    ),
    "gru_no_initial_state": lambda: _recurrent_case("GRU", "forward", initial_states=False),
    "gru_keras_hard_sigmoid_reverse": lambda: _recurrent_case(
        "GRU",
        "reverse",
        activations=["HardSigmoid", "Tanh"],
        activation_alpha=[0.2],
        activation_beta=[0.5],
    ),
    "gru_lbr_bidirectional_custom_activations": lambda: _recurrent_case(
        "GRU",
        "bidirectional",
        linear_before_reset=1,
        activations=["HardSigmoid", "Tanh", "Sigmoid", "LeakyRelu"],
        activation_alpha=[0.3, 0.05],
        activation_beta=[0.4],
    ),
    "lstm_custom_activations": lambda: _recurrent_case(
        "LSTM",
        "forward",
        activations=["HardSigmoid", "Softsign", "ScaledTanh"],
        activation_alpha=[0.25, 1.5],
        activation_beta=[0.45, 0.7],
    ),
    "lstm_reverse_initial_state": lambda: _recurrent_case("LSTM", "reverse"),
    "lstm_bidirectional": lambda: _recurrent_case("LSTM", "bidirectional", initial_states=False),
    "lstm_full_sequence_lens": lambda: _recurrent_case("LSTM", "forward", full_sequence_lens=True),
    "lstm_layout1_bidirectional": lambda: _recurrent_case("LSTM", "bidirectional", layout=1),
    "gru_layout1_reverse": lambda: _recurrent_case("GRU", "reverse", layout=1),
    "conv_same_upper": lambda: _window_case(
        "Conv", (2, 2, 8, 7), True, auto_pad="SAME_UPPER", strides=[2, 2]
    ),
    "conv_same_lower_1d": lambda: _window_case(
        "Conv", (2, 2, 8), True, auto_pad="SAME_LOWER", strides=[3]
    ),
    "conv_asymmetric_pads": lambda: _window_case("Conv", (2, 2, 8), True, pads=[2, 0]),
    "conv_transpose_stride_pads": lambda: _window_case(
        "ConvTranspose", (2, 3, 6, 5), True, strides=[2, 2], pads=[1, 0, 0, 1]
    ),
    "maxpool_ceil_mode": lambda: _window_case(
        "MaxPool", (2, 3, 10), False, kernel_shape=[3], strides=[2], ceil_mode=1
    ),
    "maxpool_ceil_asymmetric_pads": lambda: _window_case(
        "MaxPool",
        (2, 3, 9, 8),
        False,
        kernel_shape=[3, 2],
        strides=[2, 2],
        pads=[1, 0, 0, 1],
        ceil_mode=1,
    ),
    "avgpool_ceil_pads_counted": lambda: _window_case(
        "AveragePool",
        (2, 3, 10),
        False,
        kernel_shape=[4],
        strides=[3],
        pads=[2, 1],
        ceil_mode=1,
        count_include_pad=1,
    ),
    "avgpool_same_lower": lambda: _window_case(
        "AveragePool", (2, 3, 9, 8), False, kernel_shape=[2, 3], auto_pad="SAME_LOWER"
    ),
    "global_max_pool_2d": lambda: _window_case("GlobalMaxPool", (2, 3, 4, 5), False),
    "batchnorm_opset9": lambda: _batch_norm_case(9),
    "batchnorm_opset15": lambda: _batch_norm_case(15),
    "attention_4d_bool_mask": lambda: _attention_case(False),
    "attention_3d_causal_softcap": lambda: _attention_case(True, is_causal=1, softcap=2.0),
}


def _one_node_model(case: OneNode) -> onnx.ModelProto:
    node, inputs, consts, opset, _ = case
    graph = helper.make_graph(
        [node],
        "one_node",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output if o],
        [onnx.numpy_helper.from_array(a, n) for n, a in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10  # what onnxruntime reads, whatever onnx writes by default
    return model


@pytest.mark.parametrize("name", list(ONE_NODE))
def test_one_node_graph_matches_the_oracle(name: str) -> None:
    """Forms the torch exporters never write: outputs equal onnxruntime's (the ONNX reference
    evaluator's for ``layout=1``, which onnxruntime does not run) within 1e-5."""
    case = ONE_NODE[name]()
    model = _one_node_model(case)
    inputs = list(case[1].values())
    if case[4]:
        expected = ReferenceEvaluator(model).run(None, case[1])
    else:
        expected = ort_run(model, inputs)
    ours = OnnxGraph(model)(*[torch.from_numpy(a) for a in inputs])
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected, strict=True):
        assert rel_err(got, want) < TOL


@pytest.mark.parametrize(
    "name",
    [
        "gru_reset_first_bidirectional",
        "gru_keras_hard_sigmoid_reverse",
        "lstm_custom_activations",
        "avgpool_ceil_pads_counted",
        "attention_3d_causal_softcap",
    ],
)
def test_one_node_graph_gradients_pass_gradcheck(name: str) -> None:
    """The written-out paths (GRU time loop, explicit pooling padding, capped attention) have
    the finite-difference gradient in float64."""
    case = ONE_NODE[name]()
    graph = OnnxGraph(_one_node_model(case)).double()
    inputs = [
        torch.from_numpy(a).double().requires_grad_()
        if a.dtype == np.float32
        else torch.from_numpy(a)
        for a in case[1].values()
    ]
    assert torch.autograd.gradcheck(graph, inputs, fast_mode=True)


#: (op_type, attributes, opset, outputs used, what the refusal must say).
REFUSED: list[tuple[str, dict, int, int, str]] = [
    ("BatchNormalization", {"training_mode": 1}, 15, 1, "training_mode=1"),
    ("BatchNormalization", {}, 9, 3, "running mean/variance outputs"),
    ("LSTM", {"clip": 3.0}, 14, 1, "clip"),
    ("LSTM", {"input_forget": 1}, 14, 1, "input_forget=1"),
    ("LSTM", {"activations": ["Sigmoid", "Gelu", "Tanh"]}, 14, 1, "activation 'gelu'"),
    ("GRU", {"direction": "sideways"}, 14, 1, "direction='sideways'"),
    ("MaxPool", {"kernel_shape": [2]}, 17, 2, "Indices output"),
    ("AveragePool", {"kernel_shape": [2], "dilations": [2]}, 19, 1, "dilated average pooling"),
    ("Conv", {"kernel_shape": [1, 1, 1, 1]}, 17, 1, "4 spatial axes"),
    ("Attention", {}, 23, 4, "qk_matmul_output"),
    ("Attention", {"left_window_size": 2}, 25, 1, "sliding-window"),
]


@pytest.mark.parametrize(
    ("op_type", "attrs", "opset", "n_outputs", "reason"),
    REFUSED,
    ids=[f"{r[0]}-{r[4].split()[0]}" for r in REFUSED],
)
def test_unsupported_attributes_are_refused_at_check_time(
    op_type: str, attrs: dict, opset: int, n_outputs: int, reason: str
) -> None:
    """The operator's load-time check raises OpNotSupported naming the node and the reason."""
    node = Node(op_type, "/m/node", attrs, opset, "", n_outputs)
    check = lookup("", op_type).check
    assert check is not None
    with pytest.raises(OpNotSupported, match=rf"{op_type} node '/m/node': .*{reason}"):
        check(node)


def test_graph_refuses_training_batch_norm_when_built() -> None:
    """A training-mode BatchNormalization stops the graph at load, with the reason."""
    node, inputs, consts, _, _ = _batch_norm_case(15)
    node.attribute.append(helper.make_attribute("training_mode", 1))
    with pytest.raises(UnsupportedOnnxOpError, match="training_mode=1"):
        OnnxGraph(_one_node_model((node, inputs, consts, 15, False)))


@pytest.mark.parametrize(
    ("name", "reason"),
    [("peepholes", "peephole connections"), ("short_sequence_lens", "sequence_lens")],
)
def test_unsupported_recurrent_inputs_are_refused(name: str, reason: str) -> None:
    """Input-borne forms (a non-zero peephole P, sequences shorter than the input) are refused
    with the reason, never run with the wrong semantics."""
    node, inputs, consts, opset, _ = _recurrent_case("LSTM", "forward", initial_states=False)
    if name == "peepholes":
        consts["P"] = _array_factory(9)(1, 15)
        node.input.extend(["", "", "P"])  # no initial_h, initial_c
    else:
        consts["sequence_lens"] = np.array([4, 2, 4], dtype=np.int32)
        node.input[4] = "sequence_lens"
    model = _one_node_model((node, inputs, consts, opset, False))
    with pytest.raises(UnsupportedOnnxOpError, match=reason):
        OnnxGraph(model)(*[torch.from_numpy(a) for a in inputs.values()])
