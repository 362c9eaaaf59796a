"""Time the Auditor's checks against the bare model on a large sample (a plain script, not a test).

Usage::

    python benchmarks/bench_audit.py                         # 1e6 events, GPU if any
    python benchmarks/bench_audit.py --events 1e5 --device cpu --repeat 3 --out bench.json
    python benchmarks/bench_audit.py --events 1e6 --device cuda --profile

The sample is the example's ``jets.root`` resampled (tiled, then shuffled with a seeded numpy
Generator) to ``--events`` rows, built as an :class:`Events` directly. The script measures

- the bare model on the same device and batch size, inputs already on the device: one forward
  pass over all events (no_grad) and one forward + backward pass for the input gradient of the
  per-event cross-entropy (what one attack step costs);
- the :class:`Auditor` construction (nominal pass, feature std, working point);
- each check (random, fgsm, pgd 10 and 20 steps, hidden 20 steps, systematic, all at epsilon
  1; hidden adds the marginal repair and the scipy certificate on the CPU):
  ``CheckResult.seconds`` (the perturbation loop on the device) and the wall time of
  ``auditor.run`` (which adds the metrics, computed with numpy on the CPU);
- the peak RSS of the process (``resource.getrusage``) and, on a GPU, the peak allocated memory
  of each phase (``torch.cuda.max_memory_allocated``).

Each ratio compares a check's loop time with what its K gradient evaluations cost on the bare
model: every check ends with one forward of the perturbed events (their outputs), so random is
compared to one forward, fgsm to one forward + backward and one forward, pgd with S steps to
S x (forward + backward) + one forward. DESIGN.md wants these ratios close to 1. With
``--repeat R`` every phase runs R times on a fresh Auditor and the fastest time is kept.
``--profile [CHECK ...]`` adds a cProfile breakdown of those checks (default pgd20): inclusive
time of the package's functions, and the builtins (torch ops, numpy sorts) with most self time.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Timer, machine_info, peak_rss_mib

from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import Events, load_events
from pytest_hepguard.models import Model, load_model, resolve_device
from pytest_hepguard.uncertainties import UncertaintyModel, load_uncertainties

#: (label, attack, params, forwards, backwards) of the timed checks, in the order they run.
#: ``random`` runs first, so the random baseline that fgsm and pgd compare to is measured (and
#: cached by the Auditor) before them and their run() time holds only their own attack.
CHECKS: tuple[tuple[str, str, dict[str, object], int, int], ...] = (
    ("random", "random", {"epsilon": 1.0}, 1, 0),
    ("fgsm", "fgsm", {"epsilon": 1.0}, 2, 1),
    ("pgd10", "pgd", {"epsilon": 1.0, "steps": 10}, 11, 10),
    ("pgd20", "pgd", {"epsilon": 1.0, "steps": 20}, 21, 20),
    # margin ascent: 21 forward+backward, the shrink 9 forwards, the final scoring 1
    ("hidden20", "hidden", {"epsilon": 1.0, "steps": 20}, 31, 21),
    # 3 groups x (up, down) + 20 correlated draws, one forward each
    ("systematic", "systematic", {"epsilon": 1.0}, 26, 0),
)


def resample(base: Events, n: int, seed: int) -> Events:
    """``n`` events drawn from ``base`` by tiling its rows and shuffling (seeded)."""
    rng = np.random.default_rng(seed)
    idx = np.tile(np.arange(len(base)), math.ceil(n / len(base)))
    rng.shuffle(idx)
    idx = idx[:n]
    return Events(
        features=np.ascontiguousarray(base.features[idx], dtype=np.float32),
        feature_names=base.feature_names,
        labels=None if base.labels is None else base.labels[idx],
        weights=None if base.weights is None else base.weights[idx],
        source=Path(f"{base.source} (resampled to {n} events, seed {seed})"),
    )


def build_events(unc: UncertaintyModel, n: int, seed: int) -> Events:
    """The uncertainty file's data sample, resampled to ``n`` events."""
    data = unc.data
    if data.path is None:
        raise SystemExit(f"{unc.source}: no data.path; the benchmark resamples that file")
    base = load_events(
        data.path, unc.feature_names, label=data.label, weight=data.weight, tree=data.tree
    )
    return resample(base, n, seed)


def bare_passes(
    module: Callable[[torch.Tensor], torch.Tensor],
    x_all: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> dict[str, Callable[[], None]]:
    """One forward pass (no_grad) and one forward + backward pass over all events, as callables.

    The backward pass is the input gradient of the per-event cross-entropy, as the attacks take
    it; the inputs are already on the device, so no host-to-device copy is timed.
    """

    def forward() -> None:
        with torch.no_grad():
            for s in range(0, len(x_all), batch_size):
                module(x_all[s : s + batch_size])

    def forward_backward() -> None:
        for s in range(0, len(x_all), batch_size):
            x = x_all[s : s + batch_size].detach().requires_grad_(True)
            p = module(x)
            loss = F.nll_loss(torch.log(p.clamp_min(1e-30)), labels[s : s + batch_size])
            torch.autograd.grad(loss, x)

    return {"forward": forward, "forward_backward": forward_backward}


def reference_seconds(bare: dict[str, dict[str, float]], forwards: int, backwards: int) -> float:
    """What ``forwards`` forward and ``backwards`` backward passes cost on the bare model."""
    f, fb = bare["forward"]["seconds"], bare["forward_backward"]["seconds"]
    return backwards * fb + (forwards - backwards) * f


def one_round(
    model: Model,
    events: Events,
    unc: UncertaintyModel,
    bare: dict[str, Callable[[], None]],
    batch_size: int,
    timer: Timer,
) -> dict[str, dict[str, float]]:
    """Bare passes, then a fresh Auditor and every check: one row of numbers per phase.

    The bare model is timed in every round, next to the checks, so that a round slowed down by
    other processes on the machine is slowed down as a whole.
    """
    rows: dict[str, dict[str, float]] = {}

    def timed(label: str, fn: Callable[[], object]) -> object:
        timer.reset_peak()
        cpu0 = time.process_time()
        seconds, out = timer.time(fn)
        cpu = time.process_time() - cpu0  # all threads; far below seconds x threads: contended
        rows[label] = {"seconds": seconds, "cpu_s": cpu, "rss_peak_mib": peak_rss_mib()}
        gpu = timer.peak_gpu_mib()
        if gpu is not None:
            rows[label]["gpu_peak_mib"] = gpu
        return out

    for name, fn in bare.items():
        timed(name, fn)
    auditor = timed("construct", partial(Auditor, model, events, unc, batch_size=batch_size))
    for label, attack, params, n_fwd, n_bwd in CHECKS:
        result = timed(label, partial(auditor.run, attack, **params))  # type: ignore[attr-defined]
        wall = rows[label]["seconds"]
        rows[label].update(
            seconds=result.seconds,
            run_wall_s=wall,
            metrics_s=wall - result.seconds,
            forwards=n_fwd,
            backwards=n_bwd,
            fooling_rate=result.fooling_rate,
            auc_drop=result.auc_drop,
            load_average=os.getloadavg()[0],
        )
    return rows


def fastest(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per phase, the row of the round in which it ran fastest."""
    return {k: min((r[k] for r in rounds), key=lambda row: row["seconds"]) for k in rounds[0]}


#: Python functions whose inclusive time the profile shows: (file, function) -> row label.
PROFILED = {
    ("audit.py", "run"): "Auditor.run (all)",
    ("audit.py", "_perturb_all"): "  _perturb_all (device loop)",
    ("*", "perturb"): "    <attack>.perturb",
    ("base.py", "input_gradient"): "      input_gradient",
    ("base.py", "loss"): "        Model.loss (forward + log + nll)",
    ("__init__.py", "grad"): "        torch.autograd.grad (backward)",
    ("envelope.py", "box"): "      Envelope.box",
    ("envelope.py", "project"): "      Envelope.project",
    ("envelope.py", "displace"): "      Envelope.displace",
    ("base.py", "signed_step"): "      signed_step",
    ("pgd.py", "_keep_best"): "      _keep_best",
    ("base.py", "zero_gradient"): "      zero_gradient",
    ("envelope.py", "in_sigmas"): "    Envelope.in_sigmas (statistics)",
    ("envelope.py", "contains"): "    Envelope.contains (statistics)",
    ("envelope.py", "sigmas"): "  Envelope.sigmas (all callers)",
    ("envelope.py", "movable"): "  Envelope.movable (all callers)",
    ("base.py", "raw"): "  Model.raw (every forward)",
    ("metrics.py", "output_shift"): "  output_shift (AUC/KS/Wasserstein sorts)",
    ("metrics.py", "fooling_rate"): "  fooling_rate",
}


def profile_check(
    model: Model, events: Events, unc: UncertaintyModel, batch_size: int, label: str, top: int = 10
) -> str:
    """cProfile of one check on a fresh Auditor: inclusive seconds of the parts that matter,
    then the builtins (torch ops, numpy sorts) with the most self time."""
    _, attack, params, _, _ = next(c for c in CHECKS if c[0] == label)
    auditor = Auditor(model, events, unc, batch_size=batch_size)
    if attack != "random":  # measure the random baseline first: the profile holds one attack
        auditor.run("random", epsilon=1.0)
    prof = cProfile.Profile()
    prof.enable()
    auditor.run(attack, **params)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    found: dict[str, tuple[int, float]] = {}
    builtins: list[tuple[float, int, str]] = []
    for (path, _line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.items():
        if path == "~":
            builtins.append((tottime, ncalls, func))
            continue
        if "hepguard" not in path and "autograd" not in path:
            continue
        name = Path(path).name
        row = PROFILED.get((name, func))
        if row is None and "attacks" in path:
            row = PROFILED.get(("*", func))
        if row is not None:
            n0, t0 = found.get(row, (0, 0.0))
            found[row] = (n0 + ncalls, t0 + cumtime)
    lines = [f"cProfile of {label} ({attack} {params}), {len(events):,d} events:"]
    for row in PROFILED.values():
        if row in found:
            n, t = found[row]
            lines.append(f"  {row:<44s} {t:8.3f} s  {n:6d} calls")
    lines.append(f"  builtins with the most self time (top {top}):")
    for tottime, ncalls, func in sorted(builtins, reverse=True)[:top]:
        lines.append(f"    {func[:60]:<60s} {tottime:8.3f} s  {ncalls:6d} calls")
    return "\n".join(lines)


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(best: dict[str, dict[str, float]], n: int) -> str:
    """The result table (markdown)."""
    rows = [
        "| check | fwd/bwd | loop s | run() s | metrics s | bare K s | ratio | events/s "
        "| peak RSS MiB | peak GPU MiB |",
        "|" + "---|" * 10,
    ]
    f = best["forward"]["seconds"]
    for label, what, k in (
        ("forward", "bare forward", "1/0"),
        ("forward_backward", "bare forward+backward", "1/1"),
        ("construct", "Auditor() (nominal)", "1/0"),
    ):
        r = best[label]
        ref = f if label == "construct" else r["seconds"]
        rows.append(
            f"| {what} | {k} | {r['seconds']:.3f} | | | {ref:.3f} | {r['seconds'] / ref:.2f} | "
            f"{n / r['seconds']:,.0f} | {r['rss_peak_mib']:.0f} | "
            f"{fmt(r.get('gpu_peak_mib'), '.0f')} |"
        )
    for label, *_ in CHECKS:
        r = best[label]
        ref = r["seconds"] / r["ratio"]
        rows.append(
            f"| {label} | {r['forwards']}/{r['backwards']} | {r['seconds']:.3f} | "
            f"{r['run_wall_s']:.3f} | {r['metrics_s']:.3f} | {ref:.3f} | {r['ratio']:.2f} | "
            f"{n / r['seconds']:,.0f} | {r['rss_peak_mib']:.0f} | "
            f"{fmt(r.get('gpu_peak_mib'), '.0f')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=lambda s: int(float(s)), default=1_000_000)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--batch-size", type=int, default=65536, help="the Auditor's default")
    ap.add_argument("--repeat", type=int, default=1, help="keep the fastest of R runs")
    ap.add_argument("--model", default=str(ROOT / "examples" / "tagger.pt"))
    ap.add_argument("--uncertainties", default=str(ROOT / "examples" / "unc.yaml"))
    ap.add_argument("--seed", type=int, default=0, help="resampling seed")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--profile",
        nargs="*",
        choices=[c[0] for c in CHECKS],
        default=None,
        help="also cProfile these checks (default when given without names: pgd20)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    timer = Timer(device)
    unc = load_uncertainties(args.uncertainties)
    t0 = time.perf_counter()
    events = build_events(unc, args.events, args.seed)
    t_events = time.perf_counter() - t0
    model = load_model(args.model, device)
    n = len(events)
    machine = machine_info(device)
    print(
        f"{n:,d} events ({t_events:.2f} s to build), batch {args.batch_size}, device {device}"
        f"{' (' + str(machine['gpu']) + ')' if machine['gpu'] else ''}, torch {torch.__version__}, "
        f"{machine['torch_threads']} threads, CPU {machine['cpu']}, repeat {args.repeat}, "
        f"load average {machine['load_average_before']:.2f}, commit {machine['commit']}"
    )

    x_all = torch.from_numpy(events.features).to(device)
    labels = torch.from_numpy(events.labels if events.labels is not None else np.zeros(n, int))
    bare = bare_passes(model.forward, x_all, labels.to(device, torch.int64), args.batch_size)
    for fn in bare.values():  # warm-up: TorchScript profiling runs, allocator, thread pool
        fn()
    rounds = [
        one_round(model, events, unc, bare, args.batch_size, timer) for _ in range(args.repeat)
    ]
    del x_all, bare
    best = fastest(rounds)
    for label, _, _, n_fwd, n_bwd in CHECKS:
        best[label]["ratio"] = best[label]["seconds"] / reference_seconds(best, n_fwd, n_bwd)
    print(table(best, n))
    print(
        "loop s: CheckResult.seconds (the device loop); run() s: wall time of auditor.run; "
        "metrics s: the difference (metrics on the CPU); bare K s: forwards/backwards of the "
        "bare model; ratio: loop s / bare K s; fastest of the rounds for each row"
    )
    machine["load_average_after"] = os.getloadavg()
    print(
        f"load average {machine['load_average_after'][0]:.2f} at the end; other processes on "
        "the same cores (load above 0.5 before the run) slow multi-threaded torch down a lot"
    )
    profiles = {}
    if args.profile is not None:
        for label in args.profile or ["pgd20"]:
            profiles[label] = profile_check(model, events, unc, args.batch_size, label)
            print(profiles[label])
    if args.out is not None:
        result = {
            "events": n,
            "batch_size": args.batch_size,
            "repeat": args.repeat,
            "seed": args.seed,
            "machine": machine,
            "fastest": best,
            "rounds": rounds,
            "profiles": profiles,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
