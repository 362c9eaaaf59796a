"""The hidden-systematics attack checked against independent references: the bundled tagger's
perturbed sample re-tested with scipy, its envelope re-derived by hand from the YAML, its
decisions re-computed with the TorchScript model itself; and a linear toy whose reachable set is
known in closed form."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from pytest_hepguard.audit import Auditor
from pytest_hepguard.events import Events, load_events
from pytest_hepguard.models import load_model, wrap_model
from pytest_hepguard.uncertainties import parse_uncertainties

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples"
SENTINEL = -999.0

# The bundled example's features and decision (examples/unc.yaml), written out here so that the
# envelope below is derived from text this test owns.
FEATURES = """\
version: 1
features:
  jet_pt:          {relative: 0.02, min: 0}
  jet_eta:         {absolute: 0.005}
  jet_phi:         {frozen: true}
  n_tracks:        {absolute: 1, integer: true, min: 2}
  n_sv:            {frozen: true}
  sv_mass:         {relative: 0.05, min: 0, sentinel: -999}
  sv_flight_sig:   {relative: 0.05, min: 0, sentinel: -999}
  sv_energy_ratio: {absolute: 0.02, min: 0, max: 1, sentinel: -999}
  trk_ip2d_sig_1:  {absolute: 0.3, sentinel: -999}
  trk_ip2d_sig_2:  {absolute: 0.3, sentinel: -999}
  trk_ip3d_sig_1:  {absolute: 0.3, sentinel: -999}
decision:
  classes: [b, c, light]
  discriminant: {numerator: [b], denominator: [b, light]}
  signal: [b]
  background: [light]
  working_point: {efficiency: 0.70}
data:
  path: jets.root
  tree: Events
  label: label
"""

GROUPS = """\
groups:
  JES: {relative: {jet_pt: 0.02}}
  track_resolution:
    absolute: {trk_ip2d_sig_1: 0.3, trk_ip2d_sig_2: 0.3, trk_ip3d_sig_1: 0.3}
    per_event: true
  sv_calibration: {relative: {sv_mass: 0.05, sv_flight_sig: 0.05}}
correlations:
  - [JES, sv_calibration, 0.3]
"""

# The envelope of each feature, by hand from FEATURES: (kind, sigma, min, max, integer);
# None: frozen.
ENVELOPE = {
    "jet_pt": ("relative", 0.02, 0.0, None, False),
    "jet_eta": ("absolute", 0.005, None, None, False),
    "jet_phi": None,
    "n_tracks": ("absolute", 1.0, 2.0, None, True),
    "n_sv": None,
    "sv_mass": ("relative", 0.05, 0.0, None, False),
    "sv_flight_sig": ("relative", 0.05, 0.0, None, False),
    "sv_energy_ratio": ("absolute", 0.02, 0.0, 1.0, False),
    "trk_ip2d_sig_1": ("absolute", 0.3, None, None, False),
    "trk_ip2d_sig_2": ("absolute", 0.3, None, None, False),
    "trk_ip3d_sig_1": ("absolute", 0.3, None, None, False),
}
MOVABLE = [name for name, env in ENVELOPE.items() if env is not None]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _example(constraints: str, features: str = FEATURES) -> tuple[Auditor, dict, np.ndarray]:
    """An auditor of the bundled tagger with the groups above and ``constraints`` (a YAML
    mapping); the perturbed rows and probabilities of each check land in the returned dict."""
    text = features + GROUPS + f"constraints: {constraints}\n"
    unc = parse_uncertainties(text, EXAMPLE / "unc.yaml")
    events = load_events(unc.data.path, unc.feature_names, tree="Events", label="label")
    model = load_model(EXAMPLE / "tagger.pt", torch.device("cpu"))
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def keep(name: str, rows: np.ndarray, nominal: np.ndarray, perturbed: np.ndarray) -> None:
        seen[name] = (rows.copy(), perturbed.copy())

    auditor = Auditor(model, events, unc, seed=11, on_perturbed=keep)
    return auditor, seen, events.features.astype(np.float64)


@pytest.fixture(scope="module")
def example():
    return _example("{ks_pvalue_min: 0.05, corr_max: 0.01}")


@pytest.fixture(scope="module")
def tagger():
    """The TorchScript tagger, loaded with torch alone (no hepguard wrapper)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: still supported
        module = torch.jit.load(str(EXAMPLE / "tagger.pt"), map_location="cpu")
    module.eval()
    return module


def _bvl(module, rows: np.ndarray) -> np.ndarray:
    """BvL = P(b) / (P(b) + P(light)) of the tagger at ``rows``, in float64."""
    with torch.no_grad():
        p = module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).double()
    assert torch.allclose(p.sum(1), torch.ones(len(p), dtype=torch.float64), atol=1e-5)
    p = p.numpy()
    return p[:, 0] / (p[:, 0] + p[:, 2])


def _ks_pvalues(nominal: np.ndarray, rows: np.ndarray, names) -> dict[str, tuple[float, float]]:
    """scipy's two-sample KS (statistic, p-value) per movable feature, sentinels excluded."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # exact -> asymptotic switch
        for name in MOVABLE:
            j = names.index(name)
            real = nominal[:, j] != SENTINEL
            res = scipy.stats.ks_2samp(nominal[real, j], rows[real, j].astype(np.float64))
            out[name] = (float(res.statistic), float(res.pvalue))
    return out


def _max_delta_rho(nominal: np.ndarray, rows: np.ndarray, names) -> float:
    """max |rho' - rho| over pairs of movable features, each pair on the events where both
    entries are real (not the sentinel)."""
    worst = 0.0
    idx = [names.index(n) for n in MOVABLE]
    for a, i in enumerate(idx):
        for j in idx[a + 1 :]:
            both = (nominal[:, i] != SENTINEL) & (nominal[:, j] != SENTINEL)
            r0 = np.corrcoef(nominal[both, i], nominal[both, j])[0, 1]
            r1 = np.corrcoef(rows[both, i].astype(np.float64), rows[both, j].astype(np.float64))[
                0, 1
            ]
            worst = max(worst, abs(r1 - r0))
    return worst


def _assert_inside_envelope(nominal: np.ndarray, rows: np.ndarray, names, epsilon: float) -> None:
    """Every entry of ``rows`` within the hand-derived envelope of size ``epsilon`` of
    ``nominal``: sentinels and frozen features untouched, integers in whole steps."""
    rows = rows.astype(np.float64)
    for j, name in enumerate(names):
        x0, x = nominal[:, j], rows[:, j]
        env = ENVELOPE[name]
        if env is None:
            np.testing.assert_array_equal(x, x0, err_msg=f"frozen {name} moved")
            continue
        kind, sigma, lower, upper, integer = env
        sentinel = x0 == SENTINEL
        np.testing.assert_array_equal(x[sentinel], x0[sentinel], err_msg=f"{name} sentinel moved")
        s = sigma * np.abs(x0) if kind == "relative" else np.full_like(x0, sigma)
        reach_up, reach_down = epsilon * s, epsilon * s
        if upper is not None:
            reach_up = np.minimum(reach_up, np.maximum(upper - x0, 0.0))
        if lower is not None:
            reach_down = np.minimum(reach_down, np.maximum(x0 - lower, 0.0))
        if integer:
            reach_up, reach_down = np.floor(reach_up + 1e-9), np.floor(reach_down + 1e-9)
            step = x - x0
            assert np.all(step == np.round(step)), f"{name}: not whole steps"
        slack = 2 * np.finfo(np.float32).eps * (np.abs(x0) + reach_up + reach_down)
        real = ~sentinel
        low_ok = x[real] >= x0[real] - reach_down[real] - slack[real]
        high_ok = x[real] <= x0[real] + reach_up[real] + slack[real]
        assert low_ok.all() and high_ok.all(), (
            f"{name}: {int((~low_ok).sum())} entries below, {int((~high_ok).sum())} above the "
            "envelope"
        )


# ---------------------------------------------------------------------------------------------
# 1. the bundled example


@pytest.fixture(scope="module")
def hidden_example(example):
    auditor, seen, nominal = example
    result = auditor.run("hidden", name="hidden_fool", epsilon=1.0, steps=20)
    rows, _ = seen["hidden_fool"]
    return auditor, result, rows, nominal


def test_every_moved_feature_passes_scipy_ks(hidden_example) -> None:
    auditor, result, rows, nominal = hidden_example
    names = list(auditor.layout.names)
    assert result.fooling_rate > 0 and not result.failures
    for name, (_, pvalue) in _ks_pvalues(nominal, rows, names).items():
        assert pvalue >= 0.05, f"{name}: KS p-value {pvalue:.3g}"


def test_correlations_move_less_than_corr_max(hidden_example) -> None:
    auditor, _, rows, nominal = hidden_example
    assert _max_delta_rho(nominal, rows, list(auditor.layout.names)) <= 0.01


def test_every_entry_inside_the_hand_derived_envelope(hidden_example) -> None:
    auditor, result, rows, nominal = hidden_example
    names = list(auditor.layout.names)
    assert names == list(ENVELOPE)
    _assert_inside_envelope(nominal, rows, names, 1.0)
    assert result.envelope_violations == 0
    assert np.any(rows != nominal.astype(np.float32)), "nothing moved"


def test_fooling_rate_from_the_torchscript_model(hidden_example, tagger) -> None:
    auditor, result, rows, nominal = hidden_example
    cut = auditor.decision.cut
    d0, d1 = _bvl(tagger, nominal), _bvl(tagger, rows)
    flipped = (d0 > cut) != (d1 > cut)
    # float32 vs float64 ratio: only events within 1e-6 of the cut may be called either way
    unsure = int(np.sum((np.abs(d0 - cut) < 1e-6) | (np.abs(d1 - cut) < 1e-6)))
    assert abs(flipped.sum() - result.fooling_rate * len(rows)) <= unsure
    n = len(rows)
    assert result.fooling_rate_err == pytest.approx(
        np.sqrt(result.fooling_rate * (1 - result.fooling_rate) / n), rel=1e-9
    )


def test_hidden_beats_random_noise_and_the_systematic_variations(hidden_example) -> None:
    auditor, result, _, _ = hidden_example
    noise = auditor.run("random", epsilon=1.0)
    systematic = auditor.run("systematic", epsilon=1.0, draws=2)  # draws: not in the rate
    assert result.fooling_rate >= 3 * noise.fooling_rate
    assert result.fooling_rate >= 2 * systematic.fooling_rate
    assert result.random_fooling_rate == noise.fooling_rate


def test_certificate_matches_scipy(hidden_example) -> None:
    auditor, result, rows, nominal = hidden_example
    cert = result.details["certificate"]
    assert cert["passed"] and cert["violations"] == []
    mine = _ks_pvalues(nominal, rows, list(auditor.layout.names))
    theirs = {f["name"]: f for f in cert["features"]}
    assert set(theirs) == set(mine)
    for name, (ks, pvalue) in mine.items():
        assert theirs[name]["ks"] == pytest.approx(ks, abs=1e-12), name
        assert theirs[name]["ks_pvalue"] == pytest.approx(pvalue, rel=1e-6), name
        real = nominal[:, list(auditor.layout.names).index(name)] != SENTINEL
        assert theirs[name]["n"] == int(real.sum())
    assert cert["max_abs_delta_rho"] == pytest.approx(
        _max_delta_rho(nominal, rows, list(auditor.layout.names)), abs=1e-9
    )


# ---------------------------------------------------------------------------------------------
# 2. constraints no perturbation can meet


@pytest.fixture(scope="module")
def impossible():
    features = FEATURES.replace(
        "n_tracks:        {absolute: 1, integer: true, min: 2}", "n_tracks:        {frozen: true}"
    )
    assert features != FEATURES
    return _example("{ks_max: 0}", features)


def test_unsatisfiable_constraints_report_the_nominal_sample(impossible) -> None:
    auditor, seen, nominal = impossible
    result = auditor.run("hidden", name="impossible", epsilon=1.0, steps=5)
    assert any("could not satisfy the constraints" in f for f in result.failures)
    assert result.fooling_rate == 0.0
    assert result.details["kept"] == 0
    rows, _ = seen["impossible"]
    np.testing.assert_array_equal(rows, nominal.astype(np.float32))
    gated = auditor.run(
        "hidden", name="impossible_gate", limits={"max_fooling_rate": 0.5}, epsilon=1.0, steps=5
    )
    assert gated.fooling_rate == 0.0
    assert not gated.passed


# ---------------------------------------------------------------------------------------------
# 3. direction up / down


@pytest.mark.parametrize("direction", ["up", "down"])
def test_direction_moves_the_discriminant_and_stays_certified(example, tagger, direction) -> None:
    auditor, seen, nominal = example
    name = f"hidden_{direction}"
    result = auditor.run("hidden", name=name, epsilon=1.0, steps=20, direction=direction)
    rows, probs = seen[name]
    names = list(auditor.layout.names)
    assert not result.failures
    shift = np.mean(_bvl(tagger, rows)) - np.mean(_bvl(tagger, nominal))
    captured = probs[:, 0] / (probs[:, 0] + probs[:, 2]) - _bvl(tagger, nominal)
    if direction == "up":
        assert shift > 0 and np.mean(captured) > 0
    else:
        assert shift < 0 and np.mean(captured) < 0
    assert np.mean(captured) == pytest.approx(shift, abs=1e-7)
    assert result.mean_shift == pytest.approx(shift, abs=1e-7)
    for feature, (_, pvalue) in _ks_pvalues(nominal, rows, names).items():
        assert pvalue >= 0.05, f"{direction}: {feature} KS p-value {pvalue:.3g}"
    assert _max_delta_rho(nominal, rows, names) <= 0.01
    assert result.details["certificate"]["passed"]
    _assert_inside_envelope(nominal, rows, names, 1.0)


def test_up_template_never_moves_down(example, tagger) -> None:
    """Whatever the steps, an ``up`` template moves the discriminant up or, where the
    constraints leave no such move, returns the nominal sample and says so."""
    auditor, seen, nominal = example
    for steps in (5, 10, 20):
        name = f"hidden_up{steps}"
        result = auditor.run("hidden", name=name, epsilon=1.0, steps=steps, direction="up")
        rows, _ = seen[name]
        shift = np.mean(_bvl(tagger, rows)) - np.mean(_bvl(tagger, nominal))
        if result.details["kept"]:
            assert shift > 0, steps
        else:
            assert shift == 0 and any("nominal sample" in w for w in result.warnings), steps


# ---------------------------------------------------------------------------------------------
# 4. a linear toy with a known reachable set

N_TOY = 4000
THRESHOLD = 0.3
SIGMA = 0.2
TOY = f"""\
version: 1
features:
  x0: {{absolute: {SIGMA}}}
  x1: {{absolute: {SIGMA}}}
decision:
  discriminant: 1
  working_point: {{cut: 0.5}}
  output: logits
constraints: {{ks_pvalue_min: 0.001, corr_max: 0.05, jsd_max: null, corr_frob_max: null}}
"""


@pytest.fixture(scope="module")
def toy():
    """x ~ N(0, 1)^2; logits (0, 4 (x0 - THRESHOLD)): P(1) > 0.5 exactly when x0 > THRESHOLD."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N_TOY, 2)).astype(np.float32)
    lin = torch.nn.Linear(2, 2)
    lin.weight.data = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    lin.bias.data = torch.tensor([0.0, -4.0 * THRESHOLD])
    events = Events(x, ("x0", "x1"), None, None, Path("toy.npz"))
    seen: dict[str, np.ndarray] = {}
    auditor = Auditor(
        wrap_model(lin, torch.device("cpu"), "toy"),
        events,
        parse_uncertainties(TOY),
        seed=2,
        on_perturbed=lambda name, rows, *_: seen.__setitem__(name, rows.copy()),
    )
    result = auditor.run("hidden", epsilon=1.0, steps=20)
    return result, seen["hidden"], x.astype(np.float64)


def _reachable(x: np.ndarray) -> np.ndarray:
    """Events whose decision a move of at most one sigma of x0 can flip (strict '>' cut)."""
    d = x[:, 0] - THRESHOLD
    return (d > -SIGMA) & (d <= SIGMA)


def test_toy_flips_only_reachable_events_and_finds_all_candidates(toy) -> None:
    result, rows, x = toy
    reach = _reachable(x)
    flipped = (rows[:, 0] > THRESHOLD) != (x[:, 0] > THRESHOLD)
    assert result.fooling_rate == pytest.approx(flipped.mean(), abs=1 / N_TOY)
    assert not np.any(flipped & ~reach), "flipped an event out of reach"
    # the margin ascent finds a flip for every reachable event, and for no other
    d = np.abs(x[:, 0] - THRESHOLD)
    assert np.sum(d < SIGMA - 1e-4) <= result.details["candidates"] <= np.sum(d <= SIGMA + 1e-4)
    assert result.details["certificate"]["passed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert scipy.stats.ks_2samp(x[:, 0], rows[:, 0]).pvalue >= 0.001
    assert abs(np.corrcoef(rows.T)[0, 1] - np.corrcoef(x.T)[0, 1]) <= 0.05
    assert np.all(np.abs(rows[:, 0] - x[:, 0]) <= SIGMA * (1 + 1e-6))


def test_toy_optimum_is_the_whole_reachable_set() -> None:
    """The bound the next test holds the attack to is attainable: swapping the two one-sigma
    strips on either side of the cut (x0 -> x0 +- sigma) flips every reachable event, stays in
    the envelope and passes the constraints (scipy)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N_TOY, 2)).astype(np.float32).astype(np.float64)
    d = x[:, 0] - THRESHOLD
    swapped = x[:, 0] + np.where((d > -SIGMA) & (d <= 0), SIGMA, 0.0)
    swapped -= np.where((d > 0) & (d <= SIGMA), SIGMA, 0.0)
    flipped = (swapped > THRESHOLD) != (x[:, 0] > THRESHOLD)
    assert flipped.mean() == pytest.approx(_reachable(x).mean(), abs=2 / N_TOY)
    assert scipy.stats.ks_2samp(x[:, 0], swapped).pvalue >= 0.001
    delta = np.corrcoef(swapped, x[:, 1])[0, 1] - np.corrcoef(x[:, 0], x[:, 1])[0, 1]
    assert abs(delta) <= 0.05


def test_toy_fooling_rate_is_the_reachable_fraction(toy) -> None:
    result, _, x = toy
    reach = _reachable(x).mean()
    assert abs(result.fooling_rate - reach) <= 3 * np.sqrt(reach * (1 - reach) / N_TOY)


def test_toy_leaves_the_ignored_feature_alone(toy) -> None:
    _, rows, x = toy
    untouched = np.array_equal(rows[:, 1], x[:, 1].astype(np.float32))
    same_marginal = np.array_equal(np.sort(rows[:, 1]), np.sort(x[:, 1].astype(np.float32)))
    assert untouched or same_marginal
