"""ONNX models: gradients through the autograd bridge, reported numbers from onnxruntime.

An ``.onnx`` file is loaded twice: as an :class:`~pytest_hepguard.models.onnx.OnnxGraph` (the
graph re-run with torch operations, so attacks get exact input gradients on CPU or GPU) and as
an onnxruntime session (the runtime CMSSW and ATLAS deploy). On the first batch of the user's
data both must agree to 1e-5 relative, or the model is refused naming the node where they part;
afterwards every output hepguard reports (nominal and perturbed) is onnxruntime's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
import torch

from pytest_hepguard.exceptions import ModelError, UnsupportedOnnxOpError
from pytest_hepguard.models.base import Model, single_input
from pytest_hepguard.models.onnx import OnnxGraph, load_onnx_graph

if TYPE_CHECKING:
    from pytest_hepguard.layout import Layout

#: Largest relative difference (|bridge - ORT| / max|ORT|) of an event's outputs accepted by the
#: load-time check ...
SELF_CHECK_TOLERANCE = 1e-5
#: ... on all but this fraction of the events (float32 kNN near-ties, see ``self_check``).
SELF_CHECK_ALLOWED = 0.01


def ort_session(path: Path, device: torch.device) -> ort.InferenceSession:
    """An onnxruntime session for ``path``: the CUDA execution provider when ``device`` is a GPU
    and onnxruntime has it (the ``gpu`` extra, ``onnxruntime-gpu``), else the CPU one; worker
    threads do not spin (spinning ORT threads slow the interleaved torch work down 4x)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT's own error types (Fail, InvalidGraph, ...) carry the reason
        raise ModelError(f"{path}: onnxruntime cannot load the model: {exc}") from exc


class OnnxModel(Model):
    """An ONNX classifier: its inputs (one [batch, n_features] tensor, or the uncertainty
    file's ``inputs:``, matched by name) -> its first output.

    Args:
        graph: the bridge of the file, or None for a graph the bridge cannot run (loaded with
            ``gradient_free``): then only onnxruntime runs it and only gradient-free attacks
            apply (:attr:`differentiable` is False).
        session: onnxruntime's session of the same file.
        device: where the bridge runs (and the attacks).
        description: the path, for reports and messages.
    """

    def __init__(
        self,
        graph: OnnxGraph | None,
        session: ort.InferenceSession,
        device: torch.device,
        description: str,
    ) -> None:
        inputs = session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_shapes = [tuple(i.shape) for i in inputs]
        self.graph = None if graph is None else graph.to(device).eval()
        self.session = session
        self.output_name = session.get_outputs()[0].name
        self.provider = session.get_providers()[0]
        super().__init__(self._bridge, device, description)
        self.differentiable = graph is not None

    def bind(self, layout: Layout) -> None:
        """Match the graph's inputs with ``layout``'s: by name for a multi-input model, the
        only graph input otherwise; refuse missing or extra inputs and shapes that differ,
        listing the graph's inputs and shapes."""
        graph_inputs = f"the graph's inputs: {self._inputs_text()}"
        if not layout.multi_input:
            if len(self.input_names) != 1:
                raise ModelError(
                    f"{self.description}: the graph has {len(self.input_names)} inputs "
                    f"({self._inputs_text()}); declare each under inputs: in the uncertainty "
                    "file (docs/uncertainties.md), or give a single-input model"
                )
            expected = {self.input_names[0]: (len(layout.specs),)}
        else:
            expected = dict(zip(layout.input_names, layout.input_shapes(), strict=True))
            unknown = [n for n in expected if n not in self.input_names]
            if unknown:
                raise ModelError(
                    f"{self.description}: input {unknown[0]!r} of the uncertainty file is not an "
                    f"input of the graph; {graph_inputs}"
                )
            missing = [n for n in self.input_names if n not in expected]
            if missing:
                raise ModelError(
                    f"{self.description}: the graph's input {missing[0]!r} is not under inputs: "
                    f"in the uncertainty file; {graph_inputs}"
                )
        for name, shape in zip(self.input_names, self.input_shapes, strict=True):
            ours = expected[name]
            fixed = [d if isinstance(d, int) else None for d in shape[1:]]
            if len(fixed) != len(ours) or any(
                d is not None and d != o for d, o in zip(fixed, ours, strict=True)
            ):
                raise ModelError(
                    f"{self.description}: input {name!r} has shape {_shape_text(shape)}, but the "
                    f"uncertainty file gives [batch, {', '.join(map(str, ours))}]"
                    + (f" ({ours[0]} features)" if len(ours) == 1 else "")
                    + f"; {graph_inputs}"
                )
        if not layout.multi_input:
            self.unpack = single_input
            return
        order = [list(expected).index(n) for n in self.input_names]

        def unpack(x: torch.Tensor) -> list[torch.Tensor]:
            tensors = layout.unpack(x)
            return [tensors[i] for i in order]

        self.unpack = unpack

    def _bridge(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            raise ModelError(
                f"{self.description}: the ONNX autograd bridge cannot run this graph, so there "
                "is no exact input gradient; only gradient-free attacks (gradient: spsa) apply"
            )
        return self.graph(*inputs)[0]

    def feed(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """onnxruntime's feed for rows ``x`` [batch, n_flat]: graph input name -> array."""
        return {
            name: t.detach().cpu().numpy().astype(np.float32, copy=False)
            for name, t in zip(self.input_names, self.unpack(x), strict=True)
        }

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """onnxruntime's outputs [batch, n_outputs] for rows ``x`` [batch, n_flat]."""
        (out,) = self.session.run([self.output_name], self.feed(x))
        return self.check_output(torch.from_numpy(np.asarray(out)).to(x.device), x)

    def probe(self, x: torch.Tensor, output: str) -> torch.Tensor:
        """Run onnxruntime on rows ``x`` (see :meth:`Model.probe`), and compare the bridge with
        onnxruntime there (the load-time self-check)."""
        runtime = super().probe(x, output)
        if self.graph is not None:
            self.self_check(x, runtime)
        return runtime

    def self_check(self, x: torch.Tensor, runtime: torch.Tensor) -> None:
        """Refuse the model when the bridge's outputs on ``x`` differ from onnxruntime's
        ``runtime`` by more than :data:`SELF_CHECK_TOLERANCE` (relative to the largest output)
        on more than :data:`SELF_CHECK_ALLOWED` of the events (at least one event is let
        through in samples of 20 or more), naming the first node whose
        output disagrees.

        A few events may differ legitimately: where a kNN (ParticleNet's EdgeConv) meets two
        distances equal to float32 precision, a different summation order picks the other
        neighbour. A wrong operator changes nearly every event.
        """
        assert self.graph is not None
        with torch.no_grad():
            bridge = self.raw(x)
        scale = max(float(runtime.abs().max()), 1e-30)
        per_event = (bridge.double() - runtime.double()).abs().amax(1) / scale
        bad = int((per_event > SELF_CHECK_TOLERANCE).sum())
        allowed = max(1.0, SELF_CHECK_ALLOWED * len(x)) if len(x) >= 20 else 0.0
        if bad <= allowed:
            return
        node = first_divergent_node(self.graph, self.unpack(x), self.feed(x))
        raise ModelError(
            f"{self.description}: hepguard's ONNX bridge and onnxruntime disagree on {bad} of "
            f"the first {len(x)} events (largest relative difference "
            f"{float(per_event.max()):.2e} > {SELF_CHECK_TOLERANCE:g})"
            + (f"; they first part at {node}" if node else "")
            + ": gradients through the bridge would not be those of this model; please report "
            "it with the model's opset and this node"
        )

    def _inputs_text(self) -> str:
        return ", ".join(
            f"{name} {_shape_text(shape)}"
            for name, shape in zip(self.input_names, self.input_shapes, strict=True)
        )


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b| in float64 (0 when equal)."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    diff = float((a64 - b64).abs().max()) if a64.numel() else 0.0
    return 0.0 if diff == 0 else diff / max(float(b64.abs().max()), 1e-30)


def first_divergent_node(
    graph: OnnxGraph, inputs: list[torch.Tensor], feed: dict[str, np.ndarray]
) -> str:
    """``op_type node 'name' (output 'y', relative difference e)`` of the first node, in graph
    order, whose float output differs between the bridge (on ``inputs``) and onnxruntime (on
    ``feed``, the same values) by more than the self-check tolerance; "" when none does (or
    onnxruntime cannot expose the intermediates)."""
    with torch.no_grad():
        values = graph.values(*inputs)
    model = onnx.load(graph.source, load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in inferred.graph.value_info}
    outputs = {o.name for o in model.graph.output}
    wanted = [
        name
        for node in model.graph.node
        for name in node.output
        if name in values and name in typed and name not in outputs
    ]
    model.graph.output.extend(typed[name] for name in wanted)
    try:
        extended = ort.InferenceSession(
            model.SerializeToString(),
            providers=["CPUExecutionProvider"],
        )
    except Exception:  # an extended graph ORT refuses: no node named, the error still stands
        return ""
    results = dict(zip(wanted, extended.run(wanted, feed), strict=True))
    for node in model.graph.node:
        for name in node.output:
            ours = values.get(name)
            if name not in results or ours is None or not ours.is_floating_point():
                continue
            err = relative_error(ours, torch.from_numpy(np.asarray(results[name])))
            if err > SELF_CHECK_TOLERANCE:
                where = f"{node.op_type} node {node.name!r}"
                return f"{where} (output {name!r}, relative difference {err:.2e})"
    return ""


def load_onnx(path: Path, device: torch.device, gradient_free: bool = False) -> OnnxModel:
    """Load ``path`` as the bridge on ``device`` and as an onnxruntime session.

    ``gradient_free`` (``--hepguard-gradient-free``): a graph with operators the bridge cannot
    run is loaded for onnxruntime only (gradient-free attacks), instead of refused.

    Raises:
        ModelError: not an ONNX file, truncated, opset older than 9, external data missing,
            operators the bridge cannot differentiate (all listed; unless ``gradient_free``),
            or onnxruntime refusing it.
    """
    try:
        graph: OnnxGraph | None = load_onnx_graph(path)
    except UnsupportedOnnxOpError:
        if not gradient_free:
            raise
        graph = None
    return OnnxModel(graph, ort_session(path, device), device, str(path))


def _shape_text(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
