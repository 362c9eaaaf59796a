"""Samples spread over many files, cut into chunks of file/entry ranges.

A full validation sample is 10^7–10^8 jets in hundreds of ROOT (or Parquet) files. ``data.path``
(or ``--hepguard-data``) may name one file, a folder or a glob; :func:`describe_files` reads each
file's entry count and column types (metadata only) and refuses files that differ in the columns
the audit reads; :func:`plan_chunks` cuts the concatenated sample into chunks of ``chunk_events``
events (uproot entry ranges, Parquet row ranges), aligned so that chunk boundaries fall on the
audit's batch boundaries; :func:`load_chunk` reads one chunk. A chunk is a plain, picklable value:
it travels to a Dask worker, which reads its ranges itself.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_hepguard.events import Events, load_events
from pytest_hepguard.exceptions import DataError

if TYPE_CHECKING:
    from pytest_hepguard.uncertainties import UncertaintyModel

#: Formats a chunked audit reads by entry range.
CHUNKED_SUFFIXES = (".root", ".parquet", ".pq")


@dataclass(frozen=True)
class FileInfo:
    """One data file: its entries and the type of each column (ROOT or Arrow type name)."""

    path: Path
    entries: int
    columns: Mapping[str, str]


@dataclass(frozen=True)
class Piece:
    """Entries ``start`` (inclusive) to ``stop`` (exclusive) of one file."""

    path: Path
    start: int
    stop: int

    def __str__(self) -> str:
        return f"{self.path} entries {self.start}-{self.stop - 1}"


@dataclass(frozen=True)
class Chunk:
    """Events ``start`` .. ``start + n - 1`` of the concatenated sample, read from ``pieces``."""

    index: int
    start: int
    n: int
    pieces: tuple[Piece, ...]

    def where(self) -> str:
        """The files and entry ranges of the chunk, for messages."""
        return ", ".join(str(p) for p in self.pieces)


def data_files(path: str | Path) -> list[Path]:
    """The files of ``path``: itself when it is a file, the data files of a folder (sorted),
    or the matches of a glob pattern (sorted). Raises DataError when nothing matches."""
    text = str(path)
    p = Path(text)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in CHUNKED_SUFFIXES)
        if not files:
            raise DataError(f"{p}: a folder without ROOT or Parquet files")
        return files
    if glob.has_magic(text):
        files = sorted(Path(f) for f in glob.glob(text) if Path(f).is_file())
        if not files:
            raise DataError(f"{text}: no file matches this pattern")
        return files
    raise DataError(f"{p}: no such data file")


def describe_file(path: Path, tree: str | None) -> FileInfo:
    """Entry count and column types of a ROOT or Parquet file, from its metadata."""
    suffix = path.suffix.lower()
    if suffix not in CHUNKED_SUFFIXES:
        raise DataError(
            f"{path}: a sample of several files, or a chunked (--hepguard-dask) audit, reads "
            f"ROOT or Parquet files by entry range; {path.suffix!r} files cannot be split"
        )
    try:
        if suffix == ".root":
            import uproot

            from pytest_hepguard.events import _root_verdict, root_tree

            with uproot.open(path) as file:
                t = root_tree(path, file, tree)
                columns = {k: _shape(_root_verdict(t[k]), t[k].typename) for k in t.keys()}
                return FileInfo(path, int(t.num_entries), columns)
        import pyarrow.parquet as pq

        from pytest_hepguard.events import _arrow_verdict

        with pq.ParquetFile(path) as pf:
            columns = {f.name: _shape(_arrow_verdict(f.type), f.type) for f in pf.schema_arrow}
            return FileInfo(path, int(pf.metadata.num_rows), columns)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from exc


def _shape(verdict: Any, typename: object) -> str:
    """What a column is for the audit: one number, a list of numbers per event, or neither."""
    kind = {"scalar": "one number", "list": "a list of numbers"}.get(verdict.shape, "nested")
    return f"{kind if verdict.numeric else 'not numeric'} per event ({typename})"


def describe_files(
    files: Sequence[Path], needed: Sequence[str], tree: str | None
) -> list[FileInfo]:
    """:func:`describe_file` of every file; raises DataError naming every file that lacks a
    needed column, or holds it in another shape than the first file (one number vs a list per
    event; numeric types may differ, every value is read as float32)."""
    infos = [describe_file(Path(f), tree) for f in files]
    first = infos[0]
    problems = []
    for info in infos:
        missing = [c for c in needed if c not in info.columns]
        if missing:
            have = [i.path.name for i in infos if all(c in i.columns for c in missing)]
            also = f" (present in {', '.join(have[:3])})" if have else ""
            problems.append(f"{info.path} lacks {', '.join(map(repr, missing))}{also}")
            continue
        for c in needed:
            if c in first.columns and _kind(info.columns[c]) != _kind(first.columns[c]):
                problems.append(
                    f"{info.path} holds {c!r} as {info.columns[c]}, {first.path} as "
                    f"{first.columns[c]}"
                )
    if problems:
        raise DataError(
            f"the {len(infos)} data files differ in the columns the audit reads: "
            + "; ".join(problems)
        )
    if sum(i.entries for i in infos) == 0:
        raise DataError(f"{first.path}: no events in any of the {len(infos)} data files")
    return infos


def _kind(shape: str) -> str:
    return shape.split(" (", 1)[0]


def plan_chunks(
    infos: Sequence[FileInfo], chunk_events: int, max_events: int | None = None
) -> list[Chunk]:
    """The concatenated sample (files in the given order, the first ``max_events`` events)
    cut into chunks of ``chunk_events`` events (the last one shorter), each one or more file
    entry ranges."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    total = sum(i.entries for i in infos)
    if max_events is not None:
        total = min(total, int(max_events))
    offsets = np.cumsum([0] + [i.entries for i in infos])
    chunks = []
    for index, start in enumerate(range(0, total, chunk_events)):
        stop = min(start + chunk_events, total)
        pieces = []
        for info, lo in zip(infos, offsets[:-1], strict=True):
            a, b = max(start, int(lo)), min(stop, int(lo) + info.entries)
            if a < b:
                pieces.append(Piece(info.path, a - int(lo), b - int(lo)))
        chunks.append(Chunk(index, start, stop - start, tuple(pieces)))
    return chunks


def load_chunk(
    pieces: Sequence[Piece],
    feature_names: Sequence[str],
    *,
    constituents: Mapping[str, tuple[int, float]] | None = None,
    label: str | Sequence[str] | None = None,
    weight: str | None = None,
    tree: str | None = None,
) -> Events:
    """The events of ``pieces`` in order, as one :class:`Events` (see :func:`load_events` for
    the arguments); its ``source`` is the first piece's file."""
    parts = [
        load_events(
            p.path,
            feature_names,
            constituents=constituents,
            label=label,
            weight=weight,
            tree=tree,
            max_events=p.stop - p.start,
            entry_start=p.start,
        )
        for p in pieces
    ]
    if len(parts) == 1:
        return parts[0]
    return concatenate(parts)


def needed_columns(
    feature_names: Sequence[str],
    constituents: Mapping[str, tuple[int, float]] | None = None,
    label: str | Sequence[str] | None = None,
    weight: str | None = None,
    tree: str | None = None,
) -> list[str]:
    """Every column an audit reads: features, per-constituent columns, labels, weights (the
    keywords of :func:`read_args`; ``tree`` names no column)."""
    needed = [*feature_names, *(constituents or {})]
    needed += [label] if isinstance(label, str) else list(label or ())
    return needed + ([weight] if weight else [])


def read_args(unc: UncertaintyModel) -> tuple[tuple[str, ...], dict[str, Any]]:
    """What to read for an uncertainty file: its per-event feature columns, and the other
    keywords of :func:`load_events`, :func:`load_sample` and :func:`load_chunk` (the
    per-constituent columns, label, weight, tree)."""
    per_event, constituents = unc.data_columns()
    data = unc.data
    return per_event, {
        "constituents": constituents or None,
        "label": data.label,
        "weight": data.weight,
        "tree": data.tree,
    }


def load_sample(
    path: str | Path, feature_names: Sequence[str], *, max_events: int | None = None, **read: Any
) -> Events:
    """The events of one data file (any format :func:`load_events` reads), or of the ROOT or
    Parquet files of a folder or glob concatenated in name order; the first ``max_events``.
    ``read``: the other keyword arguments of :func:`load_events` (constituents, label, weight,
    tree)."""
    files = data_files(path)
    if len(files) == 1 and files[0] == Path(path):
        return load_events(path, feature_names, max_events=max_events, **read)
    infos = describe_files(files, needed_columns(feature_names, **read), read.get("tree"))
    (chunk,) = plan_chunks(infos, sum(i.entries for i in infos), max_events)
    return load_chunk(chunk.pieces, feature_names, **read)


def concatenate(parts: Sequence[Events]) -> Events:
    """The events of ``parts`` one after the other (same columns)."""
    first = parts[0]

    def joined(get: str) -> np.ndarray | None:
        arrays = [getattr(p, get) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return Events(
        features=np.concatenate([p.features for p in parts]),
        feature_names=first.feature_names,
        labels=joined("labels"),
        weights=joined("weights"),
        source=first.source,
        constituents={
            c: np.concatenate([p.constituents[c] for p in parts]) for c in first.constituents
        },
        constituent_counts={
            c: np.concatenate([p.constituent_counts[c] for p in parts])
            for c in first.constituent_counts
        },
    )
