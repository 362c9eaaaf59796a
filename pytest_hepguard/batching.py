"""How many events an attack step takes at once: a fixed size on the CPU, the GPU filled.

On a CPU, throughput per event is flat from a few thousand events per batch on (the cores are
busy either way), so the batch stays at :data:`CPU_BATCH` and the numbers of an audit do not
depend on the machine's speed. A GPU is only busy with large batches (on an H100 a 20-step PGD on
a DeepCSV-sized MLP runs about 10 times faster per event at 131072 events than at 8192), so
there the size is found by measurement: :func:`choose_batch_size` doubles the batch while one
attack step (forward + backward of the cross-entropy's input gradient) gets cheaper per event by
more than :data:`MIN_GAIN`, and stops before the device's memory is more than
:data:`MEMORY_SHARE` used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pytest_hepguard.models.base import Model

#: Events per batch on the CPU (and the start of the search on a GPU).
CPU_BATCH = 65536
#: The largest batch the search tries.
MAX_BATCH = 2**21
#: A doubling must make a step at least this much cheaper per event to be taken.
MIN_GAIN = 1.10
#: Share of the device's memory one attack step may use at the chosen size (the rest is left for
#: the attack's own tensors and the hidden attack's bookkeeping).
MEMORY_SHARE = 0.5


def choose_batch_size(
    step: Callable[[int], tuple[float, float] | None],
    n_events: int,
    start: int = CPU_BATCH,
    largest: int = MAX_BATCH,
    min_gain: float = MIN_GAIN,
    memory_share: float = MEMORY_SHARE,
) -> int:
    """The batch size (events) at which one attack step costs least per event.

    Args:
        step: ``step(b)`` runs one attack step on ``b`` events and returns ``(seconds, share of
            the device's memory it used at its peak)``, or None when the device ran out of
            memory.
        n_events: the sample's size; a batch never exceeds it.
        start: the first size tried (always taken, even when it exceeds the memory share).
        largest: the last size tried.
        min_gain: a doubling is taken when the time per event falls by at least this factor.
        memory_share: a size whose step uses more of the device's memory is not taken.
    """
    best = min(start, n_events)
    measured = step(best)
    if measured is None:
        return best
    per_event = measured[0] / best
    while best < min(largest, n_events):
        size = min(2 * best, largest, n_events)
        trial = step(size)
        if trial is None or trial[1] > memory_share:
            break
        if per_event / (trial[0] / size) < min_gain:
            break
        best, per_event = size, trial[0] / size
    return best


def auto_batch_size(
    model: Model, x: torch.Tensor, n_events: int, labels: torch.Tensor | None = None
) -> int:
    """The batch size for attacks of ``model`` on its device over a sample of ``n_events``:
    :data:`CPU_BATCH` on a CPU; on a GPU, :func:`choose_batch_size` timing input gradients on
    ``x`` [m, n_features] (nominal rows, tiled to each trial size) with ``labels`` [m] (class 0
    when None), never beyond the sample."""
    device = model.device
    if device.type != "cuda":
        return CPU_BATCH
    from pytest_hepguard.attacks.base import input_gradient

    x = x.to(device)
    labels = (
        torch.zeros(len(x), dtype=torch.int64, device=device)
        if labels is None
        else labels.to(device)
    )
    total = torch.cuda.get_device_properties(device).total_memory

    def step(size: int) -> tuple[float, float] | None:
        reps = -(-size // len(x))
        rows, lab = x.repeat(reps, 1)[:size], labels.repeat(reps)[:size]
        try:
            input_gradient(model, rows, lab)  # warm-up: kernels, allocator
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            input_gradient(model, rows, lab)
            stop.record()
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return None
        return start.elapsed_time(stop) / 1e3, torch.cuda.max_memory_allocated(device) / total

    return choose_batch_size(step, n_events=n_events)
