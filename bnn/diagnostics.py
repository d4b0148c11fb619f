"""The AdamBNN diagnostics, computed inside training: FF ratio, C2I ratio, saturation, dead weights,
histograms.

Signs are kept as bool tensors (+1 at zero as :func:`bnn.binarize.hard_sign`), one per binary
layer: the signs the binary forward pass uses (``w >= 0``; for ReCU the channel-centred ``w``).
Counting stays on the device and is read once per epoch, so the per-step cost is one comparison
per layer and no host synchronisation.

Definitions (``N`` latent weights of all binary layers, ``s_t`` their signs after step ``t``):

- FF ratio (flip-flop), per optimizer step: ``sum |s_{t+1} - s_t| / (2N)``, i.e. the fraction of
  signs that changed in that step; reported as the mean over the epoch's steps.
- C2I ratio: ``1 - sum |s_T - s_0| / (2N)``, the fraction of signs equal to a reference: the start
  of the current stage (``c2i_stage``) and the very first random initialisation (``c2i_init``);
  ``changed_from_init = 1 - c2i_init``.
- Dead weights (ReCU's notion): ``dead_beyond_clip``, the fraction of latent weights with
  ``|w| > 1``, where the clip STE passes no gradient; ``dead_zero_grad``, the fraction whose loss
  gradient was exactly zero at every step of the epoch (weight decay not counted).
- Saturation: the fraction of sign inputs with ``|x| > 1`` (zero gradient under the clip STE);
  ``saturation`` on the validation pass (eval mode), ``saturation_train`` on sampled training
  batches (train mode: BatchNorm uses batch statistics, so the two differ).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from bnn.layers import SignActivation, binary_weight_layers


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
        self._previous = self.start
        self._numel = sum(s.numel() for s in self.start)
        self._flips = torch.zeros((), dtype=torch.int64, device=self.start[0].device) if self.start else None
        self._steps = 0

    def step(self) -> None:
        current = [layer.forward_signs() for layer in self._layers]
        for now, before in zip(current, self._previous, strict=True):
            self._flips += torch.ne(now, before).sum()
        self._previous = current
        self._steps += 1

    def epoch_summary(self) -> dict[str, float]:
        """Mean FF over the steps since the last call, and C2I now; resets the flip count."""
        if not self._numel:
            return {}
        ff = float(self._flips) / (self._steps * self._numel) if self._steps else 0.0
        self._flips.zero_()
        self._steps = 0
        c2i_init = sign_agreement(self._previous, self.init)
        return {
            "ff_ratio": ff,
            "c2i_stage": sign_agreement(self._previous, self.start),
            "c2i_init": c2i_init,
            "changed_from_init": 1.0 - c2i_init,
        }


class DeadWeightTracker:
    """Per epoch: the fraction of latent weights beyond the clip, and of those with no loss gradient.

    Call :meth:`step` after ``loss.backward()`` (before the optimizer adds weight decay) and
    :meth:`epoch_summary` at each epoch end.

    >>> import torch
    >>> from bnn.layers import BinaryLinear, set_mode
    >>> layer = set_mode(BinaryLinear(2, 1), "binary")
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[0.5, 2.0]]))
    >>> tracker = DeadWeightTracker(layer)
    >>> layer(torch.ones(1, 2)).sum().backward()
    >>> tracker.step()
    >>> tracker.epoch_summary()
    {'dead_beyond_clip': 0.5, 'dead_zero_grad': 0.5}
    """

    def __init__(self, model: nn.Module):
        self._weights = [layer.weight for layer in binary_weight_layers(model)]
        self._numel = sum(w.numel() for w in self._weights)
        self._moved = [torch.zeros_like(w, dtype=torch.bool) for w in self._weights]

    def step(self) -> None:
        for moved, w in zip(self._moved, self._weights, strict=True):
            if w.grad is not None:
                moved.logical_or_(w.grad != 0)

    def epoch_summary(self) -> dict[str, float]:
        """Both fractions for the epoch just ended; resets the gradient record."""
        if not self._numel:
            return {}
        beyond = sum((w.detach().abs() > 1).sum() for w in self._weights)
        moved = sum(m.sum() for m in self._moved)
        for m in self._moved:
            m.zero_()
        return {
            "dead_beyond_clip": float(beyond) / self._numel,
            "dead_zero_grad": 1.0 - float(moved) / self._numel,
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
