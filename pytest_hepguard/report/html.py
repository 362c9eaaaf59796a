"""The HTML report: one self-contained file a reviewer opens in any browser (docs/html-report.md).

Everything is inside the file: the plots as base64 PNG data URIs, the CSS inline; no scripts,
no external fonts, links or images, so it can be mailed, attached to a CI run or archived.
Every string that comes from a user file (check, test, feature and class names, paths,
messages) is escaped with :func:`html.escape`: a name like ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pytest_hepguard.report import plots
from pytest_hepguard.report.files import REPORT_MARKER, check_report_path, write_atomic
from pytest_hepguard.report.terminal import describe_counterexample

#: In every HTML report's head: the marker that lets hepguard overwrite its own reports.
GENERATOR = f'<meta name="generator" content="{REPORT_MARKER}">'

_CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.2rem 1.5rem 3rem; max-width: 1400px; margin-inline: auto;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1f2328; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .6rem; display: flex; gap: .8rem; align-items: center; }
h2 { font-size: 1.25rem; margin: 0 0 .5rem; display: flex; gap: .6rem; align-items: center;
  overflow-wrap: anywhere; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
section.check { border-top: 2px solid var(--line); margin-top: 2rem; padding-top: 1rem; }
table { border-collapse: collapse; margin: .3rem 0 1rem; font-size: .9rem; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary { font-size: .8rem; } table.summary th, table.summary td { padding: .2rem .35rem; }
td.name { min-width: 10rem; max-width: 20rem; overflow-wrap: anywhere; }
.wide { overflow-x: auto; }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: 1rem; font-size: .8rem;
  font-weight: 700; color: #fff; background: var(--muted); vertical-align: middle; }
h1 .badge { font-size: 1rem; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 1rem; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: .85rem; color: var(--muted); }
img.summary { width: auto; max-width: 100%; height: auto; border: 1px solid var(--line); }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: .3rem 0; }
.meta dt { color: var(--muted); } .meta dd { margin: 0; overflow-wrap: anywhere; }
code { font-size: .85rem; background: #f6f8fa; padding: 0 .25rem; border-radius: 3px;
  overflow-wrap: anywhere; }
ul.failures li { color: var(--fail); } ul.warnings li { color: var(--warn); }
.gates { display: flex; flex-wrap: wrap; gap: .4rem .9rem; padding: 0; list-style: none; }
a { color: #0969da; }
details { margin: .5rem 0; } summary { cursor: pointer; color: var(--muted); }
footer { margin-top: 3rem; color: var(--muted); font-size: .8rem; }
""".strip()


def esc(value: object) -> str:
    """``value`` as HTML text: ``&``, ``<``, ``>`` and both quotes escaped."""
    return html.escape(str(value), quote=True)


def breakable(value: object) -> str:
    """``value`` escaped, with line-break opportunities (``<wbr>``) after ``_ : / [ .``: long
    check names wrap at their parts in narrow table cells."""
    out = esc(value)
    for ch in "_:/[.":
        out = out.replace(ch, ch + "<wbr>")
    return out


def _num(value: object, fmt: str = ".4f") -> str:
    return (
        "n/a"
        if isinstance(value, bool) or not isinstance(value, (int, float))
        else format(value, fmt)
    )


def _rate(entry: dict[str, Any], key: str) -> str:
    value, err = entry.get(key), entry.get(f"{key}_err")
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.4f} ± {err:.4f}" if isinstance(err, (int, float)) else f"{value:.4f}"


def _arrow(entry: dict[str, Any], key: str, fmt: str = ".4f") -> str:
    before, after = entry.get(f"{key}_nominal"), entry.get(f"{key}_perturbed")
    if before is None and after is None:
        return "n/a"
    return f"{_num(before, fmt)} → {_num(after, fmt)}"


def gate_status(entry: dict[str, Any]) -> str:
    """``PASS``/``FAIL`` for a check with limits, ``report`` for one that only reports (a check
    with failures but no limits, e.g. an envelope violation, is ``FAIL`` too)."""
    if entry.get("failures") or entry.get("passed") is False:
        return "FAIL"
    return "PASS" if entry.get("limits") else "report"


def _badge(status: str) -> str:
    cls = {"PASS": "pass", "FAIL": "fail"}.get(status, "")
    return f'<span class="badge {cls}">{esc(status)}</span>'


#: The summary table: the terminal summary's columns plus Wasserstein and the working point.
COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("eps [σ]", lambda e: _num((e.get("params") or {}).get("epsilon"), "g")),
    ("fooling rate", lambda e: _rate(e, "fooling_rate")),
    ("on correct", lambda e: _rate(e, "fooling_rate_correct")),
    ("random", lambda e: _rate(e, "random_fooling_rate")),
    ("AUC nominal → perturbed", lambda e: _arrow(e, "auc")),
    ("KS", lambda e: _num(e.get("output_ks"))),
    ("Wasserstein", lambda e: _num(e.get("output_wasserstein"))),
    ("efficiency before → after", lambda e: _arrow(e, "efficiency")),
    ("mistag before → after", lambda e: _arrow(e, "mistag", ".4g")),
    ("time s", lambda e: _num(e.get("seconds"), ".2f")),
)


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (100 dpi, 256 colours)."""
    data = base64.b64encode(plots.png_bytes(fig, palette=True)).decode("ascii")
    return f"data:image/png;base64,{data}"


def _img(fig: Figure, alt: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{png_data_uri(fig)}" alt="{esc(alt)}">'


def _header(report: dict[str, Any]) -> str:
    checks: list[dict[str, Any]] = report.get("checks") or []
    status = "PASS" if report.get("passed", True) else "FAIL"
    rows = []
    for role, info in (report.get("inputs") or {}).items():
        info = info or {}
        digest = info.get("sha256")
        short = f'<code title="{esc(digest)}">{esc(str(digest)[:12])}</code>' if digest else "n/a"
        rows.append(
            f"<tr><th>{esc(role)}</th><td><code>{esc(info.get('path') or 'n/a')}</code></td>"
            f"<td>{short}</td></tr>"
        )
    versions = ", ".join(
        f"{esc(k)} {esc(v)}" for k, v in (report.get("versions") or {}).items() if v is not None
    )
    gates = [
        f'<li><a href="#check-{i}">{esc(c.get("name", "?"))}</a> {_badge(gate_status(c))}</li>'
        for i, c in enumerate(checks)
        if c.get("limits") or c.get("failures")
    ]
    return f"""<header>
<h1>hepguard report {_badge(status)}</h1>
<div class="wide"><table>
<tr><th>input</th><th>path</th><th>SHA-256 (first 12)</th></tr>
{"".join(rows)}
</table></div>
<dl class="meta">
<dt>created</dt><dd>{esc(report.get("created", "n/a"))}</dd>
<dt>seed</dt><dd>{esc(report.get("seed", "n/a"))}</dd>
<dt>device</dt><dd>{esc(report.get("device", "n/a"))}</dd>
<dt>versions</dt><dd>{versions or "n/a"}</dd>
<dt>checks</dt><dd>{len(checks)} ({sum(gate_status(c) == "FAIL" for c in checks)} failed)</dd>
</dl>
<h3>gates</h3>
{f'<ul class="gates">{"".join(gates)}</ul>' if gates else "<p>no check had limits</p>"}
</header>"""


def _summary(report: dict[str, Any]) -> str:
    checks: list[dict[str, Any]] = report.get("checks") or []
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in COLUMNS)
    body = "".join(
        f'<tr><td class="name"><a href="#check-{i}">{breakable(c.get("name", "?"))}</a></td>'
        + "".join(f'<td class="num">{esc(cell(c))}</td>' for _, cell in COLUMNS)
        + f"<td>{_badge(gate_status(c))}</td></tr>"
        for i, c in enumerate(checks)
    )
    assumptions = report.get("assumptions") or []
    assumed = (
        "<h3>assumptions</h3><p>where the uncertainty file was silent, hepguard assumed:</p><ul>"
        + "".join(f"<li>{esc(a)}</li>" for a in assumptions)
        + "</ul>"
        if assumptions
        else ""
    )
    figure = (
        _img(
            plots.summary_figure(checks),
            "fooling rate per check beside the random baseline",
            "summary",
        )
        if checks
        else "<p>no checks ran</p>"
    )
    return f"""<section id="summary">
<h2>summary</h2>
<div class="wide"><table class="summary">
<tr><th>check</th>{head}<th>gate</th></tr>
{body}
</table></div>
<figure>{figure}<figcaption>Fooling rate of each check (circle, binomial error) beside Gaussian
noise of the same epsilon (square) and the gate's max_fooling_rate (red bar).</figcaption></figure>
{assumed}
</section>"""


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{esc(k)}={esc(v)}" for k, v in params.items()) or "none"


def _limits(entry: dict[str, Any]) -> str:
    limits: dict[str, Any] = entry.get("limits") or {}
    if not limits:
        return "<p>no limits: this check only reports</p>"
    rows = []
    for key, limit in limits.items():
        metric = str(key).removeprefix("max_")
        value = entry.get(metric)
        if isinstance(value, (int, float)) and isinstance(limit, (int, float)):
            status = "FAIL" if abs(value) > limit else "PASS"
        else:
            status = "FAIL"  # a limit that cannot be checked fails the gate
        rows.append(
            f"<tr><td>{esc(key)}</td><td class='num'>{esc(_num(limit, 'g'))}</td>"
            f"<td>{esc(metric)}</td><td class='num'>{esc(_num(value, '.4g'))}</td>"
            f"<td>{_badge(status)}</td></tr>"
        )
    return (
        "<table><tr><th>limit</th><th>value</th><th>metric</th><th>measured</th>"
        f"<th>status</th></tr>{''.join(rows)}</table>"
    )


def _numbers(entry: dict[str, Any]) -> str:
    rows = [
        ("AUC", "auc", ".4f"),
        ("signal efficiency at the cut", "efficiency", ".4f"),
        ("mistag at the cut", "mistag", ".4g"),
        ("rejection at the cut", "rejection", ".4g"),
    ]
    cells = "".join(
        f"<tr><td>{label}</td><td class='num'>{esc(_num(entry.get(f'{k}_nominal'), f))}</td>"
        f"<td class='num'>{esc(_num(entry.get(f'{k}_perturbed'), f))}</td></tr>"
        for label, k, f in rows
    )
    return f"<table><tr><th></th><th>nominal</th><th>perturbed</th></tr>{cells}</table>"


def _features(entry: dict[str, Any]) -> str:
    mean = entry.get("mean_abs_displacement_sigma") or {}
    top = entry.get("max_displacement_sigma") or {}
    moved = entry.get("moved_fraction") or {}
    names = list(dict.fromkeys([*mean, *top, *moved]))
    if not names:
        return ""
    rows = "".join(
        f"<tr><td>{esc(n)}</td><td class='num'>{esc(_num(mean.get(n)))}</td>"
        f"<td class='num'>{esc(_num(top.get(n)))}</td>"
        f"<td class='num'>{esc(_num(moved.get(n)))}</td></tr>"
        for n in names
    )
    return (
        "<details><summary>per-feature displacements (table)</summary><table><tr><th>feature"
        "</th><th>mean |δ| [σ]</th><th>max |δ| [σ]</th><th>moved fraction</th></tr>"
        f"{rows}</table></details>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; numbers formatted to 4 significant digits, everything escaped."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"<td class='num'>{esc(_num(v, '.4g'))}</td>"
        return f"<td>{esc('n/a' if v is None else v)}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


def _num4(value: float) -> str:
    return _num(value, ".4g")


def _details(entry: dict[str, Any]) -> str:
    """The attack's own numbers (docs/report.md, ``details``): the hidden attack's certificate,
    the systematic variations, the worst-case cascade, the radius quantiles, the scan, the pyhf
    fits."""
    d = entry.get("details") or {}
    out = ""
    cert = d.get("certificate")
    if cert:
        verdict = "passed" if cert.get("passed") else "FAILED"
        pair = " / ".join(cert.get("max_pair") or []) or "n/a"
        out += (
            f"<h3>certificate ({verdict}, scipy)</h3><p>max |Δρ| "
            f"{esc(_num(cert.get('max_abs_delta_rho'), '.3g'))} ({esc(pair)}), relative Frobenius "
            f"change {esc(_num(cert.get('corr_frob_change'), '.3g'))}; {esc(d.get('kept', 'n/a'))}"
            f" of {esc(d.get('candidates', 'n/a'))} candidate events kept</p>"
        )
        out += _table(
            ("feature", "real entries", "KS", "KS p-value", "JS distance"),
            [(f["name"], f["n"], f["ks"], f["ks_pvalue"], f["jsd"]) for f in cert["features"]],
        )
    if d.get("variations"):
        out += f"<h3>group variations (worst: {esc(d.get('worst_variation'))})</h3>"
        out += _table(
            ("group", "shift", "fooling rate", "error", "AUC after", "output KS", "mean shift"),
            [
                (
                    v["group"],
                    v["shift"],
                    v["fooling_rate"],
                    v["fooling_rate_err"],
                    v["auc_perturbed"],
                    v["output_ks"],
                    v["mean_shift"],
                )
                for v in d["variations"]
            ],
        )
        corr = d.get("correlated") or {}
        out += (
            f"<p>correlated random draws of all groups: {esc(corr.get('draws'))} draws, fooling "
            f"rate mean {esc(_num(corr.get('fooling_rate_mean')))}, max "
            f"{esc(_num(corr.get('fooling_rate_max')))}</p>"
        )
    if d.get("cascade"):
        out += "<h3>worst-case cascade</h3>" + _table(
            ("stage", "events fooled first", "share", "seconds"),
            [(c["attack"], c["fooled"], c["share"], c["seconds"]) for c in d["cascade"]],
        )
    radius = d.get("radius")
    if radius:
        out += "<h3>robustness radius [σ]</h3>" + _table(
            ("events", "q16", "median", "q84", "median of those that flip", "not flipped"),
            [
                (name, g["q16"], g["median"], g["q84"], g["median_flipped"], g["not_flipped"])
                for name, g in radius["groups"].items()
            ],
        )
    fit = d.get("pyhf")
    if fit:
        poi = fit["poi"]
        out += (
            f"<h3>pyhf fit of {esc(fit['workspace'])}</h3><p>σ({esc(poi)}) "
            f"{esc(_num(fit['mu_err_without'], '.4g'))} without the hepguard nuisance parameters, "
            f"{esc(_num(fit['mu_err'], '.4g'))} with them: "
            f"{esc(_num(100 * fit['increase'], '+.1f'))} %</p>"
        )
        out += _table(
            ("parameter", "pull", "post-fit σ", f"Δ{poi} at +σ", f"Δ{poi} at −σ"),
            [
                (p["name"], p["pull"], p["constraint"], p["impact_up"], p["impact_down"])
                for p in fit["parameters"]
            ],
        )
        out += "<h3>templates: yields up / down over nominal</h3>" + _table(
            ("variation", "sample", "up", "down", "normsys hi / lo"),
            [
                (
                    v["name"],
                    v["sample"],
                    v["up_yield_ratio"],
                    v["down_yield_ratio"],
                    "none" if v["normsys"] is None else " / ".join(map(_num4, v["normsys"])),
                )
                for v in fit["templates"]["variations"]
            ],
        )
    land = d.get("landscape")
    if land:
        out += f"<h3>loss landscape (sharpness within ε = {esc(_num(land['epsilon'], 'g'))})</h3>"
        out += _table(
            ("direction", "loss at 0", "curvature", "largest increase within ε"),
            [
                (
                    c["direction"],
                    c["loss"][len(c["loss"]) // 2],
                    c["sharpness"]["curvature"],
                    c["sharpness"]["max_increase"],
                )
                for c in land["curves"]
            ],
        )
        alt = f"loss of the true label along each direction, {entry.get('name', '')}"
        out += f"<figure>{_img(plots.landscape_figure(entry), alt)}</figure>"
    if d.get("scan"):
        out += "<h3>sensitivity scan</h3>" + _table(
            ("epsilon", "ks_max", "hidden", "certified", "random", "pgd"),
            [
                (
                    r["epsilon"],
                    r["ks_max"],
                    r["hidden_fooling_rate"],
                    str(r["certified"]),
                    r["random_fooling_rate"],
                    r["pgd_fooling_rate"],
                )
                for r in d["scan"]
            ],
        )
    return out


def _messages(entry: dict[str, Any]) -> str:
    out = ""
    failures, warnings = entry.get("failures") or [], entry.get("warnings") or []
    if failures:
        items = "".join(f"<li>{esc(m)}</li>" for m in failures)
        out += f'<h3>failures</h3><ul class="failures">{items}</ul>'
    if warnings:
        items = "".join(f"<li>{esc(m)}</li>" for m in warnings)
        out += f'<h3>warnings</h3><ul class="warnings">{items}</ul>'
    return out


#: What each plot of a check shows, under it in the page.
CAPTIONS = {
    "discriminant": "Discriminant per true class, unit area: solid nominal, dashed perturbed; "
    "dotted the working-point cut; below, perturbed / nominal.",
    "discriminant_log": "The same on a log scale: the tails, where the working point sits.",
    "roc": "Mistag (background efficiency, log) against signal efficiency, before and after; "
    "markers at the working point; below, the mistag ratio perturbed / nominal.",
    "displacement": "How far the attack moved each feature, in sigmas: mean and largest |δ|; "
    "no bar passes the dashed epsilon.",
}


def _check(i: int, entry: dict[str, Any], global_assumptions: Sequence[str]) -> str:
    name = str(entry.get("name", "?"))
    classes = ", ".join(map(str, ((entry.get("histograms") or {}).get("groups") or {}).keys()))
    alts = {
        "discriminant": f"discriminant of {name} per class ({classes}), nominal vs perturbed",
        "discriminant_log": f"discriminant of {name} per class ({classes}), log scale",
        "roc": f"ROC of {name}, nominal vs perturbed",
        "displacement": f"per-feature displacement of {name} in sigmas",
    }
    figures = "".join(
        f"<figure>{_img(fig, alts[key])}<figcaption>{esc(CAPTIONS[key])}</figcaption></figure>"
        for key, fig in plots.check_figures(entry).items()
    )
    assumptions = entry.get("assumptions") or []
    own = (
        "<h3>assumptions</h3><ul>" + "".join(f"<li>{esc(a)}</li>" for a in assumptions) + "</ul>"
        if assumptions and list(assumptions) != list(global_assumptions)
        else ""
    )
    zg = entry.get("zero_gradient_fraction")
    return f"""<section class="check" id="check-{i}">
<h2>{esc(name)} {_badge(gate_status(entry))}</h2>
<dl class="meta">
<dt>test</dt><dd><code>{esc(entry.get("test", "n/a"))}</code> ({esc(entry.get("outcome", "n/a"))})</dd>
<dt>attack</dt><dd>{esc(entry.get("attack", "?"))}: {_params(entry.get("params") or {})}</dd>
<dt>events</dt><dd>{esc(entry.get("n_events", "n/a"))} ({esc(entry.get("n_correct", "n/a"))} classified correctly on nominal input)</dd>
<dt>fooling rate</dt><dd>{esc(_rate(entry, "fooling_rate"))} (on correct {esc(_rate(entry, "fooling_rate_correct"))}; random noise {esc(_rate(entry, "random_fooling_rate"))})</dd>
<dt>output shift</dt><dd>KS {esc(_num(entry.get("output_ks")))}, Wasserstein {esc(_num(entry.get("output_wasserstein")))}, mean shift {esc(_num(entry.get("mean_shift"), "+.4g"))}, cut {esc(_num(entry.get("cut"), ".4g"))}</dd>
<dt>envelope</dt><dd>{esc(entry.get("envelope_violations", "n/a"))} violations; zero-gradient fraction {esc(_num(zg))}</dd>
<dt>ran</dt><dd>{esc(_num(entry.get("seconds"), ".2f"))} s on {esc(entry.get("device", "n/a"))}</dd>
</dl>
{_numbers(entry)}
<h3>limits</h3>
{_limits(entry)}
{_messages(entry)}
{_details(entry)}
<div class="grid">{figures}</div>
{_features(entry)}
{own}
</section>"""  # noqa: E501


def _counterexamples(report: dict[str, Any]) -> str:
    """The property tests' minimal counterexamples, changes in sigmas per feature."""
    found = report.get("counterexamples") or []
    if not found:
        return ""
    rows = [(c["test"], c["property"], describe_counterexample(c)) for c in found]
    return (
        "<section><h2>property counterexamples</h2>"
        + _table(("test", "property", "minimal counterexample"), rows)
        + "</section>"
    )


def render_html(report: dict[str, Any]) -> str:
    """The whole page for ``report`` (the dict of
    :func:`~pytest_hepguard.report.json_report.build_report`) as one string."""
    checks: list[dict[str, Any]] = report.get("checks") or []
    status = "PASS" if report.get("passed", True) else "FAIL"
    assumptions = report.get("assumptions") or []
    sections = "\n".join(_check(i, c, assumptions) for i, c in enumerate(checks))
    versions = report.get("versions") or {}
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{GENERATOR}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hepguard report: {status}</title>
<style>
{_CSS}
</style>
</head>
<body>
{_header(report)}
{_summary(report)}
{_counterexamples(report)}
{sections}
<footer>pytest-hepguard {esc(versions.get("pytest-hepguard") or "")}, report version
{esc(report.get("report_version", "n/a"))}. Epsilon and displacements are in sigmas of each
feature's declared uncertainty; rates are weighted fractions with binomial errors.</footer>
</body>
</html>
"""


def write_html(report: dict[str, Any], path: Path, force: bool = False) -> None:
    """Write the self-contained HTML report of ``report`` (the dict of
    :func:`~pytest_hepguard.report.json_report.build_report`) to ``path``, atomically.

    Raises:
        ReportPathError: as :func:`~pytest_hepguard.report.files.check_report_path` (an
            existing file that is not a hepguard report is kept unless ``force``).
    """
    check_report_path(Path(path), "HTML report", force=force)
    write_atomic(Path(path), render_html(report))
