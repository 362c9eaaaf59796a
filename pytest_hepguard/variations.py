"""From perturbed samples to pyhf: the templates of every nuisance variation, and the
``pyhf_impact`` check that fits them.

A variation is one nuisance parameter: each group of the uncertainty file shifted coherently by
±``epsilon`` sigmas (``systematic``, the usual ±1σ estimate), and the hidden-systematics attack
pushing the discriminant up and down under the file's constraints (``hidden``). Each gives an up
and a down histogram of the discriminant per sample; :mod:`pytest_hepguard.templates` turns them
into modifiers named ``hepguard_<check>_<group>`` (``hepguard_hidden`` for the attack).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pytest_hepguard.exceptions import PyhfError
from pytest_hepguard.templates import (
    SampleTemplate,
    Templates,
    Variation,
    bin_edges,
    build_templates,
    histogram,
)
from pytest_hepguard.uncertainties import PatchSpec, PyhfSpec

if TYPE_CHECKING:
    from pytest_hepguard.audit import Auditor, CheckResult

#: Sides of a variation, with the sign of its shift.
_SIDES = (("up", 1.0), ("down", -1.0))


def modifier_name(check: str, group: str | None = None) -> str:
    """``hepguard_<check>_<group>`` (``hepguard_<check>`` without a group), characters other
    than letters, digits and ``_`` replaced by ``_``."""
    name = f"hepguard_{check}" if group is None else f"hepguard_{check}_{group}"
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _samples(auditor: Auditor, spec: PyhfSpec) -> list[tuple[str, np.ndarray, bool]]:
    """(name, event mask [n], signal) of each sample: the ``samples:`` mapping, or one sample
    per class. A sample is signal when all its classes are signal classes of the decision."""
    labels = auditor.labels
    if labels is None:
        raise PyhfError(
            "pyhf templates need labels: the samples are made of classes (data.label in the "
            "uncertainty file)"
        )
    n_classes = auditor.model.n_classes
    names = auditor.uncertainties.decision.classes or tuple(f"class_{i}" for i in range(n_classes))
    pairs = spec.samples or tuple((name, (i,)) for i, name in enumerate(names))
    out = []
    for name, classes in pairs:
        signal = auditor.decision.is_signal(np.asarray(classes))
        if signal.any() and not signal.all():
            raise PyhfError(
                f"pyhf sample {name!r} mixes signal and background classes; the POI scales whole "
                "samples, so give signal classes a sample of their own"
            )
        out.append((name, np.isin(labels, classes), bool(signal.all())))
    return out


def nuisance_templates(
    auditor: Auditor, spec: PyhfSpec
) -> tuple[Templates, dict[tuple[str, str], CheckResult]]:
    """The templates of ``spec`` (the ``pyhf:`` section) on the auditor's sample, and the
    check numbers of every variation side, keyed by (modifier name, ``up``/``down``).

    Raises:
        PyhfError: no labels, a sample mixing signal and background, a binning with a bin no
            nominal event falls in.
    """
    edges = bin_edges(spec.bins, *spec.range)
    samples = _samples(auditor, spec)
    weights = auditor.events.weights

    def yields(probs: np.ndarray) -> dict[str, np.ndarray]:
        disc = auditor.discriminant(probs)
        return {
            name: histogram(disc[mask], edges, None if weights is None else weights[mask]).yields
            for name, mask, _ in samples
        }

    nominal = []
    for name, mask, signal in samples:
        hist = histogram(
            auditor.nominal_disc[mask], edges, None if weights is None else weights[mask]
        )
        nominal.append(SampleTemplate(name, hist.yields, hist.sumw2, signal))
    variations: list[Variation] = []
    sides: dict[tuple[str, str], CheckResult] = {}
    notes: list[str] = []
    runs: list[tuple[str, str, object]] = []
    if "systematic" in spec.variations:
        runs += [(modifier_name("systematic", g), g, g) for g in auditor.group_names()]
    if "hidden" in spec.variations:
        runs.append((modifier_name("hidden"), "hidden", None))
    for name, label, group in runs:
        hists: dict[str, dict[str, np.ndarray]] = {}
        for side, sign in _SIDES:
            if side == "down" and label in spec.symmetrize:
                continue
            if group is None:
                result, probs = auditor.perturbed(
                    "hidden", epsilon=spec.epsilon, steps=spec.steps, direction=side
                )
                notes += [f"{name} {side}: {f}" for f in result.failures]
            else:
                result, probs = auditor.group_shift(str(group), sign * spec.epsilon)
            sides[name, side] = result
            hists[side] = yields(probs)
        variations.append(Variation(name, hists["up"], hists.get("down")))
    templates = build_templates(edges, nominal, variations, normsys=spec.normsys)
    return replace(templates, warnings=(*notes, *templates.warnings)), sides


def impact_check(auditor: Auditor) -> CheckResult:
    """The ``pyhf_impact`` check: a workspace fitted with and without the hepguard nuisance
    parameters: the analysis's own workspace with the patch applied when ``pyhf.patch`` is
    given (the number that matters for the analysis), else the workspace hepguard builds from
    the templates alone. Its ``mu_uncertainty_increase`` is the relative growth of the POI's
    uncertainty; its common numbers (fooling rate, output shift, ...) are those of the
    variation side with the largest impact on the POI; ``details.pyhf`` holds the fits, every
    parameter's pull, constraint and impact, and the templates."""
    from pytest_hepguard.impact import fit_impact

    spec = auditor.uncertainties.pyhf
    t0 = time.perf_counter()
    templates, sides = auditor.templates()
    workspace, fitted = _impact_workspace(templates, spec)
    impact = fit_impact(workspace, templates.names)
    largest = max(
        (
            (abs(value), p.name, side)
            for p in impact.parameters
            for side, value in (("up", p.impact_up), ("down", p.impact_down))
            if (p.name, side) in sides
        ),
        default=None,
    )
    key = (largest[1], largest[2]) if largest else next(iter(sides))
    base = sides[key]
    return replace(
        base,
        name="pyhf_impact",
        attack="pyhf_impact",
        params={"epsilon": spec.epsilon, "steps": spec.steps},
        seconds=time.perf_counter() - t0,
        failures=[],
        warnings=list(templates.warnings),
        mu_uncertainty_increase=impact.increase if math.isfinite(impact.increase) else None,
        details={
            "pyhf": {
                **impact.to_dict(),
                "workspace": fitted,
                "largest_impact": f"{key[0]} {key[1]}",
                "templates": templates.to_dict(),
            }
        },
    )


def _impact_workspace(templates: Templates, spec: PyhfSpec) -> tuple[dict, str]:
    """The workspace the impact is fitted on, with hepguard's modifiers, and what it is."""
    from pytest_hepguard.pyhf_export import workspace_spec

    if spec.patch is None:
        built = workspace_spec(
            templates, channel=spec.channel, poi=spec.poi, observations=spec.observations
        )
        return built, "hepguard (built from the templates)"
    import jsonpatch

    analysis, ops = _analysis_patch(templates, spec.patch)
    return jsonpatch.apply_patch(analysis, ops), f"{spec.patch.workspace} with the patch"


def _analysis_patch(templates: Templates, target: PatchSpec) -> tuple[dict, list[dict]]:
    """The analysis workspace of ``pyhf.patch`` and the patch adding hepguard's modifiers."""
    from pytest_hepguard.pyhf_export import load_workspace, workspace_patch

    analysis = load_workspace(target.workspace)
    ops = workspace_patch(
        templates,
        analysis,
        channel=target.channel,
        samples=dict(target.samples),
        source=f"pyhf workspace {target.workspace}",
    )
    return analysis, ops


def write_pyhf(
    auditor: Auditor,
    workspace: Path | None,
    patch: Path | None,
    *,
    inputs: dict[str, Path | None],
    force: bool,
) -> list[tuple[str, Path]]:
    """Write the templates of the ``pyhf:`` section as a complete workspace (``--hepguard-pyhf``)
    and/or as a JSON patch for the user's workspace of ``pyhf.patch`` (``--hepguard-pyhf-patch``).
    Returns (option, path) of each file written."""
    from pytest_hepguard.pyhf_export import workspace_spec, write_patch, write_workspace

    spec = auditor.uncertainties.pyhf
    templates, _ = auditor.templates()
    written = []
    if workspace is not None:
        full = workspace_spec(
            templates, channel=spec.channel, poi=spec.poi, observations=spec.observations
        )
        write_workspace(workspace, full, inputs=inputs, force=force)
        written.append(("--hepguard-pyhf", workspace))
    if patch is not None:
        if spec.patch is None:
            raise PyhfError(
                "--hepguard-pyhf-patch needs pyhf.patch in the uncertainty file (workspace, "
                "channel, samples)"
            )
        write_patch(patch, _analysis_patch(templates, spec.patch)[1], inputs=inputs, force=force)
        written.append(("--hepguard-pyhf-patch", patch))
    return written
