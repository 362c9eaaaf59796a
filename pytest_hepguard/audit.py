"""The auditor: runs attacks over all events in batches and turns them into check results.

``Auditor(model, events, uncertainties)`` evaluates the nominal sample once, then
``auditor.run("pgd", epsilon=1.0, steps=20)`` perturbs every event on the model's device and
returns a :class:`CheckResult` with the numbers of DESIGN.md "Terms", the random baseline of the
same size beside them.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from pytest_hepguard.attacks import check_params, get_attack
from pytest_hepguard.attacks.base import Sample, SampleAttack
from pytest_hepguard.attacks.systematic import Group, build_groups, correlated_shift
from pytest_hepguard.batching import CPU_BATCH, auto_batch_size
from pytest_hepguard.decision import Decision
from pytest_hepguard.envelope import Envelope, feature_std
from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import AttackError, DataError
from pytest_hepguard.layout import Layout
from pytest_hepguard.metrics import (
    OutputShift,
    Rate,
    discriminant_histograms,
    fooling_rate,
    output_shift,
    radius_summary,
    roc_points,
)
from pytest_hepguard.models.base import Model
from pytest_hepguard.preprocess import frozen_by_preprocess
from pytest_hepguard.templates import Templates
from pytest_hepguard.uncertainties import GATE_LIMITS, GateSpec, PyhfSpec, UncertaintyModel

#: Share of events with a zero input gradient above which a check warns of gradient masking.
GRADIENT_MASKING_WARN = 0.10


@dataclass
class CheckResult:
    """The numbers of one check (one attack at one size over the whole sample).

    Rates are fractions (0..1) with binomial errors; displacements are in sigmas per feature.
    """

    name: str
    attack: str
    params: dict[str, object]
    n_events: int
    fooling_rate: float
    fooling_rate_err: float
    n_correct: int
    fooling_rate_correct: float
    fooling_rate_correct_err: float
    random_fooling_rate: float
    random_fooling_rate_err: float
    random_fooling_rate_correct: float
    auc_nominal: float
    auc_perturbed: float
    auc_drop: float
    output_ks: float
    output_wasserstein: float
    mean_shift: float
    cut: float | None
    efficiency_nominal: float | None
    efficiency_perturbed: float | None
    efficiency_change: float | None
    mistag_nominal: float | None
    mistag_perturbed: float | None
    rejection_nominal: float | None
    rejection_perturbed: float | None
    max_displacement_sigma: dict[str, float]
    mean_abs_displacement_sigma: dict[str, float]
    moved_fraction: dict[str, float]
    histograms: dict[str, object]
    roc_nominal: dict[str, list[float]] | None
    roc_perturbed: dict[str, list[float]] | None
    envelope_violations: int
    zero_gradient_fraction: float | None
    seconds: float
    device: str
    limits: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: what an attack reports beyond the common numbers: the hidden attack's certificate, the
    #: systematic variations, the worst-case cascade, the radius distribution, the scan table.
    details: dict[str, object] = field(default_factory=dict)
    #: pyhf_impact: relative growth of the POI's fit uncertainty from the hepguard nuisance
    #: parameters (0.1 = 10 %); None for every other check
    mu_uncertainty_increase: float | None = None

    @property
    def passed(self) -> bool:
        """True when no limit is exceeded and the perturbation stayed inside its envelope."""
        return not self.failures

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict (NaN and inf become None)."""
        out = {k: _plain(v) for k, v in asdict(self).items()}
        out["passed"] = self.passed
        return out


def _plain(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class _Perturbed:
    """What a pass over all events leaves: probabilities and displacement statistics."""

    probs: np.ndarray  # [n, n_classes]
    max_disp: np.ndarray  # [n_features] max |delta| in sigmas
    sum_abs_disp: np.ndarray  # [n_features] sum of |delta| over movable entries
    n_movable: np.ndarray  # [n_features]
    n_moved: np.ndarray  # [n_features]
    violations: int
    zero_gradient: int | None
    seconds: float
    rows: np.ndarray | None = None  # [n, n_features] perturbed rows, kept when asked for
    details: dict[str, object] = field(default_factory=dict)
    failures: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


#: A check's identity: its attack and complete parameters, sorted.
CheckKey = tuple[str, tuple[tuple[str, object], ...]]


def check_key(attack: str, params: dict[str, object]) -> CheckKey:
    """The key a check's numbers are kept under: one run per session for the same key."""
    return attack, tuple(sorted(params.items()))


@dataclass(frozen=True)
class Reference:
    """What an auditor of one chunk of a larger sample takes from the whole sample (a chunked
    audit, :mod:`pytest_hepguard.distributed`): the chunk's first event in the whole sample
    (random draws are keyed to global batch positions), the ``std`` envelopes' standard
    deviations [n_features] and the decision with the working-point cut of the whole sample."""

    offset: int
    feature_std: np.ndarray
    decision: Decision | None  # None: the chunk's own (no working-point cut of the whole)


class CheckRunner:
    """``run`` and ``run_gate`` of an auditor: each check is measured once per session
    (``_measure``), then named and judged against its gate's limits."""

    def _measure(self, attack: str, params: dict[str, object]) -> CheckResult:
        raise NotImplementedError

    def _params(self, attack: str, params: dict[str, object]) -> dict[str, object]:
        """The complete parameters the check runs with."""
        return params

    def _ran(self, name: str, attack: str, params: dict[str, object]) -> None:
        """Called after a check was run under ``name``."""

    def run(
        self,
        attack: str,
        *,
        name: str | None = None,
        limits: dict[str, float] | None = None,
        **params: object,
    ) -> CheckResult:
        """Run ``attack`` with ``params`` (``epsilon`` in sigmas, ...) over every event.

        ``limits`` (keys of ``GATE_LIMITS``) turn the check into a gate: exceeded limits are
        listed in ``result.failures``. An identical attack (same parameters) runs once per
        session; later calls reuse its numbers under their own name and limits.
        """
        params = self._params(attack, check_params(attack, params))
        measured = self._measure(attack, params)
        result = replace(
            measured,
            name=name or attack,
            limits=dict(limits or {}),
            failures=list(measured.failures),
            warnings=list(measured.warnings),
        )
        judge(result)
        self._ran(result.name, attack, params)
        return result

    def run_gate(self, gate: GateSpec) -> CheckResult:
        """Run one ``gates:`` entry of the uncertainty file."""
        return self.run(gate.attack, name=gate.name, limits=gate.limits, **gate.params)


class Auditor(CheckRunner):
    """Audits one model on one sample under one uncertainty model.

    Args:
        model: the wrapped model; its device is where every attack runs.
        events: the sample, features in ``uncertainties.feature_names`` order.
        uncertainties: the validated uncertainty file.
        seed: base seed; every check derives its own from it and its name, so the same seed
            gives the same numbers whatever the order the checks run in.
        batch_size: events per attack batch; None picks it (:mod:`pytest_hepguard.batching`:
            65536 on a CPU, measured to fill a GPU).
        progress: called after every batch of an attack as ``progress(attack, done, total)``
            (events); the plugin draws a progress bar with it.
        on_perturbed: called once per check name as ``on_perturbed(name, rows, nominal,
            perturbed)`` with the perturbed rows [n, n_features] and the nominal and perturbed
            class probabilities [n, n_classes] (``--hepguard-save-perturbed``); the perturbed
            rows of each check are kept in memory only when it is given.
        reference: for a chunk of a larger sample, its position and what the whole sample
            fixes (None: the events are the whole sample).
    """

    def __init__(
        self,
        model: Model,
        events: Events,
        uncertainties: UncertaintyModel,
        *,
        seed: int = 0,
        batch_size: int | None = CPU_BATCH,
        progress: Callable[[str, int, int], None] | None = None,
        on_perturbed: Callable[[str, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
        reference: Reference | None = None,
    ) -> None:
        self.layout = layout = Layout(uncertainties)
        events = layout.flatten(events)
        if events.feature_names != layout.names:
            raise DataError(
                f"{events.source}: columns {list(events.feature_names)} do not match the "
                f"uncertainty file's features {list(layout.names)}"
            )
        self.model, self.events, self.uncertainties = model, events, uncertainties
        self.seed = int(seed)
        self.offset = 0 if reference is None else int(reference.offset)
        self.progress = progress
        self.device = model.device
        model.bind(layout)
        n_probe = min(len(events), 256)
        model.probe(self._batch(0, n_probe), uncertainties.decision.output)
        self.batch_size = (
            auto_batch_size(model, self._batch(0, min(len(events), 4096)), len(events))
            if batch_size is None
            else int(batch_size)
        )
        self.labels = self._check_labels(events, model.n_classes)
        padded = (
            layout.padded(torch.from_numpy(events.features)).numpy() if layout.multi_input else None
        )
        std = (
            feature_std(events.features, layout.specs, layout.feature_of, padded)
            if reference is None
            else reference.feature_std
        )
        self.envelope = Envelope(
            layout.specs,
            std,
            self.device,
            padding=layout.padded if layout.multi_input else None,
        )
        self.feature_std = std
        raw = torch.from_numpy(self._forward_all())
        model.detect_output(raw, uncertainties.decision.output)
        decision = Decision.resolve(uncertainties.decision, model.n_classes, model.output_kind)
        nominal = model.probabilities(raw).numpy()
        disc = decision.discriminant_of(torch.from_numpy(nominal)).numpy()
        if reference is None:
            decision = decision.with_efficiency_cut(
                uncertainties.decision, disc, self.labels, events.weights
            )
        elif reference.decision is not None:
            decision = reference.decision
        self.decision = decision
        frozen = frozen_by_preprocess(uncertainties)
        if frozen:
            note = f"frozen (in preprocess.json, no envelope declared): {', '.join(frozen)}"
            self.decision = replace(self.decision, assumptions=(*self.decision.assumptions, note))
        self.nominal_probs = nominal
        self.nominal_disc = disc
        self.nominal_decisions = self.decision.decide(torch.from_numpy(nominal)).numpy()
        self.correct = (
            None
            if self.labels is None
            else self.decision.correct(self.nominal_decisions, self.labels)
        )
        self._cache: dict[CheckKey, CheckResult] = {}
        self.on_perturbed = on_perturbed
        self.keep_rows = on_perturbed is not None
        #: perturbed rows [n, n_features] and probabilities [n, n_classes] per check key
        self._rows_of: dict[CheckKey, tuple[np.ndarray, np.ndarray]] = {}
        self._saved: set[str] = set()
        #: perturbed probabilities [n, n_classes] per check key (templates are built from them)
        self._probs_of: dict[CheckKey, np.ndarray] = {}
        self._templates: dict[PyhfSpec, tuple[Templates, dict[tuple[str, str], CheckResult]]] = {}

    # -- data movement -------------------------------------------------------------------------

    def _batch(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(self.events.features[start:stop]).to(self.device)

    def _batches(self) -> range:
        return range(0, len(self.events), self.batch_size)

    @staticmethod
    def _check_labels(events: Events, n_classes: int) -> np.ndarray | None:
        labels = events.labels
        if labels is None:
            return None
        bad = (labels < 0) | (labels >= n_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{events.source}: label {int(labels[i])} (event {i}) is not a class of the model, "
                f"which has {n_classes} classes (labels 0..{n_classes - 1})"
            )
        return labels

    def _attack_labels(self, start: int, stop: int, nominal: np.ndarray) -> torch.Tensor:
        """True labels where known, else the nominal argmax class."""
        lab = self.labels[start:stop] if self.labels is not None else nominal.argmax(1)
        return torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int64)).to(self.device)

    def _forward_all(self) -> np.ndarray:
        """Raw model outputs [n_events, n_outputs] on the nominal sample."""
        return np.concatenate(
            [
                self.model.score(self._batch(s, s + self.batch_size)).cpu().numpy()
                for s in self._batches()
            ]
        )

    # -- checks --------------------------------------------------------------------------------

    def _generator(self, key: str, start: int = 0) -> torch.Generator:
        """The generator of ``key`` for the events from local index ``start``: keyed to their
        position in the whole sample, so that a chunked audit draws what one process draws."""
        at = self.offset + start
        if at:
            key = f"{key}@{at}"
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
        return gen

    def _sample(self) -> Sample:
        """The whole nominal sample, for attacks whose constraints span every event."""
        labels = self.labels if self.labels is not None else self.nominal_probs.argmax(1)
        return Sample(
            x0=torch.from_numpy(self.events.features),
            labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            nominal_decisions=torch.from_numpy(self.nominal_decisions),
            decision=self.decision,
            envelope=self.envelope,
            feature_of=tuple(self.layout.feature_of),
            names=tuple(self.layout.names),
            constraints=self.uncertainties.constraints,
            batch_size=self.batch_size,
            device=self.device,
        )

    def _perturb_all(self, attack_name: str, params: dict[str, object]) -> _Perturbed:
        """Run one attack over every event (batch by batch, or on the whole sample for the
        attacks that need it) and gather what the metrics need."""
        attack = get_attack(attack_name, params)
        key = f"{attack_name}:{sorted(params.items())}"
        self._sync()
        t0 = time.perf_counter()
        if isinstance(attack, SampleAttack):
            sample = self._sample()
            if self.progress is not None:
                progress = self.progress
                sample.progress = lambda done, total: progress(attack_name, done, total)
            whole = attack.perturb_sample(self.model, sample, self._generator(key))
            pairs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = (
                (self._batch(s, s + self.batch_size), self._rows(whole.x, s), None)
                for s in self._batches()
            )
            out = self._accumulate(pairs, float(params["epsilon"]), None, t0)
            return replace(
                out,
                details=whole.details,
                failures=tuple(whole.failures),
                warnings=tuple(whole.warnings),
            )

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
            for s in self._batches():
                x0 = self._batch(s, s + self.batch_size)
                labels = self._attack_labels(s, s + len(x0), self.nominal_probs[s : s + len(x0)])
                pert = attack.perturb(
                    self.model, x0, labels, self.envelope, self._generator(key, s)
                )
                yield x0, pert.x, pert.zero_gradient

        return self._accumulate(batches(), float(params["epsilon"]), attack_name, t0)

    def _rows(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return x[start : start + self.batch_size].to(self.device)

    def _accumulate(
        self,
        pairs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
        epsilon: float | None,
        progress_name: str | None,
        t0: float,
    ) -> _Perturbed:
        """Probabilities and displacement statistics of perturbed batches ``(x0, x,
        zero_gradient)``; entries outside the envelope of size ``epsilon`` are counted (not
        for group shifts, ``epsilon=None``, which have their own sigmas)."""
        nf = len(self.envelope.names)
        max_disp = torch.zeros(nf, device=self.device)
        sum_abs = torch.zeros(nf, device=self.device, dtype=torch.float64)
        n_movable = torch.zeros(nf, device=self.device, dtype=torch.long)
        n_moved = torch.zeros(nf, device=self.device, dtype=torch.long)
        violations = torch.zeros((), device=self.device, dtype=torch.long)
        zero_grad: torch.Tensor | None = None
        probs, rows = [], []
        done = 0
        for x0, x, masked in pairs:
            with torch.no_grad():
                probs.append(self.model.probabilities(self.model.score(x)).cpu())
                if self.keep_rows:
                    rows.append(x.cpu())
                delta = self.envelope.in_sigmas(x0, x).abs()
                movable = self.envelope.movable(x0)
                max_disp = torch.maximum(max_disp, delta.amax(0))
                sum_abs += torch.where(movable, delta, 0.0).sum(0, dtype=torch.float64)
                n_movable += movable.sum(0)
                n_moved += (x != x0).sum(0)
                if epsilon is not None:
                    violations += (~self.envelope.contains(x0, x, epsilon)).sum()
                if masked is not None:
                    zero_grad = masked.sum() if zero_grad is None else zero_grad + masked.sum()
            done += len(x0)
            if self.progress is not None and progress_name is not None:
                self.progress(progress_name, done, len(self.events))
        self._sync()
        return _Perturbed(
            torch.cat(probs).numpy(),
            max_disp.cpu().numpy(),
            sum_abs.cpu().numpy(),
            n_movable.cpu().numpy(),
            n_moved.cpu().numpy(),
            int(violations),
            None if zero_grad is None else int(zero_grad),
            time.perf_counter() - t0,
            rows=torch.cat(rows).numpy() if rows else None,
        )

    def _groups(self) -> dict[str, np.ndarray]:
        """Event masks per true class (for histograms), or all events without labels."""
        if self.labels is None:
            return {"all events": np.ones(len(self.events), dtype=bool)}
        names = self.uncertainties.decision.classes or tuple(
            f"class {i}" for i in range(self.model.n_classes)
        )
        return {name: self.labels == i for i, name in enumerate(names)}

    def _roc(self, disc: np.ndarray) -> dict[str, list[float]] | None:
        """ROC of the discriminant, signal vs background labels (None without both)."""
        if self.labels is None:
            return None
        both = self.decision.is_signal(self.labels) | self.decision.is_background(self.labels)
        w = None if self.events.weights is None else self.events.weights[both]
        return roc_points(disc[both], self.decision.is_signal(self.labels)[both], w)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _measure(self, attack: str, params: dict[str, object]) -> CheckResult:
        """The numbers of ``attack`` with complete ``params``, computed once per session.

        Gradient attacks get the Gaussian-noise check of the same epsilon as their baseline;
        that check is its own baseline. ``systematic`` and ``scan`` are made of other checks.
        """
        key = check_key(attack, params)
        if key not in self._cache:
            if attack == "systematic":
                self._cache[key] = self._systematic(params)
            elif attack == "scan":
                self._cache[key] = self._scan(params)
            elif attack == "landscape":
                self._cache[key] = self._landscape(params)
            elif attack == "pyhf_impact":
                from pytest_hepguard.variations import impact_check

                self._cache[key] = impact_check(self)
            else:
                noise = check_params("random", {"epsilon": params["epsilon"]})
                baseline = (
                    None
                    if (attack, params) == ("random", noise)
                    else self._measure("random", noise)
                )
                pert = self._perturb_all(attack, params)
                self._probs_of[key] = pert.probs
                if pert.rows is not None:
                    self._rows_of[key] = (pert.rows, pert.probs)
                self._cache[key] = self._result(attack, params, pert, baseline)
        return self._cache[key]

    def _params(self, attack: str, params: dict[str, object]) -> dict[str, object]:
        if not self.model.differentiable and params.get("gradient") == "exact":
            # a forward-only model (--hepguard-gradient-free): the user opted in to estimates
            return check_params(attack, {**params, "gradient": "spsa"})
        return params

    def _ran(self, name: str, attack: str, params: dict[str, object]) -> None:
        self._save(name, check_key(attack, params))

    def _save(self, name: str, key: CheckKey) -> None:
        """Hand the perturbed sample of check ``name`` to ``on_perturbed`` (once per name)."""
        saved = self._rows_of.get(key)
        if self.on_perturbed is None or saved is None or name in self._saved:
            return
        self._saved.add(name)
        rows, perturbed = saved
        self.on_perturbed(name, rows, self.nominal_probs, perturbed)

    def perturbed(self, attack: str, **params: object) -> tuple[CheckResult, np.ndarray]:
        """The numbers of a (non-composite) check and its perturbed class probabilities
        [n_events, n_classes], run once per session like :meth:`run`."""
        params = check_params(attack, params)
        result = self._measure(attack, params)
        return result, self._probs_of[check_key(attack, params)]

    def discriminant(self, probs: np.ndarray) -> np.ndarray:
        """The decision's discriminant [n] of class probabilities [n, n_classes]."""
        return self.decision.discriminant_of(torch.from_numpy(probs)).numpy()

    def group_names(self) -> list[str]:
        """The nuisance groups the systematic variations move: ``groups:`` of the uncertainty
        file, or each movable feature its own group."""
        return [g.name for g in self.nuisance_groups()]

    def group_shift(self, group: str, theta: float) -> tuple[CheckResult, np.ndarray]:
        """Group ``group`` shifted coherently by ``theta`` sigmas of its parameter: the numbers
        and the perturbed class probabilities [n_events, n_classes]."""
        by_name = {g.name: g for g in self.nuisance_groups()}
        pert = self._shifted(lambda s, x0, g=by_name[group]: g.shift(x0, theta))
        params = {"epsilon": abs(theta), "group": group, "shift": "up" if theta > 0 else "down"}
        return self._result("systematic", params, pert), pert.probs

    def templates(self) -> tuple[Templates, dict[tuple[str, str], CheckResult]]:
        """The pyhf templates of the uncertainty file's ``pyhf:`` section, built once
        (see :func:`pytest_hepguard.variations.nuisance_templates`)."""
        from pytest_hepguard.variations import nuisance_templates

        spec = self.uncertainties.pyhf
        if spec not in self._templates:
            self._templates[spec] = nuisance_templates(self, spec)
        return self._templates[spec]

    # -- composite checks ----------------------------------------------------------------------

    def nuisance_groups(self) -> list[Group]:
        groups = build_groups(
            self.uncertainties.groups,
            self.layout.specs,
            self.layout.feature_of,
            self.feature_std,
            self.device,
            self.layout.padded if self.layout.multi_input else None,
        )
        if not groups:
            raise AttackError("systematic: no feature can move (every feature is frozen)")
        return groups

    def _shifted(self, shift: Callable[[int, torch.Tensor], torch.Tensor]) -> _Perturbed:
        """Statistics of the sample moved by ``shift(start, x0)`` batch by batch."""
        t0 = time.perf_counter()
        pairs = (
            (x0, shift(s, x0), None)
            for s in self._batches()
            for x0 in (self._batch(s, s + self.batch_size),)
        )
        return self._accumulate(pairs, None, None, t0)

    def _systematic(self, params: dict[str, object]) -> CheckResult:
        """Each group at +-epsilon sigmas, and correlated draws of every group at once; the
        check's numbers are those of the variation with the highest fooling rate."""
        eps = float(params["epsilon"])
        t0 = time.perf_counter()
        groups = self.nuisance_groups()
        variations = []
        for group in groups:
            for sign, label in ((1.0, "up"), (-1.0, "down")):
                pert = self._shifted(lambda s, x0, g=group, t=sign * eps: g.shift(x0, t))
                variations.append((group.name, label, self._result("systematic", params, pert)))
        rates = [
            fooling_rate(self.nominal_decisions, decisions, self.events.weights).value
            for decisions in self.correlated_decisions(groups, int(params["draws"]), eps)
        ]
        return systematic_result(params, variations, rates, time.perf_counter() - t0)

    def correlated_decisions(
        self, groups: list[Group], draws: int, eps: float
    ) -> Iterator[np.ndarray]:
        """Decisions [n_events] of ``draws`` samples with theta ~ N(0, C) * eps for all groups
        at once (one theta per sample, or per event for per-event groups)."""
        n_groups = len(groups)
        corr = (
            np.asarray(self.uncertainties.group_correlation())
            if self.uncertainties.groups
            else np.eye(n_groups)
        )
        vals, vecs = np.linalg.eigh(corr)
        root = torch.as_tensor(vecs * np.sqrt(np.clip(vals, 0, None)), dtype=torch.float32)
        per_event = torch.tensor([g.per_event for g in groups])
        key = f"systematic-draws:{eps}"
        z_samples = torch.randn(draws, n_groups, generator=self._generator(key, -self.offset))
        for d in range(draws):

            def theta(s: int, x0: torch.Tensor, d: int = d) -> torch.Tensor:
                gen = self._generator(f"{key}:{d}", s)
                z = torch.randn(len(x0), n_groups, generator=gen, device=self.device)
                z = torch.where(per_event.to(self.device), z, z_samples[d].to(self.device))
                th = eps * z @ root.to(self.device).T
                return correlated_shift(groups, x0, th)

            pert = self._shifted(theta)
            yield self.decision.decide(torch.from_numpy(pert.probs)).numpy()

    def _scan(self, params: dict[str, object]) -> CheckResult:
        """The hidden attack over a grid of epsilon x ks_max beside random noise and PGD; the
        check's numbers are those of the certified hidden result with the highest fooling
        rate."""
        rows, certified = [], []
        for eps in params["epsilons"]:  # type: ignore[union-attr]
            noise = self._measure("random", check_params("random", {"epsilon": eps}))
            pgd = self._measure(
                "pgd", check_params("pgd", {"epsilon": eps, "steps": params["steps"]})
            )
            for ks in params["ks_max"]:  # type: ignore[union-attr]
                hidden = self._measure(
                    "hidden",
                    check_params(
                        "hidden", {"epsilon": eps, "steps": params["steps"], "ks_max": ks}
                    ),
                )
                valid = not hidden.failures
                rows.append(
                    {
                        "epsilon": eps,
                        "ks_max": ks,
                        "hidden_fooling_rate": hidden.fooling_rate if valid else None,
                        "hidden_fooling_rate_err": hidden.fooling_rate_err if valid else None,
                        "certified": valid,
                        "random_fooling_rate": noise.fooling_rate,
                        "pgd_fooling_rate": pgd.fooling_rate,
                    }
                )
                if valid:
                    certified.append(hidden)
        if not certified:
            raise AttackError(
                "scan: no hidden perturbation of the grid satisfies the constraints; widen "
                "ks_max or epsilons"
            )
        best = max(certified, key=lambda r: r.fooling_rate)
        return replace(
            best,
            attack="scan",
            params=dict(params),
            details={**best.details, "scan": rows},
        )

    def _landscape(self, params: dict[str, object]) -> CheckResult:
        """The loss of the true label along the adversarial direction, random directions and
        each nuisance group over [-span, span] sigmas, with the sharpness within epsilon; the
        check's other numbers are those of FGSM at epsilon (the adversarial direction at
        t = epsilon)."""
        from pytest_hepguard.landscape import loss_curves

        eps, span, points = float(params["epsilon"]), float(params["span"]), int(params["points"])
        if not self.model.differentiable:
            raise AttackError(
                "landscape: the adversarial direction needs input gradients; this model runs "
                "forward only (--hepguard-gradient-free)"
            )
        if points % 2 == 0 or points < 3:
            raise AttackError(
                f"landscape: points must be odd and >= 3 (0 on the grid), got {points}"
            )
        t0 = time.perf_counter()
        fgsm = self._measure("fgsm", check_params("fgsm", {"epsilon": eps}))
        labels = self.labels if self.labels is not None else self.nominal_probs.argmax(1)
        weights = self.events.weights
        curves = loss_curves(
            self.model,
            self.decision,
            torch.from_numpy(self.events.features),
            torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            self.envelope,
            ts=np.linspace(-span, span, points).round(9).tolist(),
            groups=self.nuisance_groups(),
            weights=None if weights is None else torch.from_numpy(weights),
            class_names=list(
                self.uncertainties.decision.classes
                or (f"class {i}" for i in range(self.model.n_classes))
            ),
            random_draws=int(params["draws"]),
            generator=self._generator(f"landscape:{sorted(params.items())}"),
            batch_size=self.batch_size,
        )
        return replace(
            fgsm,
            attack="landscape",
            params=dict(params),
            seconds=time.perf_counter() - t0,
            details={
                "landscape": {
                    "epsilon": eps,
                    "curves": [{**c.to_dict(), "sharpness": c.sharpness(eps)} for c in curves],
                }
            },
        )

    # -- numbers -------------------------------------------------------------------------------

    def _result(
        self,
        attack: str,
        params: dict[str, object],
        pert: _Perturbed,
        baseline: CheckResult | None = None,
    ) -> CheckResult:
        """The :class:`CheckResult` of a perturbed sample; ``baseline`` (random noise of the
        same size) gives the random fooling rates beside it (itself when None)."""
        w = self.events.weights
        probs = torch.from_numpy(pert.probs)
        disc = self.decision.discriminant_of(probs).numpy()
        decisions = self.decision.decide(probs).numpy()
        flip_all = fooling_rate(self.nominal_decisions, decisions, w)
        if self.correct is not None:
            flip_correct = fooling_rate(self.nominal_decisions, decisions, w, mask=self.correct)
            is_sig = self.decision.is_signal(self.labels)
            is_bkg = self.decision.is_background(self.labels)
        else:
            flip_correct = None
            is_sig = is_bkg = np.zeros(len(disc), dtype=bool)
        return build_result(
            attack,
            params,
            n_events=len(self.events),
            flips=(flip_all, flip_correct),
            baseline=baseline,
            shift=output_shift(self.nominal_disc, disc, is_sig, is_bkg, w, self.decision.cut),
            pert=pert,
            feature_of=self.layout.feature_of,
            histograms=discriminant_histograms(self.nominal_disc, disc, self._groups(), w),
            rocs=(self._roc(self.nominal_disc), self._roc(disc)),
            device=str(self.device),
            details=self._details(pert.details),
        )

    def _details(self, details: dict[str, object]) -> dict[str, object]:
        """An attack's extra numbers made JSON-ready: per-event radii become their
        distribution per class."""
        radius = details.get("radius")
        if not isinstance(radius, np.ndarray):
            return dict(details)
        groups = {"all events": np.ones(len(radius), dtype=bool), **self._groups()}
        return {**details, "radius": radius_summary(radius, groups, self.events.weights)}


def build_result(
    attack: str,
    params: dict[str, object],
    *,
    n_events: int,
    flips: tuple[Rate, Rate | None],
    baseline: CheckResult | None,
    shift: OutputShift,
    pert: _Perturbed,
    feature_of: Sequence[str],
    histograms: dict[str, object],
    rocs: tuple[dict[str, list[float]] | None, dict[str, list[float]] | None],
    device: str,
    details: dict[str, object],
) -> CheckResult:
    """A :class:`CheckResult` from its parts: the fooling rates over all events and over the
    correctly classified ones (None without labels), the random-noise check beside it
    (``baseline``; None: it is its own), the output shift, the displacement statistics of
    ``pert`` (pooled per feature of ``feature_of``), the report's histograms and ROCs."""
    flip_all, flip_correct = flips
    ref = baseline
    names, max_disp, sum_abs, n_movable, n_moved, size = per_feature(feature_of, pert)
    mean_abs = np.divide(sum_abs, np.maximum(n_movable, 1))
    eff_change = (
        None
        if shift.efficiency_nominal is None
        else shift.efficiency_perturbed - shift.efficiency_nominal
    )
    correct = math.nan if flip_correct is None else flip_correct.value
    return CheckResult(
        name=attack,
        attack=attack,
        params=dict(params),
        n_events=n_events,
        fooling_rate=flip_all.value,
        fooling_rate_err=flip_all.error,
        n_correct=0 if flip_correct is None else flip_correct.n,
        fooling_rate_correct=correct,
        fooling_rate_correct_err=math.nan if flip_correct is None else flip_correct.error,
        random_fooling_rate=flip_all.value if ref is None else ref.fooling_rate,
        random_fooling_rate_err=flip_all.error if ref is None else ref.fooling_rate_err,
        random_fooling_rate_correct=correct if ref is None else ref.fooling_rate_correct,
        auc_nominal=shift.auc_nominal,
        auc_perturbed=shift.auc_perturbed,
        auc_drop=shift.auc_drop,
        output_ks=shift.output_ks,
        output_wasserstein=shift.output_wasserstein,
        mean_shift=shift.mean_shift,
        cut=shift.cut,
        efficiency_nominal=shift.efficiency_nominal,
        efficiency_perturbed=shift.efficiency_perturbed,
        efficiency_change=eff_change,
        mistag_nominal=shift.mistag_nominal,
        mistag_perturbed=shift.mistag_perturbed,
        rejection_nominal=shift.rejection_nominal,
        rejection_perturbed=shift.rejection_perturbed,
        max_displacement_sigma=dict(zip(names, map(float, max_disp), strict=True)),
        mean_abs_displacement_sigma=dict(zip(names, map(float, mean_abs), strict=True)),
        moved_fraction={
            n: float(m) / (n_events * k) for n, m, k in zip(names, n_moved, size, strict=True)
        },
        histograms=histograms,
        roc_nominal=rocs[0],
        roc_perturbed=rocs[1],
        envelope_violations=pert.violations,
        zero_gradient_fraction=(
            None if pert.zero_gradient is None else pert.zero_gradient / n_events
        ),
        seconds=pert.seconds,
        device=device,
        failures=list(pert.failures),
        warnings=list(pert.warnings),
        details=details,
    )


def per_feature(
    feature_of: Sequence[str], pert: _Perturbed
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The displacement statistics of ``pert`` per feature: a multi-input model's row entries
    of one feature (its constituents, ``feature_of`` names the feature of each row entry)
    pooled (max of the maxima, sums of the rest). Returns names, max, sum of |delta|, movable
    count, moved count, and the number of row entries of each feature."""
    order = list(dict.fromkeys(feature_of))
    index = np.array([order.index(f) for f in feature_of])
    max_disp = np.zeros(len(order))
    np.maximum.at(max_disp, index, pert.max_disp)

    def pooled(values: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=values, minlength=len(order))

    size = np.bincount(index, minlength=len(order))
    return (
        order,
        max_disp,
        pooled(pert.sum_abs_disp),
        pooled(pert.n_movable),
        pooled(pert.n_moved),
        size,
    )


def systematic_result(
    params: dict[str, object],
    variations: list[tuple[str, str, CheckResult]],
    rates: list[float],
    seconds: float,
) -> CheckResult:
    """The ``systematic`` check from its variations ``(group, up/down, result)`` and the
    fooling rates of its correlated draws: the numbers of the variation with the highest
    fooling rate, the draws' mean as its random baseline."""
    name, label, worst = max(variations, key=lambda v: v[2].fooling_rate)
    mean = float(np.mean(rates))
    return replace(
        worst,
        seconds=seconds,
        random_fooling_rate=mean,
        random_fooling_rate_err=float(np.std(rates, ddof=1)) if len(rates) > 1 else 0.0,
        random_fooling_rate_correct=math.nan,
        details={
            "worst_variation": f"{name} {label}",
            "variations": [
                {"group": g, "shift": lab, **_variation_numbers(r)} for g, lab, r in variations
            ],
            "correlated": {
                "draws": len(rates),
                "fooling_rate_mean": mean,
                "fooling_rate_max": float(np.max(rates)),
                "fooling_rates": [float(r) for r in rates],
            },
        },
    )


#: The numbers of one systematic variation in the report's table.
VARIATION_NUMBERS = (
    "fooling_rate",
    "fooling_rate_err",
    "fooling_rate_correct",
    "auc_perturbed",
    "auc_drop",
    "output_ks",
    "mean_shift",
    "efficiency_change",
    "mistag_perturbed",
)


def _variation_numbers(result: CheckResult) -> dict[str, object]:
    return {key: getattr(result, key) for key in VARIATION_NUMBERS}


def judge(result: CheckResult) -> None:
    """Fill ``failures`` from the limits and ``warnings`` from the sanity checks."""
    if result.envelope_violations:
        result.failures.append(
            f"{result.envelope_violations} perturbed entries left the envelope (a hepguard bug: "
            "please report it)"
        )
    for key, limit in result.limits.items():
        metric = GATE_LIMITS[key]
        value = getattr(result, metric)
        if value is None or not math.isfinite(value):
            result.failures.append(
                f"{key} cannot be checked: {metric} is not available (it needs labels with "
                "signal and background events, or a working point)"
            )
            continue
        if abs(value) > limit:
            result.failures.append(f"{metric} {value:.4g} exceeds {key} {limit:g}")
    if result.params.get("gradient") == "spsa":
        result.warnings.append(
            f"weaker attack: the gradient is estimated from {result.params['spsa_directions']} "
            "random directions (SPSA, forward passes only), so the fooling rate is a lower "
            "bound on what an exact-gradient attack finds"
        )
    zg = result.zero_gradient_fraction
    if zg is not None and zg > GRADIENT_MASKING_WARN:
        result.warnings.append(
            f"gradient masking: {zg:.1%} of events have a zero input gradient on every movable "
            "feature, so gradient attacks cannot move them and their fooling rate is a lower "
            "bound (look for saturated outputs, hard thresholds or non-differentiable steps)"
        )
