"""docs/performance.md in one run: PGD against the floor and its peers, the ONNX bridge, the
hidden-systematics attack against PGD, scaling to 10^7 events, and the plugin's overhead.

Usage::

    pip install --no-deps torchattacks==3.5.1 && pip install adversarial-robustness-toolbox
    python benchmarks/bench_performance.py --out perf.json            # all five, this machine
    python benchmarks/bench_performance.py --sections pgd bridge --device cuda
    python benchmarks/bench_performance.py --write-docs docs/performance.md

Sections (each prints a Markdown table; ``--write-docs`` puts the tables between the
``<!-- perf:SECTION:DEVICE -->`` markers of the page, with the machine and date above them):

- ``pgd``: 20-step PGD throughput on the DeepCSV-sized MLP and the two-input DeepJet-like
  network (:mod:`perf_cases`): the floor (20 forward + backward passes of the bare module over
  the same events, inputs on the device), hepguard's attack loop (``PGD.perturb`` batch by
  batch, envelope included), hepguard's whole ``pgd`` check loop (attack, outputs and
  displacement statistics: the floor plus one forward), torchattacks' ``PGD`` and ART's
  ``ProjectedGradientDescentPyTorch``. On a GPU the batch size is hepguard's automatic choice
  (``Auditor(batch_size=None)``, :mod:`pytest_hepguard.batching`) beside a fixed 8192.
- ``bridge``: forward + backward (input gradient of the cross-entropy) through hepguard's ONNX
  autograd bridge divided by the same through the native torch module the ONNX file was
  exported from.
- ``hidden``: the hidden-systematics check's loop time divided by the PGD check's with the same
  steps, and what share of it the candidate search, the marginal repair, the scipy certificate
  and the final scoring take.
- ``scaling``: the main job (``pytest`` with the example tagger) on 10^5, 10^6 and 10^7 events
  generated into a ROOT file: wall time and peak RSS of the pytest process
  (:mod:`scaling_run`).
- ``plugin``: ``pytest --collect-only`` with the plugin installed but unused against the plugin
  blocked (:mod:`plugin_overhead`).

Nothing is asserted: the page says which target each number meets.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf_cases
from common import ROOT, Timer, machine_info

from pytest_hepguard.attacks import check_params, get_attack
from pytest_hepguard.audit import Auditor
from pytest_hepguard.models import load_model, resolve_device, wrap_model
from pytest_hepguard.models.base import Model

SECTIONS = ("pgd", "bridge", "hidden", "scaling", "plugin")
STEPS = 20


# -- pgd -------------------------------------------------------------------------------------


def floor(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
    """STEPS forward + backward passes of the bare module over every event (the floor)."""
    for s in range(0, len(x), batch):
        xb, yb = x[s : s + batch], y[s : s + batch]
        for _ in range(STEPS):
            leaf = xb.detach().requires_grad_(True)
            loss = F.cross_entropy(module(leaf), yb, reduction="sum")
            torch.autograd.grad(loss, leaf)


def forward(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> None:
    """One forward pass over every event, no gradient."""
    with torch.no_grad():
        for s in range(0, len(x), batch):
            module(x[s : s + batch])


def hepguard_attack(auditor: Auditor, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
    """hepguard's PGD (epsilon 1 sigma, STEPS steps) over every event, batch by batch."""
    attack = get_attack("pgd", check_params("pgd", {"epsilon": 1.0, "steps": STEPS}))
    gen = torch.Generator(device=x.device).manual_seed(0)
    for s in range(0, len(x), batch):
        attack.perturb(auditor.model, x[s : s + batch], y[s : s + batch], auditor.envelope, gen)


def torchattacks_pgd(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
    """torchattacks' PGD, STEPS steps, with its input range check switched off (it expects
    images in [0, 1]; its clamp to [0, 1] at every step stays, as part of its cost)."""
    import torchattacks

    atk = torchattacks.PGD(module, eps=0.1, alpha=0.0125, steps=STEPS, random_start=True)
    atk._check_inputs = lambda inputs: inputs  # tabular rows are not images in [0, 1]
    for s in range(0, len(x), batch):
        atk(x[s : s + batch], y[s : s + batch])


def art_pgd(
    module: nn.Module, x: np.ndarray, y: np.ndarray, batch: int, device: torch.device
) -> Callable[[], None]:
    """ART's PyTorch PGD (STEPS steps, one random start) on numpy arrays, as ART takes them."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=(x.shape[1],),
        nb_classes=int(y.max()) + 1,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    atk = ProjectedGradientDescentPyTorch(
        clf,
        norm=np.inf,
        eps=0.1,
        eps_step=0.0125,
        max_iter=STEPS,
        batch_size=batch,
        num_random_init=1,
        verbose=False,
    )
    return lambda: atk.generate(x=x, y=y)


def pgd_section(
    n: int, batches: list[int | None], device: torch.device, repeat: int, workdir: Path
) -> list[dict[str, object]]:
    """One row per (case, batch size): seconds of each method and ratios to the floor."""
    timer = Timer(device)
    dj_case, dj_multi = perf_cases.deepjet_case(n)
    cases = [(perf_cases.deepcsv_case(n, workdir), None), (dj_case, dj_multi)]
    rows = []
    for case, multi in cases:
        module = case.module.to(device)
        hg_model = wrap_model(multi if multi is not None else module, device, case.name)
        x = torch.from_numpy(case.events.features).to(device)
        assert case.events.labels is not None
        y = torch.from_numpy(case.events.labels.astype(np.int64)).to(device)
        for batch in batches:
            # batch None: the Auditor picks it (pytest_hepguard.batching), as the plugin does
            auditor = Auditor(hg_model, case.events, case.uncertainties, batch_size=batch)
            chosen = auditor.batch_size
            t = {
                "floor": timer.best_of(partial(floor, module, x, y, chosen), repeat),
                "forward": timer.best_of(partial(forward, module, x, chosen), repeat),
                "hepguard_attack": timer.best_of(
                    partial(hepguard_attack, auditor, x, y, chosen), repeat
                ),
                "torchattacks": timer.best_of(
                    partial(torchattacks_pgd, module, x, y, chosen), repeat
                ),
            }
            checks = []
            for _ in range(repeat):
                fresh = Auditor(hg_model, case.events, case.uncertainties, batch_size=chosen)
                fresh.run("random", epsilon=1.0)
                checks.append(fresh.run("pgd", epsilon=1.0, steps=STEPS).seconds)
            t["hepguard_check"] = min(checks)
            run_art = art_pgd(
                module, case.events.features, case.events.labels.astype(np.int64), chosen, device
            )
            t["art"] = timer.best_of(run_art, repeat)
            rows.append(
                {
                    "model": case.name,
                    "events": n,
                    "batch": chosen,
                    "batch_auto": batch is None,
                    "seconds": t,
                    "floor_event_steps_per_s": n * STEPS / t["floor"],
                    "hepguard_attack_x_floor": t["hepguard_attack"] / t["floor"],
                    "hepguard_check_x_reference": t["hepguard_check"] / (t["floor"] + t["forward"]),
                    "torchattacks_x_floor": t["torchattacks"] / t["floor"],
                    "art_x_floor": t["art"] / t["floor"],
                }
            )
            print(pgd_table(rows[-1:]), flush=True)
    return rows


def pgd_table(rows: list[dict[str, object]]) -> str:
    out = [
        "| model | batch | floor: M event-steps/s | hepguard PGD attack | hepguard `pgd` check "
        "(vs floor + 1 forward) | torchattacks PGD | ART PGD | target |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        batch = f"{r['batch']:,}" + (" (auto)" if r["batch_auto"] else "")
        out.append(
            f"| {r['model']} | {batch} | {r['floor_event_steps_per_s'] / 1e6:.2f} | "
            f"{r['hepguard_attack_x_floor']:.2f} × floor | "
            f"{r['hepguard_check_x_reference']:.2f} × | {r['torchattacks_x_floor']:.2f} × | "
            f"{r['art_x_floor']:.2f} × | hepguard ≤ 1.05 × floor |"
        )
    return "\n".join(out)


# -- bridge ----------------------------------------------------------------------------------


def fwd_bwd(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    """One forward + backward (input gradient of the summed cross-entropy) of a batch."""
    leaf = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(leaf), y, reduction="sum")
    return torch.autograd.grad(loss, leaf)


def export(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path):
    """``module`` as an ONNX file (TorchScript-based exporter, opset 17, dynamic batch)."""
    torch.onnx.export(
        module,
        example,
        str(path),
        input_names=names,
        output_names=["out"],
        dynamic_axes={**{k: {0: "batch"} for k in names}, "out": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def bridge_section(
    n: int, batch: int, device: torch.device, repeat: int, workdir: Path
) -> list[dict[str, object]]:
    """Bridge forward + backward over native torch, per case, at one batch size."""
    timer = Timer(device)
    dj_case, dj_multi = perf_cases.deepjet_case(n)
    rows = []
    for case, multi in ((perf_cases.deepcsv_case(n, workdir), None), (dj_case, dj_multi)):
        module = case.module.to(device)
        x = torch.from_numpy(case.events.features[:batch]).to(device)
        assert case.events.labels is not None
        y = torch.from_numpy(case.events.labels[:batch].astype(np.int64)).to(device)
        path = workdir / f"{case.name.split()[0]}.onnx"
        if multi is None:
            export(module.cpu(), (x[:2].cpu(),), ["x"], path)
        else:
            parts = tuple(t.cpu() for t in case.module.layout.unpack(x[:2].cpu()))
            export(multi.cpu(), parts, ["jet", "tracks", "svs"], path)
        module.to(device)
        onnx_model: Model = load_model(path, device)
        auditor = Auditor(onnx_model, case.events, case.uncertainties, batch_size=batch)
        bridge = auditor.model.raw
        native = timer.best_of(partial(fwd_bwd, module, x, y), repeat)
        through = timer.best_of(partial(fwd_bwd, bridge, x, y), repeat)
        grads = (fwd_bwd(module, x, y)[0], fwd_bwd(bridge, x, y)[0])
        err = float((grads[0] - grads[1]).abs().max() / grads[0].abs().max())
        rows.append(
            {
                "model": case.name,
                "batch": batch,
                "native_s": native,
                "bridge_s": through,
                "ratio": through / native,
                "gradient_rel_err": err,
            }
        )
    return rows


def bridge_table(rows: list[dict[str, object]]) -> str:
    out = [
        "| model | batch | native torch fwd+bwd ms | bridge fwd+bwd ms | bridge ÷ native | "
        "gradient difference (max rel.) | target |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['batch']:,} | {1e3 * r['native_s']:.2f} | "
            f"{1e3 * r['bridge_s']:.2f} | {r['ratio']:.2f} | {r['gradient_rel_err']:.1e} | "
            "≤ 1.3 |"
        )
    return "\n".join(out)


# -- hidden ----------------------------------------------------------------------------------


class PartTimer:
    """Wraps methods and functions of the hidden attack's module to add up their seconds."""

    def __init__(self, device: torch.device) -> None:
        self.timer = Timer(device)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: object, attr: str, part: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: object, **kwargs: object) -> object:
            seconds, out = self.timer.time(lambda: original(*args, **kwargs))
            self.seconds[part] = self.seconds.get(part, 0.0) + seconds
            self.calls[part] = self.calls.get(part, 0) + 1
            return out

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


def hidden_section(n: int, device: torch.device, repeat: int) -> list[dict[str, object]]:
    """hidden (STEPS steps) ÷ pgd (STEPS steps) check loops on the example tagger, with the
    hidden check's parts."""
    import bench_audit

    from pytest_hepguard.attacks import hidden

    t0 = time.perf_counter()
    import scipy.stats  # noqa: F401  (once per session: timed apart from the checks)

    scipy_import_s = time.perf_counter() - t0
    unc = perf_cases.load_uncertainties(ROOT / "examples" / "unc.yaml")
    events = bench_audit.build_events(unc, n, seed=0)
    model = load_model(ROOT / "examples" / "tagger.pt", device)
    rows = []
    for _ in range(repeat):
        auditor = Auditor(model, events, unc)
        auditor.run("random", epsilon=1.0)
        pgd = auditor.run("pgd", epsilon=1.0, steps=STEPS)
        parts = PartTimer(device)
        parts.wrap(hidden.Hidden, "_candidates", "candidate search (margin ascent)")
        parts.wrap(hidden._Repair, "build", "marginal repair (builds)")
        parts.wrap(hidden._Repair, "violations", "fast checks (bisection)")
        parts.wrap(hidden._Repair, "certificate", "scipy certificate")
        parts.wrap(hidden.Hidden, "_score", "scoring (forwards)")
        try:
            hid = auditor.run("hidden", epsilon=1.0, steps=STEPS)
        finally:
            parts.restore()
        rows.append(
            {
                "events": n,
                "pgd_s": pgd.seconds,
                "hidden_s": hid.seconds,
                "ratio": hid.seconds / pgd.seconds,
                "parts": parts.seconds,
                "calls": parts.calls,
                "kept": hid.details.get("kept"),
                "candidates": hid.details.get("candidates"),
                "fooling_rate": hid.fooling_rate,
                "scipy_import_s": scipy_import_s,
            }
        )
    return [min(rows, key=lambda r: r["hidden_s"])]


def hidden_table(rows: list[dict[str, object]]) -> str:
    out = []
    for r in rows:
        out += [
            f"{r['events']:,} events, the example tagger, ε = 1, {STEPS} steps: PGD check "
            f"{r['pgd_s']:.2f} s, hidden check {r['hidden_s']:.2f} s: **hidden ÷ PGD = "
            f"{r['ratio']:.2f}** (target ≤ 2). "
            + (
                f"scipy.stats' first import ({r['scipy_import_s']:.2f} s, once per session) is "
                "timed apart."
                if r["scipy_import_s"] >= 0.01
                else "scipy.stats was imported before (by ART in section 1)."
            ),
            "",
            "| part of the hidden check | calls | seconds | share |",
            "|---|---|---|---|",
        ]
        parts = dict(r["parts"])  # type: ignore[arg-type]
        parts["rest (displacement statistics, outputs, bookkeeping)"] = r["hidden_s"] - sum(
            parts.values()
        )
        calls = dict(r["calls"])  # type: ignore[arg-type]
        for name, seconds in parts.items():
            out.append(
                f"| {name} | {calls.get(name, '')} | {seconds:.2f} | "
                f"{seconds / r['hidden_s']:.0%} |"
            )
    return "\n".join(out)


# -- scaling and plugin (subprocesses) ------------------------------------------------------


def scaling_section(sizes: list[int], workdir: Path) -> list[dict[str, object]]:
    import scaling_run

    return [scaling_run.measure(n, workdir) for n in sizes]


def scaling_table(rows: list[dict[str, object]]) -> str:
    import scaling_run

    return scaling_run.table(rows)


def plugin_section(repeat: int) -> dict[str, object]:
    import plugin_overhead

    return plugin_overhead.measure(repeat=repeat)


# -- the page --------------------------------------------------------------------------------


def summary_table(results: dict[str, object]) -> str:
    """One row per measurement of this run, beside its target."""
    out = ["| measurement | this run | target | met |", "|---|---|---|---|"]

    def row(what: str, value: str, target: str, met: bool) -> None:
        out.append(f"| {what} | {value} | {target} | {'yes' if met else '**no**'} |")

    for r in results.get("pgd", []):  # type: ignore[union-attr]
        row(
            f"1. PGD-20, {r['model']}, batch {r['batch']:,}",
            f"{r['hepguard_attack_x_floor']:.2f} × floor (torchattacks "
            f"{r['torchattacks_x_floor']:.2f} ×, ART {r['art_x_floor']:.2f} ×)",
            "≤ 1.05 × floor",
            r["hepguard_attack_x_floor"] <= 1.05,
        )
    for r in results.get("bridge", []):  # type: ignore[union-attr]
        row(
            f"2. ONNX bridge fwd+bwd ÷ native torch, {r['model']}",
            f"{r['ratio']:.2f}",
            "≤ 1.3",
            r["ratio"] <= 1.3,
        )
    for r in results.get("hidden", []):  # type: ignore[union-attr]
        share = r["parts"].get("scipy certificate", 0.0) / r["hidden_s"]
        row(
            f"3. hidden ÷ PGD, 20 steps, {r['events']:,} events",
            f"{r['ratio']:.2f} (scipy certificate {share:.0%} of hidden)",
            "≤ 2, scipy not dominant",
            r["ratio"] <= 2 and share < 0.5,
        )
    rows = results.get("scaling", [])
    if len(rows) > 1:  # type: ignore[arg-type]
        # marginal seconds per 10^6 events between consecutive sizes (start-up cancels out)
        per = [
            (b["wall_s"] - a["wall_s"]) / (b["events"] - a["events"]) * 1e6  # type: ignore[index]
            for a, b in pairwise(rows)  # type: ignore[arg-type]
        ]
        rss = [r["peak_rss_mib"] for r in rows]  # type: ignore[index,union-attr]
        sizes = " → ".join(f"{r['events']:.0e}" for r in rows)  # type: ignore[index,union-attr]
        row(
            f"4. main job, {sizes} events",
            f"{' → '.join(f'{p:.0f}' for p in per)} s per extra 10^6 events; peak RSS "
            f"{' → '.join(f'{m:,.0f}' for m in rss)} MiB",
            "time linear in N, peak RSS flat",
            max(per) <= 1.2 * min(per) and max(rss) <= 1.2 * min(rss),
        )
    plugin = results.get("plugin")
    if plugin:
        added = plugin["added_ms"]  # type: ignore[index]
        row(
            "5. plugin installed but unused, collect-only",
            f"{added:+.0f} ms",
            "< 50 ms",
            added < 50,
        )
    return "\n".join(out)


def write_docs(page: Path, tables: dict[str, str], machine: dict[str, object]) -> None:
    """Replace each ``<!-- perf:SECTION:DEVICE -->`` ... ``<!-- /perf -->`` block of ``page``."""
    text = page.read_text()
    kind = "gpu" if machine["gpu"] else "cpu"
    header = (
        f"*{machine['date']}, {machine['gpu'] or machine['cpu']} ({machine['cpu_count']} CPU "
        f"cores, {machine['torch_threads']} torch threads), torch {machine['torch']}, numpy "
        f"{machine['numpy']}, Python {machine['python']}, commit {machine['commit']}, load "
        f"average {machine['load_average_before']:.2f} before the run.*"
    )
    for section, body in tables.items():
        pattern = re.compile(rf"(<!-- perf:{section}:{kind} -->\n).*?(<!-- /perf -->)", re.S)
        if not pattern.search(text):
            print(f"{page}: no <!-- perf:{section}:{kind} --> block; {section} not written")
            continue
        text = pattern.sub(lambda m, b=body: f"{m[1]}{header}\n\n{b}\n{m[2]}", text)
    page.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--events", type=lambda s: int(float(s)), default=32768, help="pgd/bridge")
    ap.add_argument("--hidden-events", type=lambda s: int(float(s)), default=100_000)
    ap.add_argument(
        "--scaling", nargs="+", type=lambda s: int(float(s)), default=[10**5, 10**6, 10**7]
    )
    ap.add_argument("--repeat", type=int, default=3, help="keep the fastest of R")
    ap.add_argument("--out", type=Path, default=None, help="write every number as JSON")
    ap.add_argument("--write-docs", type=Path, default=None, help="fill docs/performance.md")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    machine = machine_info(device)
    print(json.dumps(machine))
    results: dict[str, object] = {"machine": machine}
    tables: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for section in args.sections:
            t0 = time.perf_counter()
            if section == "pgd":
                batches: list[int | None] = [8192]
                if device.type == "cuda":
                    batches.append(None)
                rows = pgd_section(args.events, batches, device, args.repeat, work)
                tables[section] = pgd_table(rows)
            elif section == "bridge":
                rows = bridge_section(args.events, 8192, device, max(args.repeat, 5), work)
                tables[section] = bridge_table(rows)
            elif section == "hidden":
                rows = hidden_section(args.hidden_events, device, args.repeat)
                tables[section] = hidden_table(rows)
            elif section == "scaling":
                rows = scaling_section(args.scaling, work)
                tables[section] = scaling_table(rows)
            else:
                import plugin_overhead

                rows = plugin_section(max(args.repeat, 11))
                tables[section] = plugin_overhead.table(rows)
            results[section] = rows
            print(f"\n## {section} ({time.perf_counter() - t0:.0f} s)\n\n{tables[section]}\n")
    tables["summary"] = summary_table(results)
    print(f"\n## summary\n\n{tables['summary']}\n")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    if args.write_docs is not None:
        write_docs(args.write_docs, tables, machine)
        print(f"wrote the tables into {args.write_docs}")


if __name__ == "__main__":
    main()
