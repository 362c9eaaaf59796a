"""Chunks of many files and the mergeable summaries, against independent references: the
concatenated files read whole, numpy/scipy on the whole sample, the one-process functions."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from pytest_hepguard.chunks import (
    data_files,
    describe_files,
    load_chunk,
    load_sample,
    plan_chunks,
)
from pytest_hepguard.constraints import certify
from pytest_hepguard.distributed import cut_from_window, window_cut
from pytest_hepguard.envelope import feature_moments, std_from_moments
from pytest_hepguard.events import load_events
from pytest_hepguard.exceptions import DataError
from pytest_hepguard.metrics import cut_for_efficiency, output_shift, weighted_auc
from pytest_hepguard.summary import (
    CertificateBins,
    binned_auc,
    binned_ks,
    binned_wasserstein,
    certificate_parts,
    fine_bin,
    merged_certificate,
)
from pytest_hepguard.uncertainties import ConstraintSpec, FeatureSpec

FEATURES = ("a", "b", "n")


def _columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "a": rng.normal(size=n).astype(np.float32),
        "b": rng.exponential(size=n),
        "n": rng.integers(0, 9, n).astype(np.int32),
        "label": rng.integers(0, 2, n).astype(np.int32),
    }


def _write_root(path: Path, columns: dict[str, np.ndarray]) -> Path:
    import uproot

    with uproot.recreate(path) as f:
        f["Events"] = columns
    return path


def _write_parquet(path: Path, columns: dict[str, np.ndarray], row_group: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group)
    return path


@pytest.fixture
def three_root(tmp_path: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    parts = [_columns(rng, n) for n in (70, 5, 101)]
    files = [_write_root(tmp_path / f"s_{i}.root", c) for i, c in enumerate(parts)]
    whole = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return files, whole


@pytest.mark.parametrize("fmt", ["root", "parquet"])
def test_entry_start_reads_the_range(tmp_path: Path, fmt: str) -> None:
    cols = _columns(np.random.default_rng(0), 1000)
    path = (
        _write_root(tmp_path / "x.root", cols)
        if fmt == "root"
        else _write_parquet(tmp_path / "x.parquet", cols, row_group=128)
    )
    for start, n in ((0, 10), (127, 2), (128, 300), (999, 1), (300, 700)):
        ev = load_events(
            path, FEATURES, label="label", entry_start=start, max_events=n, chunk_size=97
        )
        want = np.stack([cols[c][start : start + n] for c in FEATURES], 1).astype(np.float32)
        np.testing.assert_array_equal(ev.features, want)
        np.testing.assert_array_equal(ev.labels, cols["label"][start : start + n])


def test_plan_chunks_cut_across_files(three_root: tuple[list[Path], dict[str, np.ndarray]]) -> None:
    files, whole = three_root
    infos = describe_files(files, [*FEATURES, "label"], None)
    assert [i.entries for i in infos] == [70, 5, 101]
    chunks = plan_chunks(infos, 64)
    assert [(c.start, c.n) for c in chunks] == [(0, 64), (64, 64), (128, 48)]
    assert [(p.path.name, p.start, p.stop) for p in chunks[1].pieces] == [
        ("s_0.root", 64, 70),
        ("s_1.root", 0, 5),
        ("s_2.root", 0, 53),
    ]
    assert "s_1.root entries 0-4" in chunks[1].where()
    got = np.concatenate([load_chunk(c.pieces, FEATURES, label="label").features for c in chunks])
    want = np.stack([whole[c] for c in FEATURES], 1).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    assert sum(c.n for c in plan_chunks(infos, 64, max_events=100)) == 100


def test_load_sample_of_a_glob_and_a_folder(
    three_root: tuple[list[Path], dict[str, np.ndarray]],
) -> None:
    files, whole = three_root
    folder = files[0].parent
    for where in (folder, folder / "s_*.root"):
        ev = load_sample(where, FEATURES, label="label", max_events=120)
        np.testing.assert_array_equal(ev.labels, whole["label"][:120])
    assert data_files(folder) == files


def test_data_files_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no file matches"):
        data_files(tmp_path / "*.root")
    with pytest.raises(DataError, match="without ROOT or Parquet"):
        data_files(tmp_path)
    with pytest.raises(DataError, match="no such data file"):
        data_files(tmp_path / "x.root")


def test_files_that_differ_in_columns_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    good = _write_root(tmp_path / "a.root", _columns(rng, 10))
    cols = _columns(rng, 10)
    del cols["b"]
    lacking = _write_root(tmp_path / "b.root", cols)
    cols = _columns(rng, 10)
    cols["n"] = cols["n"].astype(np.float64)  # another numeric type: read alike
    cols["a"] = [np.arange(k, dtype=np.float32) for k in range(10)]  # a list per event
    import awkward as ak

    cols["a"] = ak.Array(cols["a"])
    retyped = _write_root(tmp_path / "c.root", cols)
    with pytest.raises(DataError) as err:
        describe_files([good, lacking, retyped], [*FEATURES, "label"], None)
    text = str(err.value)
    assert f"{lacking} lacks 'b' (present in a.root, c.root)" in text
    assert f"{retyped} holds 'a' as a list of numbers per event (std::vector<double>), " in text
    assert f"{good} as one number per event (float)" in text
    assert "'n'" not in text
    # extra columns another file does not need are fine
    describe_files([good, retyped], ["n", "b", "label"], None)
    with pytest.raises(DataError, match="cannot be split"):
        describe_files([tmp_path / "x.npz"], ["a"], None)


def test_std_merged_from_blocks_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    x = (rng.normal(5.0, 3.0, size=(10_000, 2)) * [1.0, 1e4]).astype(np.float32)
    x[::7, 1] = -999.0
    specs = [
        FeatureSpec("u", kind="std", up=1.0, down=1.0),
        FeatureSpec("v", kind="std", up=1.0, down=1.0, sentinels=(-999.0,)),
    ]
    whole = std_from_moments(feature_moments(x, specs, block=10_000))
    np.testing.assert_array_equal(whole[0], x[:, 0].astype(np.float64).std())
    blocks = feature_moments(x, specs, block=999)  # chunks of several blocks, merged in order
    merged = std_from_moments(np.concatenate([blocks[:4], blocks[4:]]))
    ref = [x[:, 0].astype(np.float64).std(), x[x[:, 1] != -999.0, 1].astype(np.float64).std()]
    np.testing.assert_allclose(merged, ref, rtol=1e-12)


def test_binned_auc_ks_wasserstein_within_their_bounds() -> None:
    rng = np.random.default_rng(4)
    n = 200_000
    sig = rng.random(n) < 0.4
    nominal = np.where(sig, rng.beta(5, 2, n), rng.beta(2, 5, n)).astype(np.float32)
    nominal[:1000] = 1.0  # saturated outputs: ties
    perturbed = np.clip(nominal + rng.normal(0, 0.02, n), 0, 1).astype(np.float32)
    w = rng.uniform(0.5, 2.0, n)
    idx_n, idx_p = fine_bin(nominal), fine_bin(perturbed)

    def hist(idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(idx[mask], w[mask], minlength=(1 << 17) + 2)

    every = np.ones(n, dtype=bool)
    auc, bound = binned_auc(hist(idx_n, sig), hist(idx_n, ~sig))
    exact = weighted_auc(nominal, sig, w)
    assert abs(auc - exact) <= bound
    assert abs(auc - exact) < 1e-4
    shift = output_shift(nominal, perturbed, sig, ~sig, w)
    ks, ks_bound = binned_ks(hist(idx_n, every), hist(idx_p, every))
    assert ks <= shift.output_ks + 1e-12
    assert shift.output_ks <= ks + ks_bound
    wd = binned_wasserstein(hist(idx_n, every), hist(idx_p, every))
    assert wd == pytest.approx(shift.output_wasserstein, abs=2e-4)


def test_merged_certificate_matches_scipy_on_the_whole_sample() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    nominal = np.c_[rng.normal(size=n), rng.exponential(size=n), rng.integers(0, 6, n)]
    perturbed = nominal.copy()
    perturbed[:, 0] += rng.normal(0, 0.02, n)
    perturbed[: n // 3, 1] *= 1.01
    perturbed[::50, 2] += 1
    valid = np.ones_like(nominal, dtype=bool)
    valid[::9, 1] = False
    names = ["x", "y", "k"]
    limits = ConstraintSpec(ks_pvalue_min=0.05, jsd_max=0.06, corr_max=0.01)
    edges, jedges = [], []
    for j in range(3):
        v = nominal[valid[:, j], j]
        inner = np.unique(np.quantile(v, np.linspace(0, 1, 4097)))
        edges.append(np.concatenate([inner, [np.nextafter(v.max(), np.inf)]]))
        jedges.append(np.linspace(v.min(), v.max(), limits.jsd_bins + 1))
    bins = CertificateBins(
        tuple(names), ((0,), (1,), (2,)), tuple(edges), tuple(jedges), nominal.mean(0)
    )
    cuts = [0, 12_345, 30_000, n]
    parts = [
        certificate_parts(bins, nominal[a:b], perturbed[a:b], valid[a:b])
        for a, b in itertools.pairwise(cuts)
    ]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    cert, bound = merged_certificate(merged, bins, names, limits)
    ref = certify(nominal, perturbed, valid, names, limits)
    for got, want in zip(cert.features, ref.features, strict=True):
        assert got.n == want.n
        assert want.ks <= got.ks <= want.ks + bound + 1e-12  # an upper bound of the exact KS
        assert got.jsd == pytest.approx(want.jsd, abs=1e-12)
    assert cert.features[2].ks == pytest.approx(ref.features[2].ks, abs=1e-12)  # on edges: exact
    assert cert.max_abs_delta_rho == pytest.approx(ref.max_abs_delta_rho, abs=1e-12)
    assert cert.corr_frob_change == pytest.approx(ref.corr_frob_change, abs=1e-12)
    assert bound < 0.002


@pytest.mark.parametrize("seed", range(6))
def test_cut_from_the_window_is_the_whole_sample_cut(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 50_000
    d = rng.beta(3, 2, n).astype(np.float32)
    d[: n // 10] = d[n // 10 : 2 * (n // 10)]  # ties
    w = None if seed % 2 else rng.uniform(0.2, 3.0, n)
    weights = np.ones(n) if w is None else w
    for eff in (0.0, 0.3, 0.7, 0.9999, 1.0):
        hist = np.bincount(fine_bin(d), weights, minlength=(1 << 17) + 2)
        lo, hi = window_cut(hist, eff)
        k = fine_bin(d)
        inside = (k >= lo) & (k <= hi)
        got = cut_from_window(hist, lo, hi, d[inside].astype(np.float64), weights[inside], eff)
        assert got == cut_for_efficiency(d, w, eff)
