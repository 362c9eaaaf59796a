"""The JSON report (format documented in docs/report.md): every check's numbers, the seed, the
device, package versions and the SHA-256 of the model, data and uncertainty files."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pytest_hepguard.report.files import write_atomic

#: Version of the report layout; bumped on any incompatible change.
REPORT_VERSION = 1

_PACKAGES = ("pytest-hepguard", "torch", "numpy", "scipy", "pytest", "onnxruntime", "uproot")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def build_report(
    entries: Sequence[dict[str, object]],
    inputs: dict[str, Path | None],
    model_spec: str | None,
    seed: int,
    device: str,
    counterexamples: Sequence[dict[str, object]] = (),
) -> dict[str, object]:
    """The report dict: ``checks`` in run order, ``passed`` = no check failed, and the minimal
    ``counterexamples`` of property tests."""
    files = {
        role: {
            "path": str(path) if path is not None else (model_spec if role == "model" else None),
            "sha256": sha256(path) if path is not None and path.is_file() else None,
        }
        for role, path in inputs.items()
    }
    devices = sorted({str(e.get("device")) for e in entries if e.get("device")})
    return {
        "tool": "pytest-hepguard",
        "report_version": REPORT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "device": ", ".join(devices) or device,
        "versions": {
            "python": platform.python_version(),
            **{p: _version(p) for p in _PACKAGES},
        },
        "inputs": files,
        "assumptions": entries[0].get("assumptions", []) if entries else [],
        "passed": all(e.get("passed", True) for e in entries),
        "checks": list(entries),
        "counterexamples": list(counterexamples),
    }


def write_json(path: Path, data: dict[str, object]) -> None:
    """Write ``data`` to ``path`` atomically, indented, NaN refused (JSON has none)."""
    write_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
