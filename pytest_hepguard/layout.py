"""How a model's input tensors map to one flat row per event, so attacks, envelopes and metrics
work on ``x`` [batch, n_flat] whatever the model takes.

A single-input model takes the row as it is: [batch, n_features]. A multi-input model (the
uncertainty file's ``inputs:``) takes, per input, per-event features [batch, F], padded
constituents [batch, length, F] (or [batch, F, length] channels-first, weaver's layout) and
masks; the row holds them one after the other, constituents constituent-major
(``trk_pt[0], trk_eta[0], trk_pt[1], ...``). Each entry of the row has the envelope of its
feature; padded constituents and masks never move (:meth:`Layout.padded`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from pytest_hepguard.events import Events
from pytest_hepguard.exceptions import DataError
from pytest_hepguard.uncertainties import FeatureSpec, InputSpec, UncertaintyModel


@dataclass(frozen=True)
class Block:
    """Where one model input sits in the row: entries ``start:stop``, ``shape`` per event in
    the row's order ([F], [length, F] or [length] for a mask)."""

    spec: InputSpec
    start: int
    stop: int
    shape: tuple[int, ...]


class Layout:
    """The row layout of ``uncertainties`` (single-input when it has no ``inputs:``).

    Attributes:
        specs: the envelope of each row entry [n_flat] (``trk_pt[3]`` for constituent 3's
            ``trk_pt``; masks frozen).
        names: the entry names [n_flat].
        feature_of: the feature (or mask input) each entry belongs to [n_flat]: what reports
            aggregate displacements over.
        blocks: the model inputs in the uncertainty file's order (empty for a single input).
    """

    def __init__(self, uncertainties: UncertaintyModel) -> None:
        by_name = {f.name: f for f in uncertainties.features}
        self.blocks: tuple[Block, ...] = ()
        if not uncertainties.inputs:
            self.specs = uncertainties.features
            self.feature_of = uncertainties.feature_names
        else:
            specs: list[FeatureSpec] = []
            feature_of: list[str] = []
            blocks = []
            for spec in uncertainties.inputs:
                start = len(specs)
                if spec.per == "event":
                    shape: tuple[int, ...] = (len(spec.features),)
                    specs += [by_name[f] for f in spec.features]
                    feature_of += spec.features
                elif spec.per == "constituent":
                    assert spec.length is not None
                    shape = (spec.length, len(spec.features))
                    for c in range(spec.length):
                        specs += [replace(by_name[f], name=f"{f}[{c}]") for f in spec.features]
                        feature_of += spec.features
                else:
                    assert spec.length is not None
                    length = spec.length
                    shape = (length,)
                    specs += [
                        FeatureSpec(f"{spec.name}[{c}]", None, 0.0, 0.0, frozen=True)
                        for c in range(length)
                    ]
                    feature_of += [spec.name] * length
                blocks.append(Block(spec, start, len(specs), shape))
            self.specs = tuple(specs)
            self.feature_of = tuple(feature_of)
            self.blocks = tuple(blocks)
        self.names = tuple(s.name for s in self.specs)
        self._masked = self._mask_pairs()

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
        for the constituents the file had (``events.constituent_counts``), or, without counts,
        for those whose features are not all at the pad value."""
        if not self.multi_input or events.feature_names == self.names:
            return events
        n = len(events)
        rows = np.empty((n, len(self.specs)), dtype=np.float32)
        column = {name: j for j, name in enumerate(events.feature_names)}
        constituents = events.constituents
        real: dict[str, np.ndarray] = {}
        for b in self.blocks:
            if b.spec.per == "event":
                rows[:, b.start : b.stop] = events.features[:, [column[f] for f in b.spec.features]]
            elif b.spec.per == "constituent":
                missing = [f for f in b.spec.features if f not in constituents]
                if missing:
                    raise DataError(
                        f"{events.source}: no per-constituent column {missing[0]!r} for input "
                        f"{b.spec.name!r}"
                    )
                block = np.stack([constituents[f] for f in b.spec.features], axis=-1)
                rows[:, b.start : b.stop] = block.reshape(n, -1)
                counts = events.constituent_counts.get(b.spec.features[0])
                if counts is not None:  # entries the file had, before padding
                    real[b.spec.name] = np.arange(b.shape[0])[None, :] < counts[:, None]
                else:
                    real[b.spec.name] = ~(block == b.spec.pad_value).all(-1)
        for b in self.blocks:
            if b.spec.per == "mask":
                mask = np.zeros((n, b.shape[0]), dtype=bool)
                for target in b.spec.mask_of:
                    mask |= real[target]
                rows[:, b.start : b.stop] = mask
        return Events(rows, self.names, events.labels, events.weights, events.source)

    # -- tensors ----------------------------------------------------------------------------

    def padded(self, x0: torch.Tensor) -> torch.Tensor:
        """Bool [batch, n_flat]: entries of padded constituents (mask 0, or every feature of
        the constituent at the pad value when the input has no mask). Masks themselves are
        frozen, not padding."""
        out = torch.zeros(x0.shape, dtype=torch.bool, device=x0.device)
        for block, mask in self._masked:
            values = x0[:, block.start : block.stop].view(len(x0), *block.shape)
            if mask is not None:
                pad = x0[:, mask.start : mask.stop] == 0
            else:
                pad = (values == block.spec.pad_value).all(-1)
            out[:, block.start : block.stop] = pad.unsqueeze(-1).expand_as(values).flatten(1)
        return out

    def unpack(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The model's input tensors from rows ``x`` [batch, n_flat], in ``inputs:`` order:
        [batch, F]; [batch, length, F] or channels-first [batch, F, length]; masks [batch,
        length, 1] or channels-first [batch, 1, length]. A single-input layout gives ``[x]``."""
        if not self.multi_input:
            return [x]
        out = []
        for b in self.blocks:
            t = x[:, b.start : b.stop].view(len(x), *b.shape)
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
