"""The DeepJet-like multi-input example (``examples/deepjet_like``): its README command, run in a
pytest subprocess with a JSON report, passes its gates; the gradient attacks beat random noise;
the report aggregates displacements per feature; padding and frozen features never move.

References: the example's own files (its uncertainty file, parsed here, and the padded arrays of
``jets.npz``, read with numpy), independent of the plugin's layout code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import audit_report

from pytest_hepguard.uncertainties import load_uncertainties

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "deepjet_like"
GATES = ("random", "fgsm", "pgd")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The JSON report of the README command, run from the repository root (unrelated
    third-party plugins off)."""
    return audit_report(
        [
            "examples/deepjet_like",
            *("--hepguard-model", "examples/deepjet_like/tagger.onnx"),
            *("--hepguard-uncertainties", "examples/deepjet_like/unc.yaml"),
        ],
        tmp_path_factory.mktemp("deepjet_like") / "report.json",
    )


def checks(report: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["checks"]}


def real_fraction(columns: list[str]) -> float:
    """Share of the padded constituent slots of ``columns`` (2-D arrays of jets.npz, one
    input's features) holding a real constituent: not every feature at the pad value 0."""
    with np.load(EXAMPLE / "jets.npz") as npz:
        block = np.stack([npz[c] for c in columns], -1)  # [n_jets, length, n_features]
    return float((block != 0).any(-1).mean())


def test_readme_command_passes_every_gate(report) -> None:
    assert report["passed"] is True
    by_name = checks(report)
    assert set(GATES) <= set(by_name)
    for gate in GATES:
        assert by_name[gate]["passed"] is True, by_name[gate]["failures"]
        assert by_name[gate]["envelope_violations"] == 0


@pytest.mark.parametrize("gate", ["fgsm", "pgd"])
def test_gradient_attacks_beat_noise(report, gate) -> None:
    """FGSM and PGD flip more decisions than Gaussian noise of the same size, by more than
    three combined standard errors."""
    entry, noise = checks(report)[gate], checks(report)["random"]
    assert entry["random_fooling_rate"] == noise["fooling_rate"]
    combined = math.hypot(entry["fooling_rate_err"], noise["fooling_rate_err"])
    assert entry["fooling_rate"] - noise["fooling_rate"] > 3 * combined


def test_displacements_per_feature_padding_and_frozen_features_stay(report) -> None:
    """Displacements are reported under the base feature names (``trk_ip2d_sig``, not
    ``trk_ip2d_sig[3]``); no feature moves by more than epsilon, frozen ones not at all, and a
    per-constituent feature moves on at most its share of real (non-padded) slots."""
    unc = load_uncertainties(EXAMPLE / "unc.yaml")
    frozen = {f.name for f in unc.features if f.frozen}
    assert frozen, "the example should keep a frozen feature to check"
    real = {
        f: real_fraction(list(spec.features))
        for spec in unc.inputs
        if spec.per == "constituent"
        for f in spec.features
    }
    assert all(0 < share < 1 for share in real.values())  # real and padded slots both
    for gate in GATES:
        entry = checks(report)[gate]
        eps = entry["params"]["epsilon"]
        assert list(entry["max_displacement_sigma"]) == list(unc.feature_names)
        assert list(entry["moved_fraction"]) == list(unc.feature_names)
        for name, moved in entry["max_displacement_sigma"].items():
            if name in frozen:
                assert moved == 0 and entry["moved_fraction"][name] == 0, (gate, name)
            else:
                assert 0 < moved <= eps * (1 + 1e-4), (gate, name, moved)  # float32 rounding
        for name, share in real.items():
            assert entry["moved_fraction"][name] <= share + 1e-12, (gate, name)
