"""Measure what the installed-but-unused hepguard plugin adds to ``pytest --collect-only``.

A plain script, not a test: nothing is asserted. It feeds the project's performance page.

Usage::

    python benchmarks/plugin_overhead.py
    python benchmarks/plugin_overhead.py --repeat 21 --out overhead.json
    python benchmarks/plugin_overhead.py --modules 80 --tests-per-module 20

Method. A small plain pytest project is written into a temporary directory: an empty
``pytest.ini`` (so the repository's own configuration is not picked up), ``--modules`` test
modules each holding ``--tests-per-module`` trivial tests plus one parametrized test with 5
cases, and a ``conftest.py`` with one fixture. No hepguard option appears anywhere: the plugin is
installed (entry point ``pytest11: hepguard``) but unused.

``pytest --collect-only -q -p no:cacheprovider`` is run in a fresh interpreter, with the plugin
and with ``-p no:hepguard``. The latter blocks the entry point before its module is imported,
which is what an uninstalled plugin costs; the scan of the entry-point metadata happens in both
cases, so it is not part of the difference. Each run is timed with ``time.perf_counter`` around
the subprocess (interpreter start-up included). After 2 warm-up runs of each, ``--repeat`` rounds
run both variants, alternating which goes first so that drift (caches, CPU frequency) hits both
equally. The reported overhead is the median of the per-round paired differences (with minus
without), with the 25th and 75th percentile of those differences as the spread.

Two import checks run in fresh interpreters as well: the cumulative time of
``pytest_hepguard.plugin`` reported by ``python -X importtime -c "import pytest; import
pytest_hepguard.plugin"`` (pytest is imported first: a pytest run has loaded it before its
plugins), and which heavy modules (torch, numpy, onnxruntime, ...) are in ``sys.modules`` after
importing the plugin.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HEAVY_MODULES: tuple[str, ...] = (
    "torch",
    "numpy",
    "onnxruntime",
    "pyhf",
    "hypothesis",
    "scipy",
    "uproot",
    "matplotlib",
    "yaml",
)
PLUGIN_MODULE = "pytest_hepguard.plugin"
TARGET_ADDED_MS = 50.0

_CONFTEST = '''"""Fixtures of the benchmark project."""

import pytest


@pytest.fixture
def number():
    return 42
'''


def _test_module(index: int, tests_per_module: int) -> str:
    """Source of one test module: trivial tests plus one parametrized test with 5 cases."""
    lines = [f'"""Benchmark test module {index}."""', "", "import pytest", ""]
    for j in range(tests_per_module):
        lines += ["", f"def test_trivial_{j:03d}(number):", f"    assert number + {j} > 0", ""]
    lines += [
        "",
        '@pytest.mark.parametrize("value", [1, 2, 3, 4, 5])',
        "def test_parametrized(value):",
        "    assert value > 0",
        "",
    ]
    return "\n".join(lines)


def make_project(root: Path, modules: int = 40, tests_per_module: int = 10) -> Path:
    """Write a plain pytest project under ``root`` and return its directory.

    The project has an empty ``pytest.ini`` (``[pytest]`` only), a ``conftest.py`` with one
    fixture and ``tests/test_mod_XX.py`` modules with ``tests_per_module`` trivial tests plus one
    parametrized test with 5 cases each. Nothing in it mentions hepguard.
    """
    project = Path(root) / "project"
    tests = project / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text(_CONFTEST)
    for i in range(modules):
        (tests / f"test_mod_{i:02d}.py").write_text(_test_module(i, tests_per_module))
    return project


def _collect_command(disable_plugin: bool) -> list[str]:
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    return command + (["-p", "no:hepguard"] if disable_plugin else [])


def _run_collect(project: Path, disable_plugin: bool) -> tuple[float, str]:
    """Run one collect-only subprocess; return its wall time in seconds and its stdout."""
    command = _collect_command(disable_plugin)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return seconds, proc.stdout


def collect_seconds(project: Path, disable_plugin: bool) -> float:
    """Wall time in seconds of one ``pytest --collect-only`` run in a fresh interpreter.

    With ``disable_plugin`` the run adds ``-p no:hepguard``. Raises :class:`RuntimeError` with
    the output when pytest exits with a non-zero code.
    """
    return _run_collect(project, disable_plugin)[0]


def _tests_collected(output: str) -> int:
    """Parse ``N tests collected`` (or ``N test collected``) from pytest's summary."""
    match = re.search(r"(\d+) tests? collected", output)
    if match is None:
        raise RuntimeError(f"no 'N tests collected' line in pytest output:\n{output}")
    return int(match.group(1))


def plugin_import_ms() -> float:
    """Cumulative import time of ``pytest_hepguard.plugin`` in a fresh interpreter that has
    imported pytest already (as a pytest run has), in ms."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import pytest; import {PLUGIN_MODULE}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"importing {PLUGIN_MODULE} failed:\n{proc.stderr}")
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or fields[2].strip() != PLUGIN_MODULE:
            continue
        return int(fields[1].strip()) / 1000.0
    raise RuntimeError(f"no -X importtime line for {PLUGIN_MODULE}:\n{proc.stderr}")


def heavy_modules_loaded() -> list[str]:
    """Which of :data:`HEAVY_MODULES` are in ``sys.modules`` after importing the plugin."""
    code = (
        "import json, sys\n"
        f"import {PLUGIN_MODULE}\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"importing {PLUGIN_MODULE} failed:\n{proc.stderr}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(repeat: int = 21, modules: int = 40, tests_per_module: int = 10) -> dict[str, Any]:
    """Time collect-only with and without the plugin; return the raw times and summaries.

    Keys: ``with_s`` and ``without_s`` (per-round seconds), ``median_with_ms``,
    ``median_without_ms``, ``diffs_ms`` (per-round with minus without), ``added_ms`` (their
    median), ``added_p25_ms`` and ``added_p75_ms``, ``tests_collected``, ``import_ms``,
    ``heavy_modules_loaded`` and the parameters of the run.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    with tempfile.TemporaryDirectory(prefix="hepguard-overhead-") as tmp:
        project = make_project(Path(tmp), modules, tests_per_module)
        _, output = _run_collect(project, disable_plugin=False)
        tests_collected = _tests_collected(output)
        for _ in range(2):
            collect_seconds(project, disable_plugin=False)
            collect_seconds(project, disable_plugin=True)
        with_s: list[float] = []
        without_s: list[float] = []
        for round_index in range(repeat):
            if round_index % 2 == 0:
                with_s.append(collect_seconds(project, disable_plugin=False))
                without_s.append(collect_seconds(project, disable_plugin=True))
            else:
                without_s.append(collect_seconds(project, disable_plugin=True))
                with_s.append(collect_seconds(project, disable_plugin=False))
    diffs_ms = [(w - wo) * 1000.0 for w, wo in zip(with_s, without_s, strict=True)]
    p25, p75 = np.percentile(diffs_ms, [25, 75])
    return {
        "repeat": repeat,
        "modules": modules,
        "tests_per_module": tests_per_module,
        "python": sys.version.split()[0],
        "with_s": with_s,
        "without_s": without_s,
        "median_with_ms": statistics.median(with_s) * 1000.0,
        "median_without_ms": statistics.median(without_s) * 1000.0,
        "diffs_ms": diffs_ms,
        "added_ms": statistics.median(diffs_ms),
        "added_p25_ms": float(p25),
        "added_p75_ms": float(p75),
        "tests_collected": tests_collected,
        "import_ms": plugin_import_ms(),
        "heavy_modules_loaded": heavy_modules_loaded(),
    }


def table(result: dict[str, Any]) -> str:
    """Markdown table of a :func:`measure` result for the performance page."""
    heavy = ", ".join(result["heavy_modules_loaded"]) or "none"
    rows = [
        ("collect-only with plugin (median)", f"{result['median_with_ms']:.1f} ms", ""),
        ("collect-only without plugin (median)", f"{result['median_without_ms']:.1f} ms", ""),
        (
            "added by the plugin (median paired difference [IQR])",
            f"{result['added_ms']:.1f} ms "
            f"[{result['added_p25_ms']:.1f}, {result['added_p75_ms']:.1f}]",
            f"< {TARGET_ADDED_MS:.0f} ms",
        ),
        (f"import of {PLUGIN_MODULE}", f"{result['import_ms']:.1f} ms", ""),
        ("heavy modules the plugin imports", heavy, "none"),
        ("tests collected", str(result["tests_collected"]), ""),
    ]
    lines = ["| measurement | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: measure, print the table, optionally write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21, help="timed rounds (default 21)")
    parser.add_argument("--modules", type=int, default=40, help="test modules (default 40)")
    parser.add_argument(
        "--tests-per-module", type=int, default=10, help="trivial tests per module (default 10)"
    )
    parser.add_argument("--out", type=Path, default=None, metavar="PATH", help="write JSON here")
    args = parser.parse_args(argv)
    result = measure(args.repeat, args.modules, args.tests_per_module)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
