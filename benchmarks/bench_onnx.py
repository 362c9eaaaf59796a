"""Time the ONNX bridge on the production CMS taggers of ``../shared/realdata`` and on the
bundled example (a plain script, not a test).

Usage::

    python benchmarks/bench_onnx.py                   # batch 1024, fastest of 5
    python benchmarks/bench_onnx.py --batch 256 --repeat 9 --out onnx.json

For each model: onnxruntime's forward (CPU execution provider, no spinning threads, as
hepguard runs it), the bridge's forward and forward + backward (the input gradient of
``sum(out * v)``, what one attack step costs), and the bridge's errors: outputs against
onnxruntime and float32 input gradients against the float64 bridge (max |a - b| / max |b|).
The offline ParticleNet also runs as TorchScript (the same network, shipped by CMS), for a
native reference. Inputs are built as the tests build them (``tests/realdata_cases.py``).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from onnx_helpers import grads_or_zeros, rel_err  # noqa: E402
from realdata_cases import CASES, REALDATA, Case, make_inputs  # noqa: E402

from pytest_hepguard.models.onnx import load_onnx_graph  # noqa: E402
from pytest_hepguard.models.onnx_model import ort_session  # noqa: E402

EXAMPLE = Case(str(ROOT / "examples" / "tagger.onnx"), ((11,),))


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` calls of ``fn`` (after one warm-up), seconds."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def forward_backward(
    fn: Callable[..., object],
    xs: list[torch.Tensor],
    movable: list[int],
    v: torch.Tensor,
    output: int,
) -> list[torch.Tensor]:
    """Input gradients of ``sum(fn(*xs)[output] * v)`` w.r.t. the inputs ``movable``."""
    leaves = [x.clone().requires_grad_(i in movable) for i, x in enumerate(xs)]
    out = fn(*leaves)
    out = out[output] if isinstance(out, (tuple, list)) else out
    return grads_or_zeros((out * v).sum(), [leaves[i] for i in movable])


def bench_case(name: str, case: Case, batch: int, repeat: int) -> dict[str, object]:
    path = Path(case.path) if Path(case.path).is_absolute() else REALDATA / case.path
    graph = load_onnx_graph(path)
    session = ort_session(path, torch.device("cpu"))
    xs = make_inputs(case, batch)
    feeds = {m.name: x.numpy() for m, x in zip(session.get_inputs(), xs, strict=True)}
    with torch.no_grad():
        ours = graph(*xs)[case.output]
    runtime = session.run(None, feeds)[case.output]
    v = torch.randn(ours.shape, generator=torch.Generator().manual_seed(0))
    grads32 = forward_backward(graph, xs, case.movable, v, case.output)
    graph.double()
    grads64 = forward_backward(
        graph, [x.double() for x in xs], case.movable, v.double(), case.output
    )
    graph.float()
    row: dict[str, object] = {
        "model": name,
        "batch": batch,
        "output_rel_err_vs_ort": rel_err(ours, runtime),
        "grad_rel_err_f32_vs_f64": max(
            rel_err(a, b) for a, b in zip(grads32, grads64, strict=True)
        ),
        "ort_forward_s": best_of(lambda: session.run(None, feeds), repeat),
        "bridge_forward_s": best_of(lambda: graph(*xs), repeat),
        "bridge_fwd_bwd_s": best_of(
            lambda: forward_backward(graph, xs, case.movable, v, case.output), repeat
        ),
    }
    if name == "particlenet_ak4_chs":
        scripted = torch.jit.load(
            str(REALDATA / "cms-particlenet-ak4-chs/particlenet_ak4_torchscript.pt"),
            map_location="cpu",
        ).eval()
        row["torchscript_fwd_bwd_s"] = best_of(
            lambda: forward_backward(scripted, xs, case.movable, v, 0), repeat
        )
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cases = {"example_tagger": EXAMPLE}
    if REALDATA.is_dir():
        cases.update(CASES)
    else:
        print(f"{REALDATA} is absent: only the bundled example is timed")
    print(
        f"batch {args.batch}, fastest of {args.repeat}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        "| model | output err vs ORT | grad err f32 vs f64 | ORT fwd ms | bridge fwd ms "
        "| bridge fwd+bwd ms | fwd+bwd / ORT fwd | TorchScript fwd+bwd ms |"
    )
    print("|" + "---|" * 8)
    rows = []
    for name, case in cases.items():
        r = bench_case(name, case, args.batch, args.repeat)
        rows.append(r)
        ts = r.get("torchscript_fwd_bwd_s")
        print(
            f"| {name} | {r['output_rel_err_vs_ort']:.1e} | {r['grad_rel_err_f32_vs_f64']:.1e} | "
            f"{1e3 * r['ort_forward_s']:.1f} | {1e3 * r['bridge_forward_s']:.1f} | "
            f"{1e3 * r['bridge_fwd_bwd_s']:.1f} | "
            f"{r['bridge_fwd_bwd_s'] / r['ort_forward_s']:.1f} | "
            f"{'-' if ts is None else f'{1e3 * ts:.1f}'} |"
        )
    if args.out is not None:
        args.out.write_text(
            json.dumps({"batch": args.batch, "repeat": args.repeat, "rows": rows}, indent=2) + "\n"
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
