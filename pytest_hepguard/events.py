"""Data file → :class:`Events`: named per-event arrays, class labels, event weights and padded
per-constituent columns.

Formats, chosen by the file's suffix (see ``docs/data.md``):

- ``.npz``: one 1-D array per column, or a 2-D ``features`` array with a 1-D string array
  ``feature_names`` naming its columns (other columns as separate 1-D arrays). Loaded with
  ``allow_pickle=False``: object arrays are refused.
- ``.parquet`` / ``.pq``: one column per feature (pyarrow, read in record batches).
- ``.h5`` / ``.hdf5``: one 1-D dataset per column, or one compound dataset with named fields
  (h5py, read in slices).
- ``.root``: one flat branch per column of a TTree, or one field per column of an RNTuple
  (uproot, read with ``tree.iterate``).

Per-constituent columns (``load_events(..., constituents=...)``: the tracks, particle-flow
candidates or vertices a multi-input tagger takes as padded sequences) hold a list of numbers per
event instead: a 2-D ``[n_events, k]`` array (npz, HDF5, a fixed-size ROOT array), flat values
plus per-event counts (npz), a variable-length HDF5 dataset, a Parquet ``list<number>`` column, or
a jagged ROOT branch / RNTuple ``std::vector``. Readers hand them over as :class:`_Ragged`
(values back to back + counts); one helper, :func:`_pad`, pads or truncates them all.

Every reader is a generator with one shape, ``reader(request) -> Iterator[Chunk]``: it opens the
file, checks the requested columns exist and hold one number per event (a list of numbers for a
per-constituent column), and yields chunks of at most ``chunk_size`` events holding only the
requested columns. :func:`load_events` stops reading once ``max_events`` events are in, so a file
larger than memory can be audited.

Nothing here imports torch; uproot, awkward, pyarrow and h5py are imported by the reader that
needs them.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pytest_hepguard.exceptions import DataError, HepguardError

__all__ = ["SUPPORTED_SUFFIXES", "Events", "load_events"]

#: How many available column names an error message lists before "... and N more".
_MAX_LISTED = 30

#: The largest finite float32: what the models take.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_NEEDS_ONE_VALUE = (
    "hepguard needs one value per event: reduce it to a per-event quantity (e.g. the leading "
    "object's value, or a count) when writing the file, or, for a multi-input model, declare it "
    "as a per-constituent input (per: constituent in the uncertainty file's inputs:; "
    "constituents= in load_events)"
)


@dataclass(frozen=True, eq=False)
class Events:
    """Named per-event arrays read from one data file.

    Attributes:
        features: float32 ``[n_events, n_features]``, columns in ``feature_names`` order
            (``n_features`` may be 0 when every input is per-constituent).
        feature_names: the ``n_features`` per-event column names.
        labels: int64 ``[n_events]`` class index per event (0-based), or None.
        weights: float64 ``[n_events]`` event weights (negative MC weights allowed), or None
            (every event weighs 1).
        source: the file the events were read from.
        constituents: per-constituent column name → float32 ``[n_events, length]``: each
            event's first ``length`` entries in file order, then the column's pad value.
            Empty unless asked for (``load_events(..., constituents=...)``).
        constituent_counts: per-constituent column name → int64 ``[n_events]``: how many
            entries each event holds in the file, before padding or truncation (so
            ``np.arange(length) < counts[:, None]`` is the mask of real entries).
    """

    features: np.ndarray
    feature_names: tuple[str, ...]
    labels: np.ndarray | None
    weights: np.ndarray | None
    source: Path
    constituents: dict[str, np.ndarray] = field(default_factory=dict)
    constituent_counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features must be [n_events, {len(self.feature_names)}], "
                f"got shape {self.features.shape}"
            )
        n = self.features.shape[0]
        for name, arr in (("labels", self.labels), ("weights", self.weights)):
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"{name} must be [{n}], got shape {arr.shape}")
        for name, arr in self.constituents.items():
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(
                    f"constituents[{name!r}] must be [{n}, length], got shape {arr.shape}"
                )
        for name, arr in self.constituent_counts.items():
            if name not in self.constituents:
                raise ValueError(f"constituent_counts[{name!r}] has no constituents[{name!r}]")
            if arr.shape != (n,):
                raise ValueError(f"constituent_counts[{name!r}] must be [{n}], got {arr.shape}")

    def __len__(self) -> int:
        """Number of events."""
        return int(self.features.shape[0])


# --------------------------------------------------------------------------------------------
# The request every reader gets, and the checks they share


@dataclass(frozen=True)
class _Request:
    """What to read: ``columns`` (no duplicates) and, per column, its role for messages;
    ``constituents``: the per-constituent columns among them, with (length, pad value)."""

    path: Path
    columns: tuple[str, ...]
    roles: dict[str, str]
    chunk_size: int
    stop: int | None  # read at most this many events (None: all)
    tree: str | None
    constituents: dict[str, tuple[int, float]] = field(default_factory=dict)
    start: int = 0  # the first event (entry) read

    @property
    def end(self) -> int | None:
        """The entry after the last one to read (None: to the end of the file)."""
        return None if self.stop is None else self.start + self.stop

    def what(self, column: str) -> str:
        """``"feature 'x'"``, ``"label column 'y'"``, ... for messages."""
        return f"{self.roles[column]} {column!r}"

    def error(self, text: str) -> DataError:
        return DataError(f"{self.path}: {text}")


@dataclass(frozen=True, eq=False)
class _Ragged:
    """One per-constituent column over ``len(counts)`` events: ``values`` 1-D, the entries of
    event 0, then those of event 1, ...; ``counts`` int64 ``[n_events]``, entries per event."""

    values: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> _Ragged:
        """From a 2-D ``[n_events, k]`` array: ``k`` entries per event."""
        n, k = matrix.shape
        return cls(matrix.reshape(-1), np.full(n, k, dtype=np.int64))

    @classmethod
    def from_objects(cls, lists: np.ndarray) -> _Ragged:
        """From a 1-D object array of 1-D arrays (h5py's variable-length rows)."""
        parts = [np.asarray(a) for a in lists]
        counts = np.array([len(a) for a in parts], dtype=np.int64)
        return cls(np.concatenate(parts) if parts else np.empty(0), counts)

    def __len__(self) -> int:
        return len(self.counts)

    @cached_property
    def offsets(self) -> np.ndarray:
        """int64 ``[n_events + 1]``: event ``i`` holds ``values[offsets[i] : offsets[i + 1]]``."""
        return np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])

    def rows(self, s: slice) -> _Ragged:
        """Events ``s`` (a slice with non-negative start/stop and step 1)."""
        start, stop, _ = s.indices(len(self))
        return _Ragged(
            self.values[self.offsets[start] : self.offsets[stop]], self.counts[start:stop]
        )


Chunk = dict[str, Any]  # column -> np.ndarray [n] (per-event) or _Ragged (per-constituent)
Reader = Callable[[_Request], Iterator[Chunk]]


def _pad(values: np.ndarray, counts: np.ndarray, length: int, pad_value: float) -> np.ndarray:
    """``[n_events, length]``: each event's first ``min(count, length)`` values in order, then
    ``pad_value``. ``values`` 1-D, events back to back; ``counts`` int64 ``[n_events]``. The dtype
    is that of ``values`` promoted with float32 (so int64 and float64 stay exact until the caller
    casts to float32, checking the range)."""
    n = len(counts)
    out = np.full((n, length), pad_value, dtype=np.promote_types(values.dtype, np.float32))
    if n == 0:
        return out
    k = int(counts[0])
    if (counts == k).all():  # rectangular: a 2-D array in the file
        out[:, : min(k, length)] = values.reshape(n, k)[:, :length]
        return out
    keep = np.minimum(counts, length)
    event = np.repeat(np.arange(n), keep)
    slot = np.arange(event.size) - np.repeat(np.cumsum(keep) - keep, keep)
    starts = np.cumsum(counts) - counts
    out[event, slot] = values[starts[event] + slot]
    return out


def _listing(names: Sequence[str]) -> str:
    """Comma-separated names, the first ``_MAX_LISTED`` of them."""
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... and {len(names) - _MAX_LISTED} more"
    return shown or "(none)"


def _value(v: Any) -> str:
    """A data value for messages: ``1`` for 1.0, ``1.5``, ``nan``, ``-999``."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v)


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a close candidate (case-insensitive), else ``""``."""
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def _require_columns(req: _Request, available: Sequence[str], hint: str = "") -> None:
    """Raise if a requested column is not among ``available``, listing what is there."""
    have = set(available)
    missing = [c for c in req.columns if c not in have]
    if not missing:
        return
    parts = [req.what(c) + _did_you_mean(c, available) for c in missing]
    raise req.error(
        f"missing column{'s' if len(missing) > 1 else ''}: {'; '.join(parts)}. "
        f"Available columns ({len(available)}): {_listing(list(available))}{hint}"
    )


@dataclass(frozen=True)
class _Verdict:
    """A format-specific verdict on a column: what it holds per event (``"scalar"``: one value;
    ``"list"``: a list of values, jagged or fixed-size; ``"nested"``: anything deeper or
    structured), whether those values are numeric, and the type for messages."""

    shape: Literal["scalar", "list", "nested"]
    numeric: bool
    detail: str


def _check_verdict(req: _Request, column: str, verdict: _Verdict, where: str = "") -> None:
    """Raise unless the column fits its role: one number per event for a per-event column, a
    list of numbers per event for a per-constituent one."""
    detail = verdict.detail + where
    if column in req.constituents:
        if verdict.shape == "scalar" and verdict.numeric:
            raise req.error(
                f"{req.what(column)} has one value per event ({detail}), not a list of "
                "constituents: list it as a per-event feature instead"
            )
        if verdict.shape != "list":
            raise req.error(
                f"{req.what(column)} is not a list of numbers per event ({detail}); a "
                "per-constituent column needs one number per constituent (a jagged or 2-D "
                "[n_events, k] column)"
            )
    elif verdict.shape != "scalar":
        raise req.error(
            f"{req.what(column)} is per-object/jagged or multi-dimensional ({detail}); "
            + _NEEDS_ONE_VALUE
        )
    if not verdict.numeric:
        raise req.error(
            f"{req.what(column)} is not numeric ({detail}); expected integers, floats or booleans"
        )


def _numpy_verdict(dtype: np.dtype, shape: tuple[int, ...], kind: str = "numpy dtype") -> _Verdict:
    """Verdict on a numpy array (or HDF5 dataset, or compound field) of ``shape`` (events
    first) and ``dtype`` (possibly a sub-array dtype)."""
    dims = len(shape) - 1 + len(dtype.shape)
    detail = f"{kind} {dtype}, shape {shape}"
    if dtype.kind == "O":
        return _Verdict("nested", False, detail)
    per_event = "scalar" if dims == 0 else "list" if dims == 1 else "nested"
    return _Verdict(per_event, dtype.base.kind in "biuf", detail)


def _check_array(req: _Request, column: str, arr: np.ndarray) -> None:
    """Every chunk of a per-event column passes here: one number per event, numeric dtype."""
    _check_verdict(req, column, _numpy_verdict(arr.dtype, arr.shape))


def _check_ragged(req: _Request, column: str, ragged: Any) -> None:
    """Every chunk of a per-constituent column passes here: numeric values, consistent counts."""
    if not isinstance(ragged, _Ragged):
        raise TypeError(f"per-constituent column {column!r}: reader gave {type(ragged).__name__}")
    values = ragged.values
    if values.dtype.kind == "O" or values.ndim != 1:
        detail = f"numpy dtype {values.dtype}, shape {values.shape} per chunk"
        _check_verdict(req, column, _Verdict("nested", False, detail))
    _check_verdict(req, column, _Verdict("list", values.dtype.kind in "biuf", str(values.dtype)))
    if ragged.counts.sum() != len(values):
        raise req.error(
            f"{req.what(column)}: the per-event counts add up to {int(ragged.counts.sum())} "
            f"entries, but there are {len(values)} values"
        )


def _check_lengths(req: _Request, lengths: dict[str, int]) -> int:
    """The common length of the requested columns; raise if they differ."""
    distinct = sorted(set(lengths.values()))
    if len(distinct) > 1:
        shown = ", ".join(f"{c!r}: {n}" for c, n in lengths.items())
        raise req.error(f"columns have different lengths ({shown}); expected one row per event")
    return distinct[0] if distinct else 0


def _slices(n: int, req: _Request) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk_size`` rows over ``stop`` rows of ``n`` from
    ``start``."""
    end = n if req.end is None else min(n, req.end)
    for start in range(req.start, end, req.chunk_size):
        yield slice(start, min(start + req.chunk_size, end))


# --------------------------------------------------------------------------------------------
# Readers: one per format, same shape

#: The npz array holding the per-event entry counts of a ragged per-constituent column ``c``
#: stored flat (all events' values back to back in ``c``).
_NPZ_NAMES_SUFFIX = "_names"
_NPZ_COUNTS = "{}_counts"


def _npz_cubes(
    req: _Request, files: Sequence[str], get: Callable[[str], np.ndarray]
) -> dict[str, tuple[np.ndarray, int]]:
    """The per-constituent columns held in 3-D arrays: ``<input>`` [n_events, k, n_features]
    (channels-last) with a 1-D string array ``<input>_names`` naming its features. Returns
    column name -> (the 3-D array, its index on the last axis)."""
    out: dict[str, tuple[np.ndarray, int]] = {}
    for key in files:
        names_key = f"{key}{_NPZ_NAMES_SUFFIX}"
        if names_key not in files:
            continue
        names, cube = get(names_key), get(key)
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise req.error(
                f"{names_key!r} must be a 1-D string array naming the features of {key!r}, got "
                f"dtype {names.dtype}, shape {names.shape}"
            )
        if cube.ndim != 3 or cube.shape[2] != len(names):
            raise req.error(
                f"{key!r} must be a 3-D array [n_events, constituents, {len(names)}] "
                f"(channels-last) matching {names_key!r}, got shape {cube.shape}"
            )
        for index, name in enumerate(names):
            out[str(name.decode() if isinstance(name, bytes) else name)] = (cube, index)
    return out


def _read_npz(req: _Request) -> Iterator[Chunk]:
    """``.npz``: 1-D array per column, or 2-D ``features`` + string ``feature_names``.
    Per-constituent columns: a 2-D array, flat values + ``<column>_counts``, or a 3-D array
    ``<input>`` [n_events, k, n_features] + string ``<input>_names``."""
    try:
        npz = np.load(req.path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise req.error(
                "is not a .npz archive (numpy would have to unpickle it, which hepguard refuses "
                "for data files)"
            ) from exc
        raise
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise req.error("holds a single array, not a .npz archive of named arrays")

    def get(key: str) -> np.ndarray:
        try:
            return npz[key]
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise
            ragged = ""
            if key in req.constituents:
                ragged = (
                    f". For ragged per-constituent values store them flat in {key!r} (all events "
                    f"back to back) with the per-event counts in {_NPZ_COUNTS.format(key)!r}, "
                    "or as a padded 2-D array [n_events, k]"
                )
            raise req.error(
                f"array {key!r} is an object array: object arrays are refused (loading them "
                f"would unpickle untrusted data); store plain numeric arrays{ragged}"
            ) from exc

    with npz:
        keys = list(npz.files)
        matrix: np.ndarray | None = None
        matrix_names: list[str] = []
        if "features" in keys and "feature_names" in keys:
            names = get("feature_names")
            matrix = get("features")
            if names.ndim != 1 or names.dtype.kind not in "US":
                raise req.error(
                    f"'feature_names' must be a 1-D string array, got dtype {names.dtype}, "
                    f"shape {names.shape}"
                )
            matrix_names = [str(n.decode() if isinstance(n, bytes) else n) for n in names]
            if matrix.ndim != 2 or matrix.shape[1] != len(matrix_names):
                raise req.error(
                    f"'features' must be a 2-D array [n_events, {len(matrix_names)}] matching "
                    f"'feature_names', got shape {matrix.shape}"
                )
            keys = matrix_names + [k for k in keys if k not in ("features", "feature_names")]
        cubes = _npz_cubes(req, npz.files, get)
        keys += [name for name in cubes if name not in keys]
        hint = ""
        if "features" in npz.files and matrix is None:
            hint = (
                ". (A 2-D 'features' array needs a 1-D string array 'feature_names' naming its "
                "columns.)"
            )
        _require_columns(req, keys, hint)

        arrays: dict[str, Any] = {}
        for c in req.columns:
            if c in matrix_names:
                arr = matrix[:, matrix_names.index(c)]
            elif c in cubes and c not in npz.files:
                cube, index = cubes[c]
                arr = cube[:, :, index]
            else:
                arr = get(c)
            if c not in req.constituents:
                _check_array(req, c, arr)
                arrays[c] = arr
            elif arr.ndim == 1 and c not in matrix_names and _NPZ_COUNTS.format(c) in keys:
                arrays[c] = _npz_flat(req, c, arr, get(_NPZ_COUNTS.format(c)))
            else:
                _check_verdict(req, c, _numpy_verdict(arr.dtype, arr.shape))
                arrays[c] = _Ragged.from_matrix(arr)
        n = _check_lengths(req, {c: len(a) for c, a in arrays.items()})
        for s in _slices(n, req):
            yield {c: a.rows(s) if isinstance(a, _Ragged) else a[s] for c, a in arrays.items()}


def _npz_flat(req: _Request, column: str, values: np.ndarray, counts: np.ndarray) -> _Ragged:
    """A ragged per-constituent npz column: flat ``values`` + per-event ``counts``."""
    name = _NPZ_COUNTS.format(column)
    if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise req.error(
            f"{name!r} (the per-event entry counts of {req.what(column)}) must be a 1-D array "
            f"of non-negative integers, got dtype {counts.dtype}, shape {counts.shape}"
        )
    if int(counts.sum()) != len(values):
        raise req.error(
            f"{req.what(column)} holds {len(values)} values but its counts {name!r} add up to "
            f"{int(counts.sum())}"
        )
    return _Ragged(values, counts.astype(np.int64))


def _arrow_verdict(t: Any) -> _Verdict:
    """Verdict on a Parquet column of Arrow type ``t``."""
    import pyarrow as pa

    def numeric(u: Any) -> bool:
        return bool(pa.types.is_integer(u) or pa.types.is_floating(u) or pa.types.is_boolean(u))

    detail = f"parquet type {t}"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if pa.types.is_nested(t.value_type):
            return _Verdict("nested", False, detail)
        return _Verdict("list", numeric(t.value_type), detail)
    if pa.types.is_nested(t):
        return _Verdict("nested", False, detail)
    return _Verdict("scalar", numeric(t), detail)


def _ragged_arrow(col: Any) -> _Ragged:
    """A list column of a record batch; a null list has no entries, a null entry is NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    flat = col.flatten()
    if flat.null_count:  # missing values become NaN, refused downstream
        flat = flat.cast(pa.float64())
    return _Ragged(flat.to_numpy(zero_copy_only=False), counts.astype(np.int64))


def _read_parquet(req: _Request) -> Iterator[Chunk]:
    """``.parquet`` / ``.pq``: record batches of the requested columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(req.path) as pf:
        schema = pf.schema_arrow
        _require_columns(req, schema.names)
        for c in req.columns:
            _check_verdict(req, c, _arrow_verdict(schema.field(c).type))
        seen, first, skip = 0, 0, req.start
        while first < pf.num_row_groups and skip >= pf.metadata.row_group(first).num_rows:
            skip -= pf.metadata.row_group(first).num_rows
            first += 1
        batches = pf.iter_batches(
            batch_size=req.chunk_size,
            columns=list(req.columns),
            row_groups=range(first, pf.num_row_groups),
        )
        for whole in batches:
            batch, skip = whole.slice(skip), max(skip - whole.num_rows, 0)
            if not batch.num_rows:
                continue
            chunk: Chunk = {}
            for c in req.columns:
                col = batch.column(c)
                if c in req.constituents:
                    chunk[c] = _ragged_arrow(col)
                    continue
                if col.null_count:  # missing values become NaN, refused downstream
                    col = col.cast(pa.float64())
                chunk[c] = col.to_numpy(zero_copy_only=False)
            yield chunk
            seen += batch.num_rows
            if req.stop is not None and seen >= req.stop:
                return


def _h5_verdict(dtype: np.dtype, shape: tuple[int, ...]) -> _Verdict:
    """Verdict on an HDF5 column: a dataset, or a field of a compound dataset of ``shape``."""
    import h5py

    if h5py.check_string_dtype(dtype) is not None:
        return _Verdict("scalar" if len(shape) == 1 else "nested", False, f"HDF5 type {dtype}")
    base = h5py.check_vlen_dtype(dtype)
    if base is not None:
        detail = f"variable-length HDF5 type {dtype} of {base}"
        if len(shape) != 1 or base.shape or base.names:
            return _Verdict("nested", False, detail)
        return _Verdict("list", base.kind in "biuf", detail)
    return _numpy_verdict(dtype, shape, "HDF5")


def _h5_column(req: _Request, column: str, rows: np.ndarray) -> np.ndarray | _Ragged:
    """Rows of one HDF5 column as the assembler takes them."""
    if column not in req.constituents:
        return rows
    if rows.dtype.kind == "O":  # variable-length
        return _Ragged.from_objects(rows)
    return _Ragged.from_matrix(rows)


def _read_hdf5(req: _Request) -> Iterator[Chunk]:
    """``.h5`` / ``.hdf5``: datasets (one per column) or one compound dataset."""
    import h5py

    with h5py.File(req.path, "r") as f:
        node: Any = f
        if req.tree is not None:
            if req.tree not in f:
                present = list(f)
                raise req.error(
                    f"no group or dataset {req.tree!r}{_did_you_mean(req.tree, present)}; "
                    f"present at the top level: {_listing(present)}"
                )
            node = f[req.tree]
        if isinstance(node, h5py.Group):
            datasets = {k: v for k, v in node.items() if isinstance(v, h5py.Dataset)}
            only = next(iter(datasets.values())) if len(datasets) == 1 else None
            if only is not None and only.dtype.names:
                node = only
        if isinstance(node, h5py.Dataset):  # compound layout
            if not node.dtype.names:
                raise req.error(
                    f"dataset {node.name!r} has no named fields (dtype {node.dtype}); expected "
                    "a compound dataset, or a group of 1-D datasets, one per column"
                )
            _require_columns(req, list(node.dtype.names))
            for c in req.columns:
                where = f" in compound dataset {node.name!r}"
                _check_verdict(req, c, _h5_verdict(node.dtype[c], node.shape), where)
            view = node.fields(list(req.columns))
            for s in _slices(node.shape[0], req):
                rows = view[s]
                yield {c: _h5_column(req, c, rows[c]) for c in req.columns}
            return
        _require_columns(req, list(datasets))
        for c in req.columns:
            _check_verdict(req, c, _h5_verdict(datasets[c].dtype, datasets[c].shape))
        n = _check_lengths(req, {c: datasets[c].shape[0] for c in req.columns})
        for s in _slices(n, req):
            yield {c: _h5_column(req, c, datasets[c][s]) for c in req.columns}


_ROOT_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple")

_ROOT_SCALAR = r"(bool|char|float|double|std::byte|std::u?int(8|16|32|64)_t)"

#: RNTuple field types that hold one number per entry.
_RNTUPLE_SCALAR = re.compile(_ROOT_SCALAR)

#: RNTuple field types that hold a list of numbers per entry.
_RNTUPLE_LIST = re.compile(
    rf"(std::vector|ROOT::VecOps::RVec|ROOT::RVec)<{_ROOT_SCALAR}>|std::array<{_ROOT_SCALAR},\d+>"
)


def _root_tree(req: _Request, file: Any) -> Any:
    """The TTree (or RNTuple) named by ``req.tree``, or the only one in the file."""
    trees = [k for k, cls in file.classnames(cycle=False).items() if cls in _ROOT_TREE_CLASSES]
    if req.tree is None:
        if len(trees) == 1:
            return file[trees[0]]
        if not trees:
            raise req.error(
                "holds no tree (TTree or RNTuple); it holds: "
                + _listing(list(file.keys(cycle=False)))
            )
        raise req.error(
            f"holds {len(trees)} trees ({_listing(trees)}); name the one to read "
            "(data.tree in the uncertainty file, or tree= in load_events)"
        )
    name = re.sub(r";\d+$", "", req.tree)
    if name not in trees:
        raise req.error(
            f"no tree {req.tree!r}{_did_you_mean(name, trees)}; trees present: {_listing(trees)}"
        )
    return file[name]


def root_tree(path: Path, file: Any, tree: str | None) -> Any:
    """The TTree (or RNTuple) ``tree`` of an open ROOT ``file``, or its only one (DataError
    naming ``path`` otherwise)."""
    return _root_tree(_Request(path, (), {}, 1, None, tree), file)


def _root_verdict(branch: Any) -> _Verdict:
    """Verdict on a TTree branch or an RNTuple field."""
    detail = f"ROOT type {branch.typename}"
    if not hasattr(branch, "interpretation"):  # an RNTuple field
        typename = branch.typename.replace(" ", "")
        if _RNTUPLE_SCALAR.fullmatch(typename) and not branch.keys():
            return _Verdict("scalar", True, detail)
        if _RNTUPLE_LIST.fullmatch(typename):
            return _Verdict("list", True, detail)
        if re.search(r"vector|RVec|array|\[|<", typename) or branch.keys():
            return _Verdict("nested", False, detail)
        return _Verdict("scalar", False, detail)

    from uproot.interpretation.jagged import AsJagged
    from uproot.interpretation.numerical import Numerical
    from uproot.interpretation.objects import AsObjects
    from uproot.interpretation.strings import AsStrings

    interp = branch.interpretation
    if isinstance(interp, AsJagged):
        content = interp.content
        if isinstance(content, Numerical) and not getattr(content, "inner_shape", ()):
            return _Verdict("list", True, detail)
        return _Verdict("nested", False, detail)
    if isinstance(interp, AsObjects):
        return _Verdict("nested", False, detail)
    if isinstance(interp, AsStrings):
        return _Verdict("scalar", False, detail)
    if isinstance(interp, Numerical):
        inner = getattr(interp, "inner_shape", ())
        if not inner:
            return _Verdict("scalar", True, detail)
        return _Verdict(
            "list" if len(inner) == 1 else "nested",
            True,
            f"{detail} (a fixed-size array per event)",
        )
    return _Verdict(
        "scalar", False, f"{detail}, no numeric interpretation ({type(interp).__name__})"
    )


def _ragged_awkward(req: _Request, column: str, arr: Any) -> _Ragged:
    """A jagged (or regular) awkward array ``[n_events, var]`` as values + counts; a missing
    entry is NaN."""
    import awkward as ak

    if arr.ndim != 2:
        _check_verdict(req, column, _Verdict("nested", False, f"awkward type {arr.type}"))
    flat = ak.flatten(arr, axis=1)
    if ak.is_none(flat).to_numpy().any():  # missing values become NaN, refused downstream
        flat = ak.fill_none(flat, np.nan)
    return _Ragged(ak.to_numpy(flat), ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64))


def _read_root(req: _Request) -> Iterator[Chunk]:
    """``.root``: branches of one TTree (or fields of an RNTuple), via ``tree.iterate``:
    flat ones for per-event columns, jagged or fixed-size arrays for per-constituent ones."""
    import uproot

    with uproot.open(req.path) as file:
        tree = _root_tree(req, file)
        _require_columns(req, list(tree.keys()))
        for c in req.columns:
            _check_verdict(req, c, _root_verdict(tree[c]), f" in tree {tree.name!r}")
        if not req.constituents:
            yield from tree.iterate(
                list(req.columns),
                step_size=req.chunk_size,
                entry_start=req.start,
                entry_stop=req.end,
                library="np",
            )
            return
        import awkward as ak

        for arrays in tree.iterate(
            list(req.columns),
            step_size=req.chunk_size,
            entry_start=req.start,
            entry_stop=req.end,
            library="ak",
        ):
            yield {
                c: _ragged_awkward(req, c, arrays[c])
                if c in req.constituents
                else ak.to_numpy(arrays[c])
                for c in req.columns
            }


#: suffix (lower case) → (format name, reader)
_READERS: dict[str, tuple[str, Reader]] = {
    ".npz": ("npz", _read_npz),
    ".parquet": ("Parquet", _read_parquet),
    ".pq": ("Parquet", _read_parquet),
    ".h5": ("HDF5", _read_hdf5),
    ".hdf5": ("HDF5", _read_hdf5),
    ".root": ("ROOT", _read_root),
}

#: The file suffixes :func:`load_events` reads.
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_READERS)


def _guarded(req: _Request, fmt: str, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Yield the reader's chunks; a library error inside the reader becomes a DataError."""
    try:
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except (HepguardError, MemoryError):
                raise
            except Exception as exc:
                raise req.error(
                    f"cannot read it as a {fmt} file ({type(exc).__name__}: {exc})"
                ) from exc
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------------------------
# Assembling the chunks into Events


def _float32(req: _Request, column: str, values: np.ndarray, first_event: int) -> np.ndarray:
    """``values`` ([n] or [n, length], events first) as float32; raise on a finite value beyond
    the float32 range, naming the event (``first_event`` is the index of row 0)."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    if values.dtype.kind == "f":
        overflow = np.isinf(out) & np.isfinite(values)
        if overflow.any():
            at = np.unravel_index(int(np.argmax(overflow)), values.shape)
            raise req.error(
                f"{req.what(column)}: value {_value(values[at])} at event {first_event + at[0]} "
                "is beyond the float32 range (±3.4e38) the models take"
            )
    return out


def _non_finite(req: _Request, column: str, values: np.ndarray) -> str | None:
    """``"feature 'x' has 3 NaN/inf values (first at event 17: nan)"`` for a column [n] (or
    [n, length]: the first event, then its first bad constituent); None when all finite."""
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
    if not n_bad:
        return None
    at = np.unravel_index(int(np.argmax(bad)), values.shape)
    where = f"event {at[0]}" + (f", constituent {at[1]}" if values.ndim == 2 else "")
    return (
        f"{req.what(column)} has {n_bad} NaN/inf value{'s' if n_bad > 1 else ''} "
        f"(first at {where}: {_value(values[at])})"
    )


class _Assembler:
    """Collects chunks into features/labels/weights and padded per-constituent columns,
    checking values as they come in."""

    def __init__(
        self,
        req: _Request,
        feature_names: tuple[str, ...],
        label: str | tuple[str, ...] | None,
        weight: str | None,
    ) -> None:
        self.req = req
        self.feature_names = feature_names
        self.label = label
        self.weight = weight
        self.n = 0
        self.blocks: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.padded: dict[str, list[np.ndarray]] = {c: [] for c in req.constituents}
        self.counts: dict[str, list[np.ndarray]] = {c: [] for c in req.constituents}

    @property
    def full(self) -> bool:
        return self.req.stop is not None and self.n >= self.req.stop

    def add(self, chunk: Chunk) -> None:
        """Take the chunk's rows, up to ``stop`` events in all."""
        req = self.req
        for c in req.columns:
            if c in req.constituents:
                _check_ragged(req, c, chunk[c])
            else:
                _check_array(req, c, np.asarray(chunk[c]))
        n_chunk = _check_lengths(req, {c: len(chunk[c]) for c in req.columns})
        take = n_chunk if req.stop is None else min(n_chunk, req.stop - self.n)
        cols = {c: np.asarray(chunk[c])[:take] for c in req.columns if c not in req.constituents}

        block = np.empty((take, len(self.feature_names)), dtype=np.float32)
        for j, name in enumerate(self.feature_names):
            block[:, j] = _float32(req, name, cols[name], self.n)
        self.blocks.append(block)
        for c, (length, pad_value) in req.constituents.items():
            ragged = chunk[c].rows(slice(0, take))
            padded = _pad(ragged.values, ragged.counts, length, pad_value)
            self.padded[c].append(_float32(req, c, padded, self.n))
            self.counts[c].append(ragged.counts)
        if isinstance(self.label, str):
            self.labels.append(self._class_index(cols[self.label]))
        elif self.label is not None:
            self.labels.append(self._one_hot(np.stack([cols[c] for c in self.label], axis=1)))
        if self.weight is not None:
            self.weights.append(cols[self.weight].astype(np.float64))
        self.n += take

    def _class_index(self, values: np.ndarray) -> np.ndarray:
        """int64 class indices from one label column; raise at the first bad value."""
        if values.dtype.kind == "b":
            return values.astype(np.int64)
        if values.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
        else:
            bad = values < 0
        if bad.any():
            i = int(np.argmax(bad))
            v = values[i]
            if np.isnan(v):
                why = "NaN"
            elif v < 0:
                why = "negative"
            elif not np.isfinite(v):
                why = "infinite"
            else:
                why = "not an integer"
            raise self.req.error(
                f"label column {self.label!r} must hold class indices 0, 1, 2, ... (non-negative "
                f"integers); event {self.n + i} has {_value(v)} ({why})"
            )
        return values.astype(np.int64)

    def _one_hot(self, matrix: np.ndarray) -> np.ndarray:
        """int64 argmax indices from one-hot rows ``[n, k]``; raise at the first bad row."""
        assert isinstance(self.label, tuple)
        with np.errstate(invalid="ignore"):
            binary = (matrix == 0) | (matrix == 1)
            ok = binary.all(axis=1) & ((matrix == 1).sum(axis=1) == 1)
        if not ok.all():
            i = int(np.argmin(ok))
            row = ", ".join(f"{c}={_value(v)}" for c, v in zip(self.label, matrix[i], strict=True))
            raise self.req.error(
                f"one-hot label columns {list(self.label)} must hold exactly one 1 and the "
                f"rest 0 in each event; event {self.n + i} has {row}"
            )
        return np.argmax(matrix, axis=1).astype(np.int64)

    def finish(self) -> Events:
        req = self.req
        if self.n == 0:
            raise req.error("no events: the file holds none")
        features = np.concatenate(self.blocks) if len(self.blocks) > 1 else self.blocks[0]
        constituents = {c: np.concatenate(parts) for c, parts in self.padded.items()}
        problems = [
            _non_finite(req, self.feature_names[j], features[:, j])
            for j in np.flatnonzero(~np.isfinite(features).all(axis=0))
        ]
        problems += [_non_finite(req, c, arr) for c, arr in constituents.items()]
        found = [p for p in problems if p is not None]
        if found:
            raise req.error(
                "; ".join(found) + ". Inputs must be finite: encode 'missing' as a sentinel "
                "value (e.g. -999) and declare it as a sentinel of the feature in the "
                "uncertainty file"
            )
        weights = np.concatenate(self.weights) if self.weights else None
        problem = None if weights is None else _non_finite(req, str(self.weight), weights)
        if problem is not None:
            raise req.error(problem + "; weights must be finite (negative weights are fine)")
        labels = np.concatenate(self.labels) if self.labels else None
        return Events(
            features=np.ascontiguousarray(features),
            feature_names=self.feature_names,
            labels=labels,
            weights=weights,
            source=req.path,
            constituents=constituents,
            constituent_counts={c: np.concatenate(parts) for c, parts in self.counts.items()},
        )


# --------------------------------------------------------------------------------------------
# Entry point


def _names(
    path: Path, value: Sequence[str], what: str, allow_empty: bool = False
) -> tuple[str, ...]:
    """Validated tuple of distinct column names."""
    if isinstance(value, (str, bytes)):
        raise DataError(f"{path}: {what} must be a list of column names, got the string {value!r}")
    names = tuple(value)
    if not names and not allow_empty:
        raise DataError(f"{path}: {what}: no column names given")
    for n in names:
        if not isinstance(n, str) or not n:
            raise DataError(f"{path}: {what}: column names must be non-empty strings, got {n!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: {what}: column names repeated: {dup}")
    return names


def _constituent_specs(
    path: Path, value: Mapping[str, tuple[int, float]] | None
) -> dict[str, tuple[int, float]]:
    """Validated ``{column: (length, pad_value)}``: length >= 1, pad value finite in float32."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(
            f"{path}: constituents must be a mapping column -> (length, pad_value), "
            f"got {type(value).__name__}"
        )
    specs: dict[str, tuple[int, float]] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not name:
            raise DataError(
                f"{path}: constituents: column names must be non-empty strings, got {name!r}"
            )
        if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) != 2:
            raise DataError(
                f"{path}: constituents[{name!r}] must be (length, pad_value), got {spec!r}"
            )
        length, pad_value = spec
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise DataError(
                f"{path}: constituents[{name!r}]: length must be a positive integer, got {length!r}"
            )
        if (
            isinstance(pad_value, bool)
            or not isinstance(pad_value, (int, float, np.integer, np.floating))
            or not abs(float(pad_value)) <= _FLOAT32_MAX
        ):
            raise DataError(
                f"{path}: constituents[{name!r}]: pad_value must be a finite number in the "
                f"float32 range, got {pad_value!r}"
            )
        specs[name] = (int(length), float(pad_value))
    return specs


def load_events(
    path: str | Path,
    feature_names: Sequence[str],
    *,
    constituents: Mapping[str, tuple[int, float]] | None = None,
    label: str | Sequence[str] | None = None,
    weight: str | None = None,
    tree: str | None = None,
    max_events: int | None = None,
    chunk_size: int = 200_000,
    entry_start: int = 0,
) -> Events:
    """Read the features (and labels, weights, padded per-constituent columns) of the first
    ``max_events`` events of a file.

    Args:
        path: a ``.npz``, ``.parquet``/``.pq``, ``.h5``/``.hdf5`` or ``.root`` file.
        feature_names: the per-event feature columns (one number per event), in the order the
            model takes them; the result's ``features`` [n_events, len(feature_names)] follow
            this order, not the file's. May be empty when ``constituents`` is given.
        constituents: per-constituent columns (a list of numbers per event: tracks, particle-
            flow candidates, vertices, ...) → ``(length, pad_value)``. Each is returned in
            ``Events.constituents`` as float32 [n_events, length]: the event's first ``length``
            entries in file order, padded with ``pad_value``; ``Events.constituent_counts`` holds
            the entries per event before padding or truncation. Not listed in
            ``feature_names``. None: no per-constituent columns.
        label: one column of class indices 0, 1, 2, ..., or a list of one-hot columns (the
            label is the index of the column holding the 1); None for no labels.
        weight: the event-weight column (negative weights allowed); None for unit weights.
        tree: the TTree/RNTuple of a ROOT file (None: the file's only one), or the group / compound
            dataset of an HDF5 file (None: the file root). Ignored for other formats.
        max_events: read only the first N events in file order from ``entry_start`` (None: all).
        chunk_size: events read per chunk; only one chunk of the file's columns is held at once
            beyond the result.
        entry_start: the first event read (0-based entry of the file; a distributed audit reads
            one file/entry range per task).

    Returns:
        The :class:`Events`; ``features`` float32, ``labels`` int64, ``weights`` float64,
        ``constituents`` float32, ``constituent_counts`` int64.

    Raises:
        DataError: the file is missing, unreadable or of an unknown format; a column is missing,
            jagged, multi-dimensional or not numeric (a per-constituent column: not a list of
            numbers per event); a feature, constituent entry or weight holds NaN/inf; a label
            is not a non-negative integer (or a one-hot row is not one-hot); no events.
    """
    path = Path(path)
    specs = _constituent_specs(path, constituents)
    features = _names(path, feature_names, "feature_names", allow_empty=bool(specs))
    lab: str | tuple[str, ...] | None
    if label is None or isinstance(label, str):
        lab = label
    else:
        lab = _names(path, label, "one-hot label columns")
    if isinstance(label, str) and not label:
        raise DataError(f"{path}: label: empty column name")
    if weight is not None and (not isinstance(weight, str) or not weight):
        raise DataError(f"{path}: weight must be a column name, got {weight!r}")
    if max_events is not None:
        if isinstance(max_events, bool) or not isinstance(max_events, (int, np.integer)):
            raise DataError(f"{path}: max_events must be an integer, got {max_events!r}")
        if max_events < 0:
            raise DataError(f"{path}: max_events must be >= 1, got {max_events}")
        if max_events == 0:
            raise DataError(f"{path}: no events: max_events=0 asks for none; give N >= 1 or None")
    if isinstance(entry_start, bool) or not isinstance(entry_start, (int, np.integer)):
        raise DataError(f"{path}: entry_start must be an integer, got {entry_start!r}")
    if entry_start < 0:
        raise DataError(f"{path}: entry_start must be >= 0, got {entry_start}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

    roles: dict[str, str] = {}
    for c in features:
        roles.setdefault(c, "feature")
    for c in (lab,) if isinstance(lab, str) else lab or ():
        roles.setdefault(c, "label column")
    if weight is not None:
        roles.setdefault(weight, "weight column")
    for c in specs:
        if c in roles:
            raise DataError(
                f"{path}: column {c!r} is given both as a per-constituent column and as a "
                f"{roles[c]}; a per-constituent column is read on its own (list only per-event "
                "columns in feature_names)"
            )
        roles[c] = "per-constituent column"

    if not path.exists():
        raise DataError(f"{path}: no such data file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (expected one data file)")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise DataError(
            f"{path}: unknown data format {path.suffix!r}; supported: "
            ".npz, .parquet/.pq, .h5/.hdf5, .root"
        )
    fmt, reader = _READERS[suffix]

    req = _Request(
        path=path,
        columns=tuple(roles),
        roles=roles,
        chunk_size=int(chunk_size),
        stop=None if max_events is None else int(max_events),
        tree=tree,
        constituents=specs,
        start=int(entry_start),
    )
    out = _Assembler(req, features, lab, weight)
    with contextlib.closing(_guarded(req, fmt, reader(req))) as chunks:
        for chunk in chunks:
            out.add(chunk)
            if out.full:
                break
    return out.finish()
