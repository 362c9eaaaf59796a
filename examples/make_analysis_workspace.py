"""Write ``analysis_workspace.json``: a stand-in for an analysis's own pyhf workspace, which the
bundled example's ``pyhf.patch`` (in ``unc.yaml``) adds hepguard's nuisance parameters to.

It is what ``pyhf.simplemodels.uncorrelated_background`` makes (channel ``singlechannel``,
samples ``signal`` with the normfactor ``mu`` and ``background`` with a 10 % uncorrelated
``shapesys``), in the 10 bins of the tagger's BvL discriminant over [0, 1], with yields of an
analysis with 2.5 times the example's luminosity, and Asimov observations. Run::

    python examples/make_analysis_workspace.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pyhf

HERE = Path(__file__).resolve().parent

#: b jets, and c plus light jets, per BvL bin of the example sample, times 2.5
SIGNAL = [420.0, 250.0, 112.0, 85.0, 80.0, 70.0, 72.0, 118.0, 160.0, 3635.0]
BACKGROUND = [9650.0, 1970.0, 595.0, 375.0, 265.0, 258.0, 215.0, 245.0, 320.0, 1108.0]


def main() -> None:
    model = pyhf.simplemodels.uncorrelated_background(
        signal=SIGNAL, bkg=BACKGROUND, bkg_uncertainty=[0.1 * b for b in BACKGROUND]
    )
    asimov = [s + b for s, b in zip(SIGNAL, BACKGROUND, strict=True)]
    workspace = {
        "channels": model.spec["channels"],
        "observations": [{"name": "singlechannel", "data": asimov}],
        "measurements": [{"name": "analysis", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    pyhf.Workspace(workspace)  # validates against pyhf's schema
    path = HERE / "analysis_workspace.json"
    path.write_text(json.dumps(workspace, indent=2) + "\n")
    print(f"{path.name}: {len(SIGNAL)} bins, samples signal and background")


if __name__ == "__main__":
    main()
