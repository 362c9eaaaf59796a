"""pytest_hepguard.events: every format round-trips, chunking is invisible, bad data is named.

Small files are written with the format's own library (numpy, pyarrow, h5py, uproot) and read
back with ``load_events``; the real CMS Open Data files are checked against uproot's own read.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pytest_hepguard import events as events_module
from pytest_hepguard.events import SUPPORTED_SUFFIXES, Events, load_events
from pytest_hepguard.exceptions import DataError

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata" / "cms-opendata-events"

Columns = dict[str, np.ndarray]
Writer = Callable[[Path, Columns], Path]


# --------------------------------------------------------------------------------------------
# Writers: one small file per format and layout, columns in the dict's order


def write_npz_columns(directory: Path, cols: Columns) -> Path:
    path = directory / "events.npz"
    np.savez(path, **cols)
    return path


def write_npz_matrix(directory: Path, cols: Columns) -> Path:
    """2-D ``features`` of every float column (named by ``feature_names``); the rest apart."""
    path = directory / "matrix.npz"
    floats = [k for k, v in cols.items() if v.dtype.kind == "f" and v.ndim == 1]
    others = {k: v for k, v in cols.items() if k not in floats}
    matrix = np.stack([cols[k] for k in floats], axis=1) if floats else np.zeros((0, 0))
    np.savez(path, features=matrix, feature_names=np.array(floats), **others)
    return path


def write_parquet(directory: Path, cols: Columns) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "events.parquet"
    pq.write_table(pa.table(dict(cols)), path, row_group_size=97)
    return path


def write_h5_columns(directory: Path, cols: Columns) -> Path:
    import h5py

    path = directory / "events.h5"
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            f.create_dataset(k, data=v)
    return path


def _structured(cols: Columns) -> np.ndarray:
    n = len(next(iter(cols.values())))
    rows = np.empty(n, dtype=[(k, v.dtype, v.shape[1:]) for k, v in cols.items()])
    for k, v in cols.items():
        rows[k] = v
    return rows


def write_h5_compound(directory: Path, cols: Columns) -> Path:
    import h5py

    path = directory / "compound.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("events", data=_structured(cols), chunks=True)
    return path


def write_root(directory: Path, cols: Columns) -> Path:
    """``f[name] = {...}``: uproot 5.7 writes an RNTuple this way."""
    import uproot

    path = directory / "events.root"
    with uproot.recreate(path) as f:
        f["Events"] = dict(cols)
    return path


def write_root_ttree(directory: Path, cols: Columns) -> Path:
    """A classic TTree (``mktree`` + ``extend``), as CMS/ATLAS ntuples are."""
    import awkward as ak
    import uproot

    path = directory / "ttree.root"
    types = {k: "var * float64" if isinstance(v, ak.Array) else v.dtype for k, v in cols.items()}
    with uproot.recreate(path) as f:
        f.mktree("Events", types).extend(dict(cols))
    return path


WRITERS: dict[str, Writer] = {
    "npz-columns": write_npz_columns,
    "npz-matrix": write_npz_matrix,
    "parquet": write_parquet,
    "h5-columns": write_h5_columns,
    "h5-compound": write_h5_compound,
    "root-rntuple": write_root,
    "root-ttree": write_root_ttree,
}


@pytest.fixture(params=list(WRITERS))
def writer(request: pytest.FixtureRequest) -> Writer:
    return WRITERS[request.param]


N = 1000


def sample(n: int = N, seed: int = 1) -> Columns:
    """Columns in a file order that differs from the feature order the tests ask for."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    onehot = np.eye(3, dtype=np.int32)[y]
    cols: Columns = {
        "w": rng.normal(1.0, 1.5, n),  # includes negative weights
        "c_int": rng.integers(0, 12, n).astype(np.int32),
        "b_f32": rng.normal(0, 1, n).astype(np.float32),
        "y": y.astype(np.int64),
        "a_f64": rng.normal(50, 20, n),
        "o0": onehot[:, 0],
        "o1": onehot[:, 1],
        "o2": onehot[:, 2],
    }
    cols["a_f64"][::50] = -999.0  # sentinels are fine
    return cols


FEATURES = ("a_f64", "c_int", "b_f32")


def expected_features(cols: Columns, names: tuple[str, ...] = FEATURES) -> np.ndarray:
    return np.stack([cols[k].astype(np.float32) for k in names], axis=1)


def raises_data_error(path: Path, *parts: str, **kwargs: object) -> str:
    """Load, expect a DataError naming the file and every part; return the message."""
    with pytest.raises(DataError) as info:
        load_events(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert path.name in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------------------------
# Round trips


def test_round_trip(tmp_path: Path, writer: Writer) -> None:
    cols = sample()
    path = writer(tmp_path, cols)
    ev = load_events(path, FEATURES, label="y", weight="w")
    assert isinstance(ev, Events)
    assert len(ev) == N
    assert ev.feature_names == FEATURES
    assert ev.source == path
    assert ev.features.dtype == np.float32 and ev.features.shape == (N, 3)
    assert ev.features.flags.c_contiguous
    np.testing.assert_array_equal(ev.features, expected_features(cols))
    assert ev.labels is not None and ev.labels.dtype == np.int64
    np.testing.assert_array_equal(ev.labels, cols["y"])
    assert ev.weights is not None and ev.weights.dtype == np.float64
    np.testing.assert_array_equal(ev.weights, cols["w"])
    assert (ev.weights < 0).any()


def test_feature_order_is_the_requested_one(tmp_path: Path, writer: Writer) -> None:
    cols = sample()
    path = writer(tmp_path, cols)
    names = ("b_f32", "a_f64")
    ev = load_events(path, names)
    np.testing.assert_array_equal(ev.features, expected_features(cols, names))
    assert ev.labels is None and ev.weights is None


def test_one_hot_labels(tmp_path: Path, writer: Writer) -> None:
    cols = sample()
    path = writer(tmp_path, cols)
    ev = load_events(path, FEATURES, label=["o0", "o1", "o2"])
    np.testing.assert_array_equal(ev.labels, cols["y"])
    # the label is the index into the list given, not into the file's columns
    ev = load_events(path, FEATURES, label=["o2", "o0", "o1"])
    np.testing.assert_array_equal(ev.labels, np.array([1, 2, 0])[cols["y"]])


def test_float_and_bool_labels(tmp_path: Path) -> None:
    cols = {"x": np.arange(6.0), "yf": np.array([0.0, 1, 2, 2, 1, 0]), "yb": np.arange(6) % 2 == 0}
    path = write_parquet(tmp_path, cols)
    np.testing.assert_array_equal(load_events(path, ["x"], label="yf").labels, [0, 1, 2, 2, 1, 0])
    np.testing.assert_array_equal(load_events(path, ["x"], label="yb").labels, [1, 0, 1, 0, 1, 0])


def test_max_events_takes_the_first_n(tmp_path: Path, writer: Writer) -> None:
    cols = sample()
    path = writer(tmp_path, cols)
    ev = load_events(path, FEATURES, label="y", weight="w", max_events=137)
    assert len(ev) == 137
    np.testing.assert_array_equal(ev.features, expected_features(cols)[:137])
    np.testing.assert_array_equal(ev.labels, cols["y"][:137])
    np.testing.assert_array_equal(ev.weights, cols["w"][:137])
    assert len(load_events(path, FEATURES, max_events=10 * N)) == N


@pytest.mark.parametrize("max_events", [None, 1, 64, 150, N])
def test_chunking_gives_identical_results(
    tmp_path: Path, writer: Writer, max_events: int | None
) -> None:
    path = writer(tmp_path, sample())
    kwargs = {"label": ["o0", "o1", "o2"], "weight": "w", "max_events": max_events}
    whole = load_events(path, FEATURES, chunk_size=10 * N, **kwargs)  # type: ignore[arg-type]
    for chunk_size in (1, 7, 64, N - 1):
        part = load_events(path, FEATURES, chunk_size=chunk_size, **kwargs)  # type: ignore[arg-type]
        np.testing.assert_array_equal(part.features, whole.features)
        np.testing.assert_array_equal(part.labels, whole.labels)
        np.testing.assert_array_equal(part.weights, whole.weights)


def test_reading_stops_at_max_events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An endless reader: load_events must stop pulling chunks and close it."""
    pulled: list[int] = []
    closed: list[bool] = []

    def endless(req: events_module._Request) -> Iterator[dict[str, np.ndarray]]:
        try:
            i = 0
            while True:
                pulled.append(i)
                yield {"x": np.full(req.chunk_size, float(i))}
                i += 1
        finally:
            closed.append(True)

    monkeypatch.setitem(events_module._READERS, ".npz", ("npz", endless))
    path = tmp_path / "big.npz"
    path.write_bytes(b"")
    ev = load_events(path, ["x"], max_events=25, chunk_size=10)
    assert len(ev) == 25
    assert pulled == [0, 1, 2]
    assert closed == [True]
    np.testing.assert_array_equal(ev.features[:, 0], np.repeat([0.0, 1.0, 2.0], 10)[:25])


def test_npz_matrix_layout_with_byte_names(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    matrix = np.arange(12.0).reshape(4, 3)
    np.savez(path, features=matrix, feature_names=np.array([b"p", b"q", b"r"]), lab=np.arange(4))
    ev = load_events(path, ["r", "p"], label="lab")
    np.testing.assert_array_equal(ev.features, matrix[:, [2, 0]].astype(np.float32))
    np.testing.assert_array_equal(ev.labels, np.arange(4))


def test_h5_group_and_dataset_by_name(tmp_path: Path) -> None:
    import h5py

    cols = sample(50)
    path = tmp_path / "nested.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("sig")
        for k, v in cols.items():
            group.create_dataset(k, data=v)
        f.create_dataset("bkg/table", data=_structured(cols))
        f.create_dataset("bkg/other", data=np.arange(3))
    for tree in ("sig", "bkg/table"):
        ev = load_events(path, FEATURES, label="y", tree=tree)
        np.testing.assert_array_equal(ev.features, expected_features(cols))
        np.testing.assert_array_equal(ev.labels, cols["y"])
    raises_data_error(
        path, "'sigg'", "did you mean 'sig'", "'bkg'", feature_names=FEATURES, tree="sigg"
    )


def test_root_tree_by_name_and_suffix_case(tmp_path: Path) -> None:
    import uproot

    cols = sample(40)
    path = tmp_path / "two.ROOT"
    with uproot.recreate(path) as f:
        f["sig"] = cols
        f["bkg"] = {k: v[:10] for k, v in cols.items()}
    assert len(load_events(path, FEATURES, tree="sig")) == 40
    assert len(load_events(path, FEATURES, tree="bkg;1")) == 10


def test_module_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, pytest_hepguard.events\n"
        "print(sorted(m for m in ('torch', 'uproot', 'pyarrow', 'h5py', 'awkward') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_supported_suffixes() -> None:
    assert set(SUPPORTED_SUFFIXES) == {".npz", ".parquet", ".pq", ".h5", ".hdf5", ".root"}


# --------------------------------------------------------------------------------------------
# Errors: each names the file and the column


def test_missing_file(tmp_path: Path) -> None:
    raises_data_error(tmp_path / "nope.parquet", "no such data file", feature_names=["x"])


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("x\n1\n")
    raises_data_error(path, "'.csv'", ".npz", ".parquet", ".h5", ".root", feature_names=["x"])


@pytest.mark.parametrize("suffix", [".npz", ".parquet", ".h5", ".root"])
def test_corrupt_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a data file at all\n" * 20)
    raises_data_error(path, feature_names=["x"])


@pytest.mark.parametrize("writer", [write_parquet, write_root, write_root_ttree, write_h5_columns])
def test_truncated_file(tmp_path: Path, writer: Writer) -> None:
    good = writer(tmp_path, sample())
    path = tmp_path / f"truncated{good.suffix}"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    raises_data_error(path, "cannot read", feature_names=list(FEATURES))


def test_missing_columns(tmp_path: Path, writer: Writer) -> None:
    path = writer(tmp_path, sample())
    message = raises_data_error(
        path,
        "feature 'A_F64'",
        "did you mean 'a_f64'",
        "weight column 'weight'",
        "'b_f32'",  # listed among the available columns
        feature_names=["A_F64", "c_int"],
        weight="weight",
    )
    assert "'zzz_unrelated'" not in message
    raises_data_error(path, "label column 'label'", feature_names=["a_f64"], label="label")
    raises_data_error(path, "label column 'o3'", feature_names=["a_f64"], label=["o0", "o3"])


def test_missing_column_lists_at_most_30(tmp_path: Path) -> None:
    cols = {f"col{i:03d}": np.zeros(3) for i in range(100)}
    path = write_parquet(tmp_path, cols)
    message = raises_data_error(path, "'qqq'", "(100)", "and 70 more", feature_names=["qqq"])
    assert "'col029'" in message and "'col030'" not in message


@pytest.mark.parametrize("write", [write_root, write_root_ttree])
def test_jagged_root_branch(tmp_path: Path, write: Writer) -> None:
    import awkward as ak

    cols = {"x": np.arange(3.0), "jet_pt": ak.Array([[1.0, 2.0], [], [3.0]])}
    path = write(tmp_path, cols)  # type: ignore[arg-type]
    raises_data_error(path, "'jet_pt'", "jagged", "one value per event", feature_names=["jet_pt"])


def test_fixed_size_root_arrays(tmp_path: Path) -> None:
    import uproot

    path = tmp_path / "fixed.root"
    with uproot.recreate(path) as f:
        f["rn"] = {"x": np.arange(3.0), "p4": np.zeros((3, 4))}
        f.mktree("tt", {"x": "float64", "p4": ("float64", (4,))}).extend(
            {"x": np.arange(3.0), "p4": np.zeros((3, 4))}
        )
    for tree in ("rn", "tt"):
        raises_data_error(path, "'p4'", "jagged", feature_names=["x", "p4"], tree=tree)


def test_jagged_parquet_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "jag.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "trk": [[1.0], [2.0, 3.0]]}), path)
    raises_data_error(path, "'trk'", "jagged", "one value per event", feature_names=["x", "trk"])


def test_multidimensional_columns(tmp_path: Path) -> None:
    import h5py

    npz = tmp_path / "twod.npz"
    np.savez(npz, x=np.arange(4.0), pf=np.zeros((4, 3)))
    raises_data_error(npz, "'pf'", "jagged", "(4, 3)", feature_names=["x", "pf"])

    h5 = tmp_path / "twod.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.arange(4.0)
        f["pf"] = np.zeros((4, 3))
        f.create_dataset("vl", (4,), dtype=h5py.vlen_dtype(np.float32))
    raises_data_error(h5, "'pf'", "jagged", feature_names=["pf"])
    raises_data_error(h5, "'vl'", "jagged", "variable-length", feature_names=["vl"])

    compound = write_h5_compound(tmp_path, {"x": np.arange(4.0), "pf": np.zeros((4, 3))})
    raises_data_error(compound, "'pf'", "jagged", feature_names=["x", "pf"])


def test_non_numeric_columns(tmp_path: Path) -> None:
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    pqf = tmp_path / "s.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "name": ["a", "b"]}), pqf)
    raises_data_error(pqf, "'name'", "not numeric", feature_names=["x", "name"])

    npz = tmp_path / "s.npz"
    np.savez(npz, x=np.arange(2.0), name=np.array(["a", "b"]))
    raises_data_error(npz, "'name'", "not numeric", feature_names=["name"])

    h5 = tmp_path / "s.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.arange(2.0)
        f["name"] = np.array([b"a", b"b"])
    raises_data_error(h5, "'name'", "not numeric", feature_names=["x"], weight="name")


def test_npz_object_array_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.arange(2.0), bad=np.array([{"a": 1}, None], dtype=object))
    raises_data_error(path, "'bad'", "object arrays are refused", feature_names=["x", "bad"])
    assert len(load_events(path, ["x"])) == 2  # object arrays not asked for are never loaded


def test_npz_matrix_layout_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.savez(path, features=np.zeros((4, 2)), feature_names=np.array(["a", "b", "c"]))
    raises_data_error(path, "'features'", "(4, 2)", feature_names=["a"])
    np.savez(path, features=np.zeros((4, 2)))
    raises_data_error(path, "'feature_names'", feature_names=["a"])


def test_npz_columns_of_different_lengths(tmp_path: Path) -> None:
    path = tmp_path / "len.npz"
    np.savez(path, x=np.arange(4.0), y=np.arange(5.0))
    raises_data_error(path, "'x': 4", "'y': 5", feature_names=["x", "y"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_feature(tmp_path: Path, writer: Writer, bad: float) -> None:
    cols = sample()
    cols["a_f64"][[17, 500, 900]] = bad
    path = writer(tmp_path, cols)
    message = raises_data_error(
        path, "feature 'a_f64'", "3 NaN/inf values", "first at event 17", feature_names=FEATURES
    )
    assert "sentinel" in message
    # chunked: the count and the first event are over the whole file
    raises_data_error(path, "3 NaN/inf", "event 17", feature_names=FEATURES, chunk_size=100)
    # not among the first 17 events: no error
    assert len(load_events(path, FEATURES, max_events=17)) == 17


def test_parquet_nulls_are_missing_values(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "n": pa.array([1, None, 3])}), path)
    raises_data_error(path, "feature 'n'", "1 NaN/inf value", "event 1", feature_names=["x", "n"])


def test_feature_beyond_float32(tmp_path: Path) -> None:
    path = write_npz_columns(tmp_path, {"x": np.array([1.0, 1e39])})
    raises_data_error(path, "feature 'x'", "event 1", "float32", feature_names=["x"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weight(tmp_path: Path, writer: Writer, bad: float) -> None:
    cols = sample()
    cols["w"][[3, 4]] = bad
    path = writer(tmp_path, cols)
    raises_data_error(
        path, "weight column 'w'", "2 NaN/inf", "event 3", feature_names=FEATURES, weight="w"
    )


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        (np.array([0.0, 1.0, 1.5, 2.0]), "1.5 (not an integer)"),
        (np.array([0, 1, -1, 2]), "-1 (negative)"),
        (np.array([0.0, 1.0, np.nan, 2.0]), "nan (NaN)"),
        (np.array([0.0, 1.0, np.inf, 2.0]), "inf (infinite)"),
    ],
)
def test_bad_label_column(tmp_path: Path, values: np.ndarray, shown: str) -> None:
    for write in (write_parquet, write_root, write_root_ttree):
        path = write(tmp_path, {"x": np.arange(4.0), "lab": values})
        raises_data_error(
            path, "label column 'lab'", "event 2", shown, feature_names=["x"], label="lab"
        )


@pytest.mark.parametrize(
    ("row", "shown"),
    [((1, 1, 0), "o0=1, o1=1, o2=0"), ((0, 0, 0), "o0=0, o1=0, o2=0"), ((0.5, 0.5, 0), "o0=0.5")],
)
def test_bad_one_hot_row(
    tmp_path: Path, writer: Writer, row: tuple[float, ...], shown: str
) -> None:
    cols = sample()
    for k, v in zip(("o0", "o1", "o2"), row, strict=True):
        cols[k] = cols[k].astype(np.float64)
        cols[k][42] = v
    path = writer(tmp_path, cols)
    raises_data_error(
        path, "['o0', 'o1', 'o2']", "exactly one 1", "event 42", shown,
        feature_names=FEATURES, label=["o0", "o1", "o2"],
    )  # fmt: skip


def test_zero_events(tmp_path: Path, writer: Writer) -> None:
    cols = {k: v[:0] for k, v in sample().items()}
    path = writer(tmp_path, cols)
    raises_data_error(path, "no events", feature_names=FEATURES)


def test_max_events_zero_or_negative(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, sample())
    raises_data_error(path, "no events", "max_events=0", feature_names=FEATURES, max_events=0)
    raises_data_error(path, "max_events", "-5", feature_names=FEATURES, max_events=-5)


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, sample())
    raises_data_error(path, "repeated", "'a_f64'", feature_names=["a_f64", "a_f64"])
    raises_data_error(path, "list of column names", feature_names="a_f64")
    raises_data_error(path, "no column names", feature_names=[])
    with pytest.raises(ValueError, match="chunk_size"):
        load_events(path, FEATURES, chunk_size=0)


def test_root_tree_errors(tmp_path: Path) -> None:
    import uproot

    path = tmp_path / "two.root"
    with uproot.recreate(path) as f:
        f["sig"] = {"x": np.arange(3.0)}
        f["bkg"] = {"x": np.arange(3.0)}
    raises_data_error(path, "2 trees", "'sig'", "'bkg'", feature_names=["x"])
    raises_data_error(
        path, "no tree 'Events'", "'sig'", "'bkg'", feature_names=["x"], tree="Events"
    )
    empty = tmp_path / "empty.root"
    uproot.recreate(empty).close()
    raises_data_error(empty, "holds no tree", feature_names=["x"])


# --------------------------------------------------------------------------------------------
# Real CMS Open Data files (read-only)


def real(name: str) -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real CMS Open Data files not present ({REALDATA} is absent)")
    return REALDATA / name


def uproot_reference(path: Path, tree: str, names: list[str]) -> dict[str, np.ndarray]:
    import uproot

    with uproot.open(path) as f:
        return f[tree].arrays(names, library="np")


def test_real_hzz() -> None:
    path = real("uproot-HZZ.root")
    names = ["MET_px", "MET_py", "NJet", "NMuon", "NPrimaryVertices"]
    ref = uproot_reference(path, "events", [*names, "EventWeight"])
    ev = load_events(path, names, weight="EventWeight", chunk_size=500)  # tree=None: the only one
    assert len(ev) == 2421
    np.testing.assert_array_equal(ev.features, np.stack([ref[k] for k in names], 1).astype("f4"))
    np.testing.assert_array_equal(ev.weights, ref["EventWeight"].astype(np.float64))
    raises_data_error(path, "feature 'Jet_Px'", "jagged", feature_names=["MET_px", "Jet_Px"])
    raises_data_error(path, "no tree 'Events'", "'events'", feature_names=names, tree="Events")


def test_real_zmumu() -> None:
    path = real("uproot-Zmumu.root")
    names = ["E1", "px1", "pt1", "eta1", "Q1", "M"]
    ref = uproot_reference(path, "events", names)
    ev = load_events(path, names, tree="events")
    assert len(ev) == 2304
    np.testing.assert_array_equal(ev.features, np.stack([ref[k] for k in names], 1).astype("f4"))
    first = load_events(path, names, max_events=100, chunk_size=33)
    np.testing.assert_array_equal(first.features, ev.features[:100])
    # the muon charge is -1/+1: not a class index
    raises_data_error(path, "label column 'Q1'", "negative", feature_names=["M"], label="Q1")
    raises_data_error(path, "feature 'Type'", "not numeric", feature_names=["M", "Type"])


def test_real_nanoaod() -> None:
    path = real("nanoAOD_2015_CMS_Open_Data_ttbar.root")
    names = ["MET_pt", "nJet", "PV_npvs", "PV_z"]
    ref = uproot_reference(path, "Events", [*names, "genWeight"])
    ev = load_events(path, names, weight="genWeight")
    assert len(ev) == 200
    np.testing.assert_array_equal(ev.features, np.stack([ref[k] for k in names], 1).astype("f4"))
    np.testing.assert_array_equal(ev.weights, ref["genWeight"].astype(np.float64))
    assert (ev.weights < 0).any()  # negative MC weights are allowed
    raises_data_error(path, "feature 'Jet_pt'", "jagged", feature_names=["MET_pt", "Jet_pt"])
    raises_data_error(path, "'MET_PT'", "did you mean 'MET_pt'", "(947)", feature_names=["MET_PT"])
    raises_data_error(path, "no tree 'events'", "'Events'", feature_names=names, tree="events")


# --------------------------------------------------------------------------------------------
# Per-constituent columns: padded / truncated to a fixed length, every format

Lists = dict[str, list[np.ndarray]]  # column -> one 1-D array of entries per event
ConstituentWriter = Callable[[Path, Columns, Lists], Path]

LENGTH = 5
CONSTITUENTS = {"trk_pt": (LENGTH, 0.0), "trk_q": (LENGTH, -9.0)}
NC = 300


def constituent_sample(rectangular: bool, n: int = NC, seed: int = 3) -> tuple[Columns, Lists]:
    """Per-event columns and two per-constituent columns (float64 pT, int32 charge). Ragged:
    0..9 entries per event (so fewer and more than LENGTH); rectangular: 7 pT and 3 charges
    per event."""
    rng = np.random.default_rng(seed)
    cols: Columns = {
        "x": rng.normal(size=n),
        "y": rng.integers(0, 2, n).astype(np.int64),
        "w": rng.normal(1.0, 0.5, n),
    }
    if rectangular:
        counts_pt, counts_q = np.full(n, 7), np.full(n, 3)
    else:
        counts_pt = counts_q = rng.integers(0, 10, n)
    lists: Lists = {
        "trk_pt": [rng.exponential(5.0, k) for k in counts_pt],
        "trk_q": [rng.choice([-1, 1], k).astype(np.int32) for k in counts_q],
    }
    return cols, lists


def reference_pad(rows: list[np.ndarray], length: int, pad_value: float) -> np.ndarray:
    """The padding, written independently of the module: one event at a time."""
    out = np.full((len(rows), length), pad_value, dtype=np.float32)
    for i, row in enumerate(rows):
        kept = row[:length].astype(np.float32)
        out[i, : len(kept)] = kept
    return out


def _awkward(rows: list[np.ndarray]) -> object:
    import awkward as ak

    dtype = rows[0].dtype if rows else np.float64
    flat = np.concatenate(rows) if rows else np.empty(0, dtype)
    return ak.unflatten(flat.astype(dtype), [len(r) for r in rows])


def cwrite_npz_2d(directory: Path, cols: Columns, lists: Lists) -> Path:
    path = directory / "constituents_2d.npz"
    np.savez(path, **cols, **{k: np.stack(v) for k, v in lists.items()})
    return path


def cwrite_npz_flat(directory: Path, cols: Columns, lists: Lists) -> Path:
    """Ragged npz without object arrays: values back to back plus ``<column>_counts``."""
    path = directory / "constituents_flat.npz"
    flat = {k: np.concatenate(v) for k, v in lists.items()}
    counts = {f"{k}_counts": np.array([len(r) for r in v]) for k, v in lists.items()}
    np.savez(path, **cols, **flat, **counts)
    return path


def cwrite_parquet(directory: Path, cols: Columns, lists: Lists) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "constituents.parquet"
    table = {k: pa.array(v) for k, v in cols.items()}
    for k, rows in lists.items():
        table[k] = pa.array(rows, type=pa.list_(pa.from_numpy_dtype(rows[0].dtype)))
    pq.write_table(pa.table(table), path, row_group_size=97)
    return path


def cwrite_h5_2d(directory: Path, cols: Columns, lists: Lists) -> Path:
    return write_h5_columns(directory, {**cols, **{k: np.stack(v) for k, v in lists.items()}})


def cwrite_h5_vlen(directory: Path, cols: Columns, lists: Lists) -> Path:
    import h5py

    path = directory / "vlen.h5"
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            f[k] = v
        for k, rows in lists.items():
            data = f.create_dataset(k, (len(rows),), dtype=h5py.vlen_dtype(rows[0].dtype))
            for i, row in enumerate(rows):
                data[i] = row
    return path


def cwrite_h5_compound(directory: Path, cols: Columns, lists: Lists) -> Path:
    """Sub-array fields: ``('trk_pt', float64, (7,))``."""
    return write_h5_compound(directory, {**cols, **{k: np.stack(v) for k, v in lists.items()}})


def cwrite_root_rntuple(directory: Path, cols: Columns, lists: Lists) -> Path:
    import uproot

    path = directory / "constituents.root"
    with uproot.recreate(path) as f:
        f["Events"] = {**cols, **{k: _awkward(v) for k, v in lists.items()}}
    return path


def cwrite_root_ttree(directory: Path, cols: Columns, lists: Lists) -> Path:
    """Jagged TTree branches (``double[]``, ``int32_t[]``), as NanoAOD's ``Jet_pt``."""
    import uproot

    path = directory / "constituents_ttree.root"
    types: dict[str, object] = {k: v.dtype for k, v in cols.items()}
    types.update({k: f"var * {np.dtype(v[0].dtype).name}" for k, v in lists.items()})
    with uproot.recreate(path) as f:
        f.mktree("Events", types).extend({**cols, **{k: _awkward(v) for k, v in lists.items()}})
    return path


#: name -> (writer, takes ragged lists; else only rectangular [n_events, k] data)
CONSTITUENT_WRITERS: dict[str, tuple[ConstituentWriter, bool]] = {
    "npz-2d": (cwrite_npz_2d, False),
    "npz-flat": (cwrite_npz_flat, True),
    "parquet": (cwrite_parquet, True),
    "h5-2d": (cwrite_h5_2d, False),
    "h5-vlen": (cwrite_h5_vlen, True),
    "h5-compound": (cwrite_h5_compound, False),
    "root-rntuple": (cwrite_root_rntuple, True),
    "root-ttree": (cwrite_root_ttree, True),
}


@pytest.fixture(params=list(CONSTITUENT_WRITERS))
def constituent_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Columns, Lists]:
    write, ragged = CONSTITUENT_WRITERS[request.param]
    cols, lists = constituent_sample(rectangular=not ragged)
    return write(tmp_path, cols, lists), cols, lists


def test_constituents_round_trip(constituent_file: tuple[Path, Columns, Lists]) -> None:
    path, cols, lists = constituent_file
    ev = load_events(path, ["x"], constituents=CONSTITUENTS, label="y", weight="w")
    assert len(ev) == NC and ev.feature_names == ("x",)
    np.testing.assert_array_equal(ev.features[:, 0], cols["x"].astype(np.float32))
    np.testing.assert_array_equal(ev.labels, cols["y"])
    np.testing.assert_array_equal(ev.weights, cols["w"])
    assert set(ev.constituents) == set(ev.constituent_counts) == set(CONSTITUENTS)
    for name, (length, pad_value) in CONSTITUENTS.items():
        got = ev.constituents[name]
        assert got.dtype == np.float32 and got.shape == (NC, length)
        np.testing.assert_array_equal(got, reference_pad(lists[name], length, pad_value))
        counts = ev.constituent_counts[name]
        assert counts.dtype == np.int64
        np.testing.assert_array_equal(counts, [len(r) for r in lists[name]])
    counts = ev.constituent_counts["trk_pt"]
    assert len(set(counts)) == 1 or ((counts < LENGTH).any() and (counts > LENGTH).any())


@pytest.mark.parametrize("max_events", [None, 1, 50])
def test_constituents_chunking_and_max_events(
    constituent_file: tuple[Path, Columns, Lists], max_events: int | None
) -> None:
    path, _, _ = constituent_file
    whole = load_events(path, ["x"], constituents=CONSTITUENTS, label="y")
    first = max_events or NC
    for chunk_size in (7, 64):
        part = load_events(
            path,
            ["x"],
            constituents=CONSTITUENTS,
            label="y",
            max_events=max_events,
            chunk_size=chunk_size,
        )
        assert len(part) == first
        np.testing.assert_array_equal(part.features, whole.features[:first])
        np.testing.assert_array_equal(part.labels, whole.labels[:first])
        for name in CONSTITUENTS:
            np.testing.assert_array_equal(part.constituents[name], whole.constituents[name][:first])
            np.testing.assert_array_equal(
                part.constituent_counts[name], whole.constituent_counts[name][:first]
            )


def test_only_constituents(tmp_path: Path) -> None:
    """Every input per-constituent: no per-event features, still one row per event."""
    cols, lists = constituent_sample(rectangular=False, n=20)
    path = cwrite_parquet(tmp_path, cols, lists)
    ev = load_events(path, [], constituents={"trk_pt": (3, -1.0)})
    assert len(ev) == 20 and ev.features.shape == (20, 0) and ev.feature_names == ()
    np.testing.assert_array_equal(ev.constituents["trk_pt"], reference_pad(lists["trk_pt"], 3, -1))
    assert load_events(path, ["x"]).constituents == {}  # none asked for: none read


def test_pad_helper_matches_reference() -> None:
    rng = np.random.default_rng(7)
    for counts in (rng.integers(0, 12, 200), np.full(50, 4), np.zeros(9, int), np.array([], int)):
        rows = [rng.normal(size=k) for k in counts]
        values = np.concatenate(rows) if rows else np.empty(0)
        for length in (1, 4, 6):
            got = events_module._pad(values, counts.astype(np.int64), length, -2.5)
            assert got.shape == (len(counts), length)
            np.testing.assert_array_equal(got.astype("f4"), reference_pad(rows, length, -2.5))


def test_fixed_size_root_arrays_as_constituents(tmp_path: Path) -> None:
    """A fixed-size array per event (TTree ``double[4]``, RNTuple ``std::array<double,4>``)."""
    import uproot

    p4 = np.arange(12.0).reshape(3, 4)
    path = tmp_path / "fixed.root"
    with uproot.recreate(path) as f:
        f["rn"] = {"x": np.arange(3.0), "p4": p4}
        f.mktree("tt", {"x": "float64", "p4": ("float64", (4,))}).extend(
            {"x": np.arange(3.0), "p4": p4}
        )
    for tree in ("rn", "tt"):
        ev = load_events(path, ["x"], constituents={"p4": (6, 0.5)}, tree=tree)
        np.testing.assert_array_equal(ev.constituents["p4"], reference_pad(list(p4), 6, 0.5))
        np.testing.assert_array_equal(ev.constituent_counts["p4"], [4, 4, 4])


def test_real_nanoaod_jets() -> None:
    import awkward as ak
    import uproot

    path = real("nanoAOD_2015_CMS_Open_Data_ttbar.root")
    spec = {"Jet_pt": (4, 0.0), "Jet_eta": (4, 0.0)}
    with uproot.open(path) as f:
        ref = f["Events"].arrays([*spec, "MET_pt", "nJet"], library="ak")
    ev = load_events(path, ["MET_pt"], constituents=spec, weight="genWeight", chunk_size=64)
    assert len(ev) == 200
    np.testing.assert_array_equal(ev.features[:, 0], ak.to_numpy(ref["MET_pt"]))
    for name, (length, pad_value) in spec.items():
        padded = ak.fill_none(ak.pad_none(ref[name], length, clip=True), pad_value)
        np.testing.assert_array_equal(ev.constituents[name], ak.to_numpy(padded).astype("f4"))
        np.testing.assert_array_equal(ev.constituent_counts[name], ak.to_numpy(ref["nJet"]))
    counts = ev.constituent_counts["Jet_pt"]
    assert (counts < 4).any() and (counts > 4).any()
    first = load_events(path, [], constituents=spec, max_events=30, chunk_size=7)
    np.testing.assert_array_equal(first.constituents["Jet_eta"], ev.constituents["Jet_eta"][:30])
    raises_data_error(
        path, "per-constituent column 'nJet'", "one value per event", "per-event feature",
        feature_names=[], constituents={"nJet": (4, 0.0)},
    )  # fmt: skip


# -- errors


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_constituent_entry(tmp_path: Path, bad: float) -> None:
    cols, lists = constituent_sample(rectangular=False, n=40)
    lists["trk_pt"] = [np.full(6, 1.0) for _ in range(40)]
    lists["trk_pt"][17][2] = bad
    lists["trk_pt"][30][0] = bad
    lists["trk_pt"][5][LENGTH] = bad  # truncated away: never reaches the model, no error
    for write in (cwrite_npz_flat, cwrite_parquet, cwrite_h5_vlen, cwrite_root_ttree):
        path = write(tmp_path, cols, lists)
        message = raises_data_error(
            path, "per-constituent column 'trk_pt'", "2 NaN/inf values",
            "first at event 17, constituent 2", feature_names=["x"], constituents=CONSTITUENTS,
            chunk_size=8,
        )  # fmt: skip
        assert "sentinel" in message
        assert len(load_events(path, ["x"], constituents=CONSTITUENTS, max_events=17)) == 17


def test_parquet_null_constituents(tmp_path: Path) -> None:
    """A null list is an event without constituents; a null entry is a missing value."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nulls.parquet"
    trk = pa.array([[1.0, 2.0], None, [3.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "trk": trk}), path)
    ev = load_events(path, ["x"], constituents={"trk": (2, 0.0)})
    np.testing.assert_array_equal(ev.constituents["trk"], [[1, 2], [0, 0], [3, 0]])
    np.testing.assert_array_equal(ev.constituent_counts["trk"], [2, 0, 1])
    trk = pa.array([[1.0, 2.0], [], [None, 3.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "trk": trk}), path)
    raises_data_error(
        path, "'trk'", "event 2, constituent 0", feature_names=[], constituents={"trk": (2, 0.0)}
    )


def test_constituent_beyond_float32(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros(3), trk=np.array([[1.0, 2.0], [3.0, 1e39], [0.0, 0.0]]))
    raises_data_error(
        path, "per-constituent column 'trk'", "event 1", "float32",
        feature_names=["x"], constituents={"trk": (2, 0.0)},
    )  # fmt: skip
    assert len(load_events(path, ["x"], constituents={"trk": (1, 0.0)})) == 3  # truncated away


def test_constituent_column_with_one_value_per_event(tmp_path: Path, writer: Writer) -> None:
    path = writer(tmp_path, sample(20))
    raises_data_error(
        path, "per-constituent column 'a_f64'", "has one value per event", "per-event feature",
        feature_names=["b_f32"], constituents={"a_f64": (4, 0.0)},
    )  # fmt: skip


def test_jagged_feature_points_to_constituents(tmp_path: Path) -> None:
    cols, lists = constituent_sample(rectangular=False, n=10)
    for write in (cwrite_parquet, cwrite_root_rntuple, cwrite_h5_vlen, cwrite_npz_2d):
        if write is cwrite_npz_2d:
            cols, lists = constituent_sample(rectangular=True, n=10)
        path = write(tmp_path, cols, lists)
        raises_data_error(
            path, "feature 'trk_pt'", "jagged", "one value per event", "per-constituent input",
            feature_names=["x", "trk_pt"],
        )  # fmt: skip


def test_constituent_column_not_a_list_of_numbers(tmp_path: Path) -> None:
    import awkward as ak
    import pyarrow as pa
    import pyarrow.parquet as pq
    import uproot

    spec = {"c": (3, 0.0)}
    npz = tmp_path / "deep.npz"
    np.savez(npz, x=np.zeros(4), c=np.zeros((4, 3, 2)))
    raises_data_error(npz, "'c'", "not a list of numbers per event", "(4, 3, 2)",
                      feature_names=["x"], constituents=spec)  # fmt: skip
    pqf = tmp_path / "deep.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "c": [[[1.0]], [[2.0, 3.0]]]}), pqf)
    raises_data_error(pqf, "'c'", "not a list of numbers per event", "list<",
                      feature_names=["x"], constituents=spec)  # fmt: skip
    pq.write_table(pa.table({"x": [1.0, 2.0], "c": [["a"], ["b", "c"]]}), pqf)
    raises_data_error(pqf, "'c'", "not numeric", feature_names=["x"], constituents=spec)
    root = tmp_path / "deep.root"
    with uproot.recreate(root) as f:
        f["Events"] = {"x": np.arange(3.0), "c": ak.Array([[[1.0]], [], [[2.0, 3.0]]])}
    raises_data_error(root, "'c'", "not a list of numbers per event", "std::vector<std::vector",
                      feature_names=["x"], constituents=spec)  # fmt: skip


def test_npz_ragged_layout_errors(tmp_path: Path) -> None:
    spec = {"trk": (3, 0.0)}
    path = tmp_path / "obj.npz"
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.array([1.0]), np.array([2.0, 3.0])]
    np.savez(path, x=np.arange(2.0), trk=ragged)
    raises_data_error(path, "'trk'", "object arrays are refused", "'trk_counts'",
                      feature_names=["x"], constituents=spec)  # fmt: skip
    np.savez(path, x=np.arange(2.0), trk=np.arange(3.0), trk_counts=np.array([1, 1]))
    raises_data_error(path, "'trk'", "3 values", "add up to 2", feature_names=["x"],
                      constituents=spec)  # fmt: skip
    np.savez(path, x=np.arange(2.0), trk=np.arange(3.0), trk_counts=np.array([1.0, 2.0]))
    raises_data_error(path, "'trk_counts'", "non-negative integers", feature_names=["x"],
                      constituents=spec)  # fmt: skip
    np.savez(path, x=np.arange(2.0), trk=np.arange(3.0), trk_counts=np.array([1, 2, 0]))
    raises_data_error(path, "'x': 2", "'trk': 3", feature_names=["x"], constituents=spec)


def test_missing_constituent_column(tmp_path: Path) -> None:
    cols, lists = constituent_sample(rectangular=False, n=10)
    path = cwrite_parquet(tmp_path, cols, lists)
    raises_data_error(
        path, "per-constituent column 'trk_ptt'", "did you mean 'trk_pt'", "'trk_q'",
        feature_names=["x"], constituents={"trk_ptt": (3, 0.0)},
    )  # fmt: skip


def test_bad_constituent_arguments(tmp_path: Path) -> None:
    cols, lists = constituent_sample(rectangular=False, n=10)
    path = cwrite_parquet(tmp_path, cols, lists)

    def bad(*parts: str, features: list[str] | None = None, **spec: object) -> None:
        raises_data_error(path, *parts, feature_names=features or ["x"], constituents=spec)

    bad("'trk_pt'", "both", "per-constituent", "feature", features=["trk_pt"], trk_pt=(3, 0.0))
    bad("'trk_pt'", "length must be a positive integer", "0", trk_pt=(0, 0.0))
    bad("'trk_pt'", "length must be a positive integer", "True", trk_pt=(True, 0.0))
    bad("'trk_pt'", "pad_value must be a finite number", "nan", trk_pt=(3, float("nan")))
    bad("'trk_pt'", "pad_value", "1e+39", trk_pt=(3, 1e39))
    bad("'trk_pt'", "(length, pad_value)", trk_pt=3)
    raises_data_error(path, "mapping", feature_names=["x"], constituents=[("trk_pt", (3, 0))])
    raises_data_error(path, "both", "weight column", feature_names=["x"], weight="trk_pt",
                      constituents={"trk_pt": (3, 0.0)})  # fmt: skip
    raises_data_error(path, "no column names", feature_names=[], constituents={})


def test_events_checks_constituent_shapes() -> None:
    features = np.zeros((3, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"constituents\['c'\] must be \[3, length\]"):
        Events(features, ("x",), None, None, Path("m.npz"), constituents={"c": np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"constituent_counts\['c'\] must be \[3\]"):
        Events(
            features, ("x",), None, None, Path("m.npz"),
            constituents={"c": np.zeros((3, 4))}, constituent_counts={"c": np.zeros(2)},
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The examples of docs/data.md run


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        code = compile(block, f"docs/data.md[python block {i}]", "exec")
        exec(code, {"__name__": f"docs_data_{i}"})


def test_npz_three_dimensional_input_array(tmp_path: Path) -> None:
    """A model input stored whole: ``tracks`` [n, 5, 2] (channels-last) named by
    ``tracks_names``; each named feature is a per-constituent column, padded or cut to its
    length exactly as numpy slicing and padding give it."""
    rng = np.random.default_rng(3)
    tracks = rng.normal(size=(7, 5, 2)).astype(np.float32)
    path = tmp_path / "cube.npz"
    np.savez(path, jet_pt=rng.uniform(20, 100, 7), tracks=tracks, tracks_names=["trk_pt", "trk_d0"])
    ev = load_events(path, ["jet_pt"], constituents={"trk_pt": (4, 0.0), "trk_d0": (6, -1.0)})
    np.testing.assert_array_equal(ev.constituents["trk_pt"], tracks[:, :4, 0])
    expected = np.concatenate([tracks[:, :, 1], np.full((7, 1), -1.0, np.float32)], axis=1)
    np.testing.assert_array_equal(ev.constituents["trk_d0"], expected)
    np.testing.assert_array_equal(ev.constituent_counts["trk_pt"], np.full(7, 5))


def test_npz_three_dimensional_input_array_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, tracks=np.zeros((3, 4, 2)), tracks_names=["a", "b", "c"])
    with pytest.raises(
        DataError, match=r"'tracks' must be a 3-D array \[n_events, constituents, 3\]"
    ):
        load_events(path, [], constituents={"a": (4, 0.0)})
    np.savez(path, tracks=np.zeros((3, 4, 2)), tracks_names=np.zeros(2))
    with pytest.raises(DataError, match=r"'tracks_names' must be a 1-D string array"):
        load_events(path, [], constituents={"a": (4, 0.0)})
