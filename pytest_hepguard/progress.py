"""Progress of long attacks in the terminal (torch-free; no extra dependency).

On an interactive terminal a bar is redrawn in place once a check has run for ``delay``
seconds; in non-interactive logs (CI) one line is written when such a check ends; under ``-q``
nothing is written, nor in pytest-xdist workers (``-n N``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Checks shorter than this (seconds) show no progress at all.
DELAY = 2.0


class Progress:
    """Callable ``progress(attack, done, total)`` as :class:`~pytest_hepguard.audit.Auditor`
    expects it.

    Args:
        write: writes a string to the real terminal (outside pytest's output capture).
        interactive: the terminal is a TTY: redraw a bar; else one line per long check.
        clock: seconds, for tests.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        interactive: bool,
        delay: float = DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.interactive, self.delay, self.clock = write, interactive, delay, clock
        self._start: float | None = None
        self._drawn = False

    def __call__(self, attack: str, done: int, total: int) -> None:
        now = self.clock()
        if self._start is None:
            self._start = now
        elapsed = now - self._start
        finished = done >= total
        if self.interactive and elapsed >= self.delay:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.write(f"\rhepguard {attack}: [{bar}] {done}/{total} events, {elapsed:.1f} s")
            self._drawn = True
        if finished:
            if self._drawn:
                self.write("\n")
            elif not self.interactive and elapsed >= self.delay:
                self.write(f"hepguard {attack}: {total} events in {elapsed:.1f} s\n")
            self._start, self._drawn = None, False


def terminal_writer(config: Any) -> tuple[Callable[[str], None], bool] | None:
    """A function writing to pytest's real terminal (outside output capture) and whether that
    is a TTY; None under ``-q``, without a terminal, or in a pytest-xdist worker (whose output
    would only garble the controller's terminal, or be lost)."""
    if hasattr(config, "workerinput"):
        return None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.get_verbosity() < 0:
        return None

    def write(text: str) -> None:
        if capman is None:
            reporter.write(text)
            return
        with capman.global_and_fixture_disabled():
            reporter.write(text)
            reporter.flush()

    return write, bool(getattr(reporter, "isatty", False))


def terminal_progress(config: Any) -> Progress | None:
    """A :class:`Progress` writing to pytest's terminal (see :func:`terminal_writer`)."""
    writer = terminal_writer(config)
    return None if writer is None else Progress(*writer)


class ClusterProgress:
    """``progress(pass_name, done, total, events_per_second)`` of a chunked audit: chunks done
    of the total and the events per second so far, redrawn in place on a TTY, one line per
    pass in logs."""

    def __init__(self, write: Callable[[str], None], interactive: bool) -> None:
        self.write, self.interactive = write, interactive

    def __call__(self, name: str, done: int, total: int, rate: float) -> None:
        text = f"hepguard {name}: {done}/{total} chunks, {rate:,.0f} events/s"
        if self.interactive:
            self.write(f"\r{text}" + ("\n" if done >= total else ""))
        elif done >= total:
            self.write(text + "\n")
