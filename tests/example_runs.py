"""Plain helpers (no fixtures) for end-to-end tests that run the bundled example through the
plugin in pytest subprocesses: a copy of examples/unc.yaml (and of the analysis workspace its
``pyhf.patch`` names) in a temporary folder, audited on examples/tagger.pt and
examples/jets.root."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytest_hepguard.uncertainties import load_uncertainties

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATA = EXAMPLES / "jets.root"
MODEL = EXAMPLES / "tagger.pt"
WORKSPACE = EXAMPLES / "analysis_workspace.json"
EXAMPLE_YAML = (EXAMPLES / "unc.yaml").read_text(encoding="utf-8")

#: Unrelated third-party plugins that take ~1.3 s to import in every subprocess; hepguard itself
#: still loads through its ``pytest11`` entry point.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

#: Events audited per run: the first 3000 keep every run short.
N_EVENTS = 3000

#: The example's features, in the model's input order, and its classes.
EXAMPLE_UNC = load_uncertainties(EXAMPLES / "unc.yaml")
FEATURES = EXAMPLE_UNC.feature_names
CLASSES = EXAMPLE_UNC.decision.classes

USAGE_ERROR = 4


@dataclass(frozen=True)
class Run:
    """A finished pytest subprocess."""

    returncode: int
    output: str  # stdout and stderr, interleaved


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of the example's data, model and analysis workspace and of every file under
    ``root``."""
    files = {"DATA": DATA, "MODEL": MODEL, "WORKSPACE": WORKSPACE}
    files.update({str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()})
    return {name: sha256(path) for name, path in files.items()}


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the uncertainty file exactly once"
    return text.replace(old, new)


def section(text: str, key: str, new: str) -> str:
    """``text`` with the top-level section ``key:`` (up to the next top-level key) replaced by
    ``new`` (which ends with a newline)."""
    pattern = re.compile(rf"^{key}:.*?(?=^\w|\Z)", re.S | re.M)
    assert len(pattern.findall(text)) == 1, key
    return pattern.sub(lambda _: new, text)


def example_yaml(**sections: str) -> str:
    """The example's uncertainty file with ``data.path`` absolute and the given top-level
    sections replaced; ``pyhf.patch.workspace`` stays ``analysis_workspace.json`` (beside the
    copy, see :func:`project`)."""
    text = replace_once(EXAMPLE_YAML, "  path: jets.root\n", f"  path: {DATA}\n")
    for key, new in sections.items():
        text = section(text, key, new)
    return text


def project(root: Path, text: str) -> Path:
    """``root`` holding ``unc.yaml`` = ``text`` and a copy of the example's analysis workspace;
    returns ``root`` (resolved)."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "unc.yaml").write_text(text, encoding="utf-8")
    shutil.copyfile(WORKSPACE, root / "analysis_workspace.json")
    return root


def run_pytest(root: Path, *args: str, events: int | None = N_EVENTS) -> Run:
    """Audit examples/tagger.pt with ``root/unc.yaml``: ``python -m pytest`` in ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = "1"  # small samples: extra threads only contend
    command = [
        sys.executable,
        "-m",
        "pytest",
        *QUIET,
        "--rootdir",
        str(root),
        "--hepguard-model",
        str(MODEL),
        "--hepguard-uncertainties",
        "unc.yaml",
        *(("--hepguard-events", str(events)) if events else ()),
        *args,
    ]
    done = subprocess.run(
        command,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    return Run(done.returncode, done.stdout)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def checks_by_name(report: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["checks"]}


def assert_says(output: str, *parts: str) -> None:
    """Every part appears on one and the same line of the output."""
    lines = [line for line in output.splitlines() if all(part in line for part in parts)]
    assert lines, f"no line with all of {parts!r} in:\n{output}"


def example_columns(n: int) -> dict[str, np.ndarray]:
    """The first ``n`` events of examples/jets.root: every feature and the label."""
    import uproot

    with uproot.open(DATA) as root_file:
        arrays = root_file["Events"].arrays([*FEATURES, "label"], library="np", entry_stop=n)
    return {name: np.asarray(values) for name, values in arrays.items()}
