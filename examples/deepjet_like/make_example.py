"""Generate the DeepJet-like multi-input example: a toy b / c / light jet sample with padded
track and secondary-vertex sequences, and a small Conv1d + LSTM + GRU tagger trained on it.

    python examples/deepjet_like/make_example.py

writes, next to this script:

- ``jets.npz``: 6000 jets. Per-jet 1-D arrays ``jet_pt``, ``jet_eta``, ``n_tracks``, ``n_sv``
  and ``label`` (0 = b, 1 = c, 2 = light); per-constituent 2-D arrays ``[n_jets, 10]`` for the
  track features and ``[n_jets, 3]`` for the secondary-vertex (SV) features, padded with 0;
- ``tagger.onnx``: the network (opset 17, TorchScript-based exporter), inputs ``jet``
  ``[batch, 4]``, ``tracks`` ``[batch, 10, 5]``, ``svs`` ``[batch, 3, 3]`` (channels last),
  output ``probs`` ``[batch, 3]``, dynamic batch axis.

**The jets are a toy simulation, not real data** and not the output of a detector simulation:
a few lines of numpy per quantity, shaped like the inputs of CMS's DeepJet tagger so that the
audit of a multi-input network has something realistic to work on.

The toy, per jet:

- flavour b : c : light = 1 : 1 : 2; ``jet_pt`` from a power law on 20-1000 GeV, ``jet_eta``
  inside the tracker (|eta| < 2.5), identical for all flavours;
- ``n_tracks`` ~ Poisson, more for heavy flavour (decay products) and at high pt: light jets have
  the fewest. Each track has a momentum fraction ``trk_ptrel`` of the jet pt (together the tracks
  carry the jet's charged share, about 60 %), angles ``trk_deta`` / ``trk_dphi`` to the jet axis
  (narrower at high pt, wider for the heavier b hadron), and lifetime-signed impact-parameter
  significances ``trk_ip2d_sig`` / ``trk_ip3d_sig``: Gaussian resolution (10 % of tracks
  mis-measured, 3x wider) plus, for tracks from a heavy-hadron decay (35 % in b jets, 25 % in c,
  2 % in light), an exponential displacement (mean 5 sigma for b, 3 for c). About 5 % of the tracks
  have no 3-D impact parameter (too few pixel hits): ``trk_ip3d_sig = -999``, a sentinel. The
  network sees the 10 most displaced tracks (sorted by ``trk_ip2d_sig``, as DeepJet sorts them);
  ``n_tracks`` counts them all;
- ``n_sv`` secondary vertices (0-3; found in 65 % of b jets, 35 % of c, 7 % of light), each
  with a ``sv_mass`` bounded by the decaying hadron's mass, a flight significance
  ``sv_flight_sig`` >= 3, larger for b, and a whole number of tracks ``sv_ntracks`` >= 2,
  sorted by flight significance.

Everything is deterministic: a fixed numpy ``Generator`` seed for the data; a fixed torch seed,
``torch.use_deterministic_algorithms(True)`` and one intra-op thread for training.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

HERE = Path(__file__).resolve().parent

SEED = 20251123
N_JETS = 6000
FRACTIONS = (0.25, 0.25, 0.50)  # b, c, light
CLASS_NAMES = ("b", "c", "light")
N_TRACKS = 10  # tracks the network takes
N_SVS = 3  # secondary vertices the network takes
PAD = 0.0  # value of padded constituents
SENTINEL = -999.0  # trk_ip3d_sig of a track without a 3-D impact parameter

JET_FEATURES = ("jet_pt", "jet_eta", "n_tracks", "n_sv")
TRACK_FEATURES = ("trk_ptrel", "trk_deta", "trk_dphi", "trk_ip2d_sig", "trk_ip3d_sig")
SV_FEATURES = ("sv_mass", "sv_flight_sig", "sv_ntracks")

# Per-flavour toy parameters, indexed by label (b, c, light).
NTRK_BASE = np.array([5.5, 4.5, 3.5])  # Poisson mean of the track multiplicity at pt = 20 GeV
NTRK_PT_SLOPE = 1.2  # + NTRK_PT_SLOPE * ln(pt / 20 GeV)
TRK_CONE_WIDTH = np.array([0.13, 0.11, 0.09])  # track-to-axis spread at pt = 30 GeV
DISPLACED_FRAC = np.array([0.35, 0.25, 0.02])  # chance that a track comes from the decay
DISPLACED_SCALE = np.array([5.0, 3.0, 2.0])  # mean extra (positive) IP significance
NO_IP3D_FRAC = 0.05  # tracks without a 3-D impact parameter
SV_EFF = np.array([0.65, 0.35, 0.07])  # chance of >= 1 reconstructed secondary vertex
SV_MULT = np.array([[0.60, 0.30, 0.10], [0.80, 0.17, 0.03], [0.90, 0.09, 0.01]])  # n_sv = 1,2,3
SV_MASS_GAMMA = np.array([[3.0, 0.65], [2.5, 0.40], [1.6, 0.35]])  # (shape, scale) in GeV
SV_MASS_MAX = np.array([5.5, 2.5, 2.5])  # kinematic limit (+ resolution), GeV
SV_FLIGHT_LOGNORMAL = np.array([[2.3, 0.7], [1.7, 0.7], [1.2, 0.6]])  # (mu, sigma) of ln(sig-3)
SV_EXTRA_TRACKS = np.array([1.5, 0.8, 0.3])  # Poisson mean of the tracks beyond 2 per vertex


# ----------------------------------------------------------------------------- the sample


def _redraw(draw, bad) -> np.ndarray:
    """An array ``draw()``, its entries re-drawn while ``bad(array)`` flags them (a cut without
    a spike at its edge)."""
    out = draw()
    rejected = bad(out)
    while rejected.any():
        out[rejected] = draw()[rejected]
        rejected = bad(out)
    return out


def make_jets(seed: int = SEED, n_jets: int = N_JETS) -> dict[str, np.ndarray]:
    """Generate the toy sample.

    Returns:
        per-jet float32 ``[n_jets]`` columns (``JET_FEATURES``), per-constituent float32
        ``[n_jets, N_TRACKS]`` (``TRACK_FEATURES``) and ``[n_jets, N_SVS]`` (``SV_FEATURES``)
        columns padded with ``PAD``, and int32 ``label`` ``[n_jets]``.
    """
    rng = np.random.default_rng(seed)
    n = n_jets
    counts = [round(n * f) for f in FRACTIONS[:2]]
    label = rng.permutation(np.repeat(np.arange(3), [*counts, n - sum(counts)]))

    pt = 20.0 * (1.0 - rng.random(n) * (1.0 - (20.0 / 1000.0) ** 1.5)) ** (-1.0 / 1.5)
    eta = _redraw(lambda: rng.normal(0.0, 1.4, n), lambda v: np.abs(v) >= 2.5)

    # Tracks: all of them first, [n, max_trk], then the N_TRACKS most displaced.
    n_trk = rng.poisson(NTRK_BASE[label] + NTRK_PT_SLOPE * np.log(pt / 20.0))
    m = max(int(n_trk.max()), N_TRACKS)
    real = np.arange(m)[None, :] < n_trk[:, None]
    share = rng.gamma(1.0, 1.0, (n, m)) * real
    charged = rng.beta(6.0, 4.0, n)  # charged share of the jet momentum
    ptrel = charged[:, None] * share / np.maximum(share.sum(1, keepdims=True), 1e-12)
    width = (TRK_CONE_WIDTH[label] * np.sqrt(30.0 / pt))[:, None] * np.ones((1, m))
    deta, dphi = (
        _redraw(lambda: rng.normal(0.0, 1.0, (n, m)) * width, lambda v: np.abs(v) >= 0.4)
        for _ in range(2)
    )
    ip2d = rng.normal(0.0, 1.0, (n, m)) * np.where(rng.random((n, m)) < 0.10, 3.0, 1.0)
    displaced = rng.random((n, m)) < DISPLACED_FRAC[label][:, None]
    ip2d += displaced * rng.exponential(DISPLACED_SCALE[label][:, None], (n, m))
    ip3d = ip2d * rng.uniform(1.0, 1.3, (n, m)) + rng.normal(0.0, 0.7, (n, m))
    ip3d = np.where(rng.random((n, m)) < NO_IP3D_FRAC, SENTINEL, ip3d)
    order = np.argsort(np.where(real, -ip2d, np.inf), axis=1, kind="stable")[:, :N_TRACKS]
    keep = np.take_along_axis(real, order, 1)
    tracks = {
        name: np.where(keep, np.take_along_axis(values, order, 1), PAD)
        for name, values in zip(TRACK_FEATURES, (ptrel, deta, dphi, ip2d, ip3d), strict=True)
    }

    # Secondary vertices: each needs >= 2 tracks.
    has_sv = (rng.random(n) < SV_EFF[label]) & (n_trk >= 2)
    mult = 1 + (rng.random(n)[:, None] > np.cumsum(SV_MULT[label], axis=1)).sum(1)
    n_sv = np.where(has_sv, np.minimum(mult, n_trk // 2), 0)
    sv_real = np.arange(N_SVS)[None, :] < n_sv[:, None]
    shape, scale = (SV_MASS_GAMMA[label, k][:, None] for k in (0, 1))
    mass = _redraw(
        lambda: 0.2 + rng.gamma(shape * np.ones((1, N_SVS)), scale),
        lambda v: v >= SV_MASS_MAX[label][:, None],
    )
    mu, sigma = (SV_FLIGHT_LOGNORMAL[label, k][:, None] for k in (0, 1))
    flight = 3.0 + (pt / 50.0)[:, None] ** 0.15 * np.exp(rng.normal(mu, sigma, (n, N_SVS)))
    ntrk = 2 + rng.poisson(SV_EXTRA_TRACKS[label][:, None] * np.ones((1, N_SVS)))
    ntrk = np.minimum(ntrk, n_trk[:, None])  # a real vertex's jet has >= 2 tracks
    sv_order = np.argsort(np.where(sv_real, -flight, np.inf), axis=1, kind="stable")
    svs = {
        name: np.where(sv_real, np.take_along_axis(values, sv_order, 1), PAD)
        for name, values in zip(SV_FEATURES, (mass, flight, ntrk), strict=True)
    }

    out = {"jet_pt": pt, "jet_eta": eta, "n_tracks": n_trk, "n_sv": n_sv, **tracks, **svs}
    out = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    out["label"] = label.astype(np.int32)
    return out


def write_npz(path: Path, jets: dict[str, np.ndarray]) -> None:
    """Write the sample compressed; counts (``n_tracks``, ``n_sv``, ``sv_ntracks``) as int16."""
    integer = {"n_tracks", "n_sv", "sv_ntracks"}
    arrays = {k: v.astype(np.int16) if k in integer else v for k, v in jets.items()}
    np.savez_compressed(path, **arrays)


def as_inputs(jets: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The network's three inputs from the columns: ``jet`` [n, 4], ``tracks`` [n, 10, 5],
    ``svs`` [n, 3, 3], float32, channels last, features in ``*_FEATURES`` order."""
    jet = np.stack([jets[f] for f in JET_FEATURES], 1)
    tracks = np.stack([jets[f] for f in TRACK_FEATURES], -1)
    svs = np.stack([jets[f] for f in SV_FEATURES], -1)
    return tuple(torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (jet, tracks, svs))


# ----------------------------------------------------------------------------- the tagger


def _signed_log(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * ln(1 + |x|)``: linear near 0, logarithmic in the tails (an asinh-like
    compression of the signed, heavy-tailed significances, built from ops every ONNX exporter
    has)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class Standardise(nn.Module):
    """``(t - mean) / std`` per feature on the last axis; ``mean`` / ``std`` ``[F]``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("std", std.to(torch.float32))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.mean) / self.std


def jet_transform(jet: torch.Tensor) -> torch.Tensor:
    """``jet`` [B, 4] (pt GeV, eta, n_tracks, n_sv) -> [B, 4]: ln pt, eta, ln(1 + counts)."""
    pt = torch.log(torch.clamp(jet[:, 0:1], min=1e-3))
    return torch.cat([pt, jet[:, 1:2], torch.log1p(torch.clamp(jet[:, 2:4], min=0.0))], 1)


def track_transform(tracks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tracks`` [B, T, 5] raw -> ([B, T, 5] transformed, [B, T, 1] 1 for real tracks).

    ``ln trk_ptrel`` (clamped: padding stays finite, with a zero gradient), angles x 10 (to
    order 1), signed logs of the significances; the missing-3-D sentinel (< -900) becomes 0.
    """
    real = (tracks != PAD).any(-1, keepdim=True).to(tracks.dtype)
    ptrel = torch.log(torch.clamp(tracks[..., 0:1], min=1e-4))
    angles = 10.0 * tracks[..., 1:3]
    ip2d = _signed_log(tracks[..., 3:4])
    raw3d = tracks[..., 4:5]
    ip3d = torch.where(raw3d < -900.0, torch.zeros_like(raw3d), _signed_log(raw3d))
    return torch.cat([ptrel, angles, ip2d, ip3d], -1), real


def sv_transform(svs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``svs`` [B, S, 3] raw -> ([B, S, 3] transformed, [B, S, 1] 1 for real vertices):
    ln mass, ln(flight significance), ln(1 + n tracks), all clamped so padding stays finite."""
    real = (svs != PAD).any(-1, keepdim=True).to(svs.dtype)
    mass = torch.log(torch.clamp(svs[..., 0:1], min=1e-3))
    flight = torch.log(torch.clamp(svs[..., 1:2], min=1e-3))
    ntrk = torch.log1p(torch.clamp(svs[..., 2:3], min=0.0))
    return torch.cat([mass, flight, ntrk], -1), real


class DeepJetLike(nn.Module):
    """A small DeepJet-shaped b / c / light tagger on *raw* inputs; preprocessing built in.

    Inputs (float32, physical units, padded constituents all 0):

    - ``jet`` [B, 4]: jet_pt (GeV), jet_eta, n_tracks, n_sv;
    - ``tracks`` [B, 10, 5]: trk_ptrel, trk_deta, trk_dphi, trk_ip2d_sig, trk_ip3d_sig (-999:
      no 3-D impact parameter), channels last;
    - ``svs`` [B, 3, 3]: sv_mass (GeV), sv_flight_sig, sv_ntracks, channels last.

    Output: softmax probabilities [B, 3] of (b, c, light).

    Each input is transformed (:func:`jet_transform`, :func:`track_transform`,
    :func:`sv_transform`) and standardised with training-split statistics over real
    constituents; padded constituents are then set to 0. Per constituent, a Conv1d(k=1) stack
    (channels first: [B, F, T]) learns features: tracks 5 -> 32 -> 16 -> 8, vertices 3 -> 16
    -> 8. An LSTM (hidden 24) runs over the tracks and a GRU (hidden 16) over the vertices;
    their last hidden states, concatenated with the 4 jet features, feed a dense head 44 -> 64
    -> 32 -> 3.
    """

    def __init__(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.jet_norm = Standardise(*stats["jet"])
        self.track_norm = Standardise(*stats["tracks"])
        self.sv_norm = Standardise(*stats["svs"])
        self.track_conv = nn.Sequential(
            nn.Conv1d(5, 32, 1), nn.ReLU(), nn.Conv1d(32, 16, 1), nn.ReLU(), nn.Conv1d(16, 8, 1)
        )
        self.sv_conv = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 8, 1))
        self.lstm = nn.LSTM(8, 24, batch_first=True)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(4 + 24 + 16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)
        )

    def logits(self, jet: torch.Tensor, tracks: torch.Tensor, svs: torch.Tensor) -> torch.Tensor:
        """Class logits [B, 3] of the raw inputs (shapes as in the class docstring)."""
        t, t_real = track_transform(tracks)
        s, s_real = sv_transform(svs)
        t = self.track_norm(t) * t_real  # [B, 10, 5]
        s = self.sv_norm(s) * s_real  # [B, 3, 3]
        t = self.track_conv(t.transpose(1, 2)).transpose(1, 2)  # [B, 10, 8]
        s = self.sv_conv(s.transpose(1, 2)).transpose(1, 2)  # [B, 3, 8]
        _, (h_trk, _) = self.lstm(t)  # [1, B, 24]
        _, h_sv = self.gru(s)  # [1, B, 16]
        j = self.jet_norm(jet_transform(jet))  # [B, 4]
        return self.head(torch.cat([j, h_trk[0], h_sv[0]], 1))

    def forward(self, jet: torch.Tensor, tracks: torch.Tensor, svs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(jet, tracks, svs), dim=1)


def input_stats(
    jet: torch.Tensor, tracks: torch.Tensor, svs: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean / std per transformed feature: jets over all jets; tracks and vertices over real
    constituents only (``trk_ip3d_sig`` without its -999 sentinel entries)."""
    out = {"jet": _mean_std(jet_transform(jet))}
    for name, x, transform in (("tracks", tracks, track_transform), ("svs", svs, sv_transform)):
        t, real = transform(x)
        values = t[real[..., 0].bool()]  # [n_real, F]
        mean, std = _mean_std(values)
        if name == "tracks":
            has_3d = x[..., 4][real[..., 0].bool()] > -900.0
            mean[4], std[4] = _mean_std(values[has_3d, 4:5])
        out[name] = (mean, std)
    return out


def _mean_std(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and std (floored at 1e-6) of ``t`` [n, F]."""
    return t.mean(0), t.std(0).clamp_min(1e-6)


def train(inputs: tuple[torch.Tensor, ...], y: torch.Tensor, epochs: int = 12) -> DeepJetLike:
    """Adam (lr 3e-3, cosine decay) + cross-entropy on the logits, batches of 128 in a seeded
    order."""
    model = DeepJetLike(input_stats(*inputs))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(128):
            loss = nn.functional.cross_entropy(model.logits(*(x[idx] for x in inputs)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def bvl_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of BvL = P(b) / (P(b) + P(light)), b jets against light jets (the Mann-Whitney
    statistic on average ranks)."""
    sel = labels != 1
    score = probs[sel, 0] / (probs[sel, 0] + probs[sel, 2])
    is_b = labels[sel] == 0
    ranks = rankdata(score)
    n_b, n_light = int(is_b.sum()), int((~is_b).sum())
    return float((ranks[is_b].sum() - n_b * (n_b + 1) / 2) / (n_b * n_light))


# ----------------------------------------------------------------------------- main


def print_class_means(jets: dict[str, np.ndarray]) -> None:
    """Per-flavour mean of every feature over real constituents, sentinels excluded."""
    labels = jets["label"]
    print("per-class means (real constituents, sentinels excluded):")
    print(f"  {'feature':<14}" + "".join(f"{c:>9}" for c in CLASS_NAMES))
    for name in JET_FEATURES + TRACK_FEATURES + SV_FEATURES:
        col = jets[name]
        flavour = labels if col.ndim == 1 else labels[:, None]
        ok = col > -900.0
        if col.ndim == 2:
            ok &= jets["trk_ptrel" if name in TRACK_FEATURES else "sv_ntracks"] != PAD
        means = [col[(flavour == k) & ok].mean() for k in range(3)]
        print(f"  {name:<14}" + "".join(f"{m:9.3f}" for m in means))


def main() -> None:
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    jets = make_jets()
    write_npz(HERE / "jets.npz", jets)
    labels = jets["label"]
    print(f"jets.npz: {len(labels)} jets, b/c/light = {np.bincount(labels, minlength=3)}")
    print_class_means(jets)

    inputs = as_inputs(jets)
    y = torch.from_numpy(labels.astype(np.int64))
    n_train = int(0.7 * len(y))
    t_train = time.perf_counter()
    model = train(tuple(x[:n_train] for x in inputs), y[:n_train])
    t_train = time.perf_counter() - t_train

    test = tuple(x[n_train:] for x in inputs)
    y_test = labels[n_train:]
    t_eval = time.perf_counter()
    with torch.no_grad():
        probs = model(*test).numpy()
    t_eval = time.perf_counter() - t_eval
    acc = float((probs.argmax(1) == y_test).mean())
    print(f"training: {t_train:.1f} s; test split ({len(y_test)} jets, {t_eval * 1e3:.0f} ms):")
    print(f"  BvL AUC = {bvl_auc(probs, y_test):.4f}, accuracy = {acc:.4f}")

    names = ["jet", "tracks", "svs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on LSTM/GRU batch sizes
        torch.onnx.export(
            model,
            tuple(x[:2] for x in test),
            str(HERE / "tagger.onnx"),
            input_names=names,
            output_names=["probs"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "probs"]},
            opset_version=17,
            dynamo=False,
        )

    import onnxruntime as ort

    session = ort.InferenceSession(str(HERE / "tagger.onnx"), providers=["CPUExecutionProvider"])
    feed = {n: x.numpy() for n, x in zip(names, test, strict=True)}
    t_ort = time.perf_counter()
    onnx_probs = session.run(["probs"], feed)[0]
    t_ort = time.perf_counter() - t_ort
    diff = float(np.abs(onnx_probs - probs).max())
    print(f"onnx vs torch on the test split: max |diff| = {diff:.2e}")
    print(f"  onnxruntime: {t_ort * 1e3:.0f} ms for {len(y_test)} jets")
    if diff > 1e-5:
        raise SystemExit(f"ONNX export mismatch: {diff:.2e} > 1e-5")

    for name in ("jets.npz", "tagger.onnx"):
        print(f"{name}: {(HERE / name).stat().st_size / 1024:.1f} kB")
    print(f"total time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
