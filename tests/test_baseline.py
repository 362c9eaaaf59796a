"""Baselines (``--hepguard-save-baseline`` / ``--hepguard-compare`` / ``--hepguard-compare-fail``)
and the Markdown summary (``--hepguard-markdown``), on small hand-made report dicts that follow
the report schema."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_hepguard.exceptions import HepguardError, ReportPathError
from pytest_hepguard.report.baseline import (
    DEFAULT_METRICS,
    IMPROVED,
    METRICS,
    NOT_AVAILABLE,
    REGRESSED,
    UNCHANGED,
    WITHIN,
    WORSE,
    BaselineError,
    Comparison,
    Threshold,
    compare,
    load_baseline,
    parse_compare_fail,
    summary_lines,
    worsening,
)
from pytest_hepguard.report.files import REPORT_MARKER
from pytest_hepguard.report.json_report import write_json
from pytest_hepguard.report.markdown import MARKER, md_escape, render_markdown, write_markdown
from pytest_hepguard.report.schema import ReportSchemaError, validate_report

SHA = {name: (c * 64) for name, c in (("model", "a"), ("data", "b"), ("unc", "c"))}
FEATURES = ("pt", "eta")


def make_check(name: str = "pgd", attack: str = "pgd", **values: Any) -> dict[str, Any]:
    """A complete check entry (every key of the schema), numbers overridable by keyword."""
    params: dict[str, Any] = values.pop("params", None) or {"epsilon": 1.0}
    limits: dict[str, float] = values.pop("limits", {})
    check: dict[str, Any] = {
        "name": name,
        "test": f"unc.yaml::{name}",
        "outcome": "passed",
        "attack": attack,
        "params": params,
        "n_events": 1000,
        "fooling_rate": 0.02,
        "fooling_rate_err": 0.004,
        "n_correct": 800,
        "fooling_rate_correct": 0.015,
        "fooling_rate_correct_err": 0.004,
        "random_fooling_rate": 0.006,
        "random_fooling_rate_err": 0.002,
        "random_fooling_rate_correct": 0.003,
        "auc_nominal": 0.95,
        "auc_perturbed": 0.90,
        "auc_drop": 0.05,
        "output_ks": 0.10,
        "output_wasserstein": 0.01,
        "mean_shift": 0.005,
        "cut": 0.8,
        "efficiency_nominal": 0.7,
        "efficiency_perturbed": 0.66,
        "efficiency_change": -0.04,
        "mistag_nominal": 0.01,
        "mistag_perturbed": 0.02,
        "rejection_nominal": 100.0,
        "rejection_perturbed": 50.0,
        "max_displacement_sigma": dict.fromkeys(FEATURES, 1.0),
        "mean_abs_displacement_sigma": dict.fromkeys(FEATURES, 0.9),
        "moved_fraction": dict.fromkeys(FEATURES, 1.0),
        "histograms": {
            "edges": [i / 50 for i in range(51)],
            "groups": {"b": {"nominal": [1.0] * 50, "perturbed": [1.0] * 50}},
        },
        "roc_nominal": None,
        "roc_perturbed": None,
        "envelope_violations": 0,
        "zero_gradient_fraction": 0.0,
        "seconds": 0.5,
        "device": "cpu",
        "limits": limits,
        "failures": [],
        "warnings": [],
        "passed": True,
        "assumptions": [],
    }
    check.update(values)
    return check


def make_report(*checks: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A report around ``checks``; ``data_sha``, ``model_sha``, ``unc_sha`` and top-level keys
    overridable."""
    inputs = {
        "model": {"path": "/work/tagger.pt", "sha256": top.pop("model_sha", SHA["model"])},
        "data": {"path": "/work/jets.root", "sha256": top.pop("data_sha", SHA["data"])},
        "uncertainties": {"path": "/work/unc.yaml", "sha256": top.pop("unc_sha", SHA["unc"])},
    }
    report: dict[str, Any] = {
        "tool": "pytest-hepguard",
        "report_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "seed": 0,
        "device": "cpu",
        "versions": {"python": "3.11.7", "pytest-hepguard": "0.1.0", "torch": None},
        "inputs": inputs,
        "assumptions": [],
        "passed": all(c["passed"] for c in checks),
        "checks": list(checks),
    }
    report.update(top)
    return report


def row(comparison: Comparison, check: str, metric: str) -> Any:
    (match,) = [r for r in comparison.rows if r.check == check and r.metric == metric]
    return match


def test_made_reports_follow_the_schema() -> None:
    validate_report(make_report(make_check(), make_check("fgsm", "fgsm")), "made.json")


# ---------------------------------------------------------------------------------------------
# --hepguard-compare-fail
# ---------------------------------------------------------------------------------------------


def test_parse_absolute_and_relative() -> None:
    assert parse_compare_fail("fooling_rate:0.02,auc_drop:0.005,output_ks:10%") == [
        Threshold("fooling_rate", 0.02),
        Threshold("auc_drop", 0.005),
        Threshold("output_ks", 10.0, relative=True),
    ]


def test_parse_tolerates_spaces_and_exponents() -> None:
    assert parse_compare_fail(" mean_shift : 1e-3 , auc_perturbed: 2.5 % ") == [
        Threshold("mean_shift", 0.001),
        Threshold("auc_perturbed", 2.5, relative=True),
    ]
    assert parse_compare_fail("efficiency_change:0") == [Threshold("efficiency_change", 0.0)]


def test_threshold_allowed_and_text() -> None:
    assert Threshold("output_ks", 10, relative=True).allowed(0.2) == pytest.approx(0.02)
    assert Threshold("mean_shift", 10, relative=True).allowed(-0.2) == pytest.approx(0.02)
    assert Threshold("fooling_rate", 0.02).allowed(0.5) == 0.02
    assert str(Threshold("output_ks", 10, relative=True)) == "output_ks:10%"
    assert str(Threshold("fooling_rate", 0.02)) == "fooling_rate:0.02"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("fooling_rat:0.02", "unknown metric 'fooling_rat'"),
        ("auc_nominal:0.01", "unknown metric 'auc_nominal'"),
        ("fooling_rate:abc", "'abc' is not a number"),
        ("fooling_rate:0.02x", "'0.02x' is not a number"),
        ("fooling_rate:nan", "'nan' is not a number"),
        ("fooling_rate:", "'' is not a number"),
        ("output_ks:%", "'%' is not a number"),
        ("fooling_rate:-0.02", "a margin cannot be negative"),
        ("fooling_rate", "missing ':'"),
        ("fooling_rate:0.1,fooling_rate:5%", "fooling_rate is given twice"),
        ("fooling_rate:0.1,,auc_drop:0.1", "empty item"),
        ("", "no metric given"),
    ],
)
def test_parse_errors_list_the_allowed_metrics(spec: str, problem: str) -> None:
    with pytest.raises(BaselineError) as info:
        parse_compare_fail(spec)
    message = str(info.value)
    assert isinstance(info.value, HepguardError)
    assert message.startswith("--hepguard-compare-fail ")
    assert problem in message
    assert "allowed metrics: " + ", ".join(METRICS) in message


def test_allowed_metrics() -> None:
    assert set(METRICS) == {
        "fooling_rate",
        "fooling_rate_correct",
        "auc_drop",
        "output_ks",
        "output_wasserstein",
        "mu_uncertainty_increase",
        "mean_shift",
        "efficiency_change",
        "auc_perturbed",
        "efficiency_perturbed",
    }


def test_worsening_directions() -> None:
    assert worsening("fooling_rate", 0.02, 0.05) == pytest.approx(0.03)
    assert worsening("auc_perturbed", 0.90, 0.85) == pytest.approx(0.05)
    assert worsening("efficiency_perturbed", 0.66, 0.70) == pytest.approx(-0.04)
    assert worsening("mean_shift", 0.005, -0.008) == pytest.approx(0.003)
    assert worsening("efficiency_change", -0.04, 0.01) == pytest.approx(-0.03)


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def test_regressed_within_margin_improved_unchanged() -> None:
    base = make_report(make_check("a"), make_check("b"), make_check("c"), make_check("d"))
    now = make_report(
        make_check("a", fooling_rate=0.05),  # +0.03 > 0.02
        make_check("b", fooling_rate=0.035),  # +0.015 <= 0.02
        make_check("c", fooling_rate=0.01),
        make_check("d"),
    )
    result = compare(base, now, parse_compare_fail("fooling_rate:0.02"))
    assert [r.status for r in result.rows] == [REGRESSED, WITHIN, IMPROVED, UNCHANGED]
    assert [r.check for r in result.rows] == ["a", "b", "c", "d"]
    a = row(result, "a", "fooling_rate")
    assert (a.old, a.new, a.delta, a.allowed) == (0.02, 0.05, pytest.approx(0.03), 0.02)
    assert a.regressed and result.regressed
    assert result.regressions == [
        "a: fooling_rate rose from 0.02 to 0.05 (worse by 0.03; fooling_rate:0.02 allows 0.02)"
    ]
    assert not result.warnings and not result.new_checks and not result.missing_checks


def test_only_the_thresholded_metrics_are_rows() -> None:
    base = make_report(make_check())
    now = make_report(make_check(output_ks=0.5, fooling_rate=0.021))
    result = compare(base, now, parse_compare_fail("fooling_rate:0.01"))
    assert [r.metric for r in result.rows] == ["fooling_rate"]
    assert not result.regressed  # output_ks got much worse, but nobody asked


def test_without_thresholds_the_default_metrics_show_and_nothing_fails() -> None:
    base = make_report(make_check())
    now = make_report(make_check(fooling_rate=0.5, output_ks=0.05))
    result = compare(base, now)
    assert [r.metric for r in result.rows] == list(DEFAULT_METRICS)
    assert row(result, "pgd", "fooling_rate").status == WORSE
    assert row(result, "pgd", "output_ks").status == IMPROVED
    assert row(result, "pgd", "auc_drop").status == UNCHANGED
    assert not result.regressed
    assert "nothing fails" in summary_lines(result)[-1]


def test_lower_is_worse_metrics() -> None:
    base = make_report(make_check("a"), make_check("b"))
    now = make_report(
        make_check("a", auc_perturbed=0.88, efficiency_perturbed=0.70),
        make_check("b", auc_perturbed=0.95, efficiency_perturbed=0.60),
    )
    spec = parse_compare_fail("auc_perturbed:0.01,efficiency_perturbed:0.05")
    result = compare(base, now, spec)
    assert row(result, "a", "auc_perturbed").status == REGRESSED  # fell by 0.02
    assert row(result, "a", "efficiency_perturbed").status == IMPROVED  # rose
    assert row(result, "b", "auc_perturbed").status == IMPROVED
    assert row(result, "b", "efficiency_perturbed").status == REGRESSED  # fell by 0.06
    assert result.regressions[0].startswith("a: auc_perturbed fell from 0.9 to 0.88")
    assert len(result.regressions) == 2


def test_signed_metrics_compare_in_absolute_value() -> None:
    base = make_report(make_check("a", mean_shift=0.001), make_check("b", mean_shift=-0.004))
    now = make_report(make_check("a", mean_shift=-0.004), make_check("b", mean_shift=0.001))
    result = compare(base, now, parse_compare_fail("mean_shift:0.002"))
    a, b = row(result, "a", "mean_shift"), row(result, "b", "mean_shift")
    assert a.status == REGRESSED and a.delta == pytest.approx(-0.005)
    assert b.status == IMPROVED and b.delta == pytest.approx(0.005)
    assert "grew in magnitude" in result.regressions[0]


def test_relative_margin() -> None:
    base = make_report(make_check("a"), make_check("b"), make_check("zero", output_ks=0.0))
    now = make_report(
        make_check("a", output_ks=0.109),
        make_check("b", output_ks=0.111),
        make_check("zero", output_ks=1e-6),
    )
    result = compare(base, now, parse_compare_fail("output_ks:10%"))
    assert row(result, "a", "output_ks").status == WITHIN
    assert row(result, "a", "output_ks").allowed == pytest.approx(0.01)
    assert row(result, "b", "output_ks").status == REGRESSED
    assert row(result, "zero", "output_ks").status == REGRESSED  # 10 % of 0 allows nothing
    assert "output_ks:10% allows 0.01, 10% of the baseline value" in result.regressions[0]


def test_missing_values_are_not_available_and_never_regress() -> None:
    base = make_report(make_check("a", fooling_rate_correct=None), make_check("b"))
    now = make_report(make_check("a"), make_check("b", fooling_rate_correct=None))
    result = compare(base, now, parse_compare_fail("fooling_rate_correct:0"))
    assert {r.status for r in result.rows} == {NOT_AVAILABLE}
    assert row(result, "b", "fooling_rate_correct").delta is None
    assert not result.regressed


def test_checks_match_on_name_attack_and_params() -> None:
    base = make_report(
        make_check("gate"),
        make_check("t:fgsm", "fgsm", params={"epsilon": 0.5}),
        make_check("old"),
    )
    now = make_report(
        make_check("gate", fooling_rate=0.9),
        make_check("t:fgsm", "fgsm", params={"epsilon": 1.0}),
        make_check("brand_new", "random", params={"epsilon": 1.0, "distribution": "gaussian"}),
    )
    result = compare(base, now, parse_compare_fail("fooling_rate:0.1"))
    assert [r.check for r in result.rows] == ["gate"]
    assert result.new_checks == ["t:fgsm (fgsm: epsilon=1)", "brand_new"]
    assert result.missing_checks == ["t:fgsm (fgsm: epsilon=0.5)", "old"]
    assert len(result.regressions) == 1  # new and missing checks are listed, not errors
    lines = summary_lines(result)
    assert "new check (not in the baseline): brand_new" in lines
    assert "missing check (in the baseline, not run now): old" in lines


def test_params_order_and_int_float_do_not_matter_and_attack_does() -> None:
    params = {"epsilon": 1.0, "steps": 20, "step_size": None}
    reordered = {"step_size": None, "steps": 20.0, "epsilon": 1}
    base = make_report(make_check("x", params=params), make_check("y", "fgsm"))
    now = make_report(make_check("x", params=reordered), make_check("y", "pgd"))
    result = compare(base, now)
    assert {r.check for r in result.rows} == {"x"}
    assert result.new_checks == ["y (pgd: epsilon=1)"]
    assert result.missing_checks == ["y (fgsm: epsilon=1)"]


def test_a_check_run_twice_pairs_in_order() -> None:
    base = make_report(make_check("t:pgd", fooling_rate=0.1), make_check("t:pgd", fooling_rate=0.2))
    now = make_report(make_check("t:pgd", fooling_rate=0.1), make_check("t:pgd", fooling_rate=0.2))
    result = compare(base, now, parse_compare_fail("fooling_rate:0"))
    assert [r.check for r in result.rows] == ["t:pgd", "t:pgd #2"]
    assert {r.status for r in result.rows} == {UNCHANGED}


def test_other_data_file_warns_with_short_hashes() -> None:
    base = make_report(make_check())
    now = make_report(make_check(), data_sha="d" * 64)
    result = compare(base, now)
    (warning,) = result.warnings
    assert warning.startswith("the baseline was made from another data file: data sha256 ")
    assert "b" * 12 in warning and "d" * 12 in warning and "b" * 13 not in warning
    assert any("warning: " + warning == line for line in summary_lines(result))


def test_other_uncertainty_file_and_seed_warn() -> None:
    base = make_report(make_check())
    now = make_report(make_check(), unc_sha="e" * 64, seed=7)
    result = compare(base, now)
    assert len(result.warnings) == 2
    assert "another uncertainty file: uncertainties sha256 " in result.warnings[0]
    assert "c" * 12 in result.warnings[0] and "e" * 12 in result.warnings[0]
    assert "--hepguard-seed 0, this run 7" in result.warnings[1]


def test_other_number_of_events_warns() -> None:
    result = compare(make_report(make_check()), make_report(make_check(n_events=300)))
    (warning,) = result.warnings
    assert "pgd: 1000 → 300" in warning


def test_model_change_is_the_point_not_a_warning() -> None:
    base = make_report(make_check())
    now = make_report(make_check(), model_sha="f" * 64)
    result = compare(base, now)
    assert result.warnings == []
    assert result.model_changed is True
    assert result.notes[0].startswith(f"model changed: sha256 {'a' * 12} in the baseline, ")
    assert "f" * 12 in result.notes[0]
    assert summary_lines(result)[0] == result.notes[0]

    same = compare(base, copy.deepcopy(base))
    assert same.model_changed is False and "same model" in same.notes[0]


def test_model_without_hash() -> None:
    base = make_report(make_check(), model_sha=None)
    now = make_report(make_check(), model_sha=None)
    result = compare(base, now)
    assert result.model_changed is None and "cannot tell" in result.notes[0]
    now["inputs"]["model"]["path"] = "pkg.other:model"
    assert compare(base, now).model_changed is True


def test_summary_table() -> None:
    base = make_report(make_check("a"), make_check("b"))
    now = make_report(make_check("a", fooling_rate=0.05), make_check("b", fooling_rate=0.021))
    lines = summary_lines(compare(base, now, parse_compare_fail("fooling_rate:0.02")))
    header = next(line for line in lines if line.startswith("check"))
    assert header.split() == ["check", "metric", "old", "new", "delta", "status"]
    assert re.search(
        r"^a\s+fooling_rate\s+0\.02\s+0\.05\s+\+0\.03\s+REGRESSED", "\n".join(lines), re.M
    )
    assert re.search(
        r"^b\s+fooling_rate\s+0\.02\s+0\.021\s+\+0\.001\s+within margin", "\n".join(lines), re.M
    )
    assert lines[-2].startswith("REGRESSION a: fooling_rate rose from 0.02 to 0.05")
    assert lines[-1] == (
        "1 regression(s) beyond the --hepguard-compare-fail margins: the run fails (exit code 1)"
    )


def test_summary_without_regression() -> None:
    base = make_report(make_check())
    lines = summary_lines(compare(base, base, parse_compare_fail("auc_drop:0.01")))
    assert lines[-1] == "no regression beyond the --hepguard-compare-fail margins"


# ---------------------------------------------------------------------------------------------
# load_baseline
# ---------------------------------------------------------------------------------------------


def test_load_saved_baseline_round_trip(tmp_path: Path) -> None:
    report = make_report(make_check(), make_check("fgsm", "fgsm"))
    write_json(tmp_path / "baseline.json", report)
    assert load_baseline(tmp_path / "baseline.json") == report
    assert load_baseline(str(tmp_path / "baseline.json")) == report


def test_corrupt_baseline_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(make_report(make_check()), indent=2)[:300])
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid JSON (line ")
    assert "--hepguard-save-baseline" in message


def test_baseline_with_nan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(make_report(make_check(fooling_rate=float("nan")))))
    with pytest.raises(BaselineError, match="NaN is not a JSON number"):
        load_baseline(path)


def test_binary_missing_and_folder_baselines(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04\xff\xfe\x00")
    with pytest.raises(BaselineError, match=r"model\.pt: not a text file"):
        load_baseline(tmp_path / "model.pt")
    with pytest.raises(BaselineError, match=r"nope\.json: no such baseline file"):
        load_baseline(tmp_path / "nope.json")
    with pytest.raises(BaselineError, match="is a folder"):
        load_baseline(tmp_path)


def test_schema_invalid_baseline(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    report = make_report(make_check(), make_check("fgsm", "fgsm"))
    report["checks"][1]["fooling_rate"] = "abc"
    path.write_text(json.dumps(report))
    with pytest.raises(ReportSchemaError) as info:
        load_baseline(path)
    assert str(info.value).startswith(f"{path}: checks[1].fooling_rate: 'abc' is not of type")
    assert isinstance(info.value, HepguardError)


def test_baseline_of_another_version(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(make_report(make_check(), report_version=2)))
    with pytest.raises(ReportSchemaError, match=r"old\.json: report_version: 1 was expected"):
        load_baseline(path)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

HOSTILE = "a|b <script>alert(1)</script>\n*x*"


def _cells(line: str) -> int:
    """Cells of a table row: the pipes that are not backslash-escaped, minus one."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_markdown_table_and_title(tmp_path: Path) -> None:
    report = make_report(
        make_check("random", "random", limits={"max_fooling_rate": 0.05}),
        make_check("t:pgd"),
    )
    path = tmp_path / "summary.md"
    write_markdown(report, path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == MARKER and REPORT_MARKER in text[:4096]  # the session may overwrite it
    assert "hepguard report: PASS" in lines[1]
    header = next(line for line in lines if line.startswith("| check |"))
    assert "fooling rate" in header and "AUC nominal → perturbed" in header and "gate" in header
    rows = [line for line in lines if line.startswith("| ")]
    assert len(rows) == 4 and len({_cells(r) for r in rows}) == 1  # header, rule, 2 checks
    assert "| 0.0200 ± 0.0040 | 0.0150 ± 0.0040 | 0.0060 ± 0.0020 | 0.9500 → 0.9000 |" in text
    assert "| PASS |" in text and "| report |" in text
    assert "- PASS random: fooling\\_rate 0.02 (limit max\\_fooling\\_rate 0.05)" in text
    assert list(tmp_path.iterdir()) == [path]  # atomic: no temporary file left


def test_markdown_escapes_user_strings(tmp_path: Path) -> None:
    check = make_check(HOSTILE, limits={"max_fooling_rate": 0.01}, passed=False)
    check["failures"] = [f"fooling_rate 0.02 exceeds max_fooling_rate 0.01 in {HOSTILE}"]
    check["warnings"] = [f"gradient masking in {HOSTILE}"]
    report = make_report(check)
    report["assumptions"] = ["<img src=x onerror=alert(1)>"]
    path = tmp_path / "summary.md"
    write_markdown(report, path)
    text = path.read_text(encoding="utf-8")
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a\\|b" in text and "\\*x\\*" in text
    assert "hepguard report: FAIL" in text and "**FAIL**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and len({_cells(r) for r in rows}) == 1  # the name stays in its cell
    assert _cells(rows[0]) == 9
    assert md_escape("x\r\ny") == "x y"
    assert md_escape("a_b & [c](d) `e`") == "a\\_b &amp; \\[c\\](d) \\`e\\`"


def test_markdown_comparison(tmp_path: Path) -> None:
    base = make_report(make_check("a"), make_check(HOSTILE), make_check("gone"))
    now = make_report(make_check("a", fooling_rate=0.05), make_check(HOSTILE), make_check("new"))
    now["inputs"]["data"]["sha256"] = "9" * 64
    comparison = compare(base, now, parse_compare_fail("fooling_rate:0.02,output_ks:10%"))
    text = render_markdown(now, comparison)
    assert "hepguard report: FAIL" in text  # the checks passed, the comparison did not
    assert "1 regression(s) against the baseline" in text
    assert "### Compared with the baseline" in text
    assert "another data file" in text and "9" * 12 in text
    compared = text.split("### Compared")[1]
    rows = [line for line in compared.splitlines() if line.startswith("| a | ")]
    assert rows[0] == "| a | fooling\\_rate | 0.02 | 0.05 | +0.03 | **REGRESSED** | 0.02 |"
    assert rows[1] == "| a | output\\_ks | 0.1 | 0.1 | +0 | unchanged | 0.01 |"
    assert "New checks (not in the baseline): new" in text
    assert "Missing checks (in the baseline, not run now): gone" in text
    assert "<script>" not in text
    table = [line for line in compared.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 2 * 2 and {_cells(r) for r in table} == {7}


def test_markdown_long_comparison_folds(tmp_path: Path) -> None:
    checks = [make_check(f"c{i}") for i in range(20)]
    report = make_report(*checks)
    comparison = compare(report, report, parse_compare_fail("fooling_rate:0.1,output_ks:0.1"))
    text = render_markdown(report, comparison)
    assert "<details><summary>40 rows</summary>" in text and "No regression beyond" in text


def test_markdown_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ReportPathError, match="does not exist"):
        write_markdown(make_report(make_check()), tmp_path / "no" / "s.md")
    with pytest.raises(ReportPathError, match="is a folder"):
        write_markdown(make_report(make_check()), tmp_path)


def test_markdown_overwrites_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "s.md"
    write_markdown(make_report(make_check("first")), path)
    write_markdown(make_report(make_check("second")), path)
    text = path.read_text(encoding="utf-8")
    assert "second" in text and "first" not in text and text.count(MARKER) == 1


def test_markdown_fails_when_a_robustness_test_failed() -> None:
    """A check that passed its (absent) gate but whose test's assert failed makes the run fail,
    so the title says FAIL too."""
    report = make_report(make_check("random", "random"), make_check("t:pgd", outcome="failed"))
    text = render_markdown(report)
    assert "hepguard report: FAIL" in text
    assert "2 check(s): 0 gate(s) failed, 1 test(s) failed." in text
    assert "| report, **test failed** |" in text


# ---------------------------------------------------------------------------------------------
# docs/baselines.md
# ---------------------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "baselines.md"


def test_docs_list_every_metric_with_its_direction() -> None:
    text = DOCS.read_text()
    table = text.split("| metric | worse when | `worse` |")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    metrics = [re.findall(r"`([a-z_]+)`", r.split("|")[1])[0] for r in rows]
    assert metrics == list(METRICS)
    for line, metric in zip(rows, metrics, strict=True):
        old, new = 0.5, 0.4  # a fall is worse only for the lower-is-worse metrics
        assert ("falls" in line) == (worsening(metric, old, new) > 0), line


def test_docs_ci_examples() -> None:
    """The YAML examples parse, and run the audit with the options as the plugin names them."""
    yaml = pytest.importorskip("yaml")
    text = DOCS.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    github, gitlab = (yaml.safe_load(b) for b in blocks)
    steps = github["jobs"]["robustness"]["steps"]
    audit = next(s["run"] for s in steps if "python -m pytest" in str(s.get("run")))
    summary = next(s for s in steps if "GITHUB_STEP_SUMMARY" in str(s.get("run")))
    upload = next(s for s in steps if "upload-artifact" in str(s.get("uses")))
    assert summary["if"] == upload["if"] == "always()"
    assert "report.html" in upload["with"]["path"]
    job = gitlab["hepguard"]
    assert job["artifacts"]["when"] == "always" and "report.html" in job["artifacts"]["paths"]
    assert "merge_request_event" in job["rules"][0]["if"]
    for command in (audit, job["script"][1]):
        args = command.split()
        for option in ("--hepguard-compare", "--hepguard-markdown", "--hepguard-html"):
            assert option in args, option
        spec = args[args.index("--hepguard-compare-fail") + 1]
        assert parse_compare_fail(spec)
        assert args[args.index("--hepguard-html") + 1] == "report.html"
    assert 'cat hepguard-summary.md >> "$GITHUB_STEP_SUMMARY"' in summary["run"]
    specs = re.findall(r"--hepguard-compare-fail ([a-z_]+:[^\s`]+)", text)
    assert len(specs) >= 3
    for spec in specs:
        parse_compare_fail(spec)


def test_mu_uncertainty_increase_rows_only_for_pyhf_impact_checks() -> None:
    base = make_report(
        make_check("pgd"),
        make_check("pyhf_impact", "pyhf_impact", params={}, mu_uncertainty_increase=0.10),
    )
    now = make_report(
        make_check("pgd"),
        make_check("pyhf_impact", "pyhf_impact", params={}, mu_uncertainty_increase=0.16),
    )
    result = compare(base, now, parse_compare_fail("mu_uncertainty_increase:0.05"))
    (only,) = result.rows
    assert (only.check, only.metric) == ("pyhf_impact", "mu_uncertainty_increase")
    assert only.status == REGRESSED
    assert result.regressions[0].startswith("pyhf_impact: mu_uncertainty_increase rose")
