"""Adversarial training inside the declared envelope (the defence of arXiv 2203.13890).

The seed paper trains on FGSM examples of the current model in place of every training batch;
here the examples are crafted by hepguard's own attacks in the audit's unit, so a model is
trained against exactly the perturbations it is later audited on: each entry moves by up to
``epsilon`` sigmas of its declared uncertainty, integer features by whole steps, sentinel
values and frozen features never, and never beyond the physical bounds.

Single-input models only (an uncertainty file without ``inputs:``). Rows ``x`` [batch, n] are the
model's raw physical inputs in the file's feature order; labels ``y`` [batch] are int64 classes.

The one-line hook for a user's own training loop::

    envelope = training_envelope(uncertainties, x_train)
    schedule = linear_schedule(0.0, 1.0, epochs=5)
    for epoch in range(epochs):
        for x_batch, y_batch in loader:
            x_batch = adversarial_batch(model, x_batch, y_batch, envelope, epsilon=schedule(epoch))
            ...

or :func:`fit`, a complete small training loop.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pytest_hepguard.attacks import get_attack
from pytest_hepguard.attacks.base import Attack, SampleAttack
from pytest_hepguard.envelope import Envelope, feature_std
from pytest_hepguard.exceptions import AttackError, HepguardError
from pytest_hepguard.models.base import Model
from pytest_hepguard.uncertainties import UncertaintyModel

__all__ = [
    "FitHistory",
    "adversarial_batch",
    "adversarial_examples",
    "fit",
    "linear_schedule",
    "training_envelope",
]

#: Attacks that craft training examples (one batch at a time, exact input gradients).
ATTACKS = ("fgsm", "pgd")
#: What the module returns.
OUTPUTS = ("logits", "probabilities")


def training_envelope(
    uncertainties: UncertaintyModel,
    features: np.ndarray | torch.Tensor,
    device: torch.device | str = "cpu",
) -> Envelope:
    """The audit's envelope (boxes of ``epsilon`` sigmas of each feature's declared uncertainty)
    for the training set ``features`` [n, n_features].

    ``std`` envelopes take each column's standard deviation over ``features`` (sentinel values
    excluded), as the audit does over its sample. Raises :class:`HepguardError` for a
    multi-input uncertainty file (with ``inputs:``), a width other than the file's feature count,
    or non-finite values.
    """
    if uncertainties.inputs:
        name = "<string>" if uncertainties.source is None else str(uncertainties.source)
        inputs = ", ".join(spec.name for spec in uncertainties.inputs)
        raise HepguardError(
            f"{name}: adversarial training supports single-input models only, but the file "
            f"declares `inputs:` ({inputs}); padding and per-constituent features of a "
            "multi-input model are not handled here: use an uncertainty file without `inputs:`"
        )
    specs = uncertainties.features
    values = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(specs):
        raise HepguardError(
            f"training features have shape {list(values.shape)}; expected [n_events, "
            f"{len(specs)}] with the columns {', '.join(s.name for s in specs)}"
        )
    bad = ~np.isfinite(values).all(0)
    if bad.any():
        raise HepguardError(
            "training features hold NaN or inf in "
            + ", ".join(s.name for s, b in zip(specs, bad, strict=True) if b)
        )
    return Envelope(specs, feature_std(values, specs), device)


def adversarial_examples(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    envelope: Envelope,
    *,
    attack: str = "fgsm",
    epsilon: float = 1.0,
    steps: int = 10,
    output: str = "logits",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial examples [batch, n] of ``x`` [batch, n] for the true classes ``y`` [batch].

    Crafted against the module's current weights by hepguard's ``fgsm`` or ``pgd`` (``steps``
    steps, random start) at size ``epsilon`` sigmas, so every row lies inside
    ``envelope.box(x, epsilon)``. ``output`` says what the module returns (``"logits"`` or
    ``"probabilities"``); the attacked loss is the cross-entropy of ``y``. The module runs in eval
    mode while the examples are crafted (dropout off, batch-norm statistics untouched) and every
    submodule's mode is restored afterwards; no gradient reaches its parameters. ``generator``
    drives PGD's random start (None: seeded from torch's global generator). The result is
    detached, with the dtype and device of ``x``.
    """
    _check_attack(attack, epsilon, steps, output, allow_zero=False)
    x, y = _check_batch(x, y, envelope)
    rows = x.to(envelope.device, torch.float32)
    labels = y.to(envelope.device)
    model = Model(module, envelope.device, type(module).__name__)
    model.output_kind = output  # type: ignore[assignment]
    with _modes_restored(module):
        module.eval()
        model.n_outputs = _n_outputs(model, rows[:1])
        _check_labels(labels, model.n_outputs)
        if generator is None:
            seed = int(torch.randint(0, 2**62, ()).item())
            generator = torch.Generator(envelope.device).manual_seed(seed)
        perturbed = _attack(attack, epsilon, steps).perturb(
            model, rows, labels, envelope, generator
        )
    return perturbed.x.detach().to(x)


def adversarial_batch(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    envelope: Envelope,
    *,
    fraction: float = 1.0,
    attack: str = "fgsm",
    epsilon: float = 1.0,
    steps: int = 10,
    output: str = "logits",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The batch ``x`` [batch, n] with ``fraction * batch`` rows (rounded, halves up), chosen at
    random with ``generator``, replaced by their :func:`adversarial_examples` (``epsilon`` in
    sigmas).

    ``fraction`` 1 is the seed's recipe (the whole batch replaced, no rows drawn); 0, or
    ``epsilon`` 0 (the start of a warm-up schedule), returns ``x`` unchanged. The other rows are
    ``x``'s, bit for bit. The result is detached.
    """
    _check_fraction(fraction)
    _check_attack(attack, epsilon, steps, output, allow_zero=True)
    x, y = _check_batch(x, y, envelope)
    n = len(x)
    k = math.floor(fraction * n + 0.5)
    if k == 0 or epsilon == 0:
        return x
    options = {"attack": attack, "epsilon": epsilon, "steps": steps, "output": output}
    if k == n:
        return adversarial_examples(module, x, y, envelope, generator=generator, **options)
    device = x.device if generator is None else generator.device
    rows = torch.randperm(n, generator=generator, device=device)[:k].to(x.device)
    out = x.detach().clone()
    out[rows] = adversarial_examples(
        module, x[rows], y[rows], envelope, generator=generator, **options
    )
    return out


def linear_schedule(start: float, stop: float, epochs: int) -> Callable[[int], float]:
    """Epsilon (sigmas) of each epoch (0-based): ``start`` at epoch 0, rising (or falling)
    linearly to reach ``stop`` at epoch ``epochs``, then ``stop``.

    ``linear_schedule(0, 1, 4)`` gives 0, 0.25, 0.5, 0.75, 1, 1, ... An epsilon of 0 trains
    that epoch nominally (:func:`adversarial_batch`, :func:`fit`).
    """
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise HepguardError(f"linear_schedule: {name} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise HepguardError(
                f"linear_schedule: {name} must be a finite epsilon >= 0 in sigmas, got {value!r}"
            )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise HepguardError(f"linear_schedule: epochs must be a whole number >= 1, got {epochs!r}")
    start, stop = float(start), float(stop)

    def schedule(epoch: int) -> float:
        if epoch < 0:
            raise HepguardError(f"linear_schedule: epochs count from 0, got epoch {epoch}")
        if epoch >= epochs:
            return stop
        return start + (stop - start) * epoch / epochs

    return schedule


@dataclass
class FitHistory:
    """What :func:`fit` did: the mean training loss of each epoch (over the batches it trained
    on, adversarial rows included, event-weighted), the epsilon (sigmas) of each epoch, and
    the wall time in seconds."""

    loss: list[float] = field(default_factory=list)
    epsilon: list[float] = field(default_factory=list)
    seconds: float = 0.0


def fit(
    module: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    uncertainties: UncertaintyModel,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    attack: str | None = "fgsm",
    epsilon: float | Callable[[int], float] = 1.0,
    fraction: float = 1.0,
    steps: int = 10,
    weights: np.ndarray | None = None,
    output: str = "logits",
    seed: int = 0,
) -> FitHistory:
    """Train ``module`` in place on ``x`` [n, n_features] (raw inputs) and classes ``y`` [n].

    Adam at learning rate ``lr``; ``epochs`` passes over batches of ``batch_size`` shuffled by a
    generator seeded with ``seed``. The loss is the cross-entropy of the true class on the
    module's logits (``output="logits"``: [batch, classes], or one logit for two classes), or
    the negative log of its probabilities (``output="probabilities"``), weighted by the event
    ``weights`` [n] if given (normalised to mean 1). With ``attack`` (``"fgsm"`` or ``"pgd"``)
    each batch is :func:`adversarial_batch` of the current weights at ``epsilon`` sigmas (a
    number, or a function of the 0-based epoch such as :func:`linear_schedule`) with
    ``fraction`` of its rows replaced, in the envelope of :func:`training_envelope`;
    ``attack=None`` trains nominally. Runs on the device of the module's parameters.
    Deterministic for a given seed on the CPU (dropout draws from a forked generator seeded
    with ``seed``); each submodule's train/eval mode is restored at the end.
    """
    started = time.perf_counter()
    _check_fit(epochs, batch_size, lr, attack, epsilon, fraction, steps, output)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    envelope = training_envelope(uncertainties, x, device)
    rows = torch.as_tensor(x).detach().to(device, torch.float32)
    labels = _as_labels(y).to(device)
    if len(labels) != len(rows):
        raise HepguardError(f"x has {len(rows)} rows but y has {len(labels)} labels")
    if len(rows) == 0:
        raise HepguardError("x has no rows: nothing to train on")
    w = _normalised_weights(weights, len(rows)).to(device)
    model = Model(module, device, type(module).__name__)
    model.output_kind = output  # type: ignore[assignment]
    with _modes_restored(module):
        module.eval()
        model.n_outputs = _n_outputs(model, rows[: min(batch_size, len(rows))])
    _check_labels(labels, model.n_outputs)
    history = FitHistory()
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    crafting = torch.Generator(device).manual_seed(seed)
    forked = [device.index] if device.type == "cuda" else []
    with _modes_restored(module), torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        module.train()
        for epoch in range(epochs):
            eps = _epoch_epsilon(epsilon, epoch, attack)
            total, weight = 0.0, 0.0
            for batch in torch.randperm(len(rows), generator=order).split(batch_size):
                batch = batch.to(device)
                xb, yb, wb = rows[batch], labels[batch], w[batch]
                if attack is not None:
                    xb = adversarial_batch(
                        module,
                        xb,
                        yb,
                        envelope,
                        fraction=fraction,
                        attack=attack,
                        epsilon=eps,
                        steps=steps,
                        output=output,
                        generator=crafting,
                    )
                loss = (wb * model.loss(xb, yb)).sum()
                optimizer.zero_grad()
                (loss / len(batch)).backward()
                optimizer.step()
                total += float(loss.detach())
                weight += float(wb.sum())
            history.loss.append(total / weight)
            history.epsilon.append(eps)
    history.seconds = time.perf_counter() - started
    return history


# ---- checks and helpers -----------------------------------------------------------------------


def _attack(name: str, epsilon: float, steps: int) -> Attack | SampleAttack:
    """The attack ``name`` at size ``epsilon`` sigmas (``steps`` for PGD), from the registry."""
    return get_attack(name, {"epsilon": epsilon, **({"steps": steps} if name == "pgd" else {})})


def _check_attack(attack: str, epsilon: float, steps: int, output: str, allow_zero: bool) -> None:
    """An :class:`AttackError` (or :class:`HepguardError`) naming the bad argument."""
    if attack not in ATTACKS:
        raise AttackError(
            f"unknown attack {attack!r} for adversarial training; expected one of "
            f"{', '.join(ATTACKS)}"
        )
    _check_epsilon(epsilon, allow_zero)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttackError(f"steps must be a whole number >= 1 (PGD steps), got {steps!r}")
    _check_output(output)


def _check_output(output: str) -> None:
    """``output`` names what the module returns."""
    if output not in OUTPUTS:
        raise HepguardError(
            f"output must be one of {', '.join(OUTPUTS)} (what the module returns), got {output!r}"
        )


def _check_fraction(fraction: float) -> None:
    """``fraction`` is a share of rows in [0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise HepguardError(f"fraction must be a number in [0, 1], got {fraction!r}")
    if not 0.0 <= fraction <= 1.0:
        raise HepguardError(
            f"fraction must be in [0, 1] (the share of rows replaced), got {fraction!r}"
        )


def _check_epsilon(epsilon: object, allow_zero: bool, where: str = "") -> None:
    """``epsilon`` is a finite number of sigmas, > 0 (or >= 0 with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise AttackError(f"epsilon{where} must be a number of sigmas, got {epsilon!r}")
    if not math.isfinite(epsilon) or epsilon < 0 or (epsilon == 0 and not allow_zero):
        raise AttackError(
            f"epsilon{where} must be a finite size {bound} in sigmas of the declared "
            f"uncertainties, got {epsilon!r}"
        )


def _check_batch(
    x: torch.Tensor, y: torch.Tensor, envelope: Envelope
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [batch, n] floating and ``y`` [batch] integer classes (detached)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise HepguardError(f"x must be a floating-point tensor [batch, n], got {_what(x)}")
    n = len(envelope.names)
    if x.dim() != 2 or x.shape[1] != n:
        raise HepguardError(
            f"x has shape {list(x.shape)}; expected [batch, {n}] with the envelope's features "
            f"{', '.join(envelope.names)}"
        )
    labels = _as_labels(y)
    if len(labels) != len(x):
        raise HepguardError(f"x has {len(x)} rows but y has {len(labels)} labels")
    return x.detach(), labels.to(x.device)


def _as_labels(y: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``y`` as int64 [n]; integral floats are accepted."""
    labels = torch.as_tensor(y).detach()
    if labels.dim() != 1:
        raise HepguardError(f"y must be one class per event [n], got shape {list(labels.shape)}")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise HepguardError("y must hold whole class indices, got fractional values")
    return labels.long()


def _check_labels(labels: torch.Tensor, n_outputs: int) -> None:
    """Every label is a class of a module with ``n_outputs`` outputs (one output: 2 classes)."""
    n_classes = max(n_outputs, 2)
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise HepguardError(
            f"label {int(labels[bad][0])} is outside the module's classes 0..{n_classes - 1} "
            f"(its output has width {n_outputs}); {int(bad.sum())} labels are out of range"
        )


def _n_outputs(model: Model, x: torch.Tensor) -> int:
    """The module's output width on rows ``x`` [k, n] (no gradient)."""
    with torch.no_grad():
        return int(model.raw(x).shape[1])


def _check_fit(
    epochs: int,
    batch_size: int,
    lr: float,
    attack: str | None,
    epsilon: float | Callable[[int], float],
    fraction: float,
    steps: int,
    output: str,
) -> None:
    """A :class:`HepguardError` naming the first bad argument of :func:`fit`."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HepguardError(f"{name} must be a whole number >= 1, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise HepguardError(f"lr must be a finite learning rate > 0, got {lr!r}")
    if attack is None:
        _check_output(output)
        return
    _check_attack(attack, 1.0, steps, output, allow_zero=False)
    if not callable(epsilon):
        _check_epsilon(epsilon, allow_zero=False)
    _check_fraction(fraction)


def _epoch_epsilon(
    epsilon: float | Callable[[int], float], epoch: int, attack: str | None
) -> float:
    """Epsilon (sigmas) of ``epoch``; 0 without an attack."""
    if attack is None:
        return 0.0
    if not callable(epsilon):
        return float(epsilon)
    eps = epsilon(epoch)
    _check_epsilon(eps, allow_zero=True, where=f" of epoch {epoch} (from the schedule)")
    return float(eps)


def _normalised_weights(weights: np.ndarray | None, n: int) -> torch.Tensor:
    """Event weights [n] scaled to mean 1 (ones without weights)."""
    if weights is None:
        return torch.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise HepguardError(f"weights have shape {list(w.shape)}; expected [{n}], one per event")
    if not np.isfinite(w).all() or w.mean() <= 0:
        raise HepguardError("weights must be finite with a positive mean")
    return torch.as_tensor(w / w.mean(), dtype=torch.float32)


def _what(value: object) -> str:
    """A short description of ``value`` for messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


@contextmanager
def _modes_restored(module: nn.Module) -> Iterator[None]:
    """Each submodule's train/eval mode as it was before, whatever happens inside."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
