"""Property tests through the plugin: examples/robustness_properties.py run in pytest
subprocesses on the bundled example. The expected-to-fail property's minimal counterexample
reaches the terminal, the JSON report (schema-valid) and the HTML page; recomputed here with the
TorchScript model on the event moved by hand, it does flip the tag; with CI set the same seed
gives the same counterexample; a strategy naming an unknown feature stops collection with a
message naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from example_runs import (
    CLASSES,
    EXAMPLE_UNC,
    EXAMPLES,
    FEATURES,
    MODEL,
    REPO,
    assert_says,
    example_columns,
    example_yaml,
    load_json,
    project,
    run_pytest,
    snapshot,
)

from pytest_hepguard.report.schema import validate_report

PROPERTY_FILE = EXAMPLES / "robustness_properties.py"
FLIPPING = "robustness_no_b_tag_near_the_cut_flips"


def properties_project(root: Path) -> Path:
    """``root`` with a copy of the example's uncertainty file, its gates but ``random`` removed
    (whose report entry names the working-point cut), and examples/robustness_properties.py."""
    text = example_yaml(gates="gates:\n  random: {epsilon: 1.0}\n")
    root = project(root, text)
    shutil.copyfile(PROPERTY_FILE, root / PROPERTY_FILE.name)
    return root


@pytest.fixture(scope="module")
def ci_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict]]:
    """Two runs with CI set (the same seed): (output, JSON report) of each."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CI", "1")
    out = []
    try:
        for i in range(2):
            root = properties_project(tmp_path_factory.mktemp(f"props{i}"))
            before = snapshot(root)
            run = run_pytest(root, "--hepguard-json", "r.json", "--hepguard-html", "r.html")
            assert run.returncode == 0, run.output
            assert "3 passed, 1 xfailed" in run.output, run.output
            after = snapshot(root)
            assert {k: after[k] for k in before} == before  # nothing of the user's changed
            assert "property counterexamples" in (root / "r.html").read_text(encoding="utf-8")
            out.append((run.output, load_json(root / "r.json")))
    finally:
        mp.undo()
    return out


def bvl(x: np.ndarray) -> np.ndarray:
    model = torch.jit.load(str(MODEL))
    with torch.no_grad():
        p = model(torch.from_numpy(x.astype(np.float32))).numpy()
    b, light = p[:, CLASSES.index("b")], p[:, CLASSES.index("light")]
    return b / (b + light)


def test_counterexample_reaches_the_report_and_really_flips(ci_runs) -> None:
    output, report = ci_runs[0]
    validate_report(report, "r.json")
    (found,) = report["counterexamples"]
    assert found["test"].endswith(f"{PROPERTY_FILE.name}::{FLIPPING}")
    assert found["property"] == "decision unchanged" and found["kind"] == "displacement"
    assert found["label"] == "b"
    assert found["decision_before"] != found["decision_after"]
    assert all(abs(v) <= 1.0 + 1e-9 for v in found["change"].values())
    assert_says(output, f"counterexample {found['test']}: 'decision unchanged' broken: event")
    # the event moved by hand: x + delta * sigma per feature, from the YAML's envelopes (the
    # shrunk counterexample moves whole sigmas or fractions; integer features by whole steps)
    columns = example_columns(found["event"] + 1)
    x = np.stack([columns[f][found["event"]] for f in FEATURES]).astype(np.float64)
    moved = x.copy()
    specs = {s.name: s for s in EXAMPLE_UNC.features}
    for name, delta in found["change"].items():
        spec = specs[name]
        if x[FEATURES.index(name)] in spec.sentinels:
            continue  # a sentinel ("no secondary vertex") never moves
        sigma = spec.up if delta > 0 else spec.down
        if spec.kind == "relative":
            sigma *= abs(x[FEATURES.index(name)])
        moved[FEATURES.index(name)] += delta * sigma
        if spec.min is not None:
            moved[FEATURES.index(name)] = max(moved[FEATURES.index(name)], spec.min)
    before, after = bvl(np.stack([x, moved]))
    assert before == pytest.approx(found["discriminant_before"], abs=1e-5)
    assert after == pytest.approx(found["discriminant_after"], abs=1e-5)
    cut = report["checks"][0]["cut"]  # the working-point cut the decision used
    assert (before > cut) != (after > cut)
    assert abs(before - cut) < 0.01  # drawn by events(label="b", near_cut=0.01)


def test_same_seed_in_ci_gives_the_same_counterexample(ci_runs) -> None:
    (first,), (second,) = (report["counterexamples"] for _, report in ci_runs)
    assert first == second


BAD_STRATEGIES = {
    "unknown_feature": (
        "perturbations(epsilon=0.1, features=['jet_ptt'])",
        ("perturbations: unknown feature(s) 'jet_ptt'", "jet_pt, jet_eta"),
    ),
    "epsilon_zero": ("perturbations(epsilon=0)", ("epsilon must be a number > 0 (sigmas), got 0",)),
}


@pytest.mark.parametrize("case", BAD_STRATEGIES, ids=list(BAD_STRATEGIES))
def test_bad_strategy_stops_collection_with_its_reason(case: str, tmp_path: Path) -> None:
    """A strategy the uncertainty file cannot serve fails where it is made, when the test
    module is imported: a collection error naming what is wrong, nothing of the user's changed."""
    new, message = BAD_STRATEGIES[case]
    root = properties_project(tmp_path)
    path = root / PROPERTY_FILE.name
    path.write_text(
        path.read_text(encoding="utf-8").replace("perturbations(epsilon=0.1)", new),
        encoding="utf-8",
    )
    before = snapshot(root)
    run = run_pytest(root)
    assert run.returncode == 2, run.output  # a collection error interrupts the run
    assert_says(run.output, *message)
    assert snapshot(root) == before


def test_docs_quote_the_example_as_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/properties.md's tests are the example's, and the counterexample line it and the
    README quote is what the example prints on all 8000 jets with CI set (seed 0)."""
    docs = (REPO / "docs" / "properties.md").read_text(encoding="utf-8")
    example = PROPERTY_FILE.read_text(encoding="utf-8")
    block = docs.split("```python\n# robustness_properties.py\n", 1)[1].split("```", 1)[0]
    for line in block.splitlines():
        if line.startswith(("@settings", "@given", "def ", "    hepguard_properties.")):
            assert line in example, line
    monkeypatch.setenv("CI", "1")
    root = properties_project(tmp_path)
    run = run_pytest(root, "-k", "robustness_no_b_tag", events=None)
    assert "1 xfailed" in run.output, run.output
    (line,) = [x for x in run.output.splitlines() if x.startswith("counterexample ")]
    quoted = line.replace(f"{PROPERTY_FILE.name}::", f"examples/{PROPERTY_FILE.name}::")
    assert quoted in docs
    assert quoted in (REPO / "README.md").read_text(encoding="utf-8")
