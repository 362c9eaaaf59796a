"""The terminal summary: one row per check, the numbers a reviewer reads first."""

from __future__ import annotations

from collections.abc import Sequence


def _num(value: object, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _rate(entry: dict[str, object], key: str) -> str:
    value, err = entry.get(key), entry.get(f"{key}_err")
    if value is None:
        return "n/a"
    return f"{value:.4f} ± {err:.4f}" if err is not None else f"{value:.4f}"


def _auc(entry: dict[str, object]) -> str:
    if entry.get("auc_nominal") is None:
        return "n/a"
    return f"{entry['auc_nominal']:.4f} → {_num(entry.get('auc_perturbed'))}"


def _status(entry: dict[str, object]) -> str:
    if not entry.get("limits"):
        return "report"
    return "PASS" if entry.get("passed") else "FAIL"


COLUMNS: tuple[tuple[str, object], ...] = (
    ("check", lambda e: str(e["name"])),
    ("eps", lambda e: format(e["params"].get("epsilon", 0), "g")),
    ("fooling rate", lambda e: _rate(e, "fooling_rate")),
    ("on correct", lambda e: _rate(e, "fooling_rate_correct")),
    ("random", lambda e: _rate(e, "random_fooling_rate")),
    ("AUC nominal → perturbed", _auc),
    ("KS", lambda e: _num(e.get("output_ks"))),
    ("time s", lambda e: _num(e.get("seconds"), ".2f")),
    ("gate", _status),
)


def summary_lines(entries: Sequence[dict[str, object]]) -> list[str]:
    """A fixed-width table of the check entries (dicts of the JSON report), then what hepguard
    assumed where the uncertainty file was silent, then each check's failures and warnings."""
    rows = [[cell(e) for _, cell in COLUMNS] for e in entries]  # type: ignore[operator]
    header = [name for name, _ in COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += hidden_lines(entries) + pyhf_lines(entries)
    assumed = entries[0].get("assumptions") if entries else None
    if assumed:
        lines.append(f"assumed: {'; '.join(assumed)}")  # type: ignore[arg-type]
    for e in entries:
        lines += [f"FAIL {e['name']}: {msg}" for msg in e.get("failures", [])]  # type: ignore[union-attr]
        lines += [f"warning {e['name']}: {msg}" for msg in e.get("warnings", [])]  # type: ignore[union-attr]
    return lines


def failure_message(entry: dict[str, object]) -> str:
    """The message of a failed gate: what failed, then the check's key numbers."""
    lines = [f"hepguard gate '{entry['name']}' failed:"]
    lines += [f"  - {m}" for m in entry["failures"]]  # type: ignore[union-attr]
    lines.append(
        f"  fooling rate {_rate(entry, 'fooling_rate')} (on correctly classified events "
        f"{_rate(entry, 'fooling_rate_correct')}), random noise of the same size "
        f"{_rate(entry, 'random_fooling_rate')}; AUC {_auc(entry)}; output KS "
        f"{_num(entry.get('output_ks'))}"
    )
    lines += [f"  {line}" for line in pyhf_lines([entry])]
    return "\n".join(lines)


def hidden_ratio(entries: Sequence[dict[str, object]]) -> tuple[dict, dict, float] | None:
    """The first certified ``hidden`` (fool) check and the first ``systematic`` check at the
    same epsilon, and the ratio of their fooling rates: how much the usual +-1 sigma estimate
    underestimates the model's sensitivity (inf when the +-1 sigma shifts flip nothing)."""
    for hidden in entries:
        details = hidden.get("details") or {}
        if hidden.get("attack") != "hidden" or details.get("direction") != "fool":  # type: ignore[union-attr]
            continue
        if not details.get("certificate", {}).get("passed"):  # type: ignore[union-attr]
            continue
        eps = hidden["params"].get("epsilon")  # type: ignore[union-attr]
        for syst in entries:
            if syst.get("attack") == "systematic" and syst["params"].get("epsilon") == eps:  # type: ignore[union-attr]
                num, den = hidden["fooling_rate"], syst["fooling_rate"]
                ratio = num / den if den else float("inf")  # type: ignore[operator]
                return hidden, syst, ratio
    return None


def hidden_lines(entries: Sequence[dict[str, object]]) -> list[str]:
    """The summary's line on hidden systematics, when both checks ran."""
    found = hidden_ratio(entries)
    if found is None:
        return []
    hidden, syst, ratio = found
    cert = hidden["details"]["certificate"]  # type: ignore[index]
    worst_p = min((f["ks_pvalue"] for f in cert["features"]), default=None)  # type: ignore[index]
    return [
        f"hidden systematics: '{hidden['name']}' flips {hidden['fooling_rate']:.4f} of decisions "
        f"inside the envelope with every input marginal and correlation unchanged (smallest KS "
        f"p-value {_num(worst_p, '.3g')}, max |Δρ| {_num(cert['max_abs_delta_rho'], '.2g')}), "  # type: ignore[index]
        f"{ratio:.1f}x the ±1σ group shifts of '{syst['name']}' ({syst['fooling_rate']:.4f}, "
        f"worst: {syst['details']['worst_variation']})"  # type: ignore[index]
    ]


def pyhf_lines(entries: Sequence[dict[str, object]]) -> list[str]:
    """The summary's line per ``pyhf_impact`` check: the POI's uncertainty without and with the
    hepguard nuisance parameters, and the parameter that moves it most."""
    lines = []
    for entry in entries:
        fit = (entry.get("details") or {}).get("pyhf")  # type: ignore[union-attr]
        if entry.get("attack") != "pyhf_impact" or not fit:
            continue
        params = sorted(
            fit["parameters"],
            key=lambda p: -max(abs(p["impact_up"]), abs(p["impact_down"])),
        )
        top = params[0] if params else None
        impact = (
            f"; largest impact {top['name']} (Δ{fit['poi']} {top['impact_up']:+.3g} / "
            f"{top['impact_down']:+.3g})"
            if top
            else ""
        )
        lines.append(
            f"pyhf: σ({fit['poi']}) {fit['mu_err_without']:.4g} → {fit['mu_err']:.4g} "
            f"({fit['increase']:+.1%}) with the {len(params)} hepguard nuisance parameters, on "
            f"{fit['workspace']}{impact}"
        )
    return lines


def describe_counterexample(c: dict[str, object]) -> str:
    """``event 17 (b) moved by jet_pt +0.42σ, n_tracks +1σ: discriminant 0.96 → 0.93, decision
    1 → 0`` for one counterexample entry of the report."""
    unit = "σ" if c["kind"] == "displacement" else ""
    moved = ", ".join(
        f"{name} {value:+.3g}{unit}"
        for name, value in c["change"].items()  # type: ignore[union-attr]
        if value
    )
    label = f" ({c['label']})" if c.get("label") else ""
    return (
        f"event {c['event']}{label} moved by {moved or 'nothing'}: discriminant "
        f"{c['discriminant_before']:.4g} → {c['discriminant_after']:.4g}, decision "
        f"{c['decision_before']} → {c['decision_after']}"
    )


def counterexample_lines(found: Sequence[dict[str, object]]) -> list[str]:
    """One line per property test's minimal counterexample, displacements in sigmas."""
    return [
        f"counterexample {c['test']}: '{c['property']}' broken: {describe_counterexample(c)}"
        for c in found
    ]
