"""Generate the bundled pytest-hepguard example: a jet sample and a flavour tagger trained on it.

Run from anywhere::

    python examples/make_example.py

It writes, next to this file:

``jets.root``
    TTree ``Events`` with 8000 *generated* (toy, not real data) jets, b : c : light = 1 : 1 : 2,
    with DeepCSV-like float32 inputs plus an int32 ``label`` (0 = b, 1 = c, 2 = light).
``tagger.pt``
    TorchScript MLP: raw physics inputs ``[batch, 11]`` float32 (the 11 feature columns in
    :data:`FEATURES` order) -> softmax probabilities ``[batch, 3]`` for (b, c, light).
``tagger.onnx``
    The same network exported to ONNX (opset 17, input ``features``, output ``probs``,
    dynamic batch axis), checked against torch with onnxruntime.

The toy physics
---------------
What separates heavy-flavour jets from light ones is the lifetime of the weakly decaying
hadron: a B hadron (c*tau ~ 0.45 mm, mass ~ 5.3 GeV) flies a few mm before decaying into ~5
charged tracks; a D hadron (c*tau ~ 0.1-0.3 mm, mass ~ 1.9 GeV) flies less and gives fewer,
less displaced tracks. Light jets have prompt tracks only, whose impact parameters are
resolution-dominated (plus non-Gaussian tails, V0 decays, material interactions). So:

* track impact-parameter significances: prompt tracks are ~N(0, 1) with a 10 % wider core
  (mis-measured tracks); tracks from the heavy-hadron decay get an additional positive
  (lifetime-signed) displacement with an exponential tail, larger for b than for c;
* secondary vertices: reconstructed in ~70 % of b jets, ~35 % of c jets, ~6 % of light jets
  (fakes / V0s); their mass is bounded by the hadron mass (b: up to ~5.3 GeV, c: ~1.9 GeV,
  light fakes: soft), their flight significance is larger for b than c, and b hadrons carry
  a harder fraction of the jet energy (hard fragmentation);
* the track multiplicity grows with flavour (b decays add tracks) and with jet pt;
* the flight significance grows mildly with pt (Lorentz boost); ``jet_pt``, ``jet_eta``,
  ``jet_phi`` are drawn from the same distributions for all flavours.

Missing values use the sentinel ``-999``: the three SV columns when ``n_sv == 0``,
``trk_ip2d_sig_1`` / ``trk_ip3d_sig_1`` when ``n_tracks < 1`` and ``trk_ip2d_sig_2`` when
``n_tracks < 2``.

Everything is deterministic: a fixed numpy ``Generator`` seed for the data, and fixed torch
seed, ``torch.use_deterministic_algorithms(True)`` and a single intra-op thread for training.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
import uproot
from torch import nn

HERE = Path(__file__).resolve().parent

SEED = 20240611
N_JETS = 8000
FRACTIONS = {0: 0.25, 1: 0.25, 2: 0.50}  # b, c, light
CLASS_NAMES = ("b", "c", "light")
SENTINEL = -999.0

FEATURES = (
    "jet_pt",
    "jet_eta",
    "jet_phi",
    "n_tracks",
    "n_sv",
    "sv_mass",
    "sv_flight_sig",
    "sv_energy_ratio",
    "trk_ip2d_sig_1",
    "trk_ip2d_sig_2",
    "trk_ip3d_sig_1",
)

# Per-flavour toy parameters, indexed by label (b, c, light).
NTRK_BASE = np.array([5.0, 4.2, 3.6])  # Poisson mean of the track multiplicity at pt = 20 GeV
NTRK_PT_SLOPE = 1.0  # + NTRK_PT_SLOPE * ln(pt / 20 GeV)
DISPLACED_FRAC = np.array([0.35, 0.25, 0.02])  # chance that a track comes from the decay
DISPLACED_SCALE = np.array([5.0, 3.0, 2.0])  # mean extra (positive) IP significance
SV_EFF = np.array([0.65, 0.35, 0.07])  # chance of >= 1 reconstructed secondary vertex
SV_MULT = np.array(  # P(n_sv = 1, 2, 3 | n_sv >= 1)
    [[0.60, 0.30, 0.10], [0.80, 0.17, 0.03], [0.90, 0.09, 0.01]]
)
SV_MASS_GAMMA = np.array([[3.0, 0.65], [2.5, 0.40], [1.6, 0.35]])  # (shape, scale) in GeV
SV_MASS_MAX = np.array([5.5, 2.5, 2.5])  # kinematic limit (+ resolution), GeV
SV_FLIGHT_LOGNORMAL = np.array([[2.3, 0.7], [1.7, 0.7], [1.2, 0.6]])  # (mu, sigma) of ln(sig-3)
SV_ERATIO_BETA = np.array([[4.0, 3.0], [3.0, 3.5], [1.6, 4.0]])  # Beta(a, b)


# ----------------------------------------------------------------------------- the sample


def _truncated_pareto(rng: np.random.Generator, n: int, lo: float, hi: float, alpha: float):
    """Inverse-CDF sample of a power law ``dN/dpt ~ pt^-(alpha+1)`` on ``[lo, hi]``."""
    u = rng.random(n)
    tail = 1.0 - (lo / hi) ** alpha
    return lo * (1.0 - u * tail) ** (-1.0 / alpha)


def _bounded(rng: np.random.Generator, draw, upper: np.ndarray) -> np.ndarray:
    """``draw(k)`` values, redrawn until each is below its ``upper`` bound (no edge spikes)."""
    out = draw(len(upper))
    bad = out >= upper
    while bad.any():
        out[bad] = draw(int(bad.sum()))
        bad = out >= upper
    return out


def make_jets(seed: int = SEED, n_jets: int = N_JETS) -> dict[str, np.ndarray]:
    """Generate the toy jet sample; returns float32 columns in ``FEATURES`` order + ``label``."""
    rng = np.random.default_rng(seed)
    counts = [round(n_jets * FRACTIONS[k]) for k in (0, 1)]
    counts.append(n_jets - sum(counts))
    label = rng.permutation(np.repeat(np.arange(3), counts))
    n = n_jets

    # Kinematics: identical for all flavours (a steeply falling spectrum, central tracker).
    pt = _truncated_pareto(rng, n, 20.0, 1000.0, alpha=1.5)
    eta = _bounded(rng, lambda k: np.abs(rng.normal(0.0, 1.4, k)), np.full(n, 2.5))
    eta *= rng.choice([-1.0, 1.0], n)
    phi = rng.uniform(-np.pi, np.pi, n)

    # Track multiplicity: more for heavy flavour (decay products) and at high pt.
    n_tracks = rng.poisson(NTRK_BASE[label] + NTRK_PT_SLOPE * np.log(pt / 20.0))

    # Per-track impact-parameter significances, [n, max_tracks], lifetime-signed.
    max_trk = int(n_tracks.max())
    has_trk = np.arange(max_trk)[None, :] < n_tracks[:, None]
    width = np.where(rng.random((n, max_trk)) < 0.10, 3.0, 1.0)  # mis-measured tracks
    ip2d = rng.normal(0.0, 1.0, (n, max_trk)) * width
    displaced = rng.random((n, max_trk)) < DISPLACED_FRAC[label][:, None]
    ip2d += displaced * rng.exponential(1.0, (n, max_trk)) * DISPLACED_SCALE[label][:, None]
    # 3-D significance: the longitudinal component adds displacement and resolution.
    ip3d = ip2d * rng.uniform(1.0, 1.3, (n, max_trk)) + rng.normal(0.0, 0.7, (n, max_trk))
    ip2d_sorted = -np.sort(np.where(has_trk, -ip2d, np.inf), axis=1)  # descending
    ip3d_sorted = -np.sort(np.where(has_trk, -ip3d, np.inf), axis=1)
    pad = np.full((n, 2), -np.inf)
    ip2d_sorted = np.concatenate([ip2d_sorted, pad], axis=1)
    ip3d_sorted = np.concatenate([ip3d_sorted, pad], axis=1)
    trk_ip2d_sig_1 = np.where(n_tracks >= 1, ip2d_sorted[:, 0], SENTINEL)
    trk_ip2d_sig_2 = np.where(n_tracks >= 2, ip2d_sorted[:, 1], SENTINEL)
    trk_ip3d_sig_1 = np.where(n_tracks >= 1, ip3d_sorted[:, 0], SENTINEL)

    # Secondary vertices: need >= 2 tracks each.
    has_sv = (rng.random(n) < SV_EFF[label]) & (n_tracks >= 2)
    cum = np.cumsum(SV_MULT[label], axis=1)
    mult = 1 + (rng.random(n)[:, None] > cum).sum(axis=1)
    n_sv = np.where(has_sv, np.minimum(mult, n_tracks // 2), 0).clip(0, 3)

    # SV mass: a gamma shape above 0.2 GeV, cut off at the hadron mass of the flavour.
    sv_mass = np.empty(n)
    for flav in range(3):
        sel = label == flav
        shape, scale = SV_MASS_GAMMA[flav]
        sv_mass[sel] = _bounded(
            rng,
            lambda k, shape=shape, scale=scale: 0.2 + rng.gamma(shape, scale, k),
            np.full(int(sel.sum()), SV_MASS_MAX[flav]),
        )
    # Flight significance: >= 3 (vertex selection), log-normal, mildly rising with the boost.
    boost = (pt / 50.0) ** 0.15
    mu, sigma = SV_FLIGHT_LOGNORMAL[label].T
    sv_flight_sig = 3.0 + boost * np.exp(rng.normal(mu, sigma))
    # Fraction of the jet energy carried by the SV tracks: hard b fragmentation.
    a, b = SV_ERATIO_BETA[label].T
    sv_energy_ratio = rng.beta(a, b)
    no_sv = n_sv == 0
    sv_mass[no_sv] = SENTINEL
    sv_flight_sig[no_sv] = SENTINEL
    sv_energy_ratio[no_sv] = SENTINEL

    columns = {
        "jet_pt": pt,
        "jet_eta": eta,
        "jet_phi": phi,
        "n_tracks": n_tracks,
        "n_sv": n_sv,
        "sv_mass": sv_mass,
        "sv_flight_sig": sv_flight_sig,
        "sv_energy_ratio": sv_energy_ratio,
        "trk_ip2d_sig_1": trk_ip2d_sig_1,
        "trk_ip2d_sig_2": trk_ip2d_sig_2,
        "trk_ip3d_sig_1": trk_ip3d_sig_1,
    }
    out = {k: np.asarray(v, dtype=np.float32) for k, v in columns.items()}
    out["label"] = label.astype(np.int32)
    return out


def write_root(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write the columns as TTree ``Events``, branches in insertion order.

    (``f["Events"] = columns`` would sort the branches alphabetically; ``mktree`` keeps the order.)
    """
    with uproot.recreate(path) as f:
        tree = f.mktree("Events", {name: col.dtype for name, col in columns.items()})
        tree.extend(columns)


# ----------------------------------------------------------------------------- the tagger

#: Features that enter the network as ln(x) (before standardising): the falling pt spectrum.
LOG_FEATURES = ("jet_pt",)
#: Features that enter as asinh(x): signed, heavy-tailed significances (linear near 0, log far out).
ASINH_FEATURES = ("sv_flight_sig", "trk_ip2d_sig_1", "trk_ip2d_sig_2", "trk_ip3d_sig_1")


def _asinh(x: torch.Tensor) -> torch.Tensor:
    """``asinh(x)`` from elementary ops (the legacy ONNX exporter has no ``aten::asinh``).

    Written as ``s * ln(s*x + sqrt(x^2 + 1))`` with ``s = +-1`` the sign of ``x``: no cancellation
    for large negative ``x``, and the gradient ``1 / sqrt(x^2 + 1)`` is right at ``x = 0`` too.
    """
    s = torch.where(x >= 0.0, torch.ones_like(x), -torch.ones_like(x))
    return s * torch.log(s * x + torch.sqrt(x * x + 1.0))


class JetTagger(nn.Module):
    """b / c / light jet tagger on *raw* DeepCSV-like inputs; the preprocessing is built in.

    Input: ``[batch, 11]`` float32 in the order of ``FEATURES`` (jet_pt, jet_eta, jet_phi,
    n_tracks, n_sv, sv_mass, sv_flight_sig, sv_energy_ratio, trk_ip2d_sig_1, trk_ip2d_sig_2,
    trk_ip3d_sig_1), physical units (GeV), sentinel ``-999`` for missing entries.
    Output: ``[batch, 3]`` softmax probabilities of (b, c, light).

    Preprocessing, per feature, inside ``forward``:

    1. ``jet_pt`` -> ``ln(jet_pt)`` (clamped at 1e-3 GeV); the significances (``sv_flight_sig``,
       ``trk_ip2d_sig_1/2``, ``trk_ip3d_sig_1``) -> ``asinh(x)``; the rest unchanged;
    2. standardise, ``z = (t - mean) / std``, with mean / std of ``t`` on the training split
       computed over the non-missing entries only;
    3. missing entries (any raw value below -900, i.e. the -999 sentinel) -> ``z = 0``, the
       training mean. The network still knows the entry was absent: ``n_sv == 0`` flags the
       three SV columns and ``n_tracks < 1`` / ``< 2`` the track columns. Since the sentinel
       never reaches the arithmetic, the gradient with respect to a sentinel entry is 0.

    Then an MLP 11 -> 64 -> 64 -> 3 with ReLU, and a softmax.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int = 64) -> None:
        super().__init__()
        n = len(FEATURES)
        log_mask = torch.tensor([f in LOG_FEATURES for f in FEATURES])
        asinh_mask = torch.tensor([f in ASINH_FEATURES for f in FEATURES])
        self.register_buffer("log_mask", log_mask)
        self.register_buffer("asinh_mask", asinh_mask)
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("std", std.to(torch.float32))
        self.net = nn.Sequential(
            nn.Linear(n, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 3),
        )

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features -> standardised network inputs (see the class docstring)."""
        missing = x < -900.0
        t = torch.where(self.log_mask, torch.log(torch.clamp(x, min=1e-3)), x)
        t = torch.where(self.asinh_mask, _asinh(t), t)
        z = (t - self.mean) / self.std
        return torch.where(missing, torch.zeros_like(z), z)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.transform(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def feature_stats(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean / std per feature of the transformed training inputs, sentinels excluded."""
    means, stds = [], []
    for j, name in enumerate(FEATURES):
        col = x[:, j].astype(np.float64)
        col = col[col > -900.0]
        if name in LOG_FEATURES:
            col = np.log(np.maximum(col, 1e-3))
        elif name in ASINH_FEATURES:
            col = np.arcsinh(col)
        means.append(col.mean())
        stds.append(max(col.std(), 1e-6))
    return torch.tensor(means, dtype=torch.float32), torch.tensor(stds, dtype=torch.float32)


def train(
    x: torch.Tensor, y: torch.Tensor, epochs: int = 40, batch: int = 128, lr: float = 2e-3
) -> JetTagger:
    """Adam + cross-entropy on the logits; a seeded generator fixes the batch order."""
    mean, std = feature_stats(x.numpy())
    model = JetTagger(mean, std)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = nn.functional.cross_entropy(model.logits(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def roc_auc(is_signal: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney rank statistic (ties get average ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_sig = int(is_signal.sum())
    n_bkg = len(score) - n_sig
    return float((ranks[is_signal].sum() - n_sig * (n_sig + 1) / 2) / (n_sig * n_bkg))


def bvl_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """b-vs-light AUC of P(b) / (P(b) + P(light)) on b and light jets."""
    sel = labels != 1
    p = probs[sel]
    return roc_auc(labels[sel] == 0, p[:, 0] / (p[:, 0] + p[:, 2]))


# ----------------------------------------------------------------------------- main


def main() -> None:
    t0 = time.perf_counter()
    np.random.seed(SEED)  # nothing uses the legacy global state; seeded for good measure
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    jets = make_jets()
    write_root(HERE / "jets.root", jets)
    labels = jets["label"]
    print(f"jets.root: {len(labels)} jets, b/c/light = {np.bincount(labels, minlength=3)}")
    print("per-class means (sentinels excluded):")
    print(f"  {'feature':<16}" + "".join(f"{c:>10}" for c in CLASS_NAMES))
    for name in FEATURES:
        col = jets[name]
        means = [col[(labels == k) & (col > -900.0)].mean() for k in range(3)]
        print(f"  {name:<16}" + "".join(f"{m:10.3f}" for m in means))

    x = torch.from_numpy(np.stack([jets[f] for f in FEATURES], axis=1))
    y = torch.from_numpy(labels.astype(np.int64))
    n_train = int(0.7 * len(x))
    t_train = time.perf_counter()
    model = train(x[:n_train], y[:n_train])
    t_train = time.perf_counter() - t_train

    x_test, y_test = x[n_train:], labels[n_train:]
    with torch.no_grad():
        probs = model(x_test).numpy()
    auc = bvl_auc(probs, y_test)
    acc = float((probs.argmax(axis=1) == y_test).mean())
    print(f"training: {t_train:.1f} s; test split ({len(x_test)} jets):")
    print(f"  BvL AUC = {auc:.4f}, accuracy = {acc:.4f}")

    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch; still loads
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
        scripted.save(str(HERE / "tagger.pt"))
        torch.onnx.export(
            model,
            (x_test[:2],),
            str(HERE / "tagger.onnx"),
            input_names=["features"],
            output_names=["probs"],
            dynamic_axes={"features": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript
        )

    import onnxruntime as ort

    session = ort.InferenceSession(str(HERE / "tagger.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(["probs"], {"features": x_test.numpy()})[0]
    diff = float(np.abs(onnx_probs - probs).max())
    print(f"onnx vs torch on the test split: max |diff| = {diff:.2e}")
    if diff > 1e-5:
        raise SystemExit(f"ONNX export mismatch: {diff:.2e} > 1e-5")

    for name in ("jets.root", "tagger.pt", "tagger.onnx"):
        print(f"{name}: {(HERE / name).stat().st_size / 1024:.1f} kB")
    print(f"total time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
