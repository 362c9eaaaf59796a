"""The uncertainty file (YAML, format version 1) -> a validated :class:`UncertaintyModel`.

The data model (frozen dataclasses) and its parser, :func:`load_uncertainties` /
:func:`parse_uncertainties`; nothing here imports torch or numpy. The per-event box that attacks
move in is built from the model in :mod:`pytest_hepguard.envelope`. The format is documented in
``docs/uncertainties.md``. Every error names the file, the line and the dotted key.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import yaml

from pytest_hepguard.attacks import PARAMETERS, check_params
from pytest_hepguard.exceptions import AttackError, UncertaintyFileError

SigmaKind = Literal["absolute", "relative", "std"]

#: Gate limit keys in ``gates:`` -> the check metric each one bounds from above. Metrics that can
#: move either way (mean shift, efficiency change) are bounded in absolute value.
GATE_LIMITS: dict[str, str] = {
    "max_fooling_rate": "fooling_rate",
    "max_fooling_rate_correct": "fooling_rate_correct",
    "max_auc_drop": "auc_drop",
    "max_output_ks": "output_ks",
    "max_output_wasserstein": "output_wasserstein",
    "max_mean_shift": "mean_shift",
    "max_efficiency_change": "efficiency_change",
    "max_mu_uncertainty_increase": "mu_uncertainty_increase",
}
#: Limits that only the check of that attack computes.
_LIMIT_OF_ATTACK = {"max_mu_uncertainty_increase": "pyhf_impact"}


@dataclass(frozen=True)
class FeatureSpec:
    """How far one feature may move.

    ``up``/``down`` are the sigma on each side in the unit of ``kind``: absolute (the feature's own
    unit, e.g. GeV), relative (a fraction of ``|x|``), or std (a fraction of the feature's standard
    deviation over the sample, sentinel values excluded). Displacements are ``epsilon * sigma``.
    """

    name: str
    kind: SigmaKind | None  # None only for frozen features
    up: float
    down: float
    min: float | None = None
    max: float | None = None
    integer: bool = False
    sentinels: tuple[float, ...] = ()
    frozen: bool = False
    line: int | None = None  # line of the feature's key in the YAML, for messages


@dataclass(frozen=True)
class Ratio:
    """Discriminant ``sum(P[numerator]) / sum(P[denominator])``; class indices, 0-based."""

    numerator: tuple[int, ...]
    denominator: tuple[int, ...]


@dataclass(frozen=True)
class WorkingPoint:
    """Exactly one of ``cut`` (discriminant value) or ``efficiency`` (signal efficiency, 0..1)."""

    cut: float | None = None
    efficiency: float | None = None


@dataclass(frozen=True)
class DecisionSpec:
    """How model outputs become a discriminant and a decision.

    ``discriminant`` is an output column index, ``"argmax"``, a :class:`Ratio`, or ``None`` (the
    default: the single output of a one-output model, else argmax). ``signal``/``background`` are
    class indices (names in the YAML are resolved through ``classes``); ``background=None`` means
    every label that is not signal. ``output`` says whether the model returns ``"probabilities"``
    or ``"logits"``; ``"auto"`` detects it from the nominal outputs and reports what was assumed.
    """

    discriminant: int | str | Ratio | None = None
    classes: tuple[str, ...] | None = None
    signal: tuple[int, ...] | None = None
    background: tuple[int, ...] | None = None
    working_point: WorkingPoint | None = None
    output: Literal["auto", "probabilities", "logits"] = "auto"


@dataclass(frozen=True)
class DataSpec:
    """Where the events are. ``path`` is resolved against the YAML file's folder."""

    path: Path | None = None
    tree: str | None = None
    label: str | tuple[str, ...] | None = None
    weight: str | None = None


@dataclass(frozen=True)
class GateSpec:
    """One built-in check: an attack with its parameters, and the limits that make it a gate.

    ``params`` holds the attack's keyword arguments (``epsilon`` in sigmas, ``steps``, ...);
    ``limits`` maps a metric limit key (``max_fooling_rate``, ``max_auc_drop``, ...) to its value.
    A gate with no limits runs and reports but cannot fail.
    """

    name: str
    attack: str
    params: dict[str, object] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class InputScaling:
    """An elementwise transform between the row's physical values and what the model takes, per
    feature of one input (weaver's ``preprocess.json``): ``x' = clip((x - median) * norm_factor,
    lower, upper)``, and ``pad`` in padded constituents (after the transform). Every tuple has
    one entry per feature of the input, in its order."""

    median: tuple[float, ...]
    norm_factor: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    pad: tuple[float, ...]


@dataclass(frozen=True)
class InputSpec:
    """One input tensor of a multi-input model (the ``inputs:`` section).

    ``per="event"``: ``features`` give a [batch, n_features] tensor. ``per="constituent"``:
    ``length`` constituents (tracks, particle-flow candidates, vertices) of ``features`` each,
    padded with ``pad_value``: [batch, length, n_features], or [batch, n_features, length] with
    ``channels_first`` (weaver's layout, ParticleNet's). ``per="mask"``: 1 for real
    constituents of the inputs in ``mask_of`` and 0 for padding, [batch, 1, length] with
    ``channels_first``, else [batch, length, 1]; never perturbed. Padding is never moved.
    Per-constituent inputs of the same length may share a feature (ParticleNet's points and
    features share the angles): the row holds it once. ``scaling`` (from a weaver
    ``preprocess.json``, see :mod:`pytest_hepguard.preprocess`) is applied when the row becomes
    the model's tensors; the row and the envelopes stay in physical units.
    """

    name: str
    per: Literal["event", "constituent", "mask"]
    features: tuple[str, ...] = ()
    length: int | None = None
    pad_value: float = 0.0
    channels_first: bool = False
    mask_of: tuple[str, ...] = ()
    line: int | None = None
    scaling: InputScaling | None = None


@dataclass(frozen=True)
class GroupShift:
    """One feature's shift in a nuisance group at theta = +1 (up) and theta = -1 (down)."""

    feature: str
    kind: Literal["absolute", "relative"]
    up: float  # > 0, feature unit (absolute) or fraction of |x| (relative)
    down: float  # > 0


@dataclass(frozen=True)
class GroupSpec:
    """A named systematic: one parameter theta ~ N(0, 1) moves every listed feature coherently,
    x -> x + theta * up (theta > 0) or x + theta * down (theta < 0), times |x| for relative.
    per_event: theta drawn independently per event (a smearing) instead of once per sample."""

    name: str
    shifts: tuple[GroupShift, ...]
    per_event: bool = False
    line: int | None = None  # line of the group's key in the YAML, for messages


@dataclass(frozen=True)
class ConstraintSpec:
    """What 'statistically unchanged' means. None disables a limit.

    ``ks_max``/``ks_pvalue_min``: two-sample Kolmogorov-Smirnov statistic (at most) and p-value
    (at least) per perturbed feature; ``jsd_max``: Jensen-Shannon distance (base 2) of each
    feature's histogram in ``jsd_bins`` equal bins over the nominal range; ``corr_max``: the
    largest ``|delta rho_ij|`` of the Pearson correlation matrix of the perturbed features;
    ``corr_frob_max``: ``||C' - C||_F / ||C||_F``.
    """

    ks_max: float | None = None
    ks_pvalue_min: float | None = 0.05
    jsd_max: float | None = 0.06
    corr_max: float | None = 0.01
    corr_frob_max: float | None = 0.006
    jsd_bins: int = 100


@dataclass(frozen=True)
class PatchSpec:
    """Where the hepguard modifiers go in a user's existing pyhf workspace: its file, the
    channel, and hepguard sample name -> the workspace's sample name."""

    workspace: Path
    channel: str
    samples: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PyhfSpec:
    """The ``pyhf:`` section: how templates, workspaces and patches are made.

    ``bins``: a number of equal bins over ``range`` or the bin edges (of the discriminant,
    a probability or a ratio of probabilities in [0, 1]). ``samples``: sample name -> class
    indices (empty: one sample per class). ``variations``: ``systematic`` (each group at
    ±``epsilon`` sigmas) and/or ``hidden`` (the hidden-systematics attack with ``direction``
    up and down, ``steps`` gradient steps, under the file's constraints). ``normsys``: split
    each variation into a normalisation (normsys) and a shape (histosys) part. ``symmetrize``:
    variations (group names, ``hidden``) built from their up side only. ``observations``: the
    channel's data; None: the nominal Asimov data."""

    bins: int | tuple[float, ...] = 10
    range: tuple[float, float] = (0.0, 1.0)
    channel: str = "hepguard"
    poi: str = "mu"
    samples: tuple[tuple[str, tuple[int, ...]], ...] = ()
    variations: tuple[str, ...] = ("systematic", "hidden")
    epsilon: float = 1.0
    steps: int = 20
    normsys: bool = True
    symmetrize: tuple[str, ...] = ()
    observations: tuple[float, ...] | None = None
    patch: PatchSpec | None = None


@dataclass(frozen=True)
class UncertaintyModel:
    """A validated uncertainty file. ``features`` are in the model's input order (for a
    single-input model; with ``inputs`` the order within each input is that of ``inputs``).

    ``groups`` are the named systematics (nuisance parameters), ``correlations`` the listed
    ``(group, group, rho)`` pairs between them (a positive semi-definite matrix, see
    :meth:`group_correlation`), ``constraints`` what "statistically unchanged" means."""

    features: tuple[FeatureSpec, ...]
    decision: DecisionSpec
    data: DataSpec
    gates: tuple[GateSpec, ...]
    source: Path | None = None
    inputs: tuple[InputSpec, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    correlations: tuple[tuple[str, str, float], ...] = ()
    constraints: ConstraintSpec = field(default_factory=ConstraintSpec)
    pyhf: PyhfSpec = field(default_factory=PyhfSpec)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def data_columns(self) -> tuple[tuple[str, ...], dict[str, tuple[int, float]]]:
        """What to read from the data file: the per-event feature columns, and the
        per-constituent columns with their (length, pad value)."""
        if not self.inputs:
            return self.feature_names, {}
        per_event: list[str] = []
        constituents: dict[str, tuple[int, float]] = {}
        for spec in self.inputs:
            if spec.per == "event":
                per_event += spec.features
            elif spec.per == "constituent":
                assert spec.length is not None
                constituents.update((f, (spec.length, spec.pad_value)) for f in spec.features)
        return tuple(per_event), constituents

    def group_correlation(self) -> list[list[float]]:
        """The correlation matrix between ``groups``, in their order: 1 on the diagonal, each
        listed pair's rho at both of its places, 0 elsewhere."""
        return _correlation_matrix([g.name for g in self.groups], self.correlations)


# --------------------------------------------------------------------------------------------
# Parser (format version 1)
# --------------------------------------------------------------------------------------------

#: Format versions this parser reads.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

_TOP_KEYS = (
    "version",
    "features",
    "inputs",
    "decision",
    "data",
    "gates",
    "groups",
    "correlations",
    "constraints",
    "pyhf",
)
_INPUT_KEYS = ("features", "per", "length", "pad_value", "layout", "mask_of")
_PER = ("event", "constituent", "mask")
_LAYOUTS = ("channels_last", "channels_first")
_KINDS: tuple[SigmaKind, ...] = ("absolute", "relative", "std")
_SIDES = ("up", "down")
_FEATURE_KEYS = (*_KINDS, *_SIDES, "min", "max", "integer", "sentinel", "frozen")
_DECISION_KEYS = ("discriminant", "classes", "signal", "background", "working_point", "output")
_WORKING_POINT_KEYS = ("cut", "efficiency")
_RATIO_KEYS = ("numerator", "denominator")
_OUTPUTS = ("auto", "probabilities", "logits")
_DATA_KEYS = ("path", "tree", "label", "weight")
_GROUP_KINDS = ("absolute", "relative")
_GROUP_KEYS = (*_GROUP_KINDS, "per_event")
#: Constraint limit keys -> the closed range of allowed values.
_CONSTRAINT_RANGES: dict[str, tuple[float, float]] = {
    "ks_max": (0.0, 1.0),
    "ks_pvalue_min": (0.0, 1.0),
    "jsd_max": (0.0, 1.0),
    "corr_max": (0.0, 2.0),
    "corr_frob_max": (0.0, math.inf),
}
_CONSTRAINT_KEYS = (*_CONSTRAINT_RANGES, "jsd_bins")
_PYHF_KEYS = (
    "bins",
    "range",
    "channel",
    "poi",
    "samples",
    "variations",
    "epsilon",
    "steps",
    "normsys",
    "symmetrize",
    "observations",
    "patch",
)
_VARIATIONS = ("systematic", "hidden")
_PATCH_KEYS = ("workspace", "channel", "samples")
#: A correlation matrix is positive semi-definite when no eigenvalue is below -_PSD_TOLERANCE.
_PSD_TOLERANCE = 1e-10
_MERGE_TAG = "tag:yaml.org,2002:merge"

_T = TypeVar("_T")


class _Mapping(dict):
    """A YAML mapping that remembers the 1-based line of itself and of each of its keys.

    Duplicate keys are not resolved silently: they are kept in ``duplicates`` as ``(key, line,
    first_line)`` and reported when the mapping is validated, where the dotted key is known.
    """

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[object, int] = {}
        self.duplicates: list[tuple[object, int, int]] = []


class _Sequence(list):
    """A YAML sequence that remembers the 1-based line of each item."""

    def __init__(self, items: Iterable[object], lines: Iterable[int]) -> None:
        super().__init__(items)
        self.lines = list(lines)


class _LineLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that builds :class:`_Mapping`/:class:`_Sequence` with line numbers.

    Also reads ``1e-3`` (no dot, as YAML 1.2 does) as a float rather than a string.
    """


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    """Build a :class:`_Mapping`; merge keys (``<<``) follow YAML: explicit keys override them."""
    own = sum(key.tag != _MERGE_TAG for key, _ in node.value)
    loader.flatten_mapping(node)  # puts the merged pairs first, then the mapping's own pairs
    merged = len(node.value) - own
    out = _Mapping(_line(node))
    own_keys: set[object] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found unhashable key",
                key_node.start_mark,
            ) from None
        if index < merged and key in out:
            continue  # an earlier merged mapping wins
        if index >= merged and key in own_keys:
            out.duplicates.append((key, _line(key_node), out.key_lines[key]))
            continue
        if index >= merged:
            own_keys.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = _line(key_node)
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _Sequence:
    items = [loader.construct_object(child, deep=True) for child in node.value]
    return _Sequence(items, (_line(child) for child in node.value))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class _Where:
    """Where a value sits, for messages: the file, its dotted key and the line of that key."""

    source: str
    key: str
    line: int

    def at(self, mapping: _Mapping, key: object) -> _Where:
        """The place of ``mapping[key]`` (the line of the key; this line if the key is absent)."""
        dotted = f"{self.key}.{key}" if self.key else str(key)
        return _Where(self.source, dotted, mapping.key_lines.get(key, self.line))

    def item(self, sequence: list, index: int) -> _Where:
        """The place of ``sequence[index]``."""
        lines = getattr(sequence, "lines", None)
        line = lines[index] if lines else self.line
        return _Where(self.source, f"{self.key}[{index}]", line)

    def error(self, what: str, expected: str = "") -> UncertaintyFileError:
        """``"{source}, line {n}: {key}: {what}; {expected}"``."""
        tail = f"; {expected}" if expected else ""
        key = self.key or "top level"
        return UncertaintyFileError(f"{self.source}, line {self.line}: {key}: {what}{tail}")


def load_uncertainties(path: str | Path) -> UncertaintyModel:
    """Read and validate the uncertainty file at ``path``.

    Raises :class:`UncertaintyFileError` naming the path for a missing, unreadable or empty file,
    and naming the path, line and key for anything that breaks the format.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UncertaintyFileError(
            f"{path}: no such file; expected the uncertainty YAML (--hepguard-uncertainties)"
        ) from None
    except UnicodeDecodeError as exc:
        raise UncertaintyFileError(f"{path}: not UTF-8 text ({exc.reason}); expected YAML") from exc
    except OSError as exc:
        raise UncertaintyFileError(f"{path}: cannot read the file: {exc.strerror}") from exc
    return parse_uncertainties(text, path)


def parse_uncertainties(text: str, source: Path | None = None) -> UncertaintyModel:
    """Validate the YAML ``text`` of an uncertainty file.

    ``source`` names the file in messages (``<string>`` when None) and is the folder that a
    relative ``data.path`` is resolved against.
    """
    name = "<string>" if source is None else str(source)
    doc = _load_yaml(text, name)
    if doc is None:
        raise UncertaintyFileError(
            f"{name}: the file is empty; expected a mapping with `version: 1` and `features:`"
        )
    root = _Where(name, "", doc.line if isinstance(doc, _Mapping) else 1)
    top = _mapping(doc, root, _TOP_KEYS, "a mapping with `version: 1` and `features:`")
    _check_version(top, root)
    folder = None if source is None else Path(source).parent
    features = _features(top, root)
    inputs = _optional(top, "inputs", root, partial(_inputs, features=features), ())
    decision = _optional(top, "decision", root, _decision, DecisionSpec())
    data = _optional(top, "data", root, partial(_data, folder=folder), DataSpec())
    gates = _optional(top, "gates", root, _gates, ())
    groups = _optional(top, "groups", root, partial(_groups, features=features), ())
    return UncertaintyModel(
        features=features,
        inputs=inputs,
        decision=decision,
        data=data,
        gates=gates,
        source=None if source is None else Path(source),
        groups=groups,
        correlations=_optional(
            top, "correlations", root, partial(_correlations, groups=groups), ()
        ),
        constraints=_optional(top, "constraints", root, _constraints, ConstraintSpec()),
        pyhf=_optional(
            top,
            "pyhf",
            root,
            partial(
                _pyhf,
                classes=decision.classes,
                folder=folder,
                variation_groups=[g.name for g in groups]
                or [f.name for f in features if not f.frozen],
            ),
            PyhfSpec(),
        ),
    )


def _load_yaml(text: str, name: str) -> object:
    """Safe-load ``text``; syntax errors become messages with line and column."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UncertaintyFileError(f"{name}{where}: malformed YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise UncertaintyFileError(f"{name}: malformed YAML: {exc}") from exc


# ---- generic checks -------------------------------------------------------------------------


def _show(value: object) -> str:
    """A value as the user wrote it in YAML terms, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float, str)):
        return repr(value)
    return f"a {type(value).__name__}"


def _did_you_mean(word: object, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1) if isinstance(word, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(mapping: _Mapping, where: _Where, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    for key in mapping:
        if key not in allowed:
            raise where.at(mapping, key).error(
                f"unknown key {_show(key)}",
                f"allowed keys: {', '.join(allowed)}{_did_you_mean(key, allowed)}",
            )


def _mapping(
    value: object, where: _Where, allowed: Iterable[str] | None = None, expected: str = "a mapping"
) -> _Mapping:
    """``value`` as a mapping without duplicate keys and (if ``allowed`` is given) unknown keys."""
    if not isinstance(value, _Mapping):
        raise where.error(f"got {_show(value)}", f"expected {expected}")
    if value.duplicates:
        key, line, first = value.duplicates[0]
        raise replace(where.at(value, key), line=line).error(
            f"duplicate key (first given on line {first})",
            "each key may appear only once (YAML would silently keep the last)",
        )
    if allowed is not None:
        _check_keys(value, where, allowed)
    return value


def _optional(
    mapping: _Mapping,
    key: str,
    where: _Where,
    parse: Callable[[object, _Where], _T],
    default: _T,
) -> _T:
    """``parse(mapping[key])``, or ``default`` when the key is absent or null."""
    value = mapping.get(key)
    return default if value is None else parse(value, where.at(mapping, key))


def _number(value: object, where: _Where, lower: float | None = None, name: str = "it") -> float:
    """A finite number (YAML booleans are not numbers), ``>= lower`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"got {_show(value)}", "expected a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise where.error(f"got {number:g}", "expected a finite number")
    if lower is not None and number < lower:
        raise where.error(f"got {value}", f"{name} must be >= {lower:g}")
    return number


def _bool(value: object, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"got {_show(value)}", "expected true or false")
    return value


def _string(value: object, where: _Where) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(f"got {_show(value)}", "expected a non-empty string")
    return value


def _choice(value: object, where: _Where, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise where.error(
            f"got {_show(value)}",
            f"expected one of {', '.join(choices)}{_did_you_mean(value, choices)}",
        )
    return value


def _items(value: object, where: _Where) -> list[tuple[object, _Where]]:
    """A list, or a single value standing for a list of one, with the place of each item."""
    if isinstance(value, list):
        return [(item, where.item(value, i)) for i, item in enumerate(value)]
    return [(value, where)]


def _named(mapping: _Mapping, where: _Where, what: str) -> Iterator[tuple[str, object, _Where]]:
    """(name, value, place) of each entry of a mapping keyed by names (features, gates).

    A name must be a string: YAML reads unquoted ``1``, ``true``, ``on``, ``null`` otherwise.
    """
    for key, value in mapping.items():
        at = where.at(mapping, key)
        if not isinstance(key, str):
            raise at.error(
                f"{what} name {_show(key)} is not a string",
                "quote the name: unquoted, YAML reads 1, true, on, yes, null, ... as non-strings",
            )
        yield key, value, at


# ---- top level --------------------------------------------------------------------------------


def _check_version(top: _Mapping, root: _Where) -> None:
    where = root.at(top, "version")
    supported = ", ".join(map(str, SUPPORTED_VERSIONS))
    value = top.get("version")
    if value is None:
        raise where.error(
            "missing", f"the file must say which format it uses: `version: {supported}`"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value not in SUPPORTED_VERSIONS:
        raise where.error(f"unsupported version {_show(value)}", f"supported versions: {supported}")


# ---- features ---------------------------------------------------------------------------------


def _features(top: _Mapping, root: _Where) -> tuple[FeatureSpec, ...]:
    where = root.at(top, "features")
    expected = "a mapping of feature name -> envelope, in the model's input order"
    if top.get("features") is None:
        raise where.error("missing", f"expected {expected}")
    features = _mapping(top["features"], where, None, expected)
    if not features:
        raise where.error("empty", f"expected at least one feature: {expected}")
    return tuple(_feature(*entry) for entry in _named(features, where, "feature"))


def _feature(name: str, value: object, where: _Where) -> FeatureSpec:
    spec = _mapping(
        value, where, _FEATURE_KEYS, "a mapping such as {relative: 0.02} or {frozen: true}"
    )
    frozen = _optional(spec, "frozen", where, _bool, False)
    kind, up, down = _sigma(spec, where, frozen)
    low = _optional(spec, "min", where, _number, None)
    high = _optional(spec, "max", where, _number, None)
    if low is not None and high is not None and low > high:
        raise where.at(spec, "max").error(f"max {high:g} is below min {low:g}", "min <= max")
    return FeatureSpec(
        name=name,
        kind=kind,
        up=up,
        down=down,
        min=low,
        max=high,
        integer=_optional(spec, "integer", where, _bool, False),
        sentinels=_optional(spec, "sentinel", where, _sentinels, ()),
        frozen=frozen,
        line=where.line,
    )


def _sigma(spec: _Mapping, where: _Where, frozen: bool) -> tuple[SigmaKind | None, float, float]:
    """(kind, up, down): a symmetric ``kind: sigma``, or ``up``/``down`` with ``kind: true``."""
    kinds = [k for k in _KINDS if spec.get(k) is not None]
    if len(kinds) > 1:
        raise where.at(spec, kinds[1]).error(
            f"both {kinds[0]} and {kinds[1]} given", "give only one of absolute, relative, std"
        )
    if any(spec.get(side) is not None for side in _SIDES):
        return _asymmetric(spec, where, kinds[0] if kinds else None)
    if not kinds:
        if frozen:
            return None, 0.0, 0.0
        raise where.error(
            "no sigma given", "a feature needs one of absolute, relative, std, or `frozen: true`"
        )
    kind = kinds[0]
    if spec[kind] is True:
        raise where.at(spec, kind).error(
            f"`{kind}: true` without up and down",
            f"a sigma >= 0 (e.g. {kind}: 0.02), or up and down with {kind}: true",
        )
    sigma = _number(spec[kind], where.at(spec, kind), 0.0, "sigma")
    return kind, sigma, sigma


def _asymmetric(
    spec: _Mapping, where: _Where, kind: SigmaKind | None
) -> tuple[SigmaKind, float, float]:
    """``up``/``down`` (both required) with the kind key set to ``true``."""
    missing = [s for s in _SIDES if spec.get(s) is None]
    if missing:
        (present,) = set(_SIDES) - set(missing)
        raise where.at(spec, present).error(
            f"'{present}' given without '{missing[0]}'",
            "an asymmetric envelope needs both up and down",
        )
    forms = (
        "either a symmetric sigma (relative: 0.02) or up/down with the kind set to true "
        "(up: 0.03, down: 0.01, relative: true)"
    )
    if kind is None:
        raise where.error(
            "up/down given without a kind",
            "set one of absolute, relative, std to true (up: 0.03, down: 0.01, relative: true)",
        )
    if spec[kind] is not True:
        raise where.at(spec, kind).error(
            f"{kind}: {_show(spec[kind])} together with up/down", forms
        )
    up, down = (_number(spec[s], where.at(spec, s), 0.0, "sigma") for s in _SIDES)
    return kind, up, down


def _sentinels(value: object, where: _Where) -> tuple[float, ...]:
    return tuple(_number(item, at) for item, at in _items(value, where))


# ---- decision ---------------------------------------------------------------------------------


# ---- inputs (multi-input models) ------------------------------------------------------------


def _inputs(
    value: object, where: _Where, features: tuple[FeatureSpec, ...]
) -> tuple[InputSpec, ...]:
    """The ``inputs:`` mapping: model input name -> per-event feature list, or a mapping."""
    expected = "a mapping of model input name -> its features (a list, or a mapping with per:)"
    inputs = _mapping(value, where, None, expected)
    if not inputs:
        raise where.error("empty", f"expected {expected}")
    entries = list(_named(inputs, where, "input"))
    specs = tuple(_input(name, v, at) for name, v, at in entries)
    declared = {f.name for f in features}
    used: dict[str, InputSpec] = {}
    resolved: list[InputSpec] = []
    for spec, (_, _, at) in zip(specs, entries, strict=True):
        for feature in spec.features:
            if feature not in declared:
                raise at.error(
                    f"feature {feature!r} is not declared under features:",
                    f"declare its envelope there{_did_you_mean(feature, sorted(declared))}",
                )
            check_shared(feature, used.get(feature), spec, at.error)
            used[feature] = spec
        for target in spec.mask_of:
            other = next((s for s in specs if s.name == target), None)
            if other is None or other.per != "constituent":
                raise at.error(
                    f"mask_of names {target!r}, which is not a per-constituent input",
                    "list inputs declared with per: constituent",
                )
            if spec.length is None:
                spec = replace(spec, length=other.length)
            if other.length != spec.length:
                raise at.error(f"length {spec.length} differs from {target!r}'s {other.length}")
        resolved.append(spec)
    unused = [f.name for f in features if f.name not in used]
    if unused:
        raise where.error(
            f"feature(s) {', '.join(map(repr, unused))} are declared but in no input",
            "every feature under features: must belong to one input",
        )
    return tuple(resolved)


def check_shared(
    feature: str,
    first: InputSpec | None,
    spec: InputSpec,
    error: Callable[[str, str], Exception],
) -> None:
    """Refuse ``feature`` in ``spec`` when ``first`` (the input that had it already, if any)
    cannot share it: only per-constituent inputs of the same length and pad value share
    features. ``error(what, expected)`` builds the exception (with file, line and key)."""
    if first is None:
        return
    if first.per == spec.per == "constituent":
        if (first.length, first.pad_value) == (spec.length, spec.pad_value):
            return
        what = f"length {spec.length}, pad_value {spec.pad_value:g}"
        theirs = f"length {first.length}, pad_value {first.pad_value:g}"
        raise error(
            f"feature {feature!r} is also in input {first.name!r} with {theirs}, here {what}",
            "inputs that share a feature need the same length and pad_value",
        )
    raise error(
        f"feature {feature!r} is already in input {first.name!r}",
        "only per: constituent inputs of the same length may share a feature",
    )


def _input(name: str, value: object, where: _Where) -> InputSpec:
    if isinstance(value, list):
        return InputSpec(name, "event", _feature_list(value, where), line=where.line)
    spec = _mapping(value, where, _INPUT_KEYS, "a list of features, or a mapping with per:")
    per = _choice(spec.get("per", "event"), where.at(spec, "per"), _PER)
    layout = _choice(spec.get("layout", "channels_last"), where.at(spec, "layout"), _LAYOUTS)
    length = None
    if per != "event":
        if spec.get("length") is None and per == "constituent":
            raise where.at(spec, "length").error(
                "missing",
                "a per-constituent input needs the number of constituents the model takes",
            )
        if spec.get("length") is not None:
            raw = spec["length"]
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise where.at(spec, "length").error(
                    f"got {_show(raw)}", "expected a whole number >= 1"
                )
            length = raw
    elif "length" in spec or "layout" in spec or "pad_value" in spec:
        key = next(k for k in ("length", "layout", "pad_value") if k in spec)
        raise where.at(spec, key).error("only for per: constituent or per: mask inputs")
    features: tuple[str, ...] = ()
    mask_of: tuple[str, ...] = ()
    if per == "mask":
        if "features" in spec:
            raise where.at(spec, "features").error("a mask input has no features")
        if spec.get("mask_of") is None:
            raise where.at(spec, "mask_of").error(
                "missing", "name the per-constituent input(s) it masks"
            )
        mask_of = tuple(
            _string(item, at) for item, at in _items(spec["mask_of"], where.at(spec, "mask_of"))
        )
    else:
        if "mask_of" in spec:
            raise where.at(spec, "mask_of").error("only for per: mask inputs")
        if spec.get("features") is None:
            raise where.at(spec, "features").error("missing", "list the input's features in order")
        features = _feature_list(spec["features"], where.at(spec, "features"))
    pad = _number(spec["pad_value"], where.at(spec, "pad_value")) if "pad_value" in spec else 0.0
    return InputSpec(
        name,
        per,  # type: ignore[arg-type]
        features,
        length,
        pad,
        layout == "channels_first",
        mask_of,
        where.line,
    )


def _feature_list(value: object, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(f"got {_show(value)}", "expected a non-empty list of feature names")
    return tuple(_string(item, at) for item, at in _items(value, where))


def _decision(value: object, where: _Where) -> DecisionSpec:
    spec = _mapping(value, where, _DECISION_KEYS)
    classes = _optional(spec, "classes", where, _classes, None)
    indices = partial(_class_indices, classes=classes)
    signal = _optional(spec, "signal", where, indices, None)
    background = _optional(spec, "background", where, indices, None)
    overlap = sorted(set(signal or ()) & set(background or ()))
    if overlap:
        raise where.at(spec, "background").error(
            f"class {_class_label(overlap[0], classes)} is also in signal",
            "signal and background must not overlap",
        )
    return DecisionSpec(
        discriminant=_optional(
            spec, "discriminant", where, partial(_discriminant, classes=classes), None
        ),
        classes=classes,
        signal=signal,
        background=background,
        working_point=_optional(spec, "working_point", where, _working_point, None),
        output=_optional(spec, "output", where, partial(_choice, choices=_OUTPUTS), "auto"),
    )


def _class_label(index: int, classes: tuple[str, ...] | None) -> str:
    return repr(classes[index]) if classes else str(index)


def _classes(value: object, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(f"got {_show(value)}", "expected a non-empty list of class names")
    names: list[str] = []
    for item, at in _items(value, where):
        if _string(item, at) in names:
            raise at.error(f"duplicate class name {item!r}", "class names must be unique")
        names.append(item)
    return tuple(names)


def _class_index(value: object, where: _Where, classes: tuple[str, ...] | None) -> int:
    """A class given by name (resolved through ``classes``) or by 0-based output column index."""
    if isinstance(value, str):
        if classes is None:
            raise where.error(
                f"class name {value!r} but no class names are declared",
                "add `classes: [...]` under decision, or use 0-based column indices",
            )
        if value not in classes:
            raise where.error(
                f"unknown class {value!r}",
                f"one of {', '.join(classes)}{_did_you_mean(value, classes)}",
            )
        return classes.index(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error(f"got {_show(value)}", "expected a class name or a 0-based column index")
    if classes is not None and value >= len(classes):
        raise where.error(
            f"index {value} but only {len(classes)} classes are declared ({', '.join(classes)})",
            f"an index below {len(classes)}",
        )
    return value


def _class_indices(
    value: object, where: _Where, classes: tuple[str, ...] | None
) -> tuple[int, ...]:
    """One class or a non-empty list of distinct classes -> their indices."""
    if isinstance(value, list) and not value:
        raise where.error("empty list", "expected at least one class")
    out: list[int] = []
    for item, at in _items(value, where):
        index = _class_index(item, at, classes)
        if index in out:
            raise at.error(f"class {_class_label(index, classes)} listed twice", "each class once")
        out.append(index)
    return tuple(out)


def _discriminant(
    value: object, where: _Where, classes: tuple[str, ...] | None
) -> int | str | Ratio:
    if value == "argmax":
        return "argmax"
    if isinstance(value, _Mapping):
        ratio = _mapping(value, where, _RATIO_KEYS)
        for key in _RATIO_KEYS:
            if ratio.get(key) is None:
                raise where.error(
                    f"'{key}' missing", "a ratio needs both numerator and denominator"
                )
        num, den = (_class_indices(ratio[k], where.at(ratio, k), classes) for k in _RATIO_KEYS)
        return Ratio(numerator=num, denominator=den)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise where.error(
            f"got {_show(value)}",
            "expected an output column index, a class name, 'argmax', "
            "or {numerator: [...], denominator: [...]}",
        )
    return _class_index(value, where, classes)


def _working_point(value: object, where: _Where) -> WorkingPoint:
    spec = _mapping(value, where, _WORKING_POINT_KEYS, "{efficiency: 0.70} or {cut: 0.5}")
    given = [k for k in _WORKING_POINT_KEYS if spec.get(k) is not None]
    if len(given) != 1:
        what = "both cut and efficiency given" if given else "neither cut nor efficiency given"
        raise where.error(what, "give exactly one of cut, efficiency")
    if given[0] == "cut":
        return WorkingPoint(cut=_number(spec["cut"], where.at(spec, "cut")))
    at = where.at(spec, "efficiency")
    efficiency = _number(spec["efficiency"], at)
    if not 0.0 < efficiency < 1.0:
        raise at.error(
            f"efficiency {efficiency:g} is outside (0, 1)",
            "a signal efficiency strictly between 0 and 1, e.g. 0.70",
        )
    return WorkingPoint(efficiency=efficiency)


# ---- data -------------------------------------------------------------------------------------


def _data(value: object, where: _Where, folder: Path | None) -> DataSpec:
    spec = _mapping(value, where, _DATA_KEYS)
    return DataSpec(
        path=_optional(spec, "path", where, partial(_path, folder=folder), None),
        tree=_optional(spec, "tree", where, _string, None),
        label=_optional(spec, "label", where, _label, None),
        weight=_optional(spec, "weight", where, _string, None),
    )


def _path(value: object, where: _Where, folder: Path | None) -> Path:
    """A path; a relative one is resolved against the YAML file's folder (kept when unknown)."""
    path = Path(_string(value, where))
    return path if folder is None or path.is_absolute() else folder / path


def _label(value: object, where: _Where) -> str | tuple[str, ...]:
    """A label column name, or a non-empty list of one-hot column names."""
    if not isinstance(value, list):
        return _string(value, where)
    if not value:
        raise where.error("empty list", "expected a column name or a list of one-hot column names")
    return tuple(_string(item, at) for item, at in _items(value, where))


# ---- gates ------------------------------------------------------------------------------------


def _gates(value: object, where: _Where) -> tuple[GateSpec, ...]:
    gates = _mapping(value, where, None, "a mapping of gate name -> attack parameters and limits")
    return tuple(_gate(*entry) for entry in _named(gates, where, "gate"))


def _gate(name: str, value: object, where: _Where) -> GateSpec:
    spec = _Mapping(where.line) if value is None else _mapping(value, where)
    attack = _gate_attack(name, spec, where)
    for key, only in _LIMIT_OF_ATTACK.items():
        if spec.get(key) is not None and attack != only:
            raise where.at(spec, key).error(
                f"{key} is a limit of the {only} check, not of {attack}",
                f"put it in a gate that runs attack {only}",
            )
    own = [k for k in GATE_LIMITS if _LIMIT_OF_ATTACK.get(k, attack) == attack]
    _check_keys(spec, where, {"attack", *own, *(p.name for p in PARAMETERS[attack])})
    limits = {
        key: _number(spec[key], where.at(spec, key), 0.0, "a limit")
        for key in own
        if spec.get(key) is not None
    }
    given = {k: v for k, v in spec.items() if k != "attack" and k not in GATE_LIMITS}
    for key, param in given.items():
        _attack_params(attack, {key: param}, where.at(spec, key))  # the line of a bad parameter
    return GateSpec(name, attack, _attack_params(attack, given, where), limits)


def _gate_attack(name: str, spec: _Mapping, where: _Where) -> str:
    """The gate's attack: ``attack:`` if given, else the gate's name."""
    explicit = spec.get("attack") is not None
    attack = spec["attack"] if explicit else name
    if not isinstance(attack, str) or attack not in PARAMETERS:
        hint = "" if explicit else " (a gate without `attack:` runs the attack of its name)"
        raise (where.at(spec, "attack") if explicit else where).error(
            f"unknown attack {_show(attack)}{hint}",
            f"known attacks: {', '.join(sorted(PARAMETERS))}{_did_you_mean(attack, PARAMETERS)}",
        )
    return attack


def _attack_params(attack: str, params: dict[str, object], where: _Where) -> dict[str, object]:
    """:func:`check_params` with its :class:`AttackError` turned into a file error."""
    try:
        return check_params(attack, params)
    except AttackError as exc:
        raise where.error(str(exc)) from exc


# ---- groups, correlations, constraints ------------------------------------------------------


def _groups(
    value: object, where: _Where, features: tuple[FeatureSpec, ...]
) -> tuple[GroupSpec, ...]:
    """The ``groups:`` mapping: systematic name -> the features its one parameter moves."""
    expected = "a mapping of group name -> {absolute: {feature: sigma}, relative: {...}}"
    groups = _mapping(value, where, None, expected)
    if not groups:
        raise where.error("empty", f"expected {expected}, or leave groups out")
    by_name = {f.name: f for f in features}
    return tuple(_group(name, v, at, by_name) for name, v, at in _named(groups, where, "group"))


def _group(name: str, value: object, where: _Where, features: dict[str, FeatureSpec]) -> GroupSpec:
    spec = _mapping(
        value, where, _GROUP_KEYS, "a mapping such as {relative: {jet_pt: 0.02, jet_mass: 0.02}}"
    )
    kinds = [k for k in spec if k in _GROUP_KINDS and spec[k] is not None]  # in file order
    if not kinds:
        raise where.error(
            "no shifts given",
            "a group needs absolute: {feature: sigma} and/or relative: {feature: fraction}",
        )
    shifts: list[GroupShift] = []
    for kind in kinds:
        at = where.at(spec, kind)
        expected = f"a mapping of feature name -> sigma, e.g. {kind}: {{jet_pt: 0.02}}"
        entries = _mapping(spec[kind], at, None, expected)
        if not entries:
            raise at.error("empty", f"expected {expected}")
        for feature, raw, place in _named(entries, at, "feature"):
            shifts.append(_group_shift(feature, kind, raw, place, features, shifts))
    per_event = _optional(spec, "per_event", where, _bool, False)
    return GroupSpec(name, tuple(shifts), per_event, where.line)


def _group_shift(
    feature: str,
    kind: str,
    value: object,
    where: _Where,
    features: dict[str, FeatureSpec],
    earlier: list[GroupShift],
) -> GroupShift:
    """One ``feature: sigma`` (or ``feature: {up: u, down: d}``) entry of a group."""
    spec = features.get(feature)
    if spec is None:
        known = list(features)
        more = f", ... ({len(known) - 20} more)" if len(known) > 20 else ""
        shown = ", ".join(known[:20]) + more
        raise where.error(
            f"unknown feature {feature!r}",
            f"a group moves features declared under features: ({shown})"
            f"{_did_you_mean(feature, known)}",
        )
    first = next((s for s in earlier if s.feature == feature), None)
    if first is not None:
        raise where.error(
            f"feature {feature!r} is already shifted by this group (under {first.kind})",
            "a feature may appear only once per group",
        )
    if spec.frozen:
        raise where.error(
            f"feature {feature!r} is frozen",
            "frozen features never move: take it out of the group, or unfreeze it",
        )
    if spec.integer and kind == "relative":
        raise where.error(
            f"feature {feature!r} is an integer feature in a relative shift",
            "integer features move in whole steps: give an absolute sigma of whole steps",
        )
    if isinstance(value, _Mapping):
        sides = _mapping(value, where, _SIDES, "{up: 0.03, down: 0.01}")
        missing = [s for s in _SIDES if sides.get(s) is None]
        if missing:
            raise where.error(
                f"'{missing[0]}' missing",
                "an asymmetric shift needs both up and down, e.g. {up: 0.03, down: 0.01}",
            )
        up, down = (_group_sigma(sides[s], where.at(sides, s), spec.integer) for s in _SIDES)
    else:
        up = down = _group_sigma(value, where, spec.integer)
    return GroupShift(feature, kind, up, down)  # type: ignore[arg-type]


def _group_sigma(value: object, where: _Where, integer: bool) -> float:
    """A group's sigma: a finite number > 0, a whole number for an integer feature."""
    if isinstance(value, list):
        raise where.error("got a list", "expected a sigma > 0, or {up: u, down: d}")
    sigma = _number(value, where)
    if sigma <= 0:
        raise where.error(
            f"got {value}",
            "a group's sigma must be > 0 (leave a feature out of the group to keep it still)",
        )
    if integer and not sigma.is_integer():
        raise where.error(
            f"got {value} for an integer feature",
            "integer features move in whole steps: give an absolute sigma of whole steps (>= 1)",
        )
    return sigma


def _correlations(
    value: object, where: _Where, groups: tuple[GroupSpec, ...]
) -> tuple[tuple[str, str, float], ...]:
    """The ``correlations:`` list of ``[group, group, rho]``; the matrix must be PSD."""
    if not isinstance(value, list):
        raise where.error(f"got {_show(value)}", "expected a list of [group, group, rho] entries")
    names = [g.name for g in groups]
    pairs: list[tuple[str, str, float]] = []
    places: list[_Where] = []
    seen: dict[frozenset[str], int] = {}
    for item, at in _items(value, where):
        if not isinstance(item, list) or len(item) != 3:
            got = f"a list of {len(item)}" if isinstance(item, list) else _show(item)
            raise at.error(f"got {got}", "expected [group, group, rho], e.g. [JES, JER, 0.2]")
        a, b = (_group_name(item[i], at.item(item, i), names) for i in (0, 1))
        if a == b:
            raise at.error(
                f"group {a!r} paired with itself",
                "a group's correlation with itself is 1; pair two different groups",
            )
        pair = frozenset((a, b))
        if pair in seen:
            raise at.error(
                f"the pair {a}, {b} is already given on line {seen[pair]}", "give each pair once"
            )
        seen[pair] = at.line
        rho_at = at.item(item, 2)
        rho = _number(item[2], rho_at)
        if not -1.0 <= rho <= 1.0:
            raise rho_at.error(f"rho {rho:g} is outside [-1, 1]", "a correlation in [-1, 1]")
        pairs.append((a, b, rho))
        places.append(at)
    _check_positive_semidefinite(names, pairs, places, where)
    return tuple(pairs)


def _group_name(value: object, where: _Where, names: list[str]) -> str:
    if not names:
        raise where.error(
            f"group {_show(value)} but no groups are declared",
            "declare the systematics under groups: first",
        )
    if not isinstance(value, str) or value not in names:
        raise where.error(
            f"unknown group {_show(value)}",
            f"one of the groups: {', '.join(names)}{_did_you_mean(value, names)}",
        )
    return value


def _check_positive_semidefinite(
    names: list[str],
    pairs: list[tuple[str, str, float]],
    places: list[_Where],
    where: _Where,
) -> None:
    """Refuse a correlation matrix with an eigenvalue below ``-_PSD_TOLERANCE``, naming the
    listed pairs whose removal alone repairs it (else every listed pair involved)."""
    matrix = _correlation_matrix(names, pairs)
    if _is_positive_semidefinite(matrix):
        return
    smallest = min(_jacobi_eigenvalues(matrix))

    def shown(index: int) -> str:
        a, b, rho = pairs[index]
        return f"[{a}, {b}, {rho:g}] (line {places[index].line})"

    fixes = [
        i
        for i in range(len(pairs))
        if _is_positive_semidefinite(_correlation_matrix(names, pairs[:i] + pairs[i + 1 :]))
    ]
    what = (
        "the correlation matrix of the groups is not positive semi-definite "
        f"(smallest eigenvalue {smallest:.3g}), so no set of systematics has these correlations"
    )
    if len(fixes) == 1:
        raise places[fixes[0]].error(
            what, f"removing {shown(fixes[0])} alone makes it valid: loosen or remove that pair"
        )
    if fixes:
        raise where.error(
            what,
            "removing any one of these pairs alone makes it valid: "
            f"{', '.join(map(shown, fixes))}; loosen or remove one of them",
        )
    # The pairs involved: those within a minimal set of groups whose correlations cannot hold
    # together (dropping any one group of it makes the rest consistent).
    kept = list(names)
    for name in names:
        rest = [n for n in kept if n != name]
        inside = [p for p in pairs if p[0] in rest and p[1] in rest]
        if not _is_positive_semidefinite(_correlation_matrix(rest, inside)):
            kept = rest
    involved = [i for i, (a, b, _) in enumerate(pairs) if a in kept and b in kept]
    raise where.error(
        what,
        "no single pair's removal makes it valid; the pairs involved: "
        f"{', '.join(map(shown, involved))}; loosen them so that they can hold together",
    )


def _correlation_matrix(
    names: Sequence[str], pairs: Iterable[tuple[str, str, float]]
) -> list[list[float]]:
    """1 on the diagonal, each pair's rho at both of its places, 0 elsewhere."""
    index = {name: i for i, name in enumerate(names)}
    matrix = [[float(i == j) for j in range(len(names))] for i in range(len(names))]
    for a, b, rho in pairs:
        matrix[index[a]][index[b]] = matrix[index[b]][index[a]] = float(rho)
    return matrix


def _is_positive_semidefinite(matrix: list[list[float]]) -> bool:
    """Whether ``matrix + _PSD_TOLERANCE * I`` has a Cholesky factor (no eigenvalue of
    ``matrix`` below ``-_PSD_TOLERANCE``, up to rounding)."""
    n = len(matrix)
    low: list[list[float]] = [[0.0] * n for _ in range(n)]
    for j in range(n):
        pivot = matrix[j][j] + _PSD_TOLERANCE - sum(low[j][k] ** 2 for k in range(j))
        if pivot <= 0.0:
            return False
        low[j][j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            dot = sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = (matrix[i][j] - dot) / low[j][j]
    return True


def _jacobi_eigenvalues(matrix: list[list[float]]) -> list[float]:
    """The eigenvalues of a symmetric matrix, by cyclic Jacobi rotations."""
    n = len(matrix)
    a = [row[:] for row in matrix]
    scale = sum(x * x for row in a for x in row) or 1.0
    for _ in range(100):
        if sum(a[p][q] ** 2 for p in range(n) for q in range(p + 1, n)) <= 1e-30 * scale:
            break
        for p in range(n):
            for q in range(p + 1, n):
                if a[p][q] == 0.0:
                    continue
                theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q])
                t = math.copysign(1.0, theta) / (abs(theta) + math.hypot(theta, 1.0))
                c = 1.0 / math.hypot(t, 1.0)
                s = t * c
                for k in range(n):  # columns p and q
                    akp, akq = a[k][p], a[k][q]
                    a[k][p], a[k][q] = c * akp - s * akq, s * akp + c * akq
                for k in range(n):  # rows p and q
                    apk, aqk = a[p][k], a[q][k]
                    a[p][k], a[q][k] = c * apk - s * aqk, s * apk + c * aqk
    return [a[i][i] for i in range(n)]


def _constraints(value: object, where: _Where) -> ConstraintSpec:
    """The ``constraints:`` mapping: keys not given keep their defaults, ``null`` disables."""
    spec = _mapping(value, where, _CONSTRAINT_KEYS, "a mapping such as {jsd_max: 0.06}")
    given: dict[str, object] = {}
    for key, (low, high) in _CONSTRAINT_RANGES.items():
        if key not in spec:
            continue
        at = where.at(spec, key)
        if spec[key] is None:
            given[key] = None
            continue
        number = _number(spec[key], at)
        if not low <= number <= high:
            allowed = f">= {low:g}" if math.isinf(high) else f"in [{low:g}, {high:g}]"
            raise at.error(f"got {spec[key]}", f"{key} must be {allowed}, or null to disable it")
        given[key] = number
    if "jsd_bins" in spec:
        raw = spec["jsd_bins"]
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 2:
            raise where.at(spec, "jsd_bins").error(
                f"got {_show(raw)}", "expected a whole number of histogram bins >= 2"
            )
        given["jsd_bins"] = raw
    return replace(ConstraintSpec(), **given)  # type: ignore[arg-type]


# ---- pyhf -------------------------------------------------------------------------------------


def _pyhf(
    value: object,
    where: _Where,
    classes: tuple[str, ...] | None,
    folder: Path | None,
    variation_groups: Sequence[str],
) -> PyhfSpec:
    """The ``pyhf:`` section (templates, workspace, patch); absent keys keep their defaults.
    ``variation_groups`` are the names the systematic variations go by (the groups, or every
    movable feature when there are none)."""
    spec = _mapping(value, where, _PYHF_KEYS, "a mapping such as {bins: 10, normsys: true}")
    given: dict[str, object] = {}
    if spec.get("bins") is not None:
        given["bins"] = parse_bins(spec["bins"], where.at(spec, "bins"))
    if spec.get("range") is not None:
        given["range"] = _range(spec["range"], where.at(spec, "range"))
    for key in ("channel", "poi"):
        if spec.get(key) is not None:
            given[key] = _string(spec[key], where.at(spec, key))
    if spec.get("samples") is not None:
        given["samples"] = _samples(spec["samples"], where.at(spec, "samples"), classes)
    if spec.get("variations") is not None:
        at = where.at(spec, "variations")
        names = tuple(_choice(v, a, _VARIATIONS) for v, a in _items(spec["variations"], at))
        if not names or len(set(names)) != len(names):
            raise at.error(f"got {_show(spec['variations'])}", "each of systematic, hidden once")
        given["variations"] = names
    if spec.get("epsilon") is not None:
        at = where.at(spec, "epsilon")
        given["epsilon"] = _number(spec["epsilon"], at)
        if given["epsilon"] <= 0:  # type: ignore[operator]
            raise at.error(f"got {spec['epsilon']}", "epsilon (sigmas) must be > 0")
    if spec.get("steps") is not None:
        raw = spec["steps"]
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise where.at(spec, "steps").error(f"got {_show(raw)}", "expected a whole number >= 1")
        given["steps"] = raw
    if spec.get("normsys") is not None:
        given["normsys"] = _bool(spec["normsys"], where.at(spec, "normsys"))
    if spec.get("symmetrize") is not None:
        at = where.at(spec, "symmetrize")
        known = ["hidden", *variation_groups]
        given["symmetrize"] = tuple(_choice(v, a, known) for v, a in _items(spec["symmetrize"], at))
    if spec.get("observations") is not None:
        at = where.at(spec, "observations")
        counts = spec["observations"]
        if not isinstance(counts, list) or not counts:
            raise at.error(f"got {_show(counts)}", "expected a list of bin counts")
        given["observations"] = tuple(_number(v, a, 0.0, "a count") for v, a in _items(counts, at))
    samples = given.get("samples") or ()
    if spec.get("patch") is not None:
        names = [n for n, _ in samples] if samples else list(classes or ())
        given["patch"] = _patch(spec["patch"], where.at(spec, "patch"), folder, names)
    return replace(PyhfSpec(), **given)  # type: ignore[arg-type]


def parse_bins(value: object, where: _Where | None = None) -> int | tuple[float, ...]:
    """``bins``: a whole number of equal bins >= 1, or a list of at least two strictly
    increasing edges. ``where`` None: the value comes from ``--hepguard-bins`` (a string such
    as ``20`` or ``0,0.5,0.8,1``)."""
    at = where or _Where("--hepguard-bins", "", 0)
    if where is None and isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            value = int(parts[0]) if len(parts) == 1 else [float(p) for p in parts]
        except ValueError:
            raise UncertaintyFileError(
                f"--hepguard-bins {value!r}: expected a number of bins (20) or comma-separated "
                "edges (0,0.5,0.8,1)"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _bins_error(at, where, f"got {value}", "a number of bins must be >= 1")
        return value
    if not isinstance(value, list) or len(value) < 2:
        raise _bins_error(
            at, where, f"got {_show(value)}", "expected a number of bins or a list of >= 2 edges"
        )
    edges = [
        (float(v) if where is None else _number(v, a))  # type: ignore[arg-type]
        for v, a in _items(value, at)
    ]
    if any(not math.isfinite(e) for e in edges) or any(
        b <= a for a, b in itertools.pairwise(edges)
    ):
        raise _bins_error(at, where, f"got {edges}", "edges must be finite and increase strictly")
    return tuple(edges)


def _bins_error(at: _Where, where: _Where | None, what: str, expected: str) -> Exception:
    if where is None:
        return UncertaintyFileError(f"--hepguard-bins: {what}; {expected}")
    return at.error(what, expected)


def _range(value: object, where: _Where) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise where.error(f"got {_show(value)}", "expected [low, high]")
    low, high = (_number(v, a) for v, a in _items(value, where))
    if high <= low:
        raise where.error(f"got [{low:g}, {high:g}]", "expected low < high")
    return low, high


def _samples(
    value: object, where: _Where, classes: tuple[str, ...] | None
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Sample name -> its classes; a class in two samples is an error."""
    expected = "a mapping of sample name -> class or list of classes, e.g. {signal: [b]}"
    mapping = _mapping(value, where, None, expected)
    if not mapping:
        raise where.error("empty", f"expected {expected}")
    out: list[tuple[str, tuple[int, ...]]] = []
    seen: dict[int, str] = {}
    for name, raw, at in _named(mapping, where, "sample"):
        indices = _class_indices(raw, at, classes)
        for i in indices:
            if i in seen:
                raise at.error(
                    f"class {_class_label(i, classes)} is already in sample {seen[i]!r}",
                    "each class in at most one sample",
                )
            seen[i] = name
        out.append((name, indices))
    return tuple(out)


def _patch(value: object, where: _Where, folder: Path | None, samples: list[str]) -> PatchSpec:
    spec = _mapping(
        value, where, _PATCH_KEYS, "{workspace: ws.json, channel: SR, samples: {b: ttH}}"
    )
    for key in _PATCH_KEYS:
        if spec.get(key) is None:
            raise where.error(f"'{key}' missing", "a patch needs workspace, channel and samples")
    at = where.at(spec, "samples")
    mapping = _mapping(spec["samples"], at, None, "hepguard sample -> workspace sample")
    pairs = []
    for name, target, place in _named(mapping, at, "sample"):
        if samples and name not in samples:
            raise place.error(
                f"{name!r} is not a hepguard sample",
                f"one of {', '.join(samples)}{_did_you_mean(name, samples)}",
            )
        pairs.append((name, _string(target, place)))
    if not pairs:
        raise at.error("empty", "map at least one hepguard sample to a workspace sample")
    return PatchSpec(
        workspace=_path(spec["workspace"], where.at(spec, "workspace"), folder),
        channel=_string(spec["channel"], where.at(spec, "channel")),
        samples=tuple(pairs),
    )
