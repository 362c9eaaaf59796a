"""Where reports may be written, and writing them atomically.

hepguard only overwrites files it wrote itself (each of its reports carries
:data:`REPORT_MARKER` in its first bytes) unless told to (``--hepguard-force``), and never one of
its input files. A report is written to a temporary file in the target's folder and renamed over
the target, so a reader never sees half a file and an interrupted run leaves the old one intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pytest_hepguard.exceptions import ReportPathError

#: Every report hepguard writes carries this marker in its first bytes (JSON: the "tool" key;
#: HTML: a generator meta tag; Markdown: a comment).
REPORT_MARKER = "pytest-hepguard"


def is_own_report(path: Path) -> bool:
    """True when ``path`` is a report hepguard wrote (JSON with ``"tool": REPORT_MARKER``, or a
    text file with the marker in its first 4096 characters)."""
    try:
        with Path(path).open(encoding="utf-8") as fh:
            head = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    if Path(path).suffix == ".json":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and data.get("tool") == REPORT_MARKER
    return REPORT_MARKER in head


def check_report_path(
    target: Path,
    option: str,
    inputs: dict[str, Path | None] | None = None,
    force: bool = False,
    is_own: Callable[[Path], bool] = is_own_report,
) -> None:
    """Refuse an output path that would lose something of the user's.

    Args:
        target: the file the report will be written to.
        option: how the user named it (``--hepguard-json``), the start of every message.
        inputs: the run's input files by role (model, data, uncertainties): never overwritten.
        force: overwrite an existing file that is not a hepguard report (``--hepguard-force``).
        is_own: tells a file hepguard wrote (default: the report marker); outputs whose format
            has no room for the marker (pyhf workspaces) recognise themselves by their content.

    Raises:
        ReportPathError: the folder does not exist; the path is a folder; it is one of the
            input files; it exists and is not a hepguard report (and not ``force``).
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise ReportPathError(
            f"{option} {target}: the folder {target.parent} does not exist; create it first"
        )
    if target.is_dir():
        raise ReportPathError(f"{option} {target}: is a folder, expected a file path")
    for role, path in (inputs or {}).items():
        if path is not None and path.exists() and target.exists() and target.samefile(path):
            raise ReportPathError(
                f"{option} {target}: is the {role} file; hepguard never writes over its inputs"
            )
    if target.exists() and not force and not is_own(target):
        raise ReportPathError(
            f"{option} {target}: the file exists and is not a hepguard report; hepguard does not "
            "overwrite it (remove it, choose another path, or add --hepguard-force)"
        )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` (text as UTF-8, bytes, or a function that fills a binary file) to ``path``
    through a temporary file in the same folder and a rename; the file gets the permissions a
    plain ``open(path, "w")`` gives (0666 less the umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
