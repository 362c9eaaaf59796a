"""The HTML report and the plot files: built from a real audit (a small linear tagger in memory
whose check, feature and class names include ``<script>`` and mathtext), checked for being
self-contained, escaped and loadable, then opened in headless Chromium when it is installed.

Run as a script (``python tests/test_html_report.py docs/img/html-report.png``) it renders the
bundled example's report and saves a browser screenshot of it for the docs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import ReportPathError
from pytest_hepguard.models import wrap_model
from pytest_hepguard.report import plots
from pytest_hepguard.report.files import is_own_report
from pytest_hepguard.report.html import (
    render_html,
    write_html,
)
from pytest_hepguard.report.json_report import build_report
from pytest_hepguard.report.plots import (
    CHECK_PLOTS,
    SUMMARY_STEM,
    check_plots_folder,
    check_stems,
    discriminant_figure,
    displacement_figure,
    roc_figure,
    safe_stem,
    summary_figure,
    write_plots,
)
from pytest_hepguard.uncertainties import (
    DataSpec,
    DecisionSpec,
    FeatureSpec,
    Ratio,
    UncertaintyModel,
    WorkingPoint,
)

XSS = "<script>alert(1)</script>"
#: would raise in matplotlib's mathtext parser if drawn as math
MATH = r"m_sv $\nosuchcommand$"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium): the browser test is skipped",
)


class Page(HTMLParser):
    """Start tags with their attributes, and the text, of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def images(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "img"]


def _audit_report(folder: Path) -> dict[str, object]:
    """A report of three checks on a linear 3-class tagger: a passing gate, a failing gate and a
    check that only reports; hostile names everywhere a user file puts one."""
    specs = (
        FeatureSpec("pt", "relative", 0.05, 0.05, min=0.0),
        FeatureSpec(XSS, "absolute", 0.3, 0.3),
        FeatureSpec(MATH, "absolute", 0.2, 0.2, sentinels=(-999.0,)),
    )
    n = 2000
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) * 20 + 20
    x[rng.random(n) < 0.2, 2] = -999.0
    lin = torch.nn.Linear(3, 3, bias=False)
    lin.weight.data = torch.tensor([[0.05, 0.8, 0.6], [0.0, -0.2, 0.3], [-0.05, -0.7, -0.5]])
    xc = np.where(x == -999.0, 0.0, x)
    labels = (xc @ lin.weight.data.numpy().T + rng.gumbel(size=(n, 3))).argmax(1)
    data = folder / "jets a&b<i>.npz"
    data.write_bytes(b"not read")
    unc_file = folder / "unc.yaml"
    unc_file.write_text("version: 1\n")
    events = Events(x, tuple(s.name for s in specs), labels, rng.uniform(0.5, 2, n), data)
    decision = DecisionSpec(
        discriminant=Ratio((0,), (0, 2)),
        classes=("b", XSS, "light"),
        signal=(0,),
        background=(2,),
        working_point=WorkingPoint(efficiency=0.7),
        output="logits",
    )
    unc = UncertaintyModel(specs, decision, DataSpec(), ())

    class Model(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return lin(torch.where(t == -999.0, 0.0, t))

    auditor = Auditor(wrap_model(Model(), torch.device("cpu"), "mem"), events, unc, seed=1)
    results = [
        auditor.run("random", limits={"max_fooling_rate": 0.5}, epsilon=1.0),
        auditor.run("fgsm", limits={"max_fooling_rate": 1e-6, "max_auc_drop": 0.5}, epsilon=1.0),
        auditor.run("pgd", name=f"{XSS}:pgd", epsilon=1.0, steps=5),
    ]
    entries = []
    for r in results:
        entry = r.to_dict()
        entry["test"] = f"tests/robustness_x.py::{r.name}"
        entry["outcome"] = "passed" if r.passed else "failed"
        entry["assumptions"] = list(auditor.decision.assumptions)
        entries.append(entry)
    report = build_report(
        entries, {"model": None, "data": data, "uncertainties": unc_file}, "mem:model", 1, "cpu"
    )
    return json.loads(json.dumps(report, allow_nan=False))  # as read back from the JSON report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return _audit_report(tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def page_file(report: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html(report, path)
    return path


@pytest.fixture(scope="module")
def plot_files(report: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("plots")
    return write_plots(report, folder)


def _decode_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    raw = base64.b64decode(uri[len(prefix) :], validate=True)
    assert raw.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(raw), format="png")


def test_report_has_the_three_checks(report):
    names = [c["name"] for c in report["checks"]]
    assert names == ["random", "fgsm", f"{XSS}:pgd"]
    assert [c["passed"] for c in report["checks"]] == [True, False, True]
    assert report["passed"] is False


def test_html_is_self_contained(page_file):
    text = page_file.read_text(encoding="utf-8")
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower()
    assert not re.search(r"https?://", text)
    assert "@import" not in text and "url(" not in text
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
    for tag, attrs in page.tags:
        if "src" in attrs:
            assert tag == "img" and str(attrs["src"]).startswith("data:image/png;base64,")
        if "href" in attrs:
            assert str(attrs["href"]).startswith("#"), attrs["href"]  # in-page anchors only
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    assert is_own_report(page_file)


def test_html_shows_every_check_gate_and_header(report, page_file):
    text = page_file.read_text(encoding="utf-8")
    page_text = "".join(Page(text).text)
    for check in report["checks"]:
        assert check["name"] in page_text
        assert f'id="check-{report["checks"].index(check)}"' in text
    assert "hepguard report: FAIL" in text  # the title
    assert page_text.count("FAIL") >= 2 and "PASS" in page_text and "report" in page_text
    for role in ("model", "data", "uncertainties"):
        assert role in page_text
    assert report["inputs"]["data"]["sha256"][:12] in text
    assert "jets a&b<i>.npz" in page_text  # the path, shown as text
    failures = [m for c in report["checks"] for m in c["failures"]]
    assert failures and all(m in page_text for m in failures)
    for assumption in report["assumptions"]:
        assert assumption in page_text
    for column in ("fooling rate", "on correct", "random", "AUC nominal → perturbed", "KS"):
        assert column in page_text
    assert "Wasserstein" in page_text and "mistag before → after" in page_text


def test_every_plot_is_an_embedded_png(report, page_file):
    images = Page(page_file.read_text(encoding="utf-8")).images()
    assert len(images) == 1 + len(CHECK_PLOTS) * len(report["checks"])
    for img in images:
        assert img.get("alt")
        pixels = _decode_png(str(img["src"]))
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0  # not blank


def test_names_from_user_files_are_escaped(page_file):
    text = page_file.read_text(encoding="utf-8")
    assert XSS not in text
    escaped = html.escape(XSS)
    assert text.count(escaped) >= 3
    assert f"<td>{escaped}</td>" in text  # the feature, in the displacement table
    assert f'alt="discriminant of {escaped}:pgd per class (b, {escaped}, light)' in text
    assert "jets a&amp;b&lt;i&gt;.npz" in text
    page = Page(text)
    assert "script" not in {tag for tag, _ in page.tags}
    assert "".join(page.text).count(XSS) >= 3  # shown as text


def test_html_write_is_atomic_and_only_overwrites_its_own(report, tmp_path):
    report = {**report, "checks": report["checks"][:1]}  # fewer plots to draw
    target = tmp_path / "r.html"
    write_html(report, target)
    write_html(report, target)  # its own report: overwritten
    assert is_own_report(target)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    with pytest.raises(ReportPathError, match="is not a hepguard report"):
        write_html(report, mine)
    assert mine.read_text() == "<html>my notes</html>"
    write_html(report, mine, force=True)  # --hepguard-force
    assert is_own_report(mine)
    with pytest.raises(ReportPathError, match="does not exist"):
        write_html(report, tmp_path / "missing" / "r.html")
    with pytest.raises(ReportPathError, match="is a folder"):
        write_html(report, tmp_path)


def test_write_plots_writes_png_and_pdf_of_every_plot(report, plot_files):
    folder = plot_files[0].parent
    stems = check_stems(report["checks"])
    assert stems == ["random", "fgsm", "script_alert_1_script_pgd"]
    expected = [f"{s}_{p}" for s in stems for p in CHECK_PLOTS] + [SUMMARY_STEM]
    assert [p.name for p in plot_files] == [f"{e}.{x}" for e in expected for x in ("png", "pdf")]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in plot_files)
    for path in plot_files:
        data = path.read_bytes()
        assert len(data) > 1000
        if path.suffix == ".png":
            assert data.startswith(PNG_SIGNATURE)
            assert matplotlib.image.imread(path).std() > 0
        else:
            assert data.startswith(b"%PDF-")


def test_write_plots_needs_an_existing_folder(report, tmp_path):
    check_plots_folder(tmp_path)
    with pytest.raises(ReportPathError, match="does not exist"):
        check_plots_folder(tmp_path / "nope")
    with pytest.raises(ReportPathError, match="does not exist"):
        write_plots(report, tmp_path / "nope")
    assert list(tmp_path.iterdir()) == []


def test_file_stems_are_safe_and_distinct():
    assert safe_stem("robustness_half_to_two_sigma[0.5]:fgsm") == (
        "robustness_half_to_two_sigma_0.5_fgsm"
    )
    assert safe_stem("../../etc/passwd") == "etc_passwd"
    assert safe_stem(".hidden") == "hidden"
    assert safe_stem("<>:") == "check"
    assert len(safe_stem("x" * 500)) == 80
    checks = [{"name": "a:b"}, {"name": "a_b"}, {"name": "A_B"}, {"name": "summary_fooling_rate"}]
    assert check_stems(checks) == ["a_b", "a_b-2", "A_B-3", "summary_fooling_rate-2"]


def test_plots_survive_missing_numbers(report):
    """A check without labels: no ROC, one histogram group, null numbers, no limits."""
    entry = dict(report["checks"][0])
    entry.update(
        roc_nominal=None,
        roc_perturbed=None,
        auc_nominal=None,
        auc_perturbed=None,
        cut=None,
        efficiency_nominal=None,
        mistag_nominal=None,
        fooling_rate_correct=None,
        limits={},
        histograms={"edges": [0.0, 0.5, 1.0], "groups": {"all events": {"nominal": [1, 0],
                                                                         "perturbed": [0, 0]}}},
    )  # fmt: skip
    for fig in (
        discriminant_figure(entry),
        discriminant_figure(entry, log=True),
        roc_figure(entry),
        displacement_figure(entry),
        summary_figure([entry]),
        summary_figure([]),
        displacement_figure({"name": "x"}),
        discriminant_figure({"name": "x"}),
    ):
        fig.savefig(io.BytesIO(), format="png")
    page = render_html({"checks": [entry], "passed": True})  # a report with little in it
    assert len(Page(page).images()) == 1 + len(CHECK_PLOTS)


def test_style_puts_its_sizes_over_mplhep(monkeypatch):
    """With mplhep installed its style is the base; our sizes (the fixed margins are made for
    them) win, and keys this matplotlib does not know are skipped."""
    fake = {"font.size": 26.0, "xtick.direction": "out", "no.such.key": 1, "grid.alpha": 0.8}
    monkeypatch.setattr(plots, "_mplhep_style", lambda: fake)
    before = dict(matplotlib.rcParams)
    with plots.style():
        rc = matplotlib.rcParams
        assert rc["font.size"] == 10 and rc["xtick.direction"] == "in" and rc["grid.alpha"] == 0.8
        assert len(rc["font.family"]) == 1  # one installed font, by name
    assert dict(matplotlib.rcParams) == before  # nothing leaks


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with no network, no sandbox (containers), a throwaway profile."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _page_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log about the page: console messages, uncaught errors, loads."""
    keys = ("Uncaught", "CONSOLE", "Failed to load resource", "ERR_", "Not allowed to load")
    return [line for line in stderr.splitlines() if any(k in line for k in keys)]


def screenshot(page: Path, out: Path, tmp: Path, size: str = "1280,2400") -> None:
    """Save a headless-Chromium screenshot of ``page`` (window ``size`` "width,height")."""
    proc = _chromium(tmp, f"--screenshot={out}", f"--window-size={size}", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _page_errors(proc.stderr), _page_errors(proc.stderr)


@needs_chromium
def test_chromium_renders_the_page(page_file, tmp_path):
    shot = tmp_path / "shot.png"
    screenshot(page_file, shot, tmp_path)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels[..., :3].std() > 0.05  # not one colour
    # the plots are drawn: the colours of the class histograms appear in the screenshot
    blue = np.array([0x57, 0x90, 0xFC]) / 255
    assert (np.abs(pixels[..., :3] - blue).max(axis=-1) < 0.02).sum() > 100


@needs_chromium
def test_chromium_loads_every_image(report, page_file, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", page_file.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _page_errors(dom.stderr)
    images = Page(dom.stdout).images()
    assert len(images) == 1 + len(CHECK_PLOTS) * len(report["checks"])
    assert all(str(i["src"]).startswith("data:image/png;base64,") for i in images)
    assert "script" not in {tag for tag, _ in Page(dom.stdout).tags}  # the name stayed text
    # a test-only copy with a probe script: how many images decoded to a real size
    probe = tmp_path / "probe.html"
    counter = (
        "<script>addEventListener('load', () => { const im = [...document.images];"
        "document.body.dataset.loaded = im.filter(i => i.complete && i.naturalWidth > 0).length"
        " + '/' + im.length; });</script></body>"
    )
    probe.write_text(page_file.read_text(encoding="utf-8").replace("</body>", counter))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _page_errors(dom.stderr), _page_errors(dom.stderr)
    body = next(attrs for tag, attrs in Page(dom.stdout).tags if tag == "body")
    assert body.get("data-loaded") == f"{len(images)}/{len(images)}"


def main(out: Path) -> None:
    """Render the bundled example's report (its real pytest run) and screenshot it to ``out``."""
    import tempfile

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        json_path = tmp / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pytest", "examples", "-q", "-p", "no:cacheprovider",
             "--hepguard-model", "examples/tagger.pt", "--hepguard-uncertainties",
             "examples/unc.yaml", f"--hepguard-json={json_path}"],
            cwd=root, check=True, timeout=600,
        )  # fmt: skip
        page = tmp / "report.html"
        write_html(json.loads(json_path.read_text()), page)
        screenshot(page, out.resolve(), tmp, size="1280,2000")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/html-report.png"))
