"""What one pytest run of hepguard knows: resolved options, the parsed uncertainty file, and the
check results gathered from test reports. Torch-free: the plugin builds this at configure time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_hepguard.exceptions import HepguardError, ReportPathError

if TYPE_CHECKING:  # the plugin imports this module in every pytest run: keep it light
    from pytest_hepguard.uncertainties import UncertaintyModel

#: The user_properties key under which a check's numbers travel from item to report.
RESULT_PROPERTY = "hepguard_result"
#: The user_properties key of a property test's minimal counterexample.
COUNTEREXAMPLE_PROPERTY = "hepguard_counterexample"
#: The user_properties key of a file a pytest-xdist worker wrote during a test (``[option,
#: path]``), listed in the controller's terminal summary.
WRITTEN_PROPERTY = "hepguard_written"
#: The ``workeroutput`` key of the message of bad input that stopped a pytest-xdist worker.
FATAL_OUTPUT = "hepguard_fatal"


@dataclass
class StrategySource:
    """What the running session lends the hypothesis strategies (``pytest_hepguard.strategies``,
    drawn from inside tests): its uncertainty file, and once the sample is loaded, its labels
    [n], size, nominal discriminant [n] and cut. Module-level because ``@given(...)`` is
    evaluated when the test module is imported, before any fixture exists."""

    uncertainties: UncertaintyModel | None = None
    labels: Any = None
    n_events: int = 0
    discriminant: Any = None  # nominal discriminant [n]
    cut: float | None = None  # the working-point cut, when the decision has one

    def reset(self, uncertainties: UncertaintyModel | None) -> None:
        """A new session: its uncertainty file, no sample yet."""
        self.uncertainties, self.labels, self.n_events = uncertainties, None, 0
        self.discriminant, self.cut = None, None


#: The running session's strategy source (reset at every configure).
STRATEGY_SOURCE = StrategySource()


@dataclass(frozen=True)
class Settings:
    """The ``--hepguard-*`` options (or their ini mirrors), paths resolved."""

    model: str | None
    uncertainties: Path | None
    data: Path | None
    device: str
    seed: int
    events: int | None
    json: Path | None
    batch_size: int | None  # None: automatic (pytest_hepguard.batching)
    html: Path | None = None
    plots: Path | None = None
    markdown: Path | None = None
    save_baseline: Path | None = None
    compare: Path | None = None
    compare_fail: str | None = None
    force: bool = False
    gradient_free: bool = False
    save_perturbed: Path | None = None
    perturbed_format: str = "npz"
    bins: str | None = None
    pyhf: Path | None = None
    pyhf_patch: Path | None = None
    dask: str | None = None  # scheduler address or local:N (--hepguard-dask)
    dask_timeout: float = 30.0
    chunk_events: int | None = None  # None: pytest_hepguard.distributed.CHUNK_EVENTS

    @property
    def active(self) -> bool:
        """hepguard runs only when an uncertainty file is given."""
        return self.uncertainties is not None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read options; CLI paths are relative to the invocation folder, ini ones to rootdir."""

        def path(option: str, ini: str | None = None) -> Path | None:
            value = config.getoption(option)
            if value:
                return Path(value).expanduser().resolve()
            if ini is not None and config.getini(ini):
                return (config.rootpath / config.getini(ini)).resolve()
            return None

        model = config.getoption("hepguard_model") or None
        if model is None and config.getini("hepguard_model"):
            ini_model = config.getini("hepguard_model")
            candidate = config.rootpath / ini_model
            model = str(candidate) if candidate.exists() else ini_model
        elif model is not None and Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        return cls(
            model=model,
            uncertainties=path("hepguard_uncertainties", "hepguard_uncertainties"),
            data=path("hepguard_data", "hepguard_data"),
            device=config.getoption("hepguard_device") or config.getini("hepguard_device"),
            seed=config.getoption("hepguard_seed"),
            events=config.getoption("hepguard_events"),
            json=path("hepguard_json"),
            batch_size=config.getoption("hepguard_batch_size"),
            html=path("hepguard_html"),
            plots=path("hepguard_plots"),
            markdown=path("hepguard_markdown"),
            save_baseline=path("hepguard_save_baseline"),
            compare=path("hepguard_compare"),
            compare_fail=config.getoption("hepguard_compare_fail"),
            force=config.getoption("hepguard_force"),
            gradient_free=config.getoption("hepguard_gradient_free"),
            save_perturbed=path("hepguard_save_perturbed"),
            perturbed_format=config.getoption("hepguard_perturbed_format"),
            bins=config.getoption("hepguard_bins"),
            pyhf=path("hepguard_pyhf"),
            pyhf_patch=path("hepguard_pyhf_patch"),
            dask=config.getoption("hepguard_dask"),
            dask_timeout=config.getoption("hepguard_dask_timeout"),
            chunk_events=config.getoption("hepguard_chunk_events"),
        )

    def outputs(self) -> dict[str, Path]:
        """The report files asked for, by option name."""
        named = {
            "--hepguard-json": self.json,
            "--hepguard-html": self.html,
            "--hepguard-markdown": self.markdown,
            "--hepguard-save-baseline": self.save_baseline,
        }
        return {option: path for option, path in named.items() if path is not None}

    def data_path(self, uncertainties: UncertaintyModel) -> Path | None:
        """``--hepguard-data`` if given, else ``data.path`` of the uncertainty file."""
        return self.data or uncertainties.data.path

    def input_files(self, uncertainties: UncertaintyModel | None) -> dict[str, Path | None]:
        """The files the audit reads, by role."""
        model = Path(self.model) if self.model and Path(self.model).exists() else None
        data = self.data_path(uncertainties) if uncertainties else self.data
        files = {"model": model, "data": data, "uncertainties": self.uncertainties}
        if uncertainties is not None and uncertainties.pyhf.patch is not None:
            files["pyhf_workspace"] = uncertainties.pyhf.patch.workspace
        return files


@dataclass
class State:
    """Per-run state kept in ``config.stash``."""

    settings: Settings
    uncertainties: UncertaintyModel | None = None
    results: list[dict[str, object]] = field(default_factory=list)
    fatal: bool = False
    baseline: dict[str, object] | None = None
    thresholds: list[Any] = field(default_factory=list)
    comparison: Any = None
    written: list[tuple[str, Path]] = field(default_factory=list)
    #: minimal counterexamples of property tests, as they reach the report
    counterexamples: list[dict[str, object]] = field(default_factory=list)
    #: the last counterexample of each running test (node id), until its report is made
    pending: dict[str, dict[str, object]] = field(default_factory=dict)


STATE_KEY = pytest.StashKey[State]()


def build_state(config: pytest.Config) -> State:
    """Resolve options, parse the uncertainty file, check output paths (raises HepguardError)."""
    settings = Settings.from_config(config)
    state = State(settings)
    if settings.model and not settings.active:
        raise HepguardError(
            "--hepguard-model needs --hepguard-uncertainties (the envelope every attack moves in)"
        )
    if not settings.active:
        asked = [*settings.outputs(), *(["--hepguard-plots"] if settings.plots else [])]
        if settings.save_perturbed:
            asked.append("--hepguard-save-perturbed")
        if settings.compare:
            asked.append("--hepguard-compare")
        for option, given in (
            ("--hepguard-dask", settings.dask),
            ("--hepguard-pyhf", settings.pyhf),
            ("--hepguard-pyhf-patch", settings.pyhf_patch),
            ("--hepguard-bins", settings.bins),
        ):
            if given:
                asked.append(option)
        if asked:
            raise HepguardError(f"{asked[0]} needs --hepguard-uncertainties")
        return state
    from pytest_hepguard.preprocess import complete_uncertainties
    from pytest_hepguard.report.files import check_report_path
    from pytest_hepguard.uncertainties import load_uncertainties, parse_bins

    state.uncertainties = complete_uncertainties(
        load_uncertainties(settings.uncertainties),  # type: ignore[arg-type]
        settings.model,
    )
    if settings.bins:
        bins = parse_bins(settings.bins)
        unc = state.uncertainties
        state.uncertainties = replace(unc, pyhf=replace(unc.pyhf, bins=bins))
    inputs = settings.input_files(state.uncertainties)
    for option, target in settings.outputs().items():
        check_report_path(target, option, inputs, settings.force)
    if settings.pyhf or settings.pyhf_patch:
        _check_pyhf_outputs(settings, state.uncertainties, inputs)
    for option, folder in (
        ("--hepguard-plots", settings.plots),
        ("--hepguard-save-perturbed", settings.save_perturbed),
    ):
        if folder is not None and not folder.parent.is_dir():
            raise ReportPathError(f"{option} {folder}: the folder {folder.parent} does not exist")
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ReportPathError(f"{option} {folder}: a file of that name is in the way")
    if settings.dask:
        for option, given in (
            ("--hepguard-pyhf", settings.pyhf),
            ("--hepguard-pyhf-patch", settings.pyhf_patch),
            ("--hepguard-save-perturbed", settings.save_perturbed),
        ):
            if given:
                raise HepguardError(
                    f"{option} needs every event's perturbed outputs in one process, which a "
                    "chunked audit (--hepguard-dask) never gathers; run it without "
                    "--hepguard-dask (on --hepguard-events N events)"
                )
    if settings.compare_fail and settings.compare is None:
        raise HepguardError("--hepguard-compare-fail needs --hepguard-compare BASELINE")
    if settings.compare is not None:
        from pytest_hepguard.report.baseline import load_baseline, parse_compare_fail

        state.baseline = load_baseline(settings.compare)
        state.thresholds = (
            parse_compare_fail(settings.compare_fail) if settings.compare_fail else []
        )
    return state


def _check_pyhf_outputs(
    settings: Settings, uncertainties: UncertaintyModel, inputs: dict[str, Path | None]
) -> None:
    """Refuse pyhf output paths that would lose a user's file, and a patch without a readable,
    schema-valid user workspace holding the mapped channel and samples in as many bins as the
    templates, before any attack runs."""
    from pytest_hepguard.pyhf_export import (
        is_own_patch,
        is_own_workspace,
        load_workspace,
        locate_samples,
    )
    from pytest_hepguard.report.files import check_report_path

    if settings.pyhf is not None:
        check_report_path(
            settings.pyhf, "--hepguard-pyhf", inputs, settings.force, is_own=is_own_workspace
        )
    if settings.pyhf_patch is not None:
        patch = uncertainties.pyhf.patch
        if patch is None:
            raise HepguardError(
                f"--hepguard-pyhf-patch needs a pyhf.patch section in {uncertainties.source} "
                "(workspace: the analysis workspace JSON, channel: its channel, samples: hepguard "
                "sample -> workspace sample)"
            )
        check_report_path(
            settings.pyhf_patch,
            "--hepguard-pyhf-patch",
            inputs,
            settings.force,
            is_own=is_own_patch,
        )
        bins = uncertainties.pyhf.bins
        locate_samples(
            load_workspace(patch.workspace),
            channel=patch.channel,
            samples=dict(patch.samples),
            n_bins=bins if isinstance(bins, int) else len(bins) - 1,
            source=f"pyhf workspace {patch.workspace}",
        )
