"""pyhf export: hepguard's templates as a pyhf workspace, or as a patch to the analysis's own.

Two outputs, both JSON:

- ``--hepguard-pyhf``: a complete pyhf workspace (schema 1.0.0) of one channel built from the
  templates alone: the samples' nominal yields, the POI's ``normfactor`` on the signal samples,
  one ``staterror`` per channel and hepguard's ``histosys``/``normsys`` modifiers. Observations
  are the Asimov data (the sum of the nominal yields) unless given. It shows what the
  perturbations do in a fit without any of the analysis's other systematics.
- ``--hepguard-pyhf-patch``: an RFC 6902 JSON patch that adds hepguard's modifiers to the
  samples of an existing analysis workspace. Its first operations ``test`` the channel's and the
  samples' names at the indices it writes to, so it fails loudly on a workspace whose channels or
  samples were reordered since it was made. Apply it with the ``jsonpatch`` command line tool::

      jsonpatch analysis_ws.json hepguard_patch.json > with_hepguard.json

  or in Python: ``pyhf.Workspace(jsonpatch.apply_patch(spec, patch))``.

pyhf and jsonpatch are imported inside the functions that use them, so importing this module
costs neither.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pytest_hepguard.exceptions import PyhfError
from pytest_hepguard.report.files import check_report_path, write_atomic
from pytest_hepguard.templates import ModifierTemplate, Templates

#: The workspace schema version written.
SCHEMA_VERSION = "1.0.0"

#: Prefix of hepguard's modifier names; how its own outputs recognise themselves.
MODIFIER_PREFIX = "hepguard_"

#: Name of the measurement in the workspace hepguard builds; how it recognises the file.
MEASUREMENT = "hepguard"

#: Longest JSON text of the failing part of a workspace quoted in a schema error.
_MAX_QUOTED = 160


def _floats(values: Any, what: str) -> list[float]:
    """``values`` [n] as a list of Python floats; non-finite values are refused (JSON cannot
    carry them and pyhf cannot fit them)."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise PyhfError(
            f"{what}: non-finite value(s) {array[bad][:5].tolist()} in bin(s) "
            f"{bad[:5].tolist()}; pyhf needs finite yields"
        )
    return [float(v) for v in array]


def _factor(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise PyhfError(f"{what}: non-finite normsys factor {value}; pyhf needs finite factors")
    return value


def _modifier_dicts(
    m: ModifierTemplate, hi_data: list[float] | None, lo_data: list[float] | None
) -> list[dict[str, Any]]:
    """The pyhf modifiers of one :class:`ModifierTemplate`: its histosys (with the given data)
    then its normsys, both under ``m.name`` (one nuisance parameter)."""
    out: list[dict[str, Any]] = []
    if m.histosys is not None:
        out.append(
            {"name": m.name, "type": "histosys", "data": {"hi_data": hi_data, "lo_data": lo_data}}
        )
    if m.normsys is not None:
        where = f"modifier {m.name} on sample {m.sample}"
        hi, lo = m.normsys
        out.append(
            {
                "name": m.name,
                "type": "normsys",
                "data": {"hi": _factor(hi, where), "lo": _factor(lo, where)},
            }
        )
    return out


def workspace_spec(
    templates: Templates,
    *,
    channel: str = "hepguard",
    poi: str = "mu",
    measurement: str = MEASUREMENT,
    observations: Sequence[float] | None = None,
) -> dict:
    """A complete pyhf workspace (schema 1.0.0) from the templates, as a JSON-ready dict.

    One channel ``channel`` with one sample per ``templates.samples`` (in order), ``data`` the
    nominal yields [n_bins] (sums of event weights). Each sample's modifiers, in order: the POI
    ``{"name": poi, "type": "normfactor"}`` on signal samples; ``staterror_<channel>`` with data
    ``sqrt(sumw2)`` [n_bins] on every sample (pyhf combines them into one γ per bin); then for
    each of the sample's :class:`ModifierTemplate` (in templates order) its ``histosys``
    (``hi_data``/``lo_data`` absolute yields [n_bins]) and its ``normsys`` (``hi``/``lo``
    factors), both named ``m.name``, so one nuisance parameter drives both.

    Args:
        templates: the samples and modifiers (from :func:`~pytest_hepguard.templates.
            build_templates`).
        channel: the channel's name (and of its observations).
        poi: the name of the parameter of interest (the signal normfactor).
        measurement: the measurement's name; hepguard recognises its own file by the default.
        observations: observed counts [n_bins]; None: the Asimov data, the sum over samples of
            the nominal yields.

    Returns:
        The workspace: only dicts, lists, str, float and None, validated against pyhf's schema.

    Raises:
        PyhfError: no sample is marked signal; ``observations`` of the wrong length or not
            finite; ``poi`` or the staterror name taken by a hepguard modifier; non-finite yields.
    """
    n_bins = len(templates.edges) - 1
    if not any(s.signal for s in templates.samples):
        names = ", ".join(s.name for s in templates.samples) or "none"
        raise PyhfError(
            f"the pyhf workspace needs a sample marked signal: the POI {poi!r} is a normfactor on "
            f"the signal samples, and none of the samples ({names}) is one"
        )
    staterror = f"staterror_{channel}"
    taken = sorted({poi, staterror} & set(templates.names))
    if taken:
        raise PyhfError(
            f"the pyhf workspace cannot name a hepguard modifier {', '.join(taken)}: the name "
            f"is taken by the POI ({poi}) or the statistical errors ({staterror}); rename the "
            "POI or the channel"
        )
    samples = []
    for s in templates.samples:
        modifiers: list[dict[str, Any]] = []
        if s.signal:
            modifiers.append({"name": poi, "type": "normfactor", "data": None})
        modifiers.append(
            {
                "name": staterror,
                "type": "staterror",
                "data": _floats(np.sqrt(s.sumw2), f"sample {s.name}: sqrt(sumw2)"),
            }
        )
        for m in templates.modifiers:
            if m.sample != s.name:
                continue
            where = f"modifier {m.name} on sample {s.name}"
            hi_data = lo_data = None
            if m.histosys is not None:
                hi_data = _floats(m.histosys[0], f"{where}: hi_data")
                lo_data = _floats(m.histosys[1], f"{where}: lo_data")
            modifiers += _modifier_dicts(m, hi_data, lo_data)
        samples.append(
            {
                "name": s.name,
                "data": _floats(s.nominal, f"sample {s.name}: nominal"),
                "modifiers": modifiers,
            }
        )
    if observations is None:
        observed = _floats(
            np.sum([s.nominal for s in templates.samples], axis=0), "the Asimov data"
        )
    else:
        observed = _floats(observations, "observations")
        if len(observed) != n_bins:
            raise PyhfError(
                f"observations: {len(observed)} value(s) given, expected {n_bins} (one per bin "
                f"of the templates, edges {templates.edges.tolist()})"
            )
    spec = {
        "channels": [{"name": channel, "samples": samples}],
        "observations": [{"name": channel, "data": observed}],
        "measurements": [{"name": measurement, "config": {"poi": poi, "parameters": []}}],
        "version": SCHEMA_VERSION,
    }
    check_workspace(spec, "the workspace hepguard built")
    return spec


def _json_path(path: Sequence[Any]) -> str:
    """``channels[0].samples[1].data`` from a jsonschema error path."""
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else f".{item}"
    return out.lstrip(".")


def _schema_reason(err: Any) -> str:
    """What failed and where, from a jsonschema ValidationError; the failing part is quoted
    when it is short and the message does not show it already."""
    where = _json_path(err.absolute_path)
    reason = f"{err.message} (at {where or 'the top level'})"
    try:
        quoted = json.dumps(err.instance)
    except (TypeError, ValueError):
        return reason
    if where and len(quoted) <= _MAX_QUOTED and repr(err.instance) not in err.message:
        reason += f": {quoted}"
    return reason


@contextmanager
def quiet_schema() -> Iterator[None]:
    """pyhf 0.7 validates with jsonschema's deprecated ``RefResolver``: its DeprecationWarning
    (once per workspace) tells our users nothing they can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="jsonschema.RefResolver", category=DeprecationWarning
        )
        yield


def check_workspace(spec: dict, source: str) -> None:
    """Validate ``spec`` as pyhf does when it builds a ``pyhf.Workspace`` (its JSON schema).

    Args:
        spec: the workspace, as loaded from JSON.
        source: what it is, the start of every message (a file path).

    Raises:
        PyhfError: ``{source}: fails pyhf's workspace schema: {reason}``, the reason naming the
            failing rule and its place (``channels[0].samples[1].data``); or the spec is not a
            JSON object, or names a schema version pyhf does not know.
    """
    import jsonschema
    import pyhf

    if not isinstance(spec, dict):
        raise PyhfError(
            f"{source}: fails pyhf's workspace schema: a workspace is a JSON object (with "
            f"channels, observations, measurements, version), got a {type(spec).__name__}"
        )
    version = spec.get("version", SCHEMA_VERSION)
    if not isinstance(version, str):
        raise PyhfError(
            f"{source}: fails pyhf's workspace schema: version must be a string such as "
            f"{SCHEMA_VERSION!r}, got {version!r}"
        )
    try:
        with quiet_schema():
            pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as err:
        raise PyhfError(
            f"{source}: fails pyhf's workspace schema: {_schema_reason(err.parent)}"
        ) from err
    except jsonschema.ValidationError as err:
        raise PyhfError(f"{source}: fails pyhf's workspace schema: {_schema_reason(err)}") from err
    except pyhf.exceptions.SchemaNotFound as err:
        raise PyhfError(
            f"{source}: fails pyhf's workspace schema: version {version!r} is not "
            f"a schema version pyhf {pyhf.__version__} knows (workspaces use {SCHEMA_VERSION!r})"
        ) from err


def load_workspace(path: Path) -> dict:
    """Read a pyhf workspace JSON file and validate it against pyhf's schema; the file is only
    read.

    Raises:
        PyhfError: the file is missing or unreadable, is not JSON (line and column given), or
            is not a valid workspace; each message starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise PyhfError(f"pyhf workspace {path}: the file does not exist")
    if path.is_dir():
        raise PyhfError(f"pyhf workspace {path}: is a folder, expected a workspace JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PyhfError(f"pyhf workspace {path}: cannot be read: {err}") from err
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise PyhfError(
            f"pyhf workspace {path}: not JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    check_workspace(spec, f"pyhf workspace {path}")
    return spec


def _relative(ws_nominal: np.ndarray, varied: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """``ws_nominal · varied / nominal`` per bin [n_bins]; ``ws_nominal`` where ``nominal`` is
    not positive (no relative effect is known there)."""
    safe = np.where(nominal > 0, nominal, 1.0)
    return np.where(nominal > 0, ws_nominal * varied / safe, ws_nominal)


def locate_samples(
    workspace: dict, *, channel: str, samples: Mapping[str, str], n_bins: int, source: str
) -> tuple[int, dict[str, int]]:
    """Where the mapped samples sit in a (schema-valid) user workspace: the channel's index and
    hepguard sample name -> the index of its workspace sample in that channel.

    Raises:
        PyhfError: the channel is not in the workspace (its channels are listed); a mapped sample
            is not in the channel (its samples are listed); two hepguard samples map to one
            workspace sample; a mapped sample's bin count is not ``n_bins``.
    """
    channels = [c["name"] for c in workspace["channels"]]
    if channel not in channels:
        raise PyhfError(
            f"{source}: no channel {channel!r}; its channels are {', '.join(map(repr, channels))}"
        )
    ci = channels.index(channel)
    ws_samples = workspace["channels"][ci]["samples"]
    ws_names = [s["name"] for s in ws_samples]
    missing = [v for v in samples.values() if v not in ws_names]
    if missing:
        raise PyhfError(
            f"{source}: channel {channel!r} has no sample {', '.join(map(repr, missing))}; its "
            f"samples are {', '.join(map(repr, ws_names))}"
        )
    targets = list(samples.values())
    doubled = sorted({v for v in targets if targets.count(v) > 1})
    if doubled:
        raise PyhfError(
            f"{source}: several hepguard samples map to {', '.join(map(repr, doubled))} in "
            f"channel {channel!r}; map each workspace sample from one hepguard sample"
        )
    index = {name: ws_names.index(ws_name) for name, ws_name in samples.items()}
    for name, si in index.items():
        n_ws = len(ws_samples[si]["data"])
        if n_ws != n_bins:
            raise PyhfError(
                f"{source}: sample {ws_names[si]!r} of channel {channel!r} has {n_ws} bins, "
                f"hepguard's templates (sample {name!r}) have {n_bins}; use the binning of the "
                "analysis channel for the templates"
            )
    return ci, index


def workspace_patch(
    templates: Templates,
    workspace: dict,
    *,
    channel: str,
    samples: Mapping[str, str],
    source: str,
) -> list[dict]:
    """An RFC 6902 JSON patch adding hepguard's modifiers to samples of a user's workspace.

    The analysis's nominal yields differ from hepguard's (another selection, luminosity,
    weights), so the patch carries hepguard's *relative* effects over to them: in each bin ``i``
    a histosys becomes ``hi_data[i] = ws_nominal[i] · hi_data_hepguard[i] /
    nominal_hepguard[i]`` (``lo_data`` alike) where hepguard's nominal bin is positive, and
    ``ws_nominal[i]`` (no shape effect) where it is not; normsys ``hi``/``lo`` factors are
    relative already and are copied as they are. No staterror or normfactor is added: the
    workspace has its own. The modifiers keep hepguard's names, so one nuisance parameter per
    variation acts on every mapped sample.

    The patch starts with ``test`` operations on the channel's name and on each mapped sample's
    name at the indices it writes to, then one ``add`` per modifier, appended to the sample's
    ``modifiers`` list (histosys before normsys, in templates order).

    Args:
        templates: hepguard's templates; their n_bins must equal the channel's.
        workspace: the user's workspace (as from :func:`load_workspace`); not modified.
        channel: the workspace channel the templates describe.
        samples: hepguard sample name -> workspace sample name in ``channel``; hepguard samples
            not in it get no modifier.
        source: the workspace file, the start of every message.

    Returns:
        The patch, a JSON-ready list of operations.

    Raises:
        PyhfError: the workspace fails pyhf's schema; the channel is not in it (the channels are
            listed); a mapped sample is not in the channel (its samples are listed); a key is not
            a hepguard sample (those are listed); two keys map to one workspace sample; a mapped
            sample's bin count differs from the templates'; a hepguard modifier name is already
            on a mapped sample (a patch applied already), or is a modifier of another type
            elsewhere in the workspace; the mapping leaves no modifier to add.
    """
    import jsonpatch

    check_workspace(workspace, source)
    hepguard = {s.name: s for s in templates.samples}
    unknown = [k for k in samples if k not in hepguard]
    if unknown:
        raise PyhfError(
            f"{source}: {', '.join(map(repr, unknown))} in the sample mapping is not a hepguard "
            f"sample; hepguard's samples are {', '.join(map(repr, hepguard))}"
        )
    ci, index = locate_samples(
        workspace, channel=channel, samples=samples, n_bins=len(templates.edges) - 1, source=source
    )
    ws_samples = workspace["channels"][ci]["samples"]
    ws_names = [s["name"] for s in ws_samples]
    for name, si in index.items():
        adding = {m.name for m in templates.modifiers if m.sample == name}
        present = sorted(adding & {m["name"] for m in ws_samples[si]["modifiers"]})
        if present:
            raise PyhfError(
                f"{source}: sample {ws_names[si]!r} of channel {channel!r} already has the "
                f"modifier(s) {', '.join(present)} that hepguard would add; was the patch "
                "applied already?"
            )
    ours = set(templates.names)
    for c in workspace["channels"]:
        for s in c["samples"]:
            for m in s["modifiers"]:
                if m["name"] in ours and m["type"] not in ("histosys", "normsys"):
                    raise PyhfError(
                        f"{source}: the workspace has a {m['type']} modifier {m['name']!r} "
                        f"(sample {s['name']!r}, channel {c['name']!r}); hepguard's nuisance "
                        "parameter of that name is a histosys/normsys and would clash with it"
                    )
    patch: list[dict] = [{"op": "test", "path": f"/channels/{ci}/name", "value": channel}]
    patch += [
        {"op": "test", "path": f"/channels/{ci}/samples/{index[s.name]}/name", "value": ws_name}
        for s in templates.samples
        if (ws_name := samples.get(s.name)) is not None
    ]
    adds: list[dict] = []
    for m in templates.modifiers:
        if m.sample not in index:
            continue
        si = index[m.sample]
        where = f"modifier {m.name} on sample {m.sample}"
        hi_data = lo_data = None
        if m.histosys is not None:
            ws_nominal = np.asarray(_floats(ws_samples[si]["data"], f"{source}: {ws_names[si]}"))
            nominal = hepguard[m.sample].nominal
            hi_data = _floats(_relative(ws_nominal, m.histosys[0], nominal), f"{where}: hi_data")
            lo_data = _floats(_relative(ws_nominal, m.histosys[1], nominal), f"{where}: lo_data")
        adds += [
            {"op": "add", "path": f"/channels/{ci}/samples/{si}/modifiers/-", "value": modifier}
            for modifier in _modifier_dicts(m, hi_data, lo_data)
        ]
    if not adds:
        with_modifiers = sorted({m.sample for m in templates.modifiers})
        raise PyhfError(
            f"{source}: the patch would add no modifier: the mapped hepguard sample(s) "
            f"{', '.join(map(repr, index)) or '(none)'} carry none; hepguard's modifiers act on "
            f"{', '.join(map(repr, with_modifiers)) or 'no sample (no variation changed one)'}"
        )
    patch += adds
    check_workspace(
        jsonpatch.apply_patch(workspace, patch), f"{source} with hepguard's patch applied"
    )
    return patch


def _load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _ours(modifier: Any) -> bool:
    return (
        isinstance(modifier, dict)
        and isinstance(modifier.get("name"), str)
        and modifier["name"].startswith(MODIFIER_PREFIX)
    )


def is_own_workspace(path: Path) -> bool:
    """True when ``path`` holds a workspace hepguard wrote: a JSON object with a measurement
    named ``hepguard`` and at least one modifier whose name starts with ``hepguard_``.

    pyhf's schema forbids keys it does not know at the top level, so a workspace cannot carry
    hepguard's report marker like its other reports; it is recognised by its content. A
    workspace written with another measurement name, or without any hepguard modifier, is not
    recognised (and is not overwritten without ``--hepguard-force``)."""
    spec = _load_json(path)
    if not isinstance(spec, dict):
        return False
    measurements = spec.get("measurements")
    channels = spec.get("channels")
    if not isinstance(measurements, list) or not isinstance(channels, list):
        return False
    if not any(isinstance(m, dict) and m.get("name") == MEASUREMENT for m in measurements):
        return False
    return any(
        _ours(modifier)
        for c in channels
        if isinstance(c, dict) and isinstance(c.get("samples"), list)
        for s in c["samples"]
        if isinstance(s, dict) and isinstance(s.get("modifiers"), list)
        for modifier in s["modifiers"]
    )


def is_own_patch(path: Path) -> bool:
    """True when ``path`` holds a patch hepguard wrote: a JSON list of operations whose every
    ``add`` adds a modifier named ``hepguard_...``, with at least one such ``add``. A JSON patch
    is a bare list, which has no room for hepguard's report marker either."""
    patch = _load_json(path)
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        return False
    adds = [op for op in patch if op.get("op") == "add"]
    return bool(adds) and all(_ours(op.get("value")) for op in adds)


def _dumps(obj: Any, path: Path) -> str:
    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError as err:
        raise PyhfError(f"{path}: {err}; JSON cannot carry NaN or infinity") from err


def write_workspace(path: Path, spec: dict, *, inputs: dict[str, Path | None], force: bool) -> None:
    """Write the workspace ``spec`` to ``path`` as indented JSON (atomically).

    Refused (``ReportPathError``) over an input file, over an existing file that is not a
    workspace hepguard wrote (:func:`is_own_workspace`) unless ``force``, into a missing folder.
    """
    check_report_path(path, "--hepguard-pyhf", inputs, force, is_own=is_own_workspace)
    write_atomic(path, _dumps(spec, path))


def write_patch(
    path: Path, patch: list[dict], *, inputs: dict[str, Path | None], force: bool
) -> None:
    """Write the JSON ``patch`` to ``path`` as indented JSON (atomically).

    Refused (``ReportPathError``) over an input file, over an existing file that is not a patch
    hepguard wrote (:func:`is_own_patch`) unless ``force``, into a missing folder.
    """
    check_report_path(path, "--hepguard-pyhf-patch", inputs, force, is_own=is_own_patch)
    write_atomic(path, _dumps(patch, path))
