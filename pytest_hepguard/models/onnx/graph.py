"""An ONNX graph re-run with torch operations, so that autograd gives input gradients.

:class:`OnnxGraph` turns an ``onnx.ModelProto`` into a ``torch.nn.Module``: initializers and
constants become buffers, nodes whose inputs are all constant are computed once at load, and
``forward`` runs the remaining nodes in graph order through the operator table
(:mod:`.ops.registry`). Every node is checked when the graph is built: all operators the bridge
cannot run are reported together, in one :class:`UnsupportedOnnxOpError`.

``.double()`` runs the whole graph in float64 (for gradient checks): float buffers become
float64, and casts to a float type and float-valued attributes follow the graph's precision.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from pytest_hepguard.exceptions import ModelError, UnsupportedOnnxOpError
from pytest_hepguard.models.onnx import ops  # noqa: F401  (registers every operator family)
from pytest_hepguard.models.onnx.ops.registry import (
    TORCH_DTYPES,
    Node,
    OpFn,
    OpNotSupported,
    lookup,
)

#: The oldest ai.onnx opset the bridge runs.
MIN_OPSET = 9

_ONNX_DTYPES = {dtype: code for code, dtype in TORCH_DTYPES.items()}
_SUBGRAPHS = "control flow with subgraphs (If, Loop, Scan) is not supported"
#: Why a known operator is missing: (domain, op_type) -> reason.
_REASONS = {("", name): _SUBGRAPHS for name in ("If", "Loop", "Scan", "SequenceMap")}
#: Why a whole domain is missing.
_DOMAIN_REASONS = {
    "com.microsoft": "an onnxruntime-internal (contrib) operator, typically written by "
    "onnxruntime's graph optimiser",
}
_ADVICE = (
    "Re-export the model from its original framework (torch.onnx.export, tf2onnx) without "
    "onnxruntime graph optimisation, or run with --hepguard-gradient-free: onnxruntime then "
    "scores the model and attacks use estimated (SPSA) gradients, a weaker attack."
)


def tensor_from_proto(proto: onnx.TensorProto) -> torch.Tensor:
    """A torch copy of an ONNX tensor (its data already loaded); strings and other non-numeric
    types raise :class:`OpNotSupported`."""
    dtype = TORCH_DTYPES.get(proto.data_type)
    if dtype is None:
        kind = onnx.TensorProto.DataType.Name(proto.data_type)
        raise OpNotSupported(f"tensor {proto.name!r} of type {kind} (not a numeric type)")
    array = numpy_helper.to_array(proto)
    if dtype is torch.bfloat16:  # numpy has no bfloat16: go through float32
        return torch.from_numpy(array.astype(np.float32)).to(dtype)
    return torch.from_numpy(np.array(array, copy=True))


def _dense(sparse: onnx.SparseTensorProto) -> torch.Tensor:
    """A sparse ONNX tensor as a dense torch tensor (indices ``[nnz]`` linear or
    ``[nnz, rank]``)."""
    values = tensor_from_proto(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dims = tuple(sparse.dims)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    out = torch.zeros(int(np.prod(dims)), dtype=values.dtype)
    out[torch.as_tensor(np.array(flat, dtype=np.int64))] = values.reshape(-1)
    return out.reshape(dims)


def _decode_attr(attr: onnx.AttributeProto) -> Any:
    """An attribute's value: ints, floats, ``str``, lists of those, tensors as torch tensors
    (sparse ones densified); graphs stay ``GraphProto``."""
    value = onnx.helper.get_attribute_value(attr)
    kind = onnx.AttributeProto.AttributeType
    if attr.type == kind.STRING:
        return value.decode()
    if attr.type == kind.STRINGS:
        return [v.decode() for v in value]
    if attr.type == kind.TENSOR:
        return tensor_from_proto(value)
    if attr.type == kind.TENSORS:
        return [tensor_from_proto(v) for v in value]
    if attr.type == kind.SPARSE_TENSOR:
        return _dense(value)
    return value


def _opsets(model: onnx.ModelProto, source: str) -> dict[str, int]:
    """Domain ("" for ai.onnx) -> imported opset version; a missing or too old ai.onnx opset
    raises :class:`ModelError`."""
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    if "" not in opsets:
        raise ModelError(f"{source}: the model imports no ai.onnx opset; is it an ONNX model?")
    if opsets[""] < MIN_OPSET:
        raise ModelError(
            f"{source}: opset {opsets['']} is older than hepguard supports; re-export with "
            f"opset >= {MIN_OPSET}"
        )
    return opsets


def _declared_shape(tensor_type: onnx.TypeProto.Tensor) -> tuple[int | str | None, ...]:
    """Sizes of a declared tensor type: ints, symbolic axes by name, None where unknown."""
    return tuple(
        d.dim_value if d.HasField("dim_value") else d.dim_param or None
        for d in tensor_type.shape.dim
    )


def _node_label(proto: onnx.NodeProto, index: int) -> str:
    return proto.name or f"#{index} (unnamed)"


@dataclasses.dataclass(frozen=True)
class _Step:
    """One node to run: its operator, the value names it reads ("" = omitted input) and writes
    ("" = not needed), and the intermediates whose last reader it is."""

    node: Node
    fn: OpFn
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    drop: tuple[str, ...] = ()


class _Problems:
    """Unsupported operators found while building a graph, grouped by operator type."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str, int], list[Any]] = {}  # -> [example, count, reason]

    def add(self, domain: str, op_type: str, opset: int, example: str, reason: str) -> None:
        entry = self.found.setdefault((domain, op_type, opset), [example, 0, reason])
        entry[1] += 1

    def raise_if_any(self, source: str) -> None:
        if not self.found:
            return
        lines = [
            f"{source}: hepguard's ONNX autograd bridge cannot run {len(self.found)} operator "
            "type(s) of this graph, so it cannot take input gradients through it:"
        ]
        for (domain, op_type, opset), (example, count, reason) in self.found.items():
            line = f"  {domain or 'ai.onnx'}::{op_type} (opset {opset}) x{count}, "
            lines.append(line + f"e.g. node {example!r}" + (f": {reason}" if reason else ""))
        lines.append(_ADVICE)
        raise UnsupportedOnnxOpError("\n".join(lines))


class OnnxGraph(torch.nn.Module):
    """The graph of an ONNX model as a torch module: ``forward(*inputs)`` takes one tensor per
    graph input (``input_shapes``, with the real batch size at symbolic axes) and returns the
    tuple of graph outputs, differentiable with respect to the float inputs.

    Args:
        model: the loaded model, external data included.
        source: where it came from (the file), for messages.

    Raises:
        ModelError: an opset older than :data:`MIN_OPSET`, a malformed graph, or a node that
            fails on its constant inputs.
        UnsupportedOnnxOpError: operators the bridge cannot run; all are listed.
    """

    def __init__(self, model: onnx.ModelProto, source: str = "ONNX model") -> None:
        super().__init__()
        self._source = source
        opsets = _opsets(model, source)
        self._opset = opsets[""]
        if model.functions:  # model-local functions: run their bodies as plain nodes
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        graph = model.graph
        consts = self._initializers(graph)
        graph_inputs = [v for v in graph.input if v.name not in consts]
        self._input_names = tuple(v.name for v in graph_inputs)
        types = [v.type.tensor_type for v in graph_inputs]
        self._input_shapes = tuple(_declared_shape(t) for t in types)
        self._input_dtypes = tuple(TORCH_DTYPES.get(t.elem_type) for t in types)
        self._output_names = tuple(v.name for v in graph.output)
        steps = self._build_steps(graph, opsets, consts)
        self._steps = self._link(steps, consts)
        self._const_buffers: dict[str, str] = {}
        self._register_constants(consts)
        # Tracks the precision `.double()`/`.float()` put the graph in (see _nodes).
        self.register_buffer("_precision", torch.empty(0), persistent=False)
        self._nodes_by_dtype: dict[torch.dtype, tuple[Node, ...]] = {
            torch.float32: tuple(step.node for step in self._steps)
        }

    # -- construction ----------------------------------------------------------------------

    def _initializers(self, graph: onnx.GraphProto) -> dict[str, torch.Tensor]:
        try:
            consts = {init.name: tensor_from_proto(init) for init in graph.initializer}
            consts.update((s.values.name, _dense(s)) for s in graph.sparse_initializer)
        except OpNotSupported as exc:
            raise ModelError(f"{self._source}: unsupported initializer: {exc}") from exc
        return consts

    def _build_steps(
        self, graph: onnx.GraphProto, opsets: dict[str, int], consts: dict[str, torch.Tensor]
    ) -> list[_Step]:
        """Check every node, fold the constant ones into ``consts`` and return the others as
        steps; raise once for everything unsupported."""
        live = self._live_nodes(graph)
        used = {name for i in live for name in graph.node[i].input} | set(self._output_names)
        problems = _Problems()
        steps: list[_Step] = []
        for index, proto in enumerate(graph.node):
            domain = "" if proto.domain == "ai.onnx" else proto.domain
            opset = opsets.get(domain, self._opset)
            label = _node_label(proto, index)
            try:
                step = self._step(proto, domain, opset, label, used)
            except OpNotSupported as exc:
                problems.add(domain, proto.op_type, opset, label, str(exc))
                continue
            if index not in live:
                continue
            if all(not name or name in consts for name in step.inputs):
                try:
                    self._fold(step, consts)
                except OpNotSupported as exc:
                    problems.add(domain, proto.op_type, opset, label, str(exc))
                continue
            steps.append(step)
        problems.raise_if_any(self._source)
        return steps

    def _live_nodes(self, graph: onnx.GraphProto) -> set[int]:
        """Indices of the nodes some graph output depends on."""
        needed = set(self._output_names)
        live: set[int] = set()
        for index in reversed(range(len(graph.node))):
            proto = graph.node[index]
            if needed.intersection(proto.output):
                live.add(index)
                needed.update(proto.input)
        return live

    @staticmethod
    def _step(proto: onnx.NodeProto, domain: str, opset: int, label: str, used: set[str]) -> _Step:
        """The decoded node and its operator; OpNotSupported when there is none or its check
        refuses the node."""
        registered = lookup(domain, proto.op_type)
        if registered is None:
            reason = _REASONS.get((domain, proto.op_type), _DOMAIN_REASONS.get(domain, ""))
            raise OpNotSupported(reason)
        n_outputs = max((i + 1 for i, name in enumerate(proto.output) if name in used), default=1)
        attrs = {a.name: _decode_attr(a) for a in proto.attribute}
        if proto.op_type == "Split" and "num_outputs" not in attrs:
            attrs["num_outputs"] = len(proto.output)  # equal pieces, one per declared output
        node = Node(proto.op_type, label, attrs, opset, domain, n_outputs)
        if registered.check is not None:
            registered.check(node)
        outputs = tuple(name if name in used else "" for name in proto.output[:n_outputs])
        return _Step(node, registered.fn, tuple(proto.input), outputs)

    def _fold(self, step: _Step, consts: dict[str, torch.Tensor]) -> None:
        """Compute a node whose inputs are all constant, once, into ``consts``."""
        args = [consts[name] if name else None for name in step.inputs]
        try:
            with torch.no_grad():
                results = step.fn(step.node, *args)
        except OpNotSupported:
            raise
        except Exception as exc:  # any failure of a constant node is fatal
            raise ModelError(
                f"{self._source}: {step.node.where()} fails on its constant inputs: {exc}"
            ) from exc
        for name, value in self._outputs(step, results):
            consts[name] = value

    def _link(self, steps: list[_Step], consts: dict[str, torch.Tensor]) -> tuple[_Step, ...]:
        """Check that every value read is defined before, and attach to each step the
        intermediates to free after it (their last reader; unread outputs right away)."""
        defined = set(consts) | set(self._input_names)
        last_use: dict[str, int] = {}
        for i, step in enumerate(steps):
            for name in step.inputs:
                if name and name not in defined:
                    raise ModelError(
                        f"{self._source}: {step.node.where()} reads {name!r}, which no earlier "
                        "node, initializer or graph input defines"
                    )
                if name and name not in consts:
                    last_use[name] = i
            for name in filter(None, step.outputs):
                defined.add(name)
                last_use.setdefault(name, i)
        missing = [name for name in self._output_names if name not in defined]
        if missing:
            raise ModelError(f"{self._source}: graph outputs {missing} are never computed")
        keep = set(self._output_names)
        drops: dict[int, list[str]] = {}
        for name, i in last_use.items():
            if name not in keep:
                drops.setdefault(i, []).append(name)
        return tuple(
            dataclasses.replace(step, drop=tuple(drops.get(i, ()))) for i, step in enumerate(steps)
        )

    def _register_constants(self, consts: dict[str, torch.Tensor]) -> None:
        """Buffers for the constants the remaining steps or the outputs read (others, e.g.
        weights only a folded node used, are dropped)."""
        read = {name for step in self._steps for name in step.inputs}
        read.update(self._output_names)
        taken: set[str] = set()
        for name, value in consts.items():
            if name not in read:
                continue
            buffer = re.sub(r"\W", "_", name).strip("_") or "const"
            while buffer in taken or hasattr(self, buffer):
                buffer += "_"
            taken.add(buffer)
            self.register_buffer(buffer, value)
            self._const_buffers[name] = buffer

    # -- running ---------------------------------------------------------------------------

    @staticmethod
    def _outputs(step: _Step, results: Any) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) for each output of ``step`` the graph needs."""
        if isinstance(results, torch.Tensor):
            results = (results,)
        pairs = []
        for i, name in enumerate(step.outputs):
            if not name:
                continue
            if i >= len(results) or results[i] is None:
                raise RuntimeError(f"{step.node.where()} did not compute its output {i}")
            pairs.append((name, results[i]))
        return pairs

    def _nodes(self) -> tuple[Node, ...]:
        """The nodes as they run at the graph's current float precision: after ``.double()``
        casts to float types and float tensor attributes become float64."""
        dtype = self._precision.dtype
        nodes = self._nodes_by_dtype.get(dtype)
        if nodes is None:
            nodes = tuple(_retarget(step.node, dtype) for step in self._steps)
            self._nodes_by_dtype[dtype] = nodes
        return nodes

    def _run(self, inputs: tuple[torch.Tensor, ...], keep: bool) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self._input_names):
            raise TypeError(
                f"{self._source}: the graph takes {len(self._input_names)} inputs "
                f"({', '.join(self._input_names)}), got {len(inputs)}"
            )
        env = {name: self._buffers[buffer] for name, buffer in self._const_buffers.items()}
        env.update(zip(self._input_names, inputs, strict=True))
        for step, node in zip(self._steps, self._nodes(), strict=True):
            args = [env[name] if name else None for name in step.inputs]
            try:
                results = step.fn(node, *args)
            except torch.cuda.OutOfMemoryError:
                raise
            except OpNotSupported as exc:
                raise UnsupportedOnnxOpError(f"{self._source}: {node.where()}: {exc}") from exc
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                raise ModelError(f"{self._source}: {node.where()} failed: {exc}") from exc
            env.update(self._outputs(step, results))
            if not keep:
                for name in step.drop:
                    del env[name]
        return env

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph outputs, in graph-output order, for ``inputs`` in graph-input order."""
        env = self._run(inputs, keep=False)
        return tuple(env[name] for name in self._output_names)

    def values(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every value of one run, by ONNX name: the inputs, the constants the graph reads and
        each computed node output (to find where the bridge and another runtime part)."""
        return self._run(inputs, keep=True)

    # -- description -----------------------------------------------------------------------

    @property
    def source(self) -> str:
        """Where the model came from (its path, for a file)."""
        return self._source

    @property
    def opset(self) -> int:
        """The model's ai.onnx opset version."""
        return self._opset

    @property
    def input_names(self) -> list[str]:
        """Names of the graph inputs ``forward`` takes, in order (initializers excluded)."""
        return list(self._input_names)

    @property
    def input_shapes(self) -> list[tuple[int | str | None, ...]]:
        """Declared shape of each input: sizes, symbolic axes by name, unknown ones as None
        (``()`` also for an input of unknown rank)."""
        return list(self._input_shapes)

    @property
    def input_dtypes(self) -> list[torch.dtype | None]:
        """torch dtype of each input (None for a type the bridge does not know)."""
        return list(self._input_dtypes)

    @property
    def output_names(self) -> list[str]:
        """Names of the graph outputs ``forward`` returns, in order."""
        return list(self._output_names)

    def extra_repr(self) -> str:
        return f"source={self._source!r}, opset={self._opset}, nodes={len(self._steps)}"


def _retarget(node: Node, dtype: torch.dtype) -> Node:
    """``node`` for a graph running in ``dtype``: a Cast to any float type casts to ``dtype``,
    and float tensor attributes (ConstantOfShape's value) are converted."""
    attrs = {
        key: value.to(dtype)
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        else value
        for key, value in node.attrs.items()
    }
    if node.op_type == "Cast" and TORCH_DTYPES[attrs["to"]].is_floating_point:
        attrs["to"] = _ONNX_DTYPES[dtype]
    return dataclasses.replace(node, attrs=attrs)


def load_onnx_graph(path: str | Path) -> OnnxGraph:
    """The :class:`OnnxGraph` of the ONNX file at ``path`` (external data read from beside it).

    Raises:
        ModelError: the file is missing, not an ONNX model (text, a zip archive such as a
            TorchScript file), truncated, older than opset 9, or its external data files are
            missing; see :class:`OnnxGraph` for the graph's own errors.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the ONNX file: {exc}") from exc
    if data[:4] == b"PK\x03\x04":
        raise ModelError(
            f"{path}: this is a zip archive (a TorchScript or torch.export file?), not an ONNX "
            "model; pass it under its own suffix (.pt, .pt2)"
        )
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(
            f"{path}: not a readable ONNX model (truncated, or another kind of file): {exc}"
        ) from exc
    if not model.opset_import or not model.graph.output or model.ir_version <= 0:
        raise ModelError(
            f"{path}: not a valid ONNX model (truncated, or another kind of file): it declares "
            "no opset, IR version or graph outputs"
        )
    _load_external_data(model, path)
    return OnnxGraph(model, source=str(path))


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read the tensors stored beside the model into it, naming any missing data file."""
    tensors = [t for t in _stored_tensors(model.graph) if uses_external_data(t)]
    if not tensors:
        return
    locations = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    missing = sorted(loc for loc in locations if not (path.parent / loc).is_file())
    if missing:
        raise ModelError(
            f"{path}: the model keeps its weights in external data file(s) {missing}, which "
            f"are missing beside it in {path.parent}; copy them next to the .onnx file"
        )
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # short or unreadable data files
        raise ModelError(f"{path}: cannot read the model's external data: {exc}") from exc


def _stored_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """The initializers and tensor attributes of ``graph``'s nodes (where external data can
    live)."""
    tensors = list(graph.initializer)
    tensors += [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors += list(attr.tensors)
    return tensors
