"""The JSON Schema of the report, version 1 (``pytest_hepguard/schemas/report-v1.json``), and
validation of a report read back from disk (a baseline) with a message that names the file and
the JSON path of the first error: ``baseline.json: checks[2].fooling_rate: 'abc' is not of type
'number', 'null'``.

jsonschema is imported on first use, not with this module.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from pytest_hepguard.exceptions import HepguardError
from pytest_hepguard.report.json_report import REPORT_VERSION

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

#: File name of the schema inside the package (``pytest_hepguard/schemas/``).
SCHEMA_FILE = f"report-v{REPORT_VERSION}.json"

#: Longest error message kept (a wrong value can be a whole check entry).
_MAX_MESSAGE = 300

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ReportSchemaError(HepguardError):
    """A report (or baseline) read from disk does not follow the report schema."""


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return (
        resources.files("pytest_hepguard")
        .joinpath("schemas", SCHEMA_FILE)
        .read_text(encoding="utf-8")
    )


def load_schema() -> dict[str, Any]:
    """The report schema (JSON Schema draft 2020-12) as a fresh dict, read from package data."""
    return copy.deepcopy(_parsed_schema())


@lru_cache(maxsize=1)
def _parsed_schema() -> dict[str, Any]:
    return json.loads(_schema_text())


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_parsed_schema())


def json_path(path: Iterable[str | int]) -> str:
    """``checks[2].fooling_rate`` for the path ``("checks", 2, "fooling_rate")``; keys that are
    not identifiers (feature and class names) as ``["jet pt"]``; ``top level`` for the root."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or "top level"


#: Errors reported before any other: they say the file is not a report this version reads.
_IDENTITY = (("tool",), ("report_version",))


def _order(error: ValidationError) -> tuple[bool, tuple[tuple[bool, Any], ...]]:
    # the identity keys first, then document order for list indices and keys alphabetically
    # (within one parent the parts at a given depth are all ints or all strings, so the
    # comparison never mixes the two)
    path = tuple(error.absolute_path)
    return path not in _IDENTITY, tuple((isinstance(p, str), p) for p in path)


def _message(error: ValidationError) -> str:
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    path = tuple(error.absolute_path)
    if path == _IDENTITY[1]:
        message += (
            f" (this pytest-hepguard reads report version {REPORT_VERSION}; the file has "
            f"{error.instance!r})"
        )
    elif path == _IDENTITY[0]:
        message += " (not a pytest-hepguard report)"
    return message


def validate_report(data: Any, source: str) -> None:
    """Check ``data`` (a report as read from JSON) against the schema.

    Raises :class:`ReportSchemaError` naming ``source`` (the file) and the JSON path of the first
    error in document order, e.g. ``baseline.json: checks[2].fooling_rate: 'abc' is not of type
    'number', 'null'``; the number of further errors is appended when there are any.
    """
    if isinstance(data, dict) and "tool" not in data:
        raise ReportSchemaError(
            f'{source}: top level: no "tool" key: not a pytest-hepguard report '
            "(expected a file written by --hepguard-json or --hepguard-save-baseline)"
        )
    errors = sorted(_validator().iter_errors(data), key=_order)
    if not errors:
        return
    first = errors[0]
    text = f"{source}: {json_path(first.absolute_path)}: {_message(first)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    raise ReportSchemaError(text)
