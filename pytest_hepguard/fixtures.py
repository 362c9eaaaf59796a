"""The fixtures users write ``robustness_*`` tests with, and that the built-in gates use.

- ``hepguard_uncertainties``: the parsed uncertainty file (session).
- ``hepguard_events``: the sample (session).
- ``hepguard_model``: the model (session). Override it in ``conftest.py`` to audit anything
  hepguard cannot load from a file: return an ``nn.Module`` or a torch callable.
- ``hepguard_auditor``: the :class:`~pytest_hepguard.audit.Auditor` (session).
- ``hepguard``: the auditor bound to the test using it; every check it runs is recorded.
- ``hepguard_properties``: one-line properties for hypothesis tests over the strategies of
  :mod:`pytest_hepguard.strategies` (session); broken ones become report counterexamples.

Heavy modules are imported inside the fixtures, never at import time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.session import RESULT_PROPERTY, STATE_KEY, STRATEGY_SOURCE, State

if TYPE_CHECKING:
    import numpy as np

    from pytest_hepguard.audit import Auditor, CheckResult
    from pytest_hepguard.events import Events
    from pytest_hepguard.properties import Properties
    from pytest_hepguard.uncertainties import GateSpec, UncertaintyModel


class HepguardTemplateWarning(UserWarning):
    """A lint finding about the pyhf templates (same-way up/down, a large normalisation effect,
    clipped bins): the workspace is written, but look at it."""


def _state(config: pytest.Config) -> State:
    state = config.stash[STATE_KEY]
    if not state.settings.active:
        pytest.skip("hepguard is not configured: give --hepguard-uncertainties (and a model)")
    return state


def _fatal(config: pytest.Config, exc: HepguardError) -> None:
    """Stop the whole run on bad user input: one clear message, exit code 4."""
    config.stash[STATE_KEY].fatal = True
    pytest.exit(f"hepguard: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def hepguard_uncertainties(pytestconfig: pytest.Config) -> UncertaintyModel:
    """The validated uncertainty file (``--hepguard-uncertainties``); without ``inputs:``, with
    the inputs of the weaver ``preprocess.json`` beside an ONNX ``--hepguard-model``."""
    return _state(pytestconfig).uncertainties  # type: ignore[return-value]


@pytest.fixture(scope="session")
def hepguard_events(
    pytestconfig: pytest.Config, hepguard_uncertainties: UncertaintyModel
) -> Events:
    """The sample: ``--hepguard-data`` or ``data.path`` (a file, or a folder or glob of ROOT or
    Parquet files read one after the other); the first ``--hepguard-events`` N."""
    from pytest_hepguard.chunks import load_sample, read_args

    state = _state(pytestconfig)
    unc = hepguard_uncertainties
    try:
        per_event, read = read_args(unc)
        return load_sample(
            _data_path(state, unc), per_event, max_events=state.settings.events, **read
        )
    except HepguardError as exc:
        _fatal(pytestconfig, exc)
        raise


@pytest.fixture(scope="session")
def hepguard_model(pytestconfig: pytest.Config, hepguard_uncertainties: UncertaintyModel) -> Any:
    """The model of ``--hepguard-model`` (a file or ``package.module:callable``)."""
    from pytest_hepguard.models import load_model, resolve_device

    settings = _state(pytestconfig).settings
    try:
        if settings.model is None:
            raise HepguardError(
                "no model: give --hepguard-model (or override the hepguard_model fixture)"
            )
        return load_model(
            settings.model, resolve_device(settings.device), gradient_free=settings.gradient_free
        )
    except HepguardError as exc:
        _fatal(pytestconfig, exc)
        raise


@pytest.fixture(scope="session")
def hepguard_auditor(
    pytestconfig: pytest.Config,
    request: pytest.FixtureRequest,
    hepguard_uncertainties: UncertaintyModel,
) -> Auditor:
    """The auditor over the model, sample and uncertainty file; nominal outputs computed once.
    With ``--hepguard-dask`` a :class:`~pytest_hepguard.distributed.ChunkedAudit` (``run``,
    ``run_gate``, ``decision``) auditing the sample chunk by chunk on the cluster."""
    from pytest_hepguard.audit import Auditor
    from pytest_hepguard.models import resolve_device, wrap_model
    from pytest_hepguard.progress import terminal_progress

    settings = _state(pytestconfig).settings
    if settings.dask:
        return _chunked_audit(pytestconfig, request, hepguard_uncertainties)
    hepguard_model = request.getfixturevalue("hepguard_model")
    hepguard_events = request.getfixturevalue("hepguard_events")
    try:
        device = getattr(hepguard_model, "device", None) or resolve_device(settings.device)
        model = wrap_model(hepguard_model, device, settings.model or "hepguard_model fixture")
        return Auditor(
            model,
            hepguard_events,
            hepguard_uncertainties,
            seed=settings.seed,
            batch_size=settings.batch_size,
            progress=terminal_progress(pytestconfig),
            on_perturbed=_perturbed_writer(pytestconfig, hepguard_events, hepguard_uncertainties),
        )
    except HepguardError as exc:
        _fatal(pytestconfig, exc)
        raise


def _data_path(state: State, unc: UncertaintyModel) -> Any:
    """``--hepguard-data`` or ``data.path`` (HepguardError when neither is given)."""
    path = state.settings.data_path(unc)
    if path is None:
        raise HepguardError(
            f"{unc.source}: no data: give --hepguard-data or data.path in the uncertainty file"
        )
    return path


def _chunked_audit(
    config: pytest.Config, request: pytest.FixtureRequest, unc: UncertaintyModel
) -> Any:
    """The ChunkedAudit of ``--hepguard-dask``; the cluster is released after the session."""
    from pytest_hepguard.batching import CPU_BATCH
    from pytest_hepguard.distributed import CHUNK_EVENTS, ChunkedAudit, connect
    from pytest_hepguard.progress import ClusterProgress, terminal_writer

    settings = _state(config).settings
    writer = terminal_writer(config)
    try:
        if settings.model is None:
            raise HepguardError(
                "--hepguard-dask: the workers load the model from --hepguard-model (a file or "
                "package.module:callable); a hepguard_model fixture cannot travel to them"
            )
        path = _data_path(_state(config), unc)
        executor = connect(settings.dask, settings.dask_timeout)  # type: ignore[arg-type]
        request.addfinalizer(executor.close)
        if writer is not None:
            link = f", dashboard {executor.dashboard}" if executor.dashboard else ""
            writer[0](f"\nhepguard: auditing on {executor.description}{link}\n")
        return ChunkedAudit(
            model=settings.model,
            device=settings.device,
            uncertainties=unc,
            data=path,
            executor=executor,
            seed=settings.seed,
            batch_size=settings.batch_size or CPU_BATCH,
            chunk_events=settings.chunk_events or CHUNK_EVENTS,
            max_events=settings.events,
            gradient_free=settings.gradient_free,
            progress=None if writer is None else ClusterProgress(*writer),
            gates=unc.gates,
        )
    except HepguardError as exc:
        _fatal(config, exc)
        raise


def _perturbed_writer(
    config: pytest.Config, events: Events, uncertainties: UncertaintyModel
) -> Callable[[str, np.ndarray, np.ndarray, np.ndarray], None] | None:
    """The ``on_perturbed`` callback of ``--hepguard-save-perturbed``, or None."""
    state = _state(config)
    settings = state.settings
    folder = settings.save_perturbed
    if folder is None:
        return None
    from pytest_hepguard.layout import Layout
    from pytest_hepguard.report.perturbed import write_perturbed

    layout = Layout(uncertainties)
    label = uncertainties.data.label
    inputs = settings.input_files(uncertainties)

    def write(name: str, rows: np.ndarray, nominal: np.ndarray, perturbed: np.ndarray) -> None:
        path = write_perturbed(
            folder,
            name,
            events,
            layout,
            rows,
            nominal,
            perturbed,
            fmt=settings.perturbed_format,
            label=label if isinstance(label, str) else "label",
            weight=uncertainties.data.weight or "weight",
            inputs=inputs,
            force=settings.force,
        )
        state.written.append(("--hepguard-save-perturbed", path))

    return write


class Hepguard:
    """The ``hepguard`` fixture: run attacks and get their numbers, recorded for the report.

    ``hepguard.attack("pgd", epsilon=0.5, steps=10)`` returns a
    :class:`~pytest_hepguard.audit.CheckResult` (``.fooling_rate``, ``.auc_drop``,
    ``.output_ks``, ...). Epsilon and step sizes are in sigmas of each feature's envelope.
    """

    def __init__(self, auditor: Auditor, node: pytest.Item) -> None:
        self.auditor = auditor
        self._node = node

    @property
    def decision(self) -> Any:
        """The resolved decision (discriminant, cut, signal and background classes)."""
        return self.auditor.decision

    def attack(self, attack: str, **params: object) -> CheckResult:
        """Run ``attack`` over the sample and record it under this test's name."""
        result = self.auditor.run(attack, name=f"{self._node.name}:{attack}", **params)
        self.record(result)
        return result

    def gate(self, gate: GateSpec) -> CheckResult:
        """Run one ``gates:`` entry and record it."""
        result = self.auditor.run_gate(gate)
        self.record(result)
        return result

    def record(self, result: CheckResult) -> None:
        """Attach the result to ``user_properties`` (survives xdist, reaches junitxml)."""
        entry = result.to_dict()
        entry["test"] = self._node.nodeid
        entry["assumptions"] = list(self.auditor.decision.assumptions)
        self._node.user_properties.append((RESULT_PROPERTY, json.dumps(entry)))


@pytest.fixture
def hepguard(request: pytest.FixtureRequest, hepguard_auditor: Auditor) -> Hepguard:
    """The auditor bound to this test (see :class:`Hepguard`)."""
    return Hepguard(hepguard_auditor, request.node)


@pytest.fixture(scope="session")
def hepguard_properties(pytestconfig: pytest.Config, hepguard_auditor: Auditor) -> Properties:
    """Properties over events and drawn changes for hypothesis tests (see
    :class:`~pytest_hepguard.properties.Properties`); lends the sample to the strategies of
    :mod:`pytest_hepguard.strategies`."""
    import os

    from pytest_hepguard.properties import Properties

    state = _state(pytestconfig)
    if state.settings.dask:
        pytest.fail(
            "hepguard_properties: property tests draw single events from the sample in this "
            "process; run them without --hepguard-dask",
            pytrace=False,
        )
    STRATEGY_SOURCE.labels = hepguard_auditor.labels
    STRATEGY_SOURCE.n_events = len(hepguard_auditor.events)
    STRATEGY_SOURCE.discriminant = hepguard_auditor.nominal_disc
    STRATEGY_SOURCE.cut = hepguard_auditor.decision.cut

    def current_test() -> str:
        return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]

    def record(found: Any) -> None:
        state.pending[found.test] = found.to_dict()

    return Properties(hepguard_auditor, record, current_test)
