"""Bad input stops a hepguard run before any check: one clear message naming the file and the
key or column, exit code 4 (pytest's usage error), and nothing of the user's lost or overwritten.

Every test builds a tiny project (TorchScript model, 300-event ``.npz`` sample, uncertainty
YAML, and an older hepguard report at the ``--hepguard-json`` path), breaks one thing, runs
pytest in a subprocess, and compares the SHA-256 of every file in the folder before and after:
the inputs are unchanged, the old report is not overwritten, and no report (nor temporary
file) appears.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

#: Unrelated third-party plugins that take ~1.3 s to import in every subprocess; hepguard itself
#: still loads through its ``pytest11`` entry point.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

USAGE_ERROR = 4

UNC_YAML = """\
version: 1
features:
  a: {absolute: 0.1}
  b: {absolute: 0.1}
  c: {relative: 0.05}
data:
  path: data.npz
  label: label
gates:
  fgsm: {epsilon: 1.0, max_fooling_rate: 0.5}
"""

OLD_REPORT = {"tool": "pytest-hepguard", "report_version": 1, "checks": [], "old": True}

#: A module whose unpickling runs code: it leaves a marker file when an instance is loaded.
EVIL_MODULE = """\
from pathlib import Path

import torch


class EvilTagger(torch.nn.Sequential):
    def __setstate__(self, state):
        Path("CODE_FROM_THE_MODEL_FILE_RAN").write_text("unpickled")
        super().__setstate__(state)
"""


class TwoByTwo(torch.nn.Module):
    """Output [batch, 2, 2] instead of [batch, classes]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, :2], x[:, 1:3]], dim=1)


def save_script(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
        torch.jit.script(module).save(str(path))


def write_data(path: Path, n: int = 300, **overrides: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    columns = {
        "a": rng.normal(size=n),
        "b": rng.normal(size=n),
        "c": rng.normal(size=n) + 5,
        "label": rng.integers(0, 2, n),
    }
    np.savez(path, **{**columns, **overrides})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """model.pt (3 → 2 softmax MLP), data.npz, unc.yaml and an old hepguard report.json."""
    root = tmp_path.resolve()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2), torch.nn.Softmax(dim=1)
        )
    save_script(model, root / "model.pt")
    write_data(root / "data.npz")
    (root / "unc.yaml").write_text(UNC_YAML)
    (root / "report.json").write_text(json.dumps(OLD_REPORT))
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_refused(root: Path, *args: str, json_path: str | None = "report.json") -> str:
    """Run pytest in ``root``; assert exit code 4, no traceback, and no file created, changed or
    removed. Returns the output (stdout and stderr)."""
    before = snapshot(root)
    extra = ("--hepguard-json", json_path) if json_path is not None else ()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = "1"  # small samples: extra threads only contend
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *QUIET, *args, *extra],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout
    assert done.returncode == USAGE_ERROR, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    assert snapshot(root) == before, output
    return output


def audit(*, model: str = "model.pt", unc: str = "unc.yaml") -> tuple[str, ...]:
    return ("--hepguard-model", model, "--hepguard-uncertainties", unc)


def assert_says(output: str, *parts: str) -> None:
    """Every part appears on one and the same line of the output."""
    lines = [line for line in output.splitlines() if all(part in line for part in parts)]
    assert lines, f"no line with all of {parts!r} in:\n{output}"


# -- the uncertainty file ----------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(project: Path) -> None:
    """A YAML syntax error is reported with the file and the line, and stops the run."""
    (project / "unc.yaml").write_text("version: 1\nfeatures:\n  a: absolute: 0.1\n")
    output = run_refused(project, *audit())
    assert_says(output, "ERROR: hepguard:", f"{project / 'unc.yaml'}, line 3", "malformed YAML")


def test_unknown_key_lists_the_allowed_keys(project: Path) -> None:
    """A misspelt envelope key is an error with its dotted key, a suggestion, the allowed keys."""
    (project / "unc.yaml").write_text(UNC_YAML.replace("b: {absolute:", "b: {absolut:"))
    output = run_refused(project, *audit())
    assert_says(
        output,
        f"{project / 'unc.yaml'}, line 4: features.b.absolut: unknown key 'absolut'",
        "allowed keys: absolute, down, frozen, integer, max, min, relative, sentinel, std, up",
        "did you mean 'absolute'?",
    )


def test_negative_sigma(project: Path) -> None:
    """A negative sigma names the feature's key and the rule."""
    (project / "unc.yaml").write_text(UNC_YAML.replace("a: {absolute: 0.1}", "a: {absolute: -0.1}"))
    output = run_refused(project, *audit())
    assert_says(
        output, f"{project / 'unc.yaml'}, line 3: features.a.absolute: got -0.1", "must be >= 0"
    )


def test_both_absolute_and_relative(project: Path) -> None:
    """``absolute`` and ``relative`` on one feature is refused, saying to give only one."""
    (project / "unc.yaml").write_text(
        UNC_YAML.replace("a: {absolute: 0.1}", "a: {absolute: 0.1, relative: 0.02}")
    )
    output = run_refused(project, *audit())
    assert_says(
        output,
        f"{project / 'unc.yaml'}, line 3: features.a",
        "both absolute and relative given; give only one of absolute, relative, std",
    )


# -- the data ----------------------------------------------------------------------------


def test_feature_missing_from_the_data(project: Path) -> None:
    """A feature of the YAML that the data file lacks is named, with the data file."""
    (project / "unc.yaml").write_text(
        UNC_YAML.replace("  c: {relative: 0.05}\n", "  c: {relative: 0.05}\n  d: {absolute: 1}\n")
    )
    output = run_refused(project, *audit())
    assert_says(output, f"{project / 'data.npz'}: missing column: feature 'd'")


def test_label_column_missing(project: Path) -> None:
    """A ``data.label`` column absent from the file is named, with a suggestion."""
    (project / "unc.yaml").write_text(UNC_YAML.replace("label: label", "label: labels"))
    output = run_refused(project, *audit())
    assert_says(
        output,
        f"{project / 'data.npz'}: missing column: label column 'labels'",
        "did you mean 'label'?",
    )


def test_nan_in_the_data_names_the_column(project: Path) -> None:
    """A NaN in a feature names the file, the column and the first bad event."""
    b = np.random.default_rng(1).normal(size=300)
    b[7] = np.nan
    write_data(project / "data.npz", b=b)
    output = run_refused(project, *audit())
    assert_says(output, f"{project / 'data.npz'}: feature 'b' has 1 NaN/inf value", "event 7")


def test_empty_data_file(project: Path) -> None:
    """A data file with every column but no events is refused with ``no events``."""
    write_data(project / "data.npz", n=0)
    output = run_refused(project, *audit())
    assert_says(output, f"{project / 'data.npz'}: no events")


# -- the model ----------------------------------------------------------------------------


def test_model_input_width_differs_from_the_feature_count(project: Path) -> None:
    """A model expecting 4 inputs, given the YAML's 3 features, fails with both widths named."""
    save_script(torch.nn.Sequential(torch.nn.Linear(4, 2)), project / "model.pt")
    output = run_refused(project, *audit())
    assert_says(
        output,
        f"{project / 'model.pt'}: the model failed on an input of shape [256, 3] (3 features",
        "256x3 and 4x2",
    )


def test_model_output_is_not_batch_by_classes(project: Path) -> None:
    """A model returning [batch, 2, 2] is refused with the shape and what was expected."""
    save_script(TwoByTwo(), project / "model.pt")
    output = run_refused(project, *audit())
    assert_says(
        output,
        f"{project / 'model.pt'}: the model output has shape [256, 2, 2]",
        "expected [batch, classes]",
    )


def test_text_file_named_like_a_model(project: Path) -> None:
    """A text file named tagger.pt is 'not a model file', not a pickle needing code."""
    (project / "tagger.pt").write_text("# tagger\nthe weights are on EOS, ask Anna\n")
    output = run_refused(project, *audit(model="tagger.pt"))
    assert_says(output, f"{project / 'tagger.pt'}: not a model file")
    assert "pickled Python object" not in output


def test_pickled_module_is_refused_without_running_its_code(project: Path) -> None:
    """A full ``nn.Module`` saved with ``torch.save`` is refused: hepguard opens it with
    ``weights_only=True``, so the module's unpickling code (which leaves a marker) never runs."""
    (project / "evil_tagger.py").write_text(EVIL_MODULE)
    spec = importlib.util.spec_from_file_location("evil_tagger", project / "evil_tagger.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evil_tagger"] = module  # pickle looks the class up by module name
    try:
        spec.loader.exec_module(module)
        torch.save(module.EvilTagger(torch.nn.Linear(3, 2)), project / "tagger.pt")
    finally:
        del sys.modules["evil_tagger"]
    output = run_refused(project, *audit(model="tagger.pt"))
    assert_says(
        output,
        f"{project / 'tagger.pt'}: this file is a pickled Python object",
        "hepguard does not run code from model files",
    )
    assert not (project / "CODE_FROM_THE_MODEL_FILE_RAN").exists()


# -- the JSON report path ------------------------------------------------------------------------


def test_json_report_in_a_missing_folder(project: Path) -> None:
    """``--hepguard-json`` into a folder that does not exist is refused; the folder is not made."""
    output = run_refused(project, *audit(), json_path="reports/audit.json")
    assert_says(
        output,
        f"--hepguard-json {project / 'reports' / 'audit.json'}: the folder",
        "does not exist",
    )
    assert not (project / "reports").exists()


@pytest.mark.parametrize(
    ("name", "role"), [("model.pt", "model"), ("data.npz", "data"), ("unc.yaml", "uncertainties")]
)
def test_json_report_onto_an_input_file(project: Path, name: str, role: str) -> None:
    """``--hepguard-json`` pointing at the model, data or uncertainty file is refused (the file
    is unchanged: checked by the snapshot)."""
    output = run_refused(project, *audit(), json_path=name)
    assert_says(output, f"--hepguard-json {project / name}: is the {role} file")


@pytest.mark.parametrize(
    "content",
    ['{"tool": "my-own-script", "auc": 0.93}\n', "notes from the last review meeting\n"],
    ids=["other-json", "text"],
)
def test_json_report_onto_a_file_hepguard_did_not_write(project: Path, content: str) -> None:
    """An existing file that is not a hepguard report is never overwritten."""
    (project / "results.json").write_text(content)
    output = run_refused(project, *audit(), json_path="results.json")
    assert_says(
        output,
        f"--hepguard-json {project / 'results.json'}: the file exists and is not a hepguard report",
    )
    assert (project / "results.json").read_text() == content


# -- options ------------------------------------------------------------------------------


def test_model_without_uncertainties_is_a_usage_error(project: Path) -> None:
    """``--hepguard-model`` alone cannot audit anything: usage error naming the missing option."""
    output = run_refused(project, "--hepguard-model", "model.pt", json_path=None)
    assert_says(output, "ERROR: hepguard: --hepguard-model needs --hepguard-uncertainties")
