"""How much the hepguard nuisance parameters widen the uncertainty on the parameter of interest.

Given a complete pyhf workspace spec (schema 1.0.0) and the names of the hepguard modifiers in
it (``histosys`` and/or ``normsys`` modifiers; one name is one nuisance parameter however many
samples it acts on), :func:`fit_impact` runs maximum-likelihood fits with MINUIT of the
workspace with and without those modifiers, on the workspace's observations (and auxiliary
data), and reports the best fit and Hesse uncertainty of the parameter of interest (POI) both
ways, plus the pull, post-fit constraint and POI impact of each hepguard parameter.

Units: the POI is in its own units (a signal strength is dimensionless); nuisance parameters are
in prefit standard deviations (a ``histosys``/``normsys`` parameter has prior mean 0, width 1), so
a pull of 1 is one prefit sigma, and a constraint below 1 means the data constrain the parameter.

pyhf is imported inside the functions only, so importing this module stays cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pytest_hepguard.exceptions import PyhfError

#: Modifier types whose parameter is a scalar with a unit-Gaussian constraint around 0.
_NP_TYPES = ("histosys", "normsys")


@dataclass(frozen=True)
class ParameterImpact:
    """Fit results of one hepguard nuisance parameter theta (prefit: 0 +- 1).

    ``pull`` is ``(theta_hat - 0) / 1``; ``constraint`` is theta's post-fit Hesse uncertainty (in
    prefit sigmas); ``impact_up``/``impact_down`` are the POI's best fit with theta fixed at
    ``theta_hat + constraint``/``theta_hat - constraint`` minus its best fit with theta free (in
    POI units).
    """

    name: str
    pull: float
    constraint: float
    impact_up: float
    impact_down: float

    def to_dict(self) -> dict[str, float | str]:
        """The fields as plain Python values, keyed by field name."""
        return {k: v if isinstance(v, str) else float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Impact:
    """The POI fitted with (``mu_hat``, ``mu_err``) and without (``mu_hat_without``,
    ``mu_err_without``) the hepguard modifiers, and one :class:`ParameterImpact` per hepguard
    parameter, in the order they were asked for. Uncertainties are Hesse (symmetric) ones."""

    poi: str
    mu_hat: float
    mu_err: float
    mu_hat_without: float
    mu_err_without: float
    parameters: tuple[ParameterImpact, ...]

    @property
    def increase(self) -> float:
        """Relative growth of the POI's uncertainty due to the hepguard modifiers (0.1 = 10 %)."""
        return self.mu_err / self.mu_err_without - 1.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: plain floats, ``increase`` included, parameters as a list of dicts."""
        return {
            "poi": self.poi,
            "mu_hat": float(self.mu_hat),
            "mu_err": float(self.mu_err),
            "mu_hat_without": float(self.mu_hat_without),
            "mu_err_without": float(self.mu_err_without),
            "increase": float(self.increase),
            "parameters": [p.to_dict() for p in self.parameters],
        }


def remove_modifiers(spec: dict, names: Iterable[str]) -> dict:
    """Deep copy of the workspace ``spec`` without the modifiers named in ``names``.

    They are removed from every sample of every channel, and their parameter configs from every
    measurement. ``spec`` itself is left unchanged. A single string counts as one name.
    """
    drop = {names} if isinstance(names, str) else set(names)
    out = copy.deepcopy(spec)
    for channel in out.get("channels", []):
        for sample in channel.get("samples", []):
            if "modifiers" in sample:
                sample["modifiers"] = [m for m in sample["modifiers"] if m.get("name") not in drop]
    for measurement in out.get("measurements", []):
        config = measurement.get("config", {})
        if "parameters" in config:
            config["parameters"] = [p for p in config["parameters"] if p.get("name") not in drop]
    return out


def fit_impact(spec: dict, modifiers: Sequence[str]) -> Impact:
    """Fit the workspace ``spec`` with and without the hepguard ``modifiers`` (by name).

    The model is the one of the workspace's first measurement, fitted to the workspace's
    observations. Fits use the numpy backend (float64) and the MINUIT optimizer; pyhf's global
    backend and optimizer are restored afterwards, also on error. With ``modifiers`` empty, both
    fits are the same and ``parameters`` is empty.

    Raises:
        PyhfError: the workspace fails pyhf's schema or does not build a model; a name is not a
            parameter of the model, is the POI, or is not a ``histosys``/``normsys`` modifier;
            or a fit fails.
    """
    import pyhf

    names = list(modifiers)
    tensorlib, optimizer = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0), precision="64b")
    try:
        return _fit_impact(spec, names)
    finally:
        pyhf.set_backend(tensorlib, optimizer)


def _fit_impact(spec: dict, names: list[str]) -> Impact:
    """:func:`fit_impact` once the backend is set."""
    model, data = _build(spec, "")
    _check_names(spec, model, names)
    poi = model.config.poi_index
    fitted = _fit(data, model, "the fit with the hepguard modifiers", return_uncertainties=True)
    mu_hat, mu_err = float(fitted[poi, 0]), float(fitted[poi, 1])
    if names:
        model_without, data_without = _build(
            remove_modifiers(spec, names), " without the hepguard modifiers"
        )
        fitted_without = _fit(
            data_without,
            model_without,
            "the fit without the hepguard modifiers",
            return_uncertainties=True,
        )
        poi_without = model_without.config.poi_index
        mu_hat_without = float(fitted_without[poi_without, 0])
        mu_err_without = float(fitted_without[poi_without, 1])
    else:
        mu_hat_without, mu_err_without = mu_hat, mu_err
    parameters = []
    for name in names:
        index = model.config.par_slice(name).start
        theta_hat, sigma = float(fitted[index, 0]), float(fitted[index, 1])
        up, down = (
            float(_fixed_fit(data, model, name, index, theta)[poi]) - mu_hat
            for theta in (theta_hat + sigma, theta_hat - sigma)
        )
        parameters.append(ParameterImpact(name, theta_hat, sigma, up, down))
    return Impact(
        poi=model.config.poi_name,
        mu_hat=mu_hat,
        mu_err=mu_err,
        mu_hat_without=mu_hat_without,
        mu_err_without=mu_err_without,
        parameters=tuple(parameters),
    )


def _build(spec: dict, which: str) -> tuple[Any, list[float]]:
    """The model of the first measurement of workspace ``spec`` and its data (observations
    [n_bins] followed by auxiliary data); ``which`` qualifies "the workspace" in errors."""
    import pyhf

    from pytest_hepguard.pyhf_export import quiet_schema

    try:
        with quiet_schema():
            workspace = pyhf.Workspace(spec)
            model = workspace.model()
    except pyhf.exceptions.InvalidSpecification as err:
        raise PyhfError(f"the workspace fails pyhf's schema: {err}") from err
    except (pyhf.exceptions.InvalidModel, pyhf.exceptions.InvalidMeasurement) as err:
        raise PyhfError(f"the workspace{which} does not build a pyhf model: {err}") from err
    return model, workspace.data(model)


def _check_names(spec: dict, model: Any, names: list[str]) -> None:
    """Raise :class:`PyhfError` unless every name is a histosys/normsys parameter of ``model``
    other than its POI."""
    parameters = list(model.config.parameters)
    unknown = [name for name in names if name not in parameters]
    if unknown:
        raise PyhfError(
            f"hepguard modifier(s) {', '.join(map(repr, unknown))} are not parameters of the "
            f"workspace's model; its parameters are: {', '.join(parameters)}"
        )
    if model.config.poi_name in names:
        raise PyhfError(
            f"{model.config.poi_name!r} is the parameter of interest, not a hepguard modifier"
        )
    wanted = set(names)
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                if modifier["name"] in wanted and modifier["type"] not in _NP_TYPES:
                    raise PyhfError(
                        f"hepguard modifier {modifier['name']!r} is a {modifier['type']} on "
                        f"sample {sample['name']!r} of channel {channel['name']!r}; hepguard "
                        f"modifiers must be {' or '.join(_NP_TYPES)}"
                    )


def _fit(data: list[float], model: Any, what: str, **kwargs: Any) -> np.ndarray:
    """``pyhf.infer.mle.fit`` as a float64 array ([n_pars], or [n_pars, 2] of value and
    uncertainty with ``return_uncertainties=True``); a failed fit raises :class:`PyhfError`
    naming ``what``."""
    import pyhf

    try:
        result = pyhf.infer.mle.fit(data, model, **kwargs)
    except pyhf.exceptions.FailedMinimization as err:
        raise PyhfError(f"{what} failed: {err}") from err
    return np.asarray(result, dtype=np.float64)


def _fixed_fit(data: list[float], model: Any, name: str, index: int, theta: float) -> np.ndarray:
    """Best-fit parameters [n_pars] with parameter ``name`` (at ``index``) fixed at ``theta``;
    its bounds are widened to hold ``theta`` where needed, the others are pyhf's."""
    init = model.config.suggested_init()
    init[index] = theta
    fixed = model.config.suggested_fixed()
    fixed[index] = True
    bounds = [tuple(b) for b in model.config.suggested_bounds()]
    low, high = bounds[index]
    bounds[index] = (min(low, theta), max(high, theta))
    return _fit(
        data,
        model,
        f"the impact fit of {name!r} fixed at {theta:.6g}",
        init_pars=init,
        fixed_params=fixed,
        par_bounds=bounds,
    )
