"""Plots of the report: one function per plot, each taking check entries of the JSON report
(docs/report.md) and returning a :class:`matplotlib.figure.Figure`.

- :func:`discriminant_figure`: the discriminant before (solid) and after (dashed) the attack,
  per true class, normalised to unit area, with the ratio perturbed / nominal below.
- :func:`roc_figure`: background efficiency (mistag, log scale) against signal efficiency,
  before and after, with the working point and the ratio perturbed / nominal below.
- :func:`displacement_figure`: per feature, the mean and largest |displacement| in sigmas,
  against epsilon.
- :func:`summary_figure`: every check's fooling rate with its error beside the random noise
  baseline of the same size (and the gate's limit).

Figures are built on :class:`~matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: nothing global is left behind. The ``mplhep`` ROOT style is used when ``mplhep`` is
importable (it is optional), else a HEP-like style of ticks inside on every side. Every string
from a user file (check, class and feature names) is drawn as plain text, never as mathtext.

:func:`write_plots` writes every plot of a report as PNG and PDF into a folder.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pytest_hepguard.exceptions import ReportPathError
from pytest_hepguard.report.files import write_atomic

#: Colour-blind-safe palette of the CMS/Petroff recommendation, one colour per class.
COLOURS = ("#5790fc", "#f89c20", "#e42536", "#964a8b", "#9c9ca1", "#7a21dd")

#: Size of one single-panel figure in inches (width, height).
FIGSIZE = (6.4, 4.8)

#: HEP-like style: ticks inside, on all four sides, minor ticks; the sizes the fixed margins of
#: the figures are made for (applied over mplhep's ROOT style when mplhep is importable).
_RC: dict[str, Any] = {
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "xtick.minor.visible": True,
    "ytick.minor.visible": True,
    "xtick.major.size": 6,
    "ytick.major.size": 6,
    "xtick.minor.size": 3,
    "ytick.minor.size": 3,
    "axes.labelsize": 12,
    "axes.titlesize": 11,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "font.size": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "xtick.major.pad": 3.5,
    "ytick.major.pad": 3.5,
    "axes.linewidth": 1.0,
    "figure.figsize": FIGSIZE,
    "savefig.dpi": 100,
}

#: The plots :func:`write_plots` makes per check: file suffix and what it shows.
CHECK_PLOTS = ("discriminant", "discriminant_log", "roc", "displacement")

#: File stem of the summary plot over all checks.
SUMMARY_STEM = "summary_fooling_rate"


def _mplhep_style() -> dict[str, Any] | None:
    """The mplhep ROOT style dict, or None when mplhep is missing or has no such style."""
    try:
        import mplhep  # type: ignore[import-not-found]
    except Exception:  # optional: any import failure means "not there"
        return None
    style = getattr(getattr(mplhep, "style", None), "ROOT", None)
    return dict(style) if isinstance(style, dict) else None


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which figures get the HEP style (mplhep's ROOT style when importable).

    rcParams are restored on exit. The font family is set to one installed font by name (not
    ``sans-serif``, which matplotlib resolves when drawing), so figures built inside keep their
    text, and the margins measured for it, when saved outside.
    """
    extra = _mplhep_style()
    # mplhep's sizes are made for 10-inch figures: ours (fonts, ticks, margins) win over them
    styles = [_RC] if extra is None else [extra, _RC]
    with matplotlib.rc_context():
        for s in styles:
            for key, value in s.items():
                with contextlib.suppress(KeyError, ValueError):  # unknown to this matplotlib
                    matplotlib.rcParams[key] = value
        matplotlib.rcParams["font.family"] = [_installed_font()]
        yield


def _installed_font() -> str:
    """The first installed font of the style's family list (DejaVu Sans, shipped with
    matplotlib, when none is)."""
    rc = matplotlib.rcParams
    generic = {"sans-serif", "serif", "monospace", "cursive", "fantasy"}
    wanted = [
        name
        for family in rc["font.family"]
        for name in (rc[f"font.{family}"] if family in generic else [family])
    ]
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in wanted if name in installed), "DejaVu Sans")


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    # fixed margins, no layout engine: constrained layout would cost most of the drawing time
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _two_panels(fig: Figure) -> tuple[Any, Any]:
    """Main axes over a ratio panel sharing its x axis, no gap between them (HEP style)."""
    ax, rax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    fig.subplots_adjust(left=0.13, right=0.97, top=0.93, bottom=0.11, hspace=0.0)
    return ax, rax


def _fit_left(fig: Figure, ax: Any, plot_width: float, top: float = 0.8) -> None:
    """Size the figure to its widest y tick label (measured) plus ``plot_width`` inches of axes,
    with ``top`` inches above the axes for the title and legend."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    widest = max((t.get_window_extent(renderer).width for t in ax.get_yticklabels()), default=0)
    label = min(widest / fig.dpi, 6.0) + 0.2
    width, height = label + plot_width + 0.3, fig.get_size_inches()[1]
    fig.set_size_inches(width, height)
    fig.subplots_adjust(
        left=label / width, right=1 - 0.3 / width, top=1 - top / height, bottom=0.6 / height
    )


def _short(text: str, n: int = 60) -> str:
    """``text`` cut to ``n`` characters with an ellipsis (plot labels; the HTML has it whole)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _legend_above(ax: Any, handles: Sequence[Any], labels: Sequence[str], title: str) -> None:
    """Title at the top left, the legend in one row between it and the axes."""
    _legend(ax, handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.3,
            ncols=len(labels), handlelength=1.5, columnspacing=1.0)  # fmt: skip
    ax.set_title(title, loc="left", pad=26)


def plain(text: object) -> str:
    """``text`` as matplotlib draws it literally: ``$`` escaped so it never starts mathtext."""
    return str(text).replace("$", r"\$")


def _num(value: object, fmt: str = ".4f") -> str:
    return "n/a" if not isinstance(value, (int, float)) else format(value, fmt)


def _eps(entry: dict[str, Any]) -> str:
    eps = (entry.get("params") or {}).get("epsilon")
    return "" if eps is None else f", ε = {eps:g} σ"


def _title(entry: dict[str, Any]) -> str:
    return plain(f"{entry.get('name', '?')} ({entry.get('attack', '?')}{_eps(entry)})")


def _note(fig: Figure, text: str) -> Figure:
    """A figure that only says why there is nothing to plot."""
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, plain(text), ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


def _legend(ax: Any, handles: Sequence[Any], labels: Sequence[str], **kw: Any) -> None:
    # explicit labels: a name starting with "_" would otherwise be dropped from the legend
    ax.legend(list(handles), [plain(lab) for lab in labels], **kw)


def _headroom(
    fig: Figure,
    ax: Any,
    handles: Sequence[Any],
    labels: Sequence[str],
    bottom: float,
    top: float,
    log: bool,
) -> None:
    """Legend at the top of ``ax`` in as many columns (4 at most) as fit its width, and a y range
    from ``bottom`` that keeps the data (up to ``top``) below the legend."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = ax.get_window_extent(renderer)
    for ncols in range(min(4, len(labels)), 0, -1):
        _legend(ax, handles, labels, loc="upper center", ncols=ncols)
        legend_box = ax.get_legend().get_window_extent(renderer)
        if legend_box.width <= box.width * 0.98:
            break
    free = max(1.0 - legend_box.height / box.height - 0.06, 0.25)  # axes fraction left below
    if log:
        lo, hi = np.log10(bottom), np.log10(top)
        ax.set_ylim(bottom, 10 ** (lo + (hi - lo) / free))
    else:
        ax.set_ylim(bottom, bottom + (top - bottom) / free)


def discriminant_figure(entry: dict[str, Any], *, log: bool = False) -> Figure:
    """The discriminant before and after the attack, per true class.

    Args:
        entry: one check of the report; uses ``histograms`` ``{"edges": [n + 1], "groups":
            {class: {"nominal": [n], "perturbed": [n]}}}`` (sums of weights), and ``cut``.
        log: log-scale y axis (the tails where the working point usually sits).

    Returns:
        Step histograms normalised to unit area per class (``1/N dN/dx``): solid nominal, dashed
        perturbed, one colour per class; the working-point cut as a dotted line; below, the
        ratio perturbed / nominal per class.
    """
    with style():
        hist = entry.get("histograms") or {}
        edges = np.asarray(hist.get("edges") or [], dtype=float)
        groups: dict[str, dict[str, list[float]]] = hist.get("groups") or {}
        fig = _figure()
        if edges.size < 2 or not groups:
            return _note(fig, f"{entry.get('name', '?')}: no discriminant histograms")
        ax, rax = _two_panels(fig)
        widths = np.diff(edges)
        handles: list[Any] = []
        labels: list[str] = []
        positive: list[float] = []
        for i, (cls, h) in enumerate(groups.items()):
            colour = COLOURS[i % len(COLOURS)]
            dens = {}
            for tag, ls in (("nominal", "-"), ("perturbed", "--")):
                counts = np.asarray(h.get(tag) or np.zeros(edges.size - 1), dtype=float)
                total = counts.sum()
                dens[tag] = counts / (total * widths) if total > 0 else counts
                ax.stairs(dens[tag], edges, color=colour, linestyle=ls, linewidth=1.6)
                positive += [v for v in dens[tag] if v > 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(dens["nominal"] > 0, dens["perturbed"] / dens["nominal"], np.nan)
            rax.stairs(ratio, edges, color=colour, linewidth=1.2, baseline=None)
            handles.append(Line2D([], [], color=colour, linewidth=1.6))
            labels.append(_short(str(cls), 30))
        for tag, ls in (("nominal", "-"), ("perturbed", "--")):
            handles.append(Line2D([], [], color="black", linestyle=ls, linewidth=1.6))
            labels.append(tag)
        cut = entry.get("cut")
        if isinstance(cut, (int, float)):
            ax.axvline(cut, color="black", linestyle=":", linewidth=1.2)
            rax.axvline(cut, color="black", linestyle=":", linewidth=1.2)
            handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1.2))
            labels.append(f"working point {cut:.4g}")
        rax.axhline(1.0, color="grey", linewidth=0.8)
        rax.set_ylim(0.0, 2.0)
        rax.set_yticks([0.5, 1.0, 1.5])
        rax.set_xlim(edges[0], edges[-1])
        rax.set_xlabel("discriminant")
        rax.set_ylabel("pert. / nom.")
        ax.set_ylabel("1/N dN/d(discriminant)")
        ax.set_title(_title(entry), loc="left")
        lo, hi = (min(positive), max(positive)) if positive else (0.1, 1.0)
        if log:
            ax.set_yscale("log")
        _headroom(fig, ax, handles, labels, lo / 2 if log else 0.0, hi, log)
        return fig


def roc_figure(entry: dict[str, Any]) -> Figure:
    """The ROC curve before and after the attack, as HEP draws it.

    Args:
        entry: one check; uses ``roc_nominal``/``roc_perturbed`` ``{"signal_efficiency": [k],
            "background_efficiency": [k]}`` (fractions), ``auc_*``, ``efficiency_*``,
            ``mistag_*``.

    Returns:
        Background efficiency (mistag, log scale) against signal efficiency; solid nominal,
        dashed perturbed; the working point before (circle) and after (cross); below, the
        ratio of mistags perturbed / nominal. Lower is better: a curve that rises after the
        attack means more background passes at the same signal efficiency. A figure with a
        note when the sample has no signal and background labels.
    """
    with style():
        fig = _figure()
        nom, pert = entry.get("roc_nominal"), entry.get("roc_perturbed")
        if not nom or not pert:
            return _note(
                fig,
                f"{entry.get('name', '?')}: no ROC curve (it needs labels with signal and "
                "background events)",
            )
        ax, rax = _two_panels(fig)
        curves = {}
        for tag, roc, ls in (("nominal", nom, "-"), ("perturbed", pert, "--")):
            x = np.asarray(roc["signal_efficiency"], dtype=float)
            y = np.asarray(roc["background_efficiency"], dtype=float)
            curves[tag] = (x, y)
            ym = np.where(y > 0, y, np.nan)  # log scale: zero mistag is off the plot
            auc = entry.get(f"auc_{tag}")
            ax.plot(
                x,
                ym,
                color="black" if tag == "nominal" else COLOURS[2],
                linestyle=ls,
                linewidth=1.6,
                label=f"{tag} (AUC {_num(auc)})",
            )
        handles, labels = ax.get_legend_handles_labels()
        for tag, marker in (("nominal", "o"), ("perturbed", "X")):
            eff, mis = entry.get(f"efficiency_{tag}"), entry.get(f"mistag_{tag}")
            if isinstance(eff, (int, float)) and isinstance(mis, (int, float)) and mis > 0:
                handles += ax.plot(
                    [eff],
                    [mis],
                    marker=marker,
                    color="black",
                    linestyle="none",
                    markersize=7,
                    markerfacecolor="none",
                )
                labels.append(f"working point {tag}: ε_s {eff:.3f}, ε_b {mis:.3g}")
        ax.set_yscale("log")
        finite = [v for _, y in curves.values() for v in y if v > 0 and np.isfinite(v)]
        if finite:
            ax.set_ylim(max(min(finite) / 2, 1e-7), 1.5)
        x0, y0 = curves["nominal"]
        x1, y1 = curves["perturbed"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(y0 > 0, np.interp(x0, x1, y1) / y0, np.nan)
        rax.plot(x0, ratio, color=COLOURS[2], linewidth=1.2)
        rax.axhline(1.0, color="grey", linewidth=0.8)
        top = np.nanmax(ratio) if np.isfinite(ratio).any() else 2.0
        rax.set_ylim(0.0, max(2.0, min(float(top) * 1.1, 10.0)))
        rax.set_xlim(0.0, 1.0)
        rax.set_xlabel("signal efficiency")
        rax.set_ylabel("pert. / nom.")
        ax.set_ylabel("background efficiency (mistag)")
        ax.set_title(_title(entry), loc="left")
        ax.grid(True, which="major", alpha=0.3)
        _legend(ax, handles, labels, loc="upper left")
        return fig


def displacement_figure(entry: dict[str, Any]) -> Figure:
    """How far the attack moved each feature, in sigmas of its envelope.

    Args:
        entry: one check; uses ``mean_abs_displacement_sigma`` and ``max_displacement_sigma``
            (``{feature: sigmas}``) and ``params["epsilon"]`` (sigmas).

    Returns:
        Horizontal bars per feature (model input order, top to bottom): mean |δ| over the
        entries allowed to move, and the largest |δ| of any event; a dashed line at epsilon,
        which no max bar may pass. Frozen features (and sentinel-only ones) show no bar.
    """
    with style():
        mean = entry.get("mean_abs_displacement_sigma") or {}
        top = entry.get("max_displacement_sigma") or {}
        names = list(dict.fromkeys([*mean, *top]))
        height = min(max(3.0, 0.32 * len(names) + 2.0), 40.0)
        fig = _figure((FIGSIZE[0], height))
        if not names:
            return _note(fig, f"{entry.get('name', '?')}: no per-feature displacements")
        ax = fig.add_subplot()
        pos = np.arange(len(names))
        mean_v = [float(mean.get(n) or 0.0) for n in names]
        max_v = [float(top.get(n) or 0.0) for n in names]
        ax.barh(pos - 0.2, mean_v, height=0.4, color=COLOURS[0], label="mean |δ|")
        ax.barh(pos + 0.2, max_v, height=0.4, color=COLOURS[1], label="max |δ|")
        handles, labels = ax.get_legend_handles_labels()
        eps = (entry.get("params") or {}).get("epsilon")
        if isinstance(eps, (int, float)):
            handles.append(ax.axvline(eps, color="black", linestyle="--", linewidth=1.2))
            labels.append(f"ε = {eps:g} σ")
        ax.set_yticks(pos, [plain(_short(str(n))) for n in names])
        _fit_left(fig, ax, 4.6)
        ax.tick_params(axis="y", which="minor", left=False, right=False)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first feature on top
        ax.set_xlim(0.0, max([*max_v, float(eps or 0.0), 1e-9]) * 1.25)
        ax.set_xlabel("|displacement| [σ]")
        _legend_above(ax, handles, labels, _title(entry))
        return fig


def landscape_figure(entry: dict[str, Any]) -> Figure:
    """The loss landscape of a ``landscape`` check.

    Args:
        entry: one check with ``details.landscape`` (``curves``: ``direction``, ``t`` in sigmas,
            ``loss``; ``epsilon``).

    Returns:
        The mean loss of the true label against the displacement in sigmas, one line per
        direction (adversarial, random, each nuisance group), the band |t| <= epsilon shaded:
        how steeply the loss rises in each direction.
    """
    with style():
        fig = _figure()
        land = (entry.get("details") or {}).get("landscape") or {}
        curves = land.get("curves") or []
        if not curves:
            return _note(fig, f"{entry.get('name', '?')}: no landscape")
        ax = fig.add_subplot()
        eps = float(land.get("epsilon") or 0.0)
        ax.axvspan(-eps, eps, color="0.92", zorder=0)
        for k, curve in enumerate(curves):
            style_k = "-" if k < len(COLOURS) else "--"
            ax.plot(
                curve["t"],
                curve["loss"],
                style_k,
                color=COLOURS[k % len(COLOURS)],
                label=plain(_short(str(curve["direction"]), 30)),
            )
        ax.set_xlabel("displacement [σ]")
        ax.set_ylabel("mean loss of the true label")
        handles, labels = ax.get_legend_handles_labels()
        _legend_above(ax, handles, labels, _title(entry))
        return fig


def summary_figure(checks: Sequence[dict[str, Any]]) -> Figure:
    """Every check's fooling rate beside the random noise baseline of the same epsilon.

    Args:
        checks: the report's ``checks`` (uses ``fooling_rate(_err)``,
            ``random_fooling_rate(_err)``, ``limits["max_fooling_rate"]``, ``passed``).

    Returns:
        One row per check (run order, top to bottom): the attack's fooling rate with its
        binomial error (filled circle), the Gaussian noise of the same size (open square), the
        gate's ``max_fooling_rate`` (red bar) where set. Names of failed checks are red. An
        attack well right of its baseline finds directions noise does not.
    """
    with style():
        height = min(max(3.0, 0.4 * len(checks) + 2.0), 40.0)
        fig = _figure((FIGSIZE[0] + 1.6, height))
        if not checks:
            return _note(fig, "no checks ran")
        ax = fig.add_subplot()
        pos = np.arange(len(checks))

        def col(key: str) -> np.ndarray:
            return np.array([c.get(key) for c in checks], dtype=float)  # None -> nan

        rate, err = col("fooling_rate"), np.nan_to_num(col("fooling_rate_err"))
        base, berr = col("random_fooling_rate"), np.nan_to_num(col("random_fooling_rate_err"))
        ax.errorbar(
            rate, pos - 0.15, xerr=err, fmt="o", color=COLOURS[0], capsize=3, label="attack"
        )
        ax.errorbar(
            base,
            pos + 0.15,
            xerr=berr,
            fmt="s",
            color=COLOURS[4],
            capsize=3,
            markerfacecolor="none",
            label="random noise, same ε",
        )
        limits = np.array(
            [(c.get("limits") or {}).get("max_fooling_rate", np.nan) for c in checks], dtype=float
        )
        if np.isfinite(limits).any():
            ax.scatter(
                limits,
                pos,
                marker="|",
                s=260,
                color=COLOURS[2],
                linewidths=2.5,
                label="max_fooling_rate",
            )
        labels = [plain(_short(str(c.get("name", "?"))) + _eps(c)) for c in checks]
        ax.set_yticks(pos, labels)
        _fit_left(fig, ax, 5.0)
        for tick, c in zip(ax.get_yticklabels(), checks, strict=True):
            if c.get("passed") is False:
                tick.set_color(COLOURS[2])
        ax.tick_params(axis="y", which="minor", left=False, right=False)
        ax.set_ylim(len(checks) - 0.5, -0.5)
        values = np.concatenate([rate + err, base + berr, limits])
        values = values[np.isfinite(values)]
        ax.set_xlim(0.0, max(float(values.max()) if values.size else 0.0, 1e-3) * 1.15)
        ax.set_xlabel("fooling rate (weighted fraction of decisions changed)")
        ax.grid(True, axis="x", alpha=0.3)
        handles, labs = ax.get_legend_handles_labels()
        order = sorted(range(len(labs)), key=lambda i: labs[i] == "max_fooling_rate")
        _legend_above(
            ax, [handles[i] for i in order], [labs[i] for i in order], "fooling rate per check"
        )
        return fig


def safe_stem(name: str, max_len: int = 80) -> str:
    """A file-name stem from a check name: only ``[A-Za-z0-9._-]``, no leading dot, not empty.

    ``robustness_half_to_two_sigma[0.5]:fgsm`` becomes ``robustness_half_to_two_sigma_0.5_fgsm``.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:max_len].rstrip("._-")
    return stem or "check"


def check_stems(checks: Sequence[dict[str, Any]]) -> list[str]:
    """One distinct file-name stem per check (``-2``, ``-3`` appended to repeated names)."""
    seen: set[str] = {SUMMARY_STEM}
    stems = []
    for c in checks:
        base = safe_stem(str(c.get("name", "check")))
        stem, k = base, 1
        while stem.lower() in seen:  # case-insensitive file systems
            k += 1
            stem = f"{base}-{k}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def check_figures(entry: dict[str, Any]) -> dict[str, Figure]:
    """Every plot of one check, keyed by the suffixes of :data:`CHECK_PLOTS`."""
    return {
        "discriminant": discriminant_figure(entry),
        "discriminant_log": discriminant_figure(entry, log=True),
        "roc": roc_figure(entry),
        "displacement": displacement_figure(entry),
    }


def _save(fig: Figure, path: Path, fmt: str) -> None:
    with style():
        write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, dpi=100, metadata=_metadata(fmt)))


def png_bytes(fig: Figure, dpi: int = 100, palette: bool = False) -> bytes:
    """The figure as PNG file content, drawn in :func:`style`.

    ``palette``: 256-colour PNG (about a third of the size, no visible change for these plots
    on a white background): what the HTML report embeds.
    """
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", dpi=dpi)
    if not palette:
        return buf.getvalue()
    from PIL import Image  # a dependency of matplotlib

    buf.seek(0)
    with Image.open(buf) as image:
        small = image.convert("RGB").quantize(256)  # median cut
    out = io.BytesIO()
    small.save(out, format="png", optimize=True)
    return out.getvalue()


def _metadata(fmt: str) -> dict[str, Any]:
    # no creation date in PDFs: the same report gives the same files
    return {"Creator": "pytest-hepguard", "CreationDate": None} if fmt == "pdf" else {}


def check_plots_folder(folder: Path) -> None:
    """Refuse, before anything runs, a folder :func:`write_plots` would refuse at the end.

    Raises:
        ReportPathError: ``folder`` does not exist or is not a folder.
    """
    if not Path(folder).is_dir():
        raise ReportPathError(
            f"{folder}: plot folder does not exist (or is not a folder): hepguard writes plots "
            "only inside an existing folder; create it first"
        )


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write every plot of ``report`` as PNG and PDF into ``folder``.

    Per check ``<stem>_discriminant``, ``<stem>_discriminant_log``, ``<stem>_roc`` and
    ``<stem>_displacement`` (stem: :func:`check_stems`), then ``summary_fooling_rate``. Each
    file is written to a temporary file in ``folder`` and renamed into place; nothing is
    written outside ``folder``.

    Args:
        report: the report dict of :func:`~pytest_hepguard.report.json_report.build_report`.
        folder: an existing folder.

    Returns:
        The paths written, PNG then PDF of each plot, in order.

    Raises:
        ReportPathError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    check_plots_folder(folder)
    checks: list[dict[str, Any]] = list(report.get("checks") or [])
    written: list[Path] = []

    def emit(stem: str, fig: Figure) -> None:
        for fmt in ("png", "pdf"):
            path = folder / f"{stem}.{fmt}"
            _save(fig, path, fmt)
            written.append(path)

    for stem, entry in zip(check_stems(checks), checks, strict=True):
        for suffix, fig in check_figures(entry).items():
            emit(f"{stem}_{suffix}", fig)
    emit(SUMMARY_STEM, summary_figure(checks))
    return written
