"""The main job at 10^5 ... 10^7 events: wall time and peak memory of the pytest process.

Usage::

    python benchmarks/scaling_run.py 1e5 1e6 1e7 --out scaling.json
    python benchmarks/scaling_run.py 1e6 --gates random fgsm pgd systematic hidden

For each size N the example's jets (``examples/jets.root``) are resampled (tiled, shuffled with a
seeded generator) to N events and written to a ROOT file (``Events`` tree, 11 float32 features,
an int32 label; written in chunks of 10^6 with uproot), the example's uncertainty file is copied
with ``data.path`` pointing at it and the chosen gates (default: every gate of the example but
the pyhf impact, whose analysis workspace has the example's yields), and

    python -m pytest RUN/ --hepguard-model examples/tagger.pt --hepguard-uncertainties RUN/unc.yaml

runs in a fresh process. Its wall time, its peak RSS (``os.wait4``'s ``ru_maxrss`` of that child
alone) and each check's loop seconds (from ``--hepguard-json``) are reported. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import uproot
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples"
CHUNK = 1_000_000
#: the example's gates the scaling run keeps by default (pyhf_impact fits the example's own
#: analysis workspace, whose yields do not scale with N)
DEFAULT_GATES = ("random", "fgsm", "pgd", "systematic", "hidden", "worst")


def write_sample(n: int, path: Path, seed: int = 0) -> float:
    """The example's jets resampled to ``n`` events into the ROOT file ``path``; seconds."""
    t0 = time.perf_counter()
    with uproot.open(EXAMPLE / "jets.root") as f:
        base = f["Events"].arrays(library="np")
    m = len(next(iter(base.values())))
    rng = np.random.default_rng(seed)
    with uproot.recreate(path) as out:
        for start in range(0, n, CHUNK):
            size = min(CHUNK, n - start)
            idx = rng.integers(0, m, size)
            chunk = {k: v[idx] for k, v in base.items()}
            if start == 0:
                out["Events"] = chunk
            else:
                out["Events"].extend(chunk)
    return time.perf_counter() - t0


def write_uncertainties(data: Path, path: Path, gates: tuple[str, ...]) -> None:
    """The example's uncertainty file reading ``data``, with only ``gates`` and no pyhf."""
    spec = yaml.safe_load((EXAMPLE / "unc.yaml").read_text())
    spec["data"]["path"] = str(data)
    spec["gates"] = {k: v for k, v in spec["gates"].items() if k in gates}
    spec.pop("pyhf", None)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def measure(n: int, workdir: Path, gates: tuple[str, ...] = DEFAULT_GATES) -> dict[str, object]:
    """Generate ``n`` events, run the main job on them; wall seconds, peak RSS, check times."""
    data = workdir / f"jets_{n}.root"
    write_s = write_sample(n, data)
    run = workdir / f"run_{n}"  # pytest collects this folder: the gates, nothing else
    run.mkdir(exist_ok=True)
    unc = run / "unc.yaml"
    write_uncertainties(data, unc, gates)
    report = workdir / f"report_{n}.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(run),
        "--hepguard-model",
        str(EXAMPLE / "tagger.pt"),
        "--hepguard-uncertainties",
        str(unc),
        "--hepguard-json",
        str(report),
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    t0 = time.perf_counter()
    log = (workdir / f"log_{n}.txt").open("w")
    proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    log.close()
    code = os.waitstatus_to_exitcode(status)
    checks = {}
    if report.exists():
        for check in json.loads(report.read_text()).get("checks", []):
            checks[check["name"]] = check["seconds"]
    data.unlink()
    return {
        "events": n,
        "gates": list(gates),
        "exit_code": code,
        "write_s": write_s,
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "check_seconds": checks,
        "log_tail": (workdir / f"log_{n}.txt").read_text()[-2000:],
    }


def table(rows: list[dict[str, object]]) -> str:
    """Markdown: one row per size, wall time per 10^6 events and peak RSS."""
    out = [
        "| events | exit | wall s | wall s per 10^6 events | peak RSS MiB | "
        "RSS above 10^5 run, bytes per event | check loops s ("
        + ", ".join(
            rows[0]["gates"]  # type: ignore[arg-type]
        )
        + ") |",
        "|" + "---|" * 7,
    ]
    first = rows[0]
    for r in rows:
        extra = (r["peak_rss_mib"] - first["peak_rss_mib"]) * 2**20  # type: ignore[operator]
        grown = r["events"] - first["events"]  # type: ignore[operator]
        per = f"{extra / grown:.0f}" if grown else "-"
        loops = ", ".join(f"{s:.1f}" for s in r["check_seconds"].values())  # type: ignore[union-attr]
        out.append(
            f"| {r['events']:,} | {r['exit_code']} | {r['wall_s']:.1f} | "
            f"{r['wall_s'] / r['events'] * 1e6:.1f} | {r['peak_rss_mib']:.0f} | {per} | "
            f"{loops} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="+", type=lambda s: int(float(s)))
    ap.add_argument("--gates", nargs="+", default=list(DEFAULT_GATES))
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import tempfile

    import torch
    from common import machine_info

    machine = machine_info(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        rows = []
        for n in args.sizes:
            rows.append(measure(n, work, tuple(args.gates)))
            print(table(rows[-1:]), flush=True)
            if rows[-1]["exit_code"] not in (0, 1):
                print(rows[-1]["log_tail"])
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
