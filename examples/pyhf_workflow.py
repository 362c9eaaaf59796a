"""From a tagger's sensitivity to a pyhf fit, in plain Python (no pytest, no notebook).

Copy this script next to your own model, data and uncertainty file and change the four paths.
On the bundled example it

1. audits the tagger and builds the templates of the ``pyhf:`` section of ``unc.yaml``: the
   BvL discriminant of b jets and of other jets, nominal, each ±1σ group shift, and the
   hidden-systematics attack pushed up and down;
2. writes them as a complete pyhf workspace and as a JSON patch for the analysis's own
   workspace (``analysis_workspace.json``);
3. fits the patched analysis workspace with and without the hepguard nuisance parameters and
   prints how much the uncertainty on ``mu`` grows, and the impact of each parameter.

Run from the repository root::

    python examples/pyhf_workflow.py [OUTPUT_FOLDER]

It writes ``hepguard_workspace.json`` and ``hepguard_patch.json`` into OUTPUT_FOLDER (default:
the current folder) and never over a file it did not write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jsonpatch
import torch

from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import load_events
from pytest_hepguard.impact import fit_impact
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.pyhf_export import load_workspace, workspace_patch, workspace_spec
from pytest_hepguard.uncertainties import load_uncertainties
from pytest_hepguard.variations import write_pyhf

HERE = Path(__file__).resolve().parent
MODEL = HERE / "tagger.pt"
UNCERTAINTIES = HERE / "unc.yaml"


def main(out: Path) -> None:
    unc = load_uncertainties(UNCERTAINTIES)
    per_event, constituents = unc.data_columns()
    events = load_events(
        unc.data.path,
        per_event,
        constituents=constituents or None,
        label=unc.data.label,
        weight=unc.data.weight,
        tree=unc.data.tree,
    )
    device = torch.device("cpu")
    model = wrap_model(load_model(str(MODEL), device), device, str(MODEL))
    auditor = Auditor(model, events, unc, seed=0)

    templates, _ = auditor.templates()
    print(f"templates: {len(templates.samples)} samples, {len(templates.edges) - 1} bins")
    for sample in templates.samples:
        print(f"  {sample.name:<12} nominal yield {sample.nominal.sum():8.1f}")
    for note in templates.warnings:
        print(f"  lint: {note}")

    written = write_pyhf(
        auditor,
        out / "hepguard_workspace.json",
        out / "hepguard_patch.json",
        inputs={"model": MODEL, "data": unc.data.path, "uncertainties": UNCERTAINTIES},
        force=False,
    )
    for option, path in written:
        print(f"{option}: {path}")

    spec = unc.pyhf
    print("\nfits (MINUIT, Hesse errors):")
    alone = fit_impact(workspace_spec(templates, poi=spec.poi), templates.names)
    analysis = load_workspace(spec.patch.workspace)
    patch = workspace_patch(
        templates,
        analysis,
        channel=spec.patch.channel,
        samples=dict(spec.patch.samples),
        source=f"pyhf workspace {spec.patch.workspace}",
    )
    patched = fit_impact(jsonpatch.apply_patch(analysis, patch), templates.names)
    for label, impact in (("hepguard workspace", alone), ("analysis workspace", patched)):
        print(
            f"  {label}: sigma(mu) {impact.mu_err_without:.4f} without, {impact.mu_err:.4f} "
            f"with the hepguard parameters ({impact.increase:+.1%})"
        )
    print("\nimpact on mu of each hepguard parameter (analysis workspace):")
    print(f"  {'parameter':<40} {'post-fit sigma':>14} {'dmu(+1)':>9} {'dmu(-1)':>9}")
    for p in patched.parameters:
        print(
            f"  {p.name:<40} {p.constraint:14.3f} {p.impact_up:+9.4f} {p.impact_down:+9.4f}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
