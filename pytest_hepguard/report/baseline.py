"""Baselines: a saved report (``--hepguard-save-baseline``) that a later run is compared with
(``--hepguard-compare``), failing when a check got worse by more than a margin
(``--hepguard-compare-fail fooling_rate:0.02,output_ks:10%``); see docs/baselines.md.

Checks are matched by what determines their numbers: ``name``, ``attack`` and ``params``, not
by machine or package versions. The data and uncertainty files and the seed also determine the
numbers, so a baseline made with other ones is compared anyway, with a warning; a different
model file is what a comparison is for, and is only noted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_hepguard.attacks import PARAMETERS
from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.report.schema import validate_report

#: Metrics where a higher value is worse.
HIGHER_IS_WORSE = (
    "fooling_rate",
    "fooling_rate_correct",
    "auc_drop",
    "output_ks",
    "output_wasserstein",
    "mu_uncertainty_increase",
)
#: Metrics that only some checks have (``pyhf_impact``): no row for the others.
ONE_CHECK_METRICS = ("mu_uncertainty_increase",)
#: Signed metrics compared in absolute value: a larger ``|value|`` is worse.
ABS_IS_WORSE = ("mean_shift", "efficiency_change")
#: Metrics where a lower value is worse.
LOWER_IS_WORSE = ("auc_perturbed", "efficiency_perturbed")
#: Every metric ``--hepguard-compare-fail`` accepts, in the order the docs list them.
METRICS = HIGHER_IS_WORSE + ABS_IS_WORSE + LOWER_IS_WORSE
#: Metrics shown in a comparison without ``--hepguard-compare-fail``.
DEFAULT_METRICS = ("fooling_rate", "auc_drop", "output_ks")

#: Row statuses.
REGRESSED = "REGRESSED"
WITHIN = "within margin"
WORSE = "worse"
IMPROVED = "improved"
UNCHANGED = "unchanged"
NOT_AVAILABLE = "n/a"

_OPTION = "--hepguard-compare-fail"
_NUMBER = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class BaselineError(HepguardError):
    """A baseline file cannot be read, or a ``--hepguard-compare-fail`` spec is malformed."""


# ---------------------------------------------------------------------------------------------
# --hepguard-compare-fail
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """How much worse than the baseline ``metric`` may get: ``margin`` in the metric's own
    units, or, when ``relative``, in percent of the baseline value's magnitude."""

    metric: str
    margin: float
    relative: bool = False

    def allowed(self, old: float) -> float:
        """The largest worsening allowed from the baseline value ``old`` (always >= 0)."""
        return self.margin / 100.0 * abs(old) if self.relative else self.margin

    def __str__(self) -> str:
        return f"{self.metric}:{self.margin:g}{'%' if self.relative else ''}"


def _spec_error(item: str, problem: str) -> BaselineError:
    return BaselineError(
        f"{_OPTION} {item!r}: {problem}; write METRIC:MARGIN pairs separated by commas, the "
        f"margin absolute (0.02) or relative to the baseline value (10%), e.g. "
        f"fooling_rate:0.02,auc_drop:0.005,output_ks:10%; allowed metrics: {', '.join(METRICS)}"
    )


def parse_compare_fail(spec: str) -> list[Threshold]:
    """Parse ``fooling_rate:0.02,auc_drop:0.005,output_ks:10%`` into thresholds.

    Each comma-separated item is ``METRIC:MARGIN``; the margin is a non-negative number, absolute
    (in the metric's units) or, with a trailing ``%``, relative to the baseline value. Raises
    :class:`BaselineError` (listing the allowed metrics) on an unknown metric, a bad or negative
    number, a metric given twice or an empty spec.
    """
    thresholds: list[Threshold] = []
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise _spec_error(spec, "no metric given")
    for item in items:
        if not item:
            raise _spec_error(spec, "empty item between commas")
        metric, sep, value = (part.strip() for part in item.partition(":"))
        if not sep:
            raise _spec_error(item, "missing ':' between the metric and its margin")
        if metric not in METRICS:
            raise _spec_error(item, f"unknown metric {metric!r}")
        relative = value.endswith("%")
        number = value[:-1].strip() if relative else value
        if not _NUMBER.match(number):
            if number.startswith("-"):
                raise _spec_error(item, "a margin cannot be negative")
            raise _spec_error(item, f"{value!r} is not a number")
        if any(t.metric == metric for t in thresholds):
            raise _spec_error(item, f"{metric} is given twice")
        thresholds.append(Threshold(metric, float(number), relative))
    return thresholds


# ---------------------------------------------------------------------------------------------
# Reading a baseline
# ---------------------------------------------------------------------------------------------


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def load_baseline(path: Path | str) -> dict[str, Any]:
    """Read a baseline (a JSON report of version 1) and check it against the report schema.

    Raises :class:`BaselineError` when the file is missing, unreadable or not JSON, and
    :class:`~pytest_hepguard.report.schema.ReportSchemaError` (naming the file and the JSON path)
    when it does not follow the schema; both are :class:`HepguardError`.
    """
    path = Path(path)
    hint = "save a baseline with --hepguard-save-baseline PATH"
    if path.is_dir():
        raise BaselineError(f"{path}: is a folder, expected a baseline file; {hint}")
    if not path.exists():
        raise BaselineError(f"{path}: no such baseline file; {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BaselineError(f"{path}: not a text file, so not a hepguard baseline") from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc.strerror})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the "
            f"file is damaged or not a hepguard baseline; {hint}"
        ) from None
    except ValueError as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc})") from None
    validate_report(data, str(path))
    return data


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One metric of one check, baseline against this run.

    ``delta`` is new − old; ``allowed`` the worsening the threshold allows (None without one);
    ``status`` one of ``REGRESSED``, ``within margin``, ``worse`` (no threshold),
    ``improved``, ``unchanged``, ``n/a`` (a value is missing: no labels or no working point).
    """

    check: str
    metric: str
    old: float | None
    new: float | None
    delta: float | None
    allowed: float | None
    status: str

    @property
    def regressed(self) -> bool:
        """True when the metric got worse by more than its margin."""
        return self.status == REGRESSED


@dataclass
class Comparison:
    """A run compared with a baseline.

    ``rows``: one per matched check and metric shown (the metrics of the thresholds, or
    :data:`DEFAULT_METRICS` without any); ``regressions``: one sentence per row beyond its
    margin; ``new_checks`` / ``missing_checks``: checks of only this run / only the baseline;
    ``warnings``: differences that make numbers differ besides the model (data, uncertainty
    file, seed, number of events); ``notes``: the model, changed or not.
    """

    rows: list[Row] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    new_checks: list[str] = field(default_factory=list)
    missing_checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model_changed: bool | None = None
    thresholds: tuple[Threshold, ...] = ()
    baseline_created: str | None = None

    @property
    def regressed(self) -> bool:
        """True when any check got worse than a margin allows."""
        return bool(self.regressions)


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return format(value, "+.4g" if sign else ".4g")


def _number(entry: dict[str, Any], metric: str) -> float | None:
    value = entry.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def worsening(metric: str, old: float, new: float) -> float:
    """How much worse ``new`` is than ``old`` for ``metric`` (> 0: worse, < 0: better)."""
    if metric in LOWER_IS_WORSE:
        return old - new
    if metric in ABS_IS_WORSE:
        return abs(new) - abs(old)
    return new - old


def _key(check: dict[str, Any]) -> tuple[str, str, str]:
    """``name``, ``attack`` and the parameters as canonical JSON (defaults filled in, so a
    baseline written before an attack gained a parameter still matches; sorted keys; numbers as
    floats, so ``steps: 20`` and ``steps: 20.0`` match)."""
    defaults = {p.name: p.default for p in PARAMETERS.get(str(check.get("attack")), ())}
    params = {**defaults, **(check.get("params") or {})}
    params = {
        k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
        for k, v in params.items()
    }
    return str(check.get("name")), str(check.get("attack")), json.dumps(params, sort_keys=True)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _keyed(
    checks: Sequence[dict[str, Any]],
) -> dict[tuple[tuple[str, str, str], int], dict[str, Any]]:
    """Checks by (key, occurrence): a check run twice with the same key pairs up in order."""
    seen: dict[tuple[str, str, str], int] = {}
    out = {}
    for check in checks:
        key = _key(check)
        out[key, seen.get(key, 0)] = check
        seen[key] = seen.get(key, 0) + 1
    return out


def _labels(
    keys: Sequence[tuple[tuple[str, str, str], int]], checks: dict[Any, dict[str, Any]]
) -> dict[tuple[tuple[str, str, str], int], str]:
    """The name, plus attack and parameters where one name stands for several checks, plus
    ``#2`` for a repeated check."""
    variants: dict[str, set[tuple[str, str, str]]] = {}
    for key, _ in keys:
        variants.setdefault(key[0], set()).add(key)
    labels = {}
    for key, n in keys:
        label = key[0]
        if len(variants[key[0]]) > 1:
            check = checks[key, n]
            label += f" ({check.get('attack')}: {_params_text(check.get('params', {}))})"
        labels[key, n] = label + (f" #{n + 1}" if n else "")
    return labels


def _input_warnings(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    out = []
    for role, file, what in (
        ("data", "data file", "events"),
        ("uncertainties", "uncertainty file", "envelopes and gates"),
    ):
        old = (baseline.get("inputs", {}).get(role) or {}).get("sha256")
        new = (current.get("inputs", {}).get(role) or {}).get("sha256")
        if old != new:
            out.append(
                f"the baseline was made from another {file}: {role} sha256 {_short(old)} in the "
                f"baseline, {_short(new)} now; differences may come from the {what}, not the "
                "model"
            )
    if baseline.get("seed") != current.get("seed"):
        out.append(
            f"the baseline used --hepguard-seed {baseline.get('seed')}, this run "
            f"{current.get('seed')}: random starts and noise differ, so small differences are "
            "expected"
        )
    return out


def _short(sha: object) -> str:
    return str(sha)[:12] if sha else "none"


def _model_note(baseline: dict[str, Any], current: dict[str, Any]) -> tuple[bool | None, str]:
    old = baseline.get("inputs", {}).get("model") or {}
    new = current.get("inputs", {}).get("model") or {}
    if old.get("sha256") and new.get("sha256"):
        if old["sha256"] == new["sha256"]:
            return False, f"same model as the baseline (sha256 {_short(new['sha256'])})"
        return True, (
            f"model changed: sha256 {_short(old['sha256'])} in the baseline, "
            f"{_short(new['sha256'])} now: the differences below measure that change"
        )
    if old.get("path") != new.get("path"):
        return True, f"model changed: {old.get('path')} in the baseline, {new.get('path')} now"
    return None, (
        f"model {new.get('path')} has no file hash (module:callable), so hepguard cannot tell "
        "whether it changed since the baseline"
    )


def _row(label: str, metric: str, old: float | None, new: float | None, t: Threshold | None) -> Row:
    if old is None or new is None:
        return Row(label, metric, old, new, None, None, NOT_AVAILABLE)
    worse = worsening(metric, old, new)
    allowed = None if t is None else t.allowed(old)
    if worse < 0:
        status = IMPROVED
    elif worse == 0:
        status = UNCHANGED
    elif allowed is None:
        status = WORSE
    else:
        status = REGRESSED if worse > allowed else WITHIN
    return Row(label, metric, old, new, new - old, allowed, status)


def _regression_sentence(row: Row, t: Threshold) -> str:
    assert row.old is not None and row.new is not None and row.allowed is not None
    if row.metric in LOWER_IS_WORSE:
        change, by = "fell", row.old - row.new
    elif row.metric in ABS_IS_WORSE:
        change, by = "grew in magnitude", abs(row.new) - abs(row.old)
    else:
        change, by = "rose", row.new - row.old
    allows = f"{row.allowed:.4g}" + (f", {t.margin:g}% of the baseline value" if t.relative else "")
    return (
        f"{row.check}: {row.metric} {change} from {_fmt(row.old)} to {_fmt(row.new)} "
        f"(worse by {by:.4g}; {t} allows {allows})"
    )


def compare(
    baseline: dict[str, Any], current: dict[str, Any], thresholds: Sequence[Threshold] = ()
) -> Comparison:
    """Compare this run's report ``current`` with ``baseline`` (both report dicts).

    Checks are matched by ``name``, ``attack`` and ``params``; a check on one side only is
    listed in ``new_checks`` or ``missing_checks``. A row regresses when the metric got worse
    than the baseline by more than its threshold allows (higher is worse, ``mean_shift`` and
    ``efficiency_change`` in absolute value, lower is worse for ``auc_perturbed`` and
    ``efficiency_perturbed``). A metric missing on either side (null) is ``n/a`` and never
    regresses.
    """
    thresholds = tuple(thresholds)
    by_metric = {t.metric: t for t in thresholds}
    metrics = [t.metric for t in thresholds] or list(DEFAULT_METRICS)
    old_checks = _keyed(baseline.get("checks", []))
    new_checks = _keyed(current.get("checks", []))
    all_keys = list(new_checks) + [k for k in old_checks if k not in new_checks]
    labels = _labels(all_keys, {**old_checks, **new_checks})

    comparison = Comparison(thresholds=thresholds, baseline_created=baseline.get("created"))
    comparison.model_changed, note = _model_note(baseline, current)
    comparison.notes.append(note)
    comparison.warnings += _input_warnings(baseline, current)

    events_differ = []
    for key, new in new_checks.items():
        old = old_checks.get(key)
        label = labels[key]
        if old is None:
            comparison.new_checks.append(label)
            continue
        if old.get("n_events") != new.get("n_events"):
            events_differ.append(f"{label}: {old.get('n_events')} → {new.get('n_events')}")
        for metric in metrics:
            t = by_metric.get(metric)
            values = _number(old, metric), _number(new, metric)
            if metric in ONE_CHECK_METRICS and values == (None, None):
                continue
            row = _row(label, metric, *values, t)
            comparison.rows.append(row)
            if row.regressed and t is not None:
                comparison.regressions.append(_regression_sentence(row, t))
    comparison.missing_checks = [labels[k] for k in old_checks if k not in new_checks]
    if events_differ:
        comparison.warnings.append(
            f"{len(events_differ)} check(s) audited another number of events than in the "
            f"baseline (--hepguard-events?): {'; '.join(events_differ[:3])}"
            + ("; ..." if len(events_differ) > 3 else "")
        )
    return comparison


def summary_lines(comparison: Comparison) -> list[str]:
    """The comparison for the terminal: notes and warnings, then a fixed-width table
    check / metric / old / new / delta / status, new and missing checks, and the regressions."""
    lines = list(comparison.notes)
    lines += [f"warning: {w}" for w in comparison.warnings]
    header = ["check", "metric", "old", "new", "delta", "status"]
    rows = [
        [
            r.check,
            r.metric,
            _fmt(r.old),
            _fmt(r.new),
            _fmt(r.delta, sign=True),
            r.status if r.allowed is None else f"{r.status} (allowed {r.allowed:.4g})",
        ]
        for r in comparison.rows
    ]
    if rows:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for cells in [header, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    lines += [f"new check (not in the baseline): {c}" for c in comparison.new_checks]
    lines += [
        f"missing check (in the baseline, not run now): {c}" for c in comparison.missing_checks
    ]
    lines += [f"REGRESSION {r}" for r in comparison.regressions]
    if not comparison.thresholds:
        lines.append(f"no {_OPTION} margins given: differences are shown, nothing fails")
    elif not comparison.regressions:
        lines.append(f"no regression beyond the {_OPTION} margins")
    else:
        lines.append(
            f"{len(comparison.regressions)} regression(s) beyond the {_OPTION} margins: "
            "the run fails (exit code 1)"
        )
    return lines
