"""The one interface every model back-end is seen through: raw outputs, probabilities, log-probs.

A model maps ``x`` [batch, n_features] (float32, raw physical inputs) to ``[batch, n_outputs]``
(or ``[batch]`` for a one-output model). Whether the outputs are probabilities or logits is
given in the uncertainty file (``decision.output``) or detected from the nominal outputs.
Probabilities are always presented as ``[batch, n_classes]`` with ``n_classes = max(n_outputs,
2)``: a one-output model's ``p`` becomes the two classes ``[1 - p, p]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from pytest_hepguard.exceptions import ModelError

if TYPE_CHECKING:
    from pytest_hepguard.layout import Layout

OutputKind = Literal["probabilities", "logits"]

#: Floor of probabilities before taking their logarithm (keeps gradients finite at p = 0).
_TINY = 1e-30


class Model:
    """A differentiable classifier on one device.

    Args:
        forward: callable taking the model's input tensors on ``device`` (a single-input model:
            one float32 tensor [batch, n_features]).
        device: where inputs are placed.
        description: what was loaded (a path or ``module:callable``), for reports and messages.
    """

    def __init__(
        self,
        forward: Callable[..., torch.Tensor],
        device: torch.device,
        description: str,
    ) -> None:
        self.forward = forward
        self.device = device
        self.description = description
        self.output_kind: OutputKind | None = None
        self.n_outputs: int | None = None
        #: rows [batch, n_flat] -> the model's input tensors (see :meth:`bind`).
        self.unpack: Callable[[torch.Tensor], list[torch.Tensor]] = single_input
        #: False for a model hepguard can only run forward (an ONNX graph the bridge cannot
        #: run, loaded with ``--hepguard-gradient-free``): only gradient-free attacks apply.
        self.differentiable = True

    def bind(self, layout: Layout) -> None:
        """Feed the model the input tensors of ``layout`` (positionally, in the uncertainty
        file's ``inputs:`` order); rows [batch, n_flat] stay what attacks move."""
        self.unpack = layout.unpack if layout.multi_input else single_input

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs as [batch, n_outputs] float32 for rows ``x`` [batch, n_flat]."""
        return self.check_output(self.forward(*self.unpack(x)), x)

    def check_output(self, out: object, x: torch.Tensor) -> torch.Tensor:
        """``out``, what the model returned for ``x``, as [batch, n_outputs] float32; a
        :class:`ModelError` naming the shapes when it is not one tensor of that shape."""
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"{self.description}: the model returned {type(out).__name__}, expected one "
                "tensor of shape [batch, classes]"
            )
        if out.dim() == 1:
            out = out.unsqueeze(1)
        if out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise ModelError(
                f"{self.description}: the model output has shape {list(out.shape)} for an input "
                f"of shape {list(x.shape)}; expected [batch, classes] = [{x.shape[0]}, n]"
            )
        return out.float()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs [batch, n_outputs] of the runtime the experiment deploys, without
        gradient: what every reported number is computed from. For a torch model the same as
        :meth:`raw`; an ONNX model answers with onnxruntime while its attacks take gradients
        through the bridge."""
        with torch.no_grad():
            return self.raw(x)

    @property
    def n_classes(self) -> int:
        """Number of classes the probabilities have (2 for a one-output model)."""
        assert self.n_outputs is not None, "call probe() first"
        return max(self.n_outputs, 2)

    def probe(self, x: torch.Tensor, output: str) -> torch.Tensor:
        """Run ``x`` (a small nominal batch), fix ``n_outputs`` and a first output kind
        (see :meth:`detect_output`). Returns the outputs (of :meth:`score`). Raises
        :class:`ModelError` naming the input shape when the model rejects the input (e.g. a
        width other than the feature count).
        """
        try:
            out = self.score(x)
        except ModelError:
            raise
        except Exception as exc:  # the model's own error: report it with the shapes involved
            if self.unpack is single_input:
                given = f"an input of shape {list(x.shape)} ({x.shape[1]} features, in the order "
                given += "of the uncertainty file)"
            else:
                shapes = ", ".join(str(list(t.shape)) for t in self.unpack(x))
                given = f"inputs of shapes {shapes} (the uncertainty file's inputs:)"
            raise ModelError(
                f"{self.description}: the model failed on {given}: {_last_line(exc)}"
            ) from exc
        self.n_outputs = out.shape[1]
        self.detect_output(out, output)
        return out

    def detect_output(self, raw: torch.Tensor, output: str) -> None:
        """Fix the output kind from raw outputs [n, n_outputs] (the whole nominal sample).

        ``output`` is ``"probabilities"``, ``"logits"`` or ``"auto"``: probabilities when every
        output is in [0, 1] and, for several outputs, the rows sum to 1 within 1e-3.
        """
        if not torch.isfinite(raw).all():
            bad = int((~torch.isfinite(raw)).any(1).nonzero()[0, 0])
            raise ModelError(
                f"{self.description}: the model returned NaN or inf on nominal input "
                f"(first at event {bad})"
            )
        if output == "auto":
            in_unit = bool(((raw >= 0) & (raw <= 1)).all())
            sums_to_one = raw.shape[1] == 1 or bool(((raw.sum(1) - 1).abs() < 1e-3).all())
            output = "probabilities" if in_unit and sums_to_one else "logits"
        self.output_kind = output  # type: ignore[assignment]

    def log_probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [batch, n_classes] from raw outputs, differentiable.

        Probabilities enter through their logarithm (floored at 1e-30) so a saturated softmax
        does not zero the gradient of the cross-entropy.
        """
        if self.output_kind == "logits":
            if raw.shape[1] == 1:
                return torch.cat([F.logsigmoid(-raw), F.logsigmoid(raw)], dim=1)
            return F.log_softmax(raw, dim=1)
        p = raw if raw.shape[1] > 1 else torch.cat([1 - raw, raw], dim=1)
        return torch.log(p.clamp_min(_TINY))

    def probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """Probabilities [batch, n_classes] from raw outputs."""
        if self.output_kind == "logits":
            if raw.shape[1] == 1:
                p = torch.sigmoid(raw)
                return torch.cat([1 - p, p], dim=1)
            return torch.softmax(raw, dim=1)
        return raw if raw.shape[1] > 1 else torch.cat([1 - raw, raw], dim=1)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-event cross-entropy of ``labels`` [batch] at ``x`` [batch, n_features]."""
        return F.nll_loss(self.log_probabilities(self.raw(x)), labels, reduction="none")


def single_input(x: torch.Tensor) -> list[torch.Tensor]:
    """A single-input model takes the rows as they are."""
    return [x]


def _last_line(exc: Exception) -> str:
    """``Type: message`` from the last line of an exception (TorchScript errors repeat the type
    inside their text; it is not doubled)."""
    text = str(exc).strip()
    line = text.splitlines()[-1].strip() if text else ""
    name = type(exc).__name__
    return line if line.startswith(f"{name}:") else f"{name}: {line}"
