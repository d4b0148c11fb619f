"""The AdamBNN diagnostics, computed inside training: FF ratio, C2I ratio, saturation, dead weights,
histograms.

Sign snapshots are bool tensors (+1 at zero as :func:`bnn.binarize.hard_sign`), one per binary
layer: the signs the binary forward pass uses (``w >= 0``; for ReCU the channel-centred ``w``).
Counting stays on the device and is read once per epoch: per step, one comparison per layer into a
float32 buffer (under ``recu`` after a mean per output channel), two multi-tensor ops, and no host
synchronisation.

Definitions (``N`` latent weights of all binary layers, ``s_t`` their signs after step ``t``):

- FF ratio (flip-flop), per optimizer step: ``sum |s_{t+1} - s_t| / (2N)``, i.e. the fraction of
  signs that changed in that step; reported as the mean over the epoch's steps.
- C2I ratio: ``1 - sum |s_T - s_0| / (2N)``, the fraction of signs equal to a reference: the start
  of the current stage (``c2i_stage``) and the very first random initialisation (``c2i_init``);
  ``changed_from_init = 1 - c2i_init``.
- Dead weights, per epoch (binary layers' latent weights only; weight decay not counted in gradients):
  ``dead_beyond_clip``, the fraction to which the weight binarizer passes no gradient at the epoch's
  end (``|w| > 1`` under the clip STE, beyond ReCU's clamp under ``recu``, 0 while weights are real:
  see :meth:`bnn.layers.BinaryLinear.blocked_weights`); ``dead_small_grad``, the fraction whose mean
  ``|loss gradient|`` over the epoch's steps is above 0 but below ``SMALL_GRADIENT`` times its layer's
  median of that mean (AdamBNN's dead weights: saturated activations leave them a tiny gradient;
  an exactly zero one, blocked or saturated on every sample, no optimizer revives);
  ``dead_relative_update``, the mean ``|update|`` per step of those weights (``w`` after
  ``optimizer.step()`` minus before, decay included) over the mean ``|update|`` of all binary
  weights; NaN when none is small or nothing moved (lr 0). SGD moves a weight in proportion to its
  gradient, so the ratio is small. Adam divides by the gradient's running RMS, so the ratio is near
  1 where small gradients are steadily small (AdamBNN's "Adam revives dead weights"); it is small
  again where the RMS still remembers larger gradients (``beta2`` 0.999: about 1000 steps) or the
  gradient comes in rare bursts. With momentum, a weight whose gradient has just collapsed (e.g.
  pushed past ReCU's clamp) coasts on its buffer for about ``1 / (1 - momentum)`` steps, which
  raises SGD's ratio most where few weights are small.
- Saturation: the fraction of sign inputs with ``|x| > 1`` (zero gradient under the clip STE);
  ``saturation`` on the validation pass (eval mode), ``saturation_train`` on sampled training
  batches (train mode: BatchNorm uses batch statistics, so the two differ).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from bnn.layers import SignActivation, binary_weight_layers

# A weight is "dead" (AdamBNN) when its mean |gradient| over the epoch is below this fraction of its
# layer's median. An order of magnitude: SGD then moves it about a tenth as far as a typical weight
# or less, while Adam's normalised step moves it about as far. It lies outside the bulk's own
# spread: were every weight's gradient drawn from one Gaussian, a single step would put about 5 %
# below a tenth of the median |g|, and the mean over an epoch's steps far fewer.
SMALL_GRADIENT = 0.1
DEAD_WEIGHT_KEYS = ("dead_beyond_clip", "dead_small_grad", "dead_relative_update")


def weight_signs(model: nn.Module) -> list[Tensor]:
    """Sign snapshot (True = +1) of every binary layer, as its binary forward pass uses them."""
    return [layer.forward_signs() for layer in binary_weight_layers(model)]


def sign_agreement(signs: list[Tensor], reference: list[Tensor]) -> float:
    """Fraction of signs equal between two snapshots: the C2I ratio against ``reference``."""
    if len(signs) != len(reference) or any(s.shape != r.shape for s, r in zip(signs, reference, strict=True)):
        raise ValueError("sign snapshots come from different architectures")
    total = sum(s.numel() for s in signs)
    same = sum(torch.eq(s, r.to(s.device)).sum() for s, r in zip(signs, reference, strict=True))
    return float(same) / total


class SignTracker:
    """Counts sign flips per optimizer step and measures C2I against two references.

    Call :meth:`step` after every ``optimizer.step()`` and :meth:`epoch_summary` at each epoch end.

    >>> import torch
    >>> from bnn.layers import BinaryLinear
    >>> layer = BinaryLinear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    >>> tracker = SignTracker(layer)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, 1.0]]))
    >>> tracker.step()
    >>> tracker.epoch_summary()["ff_ratio"]
    0.25
    """

    def __init__(self, model: nn.Module, init_signs: list[Tensor] | None = None):
        self._layers = list(binary_weight_layers(model))
        self.start = weight_signs(model)
        self.init = self.start if init_signs is None else init_signs
        self._numel = sum(s.numel() for s in self.start)
        # Per layer, float32: the signs after the last step as 1 and 0, a buffer for the next step's,
        # and how often each weight flipped this epoch. A float comparison into a float32 buffer and
        # float arithmetic measured 2-5x faster on CPU than a new bool tensor and a bool count per
        # step; the counts are integers, exact in float32 up to 2**24 steps an epoch.
        self._signs = [s.to(torch.float32) for s in self.start]
        self._next = [torch.empty_like(s) for s in self._signs]
        self._flips = [torch.zeros_like(s) for s in self._signs]
        self._steps = 0

    def step(self) -> None:
        if not self._layers:
            return
        for layer, signs in zip(self._layers, self._next, strict=True):
            layer.forward_signs(out=signs)
        torch._foreach_sub_(self._signs, self._next)  # -1 or +1 where a sign flipped, else 0
        torch._foreach_addcmul_(self._flips, self._signs, self._signs)
        self._signs, self._next = self._next, self._signs
        self._steps += 1

    def epoch_summary(self) -> dict[str, float]:
        """Mean FF over the steps since the last call, and C2I now; resets the flip counts."""
        if not self._numel:
            return {}
        flips = sum(f.sum(dtype=torch.float64) for f in self._flips)  # exact: a sum of integers
        ff = float(flips) / (self._steps * self._numel) if self._steps else 0.0
        for f in self._flips:
            f.zero_()
        self._steps = 0
        current = [s.bool() for s in self._signs]
        c2i_init = sign_agreement(current, self.init)
        return {
            "ff_ratio": ff,
            "c2i_stage": sign_agreement(current, self.start),
            "c2i_init": c2i_init,
            "changed_from_init": 1.0 - c2i_init,
        }


class DeadWeightTracker:
    """Per epoch: which latent weights the binarizer blocks, which get a tiny gradient, and how far
    the optimizer still moves those (module docstring).

    Call :meth:`before_step` after ``loss.backward()`` and before ``optimizer.step()`` (the
    gradient without weight decay; the weights before the update), :meth:`after_step` right after
    ``optimizer.step()``, and :meth:`epoch_summary` at each epoch end. Per step it adds two
    per-weight sums and copies the weights, on the device, with no host synchronisation: measured
    0.09 ms on the default MLP's 131,072 binary weights (one CPU thread), as much as the zero-gradient
    count it replaced, and 2-9 % of that MLP's training step at batch 128-16.

    >>> import torch
    >>> from bnn.layers import BinaryLinear, set_mode
    >>> layer = set_mode(BinaryLinear(2, 1), "binary")
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[0.5, 2.0]]))
    >>> tracker = DeadWeightTracker(layer)
    >>> layer(torch.ones(1, 2)).sum().backward()
    >>> tracker.before_step()
    >>> tracker.after_step()
    >>> tracker.epoch_summary()["dead_beyond_clip"]
    0.5
    """

    def __init__(self, model: nn.Module):
        self._layers = list(binary_weight_layers(model))
        self._weights = [layer.weight for layer in self._layers]
        self._numel = sum(w.numel() for w in self._weights)
        self._grad = [torch.zeros_like(w, dtype=torch.float32) for w in self._weights]
        self._moved = [torch.zeros_like(w, dtype=torch.float32) for w in self._weights]
        self._before = [torch.empty_like(w) for w in self._weights]
        self._detached = [w.detach() for w in self._weights]  # views: they follow in-place updates

    def before_step(self) -> None:
        # One multi-tensor op per statement for all layers (the same elementwise arithmetic as a
        # loop over them, without the per-layer dispatch that dominated small models' cost).
        pairs = zip(self._grad, self._weights, strict=True)
        with_grad = [(total, w.grad) for total, w in pairs if w.grad is not None]
        if with_grad:
            totals, grads = zip(*with_grad, strict=True)
            torch._foreach_add_(totals, torch._foreach_abs(grads))
        torch._foreach_copy_(self._before, self._detached)

    def after_step(self) -> None:
        torch._foreach_sub_(self._before, self._detached)
        torch._foreach_abs_(self._before)
        torch._foreach_add_(self._moved, self._before)

    def small_gradient(self) -> list[Tensor]:
        """Per layer, the weights (True) whose summed ``|gradient|`` this epoch is above 0 and below
        ``SMALL_GRADIENT`` times the layer's median (the same test on the per-step mean)."""
        return [(g > 0) & (g < SMALL_GRADIENT * g.median()) for g in self._grad]

    def epoch_summary(self) -> dict[str, float]:
        """The three measures for the epoch just ended; resets the sums."""
        if not self._numel:
            return {}
        small = self.small_gradient()
        count = int(sum(s.sum() for s in small))
        moved_small = float(sum(m[s].sum() for m, s in zip(self._moved, small, strict=True)))
        moved_all = float(sum(m.sum() for m in self._moved))
        for t in (*self._grad, *self._moved):
            t.zero_()
        relative = (moved_small / count) / (moved_all / self._numel) if count and moved_all else math.nan
        blocked = int(sum(layer.blocked_weights().sum() for layer in self._layers))
        return {
            "dead_beyond_clip": blocked / self._numel,
            "dead_small_grad": count / self._numel,
            "dead_relative_update": relative,
        }


@contextmanager
def saturation_probe(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Count sign inputs with ``|x| > 1`` (zero gradient under the clip STE) while active.

    Yields a dict with ``saturated`` and ``total`` tensors (on the inputs' device, read them once
    at the end); the probes are removed on exit. Counts the exact tensor each sign sees.
    """
    counts: dict[str, Tensor] = {}

    def probe(x: Tensor) -> None:
        saturated = (x.detach().abs() > 1).sum()
        if counts:
            counts["saturated"] += saturated
            counts["total"] += x.numel()
        else:
            counts["saturated"] = saturated
            counts["total"] = torch.tensor(x.numel(), device=x.device)

    signs = [m for m in model.modules() if isinstance(m, SignActivation)]
    for sign in signs:
        sign.probe = probe
    try:
        yield counts
    finally:
        for sign in signs:
            sign.probe = None


def saturation_fraction(counts: dict[str, Tensor]) -> float:
    total = int(counts.get("total", 0))
    return int(counts["saturated"]) / total if total else 0.0


def latent_histogram(model: nn.Module, bins: int = 121, limit: float | None = None) -> dict[str, list[float]]:
    """Histogram of all binary latent weights on ``[-limit, limit]`` (outliers clipped to the end bins).

    ``limit`` defaults to the largest ``|w|``, so the bins cover the weights whatever their scale.
    """
    weights = torch.cat(
        [layer.weight.detach().flatten().float().cpu() for layer in binary_weight_layers(model)]
    )
    if limit is None:
        limit = max(float(weights.abs().max()), 1e-6)
    counts = torch.histc(weights.clamp(-limit, limit), bins=bins, min=-limit, max=limit)
    edges = torch.linspace(-limit, limit, bins + 1)
    return {"edges": edges.tolist(), "counts": counts.tolist()}
