"""One error hierarchy whose messages users read.

Every error names the file, the key (and line where known) and what was expected. The pytest
plugin turns a :class:`HepguardError` into a usage error: a red ``ERROR:`` line and exit code 4.
"""

from __future__ import annotations


class HepguardError(Exception):
    """Base class of every error hepguard raises on bad user input."""


class UncertaintyFileError(HepguardError):
    """The uncertainty YAML is malformed or breaks the format."""


class DataError(HepguardError):
    """The data file cannot be read, lacks a column, or holds values hepguard cannot audit."""


class ModelError(HepguardError):
    """The model file cannot be loaded safely, or its inputs/outputs do not fit the audit."""


class ReportPathError(HepguardError):
    """An output path would overwrite something of the user's or cannot be written."""


class AttackError(HepguardError):
    """An attack was asked for with an unknown name or invalid parameters."""


class UnsupportedOnnxOpError(ModelError):
    """The ONNX graph holds operators the autograd bridge cannot run; all are listed at once."""


class PyhfError(HepguardError):
    """Templates, a workspace or a patch cannot be built: a user workspace that fails pyhf's
    schema or does not hold the mapped channel and samples, or a binning with empty bins."""
