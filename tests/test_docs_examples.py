"""The Python examples of docs/plugin.md and the README run as written, on the bundled example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = [f"--hepguard-uncertainties={ROOT / 'examples' / 'unc.yaml'}"]


def _block(path: Path, first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    matching = [b for b in blocks if b.startswith(first_line)]
    assert matching, f"{path.name}: no python block starting with {first_line!r}"
    return matching[0]


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_robustness_test_example(tmp_path) -> None:
    (tmp_path / "robustness_btag.py").write_text(
        _block(ROOT / "docs" / "plugin.md", "# robustness_btag.py")
    )
    (tmp_path / "robustness_readme.py").write_text(
        "\n".join(
            line[3:] if line.startswith("   ") else line
            for line in _block(ROOT / "README.md", "   def robustness_").splitlines()
        )
    )
    proc = _pytest(
        tmp_path, f"--hepguard-model={ROOT / 'examples' / 'tagger.pt'}", *EXAMPLE, "-k", "robust"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "PASSED robustness_btag.py::robustness_pgd_half_sigma" in proc.stdout
    assert "PASSED robustness_readme.py::robustness_pgd_half_sigma" in proc.stdout


def test_model_fixture_override_example(tmp_path) -> None:
    conftest = _block(ROOT / "docs" / "plugin.md", "# conftest.py")
    (tmp_path / "conftest.py").write_text(conftest)
    namespace: dict = {}
    exec(conftest.split("@pytest.fixture")[0], namespace)  # the Tagger class, to make weights
    torch.manual_seed(0)
    torch.save(namespace["Tagger"]().state_dict(), tmp_path / "weights.pt")
    before = (tmp_path / "weights.pt").read_bytes()
    proc = _pytest(tmp_path, *EXAMPLE, "-k", "fgsm")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "PASSED" in proc.stdout and "unc.yaml::fgsm" in proc.stdout
    assert "model outputs read as logits" in proc.stdout
    assert (tmp_path / "weights.pt").read_bytes() == before


def test_chunked_audit_example_of_docs_scale(one_torch_thread: None) -> None:
    """docs/scale.md's ChunkedAudit script prints the one-process pgd fooling rate."""
    from pytest_hepguard.audit import Auditor
    from pytest_hepguard.events import load_events
    from pytest_hepguard.models import load_model
    from pytest_hepguard.uncertainties import load_uncertainties

    script = _block(ROOT / "docs" / "scale.md", "# chunked.py")
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    unc = load_uncertainties(ROOT / "examples" / "unc.yaml")
    events = load_events(
        ROOT / "examples" / "jets.root", unc.feature_names, label="label", tree="Events"
    )
    auditor = Auditor(load_model(ROOT / "examples" / "tagger.pt", torch.device("cpu")), events, unc)
    pgd = auditor.run("pgd", epsilon=1.0, steps=5)
    assert f"pgd fooling rate {pgd.fooling_rate:.4f}, AUC {pgd.auc_nominal:.4f}" in proc.stdout
    assert "'auc_error_bound'" in proc.stdout
