"""The plugin under pytest-xdist (docs/xdist.md): the bundled example (examples/unc.yaml, plus one
gate that fails) audited once serially and once with ``-n 2``, in pytest subprocesses, on the
first 3000 events of examples/jets.root.

Covered: the checks spread over both workers; the controller's JSON report holds every check
once, in the gate order of the uncertainty file, with the numbers of the serial run (every field
but timings and the run's creation time); the baseline, HTML, Markdown and plots are written
once, by the controller; the files the workers wrote (pyhf workspace and patch, perturbed events)
are listed in the controller's one terminal summary and hold what the serial run wrote; the
comparison with the serial run's baseline finds no change; the failing gate makes the run exit
1; bad input stops an ``-n 2`` run with exit code 4 and hepguard's message, not an INTERNALERROR;
workers draw no progress bars.

The serial and the parallel run are module-scoped and reused by every test of the example.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from example_runs import (
    EXAMPLE_UNC,
    USAGE_ERROR,
    Run,
    assert_says,
    example_yaml,
    load_json,
    project,
    run_pytest,
)

from pytest_hepguard.progress import terminal_progress

pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install pytest-xdist)")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A gate the example's tagger fails (the ``pgd`` gate's attack, a tighter limit).
STRICT_GATE = "  pgd_strict: {attack: pgd, epsilon: 1.0, steps: 20, max_fooling_rate: 0.01}\n"

#: The checks of the run, in the order of the uncertainty file's ``gates:``.
GATES = [*(gate.name for gate in EXAMPLE_UNC.gates), "pgd_strict"]

#: Every output option but the HTML and the plots, each to a path in the run's folder.
OUTPUTS = (
    "--hepguard-json",
    "report.json",
    "--hepguard-save-baseline",
    "baseline.json",
    "--hepguard-markdown",
    "report.md",
    "--hepguard-save-perturbed",
    "perturbed",
    "--hepguard-pyhf",
    "workspace.json",
    "--hepguard-pyhf-patch",
    "patch.json",
)

#: The HTML report and the plots (matplotlib: 2/3 of a run's time), in the ``-n 2`` run only.
FIGURES = ("--hepguard-html", "report.html", "--hepguard-plots", "plots")

#: What a worker writes while it runs a check; the controller must list these.
WORKER_FILES = ("--hepguard-pyhf", "--hepguard-pyhf-patch", "--hepguard-save-perturbed")


@dataclass(frozen=True)
class Audit:
    root: Path
    run: Run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Audit, Audit]:
    """The example with the failing gate, audited serially, then with ``-n 2`` (verbose, to see
    which worker ran which gate), also writing the HTML report and the plots, and compared with
    the serial run's baseline."""
    base = tmp_path_factory.mktemp("xdist")
    gates = re.search(r"^gates:.*?(?=^\w|\Z)", example_yaml(), re.S | re.M)
    assert gates is not None
    text = example_yaml(gates=gates.group(0).rstrip("\n") + "\n" + STRICT_GATE)
    serial = project(base / "serial", text)
    parallel = project(base / "parallel", text)
    serial_run = run_pytest(serial, *OUTPUTS)
    parallel_run = run_pytest(
        parallel,
        *OUTPUTS,
        *FIGURES,
        "-n",
        "2",
        "-v",
        "--hepguard-compare",
        str(serial / "baseline.json"),
        "--hepguard-compare-fail",
        "fooling_rate:0,auc_drop:0",
    )
    return Audit(serial, serial_run), Audit(parallel, parallel_run)


def _comparable(root: Path, text: str) -> str:
    """``text`` with the run's folder (also as Markdown escapes it) replaced by ``<root>``."""
    return text.replace(str(root), "<root>").replace(str(root).replace("_", r"\_"), "<root>")


def _numbers(audit: Audit) -> dict:
    """The JSON report without what names time: ``created`` and every ``seconds``."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "created")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    report = (audit.root / "report.json").read_text(encoding="utf-8")
    return strip(json.loads(_comparable(audit.root, report)))  # type: ignore[return-value]


def _written(audit: Audit) -> list[tuple[str, str]]:
    """The ``hepguard --option: path`` lines of the summary, paths relative to the run's folder."""
    found = re.findall(r"^hepguard (--hepguard-[\w-]+): (.+)$", audit.run.output, re.M)
    return [(option, str(Path(path).relative_to(audit.root))) for option, path in found]


def test_xdist_reports_the_numbers_of_a_serial_run(runs: tuple[Audit, Audit]) -> None:
    serial, parallel = runs
    expected, got = _numbers(serial), _numbers(parallel)
    assert [c["name"] for c in got["checks"]] == GATES  # each once, in the file's order
    assert [c["name"] for c in expected["checks"]] == GATES
    for old, new in zip(expected["checks"], got["checks"], strict=True):
        assert new == old, f"check {old['name']}: -n 2 differs from the serial run"
    assert got == expected
    assert load_json(parallel.root / "baseline.json") == load_json(parallel.root / "report.json")
    markdown = [_comparable(a.root, (a.root / "report.md").read_text()) for a in runs]
    own, compared = markdown[1].split("\n### Compared with the baseline\n")  # -n 2 only
    assert own == markdown[0]
    assert "No regression beyond the margins" in compared
    for name in ("workspace.json", "patch.json"):  # written by a worker
        texts = [_comparable(a.root, (a.root / name).read_text()) for a in runs]
        assert texts[1] == texts[0], name
    files = sorted(p.name for p in (serial.root / "perturbed").iterdir())
    assert "pgd_strict.npz" in files
    assert sorted(p.name for p in (parallel.root / "perturbed").iterdir()) == files
    for name in files:
        with (
            np.load(serial.root / "perturbed" / name) as old,
            np.load(parallel.root / "perturbed" / name) as new,
        ):
            assert sorted(new.files) == sorted(old.files)
            for key in old.files:
                np.testing.assert_array_equal(new[key], old[key], err_msg=f"{name}: {key}")
    assert_says(parallel.run.output, "no regression beyond the --hepguard-compare-fail margins")


def test_xdist_controller_writes_every_report_and_the_summary_once(
    runs: tuple[Audit, Audit],
) -> None:
    serial, parallel = runs
    output = parallel.run.output
    ran = re.findall(r"^\[(gw\d+)\] \[[ \d]+%\] (?:PASSED|FAILED) unc\.yaml::(\w+)", output, re.M)
    assert sorted(item for _, item in ran) == sorted([*GATES, "pyhf_export"]), output
    workers = {worker for worker, _ in ran}
    assert workers == {"gw0", "gw1"}, f"the gates did not spread over both workers:\n{output}"
    assert output.count("hepguard summary") == 1
    assert output.count(f"hepguard compared with {serial.root / 'baseline.json'}") == 1
    table = output.split("hepguard summary", 1)[1]
    for gate in GATES:
        assert len(re.findall(rf"^{gate}\s+1\s+0\.\d+ ± 0\.\d+", table, re.M)) == 1, gate
    assert_says(table, "FAIL pgd_strict: fooling_rate")
    inputs = ["analysis_workspace.json", "unc.yaml"]
    outputs = [*OUTPUTS[1::2], *inputs]
    # the files asked for, nothing a worker left behind (copies, temporaries)
    assert sorted(p.name for p in serial.root.iterdir()) == sorted(outputs)
    assert sorted(p.name for p in parallel.root.iterdir()) == sorted([*outputs, *FIGURES[1::2]])
    html = (parallel.root / "report.html").read_text(encoding="utf-8")
    assert "pytest-hepguard" in html
    assert all(gate in html for gate in GATES)
    plots = [p.name for p in (parallel.root / "plots").iterdir()]
    assert plots and all(re.fullmatch(r"\w[\w.-]*\.(png|pdf)", name) for name in plots), plots
    written = _written(parallel)
    figures = [("--hepguard-html", "report.html"), ("--hepguard-plots", "plots")]
    assert [w for w in written if w in figures] == figures
    assert [w for w in written if w not in figures] == _written(serial)  # in the same order
    assert len(set(written)) == len(written)
    by_worker = [w for w in written if w[0] in WORKER_FILES]
    assert ("--hepguard-pyhf", "workspace.json") in by_worker
    assert ("--hepguard-pyhf-patch", "patch.json") in by_worker
    assert {path for option, path in by_worker if option == "--hepguard-save-perturbed"} == {
        f"perturbed/{p.name}" for p in (parallel.root / "perturbed").iterdir()
    }


def test_a_failing_gate_fails_the_xdist_run(runs: tuple[Audit, Audit]) -> None:
    for audit in runs:
        assert audit.run.returncode == 1, audit.run.output[-3000:]
        report = load_json(audit.root / "report.json")
        assert report["passed"] is False
        failed = [c["name"] for c in report["checks"] if c["outcome"] == "failed"]
        assert failed == ["pgd_strict"]
        assert re.search(r"\b1 failed, 8 passed\b", audit.run.output), audit.run.output[-2000:]


def test_bad_input_stops_an_xdist_run_with_exit_code_4(tmp_path: Path) -> None:
    """A worker that meets bad input (here: no data file) stops the run with hepguard's message
    and exit code 4 (pytest-xdist alone would end in an INTERNALERROR, exit code 3)."""
    root = project(tmp_path, example_yaml())
    done = run_pytest(
        root, "--hepguard-data", "missing.root", "--hepguard-json", "r.json", "-n", "2"
    )
    assert done.returncode == USAGE_ERROR, done.output[-3000:]
    assert "INTERNALERROR" not in done.output
    assert_says(done.output, "hepguard:", str(root / "missing.root"), "no such data file")
    assert not (root / "r.json").exists()


def test_xdist_workers_draw_no_progress() -> None:
    """Only the controller owns the terminal: in a worker (``config.workerinput``) no bar."""
    worker = SimpleNamespace(workerinput={"workerid": "gw0"})
    assert terminal_progress(worker) is None
