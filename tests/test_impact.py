"""Tests of :mod:`pytest_hepguard.impact` against independent references: closed-form results of
one-bin counting experiments, and fits written here directly with pyhf and MINUIT.

The analytic one-bin tests give the POI bounds [-10, 10]: MINUIT reports the error of a bounded
parameter through its internal sine transform, which with pyhf's default [0, 10] around mu = 1
shrinks it by 2 % (see :func:`test_default_poi_bounds_follow_minuits_limit_transform`).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from pytest_hepguard.exceptions import PyhfError
from pytest_hepguard.impact import Impact, ParameterImpact, fit_impact, remove_modifiers

pyhf = pytest.importorskip("pyhf")

S, B = 10.0, 100.0
BKG_SYST = "hepguard_systematic_bkg"
JES, HIDDEN = "hepguard_systematic_JES", "hepguard_hidden"


def _mu(bounds: tuple[float, float] | None = None) -> dict:
    """The measurement of POI ``mu``, with ``bounds`` if given (pyhf's [0, 10] otherwise)."""
    parameters = [] if bounds is None else [{"name": "mu", "bounds": [list(bounds)]}]
    return {"name": "m", "config": {"poi": "mu", "parameters": parameters}}


def _one_bin(normsys: bool, bounds: tuple[float, float] | None = (-10.0, 10.0)) -> dict:
    """One bin, s = 10 (times mu) on b = 100, Asimov observation s + b; with ``normsys`` a
    +-10 % normsys on the background."""
    bkg_mods = (
        [{"name": BKG_SYST, "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}] if normsys else []
    )
    return {
        "channels": [
            {
                "name": "c",
                "samples": [
                    {
                        "name": "signal",
                        "data": [S],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": [B], "modifiers": bkg_mods},
                ],
            }
        ],
        "observations": [{"name": "c", "data": [S + B]}],
        "measurements": [_mu(bounds)],
        "version": "1.0.0",
    }


def _three_bins(hepguard: bool) -> dict:
    """Three bins: signal (times mu) with a histosys, background with a histosys and a staterror;
    without ``hepguard`` the two histosys are left out (written out here, not removed)."""
    signal_mods: list[dict] = [{"name": "mu", "type": "normfactor", "data": None}]
    bkg_mods: list[dict] = [{"name": "staterror_c", "type": "staterror", "data": [3.0, 2.5, 2.0]}]
    if hepguard:
        signal_mods.append(
            {
                "name": JES,
                "type": "histosys",
                "data": {"hi_data": [6.0, 11.0, 8.5], "lo_data": [4.2, 9.0, 7.3]},
            }
        )
        bkg_mods.insert(
            0,
            {
                "name": HIDDEN,
                "type": "histosys",
                "data": {"hi_data": [55.0, 42.0, 31.0], "lo_data": [46.0, 38.0, 29.5]},
            },
        )
    return {
        "channels": [
            {
                "name": "c",
                "samples": [
                    {"name": "signal", "data": [5.0, 10.0, 8.0], "modifiers": signal_mods},
                    {"name": "background", "data": [50.0, 40.0, 30.0], "modifiers": bkg_mods},
                ],
            }
        ],
        "observations": [{"name": "c", "data": [58.0, 52.0, 36.0]}],
        "measurements": [_mu()],
        "version": "1.0.0",
    }


@pytest.fixture
def minuit() -> Iterator[None]:
    """pyhf's numpy backend with MINUIT for direct reference fits; the backend is restored."""
    before = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0), precision="64b")
    yield
    pyhf.set_backend(*before)


def _direct(spec: dict) -> tuple[object, list[float], np.ndarray]:
    """Model, data and a free fit [n_pars, 2] (value, Hesse error) of workspace ``spec``."""
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = workspace.data(model)
    return model, data, np.asarray(pyhf.infer.mle.fit(data, model, return_uncertainties=True))


# ---------------------------------------------------------------------------------------------
# Analytic one-bin counting experiment


def test_one_bin_without_systematics_gives_poisson_error() -> None:
    impact = fit_impact(_one_bin(normsys=False), [])
    expected = math.sqrt(S + B) / S  # 1.0488
    assert impact.poi == "mu"
    assert impact.mu_hat == pytest.approx(1.0, abs=1e-4)
    assert impact.mu_err == pytest.approx(expected, rel=0.01)
    assert impact.mu_err_without == impact.mu_err
    assert impact.mu_hat_without == impact.mu_hat
    assert impact.increase == 0.0
    assert impact.parameters == ()


def test_one_bin_normsys_adds_in_quadrature() -> None:
    impact = fit_impact(_one_bin(normsys=True), [BKG_SYST])
    err = math.sqrt(S + B + (0.1 * B) ** 2) / S  # sqrt(210) / 10 = 1.449
    err_without = math.sqrt(S + B) / S
    assert impact.mu_err == pytest.approx(err, rel=0.02)
    assert impact.mu_err_without == pytest.approx(err_without, rel=0.01)
    assert impact.increase == pytest.approx(err / err_without - 1.0, rel=0.02)  # 0.382
    assert impact.mu_hat == pytest.approx(1.0, abs=1e-3)
    assert impact.mu_hat_without == pytest.approx(1.0, abs=1e-3)

    (par,) = impact.parameters
    assert par.name == BKG_SYST
    assert par.pull == pytest.approx(0.0, abs=1e-3)
    # One bin: for any theta, mu moves the expectation back onto the data, so the profile
    # likelihood of theta is its unit Gaussian constraint alone and the post-fit sigma is 1.
    # MINUIT's Hesse on theta's [-5, 5] bounds shrinks it by sin(0.2) / 0.2 = 0.9934.
    assert par.constraint == pytest.approx(1.0, rel=0.01)
    # With theta fixed, mu solves mu s + b f(theta) = s + b exactly, f the normsys factor
    # (1.1**theta above 0, 0.9**-theta below), so the impacts are -(b / s) (f(theta) - 1).
    c = par.constraint
    assert par.impact_up == pytest.approx(-(B / S) * (1.1**c - 1.0), abs=1e-3)  # -0.993
    assert par.impact_down == pytest.approx((B / S) * (1.0 - 0.9**c), abs=1e-3)  # +0.993


def test_one_bin_constraint_matches_direct_hesse(minuit: None) -> None:
    model, _, fitted = _direct(_one_bin(normsys=True))
    expected = fitted[model.config.par_slice(BKG_SYST), 1].item()
    par = fit_impact(_one_bin(normsys=True), [BKG_SYST]).parameters[0]
    assert par.constraint == pytest.approx(expected, rel=1e-6)


def test_default_poi_bounds_follow_minuits_limit_transform() -> None:
    # MINUIT maps mu in [0, 10] to u with mu = 5 (1 + sin u) and reports the error of mu as
    # (mu(u + du) - mu(u - du)) / 2 = 5 cos(u) sin(du), du = sigma / (5 cos u): at mu = 1,
    # cos u = 0.6, so the Poisson error 1.0488 is reported as 3 sin(1.0488 / 3) = 1.0276.
    impact = fit_impact(_one_bin(normsys=False, bounds=None), [])
    sigma = math.sqrt(S + B) / S
    assert impact.mu_err == pytest.approx(3.0 * math.sin(sigma / 3.0), rel=1e-4)


def test_impact_fit_widens_bounds_of_a_strongly_pulled_parameter() -> None:
    # The control region (b = 10000, +-200 per sigma, 11175 observed) pulls theta to ~4.6 with
    # a constraint ~0.45, so theta_hat + constraint lies beyond pyhf's bound 5. The signal
    # region (s = 20 times mu on b = 100 +- 10 theta, 170 observed) always fits exactly, so
    # with theta fixed, mu = (170 - 100 - 10 theta) / 20.
    spec = {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "signal",
                        "data": [20.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [100.0],
                        "modifiers": [
                            {
                                "name": HIDDEN,
                                "type": "histosys",
                                "data": {"hi_data": [110.0], "lo_data": [90.0]},
                            }
                        ],
                    },
                ],
            },
            {
                "name": "cr",
                "samples": [
                    {
                        "name": "background",
                        "data": [10000.0],
                        "modifiers": [
                            {
                                "name": HIDDEN,
                                "type": "histosys",
                                "data": {"hi_data": [10200.0], "lo_data": [9800.0]},
                            }
                        ],
                    }
                ],
            },
        ],
        "observations": [{"name": "sr", "data": [170.0]}, {"name": "cr", "data": [11175.0]}],
        "measurements": [_mu()],
        "version": "1.0.0",
    }
    impact = fit_impact(spec, [HIDDEN])
    (par,) = impact.parameters
    assert par.pull + par.constraint > 5.0
    assert impact.mu_hat == pytest.approx((70.0 - 10.0 * par.pull) / 20.0, abs=3e-3)
    shifted = {par.pull + par.constraint: par.impact_up, par.pull - par.constraint: par.impact_down}
    for theta, shift in shifted.items():
        assert impact.mu_hat + shift == pytest.approx((70.0 - 10.0 * theta) / 20.0, abs=3e-3)
    assert impact.mu_hat_without == pytest.approx(70.0 / 20.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Agreement with direct pyhf fits


def test_three_bins_match_direct_fits(minuit: None) -> None:
    model, data, fitted = _direct(_three_bins(hepguard=True))
    model_without, _, fitted_without = _direct(_three_bins(hepguard=False))
    poi = model.config.poi_index
    jes = model.config.par_slice(JES).start

    # The direct impact fit of JES at theta_hat + sigma, with pyhf's suggested inits and bounds.
    theta = fitted[jes, 0] + fitted[jes, 1]
    low, high = model.config.suggested_bounds()[jes]
    assert low < theta < high
    init = model.config.suggested_init()
    init[jes] = theta
    fixed = model.config.suggested_fixed()
    fixed[jes] = True
    shifted = np.asarray(pyhf.infer.mle.fit(data, model, init_pars=init, fixed_params=fixed))

    impact = fit_impact(_three_bins(hepguard=True), [JES, HIDDEN])
    assert impact.mu_hat == pytest.approx(fitted[poi, 0], rel=1e-6)
    assert impact.mu_err == pytest.approx(fitted[poi, 1], rel=1e-6)
    poi_without = model_without.config.poi_index
    assert impact.mu_hat_without == pytest.approx(fitted_without[poi_without, 0], rel=1e-6)
    assert impact.mu_err_without == pytest.approx(fitted_without[poi_without, 1], rel=1e-6)
    assert impact.increase == pytest.approx(
        fitted[poi, 1] / fitted_without[poi_without, 1] - 1.0, rel=1e-6
    )
    assert [p.name for p in impact.parameters] == [JES, HIDDEN]
    for par in impact.parameters:
        index = model.config.par_slice(par.name).start
        assert par.pull == pytest.approx(fitted[index, 0], rel=1e-6, abs=1e-9)
        assert par.constraint == pytest.approx(fitted[index, 1], rel=1e-6)
    assert impact.parameters[0].impact_up == pytest.approx(
        shifted[poi] - fitted[poi, 0], rel=1e-6, abs=1e-9
    )
    assert impact.parameters[0].impact_up != 0.0


def test_simplemodels_workspace_and_json_ready_dict() -> None:
    model = pyhf.simplemodels.uncorrelated_background(
        signal=[12.0, 11.0], bkg=[50.0, 52.0], bkg_uncertainty=[3.0, 7.0]
    )
    spec = {
        **model.spec,
        "observations": [{"name": "singlechannel", "data": [51.0, 48.0]}],
        "measurements": [_mu()],
        "version": "1.0.0",
    }
    for sample in spec["channels"][0]["samples"]:
        if sample["name"] == "background":
            sample["modifiers"].append(
                {"name": JES, "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}}
            )
    impact = fit_impact(spec, [JES])
    assert impact.mu_err > impact.mu_err_without
    as_dict = json.loads(json.dumps(impact.to_dict()))
    assert set(as_dict) == {
        "poi",
        "mu_hat",
        "mu_err",
        "mu_hat_without",
        "mu_err_without",
        "increase",
        "parameters",
    }
    assert as_dict["increase"] == impact.mu_err / impact.mu_err_without - 1.0
    assert as_dict["parameters"] == [
        {
            "name": JES,
            "pull": impact.parameters[0].pull,
            "constraint": impact.parameters[0].constraint,
            "impact_up": impact.parameters[0].impact_up,
            "impact_down": impact.parameters[0].impact_down,
        }
    ]


def test_increase_is_relative() -> None:
    impact = Impact("mu", 1.0, 1.1, 1.0, 1.0, (ParameterImpact("x", 0.5, 0.9, -0.2, 0.3),))
    assert impact.increase == pytest.approx(0.1)
    assert impact.to_dict()["parameters"] == [
        {"name": "x", "pull": 0.5, "constraint": 0.9, "impact_up": -0.2, "impact_down": 0.3}
    ]


# ---------------------------------------------------------------------------------------------
# remove_modifiers


def test_remove_modifiers_removes_exactly_the_named_ones() -> None:
    spec = _three_bins(hepguard=True)
    spec["measurements"][0]["config"]["parameters"].append(
        {"name": HIDDEN, "inits": [0.5], "bounds": [[-3.0, 3.0]]}
    )
    before = copy.deepcopy(spec)
    out = remove_modifiers(spec, [JES, HIDDEN])
    assert spec == before
    expected = _three_bins(hepguard=False)
    assert out["channels"] == expected["channels"]
    assert out["measurements"] == expected["measurements"]
    assert out["observations"] == before["observations"]
    assert out["version"] == "1.0.0"
    out["channels"][0]["samples"][0]["data"][0] = -1.0
    assert spec == before  # a deep copy


def test_remove_modifiers_of_one_name_keeps_the_others() -> None:
    out = remove_modifiers(_three_bins(hepguard=True), HIDDEN)
    names = [[m["name"] for m in sample["modifiers"]] for sample in out["channels"][0]["samples"]]
    assert names == [["mu", JES], ["staterror_c"]]


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_modifier_is_named() -> None:
    with pytest.raises(PyhfError, match="hepguard_nowhere") as err:
        fit_impact(_one_bin(normsys=True), [BKG_SYST, "hepguard_nowhere"])
    assert BKG_SYST in str(err.value)  # the model's parameters are listed
    assert "mu" in str(err.value)


@pytest.mark.parametrize(
    ("name", "match"), [("mu", "parameter of interest"), ("staterror_c", "staterror")]
)
def test_poi_or_non_gaussian_modifier_is_refused(name: str, match: str) -> None:
    with pytest.raises(PyhfError, match=match):
        fit_impact(_three_bins(hepguard=True), [name])


def test_schema_failure_is_a_pyhf_error() -> None:
    spec = _one_bin(normsys=True)
    del spec["channels"][0]["samples"][1]["data"]
    with pytest.raises(PyhfError) as err:
        fit_impact(spec, [BKG_SYST])
    assert str(err.value).startswith("the workspace fails pyhf's schema:")
    assert "data" in str(err.value)
    assert isinstance(err.value.__cause__, pyhf.exceptions.InvalidSpecification)


@pytest.mark.parametrize(
    ("failing_call", "match"),
    [
        (0, "the fit with the hepguard modifiers failed: no convergence"),
        (1, "the fit without the hepguard modifiers failed: no convergence"),
        (2, f"the impact fit of '{BKG_SYST}' fixed at .* failed: no convergence"),
    ],
)
def test_failed_fit_names_the_fit(
    monkeypatch: pytest.MonkeyPatch, failing_call: int, match: str
) -> None:
    real_fit = pyhf.infer.mle.fit
    calls = []

    def fit(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) - 1 == failing_call:
            raise pyhf.exceptions.FailedMinimization(
                type("Result", (), {"message": "no convergence"})()
            )
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pyhf.infer.mle, "fit", fit)
    with pytest.raises(PyhfError, match=match):
        fit_impact(_one_bin(normsys=True), [BKG_SYST])


# ---------------------------------------------------------------------------------------------
# Global pyhf state and imports


def test_backend_is_restored() -> None:
    before = pyhf.get_backend()
    pyhf.set_backend("numpy", "scipy")
    try:
        tensorlib, optimizer = pyhf.get_backend()
        fit_impact(_one_bin(normsys=True), [BKG_SYST])
        assert pyhf.get_backend()[0] is tensorlib
        assert pyhf.get_backend()[1] is optimizer
        assert type(optimizer).__name__ == "scipy_optimizer"
        with pytest.raises(PyhfError):
            fit_impact(_one_bin(normsys=True), ["hepguard_nowhere"])
        assert pyhf.get_backend()[1] is optimizer
    finally:
        pyhf.set_backend(*before)


def test_import_does_not_import_pyhf() -> None:
    code = "import sys, pytest_hepguard.impact; print('pyhf' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"
