"""Progress output: a redrawn bar on a terminal, one line per long check in logs, nothing for
short checks."""

from __future__ import annotations

from pytest_hepguard.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _run(interactive: bool, seconds_per_batch: float) -> str:
    out: list[str] = []
    clock = Clock()
    progress = Progress(out.append, interactive, delay=2.0, clock=clock)
    for done in (250, 500, 750, 1000):
        progress("pgd", done, 1000)
        clock.t += seconds_per_batch
    return "".join(out)


def test_short_checks_are_silent() -> None:
    assert _run(True, 0.1) == "" and _run(False, 0.1) == ""


def test_interactive_bar_is_redrawn_in_place() -> None:
    text = _run(True, 1.0)
    assert text.count("\r") == 2  # drawn from 2 s on: at 750 and 1000 events
    assert "\rhepguard pgd: [######################--------] 750/1000 events, 2.0 s" in text
    assert text.endswith("1000/1000 events, 3.0 s\n")


def test_logs_get_one_line_per_long_check() -> None:
    assert _run(False, 1.0) == "hepguard pgd: 1000 events in 3.0 s\n"
