"""Templates: histograms against numpy loops, cabinetry's split, symmetrising, clipping and the
lint warnings, each on small hand-made histograms."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_hepguard.exceptions import PyhfError
from pytest_hepguard.templates import (
    SampleTemplate,
    Variation,
    bin_edges,
    build_templates,
    histogram,
)

EDGES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


def test_histogram_matches_a_loop_with_weights() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(-0.1, 1.1, 500)
    values[:3] = [0.0, 1.0, 0.5]  # the edges: first bin closed left, last bin closed right
    weights = rng.normal(1.0, 0.5, 500)
    hist = histogram(values, EDGES, weights)
    yields, sumw2 = np.zeros(4), np.zeros(4)
    for v, w in zip(values, weights, strict=True):
        for i in range(4):
            last = i == 3
            if EDGES[i] <= v < EDGES[i + 1] or (last and v == EDGES[4]):
                yields[i] += w
                sumw2[i] += w * w
    np.testing.assert_allclose(hist.yields, yields, rtol=1e-12)
    np.testing.assert_allclose(hist.sumw2, sumw2, rtol=1e-12)
    unweighted = histogram(values, EDGES)
    inside = (values >= 0) & (values <= 1)
    assert unweighted.yields.sum() == inside.sum() == unweighted.sumw2.sum()


def test_bin_edges() -> None:
    np.testing.assert_allclose(bin_edges(4), EDGES)
    np.testing.assert_allclose(bin_edges(2, 0.5, 1.0), [0.5, 0.75, 1.0])
    np.testing.assert_allclose(bin_edges((0.0, 0.9, 1.0)), [0.0, 0.9, 1.0])


def _sample(name: str, nominal: list[float], signal: bool = False) -> SampleTemplate:
    nom = np.array(nominal, dtype=float)
    return SampleTemplate(name, nom, nom.copy(), signal)


def test_split_into_normsys_and_shape_histosys() -> None:
    sig = _sample("sig", [10, 20, 30, 40], signal=True)
    bkg = _sample("bkg", [100, 50, 20, 5])
    up = {"sig": np.array([12.0, 22, 33, 43]), "bkg": np.array([100.0, 50, 20, 5])}
    down = {"sig": np.array([9.0, 18, 27, 36]), "bkg": np.array([100.0, 50, 20, 5])}
    t = build_templates(EDGES, [sig, bkg], [Variation("hepguard_x", up, down)])
    (mod,) = t.modifiers  # bkg does not move: no modifier for it
    assert (mod.name, mod.sample) == ("hepguard_x", "sig")
    assert mod.normsys == pytest.approx((110 / 100, 90 / 100))
    hi, lo = mod.histosys
    np.testing.assert_allclose(hi, up["sig"] * 100 / 110)  # shape only: nominal yield
    np.testing.assert_allclose(lo, down["sig"] * 100 / 90)
    assert hi.sum() == pytest.approx(100) and lo.sum() == pytest.approx(100)
    assert t.names == ("hepguard_x",)
    assert t.to_dict()["variations"][0]["up_yield_ratio"] == pytest.approx(1.1)


def test_without_split_one_histosys_carries_everything() -> None:
    sig = _sample("sig", [10, 20, 30, 40], signal=True)
    up, down = np.array([12.0, 22, 33, 43]), np.array([9.0, 18, 27, 36])
    t = build_templates(EDGES, [sig], [Variation("v", {"sig": up}, {"sig": down})], normsys=False)
    (mod,) = t.modifiers
    assert mod.normsys is None
    np.testing.assert_array_equal(mod.histosys[0], up)
    np.testing.assert_array_equal(mod.histosys[1], down)


def test_migration_only_has_no_normsys_and_one_bin_no_histosys() -> None:
    sig = _sample("sig", [10, 20, 30, 40], signal=True)
    up, down = np.array([11.0, 19, 30, 40]), np.array([9.0, 21, 30, 40])
    (mod,) = build_templates(EDGES, [sig], [Variation("v", {"sig": up}, {"sig": down})]).modifiers
    assert mod.normsys is None  # events only migrate between bins: a 1/1 normsys is a no-op
    np.testing.assert_allclose(mod.histosys[0], up)
    one = _sample("sig", [100.0], signal=True)
    var = Variation("v", {"sig": np.array([105.0])}, {"sig": np.array([97.0])})
    (mod,) = build_templates(np.array([0.0, 1.0]), [one], [var], normsys=False).modifiers
    assert mod.histosys is None and mod.normsys == pytest.approx((1.05, 0.97))


def test_one_sided_variation_is_symmetrised_and_negative_bins_clipped() -> None:
    sig = _sample("sig", [10, 20, 30, 40], signal=True)
    up = np.array([25.0, 22, 31, 40])  # bin 0 up by 15: 2*10 - 25 = -5 < 0
    t = build_templates(EDGES, [sig], [Variation("v", {"sig": up})], normsys=False)
    (mod,) = t.modifiers
    np.testing.assert_allclose(mod.histosys[1], [0.0, 18, 29, 40])
    assert any("1 varied bin(s) below 0 clipped to 0" in w for w in t.warnings)
    _, down_out = t.varied["v"]["sig"]
    np.testing.assert_allclose(down_out, [0.0, 18, 29, 40])


def test_lint_warnings_name_the_bins() -> None:
    sig = _sample("sig", [100, 100, 100, 100], signal=True)
    up = np.array([120.0, 90, 100, 100])  # bin 0 up by 20 (> stat 10), bin 1 down
    down = np.array([115.0, 110, 100, 100])  # bin 0 up again: same way in bin 0 only
    t = build_templates(EDGES, [sig], [Variation("v", {"sig": up}, {"sig": down})])
    (same,) = [w for w in t.warnings if "same way" in w]
    assert "bin 0 [0, 0.25)" in same and "bin 1" not in same
    big = np.array([130.0, 130, 100, 100])  # +15 % normalisation
    t = build_templates(EDGES, [sig], [Variation("v", {"sig": big}, {"sig": big})])
    assert any("up and down are identical" in w for w in t.warnings)
    assert any("up changes the normalisation by +15.0%" in w for w in t.warnings)
    small = np.array([104.0, 100, 100, 96])  # same-way below the stat error: no warning
    t = build_templates(EDGES, [sig], [Variation("v", {"sig": small}, {"sig": small[::-1].copy()})])
    assert not any("same way" in w for w in t.warnings)


def test_negative_nominal_is_clipped_and_empty_bins_are_refused() -> None:
    sig = _sample("sig", [10, -2, 30, 40], signal=True)
    bkg = _sample("bkg", [5, 3, 0, 1])
    t = build_templates(EDGES, [sig, bkg], [])
    assert t.samples[0].nominal.tolist() == [10, 0, 30, 40]
    assert any("1 bin(s) with a negative nominal yield" in w for w in t.warnings)
    empty = _sample("bkg", [5, 0, 0, 0])
    sig0 = _sample("sig", [10, 0, 30, 0], signal=True)
    with pytest.raises(PyhfError, match=r"bins 1 \[0.25, 0.5\), 3 \[0.75, 1\) without any"):
        build_templates(EDGES, [sig0, empty], [])


def test_variation_that_changes_nothing_is_reported() -> None:
    sig = _sample("sig", [10, 20, 30, 40], signal=True)
    same = {"sig": sig.nominal.copy()}
    t = build_templates(EDGES, [sig], [Variation("v", same, same)])
    assert t.modifiers == ()
    assert "v: changes no sample's template; no modifier written" in t.warnings


def test_normsys_factor_is_floored_above_zero() -> None:
    sig = _sample("sig", [10, 20, 30, 40], signal=True)
    bkg = _sample("bkg", [5, 5, 5, 5])
    gone = {"bkg": np.zeros(4)}
    t = build_templates(EDGES, [sig, bkg], [Variation("v", {"bkg": np.full(4, 6.0)}, gone)])
    (mod,) = t.modifiers
    assert mod.normsys == pytest.approx((1.2, 1e-3))
    assert any("down yield ratio 0 is floored at 0.001" in w for w in t.warnings)
