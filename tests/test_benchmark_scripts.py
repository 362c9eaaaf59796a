"""The benchmark scripts' own logic (they are run by hand, so nothing else keeps them working):
the page writer keeps everything outside its markers, the summary judges each target, and the
cases build. No timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_performance  # noqa: E402
import perf_cases  # noqa: E402

MACHINE = {
    "date": "2026-11-23",
    "gpu": None,
    "cpu": "Some CPU",
    "cpu_count": 2,
    "torch_threads": 2,
    "torch": "2.13.0",
    "numpy": "2.0",
    "python": "3.11",
    "commit": "abc1234",
    "load_average_before": 0.1,
}


def test_write_docs_replaces_only_the_marked_blocks(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text(
        "intro\n<!-- perf:pgd:cpu -->\nold table\n<!-- /perf -->\nmiddle\n"
        "<!-- perf:pgd:gpu -->\ngpu text\n<!-- /perf -->\nend\n"
    )
    bench_performance.write_docs(page, {"pgd": "| new |", "bridge": "| x |"}, MACHINE)
    text = page.read_text()
    assert "old table" not in text and "| new |" in text
    assert text.startswith("intro\n") and "middle\n" in text and text.endswith("end\n")
    assert "gpu text" in text  # a CPU run leaves the GPU block alone
    assert "2026-11-23, Some CPU (2 CPU cores" in text and "commit abc1234" in text


def test_the_summary_says_which_targets_are_met() -> None:
    results = {
        "pgd": [
            {
                "model": "m",
                "batch": 8192,
                "hepguard_attack_x_floor": 1.04,
                "torchattacks_x_floor": 1.1,
                "art_x_floor": 3.0,
            }
        ],
        "bridge": [{"model": "m", "ratio": 1.4}],
        "hidden": [
            {"events": 10, "ratio": 1.7, "hidden_s": 2.0, "parts": {"scipy certificate": 0.2}}
        ],
        "scaling": [
            {"events": 10**5, "wall_s": 20.0, "peak_rss_mib": 600.0},
            {"events": 10**6, "wall_s": 155.0, "peak_rss_mib": 650.0},
            {"events": 10**7, "wall_s": 1505.0, "peak_rss_mib": 700.0},
        ],
        "plugin": {"added_ms": 12.0},
    }
    lines = bench_performance.summary_table(results).splitlines()[2:]
    met = [line.rsplit("|", 2)[1].strip() for line in lines]
    assert met == ["yes", "**no**", "yes", "yes", "yes"]
    assert "150 → 150 s per extra 10^6 events" in lines[3]  # start-up cancels out


def test_the_cases_build_and_run_forward(tmp_path: Path) -> None:
    case = perf_cases.deepcsv_case(64, tmp_path)
    assert case.events.features.shape == (64, 67)
    assert len(case.uncertainties.feature_names) == 67
    out = case.module(torch.from_numpy(case.events.features))
    assert out.shape == (64, 4) and torch.isfinite(out).all()
    x, labels = perf_cases.deepcsv_features(1000, seed=1)
    assert ((x[:, 64:67] == -999.0).mean() - 0.2) ** 2 < 0.03**2
    assert np.all(x[:, 60:64] == np.round(x[:, 60:64])) and set(np.unique(labels)) == {0, 1, 2, 3}
    flat, multi = perf_cases.deepjet_case(100)
    rows = torch.from_numpy(flat.events.features)
    # the flat wrapper feeds the network what hepguard's layout feeds it
    assert torch.allclose(flat.module(rows), multi(*flat.module.layout.unpack(rows)))
