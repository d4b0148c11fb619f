"""Sign binarizers with straight-through estimators, written as ``torch.autograd.Function``.

Forward is always ``sign`` with **+1 at zero** (torch's ``sign`` returns 0 there, larq returns +1;
a weight at exactly 0 must still binarize to something, so we follow larq). The variants differ
only in the gradient that stands in for sign's zero derivative:

- ``ste``: clip STE, gradient 1 where ``|x| <= 1`` and 0 elsewhere (weights in ReActNet/AdamBNN).
- ``approx_sign``: ReActNet's piecewise polynomial, derivative ``2 - 2|x|`` on ``[-1, 1]``.
- ``recu`` (weights only): ReCU's standardise-and-clamp, then sign with an identity gradient
  (ReCU's ``BinarizeConv2d``), see :class:`RecuSign`.

Autograd functions are measurably faster than the ``x + (sign(x) - x).detach()`` idiom
(one fused backward instead of a subtraction graph).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def hard_sign(x: Tensor) -> Tensor:
    """Sign with +1 at zero (and at -0.0), in the dtype of ``x``.

    ``sign(x) + 0.5`` maps {-1, 0, +1} to {-0.5, 0.5, 1.5}; a second sign gives {-1, +1, +1}.
    Three cheap elementwise passes: measured here several times faster than
    ``torch.where(x >= 0, 1.0, -1.0)``, whose bool mask and scalar broadcast are slow on CPU.
    """
    return torch.sign(x).add_(0.5).sign_()


def pass_band(bound: float) -> float:
    """The float32 ``b`` for which ``-b < x < b`` holds exactly when ``-bound <= x <= bound`` at
    float32: the next float32 after ``bound``."""
    return float(np.nextafter(np.float32(bound), np.float32(np.inf)))


def clamp_grad(grad: Tensor, x: Tensor, band: float) -> Tensor:
    """``grad`` where ``-band < x < band``, else 0, in one fused pass: hardtanh's backward. With
    ``band = pass_band(q)`` that is ``torch.clamp(x, -q, q)``'s gradient mask (its closed interval)."""
    return torch.ops.aten.hardtanh_backward(grad, x, -band, band)


_CLIP = pass_band(1.0)


def clip_ste_grad(grad: Tensor, x: Tensor) -> Tensor:
    """``grad`` where ``|x| <= 1``, else 0."""
    return clamp_grad(grad, x, _CLIP)


class SignSTE(torch.autograd.Function):
    """sign forward; clip straight-through gradient (1 on ``|x| <= 1``) backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return clip_ste_grad(grad, x)


class ScaledSignSTE(torch.autograd.Function):
    """``alpha * sign(w)`` forward; the clip STE backward, **not** scaled by ``alpha``.

    This is ReActNet/AdamBNN's ``HardBinaryConv``, whose detach trick
    ``(alpha * sign(w)).detach() - clamp(w, -1, 1).detach() + clamp(w, -1, 1)`` gives
    ``dL/dw = dL/dW_b * 1{|w| <= 1}``. One autograd node instead of a subtraction graph.
    """

    @staticmethod
    def forward(ctx, w: Tensor, alpha: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return hard_sign(w).mul_(alpha)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (w,) = ctx.saved_tensors
        return clip_ste_grad(grad, w), None


class ApproxSign(torch.autograd.Function):
    """sign forward; ReActNet's ApproxSign gradient ``max(0, 2 - 2|x|)`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return x.abs().mul_(-2).add_(2).clamp_(min=0).mul_(grad)


ACTIVATION_BINARIZERS = {"ste": SignSTE.apply, "approx_sign": ApproxSign.apply}
WEIGHT_BINARIZERS = ("ste", "recu")


def recu_tau(progress: float, tau_min: float = 0.85, tau_max: float = 0.99) -> float:
    """ReCU's clamp quantile, growing exponentially from ``tau_min`` to ``tau_max``.

    ``progress`` is the fraction of the stage done (epoch / epochs), as in ReCU's ``cpt_tau``.

    >>> round(recu_tau(0.0), 4), round(recu_tau(1.0), 4)
    (0.85, 0.99)
    """
    return tau_min + (tau_max - tau_min) * (math.exp(progress) - 1) / (math.e - 1)


def _row_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` as rows of its first dimension, each row's mean, and the rows centred (a new tensor)."""
    rows = x.reshape(x.shape[0], -1)
    mean = rows.mean(1, keepdim=True)
    return rows, mean, rows - mean


def _root_var(centred: Tensor, eps: float) -> Tensor:
    """Per row, ``sqrt(sum(centred**2) / (n - 1) + eps)``: ``torch.var``'s value from one norm per row
    (one read of the rows, no temporary), measured 40x faster than ``torch.var`` on a 512x512x3x3
    kernel and 2x faster than a row-wise dot product (one CPU thread)."""
    norm = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    return norm.square_().div_(centred.shape[1] - 1).add_(eps).sqrt_()


# ReCU divides the centred weights by std / (2 * sqrt(2)): squared, the constant is 8.
_RECU_SCALE_SQUARED = 8.0


def recu_standardised(w: Tensor) -> tuple[Tensor, Tensor]:
    """ReCU's standardisation as rows (one per output channel): each channel centred and divided by
    ``divisor = sqrt(var + 1e-5) / (2 * sqrt(2))`` (unbiased var). Returns both; no autograd."""
    _, _, centred = _row_stats(w.detach())
    divisor = _root_var(centred, 1e-5).div_(math.sqrt(_RECU_SCALE_SQUARED))
    return centred.div_(divisor), divisor


def recu_signs(w: Tensor, out: Tensor | None = None) -> Tensor:
    """The signs (True = +1) of ReCU's binary weights, ``w >= mean`` per output channel: a float
    difference is 0 only between equal floats, so these are the signs of ``w - mean`` and of the
    standardised weights (:class:`RecuSign`'s forward while ``Q > 0``), in one pass fewer. With
    ``out``, written there (as its dtype's 1 and 0) and returned."""
    rows = w.reshape(w.shape[0], -1)
    mean = rows.mean(1, keepdim=True)
    if out is None:
        return (rows >= mean).view_as(w)
    torch.ge(rows, mean, out=out.view(rows.shape))
    return out


def recu_bound(scaled: Tensor, tau: float) -> float:
    """ReCU's clamp bound ``Q = -E|w| * ln(2 - 2 * tau)`` of standardised weights, from **one** mean
    over the whole layer, detached (ReCU computes it with ``.item()``)."""
    return float(-scaled.detach().abs().mean() * math.log(2 - 2 * tau))


class RecuSign(torch.autograd.Function):
    """ReCU's ``BinarizeConv2d`` weight path in one autograd node: ``sign(clamp(standardise(w), -Q, Q))``
    forward; backward the identity through the sign, the clamp's mask, and the exact gradient of the
    per-channel standardisation (through its mean and its std).

    Autograd through ReCU's formula (its composition of torch ops) takes about 25 weight-sized
    passes per layer, and ``torch.var`` alone was 8 % of a binary ResNet-18 step; this takes 8
    forward and 6 backward, in place where it can (a fresh weight-sized tensor costs more than a
    pass). Forward signs are those of the standardised weights (the clamp keeps a sign when
    ``Q > 0``; at ``Q <= 0`` every weight is clamped to ``Q``, as in ``torch.clamp``). The gradient,
    per channel of ``n`` weights with ``s`` the standardised weights, ``d`` the divisor and ``g`` the
    clamp-masked upstream gradient: ``(g - mean(g) - s * sum(g * s) / (8 * (n - 1))) / d``. Equal to
    autograd through ReCU's formula to float rounding (tests/bnn/test_layers.py).
    """

    @staticmethod
    def forward(ctx, w: Tensor, tau: float) -> Tensor:
        scaled, divisor = recu_standardised(w)
        q = recu_bound(scaled, tau)
        ctx.save_for_backward(scaled, divisor)
        ctx.band = pass_band(q)
        signs = hard_sign(scaled) if q > 0 else hard_sign(torch.clamp(scaled, -q, q))
        return signs.view_as(w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        scaled, divisor = ctx.saved_tensors
        n = scaled.shape[1]
        passed = clamp_grad(grad.reshape(scaled.shape), scaled, ctx.band)
        along = torch.linalg.vecdot(passed, scaled).unsqueeze_(1).div_(-_RECU_SCALE_SQUARED * (n - 1))
        passed.sub_(passed.mean(1, keepdim=True)).addcmul_(scaled, along)
        return passed.div_(divisor).view_as(grad), None


class StdNormalise(torch.autograd.Function):
    """Each sample divided by its standard deviation (unbiased, ``+ 1e-5`` inside the root), as ReCU
    does with a binary conv's input in training; one autograd node with the exact gradient.

    ``torch.var`` measured 12 ms on a batch of 32 64x32x32 activations (one CPU thread) and autograd
    through the division about ten activation-sized passes; this takes four forward and four
    backward. With ``y = x / s``, ``n`` values per sample and ``t = sum(g * y) / (n - 1)``:
    ``dx = (g - t * y + t * mean(x) / s) / s``.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        rows, mean, centred = _row_stats(x)
        std = _root_var(centred, 1e-5)
        out = torch.div(rows, std, out=centred)  # the centred copy's memory, no longer needed
        ctx.save_for_backward(out, mean, std)
        return out.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out, mean, std = ctx.saved_tensors
        rows = grad.reshape(out.shape)
        t = torch.linalg.vecdot(rows, out).unsqueeze_(1).div_(out.shape[1] - 1)
        result = torch.addcmul(rows, out, t.neg())
        return result.add_(t.mul_(mean).div_(std)).div_(std).view_as(grad)
