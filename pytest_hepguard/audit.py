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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from pytest_hepguard.attacks import check_params, get_attack
from pytest_hepguard.decision import Decision
from pytest_hepguard.envelope import Envelope, feature_std
from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import DataError
from pytest_hepguard.layout import Layout
from pytest_hepguard.metrics import (
    discriminant_histograms,
    fooling_rate,
    output_shift,
    roc_points,
)
from pytest_hepguard.models.base import Model
from pytest_hepguard.preprocess import frozen_by_preprocess
from pytest_hepguard.uncertainties import GATE_LIMITS, GateSpec, UncertaintyModel

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


class Auditor:
    """Audits one model on one sample under one uncertainty model.

    Args:
        model: the wrapped model; its device is where every attack runs.
        events: the sample, features in ``uncertainties.feature_names`` order.
        uncertainties: the validated uncertainty file.
        seed: base seed; every check derives its own from it and its name, so the same seed
            gives the same numbers whatever the order the checks run in.
        batch_size: events per attack batch.
        progress: called after every batch of an attack as ``progress(attack, done, total)``
            (events); the plugin draws a progress bar with it.
    """

    def __init__(
        self,
        model: Model,
        events: Events,
        uncertainties: UncertaintyModel,
        *,
        seed: int = 0,
        batch_size: int = 65536,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.layout = layout = Layout(uncertainties)
        events = layout.flatten(events)
        if events.feature_names != layout.names:
            raise DataError(
                f"{events.source}: columns {list(events.feature_names)} do not match the "
                f"uncertainty file's features {list(layout.names)}"
            )
        self.model, self.events, self.uncertainties = model, events, uncertainties
        self.seed, self.batch_size = int(seed), int(batch_size)
        self.progress = progress
        self.device = model.device
        model.bind(layout)
        n_probe = min(len(events), 256)
        model.probe(self._batch(0, n_probe), uncertainties.decision.output)
        self.labels = self._check_labels(events, model.n_classes)
        padded = (
            layout.padded(torch.from_numpy(events.features)).numpy() if layout.multi_input else None
        )
        std = feature_std(events.features, layout.specs, layout.feature_of, padded)
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
        self.decision = decision.with_efficiency_cut(
            uncertainties.decision, disc, self.labels, events.weights
        )
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
        self._cache: dict[tuple[str, tuple[tuple[str, object], ...]], CheckResult] = {}

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

    def _generator(self, key: str) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
        return gen

    def _perturb_all(self, attack_name: str, params: dict[str, object]) -> _Perturbed:
        attack = get_attack(attack_name, params)
        eps = float(params["epsilon"])
        gen = self._generator(f"{attack_name}:{sorted(params.items())}")
        nf = len(self.envelope.names)
        max_disp = torch.zeros(nf, device=self.device)
        sum_abs = torch.zeros(nf, device=self.device, dtype=torch.float64)
        n_movable = torch.zeros(nf, device=self.device, dtype=torch.long)
        n_moved = torch.zeros(nf, device=self.device, dtype=torch.long)
        violations = torch.zeros((), device=self.device, dtype=torch.long)
        zero_grad: torch.Tensor | None = None
        probs = []
        self._sync()
        t0 = time.perf_counter()
        for s in self._batches():
            x0 = self._batch(s, s + self.batch_size)
            labels = self._attack_labels(s, s + len(x0), self.nominal_probs[s : s + len(x0)])
            pert = attack.perturb(self.model, x0, labels, self.envelope, gen)
            with torch.no_grad():
                probs.append(self.model.probabilities(self.model.score(pert.x)).cpu())
                delta = self.envelope.in_sigmas(x0, pert.x).abs()
                movable = self.envelope.movable(x0)
                max_disp = torch.maximum(max_disp, delta.amax(0))
                sum_abs += torch.where(movable, delta, 0.0).sum(0, dtype=torch.float64)
                n_movable += movable.sum(0)
                n_moved += (pert.x != x0).sum(0)
                violations += (~self.envelope.contains(x0, pert.x, eps)).sum()
                if pert.zero_gradient is not None:
                    masked = pert.zero_gradient.sum()
                    zero_grad = masked if zero_grad is None else zero_grad + masked
            if self.progress is not None:
                self.progress(attack_name, s + len(x0), len(self.events))
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
        )

    def _per_feature(
        self, pert: _Perturbed
    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The displacement statistics of ``pert`` per feature: a multi-input model's row
        entries of one feature (its constituents) pooled (max of the maxima, sums of the
        rest). Returns names, max, sum of |delta|, movable count, moved count, and the number
        of row entries of each feature."""
        order = list(dict.fromkeys(self.layout.feature_of))
        index = np.array([order.index(f) for f in self.layout.feature_of])
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
        that check is its own baseline.
        """
        key = (attack, tuple(sorted(params.items())))
        if key not in self._cache:
            noise = check_params("random", {"epsilon": params["epsilon"]})
            baseline = (
                None if (attack, params) == ("random", noise) else self._measure("random", noise)
            )
            self._cache[key] = self._check(attack, params, baseline)
        return self._cache[key]

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
        params = check_params(attack, params)
        if not self.model.differentiable and params.get("gradient") == "exact":
            # a forward-only model (--hepguard-gradient-free): the user opted in to estimates
            params = check_params(attack, {**params, "gradient": "spsa"})
        measured = self._measure(attack, params)
        result = replace(
            measured, name=name or attack, limits=dict(limits or {}), failures=[], warnings=[]
        )
        _judge(result)
        return result

    def run_gate(self, gate: GateSpec) -> CheckResult:
        """Run one ``gates:`` entry of the uncertainty file."""
        return self.run(gate.attack, name=gate.name, limits=gate.limits, **gate.params)

    def _check(
        self, attack: str, params: dict[str, object], baseline: CheckResult | None
    ) -> CheckResult:
        pert = self._perturb_all(attack, params)
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
        shift = output_shift(self.nominal_disc, disc, is_sig, is_bkg, w, self.decision.cut)
        ref = baseline
        names, max_disp, sum_abs, n_movable, n_moved, size = self._per_feature(pert)
        mean_abs = np.divide(sum_abs, np.maximum(n_movable, 1))
        eff_change = (
            None
            if shift.efficiency_nominal is None
            else shift.efficiency_perturbed - shift.efficiency_nominal
        )
        return CheckResult(
            name=attack,
            attack=attack,
            params=dict(params),
            n_events=len(self.events),
            fooling_rate=flip_all.value,
            fooling_rate_err=flip_all.error,
            n_correct=0 if flip_correct is None else flip_correct.n,
            fooling_rate_correct=math.nan if flip_correct is None else flip_correct.value,
            fooling_rate_correct_err=math.nan if flip_correct is None else flip_correct.error,
            random_fooling_rate=flip_all.value if ref is None else ref.fooling_rate,
            random_fooling_rate_err=flip_all.error if ref is None else ref.fooling_rate_err,
            random_fooling_rate_correct=(
                (math.nan if flip_correct is None else flip_correct.value)
                if ref is None
                else ref.fooling_rate_correct
            ),
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
                n: float(m) / (len(self.events) * k)
                for n, m, k in zip(names, n_moved, size, strict=True)
            },
            histograms=discriminant_histograms(self.nominal_disc, disc, self._groups(), w),
            roc_nominal=self._roc(self.nominal_disc),
            roc_perturbed=self._roc(disc),
            envelope_violations=pert.violations,
            zero_gradient_fraction=(
                None if pert.zero_gradient is None else pert.zero_gradient / len(self.events)
            ),
            seconds=pert.seconds,
            device=str(self.device),
        )


def _judge(result: CheckResult) -> None:
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
