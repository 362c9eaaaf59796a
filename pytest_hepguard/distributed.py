"""Chunked audits: the sample cut into file/entry ranges, each audited where it is sent (a Dask
worker, or this process), merged from summaries (``--hepguard-dask``, docs/scale.md).

Three passes over the chunks, each returning small mergeable values:

1. nominal: per-block moments of the ``std`` features, the signal discriminant's fine histogram,
   each column's range and a strided subsample of nominal rows (for the certificate's bins);
2. only with a working point given as an efficiency: the signal events near the cut, from
   which the cut of the whole sample is found exactly;
3. every check of the session on the chunk, with the whole sample's ``std`` values and cut
   (:class:`pytest_hepguard.audit.Reference`), as :class:`pytest_hepguard.summary.CheckSummary`.

Random draws are keyed to the events' batch positions in the whole sample and chunks hold whole
batches, so every per-event perturbation equals the one-process one: counts (fooling rates,
efficiencies) are exact, binned numbers (AUC, ROC, output KS and Wasserstein) carry their bound.
The hidden attack keeps its constraints per chunk and is certified on the merged sample.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_hepguard.audit import (
    CheckKey,
    CheckResult,
    CheckRunner,
    Reference,
    _Perturbed,
    build_result,
    check_key,
    systematic_result,
)
from pytest_hepguard.chunks import (
    Chunk,
    data_files,
    describe_files,
    load_chunk,
    needed_columns,
    plan_chunks,
    read_args,
)
from pytest_hepguard.constraints import _feature_columns
from pytest_hepguard.envelope import MOMENT_BLOCK, std_from_moments
from pytest_hepguard.exceptions import AttackError, DataError, HepguardError
from pytest_hepguard.metrics import OutputShift, rejection, weighted_rate
from pytest_hepguard.summary import (
    FINE_BINS,
    REPORT_BINS,
    CertificateBins,
    CheckSummary,
    Side,
    binned_auc,
    binned_ks,
    binned_roc,
    binned_wasserstein,
    certificate_parts,
    fine_bin,
    merged_certificate,
)
from pytest_hepguard.uncertainties import GateSpec, UncertaintyModel

#: Events per chunk unless ``--hepguard-chunk-events`` says otherwise (4 CPU batches).
CHUNK_EVENTS = 1 << 18

#: Attacks a chunked audit runs (per event, or per chunk for ``hidden``; ``systematic`` of them).
CHUNKED_ATTACKS = ("random", "fgsm", "pgd", "hidden", "systematic")

#: Nominal rows gathered (strided over the whole sample) to place the certificate's bins.
SUBSAMPLE = 1 << 17

#: Quantile bins per feature of the merged certificate's KS statistic.
CERTIFICATE_BINS = 1 << 14


class DistributedError(HepguardError):
    """A chunked audit that cannot go on: no scheduler, a chunk that failed twice."""


# ---------------------------------------------------------------------------------------------
# What travels to a worker


@dataclass(frozen=True)
class Job:
    """One chunk's task: plain values only (the model travels as its path or
    ``package.module:callable``, never as a pickled object)."""

    model: str
    device: str
    gradient_free: bool
    uncertainties: UncertaintyModel
    seed: int
    batch_size: int
    chunk: Chunk
    threads: int | None = None


@dataclass
class NominalPass:
    """Pass 1 of one chunk."""

    n: int
    moments: np.ndarray  # [n_blocks, 3, n_columns]
    signal_fine: np.ndarray | None  # [FINE_BINS + 2] weighted signal discriminant
    col_min: np.ndarray  # [n_columns] over movable entries (inf when none)
    col_max: np.ndarray
    n_movable: np.ndarray  # [n_columns]
    class_counts: np.ndarray  # [n_classes] (or [1] without labels)
    rows: np.ndarray  # [k, n_columns] strided subsample
    movable: np.ndarray  # [k, n_columns]
    decision: Any  # the resolved decision, without the whole sample's cut


@dataclass
class ChunkSummaries:
    """Pass 3 of one chunk: the nominal discriminant's sums and each check's."""

    nominal: Side
    checks: dict[CheckKey, list[CheckSummary]]
    #: systematic checks: weighted flips per correlated draw, and each variation's group
    draws: dict[CheckKey, np.ndarray] = field(default_factory=dict)
    groups: dict[CheckKey, list[str]] = field(default_factory=dict)
    devices: frozenset[str] = frozenset()

    def merge(self, other: ChunkSummaries) -> ChunkSummaries:
        """The sums of both chunks."""
        return ChunkSummaries(
            self.nominal.merge(other.nominal),
            {
                k: [x.merge(y) for x, y in zip(v, other.checks[k], strict=True)]
                for k, v in self.checks.items()
            },
            {k: v + other.draws[k] for k, v in self.draws.items()},
            self.groups,
            self.devices | other.devices,
        )


_MODELS: dict[tuple[str, str, bool], Any] = {}


def _model(job: Job) -> Any:
    """The job's model, loaded once per worker process."""
    from pytest_hepguard.models import load_model, resolve_device, wrap_model

    key = (job.model, job.device, job.gradient_free)
    if key not in _MODELS:
        device = resolve_device(job.device)
        _MODELS.clear()
        _MODELS[key] = wrap_model(
            load_model(job.model, device, gradient_free=job.gradient_free), device, job.model
        )
    return _MODELS[key]


def _auditor(job: Job, reference: Reference) -> Any:
    from pytest_hepguard.audit import Auditor

    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    per_event, read = read_args(job.uncertainties)
    events = load_chunk(job.chunk.pieces, per_event, **read)
    return Auditor(
        _model(job),
        events,
        job.uncertainties,
        seed=job.seed,
        batch_size=job.batch_size,
        reference=reference,
    )


def _provisional(job: Job, n_columns: int) -> Reference:
    return Reference(job.chunk.start, np.zeros(n_columns), None)


def _movable(auditor: Any) -> np.ndarray:
    import torch

    x = torch.from_numpy(auditor.events.features)
    return np.concatenate(
        [
            auditor.envelope.movable(x[s : s + auditor.batch_size].to(auditor.device)).cpu().numpy()
            for s in range(0, len(x), auditor.batch_size)
        ]
    )


def nominal_pass(job: Job, n_columns: int, stride: int) -> NominalPass:
    """Pass 1 on one chunk (runs on a worker)."""
    from pytest_hepguard.envelope import feature_moments

    a = _auditor(job, _provisional(job, n_columns))
    x = a.events.features
    layout = a.layout
    padded = None
    if layout.multi_input:
        import torch

        padded = layout.padded(torch.from_numpy(x)).numpy()
    movable = _movable(a)
    col_min = np.where(movable, x, np.inf).min(0, initial=np.inf).astype(np.float64)
    col_max = np.where(movable, x, -np.inf).max(0, initial=-np.inf).astype(np.float64)
    w = a.events.weights if a.events.weights is not None else np.ones(len(x))
    signal = None
    if a.labels is not None:
        sig = a.decision.is_signal(a.labels)
        signal = np.bincount(fine_bin(a.nominal_disc[sig]), w[sig], minlength=FINE_BINS + 2)
        counts = np.bincount(a.labels, minlength=a.model.n_classes)
    else:
        counts = np.array([len(x)])
    first = (-job.chunk.start) % stride
    pick = np.arange(first, len(x), stride)
    return NominalPass(
        len(x),
        feature_moments(x, layout.specs, layout.feature_of, padded, MOMENT_BLOCK),
        signal,
        col_min,
        col_max,
        movable.sum(0),
        counts,
        x[pick],
        movable[pick],
        a.decision,
    )


def cut_window(job: Job, n_columns: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 on one chunk: discriminant values and weights of the signal events in fine bins
    ``lo`` .. ``hi``."""
    a = _auditor(job, _provisional(job, n_columns))
    sig = a.decision.is_signal(a.labels)
    d = a.nominal_disc[sig]
    w = a.events.weights[sig] if a.events.weights is not None else np.ones(len(d))
    k = fine_bin(d)
    keep = (k >= lo) & (k <= hi)
    return d[keep].astype(np.float64), w[keep]


def chunk_summaries(
    job: Job, reference: Reference, keys: Sequence[CheckKey], bins: CertificateBins | None
) -> ChunkSummaries:
    """Pass 3 on one chunk: every check of ``keys`` (runs on a worker)."""
    import torch

    a = _auditor(job, reference)
    w = a.events.weights if a.events.weights is not None else np.ones(len(a.events))
    sig, bkg, classes = _masks(a)
    n_classes = a.model.n_classes if a.labels is not None else 1
    cut = a.decision.cut if a.decision.uses_cut else None

    def side(disc: np.ndarray) -> Side:
        return Side.of(disc, w, sig, bkg, classes, n_classes, cut)

    def summary(pert: _Perturbed) -> CheckSummary:
        probs = torch.from_numpy(pert.probs)
        decisions = a.decision.decide(probs).numpy()
        flip = decisions != a.nominal_decisions
        correct = a.correct if a.correct is not None else np.zeros(len(w), dtype=bool)
        wc = w[correct]
        return CheckSummary(
            n=len(w),
            sum_w=float(w.sum()),
            sum_w2=float(np.dot(w, w)),
            sum_w_flip=float(w[flip].sum()),
            n_correct=int(correct.sum()),
            sum_w_correct=float(wc.sum()),
            sum_w2_correct=float(np.dot(wc, wc)),
            sum_w_flip_correct=float(w[flip & correct].sum()),
            sum_w_sig=float(w[sig].sum()),
            sum_w_bkg=float(w[bkg].sum()),
            perturbed=side(a.decision.discriminant_of(probs).numpy()),
            max_disp=pert.max_disp,
            sum_abs_disp=pert.sum_abs_disp,
            n_movable=pert.n_movable,
            n_moved=pert.n_moved,
            violations=pert.violations,
            zero_gradient=pert.zero_gradient,
            seconds=pert.seconds,
        )

    out = ChunkSummaries(side(a.nominal_disc), {}, devices=frozenset({str(a.device)}))
    for key in keys:
        attack, params = key[0], dict(key[1])
        if attack == "systematic":
            eps = float(params["epsilon"])
            groups = a.nuisance_groups()
            out.groups[key] = [g.name for g in groups]
            out.checks[key] = [
                summary(a._shifted(lambda s, x0, g=g, t=sign * eps: g.shift(x0, t)))
                for g in groups
                for sign in (1.0, -1.0)
            ]
            out.draws[key] = np.array(
                [
                    float(w[d != a.nominal_decisions].sum())
                    for d in a.correlated_decisions(groups, int(params["draws"]), eps)
                ]
            )
            continue
        a.keep_rows = attack == "hidden"
        pert = a._perturb_all(attack, params)
        s = summary(pert)
        if attack == "hidden":
            s = _hidden_summary(a, job.chunk, pert, s, bins)
        out.checks[key] = [s]
    return out


def _masks(a: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(a.events)
    if a.labels is None:
        none = np.zeros(n, dtype=bool)
        return none, none, np.zeros(n, dtype=np.int64)
    return a.decision.is_signal(a.labels), a.decision.is_background(a.labels), a.labels


def _hidden_summary(
    a: Any, chunk: Chunk, pert: _Perturbed, s: CheckSummary, bins: CertificateBins | None
) -> CheckSummary:
    where = f"chunk {chunk.index} ({chunk.where()})"
    details = pert.details
    s.kept = int(details.get("kept", 0))  # type: ignore[call-overload]
    s.candidates = int(details.get("candidates", 0))  # type: ignore[call-overload]
    s.failures = [f"{where}: {f}" for f in pert.failures]
    s.warnings = [f"{where}: {m}" for m in pert.warnings]
    if bins is not None and pert.rows is not None:
        s.certificate = certificate_parts(bins, a.events.features, pert.rows, _movable(a))
    return s


def window_cut(hist: np.ndarray, efficiency: float) -> tuple[int, int]:
    """The fine bins ``lo`` .. ``hi`` that hold the cut of ``efficiency`` on a weighted signal
    histogram [FINE_BINS + 2]: ``hi`` is the highest bin with at least that share of the weight
    at or above it, ``lo`` the highest non-empty bin below it (or ``hi``); the best cut is a value
    in ``hi`` or the highest value in ``lo``."""
    total = float(hist.sum())
    above = np.cumsum(hist[::-1])[::-1]  # weight at or above each bin
    hi = int(np.flatnonzero(above >= efficiency * total - 1e-12 * total).max(initial=0))
    lower = np.flatnonzero(hist[:hi] != 0)
    return (int(lower.max()) if lower.size else hi), hi


def cut_from_window(
    hist: np.ndarray, lo: int, hi: int, values: np.ndarray, weights: np.ndarray, efficiency: float
) -> float:
    """:func:`~pytest_hepguard.metrics.cut_for_efficiency` of the whole sample from the signal
    events in fine bins ``lo`` .. ``hi`` (``values``, ``weights``) and the histogram: the weight
    below and above the window stands in as one event on each side, which can never be the best
    cut, so the result is the whole sample's."""
    from pytest_hepguard.metrics import cut_for_efficiency

    below, beyond = float(hist[:lo].sum()), float(hist[hi + 1 :].sum())
    scores = np.concatenate(
        [[values.min() - 1.0] if below else [], values, [values.max() + 1.0] if beyond else []]
    )
    w = np.concatenate([[below] if below else [], weights, [beyond] if beyond else []])
    return cut_for_efficiency(scores, w, efficiency)


# ---------------------------------------------------------------------------------------------
# Executors: where the chunks run


class Executor:
    """Runs one function over every chunk's arguments, yielding ``(index, result)`` as chunks
    finish; a chunk that fails is reported by its files and entry ranges."""

    description = "this process, chunk after chunk"
    dashboard: str | None = None
    #: torch threads per task (None: torch's default)
    threads: int | None = None

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], chunks: Sequence[Chunk]
    ) -> Iterator[tuple[int, Any]]:
        for i, a in enumerate(args):
            yield i, fn(*a)

    def close(self) -> None:
        """Release the cluster (nothing for this process)."""


class DaskExecutor(Executor):
    """Chunks as tasks of a ``dask.distributed`` client; each retried once."""

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client, self.cluster = client, cluster
        self.dashboard = getattr(client, "dashboard_link", None)
        workers = len(client.scheduler_info().get("workers", {}))
        self.description = f"Dask scheduler {client.scheduler.address} ({workers} workers)"

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], chunks: Sequence[Chunk]
    ) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        stamp = time.time_ns()
        futures = {
            self.client.submit(fn, *a, retries=1, key=f"hepguard-{fn.__name__}-{i}-{stamp}"): i
            for i, a in enumerate(args)
        }
        try:
            for future in as_completed(futures):
                i = futures[future]
                if future.status != "finished":
                    exc = future.exception()
                    chunk = chunks[i]
                    raise DistributedError(
                        f"chunk {chunk.index} ({chunk.where()}) failed twice, so the audit "
                        f"stops rather than drop its {chunk.n} events: {_reason(exc)}"
                    )
                yield i, future.result()
                future.release()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _reason(exc: BaseException | None) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return f"the workers running it died ({exc})"
    return f"{name}: {exc}"


def connect(spec: str, timeout: float) -> Executor:
    """The executor of ``--hepguard-dask``: ``local:N`` starts a LocalCluster of N worker
    processes (torch gets cores / N threads in each), ``local:0`` runs the chunks in this
    process one after the other (no Dask needed: the memory of one chunk); anything else is a
    scheduler address (``tcp://host:8786``), which must answer within ``timeout`` seconds."""
    if spec == "local:0":
        return Executor()
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DistributedError(
            "--hepguard-dask needs dask.distributed: pip install 'pytest-hepguard[dask]'"
        ) from exc
    if spec.startswith("local:"):
        text = spec.split(":", 1)[1]
        if not text.isdigit():
            raise DistributedError(
                f"--hepguard-dask {spec}: expected local:N with N >= 1 worker processes, or "
                "local:0 for the chunks in this process"
            )
        n = int(text)
        threads = max(1, (os.cpu_count() or 1) // n)
        single = {
            v: threads for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        }
        # Dask's default worker environment sets MALLOC_TRIM_THRESHOLD_, which fixes glibc's
        # mmap threshold: every large torch buffer becomes an mmap, 2.7 x slower here
        with dask.config.set(
            {
                "distributed.scheduler.allowed-failures": 1,
                "distributed.nanny.pre-spawn-environ": single,
            }
        ):
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
            client = Client(cluster, timeout=f"{timeout}s")
        executor = DaskExecutor(client, cluster)
        executor.threads = threads
        return executor
    try:
        client = Client(spec, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise DistributedError(
            f"--hepguard-dask {spec}: no Dask scheduler answered within {timeout:g} s "
            f"({type(exc).__name__}: {exc}); start one (dask scheduler), check the address, "
            "or use local:N for a cluster on this machine"
        ) from exc
    return DaskExecutor(client)


# ---------------------------------------------------------------------------------------------
# The driver


class ChunkedAudit(CheckRunner):
    """The :class:`pytest_hepguard.audit.Auditor` interface (``run``, ``run_gate``,
    ``decision``) over a sample of many files, audited chunk by chunk on ``executor``.

    Args:
        model: the model's path (or ``package.module:callable``), loaded by each worker.
        device: ``auto``, ``cpu`` or ``cuda`` on the workers.
        uncertainties: the validated uncertainty file.
        data: one file, a folder or a glob of ROOT/Parquet files.
        executor: where chunks run (:func:`connect`, or this process).
        seed, batch_size: as for the Auditor; the batch size fixes the random draws, so it is
            never picked automatically here.
        chunk_events: events per chunk, a multiple of the batch size and of 65536.
        max_events: audit only the first N events.
        progress: ``progress(pass_name, done, total, events_per_second)`` after each chunk of
            a pass (chunks done of the total).
        gates: checks computed together in one pass over the chunks when the first is asked.
    """

    def __init__(
        self,
        *,
        model: str,
        device: str,
        uncertainties: UncertaintyModel,
        data: str | Path,
        executor: Executor,
        seed: int = 0,
        batch_size: int = MOMENT_BLOCK,
        chunk_events: int = CHUNK_EVENTS,
        max_events: int | None = None,
        gradient_free: bool = False,
        progress: Callable[[str, int, int, float], None] | None = None,
        gates: Sequence[GateSpec] = (),
    ) -> None:
        from pytest_hepguard.layout import Layout

        if chunk_events % MOMENT_BLOCK or chunk_events % batch_size:
            raise DistributedError(
                f"--hepguard-chunk-events {chunk_events}: must be a multiple of {MOMENT_BLOCK} "
                f"and of the batch size {batch_size}, so that chunks hold whole batches"
            )
        self.uncertainties, self.executor, self.progress = uncertainties, executor, progress
        self.layout = Layout(uncertainties)
        per_event, read = read_args(uncertainties)
        infos = describe_files(data_files(data), needed_columns(per_event, **read), read["tree"])
        self.chunks = plan_chunks(infos, chunk_events, max_events)
        self.n_events = sum(c.n for c in self.chunks)
        self.jobs = [
            Job(model, device, gradient_free, uncertainties, seed, batch_size, c, executor.threads)
            for c in self.chunks
        ]
        self.gates = list(gates)
        self._cache: dict[CheckKey, CheckResult] = {}
        self._failed: DistributedError | None = None
        self._nominal()

    # -- passes ------------------------------------------------------------------------------

    def _pass(
        self, name: str, fn: Callable[..., Any], args: list[tuple[Any, ...]]
    ) -> Iterator[Any]:
        """Results of ``fn`` on every chunk, in chunk order (merged as they come in order)."""
        t0, done, events, pending, nxt = time.perf_counter(), 0, 0, {}, 0
        for i, result in self.executor.map(fn, args, self.chunks):
            done += 1
            events += self.chunks[i].n
            if self.progress is not None:
                self.progress(name, done, len(self.chunks), events / (time.perf_counter() - t0))
            pending[i] = result
            while nxt in pending:
                yield pending.pop(nxt)
                nxt += 1

    def _nominal(self) -> None:
        n_columns = len(self.layout.names)
        stride = max(1, math.ceil(self.n_events / SUBSAMPLE))
        parts = list(
            self._pass("nominal", nominal_pass, [(j, n_columns, stride) for j in self.jobs])
        )
        std = std_from_moments(np.concatenate([p.moments for p in parts]))
        self.feature_std = std
        self.decision = self._decision(parts, n_columns)
        self.class_counts = sum(p.class_counts for p in parts)
        movable_columns = sum(p.n_movable for p in parts) > 0
        self.bins = self._certificate_bins(parts, movable_columns)

    def _decision(self, parts: list[NominalPass], n_columns: int) -> Any:
        """The decision with the whole sample's working-point cut (exactly the one-process cut:
        the fine histogram finds the bins that hold it, their events decide)."""
        unc = self.uncertainties
        decision = parts[0].decision
        wp = unc.decision.working_point
        if wp is None or wp.efficiency is None:
            return decision
        if parts[0].signal_fine is None:
            raise DataError("decision.working_point.efficiency needs labels (data.label)")
        hist = sum(p.signal_fine for p in parts)
        total = float(hist.sum())
        if total <= 0:
            raise DataError("decision.working_point.efficiency: the sample has no signal events")
        lo, hi = window_cut(hist, wp.efficiency)
        values, weights = zip(
            *self._pass("cut", cut_window, [(j, n_columns, lo, hi) for j in self.jobs]),
            strict=True,
        )
        d, w = np.concatenate(values), np.concatenate(weights)
        cut = cut_from_window(hist, lo, hi, d, w, wp.efficiency)
        return decision.at_efficiency(wp.efficiency, cut)

    def _certificate_bins(self, parts: list[NominalPass], columns: np.ndarray) -> CertificateBins:
        rows = np.concatenate([p.rows for p in parts]).astype(np.float64)
        movable = np.concatenate([p.movable for p in parts])
        col_min = np.min([p.col_min for p in parts], axis=0)
        col_max = np.max([p.col_max for p in parts], axis=0)
        keep = np.flatnonzero(columns)
        feature_of = [self.layout.feature_of[j] for j in keep]
        groups: dict[str, list[int]] = {}
        for j, f in zip(keep, feature_of, strict=True):
            groups.setdefault(f, []).append(int(j))
        names, cols, qedges, jedges = [], [], [], []
        bins = self.uncertainties.constraints.jsd_bins
        for name, members in _feature_columns(list(self.layout.names), list(groups.values())):
            values = rows[:, members][movable[:, members]]
            lo, hi = float(col_min[members].min()), float(col_max[members].max())
            inner = np.unique(np.quantile(values, np.linspace(0, 1, CERTIFICATE_BINS + 1)))
            edges = np.unique(np.concatenate([[lo], inner[(inner > lo) & (inner < hi)], [hi]]))
            edges = np.concatenate([edges, [np.nextafter(hi, np.inf)]])
            names.append(name)
            cols.append(tuple(members))
            qedges.append(edges)
            jedges.append(
                np.array([lo - 0.5, hi + 0.5]) if lo == hi else np.linspace(lo, hi, bins + 1)
            )
        centre = np.where(
            movable.any(0), np.where(movable, rows, 0).sum(0) / np.maximum(movable.sum(0), 1), 0
        )
        return CertificateBins(tuple(names), tuple(cols), tuple(qedges), tuple(jedges), centre)

    # -- checks ------------------------------------------------------------------------------

    def _keys(self, attack: str, params: dict[str, object]) -> list[CheckKey]:
        from pytest_hepguard.attacks import check_params

        if attack not in CHUNKED_ATTACKS:
            raise AttackError(
                f"'{attack}' is not available in a chunked audit (--hepguard-dask); it runs "
                f"there: {', '.join(CHUNKED_ATTACKS)}. Run this check without --hepguard-dask "
                "(on --hepguard-events N events) or remove it from the gates"
            )
        keys = [check_key(attack, params)]
        if attack not in ("random", "systematic"):
            keys.append(check_key("random", check_params("random", {"epsilon": params["epsilon"]})))
        return keys

    def _compute(self, keys: list[CheckKey]) -> None:
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if not todo:
            return
        if self._failed is not None:
            raise self._failed
        try:
            self._pass_checks(todo)
        except DistributedError as exc:
            self._failed = exc  # later checks fail with it rather than resubmit every chunk
            raise

    def _pass_checks(self, todo: list[CheckKey]) -> None:
        reference = Reference(0, self.feature_std, self.decision)
        args = [
            (job, replace(reference, offset=job.chunk.start), todo, self.bins) for job in self.jobs
        ]
        merged: ChunkSummaries | None = None
        for part in self._pass("checks", chunk_summaries, args):
            merged = part if merged is None else merged.merge(part)
        assert merged is not None
        self.nominal, self.devices = merged.nominal, merged.devices
        for key in todo:
            attack, params = key[0], dict(key[1])
            if attack == "systematic":
                self._cache[key] = self._systematic(params, merged, key)
        for key in sorted(todo, key=lambda k: k[0] != "random"):
            attack, params = key[0], dict(key[1])
            if attack == "systematic":
                continue
            base = None if attack == "random" else self._cache[self._keys(attack, params)[1]]
            self._cache[key] = self._result(attack, params, merged.checks[key][0], base)

    def _measure(self, attack: str, params: dict[str, object]) -> CheckResult:
        """The numbers of ``attack``; the first call computes every check of ``gates`` in the
        same pass over the chunks."""
        from pytest_hepguard.attacks import check_params

        keys = self._keys(attack, params)
        for gate in self.gates:
            if gate.attack in CHUNKED_ATTACKS:
                keys += self._keys(gate.attack, check_params(gate.attack, dict(gate.params)))
        self._compute(keys)
        return self._cache[check_key(attack, params)]

    def close(self) -> None:
        self.executor.close()

    # -- numbers -----------------------------------------------------------------------------

    def _systematic(
        self, params: dict[str, object], merged: ChunkSummaries, key: CheckKey
    ) -> CheckResult:
        parts, names = merged.checks[key], merged.groups[key]
        variations = [
            (names[i // 2], ("up", "down")[i % 2], self._result("systematic", params, s, None))
            for i, s in enumerate(parts)
        ]
        total = parts[0].sum_w
        rates = [float(f) / total for f in merged.draws[key]]
        result = systematic_result(params, variations, rates, sum(s.seconds for s in parts))
        bounds = [v[2].details["binning"] for v in variations]
        binning = {
            **bounds[0],
            **{k: max(b[k] for b in bounds) for k in ("auc_error_bound", "output_ks_error_bound")},
        }
        return replace(result, details={**result.details, "binning": binning})

    def _result(
        self,
        attack: str,
        params: dict[str, object],
        s: CheckSummary,
        baseline: CheckResult | None,
    ) -> CheckResult:
        nom, pert = self.nominal, s.perturbed
        labelled = self.decision_has_labels
        flips = (
            weighted_rate(s.sum_w_flip, s.sum_w, s.sum_w2, s.n),
            weighted_rate(s.sum_w_flip_correct, s.sum_w_correct, s.sum_w2_correct, s.n_correct)
            if labelled
            else None,
        )
        auc_nom, auc_nom_err = binned_auc(nom.fine_sig, nom.fine_bkg)
        auc_pert, auc_pert_err = binned_auc(pert.fine_sig, pert.fine_bkg)
        ks, ks_err = binned_ks(nom.fine_all, pert.fine_all)
        cut = self.decision.cut if self.decision.uses_cut else None
        shift = OutputShift(
            auc_nominal=auc_nom,
            auc_perturbed=auc_pert,
            auc_drop=auc_nom - auc_pert,
            output_ks=ks,
            output_wasserstein=math.nan
            if (nom.fine_all < 0).any()
            else binned_wasserstein(nom.fine_all, pert.fine_all),
            mean_shift=(pert.sum_wd - nom.sum_wd) / s.sum_w,
            cut=cut,
            **_working_point(nom, pert, s, cut),
        )
        details: dict[str, object] = {
            "binning": {
                "chunks": len(self.chunks),
                "fine_bins": FINE_BINS,
                "auc_error_bound": max(auc_nom_err, auc_pert_err),
                "output_ks_error_bound": ks_err,
            }
        }
        failures = list(s.failures)
        if attack == "hidden":
            details.update(self._hidden_details(params, s, failures))
        totals = _Perturbed(
            np.empty((0, 0)),
            s.max_disp,
            s.sum_abs_disp,
            s.n_movable,
            s.n_moved,
            s.violations,
            s.zero_gradient,
            s.seconds,
            failures=tuple(failures),
            warnings=tuple(s.warnings),
        )
        return build_result(
            attack,
            params,
            n_events=s.n,
            flips=flips,
            baseline=baseline,
            shift=shift,
            pert=totals,
            feature_of=self.layout.feature_of,
            histograms=self._histograms(nom, pert),
            rocs=(
                binned_roc(nom.fine_sig, nom.fine_bkg) if labelled else None,
                binned_roc(pert.fine_sig, pert.fine_bkg) if labelled else None,
            ),
            device=", ".join(sorted(self.devices)),
            details=details,
        )

    @property
    def decision_has_labels(self) -> bool:
        return self.uncertainties.data.label is not None

    def _histograms(self, nom: Side, pert: Side) -> dict[str, object]:
        if self.decision_has_labels:
            names = self.uncertainties.decision.classes or tuple(
                f"class {i}" for i in range(len(self.class_counts))
            )
        else:
            names = ("all events",)
        groups = {
            name: {"nominal": nom.report[i].tolist(), "perturbed": pert.report[i].tolist()}
            for i, name in enumerate(names)
            if self.class_counts[i] > 0
        }
        return {"edges": np.linspace(0.0, 1.0, REPORT_BINS + 1).tolist(), "groups": groups}

    def _hidden_details(
        self, params: dict[str, object], s: CheckSummary, failures: list[str]
    ) -> dict[str, object]:
        limits = self.uncertainties.constraints
        if params.get("ks_max") is not None:
            limits = replace(limits, ks_max=params["ks_max"])
        details: dict[str, object] = {
            "direction": params.get("direction", "fool"),
            "candidates": s.candidates,
            "kept": s.kept,
            "constraint": f"enforced per chunk ({len(self.chunks)} chunks), certified merged",
        }
        if s.certificate is not None:
            cert, bound = merged_certificate(s.certificate, self.bins, self.layout.names, limits)
            details["certificate"] = cert.to_dict()
            details["certificate_ks_error_bound"] = bound
            if not cert.passed:
                failures.append(
                    "the merged sample fails the certificate although every chunk passed its "
                    "own constraints: " + "; ".join(cert.violations)
                )
        return details


def _working_point(nom: Side, pert: Side, s: CheckSummary, cut: float | None) -> dict[str, Any]:
    """Efficiency, mistag rate and rejection before and after at the cut (None without one)."""
    out: dict[str, Any] = {}
    for tag, side in (("nominal", nom), ("perturbed", pert)):
        eff = mistag = None
        if cut is not None:
            eff = side.sig_pass / s.sum_w_sig if s.sum_w_sig else math.nan
            mistag = side.bkg_pass / s.sum_w_bkg if s.sum_w_bkg else math.nan
        out[f"efficiency_{tag}"], out[f"mistag_{tag}"] = eff, mistag
        out[f"rejection_{tag}"] = None if mistag is None else rejection(mistag)
    return out
