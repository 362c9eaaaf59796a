"""Everything written at the end of a run, from the gathered check entries: the JSON report,
the baseline, the comparison with an earlier baseline, HTML, plots and Markdown."""

from __future__ import annotations

from pytest_hepguard.report.json_report import build_report, write_json
from pytest_hepguard.session import State


def write_outputs(state: State) -> bool:
    """Write the outputs asked for; return True when the comparison found a regression.

    The comparison (if any) is kept in ``state.comparison`` for the terminal summary, and each
    file written is listed in ``state.written``.
    """
    settings = state.settings
    report = build_report(
        state.results,
        settings.input_files(state.uncertainties),
        settings.model,
        settings.seed,
        settings.device or "auto",
        state.counterexamples,
    )
    if state.baseline is not None:
        from pytest_hepguard.report.baseline import compare

        state.comparison = compare(state.baseline, report, state.thresholds)
    for option, path in (
        ("--hepguard-json", settings.json),
        ("--hepguard-save-baseline", settings.save_baseline),
    ):
        if path is not None:
            write_json(path, report)
            state.written.append((option, path))
    if settings.html is not None:
        from pytest_hepguard.report.html import write_html

        write_html(report, settings.html, settings.force)
        state.written.append(("--hepguard-html", settings.html))
    if settings.plots is not None:
        from pytest_hepguard.report.plots import write_plots

        settings.plots.mkdir(exist_ok=True)
        write_plots(report, settings.plots)
        state.written.append(("--hepguard-plots", settings.plots))
    if settings.markdown is not None:
        from pytest_hepguard.report.markdown import write_markdown

        write_markdown(report, settings.markdown, state.comparison, settings.force)
        state.written.append(("--hepguard-markdown", settings.markdown))
    return bool(state.comparison is not None and state.comparison.regressions)
