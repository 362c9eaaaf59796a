"""pytest hooks of hepguard, nothing else (entry point ``pytest11: hepguard``).

Loads in every pytest run of the user's environment, so it imports no torch, onnxruntime, pyhf
or scipy: the rest of the package is imported when a ``--hepguard-*`` option or a hepguard
fixture is used. Without ``--hepguard-uncertainties`` (or its ini mirror) the plugin does nothing.
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_hepguard import fixtures
from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.session import (
    COUNTEREXAMPLE_PROPERTY,
    FATAL_OUTPUT,
    RESULT_PROPERTY,
    STATE_KEY,
    STRATEGY_SOURCE,
    WRITTEN_PROPERTY,
    build_state,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hepguard", "robustness audit of HEP classifiers (pytest-hepguard)")
    group.addoption(
        "--hepguard-model",
        metavar="PATH|MODULE:CALLABLE",
        help="model to audit: TorchScript (.pt), torch.export (.pt2) or package.module:callable",
    )
    group.addoption(
        "--hepguard-uncertainties",
        metavar="YAML",
        help="uncertainty file: per-feature envelopes, decision, data and gates; turns hepguard on",
    )
    group.addoption(
        "--hepguard-data",
        metavar="PATH",
        help="events (.root, .parquet, .h5, .npz); overrides data.path of the uncertainty file",
    )
    group.addoption(
        "--hepguard-device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where attacks run: auto (GPU when available, default), cpu or cuda",
    )
    group.addoption(
        "--hepguard-seed", type=int, default=0, help="seed of every random choice (default 0)"
    )
    group.addoption(
        "--hepguard-events",
        type=int,
        default=None,
        metavar="N",
        help="audit only the first N events of the data file",
    )
    group.addoption(
        "--hepguard-batch-size",
        type=_batch_size,
        default=None,
        metavar="N|auto",
        help="events per attack batch (default auto: 65536 on a CPU, measured to fill a GPU; "
        "lower it if the device runs out of memory)",
    )
    group.addoption(
        "--hepguard-json", metavar="PATH", help="write every check's numbers as JSON to PATH"
    )
    group.addoption(
        "--hepguard-html", metavar="PATH", help="write a self-contained HTML report with plots"
    )
    group.addoption(
        "--hepguard-plots", metavar="DIR", help="write every plot as PNG and PDF into DIR"
    )
    group.addoption(
        "--hepguard-markdown",
        metavar="PATH",
        help="write the summary as Markdown (merge-request comment, $GITHUB_STEP_SUMMARY)",
    )
    group.addoption(
        "--hepguard-save-baseline", metavar="PATH", help="store this run's numbers as a baseline"
    )
    group.addoption(
        "--hepguard-compare", metavar="PATH", help="compare this run with a saved baseline"
    )
    group.addoption(
        "--hepguard-compare-fail",
        metavar="SPEC",
        help="fail when a check got worse than the baseline by more than a margin, "
        "e.g. fooling_rate:0.02,auc_drop:0.005,output_ks:10%%",
    )
    group.addoption(
        "--hepguard-gradient-free",
        action="store_true",
        help="load an ONNX graph the autograd bridge cannot run for onnxruntime only, and "
        "attack it with estimated (SPSA) gradients: a weaker attack, marked in the report",
    )
    group.addoption(
        "--hepguard-save-perturbed",
        metavar="DIR",
        help="write each check's perturbed events (same columns and labels as the input, plus "
        "the nominal and perturbed model outputs) into DIR, one file per check",
    )
    group.addoption(
        "--hepguard-perturbed-format",
        choices=("npz", "parquet"),
        default="npz",
        help="file format of --hepguard-save-perturbed (default npz)",
    )
    group.addoption(
        "--hepguard-bins",
        metavar="N|EDGES",
        help="binning of the pyhf templates' discriminant: a number of equal bins over [0, 1] "
        "or comma-separated edges (0,0.5,0.8,1); overrides pyhf.bins of the uncertainty file",
    )
    group.addoption(
        "--hepguard-pyhf",
        metavar="PATH",
        help="write a complete pyhf workspace (nominal templates, mu, staterror and the "
        "hepguard nuisance parameters) to PATH",
    )
    group.addoption(
        "--hepguard-pyhf-patch",
        metavar="PATH",
        help="write a JSON patch (RFC 6902) that adds the hepguard nuisance parameters to the "
        "workspace of pyhf.patch in the uncertainty file",
    )
    group.addoption(
        "--hepguard-hypothesis",
        choices=("auto", "ci", "explore"),
        default="auto",
        help="property tests (hepguard_properties): ci = the 'hepguard' hypothesis profile "
        "(no example database, no deadline) and each test seeded with --hepguard-seed, "
        "reproducible; explore = hypothesis as configured, random and remembering failures; "
        "auto (default) = ci when the CI environment variable is set",
    )
    group.addoption(
        "--hepguard-dask",
        metavar="SCHEDULER|local:N",
        help="audit chunk by chunk on a Dask cluster: a scheduler address (tcp://host:8786), "
        "local:N for N worker processes on this machine (needs pytest-hepguard[dask]), or "
        "local:0 for the chunks one after the other in this process",
    )
    group.addoption(
        "--hepguard-dask-timeout",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the Dask scheduler to answer (default 30)",
    )
    group.addoption(
        "--hepguard-chunk-events",
        type=_positive(int),
        default=None,
        metavar="N",
        help="events per chunk of a --hepguard-dask audit (default 262144; a multiple of 65536 "
        "and of the batch size)",
    )
    group.addoption(
        "--hepguard-force",
        action="store_true",
        help="overwrite existing output files that hepguard did not write (never input files)",
    )
    for name, text in (
        ("hepguard_model", "default of --hepguard-model (relative to rootdir)"),
        ("hepguard_uncertainties", "default of --hepguard-uncertainties (relative to rootdir)"),
        ("hepguard_data", "default of --hepguard-data (relative to rootdir)"),
    ):
        parser.addini(name, text, default="")
    parser.addini("hepguard_device", "default of --hepguard-device", default="auto")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(fixtures, "hepguard-fixtures")
    try:
        state = build_state(config)
    except HepguardError as exc:
        raise pytest.UsageError(f"hepguard: {exc}") from exc
    config.stash[STATE_KEY] = state
    STRATEGY_SOURCE.reset(state.uncertainties)
    collector = ResultCollector(state, worker=_is_worker(config))
    config.pluginmanager.register(collector, "hepguard-results")
    if state.settings.active:
        config.addinivalue_line("python_files", "robustness_*.py")
        config.addinivalue_line("python_functions", "robustness_*")


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash[STATE_KEY].settings
    if not settings.active:
        return None
    return (
        f"hepguard: model {settings.model}, uncertainties {settings.uncertainties}, "
        f"device {settings.device}, seed {settings.seed}"
    )


def _or_fail(call: Callable[[], Any]) -> Any:
    """``call()``; bad user input (a HepguardError) fails the item with its message, outside the
    ``except`` block so that no chained traceback is printed."""
    try:
        return call()
    except HepguardError as exc:
        error = f"hepguard: {exc}"
    pytest.fail(error, pytrace=False)


def _gate_function(gate: Any) -> Callable[..., None]:
    def hepguard_gate(hepguard: fixtures.Hepguard) -> None:
        from pytest_hepguard.report.terminal import failure_message

        result = _or_fail(lambda: hepguard.gate(gate))
        if not result.passed:
            pytest.fail(failure_message(result.to_dict()), pytrace=False)

    return hepguard_gate


class GateItem(pytest.Function):
    """One entry of ``gates:``, run as a test that uses the ``hepguard`` fixture."""

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"hepguard gate {self.name}"


def _pyhf_function(state: Any) -> Callable[..., None]:
    def hepguard_pyhf(hepguard_auditor: Any) -> None:
        import warnings

        from pytest_hepguard.variations import write_pyhf

        settings = state.settings
        written = _or_fail(
            lambda: write_pyhf(
                hepguard_auditor,
                settings.pyhf,
                settings.pyhf_patch,
                inputs=settings.input_files(state.uncertainties),
                force=settings.force,
            )
        )
        state.written.extend(written)
        for note in hepguard_auditor.templates()[0].warnings:
            warnings.warn(fixtures.HepguardTemplateWarning(note), stacklevel=1)

    return hepguard_pyhf


class GateFile(pytest.File):
    """The uncertainty file as a collector: one test item per entry of its ``gates:``, and
    ``pyhf_export`` when ``--hepguard-pyhf`` or ``--hepguard-pyhf-patch`` is given."""

    def collect(self) -> list[pytest.Item]:
        state = self.config.stash[STATE_KEY]
        gates = state.uncertainties.gates  # type: ignore[union-attr]
        items = [GateItem.from_parent(self, name=g.name, callobj=_gate_function(g)) for g in gates]
        if state.settings.pyhf or state.settings.pyhf_patch:
            items.append(
                GateItem.from_parent(self, name="pyhf_export", callobj=_pyhf_function(state))
            )
        return items


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash[STATE_KEY]
    if not state.settings.active:
        return
    gates = GateFile.from_parent(session, path=state.settings.uncertainties)
    report = gates.ihook.pytest_make_collect_report(collector=gates)
    session.ihook.pytest_collectreport(report=report)  # counted in "collected N items"
    items[:0] = [node for node in report.result if isinstance(node, pytest.Item)]
    _reproducible_properties(config, items)


def _reproducible_properties(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI, property tests (hypothesis tests that take ``hepguard_properties``) run under
    the ``hepguard`` profile and with ``--hepguard-seed`` as their seed."""
    tests = [
        item
        for item in items
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
        and "hepguard_properties" in getattr(item, "fixturenames", ())
    ]
    if not tests:
        return
    import os

    import hypothesis

    hypothesis.settings.register_profile(
        "hepguard",
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[hypothesis.HealthCheck.too_slow],
        phases=[p for p in hypothesis.Phase if p is not hypothesis.Phase.explain],
    )
    mode = config.getoption("hepguard_hypothesis")
    if mode == "explore" or (mode == "auto" and not os.environ.get("CI")):
        return
    hypothesis.settings.load_profile("hepguard")
    seed = config.stash[STATE_KEY].settings.seed
    for item in tests:
        hypothesis.seed(seed)(item.obj)


def _is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker (the controller writes the reports and the summary)."""
    return hasattr(config, "workerinput")


class ResultCollector:
    """Gathers the checks' numbers and the property tests' counterexamples from test reports,
    where they arrive from pytest-xdist workers too, and on the xdist controller the files the
    workers wrote during their tests (``--hepguard-pyhf``, ``--hepguard-save-perturbed``).

    Each list is kept in collection order (the gates in the order of the uncertainty file, then
    the tests; several entries of one test in the order it made them), not in the order reports
    arrive: with ``-n N`` the workers finish in any order, and the reports must list what a
    serial run lists.
    """

    def __init__(self, state: Any, worker: bool = False) -> None:
        self.state = state
        self.worker = worker
        #: node id -> place in the collection (serial: the items; xdist: the workers' node ids)
        self.position: dict[str, int] = {}
        self._arrived = 0
        self._keys: dict[str, list[tuple[int, int]]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._set_order(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """pytest-xdist: the controller collects nothing; every worker sends its node ids, in
        the same order (xdist refuses workers that collected differently)."""
        self._set_order(ids)

    def _set_order(self, nodeids: Iterable[str]) -> None:
        if not self.position:
            self.position = {nodeid: i for i, nodeid in enumerate(nodeids)}

    def _insert(self, kind: str, nodeid: str, value: Any) -> None:
        """Put ``value`` into ``state.<kind>`` at its test's place in the collection order."""
        self._arrived += 1
        key = (self.position.get(nodeid, len(self.position)), self._arrived)
        keys = self._keys.setdefault(kind, [])
        index = bisect.bisect_right(keys, key)
        keys.insert(index, key)
        getattr(self.state, kind).insert(index, value)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == RESULT_PROPERTY:
                entry = json.loads(value)
                entry["outcome"] = report.outcome
                self._insert("results", report.nodeid, entry)
            elif key == COUNTEREXAMPLE_PROPERTY:
                self._insert("counterexamples", report.nodeid, json.loads(value))
            elif key == WRITTEN_PROPERTY and not self.worker:
                option, path = json.loads(value)
                self._insert("written", report.nodeid, (option, Path(path)))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist controller: a worker stopped by bad input (see
        :func:`pytest_runtest_protocol`; xdist prints its message) stops the run with exit code 4
        and nothing written."""
        if (getattr(node, "workeroutput", None) or {}).get(FATAL_OUTPUT):
            self.state.fatal = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """After a test body: its last broken property (hypothesis replays the minimal example
    last) travels to the report as a counterexample; in a pytest-xdist worker, so do the files
    the test wrote (the controller lists them in its summary)."""
    state = item.config.stash.get(STATE_KEY, None)
    before = len(state.written) if state is not None else 0
    yield
    if state is None:
        return
    found = state.pending.pop(item.nodeid, None)
    if found is not None:
        item.user_properties.append((COUNTEREXAMPLE_PROPERTY, json.dumps(found)))
    if _is_worker(item.config):
        for option, path in state.written[before:]:
            item.user_properties.append((WRITTEN_PROPERTY, json.dumps([option, str(path)])))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """In a pytest-xdist worker, bad input (a hepguard fixture's ``pytest.exit``, exit code 4)
    would crash the controller with an INTERNALERROR (pytest-xdist cannot stop on a worker's
    ``pytest.exit``): the worker stops like ``-x`` instead, and hands the message to the
    controller, which stops the run with it and exit code 4."""
    outcome = yield
    config = item.config
    error = outcome.excinfo[1] if outcome.excinfo is not None else None
    state = config.stash.get(STATE_KEY, None)
    if not isinstance(error, pytest.exit.Exception) or not _is_worker(config):
        return
    if state is None or not state.fatal:
        return
    message = str(error.msg)
    config.workeroutput[FATAL_OUTPUT] = message  # type: ignore[attr-defined]
    item.session.shouldstop = message
    outcome.force_result(True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash[STATE_KEY]
    if _is_worker(config) or not (state.results or state.counterexamples):
        return
    from pytest_hepguard.report.terminal import counterexample_lines, summary_lines

    terminalreporter.write_sep("=", "hepguard summary")
    for line in summary_lines(state.results) if state.results else []:
        terminalreporter.write_line(line)
    for line in counterexample_lines(state.counterexamples):
        terminalreporter.write_line(line)
    if state.comparison is not None:
        from pytest_hepguard.report.baseline import summary_lines as comparison_lines

        terminalreporter.write_sep("-", f"hepguard compared with {state.settings.compare}")
        for line in comparison_lines(state.comparison):
            terminalreporter.write_line(line)
    for option, path in state.written:
        terminalreporter.write_line(f"hepguard {option}: {path}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(STATE_KEY, None)
    if state is None or _is_worker(config) or not state.settings.active:
        return
    if state.fatal:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR  # also when an xdist worker stopped
        return
    if exitstatus == pytest.ExitCode.USAGE_ERROR:
        return
    if not (state.results or state.counterexamples):
        return
    from pytest_hepguard.report.outputs import write_outputs

    if write_outputs(state) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An option type: a positive ``kind`` (int or float)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
        return value

    return parse


def _batch_size(text: str) -> int | None:
    """``--hepguard-batch-size``: a positive number of events, or ``auto`` (None)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of events or auto, not {text!r}"
        )
    return value
