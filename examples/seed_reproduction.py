"""The first seed paper, reproduced on the bundled example (docs/seed-reproduction.md).

arXiv 2203.13890 and its ACAT follow-up 2303.14511 train a 5 x 100 MLP flavour tagger over
b / c / light jets nominally and adversarially (every training batch replaced by FGSM examples
of the current model), then compare BvL and BvC AUC on nominal input and under FGSM / PGD, and
draw the loss surface in input space. This script does the same on examples/jets.root, with
hepguard's envelope (epsilon in sigmas of the declared uncertainties of examples/unc.yaml) for the
attacks in training and in the audit:

1. train both taggers on the first 70 % of the jets (`pytest_hepguard.defense.fit`);
2. audit both on the other 30 % (`Auditor`): AUC of BvL = P(b)/(P(b)+P(light)) and BvC =
   P(b)/(P(b)+P(c)) nominal, under FGSM and PGD-20 at several epsilons, and the fooling rates;
3. the loss along the adversarial, random and nuisance-group directions and its sharpness, and
   the loss surface of one jet over two inputs (`pytest_hepguard.landscape`), plotted.

Run from the repository root (about a minute on 2 CPU cores)::

    python examples/seed_reproduction.py [PLOT_FOLDER]

It prints the tables of docs/seed-reproduction.md and writes the plots into PLOT_FOLDER
(default: docs/img).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_example import JetTagger, feature_stats  # noqa: E402

from pytest_hepguard.audit import Auditor  # noqa: E402
from pytest_hepguard.defense import fit  # noqa: E402
from pytest_hepguard.events import Events, load_events  # noqa: E402
from pytest_hepguard.landscape import loss_curves, loss_surface  # noqa: E402
from pytest_hepguard.models import wrap_model  # noqa: E402
from pytest_hepguard.uncertainties import Ratio, load_uncertainties  # noqa: E402

SEED = 0
EPOCHS = 30
#: FGSM size in training, in sigmas of the declared envelope (the audit's unit)
TRAIN_EPSILON = 1.0
EPSILONS = (0.5, 1.0, 2.0)
#: the two inputs of the loss surface (as in the ACAT paper: one jet, two inputs on a grid)
SURFACE = ("trk_ip2d_sig_1", "sv_mass")


class SeedTagger(JetTagger):
    """The example's preprocessing (log pT, asinh of the significances, standardisation, -999
    -> the mean) followed by the seed's 5 x 100 ReLU MLP; returns logits [batch, 3]."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__(mean, std)
        layers: list[nn.Module] = []
        width = len(mean)
        for _ in range(5):
            layers += [nn.Linear(width, 100), nn.ReLU()]
            width = 100
        self.net = nn.Sequential(*layers, nn.Linear(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def split(events: Events, stop: int | None, start: int = 0) -> Events:
    rows = slice(start, stop)
    return replace(
        events,
        features=events.features[rows],
        labels=None if events.labels is None else events.labels[rows],
        weights=None if events.weights is None else events.weights[rows],
    )


def train(x: np.ndarray, y: np.ndarray, unc, adversarial: bool) -> SeedTagger:
    torch.manual_seed(SEED)
    mean, std = feature_stats(x)
    model = SeedTagger(mean, std)
    history = fit(
        model,
        x,
        y,
        unc,
        epochs=EPOCHS,
        batch_size=128,
        lr=1e-3,
        attack="fgsm" if adversarial else None,
        epsilon=TRAIN_EPSILON,
        seed=SEED,
    )
    kind = "adversarial" if adversarial else "nominal"
    print(f"trained {kind}: final loss {history.loss[-1]:.4f}, {history.seconds:.1f} s")
    return model.eval()


def audit_table(models: dict[str, SeedTagger], test: Events, unc) -> list[dict[str, object]]:
    """AUC of BvL and BvC, nominal and under FGSM / PGD-20 at each epsilon, fooling rates."""
    bvc = replace(
        unc,
        decision=replace(unc.decision, discriminant=Ratio((0,), (0, 1)), background=(1,)),
    )
    rows = []
    for name, module in models.items():
        for label, file in (("BvL", unc), ("BvC", bvc)):
            device = torch.device("cpu")
            auditor = Auditor(wrap_model(module, device, name), test, file, seed=SEED)
            for attack in ("fgsm", "pgd"):
                for eps in EPSILONS:
                    params = {"epsilon": eps} | ({"steps": 20} if attack == "pgd" else {})
                    r = auditor.run(attack, **params)
                    rows.append(
                        {
                            "model": name,
                            "discriminant": label,
                            "attack": attack,
                            "epsilon": eps,
                            "auc_nominal": r.auc_nominal,
                            "auc_perturbed": r.auc_perturbed,
                            "fooling_rate": r.fooling_rate,
                            "random_fooling_rate": r.random_fooling_rate,
                        }
                    )
    return rows


def print_tables(rows: list[dict[str, object]]) -> None:
    print("\n| model | discriminant | AUC nominal | " + " | ".join(
        f"{a.upper()} ε={e:g}" for a in ("fgsm", "pgd") for e in EPSILONS
    ) + " |")
    print("| --- | --- | --- |" + " --- |" * (2 * len(EPSILONS)))
    for model in ("nominal", "adversarial"):
        for disc in ("BvL", "BvC"):
            sel = [r for r in rows if r["model"] == model and r["discriminant"] == disc]
            cells = [f"{r['auc_perturbed']:.4f}" for r in sel]
            print(f"| {model} | {disc} | {sel[0]['auc_nominal']:.4f} | " + " | ".join(cells) + " |")
    print("\n| model | " + " | ".join(
        f"{a.upper()} ε={e:g}" for a in ("fgsm", "pgd") for e in EPSILONS
    ) + " | random ε=1 |")
    print("| --- |" + " --- |" * (2 * len(EPSILONS) + 1))
    for model in ("nominal", "adversarial"):
        sel = [r for r in rows if r["model"] == model and r["discriminant"] == "BvL"]
        noise = next(r["random_fooling_rate"] for r in sel if r["epsilon"] == 1.0)
        cells = [f"{r['fooling_rate']:.4f}" for r in sel]
        print(f"| {model} | " + " | ".join(cells) + f" | {noise:.4f} |")


def landscapes(models: dict[str, SeedTagger], test: Events, unc, out: Path) -> None:
    """Loss along the directions (all test jets, per class) and the surface of one jet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.round(np.linspace(-3.0, 3.0, 25), 6).tolist()
    grid = np.round(np.linspace(-3.0, 3.0, 31), 6).tolist()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    surf_fig, surf_axes = plt.subplots(1, 2, figsize=(10, 4.2))
    print("\n| model | direction | loss at 0 | curvature | max increase within 1σ |")
    print("| --- | --- | --- | --- | --- |")
    for k, (name, module) in enumerate(models.items()):
        device = torch.device("cpu")
        auditor = Auditor(wrap_model(module, device, name), test, unc, seed=SEED)
        x0 = torch.from_numpy(auditor.events.features)
        labels = torch.from_numpy(auditor.labels)
        curves = loss_curves(
            auditor.model,
            auditor.decision,
            x0,
            labels,
            auditor.envelope,
            ts=ts,
            groups=auditor.nuisance_groups(),
            class_names=unc.decision.classes,
            generator=torch.Generator().manual_seed(SEED),
        )
        for curve in curves:
            sharp = curve.sharpness(1.0)
            print(
                f"| {name} | {curve.direction} | {curve.loss[len(ts) // 2]:.4f} | "
                f"{sharp['curvature']:.4f} | {sharp['max_increase']:.4f} |"
            )
            axes[k].plot(curve.t, curve.loss, label=curve.direction)
        axes[k].set_title(f"{name} tagger: mean loss of the true label")
        axes[k].set_xlabel("displacement [σ of the declared uncertainty]")
        axes[k].axvspan(-1, 1, color="0.92")
        axes[k].legend(fontsize=8)
        jet = _surface_jet(auditor)
        surface = loss_surface(
            auditor.model,
            x0[jet : jet + 1],
            labels[jet : jet + 1],
            auditor.envelope,
            auditor.layout.feature_of,
            SURFACE,
            grid,
        )
        image = surf_axes[k].imshow(
            np.asarray(surface.loss).T,
            origin="lower",
            extent=(grid[0], grid[-1], grid[0], grid[-1]),
            aspect="auto",
            cmap="viridis",
        )
        surf_axes[k].set_title(f"{name} tagger, b jet {jet}")
        surf_axes[k].set_xlabel(f"{SURFACE[0]} [σ]")
        surf_axes[k].set_ylabel(f"{SURFACE[1]} [σ]")
        surf_fig.colorbar(image, ax=surf_axes[k], label="loss")
    axes[0].set_ylabel("cross-entropy")
    fig.tight_layout()
    surf_fig.tight_layout()
    fig.savefig(out / "seed_loss_curves.png", dpi=110)
    surf_fig.savefig(out / "seed_loss_surface.png", dpi=110)
    print(f"\nplots: {out / 'seed_loss_curves.png'}, {out / 'seed_loss_surface.png'}")


def _surface_jet(auditor: Auditor) -> int:
    """The first b jet of the test split with a secondary vertex and a track (both surface
    inputs move), as the seed draws one jet."""
    f = auditor.events.features
    names = list(auditor.layout.names)
    ok = (auditor.labels == 0) & (f[:, names.index(SURFACE[0])] > -900)
    ok &= f[:, names.index(SURFACE[1])] > -900
    return int(np.flatnonzero(ok)[0])


def main(out: Path) -> None:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    unc = load_uncertainties(HERE / "unc.yaml")
    per_event, _ = unc.data_columns()
    events = load_events(unc.data.path, per_event, label=unc.data.label, tree=unc.data.tree)
    n_train = int(0.7 * len(events.features))
    train_set, test = split(events, n_train), split(events, None, n_train)
    models = {
        "nominal": train(train_set.features, train_set.labels, unc, adversarial=False),
        "adversarial": train(train_set.features, train_set.labels, unc, adversarial=True),
    }
    print_tables(audit_table(models, test, unc))
    landscapes(models, test, unc, out)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "docs" / "img")
