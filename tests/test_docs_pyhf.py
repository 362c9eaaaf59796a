"""docs/pyhf.md and examples/pyhf_workflow.py run as written on the bundled example: the script
writes the workspace and the patch, prints the numbers the page quotes, and the page's Python
snippets and its jsonpatch command work on what the script wrote."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "pyhf.md").read_text(encoding="utf-8")
ANALYSIS = ROOT / "examples" / "analysis_workspace.json"

pyhf = pytest.importorskip("pyhf")
jsonpatch = pytest.importorskip("jsonpatch")


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """examples/pyhf_workflow.py run into a fresh folder: (folder, its output)."""
    out = tmp_path_factory.mktemp("workflow")
    before = ANALYSIS.read_bytes()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pyhf_workflow.py"), str(out)],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ANALYSIS.read_bytes() == before  # the analysis workspace is only read
    return out, proc.stdout


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC, re.S)


def test_workflow_prints_the_numbers_of_the_page(workflow: tuple[Path, str]) -> None:
    _, stdout = workflow
    alone = re.search(r"hepguard workspace: sigma\(mu\) (\S+) without, (\S+) with", stdout)
    patched = re.search(r"analysis workspace: sigma\(mu\) (\S+) without, (\S+) with", stdout)
    assert alone and patched, stdout
    table = "| hepguard's own (`--hepguard-pyhf`: templates, `mu`, staterror) | {} | {} |"
    assert table.format(*alone.groups()) in DOC
    assert f"| {patched.group(1)} | {patched.group(2)} |" in DOC
    for name, sigma, up, down in re.findall(
        r"(hepguard_\w+)\s+([\d.]+)\s+([+-][\d.]+)\s+([+-][\d.]+)", stdout
    ):
        row = f"| `{name}` | {sigma} | {up.replace('-', '−')} | {down.replace('-', '−')} |"
        assert row in DOC, row


def test_page_snippets_run_on_the_written_files(
    workflow: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = workflow
    (out / "examples").mkdir(exist_ok=True)
    shutil.copy(ANALYSIS, out / "examples" / "analysis_workspace.json")
    monkeypatch.chdir(out)
    backend = pyhf.get_backend()
    try:
        fit, patch, patchset = _snippets()
        namespace: dict = {}
        exec(fit, namespace)
        assert namespace["errors"][namespace["model"].config.poi_index] > 0
        exec(patch + patchset, namespace)
        names = set(namespace["patched"].model().config.parameters)
        assert {"hepguard_hidden", "hepguard_systematic_JES", "mu"} <= names
        assert namespace["workspace"].model().config.parameters == (
            namespace["patched"].model().config.parameters
        )
    finally:
        pyhf.set_backend(*backend)


def test_jsonpatch_command_of_the_page(workflow: tuple[Path, str]) -> None:
    out, _ = workflow
    tool = shutil.which("jsonpatch")
    if tool is None:
        pytest.skip("the jsonpatch command line tool is not on PATH")
    proc = subprocess.run(
        [tool, str(ANALYSIS), str(out / "hepguard_patch.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    patched = json.loads(proc.stdout)
    model = pyhf.Workspace(patched).model()
    assert "hepguard_systematic_track_resolution" in model.config.parameters
