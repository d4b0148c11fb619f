"""Sign binarizers with straight-through estimators, written as ``torch.autograd.Function``.

Forward is always ``sign`` with **+1 at zero** (torch's ``sign`` returns 0 there, larq returns +1;
a weight at exactly 0 must still binarize to something, so we follow larq). The variants differ
only in the gradient that stands in for sign's zero derivative:

- ``ste``: clip STE, gradient 1 where ``|x| <= 1`` and 0 elsewhere (weights in ReActNet/AdamBNN).
- ``approx_sign``: ReActNet's piecewise polynomial, derivative ``2 - 2|x|`` on ``[-1, 1]``.
- ``recu`` (weights only): ReCU's standardise-and-clamp, then sign with an identity gradient
  (ReCU's ``BinarizeConv2d``), see :func:`recu_quantize` and :class:`SignIdentitySTE`.

Autograd functions are measurably faster than the ``x + (sign(x) - x).detach()`` idiom
(one fused backward instead of a subtraction graph).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def hard_sign(x: Tensor) -> Tensor:
    """Sign with +1 at zero (and at -0.0), in the dtype of ``x``.

    ``sign(x) + 0.5`` maps {-1, 0, +1} to {-0.5, 0.5, 1.5}; a second sign gives {-1, +1, +1}.
    Three cheap elementwise passes: measured here several times faster than
    ``torch.where(x >= 0, 1.0, -1.0)``, whose bool mask and scalar broadcast are slow on CPU.
    """
    return torch.sign(x).add_(0.5).sign_()


# hardtanh's backward passes the gradient on the open interval (-bound, bound); with bound the next
# float after 1, that is exactly the closed interval [-1, 1] of the clip STE, in one fused kernel.
_CLIP = float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)))


def clip_ste_grad(grad: Tensor, x: Tensor) -> Tensor:
    """``grad`` where ``|x| <= 1``, else 0."""
    return torch.ops.aten.hardtanh_backward(grad, x, -_CLIP, _CLIP)


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


class SignIdentitySTE(torch.autograd.Function):
    """sign forward; identity backward (ReCU's ``BinaryQuantize`` for weights, after its clamp)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


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


def recu_standardise(w: Tensor) -> Tensor:
    """ReCU's standardisation: each output channel centred and divided by ``std / (2 * sqrt(2))``."""
    dims = tuple(range(1, w.dim()))
    centred = w - w.mean(dims, keepdim=True)
    return centred / (torch.sqrt(centred.var(dims, keepdim=True) + 1e-5) / (2 * math.sqrt(2)))


def recu_bound(scaled: Tensor, tau: float) -> float:
    """ReCU's clamp bound ``Q = -E|w| * ln(2 - 2 * tau)`` of standardised weights, from **one** mean
    over the whole layer, detached (ReCU computes it with ``.item()``)."""
    return float(-scaled.detach().abs().mean() * math.log(2 - 2 * tau))


def recu_quantize(w: Tensor, tau: float) -> Tensor:
    """ReCU's ``BinarizeConv2d`` weight path, before the sign: standardise, then clamp to ``[-Q, Q]``.

    ``torch.clamp`` passes gradient inside the range and none outside, as in ReCU; the sign that
    follows passes it straight through (:class:`SignIdentitySTE`). Returns the clamped,
    standardised weights.
    """
    scaled = recu_standardise(w)
    q = recu_bound(scaled, tau)
    return torch.clamp(scaled, -q, q)
