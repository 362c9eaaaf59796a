"""SPSA: the input gradient of the cross-entropy estimated from forward passes only.

For a model hepguard can only run forward (an ONNX graph the autograd bridge cannot run), the
gradient attacks take ``gradient: spsa``: simultaneous-perturbation stochastic approximation
(Spall 1992) with Rademacher directions, antithetic pairs and steps of ``delta`` sigmas of each
entry. It calls nothing but :meth:`Model.score`, the deployed runtime, never autograd.

Each of the ``q`` directions ``v`` [batch, n_features] (entries +-1) gives two copies of ``x``,
``x+`` and ``x-``, whose entries sit ``delta`` sigmas above and below ``x`` (``v`` picks which is
which; the sigma is the mean of the entry's up and down sigma), cut at the physical bounds. With
``w = x_hi - x_lo`` the per-entry width actually spanned, the estimate of ``dL/dx_i`` is
``mean_k[(L(x+_k) - L(x-_k)) * v_ki] / w_i``: unbiased to first order, and exactly zero on
entries that may not move (frozen, sentinel, padding, zero sigma), since they span no width.

Integer features are estimated on their continuous value: the model is shown ``x +- delta``
sigmas there as it is (fractional values included), the same local slope the exact gradient of
the rounded point gives; the attacks round integer features to whole steps afterwards.

A cost of ``2 q + 1`` forward passes per estimate (one at ``x`` for the loss), against one
forward and one backward pass of the exact gradient. The estimate is noisy: for a locally linear
loss in ``d`` movable entries its cosine with the exact gradient (in sigma units) is about
``1 / sqrt(1 + (d - 1) / q)``, 0.2-0.6 at q = 32 on models with 60-600 inputs; attacks on it are
weaker, a lower bound on the model's vulnerability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pytest_hepguard.envelope import Envelope
from pytest_hepguard.models.base import Model

#: Input values per ``score`` call (2**24 float32: 64 MiB); at least one antithetic pair of
#: copies of the batch goes into every call, and all ``2 q + 1`` copies where they fit.
ELEMENTS_PER_CALL = 1 << 24


def score_loss(model: Model, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-event cross-entropy [batch] of ``labels`` [batch] at ``x`` [batch, n_features], from
    the outputs of :meth:`Model.score` (no gradient)."""
    return F.nll_loss(model.log_probabilities(model.score(x)), labels, reduction="none")


def spsa_gradient(
    model: Model,
    x: torch.Tensor,
    labels: torch.Tensor,
    envelope: Envelope,
    generator: torch.Generator,
    directions: int,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPSA estimate of the gradient of the per-event cross-entropy w.r.t. ``x``, and the loss.

    Args:
        model: any model; only :meth:`Model.score` is called.
        x: inputs [batch, n_features] on the model's device.
        labels: int64 [batch], the classes whose cross-entropy is differentiated.
        envelope: gives each entry's sigmas, which entries may move, and the physical bounds.
        generator: draws the Rademacher directions (on ``x``'s device); the same state gives
            the same estimate.
        directions: number ``q`` of random directions (antithetic pairs of forward passes).
        delta: finite-difference half-step in sigmas of each entry.

    Returns:
        ``(grad, loss)``: the estimate of ``dL/dx`` [batch, n_features] in units of loss per
        unit of each feature (as :func:`~pytest_hepguard.attacks.base.input_gradient`; times
        the entry's sigma it is per sigma), zero where the entry may not move; and the loss
        [batch] at ``x``.
    """
    up, down = envelope.sigmas(x)
    step = delta * (up + down) / 2
    lo = x - torch.minimum(step, (x - envelope.lower).clamp_min(0.0))
    hi = x + torch.minimum(step, (envelope.upper - x).clamp_min(0.0))
    width = hi - lo
    pairs = max(1, min(directions, ELEMENTS_PER_CALL // max(2 * x.numel(), 1)))
    total = torch.zeros_like(x)
    loss: torch.Tensor | None = None
    for start in range(0, directions, pairs):
        k = min(pairs, directions - start)
        v = torch.randint(0, 2, (k, *x.shape), generator=generator, device=x.device).bool()
        copies = [torch.where(v, hi, lo), torch.where(v, lo, hi)]
        if loss is None:  # the first call also scores x itself
            copies.insert(0, x.unsqueeze(0))
        stacked = torch.cat(copies)  # [copies, batch, n_features]
        n_copies = len(stacked)
        losses = score_loss(model, stacked.flatten(0, 1), labels.repeat(n_copies))
        losses = losses.reshape(n_copies, len(x))
        if loss is None:
            loss, losses = losses[0], losses[1:]
        diff = (losses[:k] - losses[k:]).unsqueeze(-1)  # L(x+) - L(x-) [k, batch, 1]
        total += torch.where(v, diff, -diff).sum(0)
    assert loss is not None
    grad = torch.where(width > 0, total / (directions * torch.where(width > 0, width, 1.0)), 0.0)
    return grad, loss
