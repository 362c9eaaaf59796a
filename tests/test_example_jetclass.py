"""The JetClass example (``examples/jetclass``): the real ParticleNet on 100 real JetClass-II
jets, through the ``module:callable`` factory.

- The factory reproduces the AUC (QCD vs resonance jets) that the model's SOURCE.md gives for
  the same jets, 0.895: the raw-input feature recipe is right.
- The gradient with respect to the raw inputs is finite everywhere and exactly zero on padded
  constituent slots.
- The README command, run in a pytest subprocess with a JSON report, passes its gates; PGD
  fools at least as often as random noise; padding never moves.

Skipped with the reason when ``../shared/realdata`` (beside the repository) or weaver-core is
absent. References: SOURCE.md's AUC; labels straight from the Parquet file's ``jet_label``
(>= 161: QCD) read with pyarrow; the real slots from its list lengths.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import audit_report

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "jetclass"
REALDATA = REPO.parent / "shared" / "realdata"
DATA = REALDATA / "jetclass2-example" / "JetClassII_example.parquet"
WEIGHTS = REALDATA / "jetclass-particlenet" / "ParticleNet_kin.pt"
PARTICLES = ("part_px", "part_py", "part_energy", "part_deta", "part_dphi")
#: AUC of 1 - P(QCD), QCD vs resonance jets, of ParticleNet_kin on these jets (its SOURCE.md).
SOURCE_AUC = 0.895
#: JetClass-II labels from this one on are QCD (the data's SOURCE.md).
QCD_LABEL_MIN = 161
#: The README's batch size: ParticleNet's EdgeConv tensors are large; small batches are faster.
BATCH = 10

pytestmark = [
    pytest.mark.skipif(
        not (DATA.is_file() and WEIGHTS.is_file()),
        reason=f"the JetClass example needs {DATA} and {WEIGHTS} (../shared/realdata)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("weaver") is None,
        reason="the JetClass example needs weaver-core: pip install --no-deps weaver-core==0.5.3",
    ),
]


def load_example_model() -> torch.nn.Module:
    """``examples/jetclass/model.py``'s factory, imported from its file."""
    spec = importlib.util.spec_from_file_location("jetclass_model", EXAMPLE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.particlenet_kin()


@pytest.fixture(scope="module")
def jets() -> dict[str, np.ndarray]:
    """The 100 jets straight from the Parquet file: ``jet`` [100, 2] (pT, E in GeV),
    ``particles`` [100, 128, 5] zero-padded, ``real`` [100, 128] bool, ``is_qcd`` [100]."""
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(DATA, columns=["jet_pt", "jet_energy", "jet_label", *PARTICLES])
    lists = {c: table.column(c).to_pylist() for c in PARTICLES}
    counts = np.array([len(row) for row in lists["part_energy"]])
    particles = np.zeros((len(counts), 128, len(PARTICLES)), np.float32)
    for j, column in enumerate(PARTICLES):
        for i, row in enumerate(lists[column]):
            particles[i, : len(row[:128]), j] = row[:128]
    jet = np.stack([table.column(c).to_numpy() for c in ("jet_pt", "jet_energy")], 1)
    return {
        "jet": jet.astype(np.float32),
        "particles": particles,
        "real": np.arange(128) < counts[:, None],
        "is_qcd": table.column("jet_label").to_numpy() >= QCD_LABEL_MIN,
    }


def batches(jets: dict[str, np.ndarray]):
    """``(jet, particles, real)`` tensors of :data:`BATCH` jets at a time."""
    for s in range(0, len(jets["jet"]), BATCH):
        yield tuple(torch.from_numpy(jets[k][s : s + BATCH]) for k in ("jet", "particles", "real"))


def test_factory_reproduces_the_source_auc(jets) -> None:
    from sklearn.metrics import roc_auc_score

    model = load_example_model()
    assert not model.training
    with torch.no_grad():
        probs = torch.cat([model(jet, particles) for jet, particles, _ in batches(jets)]).numpy()
    assert probs.shape == (100, 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert 0 < jets["is_qcd"].sum() < 100
    auc = roc_auc_score(~jets["is_qcd"], 1 - probs[:, 0])
    assert abs(auc - SOURCE_AUC) <= 0.005, auc


def test_raw_input_gradient_is_finite_and_zero_on_padding(jets) -> None:
    """On the 10 jets with the fewest particles (down to 2: fewer than ParticleNet's 16
    neighbours) and the 10 with the most (up to 82)."""
    order = np.argsort(jets["real"].sum(1), kind="stable")
    extremes = {k: v[np.r_[order[:BATCH], order[-BATCH:]]] for k, v in jets.items()}
    model = load_example_model()
    for jet, particles, real in batches(extremes):
        jet.requires_grad_(True)
        particles.requires_grad_(True)
        model(jet, particles)[:, 0].log().sum().backward()  # log P(QCD)
        grad = particles.grad
        assert torch.isfinite(grad).all() and torch.isfinite(jet.grad).all()
        assert (grad[~real] == 0).all()
        assert (grad[real].abs().sum(-1) > 0).float().mean() > 0.9  # real slots do get one


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The JSON report of the README command, run from the repository root (unrelated
    third-party plugins off)."""
    return audit_report(
        [
            "examples/jetclass",
            *("--hepguard-model", "examples.jetclass.model:particlenet_kin"),
            *("--hepguard-uncertainties", "examples/jetclass/unc.yaml"),
            *("--hepguard-batch-size", str(BATCH)),
        ],
        tmp_path_factory.mktemp("jetclass") / "report.json",
    )


def test_readme_command_passes_and_pgd_beats_noise(report) -> None:
    assert report["passed"] is True
    by_name = {entry["name"]: entry for entry in report["checks"]}
    assert set(by_name) == {"random", "pgd"}
    for entry in by_name.values():
        assert entry["passed"] is True, entry["failures"]
        assert entry["n_events"] == 100 and entry["envelope_violations"] == 0
    assert by_name["pgd"]["fooling_rate"] >= by_name["random"]["fooling_rate"]
    assert by_name["pgd"]["fooling_rate"] > 0


def test_padding_never_moves(report, jets) -> None:
    """Each per-constituent feature moves on at most the share of real slots; the per-jet
    ones move on every jet; nothing moves by more than epsilon."""
    real_share = float(jets["real"].mean())
    assert 0 < real_share < 1
    for entry in report["checks"]:
        eps = entry["params"]["epsilon"]
        for name, moved in entry["moved_fraction"].items():
            limit = real_share if name.startswith("part_") else 1.0
            assert 0 < moved <= limit + 1e-12, (entry["name"], name, moved)
        for name, size in entry["max_displacement_sigma"].items():
            assert 0 < size <= eps * (1 + 1e-4), (entry["name"], name, size)  # float32 rounding
