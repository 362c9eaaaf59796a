"""Time ``output_shift`` and ``fooling_rate`` on large samples (a plain script, not a test).

Usage: ``python benchmarks/bench_metrics.py [n_events ...]`` (default 1e6 and 1e7 events).
Prints the wall-clock seconds of each call; nothing is asserted.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from pytest_hepguard.metrics import cut_for_efficiency, fooling_rate, output_shift


def bench(n: int, seed: int = 0) -> None:
    """Build a weighted n-event sample with ties and time the metrics on it."""
    rng = np.random.default_rng(seed)
    is_signal = rng.random(n) < 0.3
    is_background = ~is_signal & (rng.random(n) < 0.9)
    nominal = np.round(rng.normal(size=n) + 0.8 * is_signal, 4)  # rounding makes ties
    perturbed = nominal + rng.normal(0.02, 0.1, size=n)
    weights = rng.uniform(0.1, 2.0, size=n)

    start = time.perf_counter()
    cut = cut_for_efficiency(nominal[is_signal], weights[is_signal], 0.7)
    t_cut = time.perf_counter() - start

    start = time.perf_counter()
    shift = output_shift(nominal, perturbed, is_signal, is_background, weights, cut)
    t_shift = time.perf_counter() - start

    start = time.perf_counter()
    rate = fooling_rate(nominal > cut, perturbed > cut, weights, mask=is_signal)
    t_rate = time.perf_counter() - start

    print(
        f"n={n:>10,d}  cut_for_efficiency {t_cut:7.3f} s  output_shift {t_shift:7.3f} s  "
        f"fooling_rate {t_rate:7.3f} s  (AUC drop {shift.auc_drop:.4f}, "
        f"fooling rate {rate.value:.4f} ± {rate.error:.4f})"
    )


def main(argv: list[str]) -> None:
    sizes = [int(float(a)) for a in argv] or [1_000_000, 10_000_000]
    for n in sizes:
        bench(n)


if __name__ == "__main__":
    main(sys.argv[1:])
