"""The batch size: fixed on a CPU, searched on a GPU (the search is tested with a step cost
model here, since CI has no GPU), and the ``--hepguard-batch-size`` option."""

from __future__ import annotations

import argparse

import pytest
import torch

from pytest_hepguard.batching import CPU_BATCH, MAX_BATCH, auto_batch_size, choose_batch_size
from pytest_hepguard.models import wrap_model
from pytest_hepguard.plugin import _batch_size


def gpu_like(overhead_s: float, per_event_s: float, memory_per_event: float, oom_at: int):
    """A step cost model: a fixed launch overhead plus a per-event cost (a GPU that fills up),
    memory share linear in the batch, out of memory from ``oom_at`` events on. Records the sizes
    asked for."""
    asked: list[int] = []

    def step(size: int) -> tuple[float, float] | None:
        asked.append(size)
        if size >= oom_at:
            return None
        return overhead_s + per_event_s * size, memory_per_event * size

    return step, asked


def test_the_search_doubles_while_a_step_gets_cheaper_per_event() -> None:
    step, asked = gpu_like(1e-3, 1e-8, 1e-9, oom_at=2**40)
    chosen = choose_batch_size(step, n_events=2**30)
    # per-event cost c(b) = 1e-3/b + 1e-8; a doubling b -> 2b is taken when c(b)/c(2b) >= 1.1
    expected = 65536
    while expected < MAX_BATCH:
        ratio = (1e-3 / expected + 1e-8) / (1e-3 / (2 * expected) + 1e-8)
        if ratio < 1.1:
            break
        expected *= 2
    assert chosen == expected
    assert chosen == 2**19  # by hand: c(2**19) / c(2**20) = 1.087 < 1.1
    assert asked == [65536 * 2**k for k in range(len(asked))]
    assert asked[-1] == 2 * chosen  # the rejected doubling was measured, nothing beyond it


def test_the_search_stops_before_the_memory_share_and_on_out_of_memory() -> None:
    step, asked = gpu_like(1.0, 0.0, 1 / 2**19, oom_at=2**40)  # half the memory at 2**18
    assert choose_batch_size(step, n_events=2**30) == 2**18
    assert asked[-1] == 2**19  # 2**19 would use all of it
    step, asked = gpu_like(1.0, 0.0, 0.0, oom_at=2**18)
    assert choose_batch_size(step, n_events=2**30) == 2**17
    # the first size is always taken, even when it runs out of memory (the audit then says so)
    step, _ = gpu_like(1.0, 0.0, 0.0, oom_at=1)
    assert choose_batch_size(step, n_events=2**30) == CPU_BATCH


def test_the_search_never_exceeds_the_sample_or_the_largest_size() -> None:
    step, asked = gpu_like(1.0, 0.0, 0.0, oom_at=2**40)  # always cheaper per event when larger
    assert choose_batch_size(step, n_events=100_000) == 100_000
    assert asked == [65536, 100_000]
    step, _ = gpu_like(1.0, 0.0, 0.0, oom_at=2**40)
    assert choose_batch_size(step, n_events=2**40) == MAX_BATCH
    step, asked = gpu_like(1.0, 0.0, 0.0, oom_at=2**40)
    assert choose_batch_size(step, n_events=5000) == 5000 and asked == [5000]


def test_on_a_cpu_the_batch_is_fixed_without_measuring() -> None:
    calls = []

    def module(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.softmax(x[:, :2], 1)

    model = wrap_model(module, torch.device("cpu"), "toy")
    assert auto_batch_size(model, torch.zeros(10, 3), n_events=10**6) == CPU_BATCH
    assert calls == []


@pytest.mark.parametrize(("text", "value"), [("auto", None), ("1", 1), ("8192", 8192)])
def test_the_option_takes_a_positive_size_or_auto(text: str, value: int | None) -> None:
    assert _batch_size(text) == value


@pytest.mark.parametrize("text", ["0", "-5", "big", "1.5", ""])
def test_the_option_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="positive number of events or auto"):
        _batch_size(text)


def test_a_bad_batch_size_stops_pytest_with_the_reason(tmp_path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--hepguard-batch-size",
            "0",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "--hepguard-batch-size" in done.stderr
    assert "expected a positive number of events or auto, not '0'" in done.stderr


def test_the_auditor_picks_the_cpu_batch_when_none_is_given() -> None:
    from pathlib import Path

    from pytest_hepguard.audit import Auditor
    from pytest_hepguard.events import load_events
    from pytest_hepguard.models import load_model
    from pytest_hepguard.uncertainties import load_uncertainties

    examples = Path(__file__).resolve().parent.parent / "examples"
    unc = load_uncertainties(examples / "unc.yaml")
    events = load_events(examples / "jets.root", unc.feature_names, label="label", tree="Events")
    model = load_model(examples / "tagger.pt", torch.device("cpu"))
    assert Auditor(model, events, unc, batch_size=None).batch_size == CPU_BATCH
    assert Auditor(model, events, unc, batch_size=1000).batch_size == 1000
