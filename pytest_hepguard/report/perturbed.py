"""The perturbed events of one check, written back as a data file hepguard can read again.

:func:`write_perturbed` takes the rows an attack produced (one flat row per event, in the
:class:`~pytest_hepguard.layout.Layout`'s order) and writes them under the input file's column
names: per-event features as one number per event, per-constituent features as
``[n_events, length]`` (a 2-D array in ``.npz``, a list column in ``.parquet``), the label and
weight columns, and the model's outputs before and after (``hepguard_nominal``,
``hepguard_perturbed``). Loading the file with :func:`~pytest_hepguard.events.load_events` and
the same uncertainty model's columns gives the perturbed features, so the events can be fed to
any other tool, or audited again.

The path policy is that of :mod:`pytest_hepguard.report.files`: never over an input file, over
an existing file only when hepguard wrote it (or with ``force``), written atomically. Text
reports carry :data:`~pytest_hepguard.report.files.REPORT_MARKER` in their first bytes; these
binary files carry it inside: the npz holds a string array ``hepguard_report`` with the marker,
the parquet file a schema metadata entry ``hepguard_report`` with it (see
:func:`is_own_output`).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import numpy as np

from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import ReportPathError
from pytest_hepguard.layout import Layout
from pytest_hepguard.report.files import (
    REPORT_MARKER,
    check_report_path,
    is_own_report,
    write_atomic,
)

__all__ = ["FORMATS", "MARKER_KEY", "NOMINAL", "PERTURBED", "is_own_output", "write_perturbed"]

#: The file formats :func:`write_perturbed` writes (also the file suffixes).
FORMATS = ("npz", "parquet")

#: The npz array / parquet schema metadata key holding :data:`REPORT_MARKER`.
MARKER_KEY = "hepguard_report"

#: The model outputs on the nominal events (npz key; parquet columns ``hepguard_nominal_<k>``).
NOMINAL = "hepguard_nominal"

#: The model outputs on the perturbed events (npz key; parquet columns ``hepguard_perturbed_<k>``).
PERTURBED = "hepguard_perturbed"

#: How messages name these files (the start of every ReportPathError).
_WHAT = "perturbed events"

_NO_INPUTS: Mapping[str, Path | None] = MappingProxyType({})


# --------------------------------------------------------------------------------------------
# Recognising hepguard's own outputs


def _own_npz(path: Path) -> bool:
    """True when ``path`` is an npz archive holding ``hepguard_report`` == the marker."""
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{MARKER_KEY}.npy" not in archive.namelist():
                return False
        with np.load(path, allow_pickle=False) as npz:
            value = npz[MARKER_KEY]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    return value.shape == () and value.dtype.kind == "U" and str(value) == REPORT_MARKER


def _own_parquet(path: Path) -> bool:
    """True when ``path`` is a Parquet file whose schema metadata has the marker."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is needed to have written one
        return False
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError, pa.ArrowException):
        return False
    return metadata.get(MARKER_KEY.encode()) == REPORT_MARKER.encode()


def is_own_output(path: Path) -> bool:
    """True when ``path`` is a file hepguard wrote: a perturbed-events ``.npz`` or ``.parquet``
    file (marked as above, whatever its suffix), or a text report
    (:func:`~pytest_hepguard.report.files.is_own_report`)."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return _own_npz(path)
    if head == b"PAR1":
        return _own_parquet(path)
    return is_own_report(path)


# --------------------------------------------------------------------------------------------
# Columns


def file_name(check: str, fmt: str) -> str:
    """``<check>.<fmt>`` with every character of ``check`` outside ``[A-Za-z0-9_.-]`` replaced
    by ``_`` (an empty name becomes ``_``)."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', check) or '_'}.{fmt}"


def _outputs(name: str, values: np.ndarray, n: int) -> np.ndarray:
    """Model outputs as a float array [n, n_classes] (a 1-D [n] array is one column)."""
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name} must be [{n}, n_classes], got shape {np.shape(values)}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.promote_types(arr.dtype, np.float32), copy=False)


def _feature_columns(
    layout: Layout, rows: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, float]]]:
    """The perturbed per-event columns (name -> float32 [n]) and per-constituent columns
    (name -> (float32 [n, length], pad value)) held in ``rows``. Masks are not data columns
    (they follow from the padding) and are left out; a feature shared by several inputs is
    taken once."""
    per_event: dict[str, np.ndarray] = {}
    constituents: dict[str, tuple[np.ndarray, float]] = {}
    if not layout.multi_input:
        for j, name in enumerate(layout.names):
            per_event[name] = np.ascontiguousarray(rows[:, j])
        return per_event, constituents
    for block in layout.blocks:
        spec = block.spec
        if spec.per == "event":
            for name, j in zip(spec.features, block.index, strict=True):
                per_event[name] = np.ascontiguousarray(rows[:, j])
        elif spec.per == "constituent":
            for f, name in enumerate(spec.features):
                if name not in constituents:
                    values = np.ascontiguousarray(rows[:, block.index[:, f]])
                    constituents[name] = (values, spec.pad_value)
    return per_event, constituents


def _real_counts(events: Events, name: str, length: int) -> np.ndarray:
    """int64 [n]: each event's entries of ``name`` within the padded length (the file's counts
    clipped to ``length``; every entry when the events hold no counts)."""
    counts = events.constituent_counts.get(name)
    if counts is None:
        return np.full(len(events), length, dtype=np.int64)
    return np.clip(np.asarray(counts, dtype=np.int64), 0, length)


def _add(columns: dict[str, Any], name: str, value: Any, what: str) -> None:
    if name in columns:
        raise ValueError(
            f"column {name!r} ({what}) is also another column of the perturbed events; "
            "each column name may appear once"
        )
    columns[name] = value


# --------------------------------------------------------------------------------------------
# Writers


def _npz_writer(
    per_event: dict[str, np.ndarray],
    constituents: dict[str, tuple[np.ndarray, float]],
    extra: dict[str, np.ndarray],
    nominal: np.ndarray,
    perturbed: np.ndarray,
) -> Any:
    arrays: dict[str, np.ndarray] = {}
    for name, values in per_event.items():
        _add(arrays, name, values, "per-event feature")
    for name, (values, _) in constituents.items():
        _add(arrays, name, values, "per-constituent feature")
    for name, values in extra.items():
        _add(arrays, name, values, "label/weight")
    _add(arrays, NOMINAL, nominal, "nominal outputs")
    _add(arrays, PERTURBED, perturbed, "perturbed outputs")
    _add(arrays, MARKER_KEY, np.array(REPORT_MARKER), "hepguard's marker")

    def write(fh: BinaryIO) -> None:
        np.savez(fh, **arrays)

    return write


def _parquet_writer(
    events: Events,
    per_event: dict[str, np.ndarray],
    constituents: dict[str, tuple[np.ndarray, float]],
    extra: dict[str, np.ndarray],
    nominal: np.ndarray,
    perturbed: np.ndarray,
) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {}
    for name, values in per_event.items():
        _add(columns, name, pa.array(values), "per-event feature")
    for name, (values, _) in constituents.items():
        length = values.shape[1]
        keep = _real_counts(events, name, length)
        flat = values[np.arange(length)[None, :] < keep[:, None]]  # event-major
        offsets = np.concatenate([[0], np.cumsum(keep)])
        if offsets[-1] < np.iinfo(np.int32).max:
            lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat))
        else:
            lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat))
        _add(columns, name, lists, "per-constituent feature")
    for name, values in extra.items():
        _add(columns, name, pa.array(values), "label/weight")
    for prefix, outputs in ((NOMINAL, nominal), (PERTURBED, perturbed)):
        for k in range(outputs.shape[1]):
            _add(columns, f"{prefix}_{k}", pa.array(outputs[:, k]), "model outputs")
    metadata = {
        MARKER_KEY: REPORT_MARKER,
        "hepguard_n_classes": str(nominal.shape[1]),
    }
    if MARKER_KEY in columns:
        raise ValueError(f"column {MARKER_KEY!r} is reserved for hepguard's marker")
    table = pa.table(columns, metadata=metadata)

    def write(fh: BinaryIO) -> None:
        pq.write_table(table, fh)

    return write


# --------------------------------------------------------------------------------------------
# Entry point


def write_perturbed(
    directory: Path,
    check: str,
    events: Events,
    layout: Layout,
    rows: np.ndarray,
    nominal: np.ndarray,
    perturbed: np.ndarray,
    *,
    fmt: str = "npz",
    label: str | None = "label",
    weight: str | None = "weight",
    inputs: Mapping[str, Path | None] = _NO_INPUTS,
    force: bool = False,
) -> Path:
    """Write one check's perturbed events to ``<directory>/<check>.<fmt>``; return that path.

    Args:
        directory: the folder of the file; created if missing (its parent must exist).
        check: the check's name; characters outside ``[A-Za-z0-9_.-]`` become ``_``.
        events: the sample as loaded (before :meth:`Layout.flatten`): its labels, weights and
            per-constituent counts are written alongside the perturbed features.
        layout: the row layout of the uncertainty model the rows follow.
        rows: float32 ``[n_events, n_flat]``, the perturbed rows in ``layout`` order (as
            ``layout.flatten(events).features`` holds the nominal ones), in the features'
            physical units (GeV, cm, ...: the file's units; an input's ``scaling`` is not
            applied). Mask entries are not written.
        nominal: the model's outputs on the nominal events, ``[n_events, n_classes]`` (class
            probabilities, or whatever the model returns; a 1-D ``[n_events]`` array is one
            column).
        perturbed: the model's outputs on ``rows``, same shape as ``nominal``.
        fmt: ``"npz"`` or ``"parquet"``.
        label: the column name for ``events.labels`` (the uncertainty file's ``data.label``
            when it is one column); None, or events without labels: no label column.
        weight: the column name for ``events.weights`` (``data.weight``); None, or events
            without weights: no weight column.
        inputs: the run's input files by role (model, data, uncertainties): never written
            over, even with ``force``.
        force: write over an existing file hepguard did not write.

    The file holds, per event (``n_events`` rows, in the order of ``events``):

    - each per-event feature under its input column name: float32 ``[n_events]``;
    - each per-constituent feature under its input column name: float32
      ``[n_events, length]`` in ``.npz`` (padded with the input's pad value); in ``.parquet``
      a ``list<float>`` column holding each event's real entries only (its count in
      ``events.constituent_counts`` clipped to ``length``), which
      :func:`~pytest_hepguard.events.load_events` pads back to the same array;
    - the label column (int64 class index) and weight column (float64), when present;
    - ``hepguard_nominal`` and ``hepguard_perturbed``, ``[n_events, n_classes]`` in ``.npz``;
      in ``.parquet`` one column per class, ``hepguard_nominal_0``, ``hepguard_nominal_1``,
      ... (and the number of classes as schema metadata ``hepguard_n_classes``);
    - hepguard's marker (:data:`MARKER_KEY`, see :func:`is_own_output`).

    Raises:
        ValueError: an unknown ``fmt``; ``rows``/outputs of the wrong shape; two columns with
            the same name (e.g. a label column named like a feature).
        ReportPathError: the directory's parent does not exist or the directory is a file;
            the file is an input file; it exists, hepguard did not write it, and not ``force``.
    """
    if fmt not in FORMATS:
        raise ValueError(
            f"unknown format {fmt!r} for perturbed events; expected one of npz, parquet"
        )
    n = len(events)
    rows = np.asarray(rows)
    if rows.shape != (n, len(layout.names)):
        raise ValueError(
            f"rows must be [{n}, {len(layout.names)}] (events x layout entries), "
            f"got shape {rows.shape}"
        )
    rows = rows.astype(np.float32, copy=False)
    nominal = _outputs("nominal", nominal, n)
    perturbed = _outputs("perturbed", perturbed, n)
    if nominal.shape != perturbed.shape:
        raise ValueError(
            f"nominal {nominal.shape} and perturbed {perturbed.shape} outputs differ in shape"
        )
    per_event, constituents = _feature_columns(layout, rows)
    extra: dict[str, np.ndarray] = {}
    if label is not None and events.labels is not None:
        extra[label] = np.asarray(events.labels, dtype=np.int64)
    if weight is not None and events.weights is not None:
        if weight in extra:
            raise ValueError(f"the label and weight columns are both named {weight!r}")
        extra[weight] = np.asarray(events.weights, dtype=np.float64)

    if fmt == "npz":
        write = _npz_writer(per_event, constituents, extra, nominal, perturbed)
    else:
        write = _parquet_writer(events, per_event, constituents, extra, nominal, perturbed)

    directory = Path(directory)
    target = directory / file_name(check, fmt)
    if not directory.exists():
        if not directory.parent.is_dir():
            raise ReportPathError(
                f"{_WHAT} {target}: the folder {directory.parent} does not exist; create it first"
            )
        directory.mkdir(exist_ok=True)
    elif not directory.is_dir():
        raise ReportPathError(f"{_WHAT} {target}: {directory} is a file, expected a folder")
    known = {role: None if p is None else Path(p) for role, p in inputs.items()}
    own = target.is_file() and is_own_output(target)
    check_report_path(target, _WHAT, known, force=force or own)
    write_atomic(target, write)
    return target
