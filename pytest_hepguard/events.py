"""Data file → :class:`Events`: named per-event arrays, class labels and event weights.

Formats, chosen by the file's suffix (see ``docs/data.md``):

- ``.npz``: one 1-D array per column, or a 2-D ``features`` array with a 1-D string array
  ``feature_names`` naming its columns (other columns as separate 1-D arrays). Loaded with
  ``allow_pickle=False``: object arrays are refused.
- ``.parquet`` / ``.pq``: one column per feature (pyarrow, read in record batches).
- ``.h5`` / ``.hdf5``: one 1-D dataset per column, or one compound dataset with named fields
  (h5py, read in slices).
- ``.root``: one flat branch per column of a TTree, or one field per column of an RNTuple
  (uproot, read with ``tree.iterate``).

Every reader is a generator with one shape, ``reader(request) -> Iterator[dict[str, ndarray]]``:
it opens the file, checks the requested columns exist and hold one number per event, and yields
chunks of at most ``chunk_size`` events holding only the requested columns. :func:`load_events`
stops reading once ``max_events`` events are in, so a file larger than memory can be audited.

Nothing here imports torch; uproot, pyarrow and h5py are imported by the reader that needs them.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_hepguard.exceptions import DataError, HepguardError

__all__ = ["SUPPORTED_SUFFIXES", "Events", "load_events"]

#: How many available column names an error message lists before "... and N more".
_MAX_LISTED = 30

_NEEDS_ONE_VALUE = (
    "hepguard needs one value per event: reduce it to a per-event quantity (e.g. the leading "
    "object's value, or a count) when writing the file"
)


@dataclass(frozen=True, eq=False)
class Events:
    """Named per-event arrays read from one data file.

    Attributes:
        features: float32 ``[n_events, n_features]``, columns in ``feature_names`` order.
        feature_names: the ``n_features`` column names.
        labels: int64 ``[n_events]`` class index per event (0-based), or None.
        weights: float64 ``[n_events]`` event weights (negative MC weights allowed), or None
            (every event weighs 1).
        source: the file the events were read from.
    """

    features: np.ndarray
    feature_names: tuple[str, ...]
    labels: np.ndarray | None
    weights: np.ndarray | None
    source: Path

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

    def __len__(self) -> int:
        """Number of events."""
        return int(self.features.shape[0])


# --------------------------------------------------------------------------------------------
# The request every reader gets, and the checks they share


@dataclass(frozen=True)
class _Request:
    """What to read: ``columns`` (no duplicates) and, per column, its role for messages."""

    path: Path
    columns: tuple[str, ...]
    roles: dict[str, str]
    chunk_size: int
    stop: int | None  # read at most this many events (None: all)
    tree: str | None

    def what(self, column: str) -> str:
        """``"feature 'x'"``, ``"label column 'y'"``, ... for messages."""
        return f"{self.roles[column]} {column!r}"

    def error(self, text: str) -> DataError:
        return DataError(f"{self.path}: {text}")


Chunk = dict[str, np.ndarray]
Reader = Callable[[_Request], Iterator[Chunk]]


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


def _jagged_error(req: _Request, column: str, detail: str) -> DataError:
    return req.error(
        f"{req.what(column)} is per-object/jagged or multi-dimensional ({detail}); "
        + _NEEDS_ONE_VALUE
    )


def _non_numeric_error(req: _Request, column: str, detail: str) -> DataError:
    return req.error(
        f"{req.what(column)} is not numeric ({detail}); expected integers, floats or booleans"
    )


#: A format-specific verdict on a column: None (one number per event), or
#: ``("jagged" | "non-numeric", detail)``.
Problem = tuple[str, str] | None


def _refuse(req: _Request, column: str, problem: Problem, where: str = "") -> None:
    """Raise the jagged / non-numeric error for a column the reader found unfit."""
    if problem is not None:
        kind, detail = problem
        make = _jagged_error if kind == "jagged" else _non_numeric_error
        raise make(req, column, detail + where)


def _check_array(req: _Request, column: str, arr: np.ndarray) -> None:
    """Every chunk of every reader passes here: one number per event, numeric dtype."""
    if arr.dtype == object or arr.ndim != 1:
        raise _jagged_error(req, column, f"numpy dtype {arr.dtype}, shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise _non_numeric_error(req, column, f"numpy dtype {arr.dtype}")


def _check_lengths(req: _Request, lengths: dict[str, int]) -> int:
    """The common length of the requested columns; raise if they differ."""
    distinct = sorted(set(lengths.values()))
    if len(distinct) > 1:
        shown = ", ".join(f"{c!r}: {n}" for c, n in lengths.items())
        raise req.error(f"columns have different lengths ({shown}); expected one row per event")
    return distinct[0] if distinct else 0


def _slices(n: int, req: _Request) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk_size`` rows over the first ``stop`` of ``n``."""
    end = n if req.stop is None else min(n, req.stop)
    for start in range(0, end, req.chunk_size):
        yield slice(start, min(start + req.chunk_size, end))


# --------------------------------------------------------------------------------------------
# Readers: one per format, same shape


def _read_npz(req: _Request) -> Iterator[Chunk]:
    """``.npz``: 1-D array per column, or 2-D ``features`` + string ``feature_names``."""
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
            raise req.error(
                f"array {key!r} is an object array: object arrays are refused (loading them "
                "would unpickle untrusted data); store plain numeric arrays"
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
        hint = ""
        if "features" in npz.files and matrix is None:
            hint = (
                ". (A 2-D 'features' array needs a 1-D string array 'feature_names' naming its "
                "columns.)"
            )
        _require_columns(req, keys, hint)

        arrays: dict[str, np.ndarray] = {}
        for c in req.columns:
            arr = matrix[:, matrix_names.index(c)] if c in matrix_names else get(c)
            _check_array(req, c, arr)
            arrays[c] = arr
        n = _check_lengths(req, {c: len(a) for c, a in arrays.items()})
        for s in _slices(n, req):
            yield {c: a[s] for c, a in arrays.items()}


def _arrow_problem(t: Any) -> Problem:
    """Verdict on a Parquet column of Arrow type ``t``."""
    import pyarrow as pa

    if pa.types.is_nested(t):
        return "jagged", f"parquet type {t}"
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return "non-numeric", f"parquet type {t}"
    return None


def _read_parquet(req: _Request) -> Iterator[Chunk]:
    """``.parquet`` / ``.pq``: record batches of the requested columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(req.path) as pf:
        schema = pf.schema_arrow
        _require_columns(req, schema.names)
        for c in req.columns:
            _refuse(req, c, _arrow_problem(schema.field(c).type))
        seen = 0
        for batch in pf.iter_batches(batch_size=req.chunk_size, columns=list(req.columns)):
            chunk = {}
            for c in req.columns:
                col = batch.column(c)
                if col.null_count:  # missing values become NaN, refused downstream
                    col = col.cast(pa.float64())
                chunk[c] = col.to_numpy(zero_copy_only=False)
            yield chunk
            seen += batch.num_rows
            if req.stop is not None and seen >= req.stop:
                return


def _h5_problem(dtype: np.dtype, shape: tuple[int, ...]) -> Problem:
    """Verdict on an HDF5 column: a dataset, or a field of a compound dataset of ``shape``."""
    import h5py

    if h5py.check_vlen_dtype(dtype) is not None and h5py.check_string_dtype(dtype) is None:
        return "jagged", f"variable-length HDF5 type {dtype}"
    if dtype.subdtype is not None or len(shape) != 1:
        return "jagged", f"HDF5 {dtype} of shape {shape}"
    if dtype.kind not in "biuf":
        return "non-numeric", f"HDF5 type {dtype}"
    return None


def _read_hdf5(req: _Request) -> Iterator[Chunk]:
    """``.h5`` / ``.hdf5``: 1-D datasets (one per column) or one compound dataset."""
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
                _refuse(req, c, _h5_problem(node.dtype[c], node.shape), where)
            view = node.fields(list(req.columns))
            for s in _slices(node.shape[0], req):
                rows = view[s]
                yield {c: rows[c] for c in req.columns}
            return
        _require_columns(req, list(datasets))
        for c in req.columns:
            _refuse(req, c, _h5_problem(datasets[c].dtype, datasets[c].shape))
        n = _check_lengths(req, {c: datasets[c].shape[0] for c in req.columns})
        for s in _slices(n, req):
            yield {c: datasets[c][s] for c in req.columns}


_ROOT_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple")

#: RNTuple field types that hold one number per entry.
_RNTUPLE_SCALAR = re.compile(r"(bool|char|float|double|std::byte|std::u?int(8|16|32|64)_t)")


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


def _root_problem(branch: Any) -> Problem:
    """Verdict on a TTree branch or an RNTuple field."""
    detail = f"ROOT type {branch.typename}"
    if not hasattr(branch, "interpretation"):  # an RNTuple field
        if _RNTUPLE_SCALAR.fullmatch(branch.typename) and not branch.keys():
            return None
        if re.search(r"vector|RVec|array|\[|<", branch.typename) or branch.keys():
            return "jagged", detail
        return "non-numeric", detail

    from uproot.interpretation.jagged import AsJagged
    from uproot.interpretation.numerical import Numerical
    from uproot.interpretation.objects import AsObjects
    from uproot.interpretation.strings import AsStrings

    interp = branch.interpretation
    if isinstance(interp, (AsJagged, AsObjects)):
        return "jagged", detail
    if isinstance(interp, AsStrings):
        return "non-numeric", detail
    if isinstance(interp, Numerical):
        if getattr(interp, "inner_shape", ()):
            return "jagged", detail + " (a fixed-size array per event)"
        return None
    return "non-numeric", f"{detail}, no numeric interpretation ({type(interp).__name__})"


def _read_root(req: _Request) -> Iterator[Chunk]:
    """``.root``: flat branches of one TTree (or fields of an RNTuple), via ``tree.iterate``."""
    import uproot

    with uproot.open(req.path) as file:
        tree = _root_tree(req, file)
        _require_columns(req, list(tree.keys()))
        for c in req.columns:
            _refuse(req, c, _root_problem(tree[c]), f" in tree {tree.name!r}")
        yield from tree.iterate(
            list(req.columns), step_size=req.chunk_size, entry_stop=req.stop, library="np"
        )


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


class _Assembler:
    """Collects chunks into features/labels/weights, checking values as they come in."""

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

    @property
    def full(self) -> bool:
        return self.req.stop is not None and self.n >= self.req.stop

    def add(self, chunk: Chunk) -> None:
        """Take the chunk's rows, up to ``stop`` events in all."""
        req = self.req
        for c in req.columns:
            _check_array(req, c, np.asarray(chunk[c]))
        n_chunk = _check_lengths(req, {c: len(chunk[c]) for c in req.columns})
        take = n_chunk if req.stop is None else min(n_chunk, req.stop - self.n)
        cols = {c: np.asarray(chunk[c])[:take] for c in req.columns}

        block = np.empty((take, len(self.feature_names)), dtype=np.float32)
        for j, name in enumerate(self.feature_names):
            with np.errstate(over="ignore"):
                block[:, j] = cols[name]
            if cols[name].dtype.kind == "f":
                overflow = np.isinf(block[:, j]) & np.isfinite(cols[name])
                if overflow.any():
                    i = int(np.argmax(overflow))
                    raise req.error(
                        f"{req.what(name)}: value {_value(cols[name][i])} at event {self.n + i} is "
                        "beyond the float32 range (±3.4e38) the models take"
                    )
        self.blocks.append(block)
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
        finite = np.isfinite(features)
        if not finite.all():
            problems = []
            for j in np.flatnonzero(~finite.all(axis=0)):
                bad = ~finite[:, j]
                i = int(np.argmax(bad))
                first = _value(features[i, j])
                problems.append(
                    f"{req.what(self.feature_names[j])} has {int(bad.sum())} NaN/inf "
                    f"value{'s' if bad.sum() > 1 else ''} (first at event {i}: {first})"
                )
            raise req.error(
                "; ".join(problems) + ". Inputs must be finite: encode 'missing' as a sentinel "
                "value (e.g. -999) and declare it as a sentinel of the feature in the "
                "uncertainty file"
            )
        weights = np.concatenate(self.weights) if self.weights else None
        if weights is not None and not np.isfinite(weights).all():
            bad = ~np.isfinite(weights)
            i = int(np.argmax(bad))
            raise req.error(
                f"weight column {self.weight!r} has {int(bad.sum())} NaN/inf "
                f"value{'s' if bad.sum() > 1 else ''} (first at event {i}: {_value(weights[i])}); "
                "weights must be finite (negative weights are fine)"
            )
        labels = np.concatenate(self.labels) if self.labels else None
        return Events(
            features=np.ascontiguousarray(features),
            feature_names=self.feature_names,
            labels=labels,
            weights=weights,
            source=req.path,
        )


# --------------------------------------------------------------------------------------------
# Entry point


def _names(path: Path, value: Sequence[str], what: str) -> tuple[str, ...]:
    """Validated tuple of distinct column names."""
    if isinstance(value, (str, bytes)):
        raise DataError(f"{path}: {what} must be a list of column names, got the string {value!r}")
    names = tuple(value)
    if not names:
        raise DataError(f"{path}: {what}: no column names given")
    for n in names:
        if not isinstance(n, str) or not n:
            raise DataError(f"{path}: {what}: column names must be non-empty strings, got {n!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: {what}: column names repeated: {dup}")
    return names


def load_events(
    path: str | Path,
    feature_names: Sequence[str],
    *,
    label: str | Sequence[str] | None = None,
    weight: str | None = None,
    tree: str | None = None,
    max_events: int | None = None,
    chunk_size: int = 200_000,
) -> Events:
    """Read the features (and labels, weights) of the first ``max_events`` events of a file.

    Args:
        path: a ``.npz``, ``.parquet``/``.pq``, ``.h5``/``.hdf5`` or ``.root`` file.
        feature_names: the feature columns, in the order the model takes them; the result's
            ``features`` [n_events, len(feature_names)] follow this order, not the file's.
        label: one column of class indices 0, 1, 2, ..., or a list of one-hot columns (the
            label is the index of the column holding the 1); None for no labels.
        weight: the event-weight column (negative weights allowed); None for unit weights.
        tree: the TTree/RNTuple of a ROOT file (None: the file's only one), or the group / compound
            dataset of an HDF5 file (None: the file root). Ignored for other formats.
        max_events: read only the first N events in file order (None: all).
        chunk_size: events read per chunk; only one chunk of the file's columns is held at once
            beyond the result.

    Returns:
        The :class:`Events`; ``features`` float32, ``labels`` int64, ``weights`` float64.

    Raises:
        DataError: the file is missing, unreadable or of an unknown format; a column is missing,
            jagged, multi-dimensional or not numeric; a feature or weight holds NaN/inf; a label
            is not a non-negative integer (or a one-hot row is not one-hot); no events.
    """
    path = Path(path)
    features = _names(path, feature_names, "feature_names")
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
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

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

    roles: dict[str, str] = {}
    for c in features:
        roles.setdefault(c, "feature")
    for c in (lab,) if isinstance(lab, str) else lab or ():
        roles.setdefault(c, "label column")
    if weight is not None:
        roles.setdefault(weight, "weight column")
    req = _Request(
        path=path,
        columns=tuple(roles),
        roles=roles,
        chunk_size=int(chunk_size),
        stop=None if max_events is None else int(max_events),
        tree=tree,
    )
    out = _Assembler(req, features, lab, weight)
    with contextlib.closing(_guarded(req, fmt, reader(req))) as chunks:
        for chunk in chunks:
            out.add(chunk)
            if out.full:
                break
    return out.finish()
