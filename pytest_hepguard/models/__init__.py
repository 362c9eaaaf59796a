"""Models: ``load_model()`` turns a file or import path into a :class:`~.base.Model`.

Imports torch; the plugin imports this package only when a hepguard option or fixture is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from pytest_hepguard.exceptions import ModelError
from pytest_hepguard.models.base import Model
from pytest_hepguard.models.torch_files import (
    TORCHSCRIPT_SUFFIXES,
    load_callable,
    load_export,
    load_torchscript_or_pickle,
)

__all__ = ["Model", "load_model", "resolve_device", "wrap_model"]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (error when no GPU is visible), ``cuda:N`` or ``auto`` (GPU if any)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"--hepguard-device {name}: no CUDA device is visible to torch "
            f"(torch {torch.__version__}); use --hepguard-device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"--hepguard-device {name}: expected cpu, cuda, cuda:N or auto") from exc


def wrap_model(
    obj: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    description: str,
) -> Model:
    """Wrap an ``nn.Module`` (put in eval mode, moved to ``device``) or any torch callable."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, torch.nn.Module):
        obj = obj.to(device)
        with contextlib.suppress(NotImplementedError):  # torch.export modules fix their mode
            obj.eval()
    elif not callable(obj):
        raise ModelError(f"{description}: {type(obj).__name__} is not a model (not callable)")
    return Model(obj, device, description)


def load_model(spec: str | Path, device: torch.device, gradient_free: bool = False) -> Model:
    """Load ``spec``: an ``.onnx``, ``.pt2`` or TorchScript file, or ``package.module:callable``.

    ``gradient_free`` (``--hepguard-gradient-free``): an ONNX graph the autograd bridge cannot
    run loads for onnxruntime only (gradient-free attacks) instead of being refused.
    """
    path = Path(spec)
    if not path.exists():
        if isinstance(spec, str) and ":" in spec and not spec.endswith(tuple(TORCHSCRIPT_SUFFIXES)):
            return wrap_model(load_callable(spec, device), device, spec)
        raise ModelError(f"--hepguard-model {spec}: no such file")
    if path.is_dir():
        raise ModelError(f"--hepguard-model {spec}: is a folder, expected a model file")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return wrap_model(load_export(path, device), device, str(path))
    if suffix == ".onnx":
        from pytest_hepguard.models.onnx_model import load_onnx  # imports onnx, onnxruntime

        return load_onnx(path, device, gradient_free)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return wrap_model(load_torchscript_or_pickle(path, device), device, str(path))
    raise ModelError(
        f"{path}: unknown model file type {suffix!r}; expected .onnx, .pt2 (torch.export), "
        f"{', '.join(TORCHSCRIPT_SUFFIXES)} (TorchScript) or package.module:callable"
    )
