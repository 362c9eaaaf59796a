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

    @property
    def movable(self) -> list[int]:
        """Indices of the inputs an attack moves: all but the masks."""
        return [i for i in range(len(self.shapes)) if i not in self.masks]


CASES = {
    "deepjet_run3": Case(
        "cms-deepjet-run3/DeepJet_Run3_122X.onnx",
        ((15,), (25, 16), (25, 6), (4, 12), (1,)),
        {},
    ),
    "deepdoublex_bvl": Case(
        "cms-deepdoublex-bvl/BvL.onnx", ((1, 5), (60, 8), (40, 21), (5, 7)), {}
    ),
    "particlenet_ak4_hlt": Case(
        "cms-particlenet-ak4-hlt/particle-net.onnx",
        ((2, 25), (23, 25), (1, 25), (2, 5), (11, 5), (1, 5)),
        {2: (0, 1), 5: (3, 4)},
    ),
    "particlenet_ak4_chs": Case(
        "cms-particlenet-ak4-chs/particlenet_ak4.onnx",
        ((2, 25), (20, 25), (1, 25), (2, 5), (11, 5), (1, 5)),
        {2: (0, 1), 5: (3, 4)},
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
