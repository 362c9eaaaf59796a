"""Chunked audits (``--hepguard-dask``) against the one-process Auditor on the same events:
counts exact, binned numbers within their stated bounds; a LocalCluster of two processes on
10^6 events from several ROOT files, with a worker killed mid-audit; bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from example_runs import DATA, EXAMPLES, MODEL, QUIET, USAGE_ERROR

from pytest_hepguard.uncertainties import load_uncertainties

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Numbers a chunked audit reproduces exactly (event counts and sums of weights).
EXACT = (
    "n_events",
    "fooling_rate",
    "fooling_rate_err",
    "n_correct",
    "fooling_rate_correct",
    "random_fooling_rate",
    "random_fooling_rate_correct",
    "cut",
    "efficiency_nominal",
    "efficiency_perturbed",
    "mistag_nominal",
    "mistag_perturbed",
    "envelope_violations",
    "max_displacement_sigma",
    "moved_fraction",
)


def write_files(folder: Path, sizes: list[int], seed: int = 1) -> Path:
    """The example's jets resampled into ROOT files of ``sizes`` events; the glob of them."""
    import uproot

    folder.mkdir(parents=True, exist_ok=True)
    with uproot.open(DATA) as f:
        base = f["Events"].arrays(library="np")
    rng = np.random.default_rng(seed)
    m = len(base["label"])
    for i, n in enumerate(sizes):
        idx = rng.integers(0, m, n)
        with uproot.recreate(folder / f"jets_{i:02d}.root") as out:
            out["Events"] = {k: v[idx] for k, v in base.items()}
    return folder / "jets_*.root"


def uncertainties(gates: dict[str, dict[str, object]]):  # type: ignore[no-untyped-def]
    unc = load_uncertainties(EXAMPLES / "unc.yaml")
    chosen = []
    for gate in unc.gates:
        if gate.name in gates:
            chosen.append(replace(gate, params={**gate.params, **gates[gate.name]}))
    return replace(unc, gates=tuple(chosen))


def one_process(unc, pattern: Path):  # type: ignore[no-untyped-def]
    """The Auditor's results on every event of ``pattern``, loaded whole."""
    import torch

    from pytest_hepguard.audit import Auditor
    from pytest_hepguard.chunks import load_sample
    from pytest_hepguard.models import load_model

    events = load_sample(pattern, unc.feature_names, label="label", tree="Events")
    model = load_model(MODEL, torch.device("cpu"))
    auditor = Auditor(model, events, unc, seed=0)
    return {g.name: auditor.run_gate(g) for g in unc.gates}


def assert_same_numbers(single, chunked) -> None:  # type: ignore[no-untyped-def]
    for name, want in single.items():
        got = chunked[name]
        for key in EXACT:
            a, b = getattr(got, key), getattr(want, key)
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (name, key)
        bound = got.details["binning"]["auc_error_bound"]
        for key in ("auc_nominal", "auc_perturbed"):
            diff = abs(getattr(got, key) - getattr(want, key))
            assert diff <= bound and diff < 1e-4, (name, key, diff, bound)
        assert (
            abs(got.output_ks - want.output_ks) <= got.details["binning"]["output_ks_error_bound"]
        )
        assert got.mean_shift == pytest.approx(want.mean_shift, rel=1e-9, abs=1e-15)
        assert got.output_wasserstein == pytest.approx(want.output_wasserstein, abs=1e-4)
        for f, v in want.mean_abs_displacement_sigma.items():
            assert got.mean_abs_displacement_sigma[f] == pytest.approx(v, rel=1e-9)


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("chunked"), [70_000, 1_000, 90_000])


def test_chunked_in_one_process_equals_the_auditor(small_sample: Path) -> None:
    """Three files cut into three chunks of 65536 events (one chunk spans all three)."""
    from pytest_hepguard.distributed import ChunkedAudit, Executor

    unc = uncertainties(
        {
            "random": {},
            "fgsm": {},
            "pgd": {"steps": 3},
            "systematic": {"draws": 4},
            "hidden": {"steps": 3},
        }
    )
    audit = ChunkedAudit(
        model=str(MODEL),
        device="cpu",
        uncertainties=unc,
        data=small_sample,
        executor=Executor(),
        chunk_events=65536,
        gates=unc.gates,
    )
    assert [c.n for c in audit.chunks] == [65536, 65536, 29928]
    assert len(audit.chunks[1].pieces) == 3  # the end of one file, a whole one, the next
    chunked = {g.name: audit.run_gate(g) for g in unc.gates}
    single = one_process(unc, small_sample)
    assert_same_numbers({k: v for k, v in single.items() if k != "hidden"}, chunked)
    sys_single, sys_chunked = single["systematic"].details, chunked["systematic"].details
    assert sys_chunked["correlated"] == sys_single["correlated"]
    assert sys_chunked["worst_variation"] == sys_single["worst_variation"]
    # hidden: constraints per chunk, so its own numbers; certified on the merged sample
    hidden = chunked["hidden"]
    cert = hidden.details["certificate"]
    assert cert["passed"] and not hidden.failures
    assert hidden.details["kept"] > 0
    assert hidden.random_fooling_rate == single["hidden"].random_fooling_rate
    assert (
        abs(hidden.fooling_rate - single["hidden"].fooling_rate)
        < 0.1 * single["hidden"].fooling_rate
    )
    limits = unc.constraints
    for feature in cert["features"]:
        assert feature["ks_pvalue"] >= limits.ks_pvalue_min
        assert feature["jsd"] <= limits.jsd_max
    assert cert["max_abs_delta_rho"] <= limits.corr_max


# ---------------------------------------------------------------------------------------------
# A LocalCluster of two processes on 10^6 events


def test_local_cluster_of_two_matches_one_process_and_survives_a_killed_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    from pytest_hepguard.distributed import ChunkedAudit, connect

    pattern = write_files(
        tmp_path_factory.mktemp("million"), [300_000, 250_000, 200_000, 250_000], seed=7
    )
    unc = uncertainties({"random": {}, "fgsm": {}, "pgd": {"steps": 2}, "systematic": {"draws": 3}})
    executor = connect("local:2", timeout=60)
    client = executor.client
    killed: list[int] = []

    def kill_a_busy_worker(name: str, done: int, total: int, rate: float) -> None:
        if name != "checks" or done != 1 or killed:
            return
        pids = client.run(os.getpid)
        busy = [w for w, keys in client.processing().items() if keys] or list(pids)
        killed.append(pids[busy[0]])
        os.kill(pids[busy[0]], signal.SIGKILL)

    try:
        audit = ChunkedAudit(
            model=str(MODEL),
            device="cpu",
            uncertainties=unc,
            data=pattern,
            executor=executor,
            chunk_events=131072,
            gates=unc.gates,
            progress=kill_a_busy_worker,
        )
        assert audit.n_events == 1_000_000 and len(audit.chunks) == 8
        chunked = {g.name: audit.run_gate(g) for g in unc.gates}
        assert killed, "no worker was killed"
        deadline = time.monotonic() + 60
        while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert killed[0] not in client.run(os.getpid).values()  # a new process took its place
    finally:
        executor.close()
    single = one_process(unc, pattern)
    assert_same_numbers(single, chunked)
    assert chunked["systematic"].details["correlated"] == single["systematic"].details["correlated"]


# ---------------------------------------------------------------------------------------------
# Bad input through the plugin


def run_plugin(folder: Path, *args: str, timeout: int = 300) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *QUIET,
            "-p",
            "no:xdist",
            "--hepguard-model",
            str(MODEL),
            "--hepguard-uncertainties",
            str(folder / "unc.yaml"),
            str(folder),
            *args,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def write_unc(folder: Path, data: str, gates: dict[str, dict[str, object]]) -> None:
    spec = yaml.safe_load((EXAMPLES / "unc.yaml").read_text())
    spec["data"]["path"] = data
    spec["gates"] = gates
    spec.pop("pyhf", None)
    (folder / "unc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_unreachable_scheduler_is_a_clear_error_within_the_timeout(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    write_unc(tmp_path, str(DATA), {"random": {"epsilon": 1.0}})
    code, out, seconds = run_plugin(
        tmp_path, "--hepguard-dask", "tcp://127.0.0.1:9", "--hepguard-dask-timeout", "3"
    )
    assert code == USAGE_ERROR, out
    assert "--hepguard-dask tcp://127.0.0.1:9: no Dask scheduler answered within 3 s" in out
    assert seconds < 60


def test_options_that_need_every_event_are_refused_with_dask(tmp_path: Path) -> None:
    write_unc(tmp_path, str(DATA), {"random": {"epsilon": 1.0}})
    code, out, _ = run_plugin(
        tmp_path, "--hepguard-dask", "local:0", "--hepguard-pyhf", str(tmp_path / "ws.json")
    )
    assert code == USAGE_ERROR, out
    assert "--hepguard-pyhf needs every event's perturbed outputs in one process" in out
    assert not (tmp_path / "ws.json").exists()


def test_files_that_differ_in_columns_stop_the_run(tmp_path: Path) -> None:
    import uproot

    pattern = write_files(tmp_path / "data", [100, 100])
    with uproot.open(tmp_path / "data" / "jets_01.root") as f:
        cols = f["Events"].arrays(library="np")
    del cols["sv_mass"]
    with uproot.recreate(tmp_path / "data" / "jets_01.root") as out:
        out["Events"] = cols
    write_unc(tmp_path, str(pattern), {"random": {"epsilon": 1.0}})
    before = (tmp_path / "data" / "jets_00.root").read_bytes()
    for extra in ((), ("--hepguard-dask", "local:1")):
        code, out, _ = run_plugin(tmp_path, *extra)
        assert code == USAGE_ERROR, out
        assert "jets_01.root lacks 'sv_mass' (present in jets_00.root)" in out
    assert (tmp_path / "data" / "jets_00.root").read_bytes() == before


def test_a_chunk_that_fails_twice_is_named_and_fails_the_run(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    import uproot

    pattern = write_files(tmp_path / "data", [65536, 1000])
    with uproot.open(tmp_path / "data" / "jets_01.root") as f:
        cols = f["Events"].arrays(library="np")
    cols["jet_eta"][17] = np.nan  # breaks the second chunk on every worker, every time
    with uproot.recreate(tmp_path / "data" / "jets_01.root") as out:
        out["Events"] = cols
    write_unc(tmp_path, str(pattern), {"random": {"epsilon": 1.0}})
    code, out, _ = run_plugin(
        tmp_path, "--hepguard-dask", "local:1", "--hepguard-chunk-events", "65536"
    )
    assert code != 0, out
    assert "chunk 1 (" in out and "jets_01.root entries 0-999) failed twice" in out, out
    assert "NaN" in out and "1000 events" in out


@pytest.fixture
def remote_scheduler(tmp_path: Path) -> Iterator[str]:
    """A Dask scheduler and one worker started as separate processes, the way a cluster's are
    (``dask scheduler``, ``dask worker``); the scheduler's address."""
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dask",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--scheduler-file",
            str(info),
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "worker",
                "--scheduler-file",
                str(info),
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield json.loads(info.read_text())["address"]
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_plugin_with_dask_reports_the_one_process_numbers(
    tmp_path: Path, remote_scheduler: str
) -> None:

    gates = {"fgsm": {"epsilon": 1.0, "max_fooling_rate": 0.05}}
    write_unc(tmp_path, str(DATA), gates)
    numbers = {}
    runs = (
        ("one", ()),
        ("dask", ("--hepguard-dask", "local:1")),
        ("here", ("--hepguard-dask", "local:0")),
        ("remote", ("--hepguard-dask", remote_scheduler)),
    )
    for tag, extra in runs:
        code, out, _ = run_plugin(tmp_path, "--hepguard-json", f"{tag}.json", *extra)
        assert code == 0, out
        numbers[tag] = json.loads((tmp_path / f"{tag}.json").read_text())
        if tag in ("dask", "remote"):
            assert "hepguard: auditing on Dask scheduler tcp://" in out
            assert "dashboard http" in out or tag == "remote"  # started without a dashboard
            assert "hepguard checks: 1/1 chunks" in out
    one, dask, here, remote = (
        next(c for c in numbers[t]["checks"] if c["name"] == "fgsm")
        for t in ("one", "dask", "here", "remote")
    )
    for key in ("fooling_rate", "fooling_rate_correct", "efficiency_perturbed", "cut"):
        assert dask[key] == one[key] == here[key] == remote[key]
    assert math.isclose(dask["auc_perturbed"], one["auc_perturbed"], abs_tol=1e-4)
    assert here["device"] == dask["device"] == "cpu"


def test_multi_input_onnx_model_from_parquet_row_groups(tmp_path: Path) -> None:
    """The DeepJet-like ONNX example (jet, tracks and vertices as three inputs, per-constituent
    lists) from two Parquet files of several row groups: two chunks, the one-process numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pytest_hepguard.audit import Auditor
    from pytest_hepguard.chunks import load_sample
    from pytest_hepguard.distributed import ChunkedAudit, Executor
    from pytest_hepguard.models import load_model

    example = EXAMPLES / "deepjet_like"
    rng = np.random.default_rng(0)
    with np.load(example / "jets.npz") as z:
        base = {k: z[k] for k in z.files}
    for i, n in enumerate((50_000, 20_000)):
        idx = rng.integers(0, len(base["label"]), n)
        table = {k: pa.array(list(v[idx])) if v.ndim == 2 else v[idx] for k, v in base.items()}
        pq.write_table(pa.table(table), tmp_path / f"jets_{i}.parquet", row_group_size=15_000)
    unc = load_uncertainties(example / "unc.yaml")
    unc = replace(unc, gates=tuple(g for g in unc.gates if g.name in ("random", "fgsm")))
    audit = ChunkedAudit(
        model=str(example / "tagger.onnx"),
        device="cpu",
        uncertainties=unc,
        data=tmp_path / "*.parquet",
        executor=Executor(),
        chunk_events=65536,
        gates=unc.gates,
    )
    assert [[(p.start, p.stop) for p in c.pieces] for c in audit.chunks] == [
        [(0, 50_000), (0, 15_536)],
        [(15_536, 20_000)],
    ]
    chunked = {g.name: audit.run_gate(g) for g in unc.gates}
    per_event, constituents = unc.data_columns()
    events = load_sample(
        tmp_path / "*.parquet", per_event, constituents=constituents, label="label"
    )
    auditor = Auditor(load_model(example / "tagger.onnx", torch.device("cpu")), events, unc)
    assert_same_numbers({g.name: auditor.run_gate(g) for g in unc.gates}, chunked)
