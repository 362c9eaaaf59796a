"""The JetClass ParticleNet (``kin`` inputs) as a model of raw physics quantities.

``particlenet_kin()`` is the ``--hepguard-model examples.jetclass.model:particlenet_kin``
factory. The network is weaver-core's ``ParticleNet`` with the weights the Particle Transformer
authors trained on JetClass (``../shared/realdata/jetclass-particlenet``, see its ``SOURCE.md``).
In front of it, :class:`ParticleNetKin` builds the seven ``kin`` features of upstream's
``data/JetClass/JetClass_kin.yaml`` from the quantities hepguard perturbs, so every envelope is
in physical units (GeV, rapidity, radians) and the gradient reaches them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pytest_hepguard.exceptions import ModelError

REPO = Path(__file__).resolve().parents[2]
#: The state_dict: ``../shared/realdata`` beside the repository.
WEIGHTS = REPO.parent / "shared" / "realdata" / "jetclass-particlenet" / "ParticleNet_kin.pt"
#: Output columns, in order (upstream's ``label_*`` names without the prefix).
CLASSES = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
#: Constituents the network takes (upstream's ``length``).
LENGTH = 128
#: ``(a, b)`` of ``x' = clip((x - a) * b, -5, 5)`` for log pT, log E, log pT/pT_jet,
#: log E/E_jet and Delta R, in that order (upstream ``JetClass_kin.yaml``).
_STANDARDISE = ((1.7, 0.7), (2.0, 0.7), (-4.7, 0.7), (-4.7, 0.7), (0.2, 4.0))
_CLIP = 5.0
#: Neighbours per point in ParticleNet's EdgeConv blocks, plus the point itself.
_K_PLUS_ONE = 17


class ParticleNetKin(nn.Module):
    """ParticleNet on raw jet and constituent quantities.

    Inputs (positional, float32, the order of the uncertainty file's ``inputs:``):

    - ``jet`` ``[batch, 2]``: ``jet_pt``, ``jet_energy`` in GeV;
    - ``particles`` ``[batch, 128, 5]`` (channels last): ``part_px``, ``part_py``,
      ``part_energy`` in GeV, ``part_deta``, ``part_dphi`` (rapidity and azimuth relative to the
      jet axis). A constituent is real when its energy is > 0; padding is all zeros.

    Output: ``[batch, 10]`` class probabilities (softmax), columns :data:`CLASSES`.

    Features are computed on real constituents only: the logarithms and the square roots see
    a safe argument (1) on padding and padding features are set to 0, so padding gives finite
    values and exactly zero gradients. The slots after the batch's last real constituent (but at
    least 17, the 16 neighbours plus the point) are cut before the network, as weaver's
    ``SequenceTrimmer`` does in training: ParticleNet masks padding, so the output is the same,
    about twice as fast on these jets (at most 82 of 128 slots real).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, jet: torch.Tensor, particles: torch.Tensor) -> torch.Tensor:
        slots = particles[..., 2] > 0  # [batch, 128]: real constituents (energy > 0)
        used = int(slots.any(0).nonzero().max()) + 1 if slots.any() else 0
        particles = particles[:, : max(used, _K_PLUS_ONE)]  # [batch, length, 5]
        px, py, energy, deta, dphi = particles.unbind(-1)  # each [batch, length]
        real = energy > 0
        one = torch.ones_like(energy)
        pt = torch.where(real, px.square() + py.square(), one).sqrt()
        e = torch.where(real, energy, one)
        jet_pt, jet_energy = jet[:, :1], jet[:, 1:2]  # [batch, 1] each
        dr2 = torch.where(real, deta.square() + dphi.square(), one)
        scalars = (
            pt.log(),
            e.log(),
            (pt / jet_pt).log(),
            (e / jet_energy).log(),
            dr2.clamp_min(1e-20).sqrt(),  # Delta R; the floor keeps the gradient finite at 0
        )
        columns = [
            ((x - a) * b).clamp(-_CLIP, _CLIP)
            for x, (a, b) in zip(scalars, _STANDARDISE, strict=True)
        ]
        columns += [deta, dphi]
        zero = torch.zeros_like(energy)
        features = torch.stack([torch.where(real, c, zero) for c in columns], 1)  # [b, 7, length]
        points = torch.stack([deta, dphi], 1)  # [batch, 2, length]; padding holds 0
        mask = real.unsqueeze(1)  # [batch, 1, length]
        return self.network(points, features, mask)


def particlenet_kin() -> ParticleNetKin:
    """The JetClass ParticleNet (kin) with its trained weights, in eval mode, on raw inputs
    (see :class:`ParticleNetKin` for the shapes and units)."""
    try:
        from weaver.nn.model.ParticleNet import ParticleNet
    except ImportError as exc:
        raise ModelError(
            f"the JetClass example needs weaver-core's ParticleNet ({exc}); install it with "
            "`pip install --no-deps weaver-core==0.5.3`"
        ) from exc
    if not WEIGHTS.is_file():
        raise ModelError(
            f"{WEIGHTS}: no such file; the JetClass example needs the ParticleNet_kin.pt "
            "state_dict of ../shared/realdata/jetclass-particlenet beside the repository"
        )
    network = ParticleNet(
        input_dims=7,
        num_classes=len(CLASSES),
        conv_params=[(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))],
        fc_params=[(256, 0.1)],
        use_fusion=False,
        use_fts_bn=True,
        use_counts=True,
        for_inference=True,
    )
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    network.load_state_dict({k.removeprefix("mod."): v for k, v in state.items()})
    return ParticleNetKin(network).eval()
