"""The models and samples docs/performance.md measures on.

- ``deepcsv``: a DeepCSV-sized MLP (67 inputs, 5 hidden layers of 100, 4 classes, logits), the
  network of issue 9's reference table, on a generated sample with an uncertainty file that mixes
  the feature kinds a tagger has (absolute and relative sigmas, integer counts, sentinels).
- ``deepjet_like``: the two-input (jet + track and vertex sequences) network of
  ``examples/deepjet_like`` (Conv1d + LSTM + GRU), seeded weights, on its bundled jets resampled.
  hepguard feeds it the flat rows of its ``inputs:`` layout; torchattacks and ART get the same
  module behind a wrapper that unpacks the flat rows the same way.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pytest_hepguard.events import Events, load_events
from pytest_hepguard.layout import Layout
from pytest_hepguard.uncertainties import UncertaintyModel, load_uncertainties

ROOT = Path(__file__).resolve().parent.parent
DEEPJET = ROOT / "examples" / "deepjet_like"

#: The DeepCSV-sized MLP's feature kinds: (count, YAML envelope).
DEEPCSV_FEATURES = (
    (50, "{absolute: 0.1}"),
    (10, "{relative: 0.05, min: 0}"),
    (4, "{absolute: 1, integer: true, min: 0}"),
    (3, "{absolute: 0.3, sentinel: -999}"),
)
DEEPCSV_CLASSES = ("b", "bb", "c", "light")


@dataclass
class Case:
    """One benchmark case: the module (flat rows [batch, n] -> logits [batch, classes]), the
    uncertainty file, and a sample of ``n`` events (features in the file's flat order)."""

    name: str
    module: nn.Module
    uncertainties: UncertaintyModel
    events: Events


def deepcsv_mlp(seed: int = 0) -> nn.Module:
    """67 -> 5 x (100, ReLU) -> 4 logits, seeded initial weights."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 67
    for _ in range(5):
        layers += [nn.Linear(width, 100), nn.ReLU()]
        width = 100
    layers.append(nn.Linear(width, 4))
    return nn.Sequential(*layers).eval()


def deepcsv_yaml(data: Path) -> str:
    """The uncertainty file of the DeepCSV-sized case, reading ``data`` (an .npz)."""
    lines = ["version: 1", "features:"]
    j = 0
    for count, envelope in DEEPCSV_FEATURES:
        for _ in range(count):
            lines.append(f"  f{j:02d}: {envelope}")
            j += 1
    lines += [
        "decision:",
        f"  classes: [{', '.join(DEEPCSV_CLASSES)}]",
        "  discriminant: {numerator: [b, bb], denominator: [b, bb, light]}",
        "  signal: [b, bb]",
        "  background: [light]",
        "  output: logits",
        "  working_point: {efficiency: 0.7}",
        "data:",
        f"  path: {data}",
        "  label: label",
    ]
    return "\n".join(lines) + "\n"


def deepcsv_features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generated rows [n, 67] (float32) of the DeepCSV-sized case's feature kinds and labels
    [n] (0..3): Gaussian continuous features, positive relative ones, Poisson counts, and 20 %
    sentinels (-999) in the last three columns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    x = np.empty((n, 67), dtype=np.float32)
    x[:, :50] = rng.normal(labels[:, None] * 0.3, 1.0, (n, 50))
    x[:, 50:60] = rng.gamma(2.0, 1.0 + 0.2 * labels[:, None], (n, 10))
    x[:, 60:64] = rng.poisson(3 + labels[:, None], (n, 4))
    x[:, 64:67] = rng.normal(labels[:, None] * 0.5, 1.0, (n, 3))
    x[:, 64:67][rng.random((n, 3)) < 0.2] = -999.0
    return x, labels.astype(np.int32)


def deepcsv_case(n: int, workdir: Path, seed: int = 0) -> Case:
    """The DeepCSV-sized case with ``n`` generated events (its data and YAML in ``workdir``)."""
    x, labels = deepcsv_features(n, seed)
    data = workdir / "deepcsv.npz"
    names = [f"f{j:02d}" for j in range(67)]
    np.savez(data, label=labels, **{name: x[:, j] for j, name in enumerate(names)})
    (workdir / "deepcsv.yaml").write_text(deepcsv_yaml(data))
    unc = load_uncertainties(workdir / "deepcsv.yaml")
    events = Events(x, tuple(names), labels.astype(np.int64), None, data)
    return Case("DeepCSV-sized MLP", deepcsv_mlp(seed), unc, events)


def _deepjet_module() -> object:
    spec = importlib.util.spec_from_file_location("deepjet_make", DEEPJET / "make_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FlatInput(nn.Module):
    """A multi-input module behind one flat input: rows [batch, n_flat] are unpacked into its
    input tensors by the uncertainty file's layout (what hepguard does), output its logits."""

    def __init__(self, module: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.module, self.layout = module, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.logits(*self.layout.unpack(x))


class Logits(nn.Module):
    """The multi-input network's logits as its forward (hepguard's multi-input model)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module.logits(*inputs)


def deepjet_case(n: int, seed: int = 0) -> tuple[Case, nn.Module]:
    """The two-input case with the bundled jets resampled to ``n`` events: the flat-input module
    (for the floor, torchattacks and ART) and the multi-input one hepguard loads."""
    make = _deepjet_module()
    jets = make.make_jets()  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    net = make.DeepJetLike(make.input_stats(*make.as_inputs(jets))).eval()  # type: ignore[attr-defined]
    unc = load_uncertainties(DEEPJET / "unc.yaml")
    layout = Layout(unc)
    per_event, constituents = unc.data_columns()
    base = layout.flatten(
        load_events(DEEPJET / "jets.npz", per_event, constituents=constituents, label="label")
    )
    rng = np.random.default_rng(seed)
    idx = np.tile(np.arange(len(base)), math.ceil(n / len(base)))
    rng.shuffle(idx)
    idx = idx[:n]
    events = Events(
        np.ascontiguousarray(base.features[idx]),
        base.feature_names,
        None if base.labels is None else base.labels[idx],
        None,
        base.source,
    )
    return Case("two-input (DeepJet-like)", FlatInput(net, layout), unc, events), Logits(net)
