"""The README's two commands are true: CI runs the test command, and the main job passes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", text)
    assert match, f"README has no {marker} block"
    return match.group(1)


def test_ci_runs_the_readme_test_command() -> None:
    assert _command("test-command") in (ROOT / ".ci" / "run").read_text()


def test_readme_main_job_passes_and_prints_the_summary() -> None:
    argv = shlex.split(_command("main-job"))
    assert argv[:3] == ["python", "-m", "pytest"]
    proc = subprocess.run(
        [sys.executable, *argv[1:], "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "hepguard summary" in proc.stdout
    for gate in ("random", "fgsm", "pgd"):
        assert re.search(rf"^{gate}\s+1\s+0\.\d+ ± 0\.\d+", proc.stdout, re.M), gate
