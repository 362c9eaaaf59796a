"""The production CMS taggers of ``../shared/realdata`` as the bridge tests and benchmarks feed
them: each model's inputs (shapes without the batch axis, from its SOURCE.md) and which inputs
are masks (no functions of the bridge here: plain data and an input builder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

#: Where the shared real models live: beside the repository, absent in a user's clone.
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@dataclass(frozen=True)
class Case:
    """A real model and how to feed it: ``shapes`` per input without the batch axis, and the
    inputs that are masks (``masks``: index of a mask input -> indices of the inputs it pads)."""

    path: str
    shapes: tuple[tuple[int, ...], ...]
    masks: dict[int, tuple[int, ...]] = field(default_factory=dict)
    output: int = 0
    names: tuple[str, ...] = ()
    channels_first: bool = False

    @property
    def movable(self) -> list[int]:
        """Indices of the inputs an attack moves: all but the masks."""
        return [i for i in range(len(self.shapes)) if i not in self.masks]


_PARTICLENET_INPUTS = ("pf_points", "pf_features", "pf_mask", "sv_points", "sv_features", "sv_mask")

CASES = {
    "deepjet_run3": Case(
        "cms-deepjet-run3/DeepJet_Run3_122X.onnx",
        ((15,), (25, 16), (25, 6), (4, 12), (1,)),
        names=("input_1", "input_2", "input_3", "input_4", "input_5"),
    ),
    "deepdoublex_bvl": Case(
        "cms-deepdoublex-bvl/BvL.onnx",
        ((1, 5), (60, 8), (40, 21), (5, 7)),
        names=("input_1", "input_2", "input_3", "input_4"),
    ),
    "particlenet_ak4_hlt": Case(
        "cms-particlenet-ak4-hlt/particle-net.onnx",
        ((2, 25), (23, 25), (1, 25), (2, 5), (11, 5), (1, 5)),
        {2: (0, 1), 5: (3, 4)},
        names=_PARTICLENET_INPUTS,
        channels_first=True,
    ),
    "particlenet_ak4_chs": Case(
        "cms-particlenet-ak4-chs/particlenet_ak4.onnx",
        ((2, 25), (20, 25), (1, 25), (2, 5), (11, 5), (1, 5)),
        {2: (0, 1), 5: (3, 4)},
        names=_PARTICLENET_INPUTS,
        channels_first=True,
    ),
}


def make_inputs(case: Case, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Standard-normal inputs of ``case``'s shapes; masks keep a random number (at least 1) of
    leading constituents and zero the padded entries of the inputs they mask."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn((batch, *shape), generator=gen) for shape in case.shapes]
    for mask_index, padded in case.masks.items():
        length = case.shapes[mask_index][-1]
        n_real = torch.randint(1, length + 1, (batch,), generator=gen)
        mask = (torch.arange(length)[None, :] < n_real[:, None]).float()[:, None, :]
        xs[mask_index] = mask
        for i in padded:
            xs[i] = xs[i] * mask
    return xs


def uncertainty_yaml(case: Case, sigma: float = 0.1) -> str:
    """An uncertainty file for ``case``: every input under ``inputs:`` in graph order, its
    features named ``<input>_<j>`` with an absolute envelope of ``sigma`` (the inputs are
    standard normal), masks declared as masks of the inputs they pad; argmax decisions."""
    features, inputs = [], []
    for i, (name, shape) in enumerate(zip(case.names, case.shapes, strict=True)):
        if i in case.masks:
            targets = ", ".join(case.names[j] for j in case.masks[i])
            inputs.append(f"  {name}: {{per: mask, mask_of: [{targets}], layout: channels_first}}")
            continue
        n_features = shape[0] if case.channels_first or len(shape) == 1 else shape[1]
        names = [f"{name}_{j}" for j in range(n_features)]
        features += [f"  {f}: {{absolute: {sigma}}}" for f in names]
        if len(shape) == 1:
            inputs.append(f"  {name}: [{', '.join(names)}]")
        else:
            length = shape[1] if case.channels_first else shape[0]
            layout = "channels_first" if case.channels_first else "channels_last"
            inputs.append(
                f"  {name}: {{features: [{', '.join(names)}], per: constituent, "
                f"length: {length}, layout: {layout}}}"
            )
    return "version: 1\nfeatures:\n" + "\n".join(features) + "\ninputs:\n" + "\n".join(inputs)


def rows(case: Case, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The model's input tensors as hepguard's rows [batch, n_flat]: each input in graph
    order, constituents constituent-major (channels-first inputs transposed), masks [batch,
    length]."""
    out = []
    for i, x in enumerate(inputs):
        if i in case.masks:
            out.append(x[:, 0, :])
        elif x.dim() == 2:
            out.append(x)
        else:
            out.append((x.transpose(1, 2) if case.channels_first else x).flatten(1))
    return torch.cat(out, 1)
