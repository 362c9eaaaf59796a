"""The JSON Schema of the report (pytest_hepguard/schemas/report-v1.json): a real report of the
bundled example validates; broken ones fail with the file and the JSON path in the message; the
schema lists exactly what docs/report.md documents and what the code can write."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pytest_hepguard.attacks import PARAMETERS
from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.report.json_report import REPORT_VERSION
from pytest_hepguard.report.schema import (
    ReportSchemaError,
    json_path,
    load_schema,
    validate_report,
)
from pytest_hepguard.uncertainties import GATE_LIMITS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: Unrelated plugins that only slow the subprocess down.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@pytest.fixture(scope="module")
def example_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON report of the README's main job on the bundled example (gates and robustness
    tests), on its first 300 events to stay fast."""
    out = tmp_path_factory.mktemp("example") / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLES),
            *QUIET,
            f"--hepguard-model={EXAMPLES / 'tagger.pt'}",
            f"--hepguard-uncertainties={EXAMPLES / 'unc.yaml'}",
            "--hepguard-events=300",
            f"--hepguard-json={out}",
        ],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture
def report(example_report: dict[str, Any]) -> dict[str, Any]:
    """A copy to mutate."""
    return copy.deepcopy(example_report)


def _documented(section_title: str) -> set[str]:
    """The keys of the first column of a docs/report.md table."""
    text = (ROOT / "docs" / "report.md").read_text()
    section = text.split(section_title)[1].split("\n\n", 2)[1]
    keys: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return keys


def _error(data: Any, source: str = "baseline.json") -> str:
    with pytest.raises(ReportSchemaError) as info:
        validate_report(data, source)
    assert isinstance(info.value, HepguardError)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# The schema itself
# ---------------------------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["report_version"]["const"] == REPORT_VERSION == 1
    assert schema["properties"]["tool"]["const"] == "pytest-hepguard"
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["check"]["additionalProperties"] is False


def test_load_schema_returns_a_fresh_copy() -> None:
    schema = load_schema()
    schema["properties"].clear()
    assert load_schema()["properties"]


def test_schema_file_is_package_data() -> None:
    """pyproject.toml ships ``schemas/*.json``: the file sits inside the package."""
    path = ROOT / "pytest_hepguard" / "schemas" / f"report-v{REPORT_VERSION}.json"
    assert json.loads(path.read_text()) == load_schema()
    assert 'pytest_hepguard = ["schemas/*.json"]' in (ROOT / "pyproject.toml").read_text()


def test_docs_check_keys_are_the_schema_check_properties() -> None:
    """Every key docs/report.md documents for a check entry is in the schema, and nothing else;
    the schema requires them all (the report always writes every key) but ``details`` and
    ``mu_uncertainty_increase``, which reports written before they existed lack (baselines stay
    comparable)."""
    check = load_schema()["$defs"]["check"]
    documented = _documented("Each entry of `checks`:")
    assert len(documented) > 40
    assert documented == set(check["properties"])
    assert set(check["required"]) == set(check["properties"]) - {
        "details",
        "mu_uncertainty_increase",
    }


def test_docs_top_level_keys_are_the_schema_properties() -> None:
    schema = load_schema()
    documented = _documented("Top level:")
    assert documented == set(schema["properties"])
    assert set(schema["required"]) == documented - {"counterexamples"}


def test_schema_enums_follow_the_code() -> None:
    """The attacks and gate limits the schema allows are the ones the code knows."""
    check = load_schema()["$defs"]["check"]["properties"]
    assert set(check["attack"]["enum"]) == set(PARAMETERS)
    assert set(check["limits"]["propertyNames"]["enum"]) == set(GATE_LIMITS)


# ---------------------------------------------------------------------------------------------
# Valid reports
# ---------------------------------------------------------------------------------------------


def test_real_example_report_validates(example_report: dict[str, Any]) -> None:
    validate_report(example_report, "report.json")
    names = [c["name"] for c in example_report["checks"]]
    assert names[:3] == ["random", "fgsm", "pgd"]
    assert "robustness_half_to_two_sigma[0.5]:fgsm" in names  # checks from tests are in it


def test_report_without_labels_or_working_point_validates(report: dict[str, Any]) -> None:
    """What a data file without labels and an uncertainty file without a working point give:
    nulls wherever docs/report.md says null, one histogram group of all events."""
    nullable = (
        "fooling_rate_correct fooling_rate_correct_err random_fooling_rate_correct auc_nominal "
        "auc_perturbed auc_drop cut efficiency_nominal efficiency_perturbed efficiency_change "
        "mistag_nominal mistag_perturbed rejection_nominal rejection_perturbed "
        "output_wasserstein zero_gradient_fraction roc_nominal roc_perturbed"
    ).split()
    for check in report["checks"]:
        check.update(dict.fromkeys(nullable))
        check["n_correct"] = 0
        groups = check["histograms"]["groups"]
        check["histograms"]["groups"] = {"all events": next(iter(groups.values()))}
    report["inputs"]["model"] = {"path": "mypkg.models:tagger", "sha256": None}
    report["versions"]["onnxruntime"] = None
    validate_report(report, "report.json")


def test_odd_feature_and_class_names_validate(report: dict[str, Any]) -> None:
    check = report["checks"][0]
    check["max_displacement_sigma"]["<script>|x\n"] = 0.5
    check["histograms"]["groups"]["b jets & more"] = check["histograms"]["groups"].pop("b")
    check["params"]["distribution"] = "uniform"
    validate_report(report, "report.json")


# ---------------------------------------------------------------------------------------------
# Invalid reports: the message names the file and the JSON path
# ---------------------------------------------------------------------------------------------


def test_wrong_type_names_file_and_path(report: dict[str, Any]) -> None:
    report["checks"][2]["fooling_rate"] = "abc"
    message = _error(report)
    assert message.startswith("baseline.json: checks[2].fooling_rate: 'abc' is not of type ")
    assert "'number'" in message


def test_missing_check_key(report: dict[str, Any]) -> None:
    del report["checks"][1]["auc_drop"]
    assert _error(report) == "baseline.json: checks[1]: 'auc_drop' is a required property"


def test_missing_top_level_key(report: dict[str, Any]) -> None:
    del report["seed"]
    assert _error(report, "b.json") == "b.json: top level: 'seed' is a required property"


def test_extra_check_key(report: dict[str, Any]) -> None:
    report["checks"][0]["fooling_rate_typo"] = 0.1
    message = _error(report)
    assert message.startswith("baseline.json: checks[0]: Additional properties are not allowed")
    assert "'fooling_rate_typo'" in message


def test_extra_top_level_key(report: dict[str, Any]) -> None:
    report["comment"] = "hand edited"
    message = _error(report)
    assert message.startswith("baseline.json: top level: Additional properties")
    assert "'comment'" in message


def test_version_2_is_refused_first(report: dict[str, Any]) -> None:
    """A report of another layout version says so, before the errors that follow from it."""
    report["report_version"] = 2
    report["checks"][0]["new_metric_of_v2"] = 1.0
    message = _error(report)
    assert message.startswith("baseline.json: report_version: 1 was expected")
    assert "reads report version 1; the file has 2" in message
    assert "(and 1 more error)" in message


def test_not_a_hepguard_report() -> None:
    message = _error({"name": "my-package", "version": "1.0"}, "package.json")
    assert message.startswith('package.json: top level: no "tool" key: not a pytest-hepguard')
    message = _error({"tool": "pytest-benchmark", "report_version": 1}, "x.json")
    assert message.startswith("x.json: tool: 'pytest-hepguard' was expected")
    assert _error([1, 2], "list.json") == "list.json: top level: [1, 2] is not of type 'object'"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r["inputs"]["data"].update(sha256="not-a-hash"), "inputs.data.sha256"),
        (lambda r: r["checks"][1]["histograms"]["edges"].pop(), "checks[1].histograms.edges"),
        (
            lambda r: r["checks"][0]["roc_nominal"]["signal_efficiency"].append(1.0),
            "checks[0].roc_nominal.signal_efficiency",
        ),
        (lambda r: r["checks"][0]["limits"].update(max_typo=0.1), "checks[0].limits"),
        (lambda r: r["checks"][0].update(attack="cw"), "checks[0].attack"),
        (lambda r: r["checks"][0].update(n_events=1.5), "checks[0].n_events"),
        (lambda r: r["checks"][0].update(passed="yes"), "checks[0].passed"),
        (lambda r: r["checks"][0]["failures"].append(3), "checks[0].failures[0]"),
        (lambda r: r["checks"][0]["params"].update(nested={"a": 1}), "checks[0].params.nested"),
        (
            lambda r: r["checks"][0]["max_displacement_sigma"].update({"jet pt": "x"}),
            'checks[0].max_displacement_sigma["jet pt"]',
        ),
        (lambda r: r.update(checks={}), "checks"),
    ],
)
def test_mutations_name_their_path(report: dict[str, Any], mutate: Any, path: str) -> None:
    mutate(report)
    assert _error(report).startswith(f"baseline.json: {path}: ")


def test_several_errors_report_the_first_in_document_order(report: dict[str, Any]) -> None:
    report["checks"][3]["output_ks"] = "x"
    report["checks"][1]["output_ks"] = "y"
    message = _error(report)
    assert message.startswith("baseline.json: checks[1].output_ks: 'y'")
    assert message.endswith("(and 1 more error)")


def test_long_values_are_cut(report: dict[str, Any]) -> None:
    report["checks"][0]["histograms"] = list(range(1000))
    message = _error(report)
    assert len(message) < 400 and message.endswith("...")


def test_json_path_rendering() -> None:
    assert json_path([]) == "top level"
    assert json_path(["checks", 2, "fooling_rate"]) == "checks[2].fooling_rate"
    assert json_path(["checks", 0, "moved_fraction", "jet pt"]) == (
        'checks[0].moved_fraction["jet pt"]'
    )
    assert json_path(["versions", "pytest-hepguard"]) == 'versions["pytest-hepguard"]'
