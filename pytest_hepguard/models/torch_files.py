"""Loading PyTorch models from files and import paths, safely.

- ``.pt2``: a ``torch.export`` archive (``torch.export.load(...).module()``).
- ``.pt``/``.pth``/``.ts``/``.jit``/``.torchscript``: TorchScript (``torch.jit.load``); a plain
  pickled file is only opened with ``torch.load(weights_only=True)``, which never runs code from
  the file: a state_dict is refused with advice, a full pickled module is refused with the reason.
- ``package.module:callable``: imported and called without arguments; must return a module.
"""

from __future__ import annotations

import importlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from pytest_hepguard.exceptions import ModelError

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")

_ADVICE = (
    "save the model as TorchScript (torch.jit.script(model).save('tagger.pt')) or as a "
    "torch.export archive (torch.export.save(torch.export.export(model, (x,)), 'tagger.pt2')), "
    "or give --hepguard-model package.module:callable returning the nn.Module, or override the "
    "hepguard_model fixture in conftest.py"
)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding a ``constants.pkl`` or ``code/`` entry."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _starts_like_pickle(path: Path) -> bool:
    """torch.save files are zip archives, or (legacy format) pickles of protocol >= 2 (0x80)."""
    with path.open("rb") as fh:
        return fh.read(1) == b"\x80"


def _pickled_globals(exc: Exception) -> str:
    """The Python names the pickle wanted to import, as torch reports them (may be empty)."""
    names = sorted(set(re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))))
    return f": it references {', '.join(names)}" if names else ""


def load_torchscript_or_pickle(path: Path, device: torch.device) -> torch.nn.Module:
    """Load a TorchScript file; refuse anything that is not one, saying why and what to do."""
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # deprecated upstream, but what taggers ship today
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                return torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise ModelError(f"{path}: not a loadable TorchScript model: {exc}") from exc
    if not zipfile.is_zipfile(path) and not _starts_like_pickle(path):
        # a text file or anything else: unpickling it would fail on whatever byte it starts with
        raise ModelError(
            f"{path}: not a model file (neither TorchScript nor a torch save file: not a zip "
            f"archive, not a pickle); {_ADVICE}"
        )
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"{path}: this file is a pickled Python object that needs arbitrary code to load "
            f"(torch.load(weights_only=True) refused it{_pickled_globals(exc)}); hepguard "
            f"does not run code from model files. Instead, {_ADVICE}"
        ) from exc
    except Exception as exc:
        raise ModelError(
            f"{path}: not a model file (neither TorchScript nor a torch save file): {exc}"
        ) from exc
    if isinstance(obj, dict):
        raise ModelError(
            f"{path}: this file holds a state_dict (weights only, {len(obj)} entries), not a "
            f"model; hepguard needs the network too: {_ADVICE}"
        )
    raise ModelError(f"{path}: holds a {type(obj).__name__}, not a model; {_ADVICE}")


def load_export(path: Path, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load a ``torch.export`` archive (``.pt2``) as a callable module on ``device``."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable torch.export archive (.pt2): {exc}") from exc
    module = program.module()
    return module.to(device)


def load_callable(spec: str, device: torch.device) -> torch.nn.Module:
    """Import ``package.module:callable``, call it, and check it returned an ``nn.Module``."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelError(f"--hepguard-model {spec}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"--hepguard-model {spec}: {module_name!r} has no callable {attr!r}")
    obj = factory()
    if not isinstance(obj, torch.nn.Module):
        raise ModelError(
            f"--hepguard-model {spec}: {attr}() returned {type(obj).__name__}, expected a "
            "torch.nn.Module"
        )
    return obj.to(device)
