"""Throughput and memory of chunked audits: the example's tagger on N generated events in several
ROOT files, audited by one process (the Auditor, the whole sample in memory), by the chunked
engine in this process, and on LocalClusters of 1 and 2 worker processes.

    python benchmarks/bench_dask.py --events 1000000 --files 4 --workers 1 2

Prints a Markdown table (events/s of the checks pass, wall seconds, peak RSS of the main process
and of each worker) and writes it as JSON with ``--json``; docs/scale.md quotes it. The gates are
the example's that run chunked (random, fgsm, pgd, systematic, hidden).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, peak_rss_mib

from pytest_hepguard.distributed import CHUNKED_ATTACKS, ChunkedAudit, Executor, connect
from pytest_hepguard.uncertainties import load_uncertainties

EXAMPLE = ROOT / "examples"


def write_files(folder: Path, n: int, files: int, seed: int = 0) -> Path:
    """The example's jets resampled to ``n`` events in ``files`` ROOT files; their glob."""
    import uproot

    with uproot.open(EXAMPLE / "jets.root") as f:
        base = f["Events"].arrays(library="np")
    rng = np.random.default_rng(seed)
    m = len(base["label"])
    for i, size in enumerate(np.diff(np.linspace(0, n, files + 1).astype(int))):
        idx = rng.integers(0, m, size)
        with uproot.recreate(folder / f"jets_{i:03d}.root") as out:
            out["Events"] = {k: v[idx] for k, v in base.items()}
    return folder / "jets_*.root"


def worker_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(where: str, pattern: Path, unc, chunk_events: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """One audit of every gate; where = "auditor", "in-process" or a --hepguard-dask value."""
    t0 = time.perf_counter()
    rates: dict[str, float] = {}
    if where == "auditor":
        from pytest_hepguard.audit import Auditor
        from pytest_hepguard.chunks import load_sample
        from pytest_hepguard.models import load_model

        events = load_sample(pattern, unc.feature_names, label="label", tree="Events")
        auditor = Auditor(load_model(EXAMPLE / "tagger.pt", torch.device("cpu")), events, unc)
        t1 = time.perf_counter()
        results = {g.name: auditor.run_gate(g) for g in unc.gates}
        rates["checks"] = len(events) / (time.perf_counter() - t1)
        workers: list[float] = []
    else:
        executor = Executor() if where == "in-process" else connect(where, timeout=60)

        def progress(name: str, done: int, total: int, rate: float) -> None:
            if done == total:
                rates[name] = rate

        audit = ChunkedAudit(
            model=str(EXAMPLE / "tagger.pt"),
            device="cpu",
            uncertainties=unc,
            data=pattern,
            executor=executor,
            chunk_events=chunk_events,
            gates=unc.gates,
            progress=progress,
        )
        results = {g.name: audit.run_gate(g) for g in unc.gates}
        client = getattr(executor, "client", None)
        workers = list(client.run(worker_peak_mib).values()) if client is not None else []
        executor.close()
    return {
        "where": where,
        "seconds": time.perf_counter() - t0,
        "events_per_second": rates,
        "main_peak_rss_mib": peak_rss_mib(),
        "worker_peak_rss_mib": workers,
        "fooling_rates": {k: r.fooling_rate for k, r in results.items()},
    }


def table(rows: list[dict[str, object]], n: int) -> str:
    lines = [
        f"| run ({n:,} events) | checks pass, events/s | wall s | peak RSS main MiB | "
        "peak RSS per worker MiB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        workers = ", ".join(f"{m:,.0f}" for m in r["worker_peak_rss_mib"]) or "-"  # type: ignore[attr-defined]
        lines.append(
            f"| {r['where']} | {r['events_per_second']['checks']:,.0f} | "  # type: ignore[index]
            f"{r['seconds']:.1f} | {r['main_peak_rss_mib']:,.0f} | {workers} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--chunk-events", type=int, default=131072)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--runs", nargs="*", default=["auditor", "in-process"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    unc = load_uncertainties(EXAMPLE / "unc.yaml")
    unc = replace(unc, gates=tuple(g for g in unc.gates if g.attack in CHUNKED_ATTACKS))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pattern = write_files(Path(tmp), args.events, args.files)
        for where in [*args.runs, *(f"local:{w}" for w in args.workers)]:
            rows.append(run(where, pattern, unc, args.chunk_events))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows, args.events))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine_info(torch.device("cpu")), "runs": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
