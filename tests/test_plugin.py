"""End-to-end tests of the pytest plugin: real pytest runs in subprocesses (the plugin keeps state
per run), on a tiny TorchScript model, a 300-event ``.npz`` sample and a small uncertainty file
built in a temporary folder; the bundled example is run once, for the README's main job.

Runs shared by several tests (the example, the tiny project's main run and its reruns) are
module-scoped fixtures, so every pytest subprocess starts once; the tiny project's three runs go
side by side.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pytest_hepguard.report.schema import validate_report

REPO = Path(__file__).resolve().parents[1]

#: Unrelated third-party plugins that take ~1.3 s to import in every subprocess; hepguard itself
#: still loads through its ``pytest11`` entry point.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

#: Modules the plugin must not import before an uncertainty file is given (the YAML parser and
#: the uncertainty model cost tens of ms per pytest run: docs/performance.md).
HEAVY = (
    "torch",
    "onnxruntime",
    "scipy",
    "uproot",
    "pyhf",
    "matplotlib",
    "yaml",
    "pytest_hepguard.uncertainties",
)

N_EVENTS = 300

#: The three gates of the tiny project; ``{pgd_limit}`` is the pgd gate's max_fooling_rate.
UNC_YAML = """\
version: 1
features:
  a: {{absolute: 0.2}}
  b: {{relative: 0.05}}
  c: {{std: 0.1}}
{decision}data:
  path: data.npz
  label: label
gates:
  random: {{epsilon: 1.0}}
  fgsm:   {{epsilon: 1.0, max_fooling_rate: 0.5}}
  pgd:    {{epsilon: 1.0, steps: 5, max_fooling_rate: {pgd_limit}}}
"""

#: Every attribute docs/plugin.md promises on the result of ``hepguard.attack``.
DOCUMENTED_ATTRIBUTES = (
    "fooling_rate",
    "fooling_rate_err",
    "fooling_rate_correct",
    "random_fooling_rate",
    "auc_nominal",
    "auc_perturbed",
    "auc_drop",
    "output_ks",
    "output_wasserstein",
    "mean_shift",
    "efficiency_nominal",
    "efficiency_perturbed",
    "max_displacement_sigma",
)

ROBUSTNESS_FILE = f"""\
import json
from pathlib import Path

ATTRIBUTES = {DOCUMENTED_ATTRIBUTES!r}


def robustness_fgsm_half_sigma(hepguard, pytestconfig):
    result = hepguard.attack("fgsm", epsilon=0.5)
    values = {{name: getattr(result, name) for name in ATTRIBUTES}}
    # beside this run's JSON report: other runs in the folder use other seeds
    Path(pytestconfig.getoption("hepguard_json") + ".attack").write_text(json.dumps(values))
    assert 0.0 <= result.fooling_rate <= 1.0


def helper_not_collected(hepguard):
    raise AssertionError("only robustness_* functions are tests")
"""

MIXED_TEST_FILE = """\
def test_ordinary():
    assert 1 + 1 == 2


def robustness_in_a_test_file(hepguard):
    assert hepguard.attack("random", epsilon=0.5).n_events == 300
"""


@dataclass(frozen=True)
class Run:
    """A finished pytest subprocess."""

    returncode: int
    output: str  # stdout and stderr, interleaved

    def report(self, path: Path) -> dict:
        return json.loads(path.read_text(encoding="utf-8"))


def start_pytest(cwd: Path, *args: str, quiet: bool = True) -> subprocess.Popen:
    """Start ``python -m pytest *args`` in ``cwd``, with the installed plugins (hepguard too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = "1"  # small samples: extra threads only contend
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *(QUIET if quiet else ()), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> Run:
    output, _ = process.communicate(timeout=300)
    return Run(process.returncode, output)


def run_pytest(cwd: Path, *args: str, quiet: bool = True) -> Run:
    """Run ``python -m pytest *args`` in ``cwd`` to the end."""
    return finish(start_pytest(cwd, *args, quiet=quiet))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seeded(build, seed: int = 0) -> torch.nn.Module:
    """``build()`` under a fixed torch seed, leaving this process's global RNG untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().eval()


def write_data(path: Path, n: int = N_EVENTS) -> tuple[np.ndarray, np.ndarray]:
    """Three features a, b, c (signal shifted in a and b) and a 0/1 ``label``; returns x, labels."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 3)) + labels[:, None] * np.array([1.0, 0.5, 0.0])
    np.savez(path, a=x[:, 0], b=x[:, 1], c=x[:, 2], label=labels)
    return x.astype(np.float32), labels


def softmax_tagger() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1)
    )


def sigmoid_tagger() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1), torch.nn.Sigmoid()
    )


def make_project(
    root: Path,
    *,
    model=softmax_tagger,
    pgd_limit: float = 0.5,
    working_point: bool = True,
) -> Path:
    """model.pt (TorchScript), data.npz and unc.yaml in ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    if model is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
            torch.jit.script(seeded(model)).save(str(root / "model.pt"))
    write_data(root / "data.npz")
    decision = "decision:\n  working_point: {efficiency: 0.6}\n" if working_point else ""
    (root / "unc.yaml").write_text(UNC_YAML.format(decision=decision, pgd_limit=pgd_limit))
    return root


def checks_by_name(report: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["checks"]}


def without_timing(report: dict) -> dict:
    """The report minus what legitimately changes between identical runs."""
    out = {k: v for k, v in report.items() if k != "created"}
    out["checks"] = [{k: v for k, v in c.items() if k != "seconds"} for c in report["checks"]]
    return out


def audit_args(json_name: str = "report.json") -> tuple[str, ...]:
    return (
        "--hepguard-model",
        "model.pt",
        "--hepguard-uncertainties",
        "unc.yaml",
        "--hepguard-json",
        json_name,
    )


# -- shared runs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> tuple[Run, dict]:
    """The README main job, verbatim, plus a JSON report in a temporary folder."""
    report = tmp_path_factory.mktemp("example") / "example.json"
    run = run_pytest(
        REPO,
        "examples",
        "--hepguard-model",
        "examples/tagger.pt",
        "--hepguard-uncertainties",
        "examples/unc.yaml",
        "--hepguard-json",
        str(report),
        "-p",
        "no:cacheprovider",
        quiet=False,
    )
    assert run.returncode == 0, run.output
    return run, run.report(report)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny project with a robustness file, a test file holding a robustness function, and
    an old hepguard report at the JSON path (a rerun must overwrite it)."""
    root = make_project(tmp_path_factory.mktemp("tiny"))
    (root / "robustness_tiny.py").write_text(ROBUSTNESS_FILE)
    (root / "test_mixed.py").write_text(MIXED_TEST_FILE)
    old = {"tool": "pytest-hepguard", "report_version": 1, "checks": [], "stale": True}
    (root / "report.json").write_text(json.dumps(old))
    return root


@pytest.fixture(scope="module")
def tiny_runs(tiny) -> dict[str, Run]:
    """Three runs of the tiny project, side by side (they write different files):

    - ``first``: seed 0, JSON over the old report, junitxml, verbose;
    - ``again``: the same (seed 0) into another JSON file;
    - ``seed1``: the same with ``--hepguard-seed 1``.
    """
    processes = {
        "first": start_pytest(tiny, *audit_args(), "--junitxml", "junit.xml", "-v"),
        "again": start_pytest(tiny, *audit_args("rerun.json"), "--junitxml", "j2.xml", "-v"),
        "seed1": start_pytest(tiny, *audit_args("seed1.json"), "--hepguard-seed", "1", "-v"),
    }
    return {name: finish(process) for name, process in processes.items()}


@pytest.fixture(scope="module")
def tiny_run(tiny_runs) -> Run:
    return tiny_runs["first"]


@pytest.fixture(scope="module")
def tiny_rerun(tiny_runs) -> Run:
    return tiny_runs["again"]


@pytest.fixture(scope="module")
def tiny_seed1(tiny_runs) -> Run:
    return tiny_runs["seed1"]


# -- 1. the README main job ------------------------------------------------------------------


def test_readme_main_job_passes_and_attacks_beat_noise(example_run) -> None:
    """The README command exits 0 with the summary table (random, fgsm, pgd rows), and in its
    JSON report FGSM and PGD flip more decisions than Gaussian noise of the same size by more
    than three combined standard errors (the issue's "done when")."""
    run, report = example_run
    assert not re.search(r"\d+ failed", run.output.splitlines()[-1])  # "1 xfailed" is expected
    assert "hepguard summary" in run.output
    summary = run.output.split("hepguard summary", 1)[1].splitlines()
    assert summary[1].split()[:2] == ["check", "eps"]
    rows = {line.split()[0] for line in summary[2:] if line.strip()}
    assert {"random", "fgsm", "pgd"} <= rows
    assert report["passed"] is True
    checks = checks_by_name(report)
    for gate in ("fgsm", "pgd"):
        entry = checks[gate]
        combined = math.hypot(entry["fooling_rate_err"], entry["random_fooling_rate_err"])
        margin = entry["fooling_rate"] - entry["random_fooling_rate"]
        assert margin > 3 * combined, (gate, entry["fooling_rate"], entry["random_fooling_rate"])
        assert entry["random_fooling_rate"] == checks["random"]["fooling_rate"]


# -- 2. seeds ------------------------------------------------------------------------------


def test_same_seed_same_numbers_other_seed_other_noise(tiny, tiny_run, tiny_rerun, tiny_seed1):
    """Two runs with the same seed write identical reports (all but ``created`` and each check's
    ``seconds``); ``--hepguard-seed 1`` draws other noise, so the random check's numbers change."""
    for run in (tiny_run, tiny_rerun, tiny_seed1):
        assert run.returncode == 0, run.output
    first = tiny_run.report(tiny / "report.json")
    again = tiny_rerun.report(tiny / "rerun.json")
    other = tiny_seed1.report(tiny / "seed1.json")
    assert without_timing(first) == without_timing(again)
    assert other["seed"] == 1 and first["seed"] == 0
    noise0, noise1 = checks_by_name(first)["random"], checks_by_name(other)["random"]
    noise0.pop("seconds"), noise1.pop("seconds")
    assert noise0 != noise1
    assert noise0["mean_abs_displacement_sigma"] != noise1["mean_abs_displacement_sigma"]


# -- 3. a failing gate ---------------------------------------------------------------------


def test_failing_gate_fails_the_run_and_the_report(tmp_path) -> None:
    """A gate whose limit is exceeded fails its test item (exit code 1) with the documented
    message, and the JSON report marks that check and the whole report as not passed."""
    make_project(tmp_path, pgd_limit=0.0)
    run = run_pytest(tmp_path, *audit_args())
    assert run.returncode == 1, run.output
    assert "hepguard gate 'pgd' failed" in run.output
    assert "exceeds max_fooling_rate 0" in run.output
    assert "1 failed, 2 passed" in run.output
    report = run.report(tmp_path / "report.json")
    assert report["passed"] is False
    checks = checks_by_name(report)
    assert checks["pgd"]["passed"] is False
    assert checks["pgd"]["outcome"] == "failed"
    assert checks["pgd"]["failures"][0].startswith("fooling_rate ")
    assert checks["fgsm"]["passed"] is True and checks["fgsm"]["outcome"] == "passed"


# -- 4. -k -------------------------------------------------------------------------------


def test_k_selects_one_gate(tmp_path) -> None:
    """Gates are test items named after their key: ``-k fgsm`` runs ``unc.yaml::fgsm`` only and
    pytest counts the other two as deselected."""
    make_project(tmp_path)
    run = run_pytest(tmp_path, *audit_args(), "-k", "fgsm", "-v")
    assert run.returncode == 0, run.output
    assert "collected 3 items / 2 deselected / 1 selected" in run.output
    assert "unc.yaml::fgsm PASSED" in run.output
    assert "unc.yaml::pgd" not in run.output and "unc.yaml::random" not in run.output
    report = run.report(tmp_path / "report.json")
    assert [(c["name"], c["test"]) for c in report["checks"]] == [("fgsm", "unc.yaml::fgsm")]


# -- 5. junitxml -------------------------------------------------------------------------


def test_junitxml_has_the_result_property_of_each_gate(tiny, tiny_run) -> None:
    """Each gate's testcase in ``--junitxml`` carries a ``hepguard_result`` property holding the
    check's JSON entry."""
    assert tiny_run.returncode == 0, tiny_run.output
    root = ET.parse(tiny / "junit.xml").getroot()
    gates = {}
    for case in root.iter("testcase"):
        if case.get("classname") == "unc.yaml":
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            gates[case.get("name")] = json.loads(props["hepguard_result"])
    assert set(gates) == {"random", "fgsm", "pgd"}
    for name, entry in gates.items():
        assert entry["name"] == name
        assert entry["test"] == f"unc.yaml::{name}"
        assert entry["n_events"] == N_EVENTS


# -- 6. robustness_* tests ------------------------------------------------------------------


def test_robustness_functions_get_the_fixture_and_are_reported(tiny, tiny_run) -> None:
    """``robustness_*`` functions (in ``robustness_*.py`` and in ``test_*.py`` files) are
    collected and get the ``hepguard`` fixture; ``attack`` returns the documented attributes,
    and the check appears in the summary and the JSON report as ``<test>:fgsm``."""
    assert tiny_run.returncode == 0, tiny_run.output
    assert "robustness_tiny.py::robustness_fgsm_half_sigma PASSED" in tiny_run.output
    assert "test_mixed.py::robustness_in_a_test_file PASSED" in tiny_run.output
    assert "test_mixed.py::test_ordinary PASSED" in tiny_run.output
    assert "helper_not_collected" not in tiny_run.output
    assert "6 passed" in tiny_run.output
    summary = tiny_run.output.split("hepguard summary", 1)[1]
    assert "\nrobustness_fgsm_half_sigma:fgsm " in summary

    values = json.loads((tiny / "report.json.attack").read_text())
    assert set(values) == set(DOCUMENTED_ATTRIBUTES)
    entry = checks_by_name(tiny_run.report(tiny / "report.json"))["robustness_fgsm_half_sigma:fgsm"]
    assert entry["test"] == "robustness_tiny.py::robustness_fgsm_half_sigma"
    assert entry["attack"] == "fgsm" and entry["params"]["epsilon"] == 0.5
    assert entry["limits"] == {} and entry["outcome"] == "passed"
    for name in DOCUMENTED_ATTRIBUTES:
        assert values[name] == entry[name], name
    assert set(values["max_displacement_sigma"]) == {"a", "b", "c"}
    assert max(values["max_displacement_sigma"].values()) <= 0.5 * (1 + 1e-4)
    for name in ("efficiency_nominal", "efficiency_perturbed", "auc_nominal"):
        assert isinstance(values[name], float), name


# -- 7. without hepguard options --------------------------------------------------------------


def test_without_options_hepguard_stays_out_of_the_way(tmp_path) -> None:
    """Without ``--hepguard-uncertainties``: plain tests run, a test using the ``hepguard``
    fixture is skipped saying which option is missing, ``robustness_*`` files and functions are
    not collected, no summary is printed, and no heavy module is imported."""
    (tmp_path / "test_plain.py").write_text(
        "def test_plain():\n    assert 1 + 1 == 2\n\n\n"
        "def robustness_not_a_test_here():\n    raise AssertionError\n"
    )
    (tmp_path / "test_fixture.py").write_text(
        "def test_needs_hepguard(hepguard):\n    raise AssertionError('must be skipped')\n"
    )
    (tmp_path / "robustness_never.py").write_text("raise ImportError('must not be collected')\n")
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            f"""\
            import json
            import sys
            from pathlib import Path


            def pytest_sessionfinish(session):
                heavy = [m for m in {HEAVY!r} if m in sys.modules]
                Path("heavy_modules.json").write_text(json.dumps(heavy))
            """
        )
    )
    run = run_pytest(tmp_path, "-v", "-rs")
    assert run.returncode == 0, run.output
    assert "test_plain.py::test_plain PASSED" in run.output
    assert "test_fixture.py::test_needs_hepguard SKIPPED" in run.output
    skip_lines = [line for line in run.output.splitlines() if line.startswith("SKIPPED [1]")]
    assert len(skip_lines) == 1 and "--hepguard-uncertainties" in skip_lines[0], run.output
    assert "1 passed, 1 skipped" in run.output
    assert "robustness_never" not in run.output
    assert "robustness_not_a_test_here" not in run.output
    assert "hepguard summary" not in run.output
    assert json.loads((tmp_path / "heavy_modules.json").read_text()) == []


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    """``import pytest_hepguard.plugin`` in a fresh interpreter leaves torch, onnxruntime, scipy,
    uproot, pyhf, matplotlib, yaml and the uncertainty model unimported."""
    code = (
        "import json, sys\n"
        "import pytest_hepguard.plugin\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == []


# -- 8. overriding the model fixture ----------------------------------------------------------

CONFTEST_MODEL = """\
import pytest
import torch


@pytest.fixture(scope="session")
def hepguard_model():
    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor({weight}))
        linear.bias.zero_()
    # dropout: outputs are only reproducible if hepguard puts the module in eval mode
    return torch.nn.Sequential(torch.nn.Dropout(p=0.5), linear)
"""


def test_model_fixture_overridden_in_conftest(tmp_path) -> None:
    """A ``hepguard_model`` fixture in conftest.py returning an ``nn.Module`` built in code (no
    ``--hepguard-model``) is what the gates audit, in eval mode: the reported nominal AUC is that
    of the module's own softmax output (logits detected by ``output: auto``)."""
    weight = [[-1.0, -0.5, 0.0], [1.0, 0.5, 0.0]]
    make_project(tmp_path, model=None, working_point=False)
    (tmp_path / "conftest.py").write_text(CONFTEST_MODEL.format(weight=weight))
    run = run_pytest(
        tmp_path, "--hepguard-uncertainties", "unc.yaml", "--hepguard-json", "report.json"
    )
    assert run.returncode == 0, run.output
    assert "3 passed" in run.output
    report = run.report(tmp_path / "report.json")
    assert [c["name"] for c in report["checks"]] == ["random", "fgsm", "pgd"]
    assert report["inputs"]["model"]["sha256"] is None
    assert "model outputs read as logits" in report["assumptions"]

    x, labels = write_data(tmp_path / "again.npz")
    probs = torch.softmax(torch.from_numpy(x) @ torch.tensor(weight).T, dim=1)[:, 1].numpy()
    for entry in report["checks"]:
        assert entry["auc_nominal"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-9)


# -- 9. one-output sigmoid tagger -----------------------------------------------------------


def test_one_output_sigmoid_tagger(tmp_path) -> None:
    """A binary tagger with one sigmoid output and 0/1 labels (``output: auto``) runs every gate;
    the reported AUC equals sklearn's on the nominal outputs and the gradient attacks move it."""
    make_project(tmp_path, model=sigmoid_tagger, working_point=False)
    run = run_pytest(tmp_path, *audit_args())
    assert run.returncode == 0, run.output
    assert "3 passed" in run.output
    report = run.report(tmp_path / "report.json")
    assert "model outputs read as probabilities" in report["assumptions"]
    assert "discriminant = the model's single output (default)" in report["assumptions"]

    x, labels = write_data(tmp_path / "again.npz")
    with torch.no_grad():
        scores = seeded(sigmoid_tagger)(torch.from_numpy(x))[:, 0].numpy()
    expected = roc_auc_score(labels, scores)
    checks = checks_by_name(report)
    for entry in checks.values():
        assert entry["auc_nominal"] == pytest.approx(expected, abs=1e-9)
        assert entry["n_events"] == N_EVENTS
    for gate in ("fgsm", "pgd"):
        assert checks[gate]["fooling_rate"] > 0.0
        assert checks[gate]["zero_gradient_fraction"] == 0.0


# -- 10. --hepguard-events ----------------------------------------------------------------------


def test_events_option_audits_the_first_n_events(tmp_path) -> None:
    """``--hepguard-events 100`` audits exactly 100 of the file's 300 events in every check."""
    make_project(tmp_path)
    run = run_pytest(tmp_path, *audit_args(), "--hepguard-events", "100")
    assert run.returncode == 0, run.output
    checks = run.report(tmp_path / "report.json")["checks"]
    assert len(checks) == 3
    assert {c["n_events"] for c in checks} == {100}


# -- 11. ini configuration ----------------------------------------------------------------------


def test_ini_options_activate_the_audit(tmp_path) -> None:
    """``hepguard_uncertainties`` and ``hepguard_model`` in pytest.ini, relative to the rootdir,
    turn the audit on even when pytest is started from a subfolder."""
    make_project(tmp_path / "audit")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nhepguard_uncertainties = audit/unc.yaml\nhepguard_model = audit/model.pt\n"
    )
    (tmp_path / "elsewhere").mkdir()
    run = run_pytest(tmp_path / "elsewhere", "-v")
    assert run.returncode == 0, run.output
    assert f"hepguard: model {tmp_path.resolve() / 'audit' / 'model.pt'}" in run.output
    for gate in ("random", "fgsm", "pgd"):
        assert f"::{gate} PASSED" in run.output
    assert "hepguard summary" in run.output


# -- 12. report contents ---------------------------------------------------------------------


def test_report_identifies_its_inputs_and_overwrites_its_own_report(tiny, tiny_run) -> None:
    """The JSON report names the tool and format version, records torch's version and the
    SHA-256 of the model, data and uncertainty files, and replaces an older hepguard report at
    the same path."""
    assert tiny_run.returncode == 0, tiny_run.output
    report = tiny_run.report(tiny / "report.json")
    assert report["tool"] == "pytest-hepguard"
    assert report["report_version"] == 1
    assert report["versions"]["torch"] == torch.__version__
    for role, name in (("model", "model.pt"), ("data", "data.npz"), ("uncertainties", "unc.yaml")):
        assert report["inputs"][role]["path"] == str(tiny.resolve() / name)
        assert report["inputs"][role]["sha256"] == sha256(tiny / name), role
    assert "stale" not in report
    assert len(report["checks"]) == 5
    assert not list(tiny.glob(".report.json.*"))  # no temporary file left behind


# -- 13. baseline round trip -----------------------------------------------------------------


def fragile_tagger() -> torch.nn.Module:
    """The softmax tagger with its first layer four times steeper: flips more decisions."""
    model = softmax_tagger()
    with torch.no_grad():
        model[0].weight.mul_(4.0)
    return model


def test_baseline_round_trip_save_change_model_compare_fail(pytester: pytest.Pytester) -> None:
    """Save a baseline, compare the same model (passes, deltas 0), change the model and compare
    with margins (exit code 1, old/new/delta of each regressed metric as in the two JSON
    reports), then change the data file (a warning naming the data hash). The baseline file is
    never rewritten by a comparison."""
    root = make_project(pytester.path)
    save = pytester.runpytest_subprocess(
        *QUIET, *audit_args("old.json"), "--hepguard-save-baseline", "base.json"
    )
    assert save.ret == 0, save.stdout.str()
    baseline_text = (root / "base.json").read_text(encoding="utf-8")
    baseline = json.loads(baseline_text)
    validate_report(baseline, "base.json")
    assert baseline == json.loads((root / "old.json").read_text(encoding="utf-8"))

    margins = ("--hepguard-compare", "base.json", "--hepguard-compare-fail", "fooling_rate:0.02")
    same = pytester.runpytest_subprocess(*QUIET, *audit_args("same.json"), *margins)
    assert same.ret == 0, same.stdout.str()
    same.stdout.fnmatch_lines(
        [
            "*hepguard compared with*base.json*",
            "same model as the baseline (sha256 *",
            "fgsm*fooling_rate*unchanged (allowed 0.02)",
            "no regression beyond the --hepguard-compare-fail margins",
        ]
    )

    make_project(root, model=fragile_tagger)
    changed = pytester.runpytest_subprocess(*QUIET, *audit_args("new.json"), *margins)
    out = changed.stdout.str()
    assert changed.ret == 1, out
    assert "3 passed" in out  # every gate passed: the exit code comes from the comparison
    assert "model changed: sha256" in out
    new = json.loads((root / "new.json").read_text(encoding="utf-8"))
    old_checks, new_checks = checks_by_name(baseline), checks_by_name(new)
    regressed = []
    for name in ("random", "fgsm", "pgd"):
        old_rate = old_checks[name]["fooling_rate"]
        new_rate = new_checks[name]["fooling_rate"]
        row = next(line for line in out.splitlines() if line.split()[:2] == [name, "fooling_rate"])
        assert row.split()[2:5] == [
            f"{old_rate:.4g}",
            f"{new_rate:.4g}",
            f"{new_rate - old_rate:+.4g}",
        ]
        if new_rate - old_rate > 0.02:
            regressed.append(name)
            assert (
                f"REGRESSION {name}: fooling_rate rose from {old_rate:.4g} to {new_rate:.4g}" in out
            )
            assert "REGRESSED (allowed 0.02)" in row
    assert {"fgsm", "pgd"} <= set(regressed)  # the steeper model is easier to fool
    assert f"{len(regressed)} regression(s) beyond the --hepguard-compare-fail margins" in out

    relative = pytester.runpytest_subprocess(
        *QUIET,
        *audit_args("rel.json"),
        "--hepguard-compare",
        "base.json",
        "--hepguard-compare-fail",
        "fooling_rate:1000%",
    )
    assert relative.ret == 0, relative.stdout.str()  # a 10x margin lets the change through

    np.savez(root / "data.npz", **{**np.load(root / "data.npz"), "c": np.zeros(N_EVENTS)})
    other_data = pytester.runpytest_subprocess(*QUIET, *audit_args("d.json"), *margins[:2])
    assert other_data.ret == 0, other_data.stdout.str()  # no margins: shown, nothing fails
    other_data.stdout.fnmatch_lines(["warning: the baseline was made from another data file*"])
    assert (root / "base.json").read_text(encoding="utf-8") == baseline_text
