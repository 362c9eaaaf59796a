"""Perturbed events written back as data files (``pytest_hepguard.report.perturbed``).

References: the expected arrays are built by hand (nominal values + known offsets, padding
built with numpy indexing); files are read back with ``load_events`` (the reader hepguard uses
for its inputs), ``np.load`` and ``pyarrow.parquet``; file contents compared by sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pytest_hepguard.events import Events, load_events
from pytest_hepguard.exceptions import DataError, ReportPathError
from pytest_hepguard.layout import Layout
from pytest_hepguard.report.files import REPORT_MARKER
from pytest_hepguard.report.perturbed import is_own_output, write_perturbed
from pytest_hepguard.uncertainties import UncertaintyModel, parse_uncertainties

FORMATS = ("npz", "parquet")
N = 40
N_CLASSES = 3
LENGTH = 4

#: Single-input model: five per-event features, label and weight columns.
SINGLE = """\
version: 1
features:
  pt:   {relative: 0.05, min: 0}
  eta:  {absolute: 0.01}
  phi:  {absolute: 0.01}
  mass: {relative: 0.1, min: 0}
  ntrk: {absolute: 1, integer: true, min: 0}
data:
  label: y
  weight: w
"""

#: Per-event offsets added to the nominal features (exact in float32).
OFFSETS = np.array([0.5, -0.25, 0.125, 2.0, 1.0], dtype=np.float32)

#: Multi-input model: a per-event jet input, four tracks padded with 0, and their mask.
MULTI = f"""\
version: 1
features:
  jet_pt:  {{relative: 0.02, min: 0}}
  jet_eta: {{absolute: 0.01}}
  trk_pt:  {{relative: 0.05, min: 0}}
  trk_d0:  {{absolute: 0.01}}
inputs:
  jet: [jet_pt, jet_eta]
  tracks: {{features: [trk_pt, trk_d0], per: constituent, length: {LENGTH}, pad_value: 0}}
  mask: {{per: mask, mask_of: [tracks]}}
data:
  label: is_b
  weight: evw
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(n: int, seed: int) -> np.ndarray:
    """Class probabilities [n, N_CLASSES] (rows sum to 1)."""
    z = np.random.default_rng(seed).normal(size=(n, N_CLASSES))
    p = np.exp(z)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def load(path: Path, unc: UncertaintyModel) -> Events:
    """``path`` read as hepguard reads its data: the uncertainty model's columns."""
    features, constituents = unc.data_columns()
    return load_events(
        path, features, constituents=constituents, label=unc.data.label, weight=unc.data.weight
    )


def read_outputs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``hepguard_nominal`` and ``hepguard_perturbed`` [n, N_CLASSES] from either format."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return npz["hepguard_nominal"], npz["hepguard_perturbed"]
    table = pq.read_table(path)
    return tuple(
        np.stack([table.column(f"{p}_{k}").to_numpy() for k in range(N_CLASSES)], 1)
        for p in ("hepguard_nominal", "hepguard_perturbed")
    )


# --------------------------------------------------------------------------------------------
# Single input


@pytest.fixture
def single() -> tuple[UncertaintyModel, Layout, Events]:
    unc = parse_uncertainties(SINGLE)
    rng = np.random.default_rng(1)
    features = np.c_[
        rng.uniform(20, 300, N),
        rng.normal(0, 1.5, N),
        rng.uniform(-3, 3, N),
        rng.uniform(5, 120, N),
        rng.integers(0, 20, N),
    ].astype(np.float32)
    labels = rng.integers(0, N_CLASSES, N).astype(np.int64)
    weights = rng.normal(1.0, 0.5, N)  # some negative MC weights
    assert (weights < 0).any()
    events = Events(features, unc.feature_names, labels, weights, Path("in.npz"))
    return unc, Layout(unc), events


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_input_round_trip(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events], fmt: str
) -> None:
    unc, layout, events = single
    nominal_rows = layout.flatten(events).features
    rows = nominal_rows + OFFSETS
    nominal, perturbed = outputs(N, 2), outputs(N, 3)
    path = write_perturbed(
        tmp_path / "out",
        "pgd",
        events,
        layout,
        rows,
        nominal,
        perturbed,
        fmt=fmt,
        label=unc.data.label,
        weight=unc.data.weight,
    )
    assert path == tmp_path / "out" / f"pgd.{fmt}" and path.is_file()
    back = load(path, unc)
    assert back.feature_names == unc.feature_names
    expected = events.features + OFFSETS
    np.testing.assert_array_equal(back.features, expected)
    # the offsets really are there: pt moved by +0.5, eta by -0.25, ...
    np.testing.assert_allclose(back.features - events.features, np.tile(OFFSETS, (N, 1)), atol=1e-5)
    np.testing.assert_array_equal(back.labels, events.labels)
    np.testing.assert_array_equal(back.weights, events.weights)
    got_nominal, got_perturbed = read_outputs(path)
    np.testing.assert_array_equal(got_nominal, nominal)
    np.testing.assert_array_equal(got_perturbed, perturbed)
    assert got_nominal.shape == (N, N_CLASSES)
    assert is_own_output(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_npz_layout_and_parquet_schema(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events]
) -> None:
    """What the files hold besides the features: the marker, dtypes, one column per class."""
    unc, layout, events = single
    rows = layout.flatten(events).features
    args = (events, layout, rows, outputs(N, 2), outputs(N, 3))
    npz_path = write_perturbed(tmp_path, "c", *args, label="y", weight="w")
    with np.load(npz_path, allow_pickle=False) as npz:
        assert set(npz.files) == {
            *unc.feature_names,
            "y",
            "w",
            "hepguard_nominal",
            "hepguard_perturbed",
            "hepguard_report",
        }
        assert str(npz["hepguard_report"]) == REPORT_MARKER
        assert npz["pt"].dtype == np.float32 and npz["pt"].shape == (N,)
        assert npz["y"].dtype == np.int64 and npz["w"].dtype == np.float64
    pq_path = write_perturbed(tmp_path, "c", *args, fmt="parquet", label="y", weight="w")
    schema = pq.read_schema(pq_path)
    assert schema.metadata[b"hepguard_report"] == REPORT_MARKER.encode()
    assert schema.metadata[b"hepguard_n_classes"] == b"3"
    assert schema.names == [
        *unc.feature_names,
        "y",
        "w",
        *(f"hepguard_nominal_{k}" for k in range(N_CLASSES)),
        *(f"hepguard_perturbed_{k}" for k in range(N_CLASSES)),
    ]


def test_no_label_or_weight_columns(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events]
) -> None:
    """label/weight None, or events without them: no such columns."""
    unc, layout, events = single
    rows = layout.flatten(events).features
    path = write_perturbed(
        tmp_path, "a", events, layout, rows, outputs(N, 2), outputs(N, 3), label=None, weight=None
    )
    bare = Events(events.features, events.feature_names, None, None, Path("x.npz"))
    path2 = write_perturbed(tmp_path, "b", bare, layout, rows, outputs(N, 2), outputs(N, 3))
    for p in (path, path2):
        with np.load(p) as npz:
            assert not {"y", "w", "label", "weight"} & set(npz.files)
        back = load_events(p, unc.feature_names)
        np.testing.assert_array_equal(back.features, events.features)


def test_bad_arguments(tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events]) -> None:
    _, layout, events = single
    rows = layout.flatten(events).features
    nom = outputs(N, 2)
    with pytest.raises(ValueError, match=r"unknown format 'csv'.*npz, parquet"):
        write_perturbed(tmp_path, "c", events, layout, rows, nom, nom, fmt="csv")
    with pytest.raises(ValueError, match=r"rows must be \[40, 5\]"):
        write_perturbed(tmp_path, "c", events, layout, rows[:, :4], nom, nom)
    with pytest.raises(ValueError, match=r"perturbed must be \[40, n_classes\]"):
        write_perturbed(tmp_path, "c", events, layout, rows, nom, nom[:10])
    with pytest.raises(ValueError, match=r"column 'pt' \(label/weight\)"):
        write_perturbed(tmp_path, "c", events, layout, rows, nom, nom, label="pt")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_check_name_sanitised(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events]
) -> None:
    _, layout, events = single
    rows = layout.flatten(events).features
    nom = outputs(N, 2)
    path = write_perturbed(tmp_path, "test_tag[pgd/eps=2 σ]", events, layout, rows, nom, nom)
    assert path == tmp_path / "test_tag_pgd_eps_2___.npz"
    path = write_perturbed(tmp_path, "a-b_c.1", events, layout, rows, nom, nom, fmt="parquet")
    assert path == tmp_path / "a-b_c.1.parquet"


# --------------------------------------------------------------------------------------------
# Multi-input: per-event and per-constituent columns


@pytest.fixture
def multi(tmp_path: Path) -> tuple[UncertaintyModel, Layout, Events, Path]:
    """Events read by load_events from an npz with ragged tracks (flat values + counts):
    0 to 6 tracks per jet, so some are padded and some truncated to 4."""
    unc = parse_uncertainties(MULTI)
    rng = np.random.default_rng(5)
    counts = np.resize(np.array([0, 1, 2, 3, 4, 5, 6]), N).astype(np.int64)
    total = int(counts.sum())
    path = tmp_path / "input.npz"
    np.savez(
        path,
        jet_pt=rng.uniform(30, 500, N),
        jet_eta=rng.normal(0, 1.5, N),
        trk_pt=rng.uniform(1, 50, total),
        trk_pt_counts=counts,
        trk_d0=rng.normal(0, 0.1, total),
        trk_d0_counts=counts,
        is_b=rng.integers(0, 2, N),
        evw=rng.uniform(0.5, 2, N),
    )
    events = load(path, unc)
    np.testing.assert_array_equal(events.constituent_counts["trk_pt"], counts)
    return unc, Layout(unc), events, path


@pytest.mark.parametrize("fmt", FORMATS)
def test_multi_input_round_trip(
    tmp_path: Path, multi: tuple[UncertaintyModel, Layout, Events, Path], fmt: str
) -> None:
    unc, layout, events, source = multi
    flat = layout.flatten(events)
    index = {name: j for j, name in enumerate(layout.names)}
    real = np.arange(LENGTH)[None, :] < np.minimum(events.constituent_counts["trk_pt"], 4)[:, None]
    assert (~real).any(axis=1).sum() > 0 and real.all(axis=1).sum() > 0
    # offsets: jet_pt +10, jet_eta -0.5, trk_pt +(1 + slot) and trk_d0 -0.0625 on real tracks
    rows = flat.features.copy()
    rows[:, index["jet_pt"]] += 10
    rows[:, index["jet_eta"]] -= 0.5
    for c in range(LENGTH):
        rows[:, index[f"trk_pt[{c}]"]] += np.where(real[:, c], 1.0 + c, 0.0).astype(np.float32)
        rows[:, index[f"trk_d0[{c}]"]] -= np.where(real[:, c], 0.0625, 0.0).astype(np.float32)
    nominal, perturbed = outputs(N, 7), outputs(N, 8)
    path = write_perturbed(
        tmp_path / "perturbed",
        "multi",
        events,
        layout,
        rows,
        nominal,
        perturbed,
        fmt=fmt,
        label=unc.data.label,
        weight=unc.data.weight,
        inputs={"data": source, "model": None},
    )
    back = load(path, unc)
    assert back.feature_names == ("jet_pt", "jet_eta")
    expected_jet = events.features + np.array([10, -0.5], dtype=np.float32)
    np.testing.assert_array_equal(back.features, expected_jet)
    slot = np.arange(LENGTH, dtype=np.float32)
    expected_pt = np.where(real, events.constituents["trk_pt"] + (1 + slot), 0.0)
    expected_d0 = np.where(real, events.constituents["trk_d0"] - np.float32(0.0625), 0.0)
    np.testing.assert_array_equal(back.constituents["trk_pt"], expected_pt.astype(np.float32))
    np.testing.assert_array_equal(back.constituents["trk_d0"], expected_d0.astype(np.float32))
    assert back.constituents["trk_pt"].shape == (N, LENGTH)
    # the first event has no track at all: all padding
    np.testing.assert_array_equal(back.constituents["trk_pt"][0], np.zeros(LENGTH))
    np.testing.assert_array_equal(back.labels, events.labels)
    np.testing.assert_array_equal(back.weights, events.weights)
    # the perturbed file flattens to the perturbed rows (masks included)
    np.testing.assert_array_equal(layout.flatten(back).features, rows)
    got_nominal, got_perturbed = read_outputs(path)
    np.testing.assert_array_equal(got_nominal, nominal)
    np.testing.assert_array_equal(got_perturbed, perturbed)
    if fmt == "npz":
        with np.load(path) as npz:
            assert npz["trk_pt"].shape == (N, LENGTH) and "mask" not in npz.files
    else:
        table = pq.read_table(path)
        assert table.schema.field("trk_pt").type == pa.list_(pa.float32())
        assert "mask" not in table.column_names
        # only the real entries are stored: the counts clipped to the length
        lengths = [len(v) for v in table.column("trk_pt").to_pylist()]
        np.testing.assert_array_equal(lengths, np.minimum(np.resize(range(7), N), LENGTH))
        np.testing.assert_array_equal(back.constituent_counts["trk_pt"], lengths)


def test_constituents_without_counts_keep_padding(tmp_path: Path) -> None:
    """Events built without per-constituent counts (padded arrays only): parquet stores every
    slot, and the round trip gives the same padded arrays."""
    unc = parse_uncertainties(MULTI)
    layout = Layout(unc)
    jet = np.array([[100.0, 0.5], [200.0, -1.0]], dtype=np.float32)
    trk_pt = np.array([[5.0, 3.0, 0.0, 0.0], [9.0, 8.0, 7.0, 6.0]], dtype=np.float32)
    trk_d0 = np.array([[0.1, -0.2, 0.0, 0.0], [0.3, 0.0, -0.1, 0.2]], dtype=np.float32)
    events = Events(
        jet, ("jet_pt", "jet_eta"), np.array([0, 1]), None, Path("x"),
        constituents={"trk_pt": trk_pt, "trk_d0": trk_d0},
    )  # fmt: skip
    rows = layout.flatten(events).features
    nom = outputs(2, 1)
    for fmt in FORMATS:
        path = write_perturbed(
            tmp_path, "c", events, layout, rows, nom, nom, fmt=fmt, label="is_b", weight="evw"
        )
        back = load_events(
            path, ["jet_pt", "jet_eta"], constituents=unc.data_columns()[1], label="is_b"
        )
        np.testing.assert_array_equal(back.constituents["trk_pt"], trk_pt)
        np.testing.assert_array_equal(back.constituents["trk_d0"], trk_d0)
        np.testing.assert_array_equal(back.features, jet)
        np.testing.assert_array_equal(back.labels, [0, 1])
        assert back.weights is None  # the events have none: no weight column written
        with pytest.raises(DataError, match="missing column: weight column 'evw'"):
            load(path, unc)


# --------------------------------------------------------------------------------------------
# Path policy


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("looks_own", [False, True])
def test_refuses_to_overwrite_an_input_file(
    tmp_path: Path,
    single: tuple[UncertaintyModel, Layout, Events],
    fmt: str,
    force: bool,
    looks_own: bool,
) -> None:
    """The data file sits where the output would go: refused even with force, file unchanged,
    also when the input is itself an earlier perturbed-events file (audited again)."""
    unc, layout, events = single
    rows = layout.flatten(events).features
    nom = outputs(N, 2)
    target = tmp_path / f"gate.{fmt}"
    if looks_own:
        write_perturbed(tmp_path, "gate", events, layout, rows, nom, nom, fmt=fmt)
        assert is_own_output(target)
    elif fmt == "npz":
        np.savez(target, **{n: events.features[:, j] for j, n in enumerate(unc.feature_names)})
    else:
        pq.write_table(pa.table({"pt": events.features[:, 0]}), target)
    before = sha256(target)
    with pytest.raises(ReportPathError) as err:
        write_perturbed(
            tmp_path,
            "gate",
            events,
            layout,
            rows + 1,
            nom,
            nom,
            fmt=fmt,
            inputs={"model": None, "data": target},
            force=force,
        )
    assert str(target) in str(err.value) and "data file" in str(err.value)
    assert "never writes over its inputs" in str(err.value)
    assert sha256(target) == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_a_foreign_file_unless_forced(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events], fmt: str
) -> None:
    unc, layout, events = single
    rows = layout.flatten(events).features
    nom = outputs(N, 2)
    target = tmp_path / f"gate.{fmt}"
    # a data file of the same format that hepguard did not write
    if fmt == "npz":
        np.savez(target, **{n: events.features[:, j] for j, n in enumerate(unc.feature_names)})
    else:
        pq.write_table(pa.table({"pt": events.features[:, 0]}), target)
    assert not is_own_output(target)
    before = sha256(target)
    with pytest.raises(ReportPathError, match="exists and is not a hepguard report") as err:
        write_perturbed(tmp_path, "gate", events, layout, rows, nom, nom, fmt=fmt)
    assert str(target) in str(err.value)
    assert sha256(target) == before
    path = write_perturbed(tmp_path, "gate", events, layout, rows, nom, nom, fmt=fmt, force=True)
    assert path == target and sha256(target) != before and is_own_output(target)


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrites_its_own_earlier_output(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events], fmt: str
) -> None:
    unc, layout, events = single
    rows = layout.flatten(events).features
    nom = outputs(N, 2)
    first = write_perturbed(tmp_path, "gate", events, layout, rows, nom, nom, fmt=fmt)
    before = sha256(first)
    second = write_perturbed(
        tmp_path, "gate", events, layout, rows + OFFSETS, nom, nom, fmt=fmt, label="y", weight="w"
    )
    assert second == first and sha256(second) != before
    np.testing.assert_array_equal(load(second, unc).features, events.features + OFFSETS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_foreign_text_and_own_json(tmp_path: Path) -> None:
    """Recognition: text files go through files.is_own_report; garbage is not ours."""
    foreign = tmp_path / "x.npz"
    foreign.write_text("my notes\n")
    assert not is_own_output(foreign)
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"tool": REPORT_MARKER}))
    assert is_own_output(report)
    fake = tmp_path / "y.parquet"
    fake.write_bytes(b"PAR1 not really parquet")
    assert not is_own_output(fake)
    zipped = tmp_path / "z.npz"
    zipped.write_bytes(b"PK\x03\x04 broken")
    assert not is_own_output(zipped)
    assert not is_own_output(tmp_path / "missing.npz") and not is_own_output(tmp_path)


def test_missing_parent_directory(
    tmp_path: Path, single: tuple[UncertaintyModel, Layout, Events]
) -> None:
    _, layout, events = single
    rows = layout.flatten(events).features
    nom = outputs(N, 2)
    directory = tmp_path / "no" / "such" / "dir"
    with pytest.raises(ReportPathError) as err:
        write_perturbed(directory, "gate", events, layout, rows, nom, nom)
    assert str(directory / "gate.npz") in str(err.value)
    assert str(tmp_path / "no" / "such") in str(err.value) and "does not exist" in str(err.value)
    assert not (tmp_path / "no").exists()
    # the directory itself is created when its parent exists
    path = write_perturbed(tmp_path / "new", "gate", events, layout, rows, nom, nom)
    assert path.parent.is_dir() and path.is_file()
    # a file where the directory should be
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ReportPathError, match="is a file, expected a folder"):
        write_perturbed(tmp_path / "plain", "gate", events, layout, rows, nom, nom)
