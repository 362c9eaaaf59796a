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
# The examples of docs/data.md run


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        code = compile(block, f"docs/data.md[python block {i}]", "exec")
        exec(code, {"__name__": f"docs_data_{i}"})
