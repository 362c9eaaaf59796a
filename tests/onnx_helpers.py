"""Exporting small torch modules to ONNX and running them with onnxruntime: the oracles of the
bridge tests (no fixtures: plain functions).

``EXPORTS`` are the exporter/opset pairs every per-op case runs through: the TorchScript-based
exporter (``dynamo=False``) at opset 17, and the dynamo exporter at 18, 20 and 23 (it may write a
newer opset than asked: the file's own opset is what counts).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

#: (exporter, opset) pairs: ``legacy`` is ``dynamo=False``.
EXPORTS: tuple[tuple[str, int], ...] = (
    ("legacy", 17),
    ("dynamo", 18),
    ("dynamo", 20),
    ("dynamo", 23),
)


def export(
    module: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    path: Path,
    exporter: str = "legacy",
    opset: int = 17,
    dynamic_batch: bool = True,
    input_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Export ``module`` (eval mode) called on ``inputs`` to ``path``; returns the loaded model.

    Inputs are named ``input_names`` (default ``in0, in1, ...``), outputs ``out0, ...``; with
    ``dynamic_batch`` the first axis of every input is symbolic. The exporters' progress
    prints and warnings are swallowed.
    """
    module = module.eval()
    names = list(input_names or (f"in{i}" for i in range(len(inputs))))
    with torch.no_grad():
        n_out = len(_as_tuple(module(*inputs)))
    out_names = [f"out{i}" for i in range(n_out)]
    kwargs: dict = {"input_names": names, "output_names": out_names, "opset_version": opset}
    if exporter == "legacy":
        kwargs["dynamo"] = False
        if dynamic_batch:
            kwargs["dynamic_axes"] = {n: {0: "batch"} for n in names}
    elif exporter == "dynamo":
        kwargs["dynamo"] = True
        kwargs["verbose"] = False
        if dynamic_batch:
            batch = torch.export.Dim("batch", min=1)
            kwargs["dynamic_shapes"] = tuple({0: batch} for _ in inputs)
    else:
        raise ValueError(f"unknown exporter {exporter!r}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), str(path), **kwargs)
    return onnx.load(str(path))


def ort_session(model: onnx.ModelProto | Path | str) -> ort.InferenceSession:
    """A CPU session, one thread, no spinning workers (they slow interleaved torch work down)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def ort_run(
    model: onnx.ModelProto | Path | str, inputs: Sequence[torch.Tensor | np.ndarray]
) -> list[np.ndarray]:
    """onnxruntime's outputs of ``model`` on ``inputs`` (in the graph's input order)."""
    session = ort_session(model)
    feeds = {
        meta.name: (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
        for meta, x in zip(session.get_inputs(), inputs, strict=True)
    }
    return session.run(None, feeds)


def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """max|a - b| / max|b| (0 when both are all zero); shapes must match."""
    a = torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a))
    b = torch.as_tensor(np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b))
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.double(), b.double()
    scale = b.abs().max().item() if b.numel() else 0.0
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    return 0.0 if diff == 0 else diff / max(scale, 1e-30)


def vjp(
    fn, inputs: Sequence[torch.Tensor], cotangents: Sequence[torch.Tensor] | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Outputs of ``fn(*inputs)`` and the gradient of ``sum(out_k * v_k)`` w.r.t. each float
    input (None for integer inputs). ``cotangents`` default: seeded standard normal ``v_k``."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    outs = list(_as_tuple(fn(*leaves)))
    if cotangents is None:
        gen = torch.Generator().manual_seed(1234)
        cotangents = [
            torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
            if o.is_floating_point()
            else None
            for o in outs
        ]
    loss = sum((o * v).sum() for o, v in zip(outs, cotangents, strict=True) if v is not None)
    wrt = [x for x in leaves if x.requires_grad]
    grads = iter(torch.autograd.grad(loss, wrt, allow_unused=True)) if wrt else iter(())
    return [o.detach() for o in outs], [next(grads) if x.requires_grad else None for x in leaves]


def grads_or_zeros(objective: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """d objective / d each of ``inputs``; zeros for an input the objective does not use (as
    DeepJet's ``input_5``, which only feeds its second output)."""
    grads = torch.autograd.grad(objective, list(inputs), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def _as_tuple(out: object) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)
