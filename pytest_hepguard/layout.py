"""How a model's input tensors map to one flat row per event, so attacks, envelopes and metrics
work on ``x`` [batch, n_flat] whatever the model takes.

A single-input model takes the row as it is: [batch, n_features]. A multi-input model (the
uncertainty file's ``inputs:``) takes, per input, per-event features [batch, F], padded
constituents [batch, length, F] (or [batch, F, length] channels-first, weaver's layout) and
masks; the row holds them one after the other, constituents constituent-major
(``trk_pt[0], trk_eta[0], trk_pt[1], ...``). Each entry of the row has the envelope of its
feature; padded constituents and masks never move (:meth:`Layout.padded`). A feature shared by
several per-constituent inputs (ParticleNet's angles) is held once; an input's ``scaling``
(weaver's ``preprocess.json``) is applied in :meth:`Layout.unpack`, so the row stays in physical
units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import DataError
from pytest_hepguard.uncertainties import (
    FeatureSpec,
    InputScaling,
    InputSpec,
    UncertaintyModel,
)


@dataclass(frozen=True)
class Block:
    """Where one model input sits in the row: ``index`` [*shape] holds, per entry of the input
    (in the row's order: [F], [length, F], or [length] for a mask), its position in the row.
    A feature shared with an earlier input points at that input's entries."""

    spec: InputSpec
    index: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.index.shape


class Layout:
    """The row layout of ``uncertainties`` (single-input when it has no ``inputs:``).

    Attributes:
        specs: the envelope of each row entry [n_flat] (``trk_pt[3]`` for constituent 3's
            ``trk_pt``; masks frozen).
        names: the entry names [n_flat].
        feature_of: the feature (or mask input) each entry belongs to [n_flat]: what reports
            aggregate displacements over.
        blocks: the model inputs in the uncertainty file's order (empty for a single input).

    Each input appends its entries in order; a per-constituent feature already placed by an
    earlier input (shared, same length) is not repeated: both inputs read the same entries, so
    every perturbation moves them together.
    """

    def __init__(self, uncertainties: UncertaintyModel) -> None:
        self.blocks: tuple[Block, ...] = ()
        if not uncertainties.inputs:
            self.specs = uncertainties.features
            self.feature_of = uncertainties.feature_names
        else:
            by_name = {f.name: f for f in uncertainties.features}
            specs: list[FeatureSpec] = []
            feature_of: list[str] = []
            placed: dict[str, np.ndarray] = {}  # feature -> its row positions
            blocks = []

            def place(names: list[str], of: list[str], spec: list[FeatureSpec]) -> np.ndarray:
                """Append entries; their row positions [len(names)]."""
                specs.extend(replace(e, name=n) for e, n in zip(spec, names, strict=True))
                feature_of.extend(of)
                return np.arange(len(specs) - len(names), len(specs))

            for spec in uncertainties.inputs:
                if spec.per == "event":
                    index = place(
                        list(spec.features),
                        list(spec.features),
                        [by_name[f] for f in spec.features],
                    )
                elif spec.per == "constituent":
                    assert spec.length is not None
                    new = [f for f in spec.features if f not in placed]
                    for c in range(spec.length):
                        where = place([f"{f}[{c}]" for f in new], new, [by_name[f] for f in new])
                        for f, i in zip(new, where, strict=True):
                            placed.setdefault(f, np.empty(spec.length, dtype=np.int64))[c] = i
                    index = np.stack([placed[f] for f in spec.features], axis=-1)
                else:
                    assert spec.length is not None
                    index = place(
                        [f"{spec.name}[{c}]" for c in range(spec.length)],
                        [spec.name] * spec.length,
                        [FeatureSpec("", None, 0.0, 0.0, frozen=True)] * spec.length,
                    )
                blocks.append(Block(spec, index))
            self.specs = tuple(specs)
            self.feature_of = tuple(feature_of)
            self.blocks = tuple(blocks)
        self.names = tuple(s.name for s in self.specs)
        self._masked = self._mask_pairs()
        self._mask_of = {b.spec.name: m for b, m in self._masked}
        self._index = {b.spec.name: torch.from_numpy(b.index) for b in self.blocks}
        self._device_index: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._scaling = {
            b.spec.name: _scaling_tensors(b.spec.scaling)
            for b in self.blocks
            if b.spec.scaling is not None
        }

    def _mask_pairs(self) -> list[tuple[Block, Block | None]]:
        """Each constituent block with the mask block that defines its padding (or None)."""
        masks = {t: b for b in self.blocks if b.spec.per == "mask" for t in b.spec.mask_of}
        return [(b, masks.get(b.spec.name)) for b in self.blocks if b.spec.per == "constituent"]

    @property
    def multi_input(self) -> bool:
        return bool(self.blocks)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(b.spec.name for b in self.blocks)

    # -- data -------------------------------------------------------------------------------

    def flatten(self, events: Events) -> Events:
        """``events`` as rows of this layout: per-event columns and padded constituent columns
        (``events.constituents``, [n_events, length] each) placed in row order; masks are 1
        for the constituents whose features are not all at the pad value (files often hold
        inputs already padded, so the value, not the stored length, says what is real)."""
        if not self.multi_input or events.feature_names == self.names:
            return events
        n = len(events)
        rows = np.empty((n, len(self.specs)), dtype=np.float32)
        column = {name: j for j, name in enumerate(events.feature_names)}
        constituents = events.constituents
        real: dict[str, np.ndarray] = {}
        for b in self.blocks:
            if b.spec.per == "event":
                rows[:, b.index] = events.features[:, [column[f] for f in b.spec.features]]
            elif b.spec.per == "constituent":
                missing = [f for f in b.spec.features if f not in constituents]
                if missing:
                    raise DataError(
                        f"{events.source}: no per-constituent column {missing[0]!r} for input "
                        f"{b.spec.name!r}"
                    )
                block = np.stack([constituents[f] for f in b.spec.features], axis=-1)
                rows[:, b.index.reshape(-1)] = block.reshape(n, -1)
                real[b.spec.name] = ~(block == b.spec.pad_value).all(-1)
        for b in self.blocks:
            if b.spec.per == "mask":
                mask = np.zeros((n, b.shape[0]), dtype=bool)
                for target in b.spec.mask_of:
                    mask |= real[target]
                rows[:, b.index] = mask
        return Events(rows, self.names, events.labels, events.weights, events.source)

    # -- tensors ----------------------------------------------------------------------------

    def _gather(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        """``block``'s entries of rows ``x`` [batch, n_flat]: [batch, *block.shape]."""
        return x[:, self._index_on(block, x.device)]

    def _index_on(self, block: Block, device: torch.device) -> torch.Tensor:
        """``block.index`` as an int64 tensor on ``device`` (copied there once)."""
        key = (block.spec.name, device)
        if key not in self._device_index:
            self._device_index[key] = self._index[block.spec.name].to(device)
        return self._device_index[key]

    def _padding(self, x: torch.Tensor, block: Block, mask: Block | None) -> torch.Tensor:
        """Bool [batch, length]: the padded constituents of ``block`` in rows ``x``."""
        if mask is not None:
            return self._gather(x, mask) == 0
        return (self._gather(x, block) == block.spec.pad_value).all(-1)

    def padded(self, x0: torch.Tensor) -> torch.Tensor:
        """Bool [batch, n_flat]: entries of padded constituents (mask 0, or every feature of
        the constituent at the pad value when the input has no mask). Masks themselves are
        frozen, not padding."""
        out = torch.zeros(x0.shape, dtype=torch.bool, device=x0.device)
        for block, mask in self._masked:
            index = self._index_on(block, x0.device).flatten()
            pad = self._padding(x0, block, mask).unsqueeze(-1).expand(-1, *block.shape)
            out[:, index] |= pad.flatten(1)
        return out

    def unpack(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The model's input tensors from rows ``x`` [batch, n_flat], in ``inputs:`` order:
        [batch, F]; [batch, length, F] or channels-first [batch, F, length]; masks [batch,
        length, 1] or channels-first [batch, 1, length]. Inputs with a ``scaling`` get
        ``clip((x - median) * norm_factor, lower, upper)`` per feature, and its ``pad`` in
        padded constituents (differentiable in ``x``). A single-input layout gives ``[x]``."""
        if not self.multi_input:
            return [x]
        out = []
        for b in self.blocks:
            t = self._gather(x, b)
            scaling = self._scaling.get(b.spec.name)
            if scaling is not None:
                median, norm, lower, upper, pad = (s.to(x.device, x.dtype) for s in scaling)
                t = torch.clamp((t - median) * norm, lower, upper)
                if b.spec.per == "constituent":
                    padding = self._padding(x, b, self._mask_of[b.spec.name]).unsqueeze(-1)
                    t = torch.where(padding, pad, t)
            if b.spec.per == "mask":
                t = t.unsqueeze(1) if b.spec.channels_first else t.unsqueeze(-1)
            elif b.spec.per == "constituent" and b.spec.channels_first:
                t = t.transpose(1, 2)
            out.append(t)
        return out

    def input_shapes(self) -> list[tuple[int, ...]]:
        """Per input, its shape without the batch axis as the model sees it."""
        shapes = []
        for b in self.blocks:
            if b.spec.per == "mask":
                shape = (1, b.shape[0]) if b.spec.channels_first else (b.shape[0], 1)
            elif b.spec.per == "constituent" and b.spec.channels_first:
                shape = (b.shape[1], b.shape[0])
            else:
                shape = b.shape
            shapes.append(shape)
        return shapes


def _scaling_tensors(scaling: InputScaling) -> tuple[torch.Tensor, ...]:
    """``scaling`` as float32 tensors [F] each: median, norm_factor, lower, upper, pad."""
    return tuple(
        torch.tensor(v, dtype=torch.float32)
        for v in (scaling.median, scaling.norm_factor, scaling.lower, scaling.upper, scaling.pad)
    )
