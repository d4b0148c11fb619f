"""The reference code's formulas, transcribed for tests (not used by the library).

Each function follows the public code line by line, so a test compares bnn's fast autograd
functions with what the papers' code computes, never with our own reading of it:

- ReActNet / AdamBNN ``HardBinaryConv`` (github.com/liuzechun/AdamBNN, ``step2/reactnet.py``);
- ReCU ``BinarizeConv2d``, ``BinaryQuantize`` and ``BinaryQuantize_a``
  (github.com/z-hXu/ReCU, ``cifar/modules/binarized_modules.py``) and its ``cpt_tau``;
- AdamBNN's learning-rate schedule (``step2/train.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd import Function


def hard_binary_conv_weight(real_weights: torch.Tensor) -> torch.Tensor:
    """``HardBinaryConv.forward``'s binary weights, with its detach trick (ReActNet/AdamBNN)."""
    scaling_factor = torch.mean(
        torch.mean(torch.mean(abs(real_weights), dim=3, keepdim=True), dim=2, keepdim=True),
        dim=1,
        keepdim=True,
    )
    scaling_factor = scaling_factor.detach()
    binary_weights_no_grad = scaling_factor * torch.sign(real_weights)
    cliped_weights = torch.clamp(real_weights, -1.0, 1.0)
    return binary_weights_no_grad.detach() - cliped_weights.detach() + cliped_weights


class BinaryQuantize(Function):
    @staticmethod
    def forward(ctx, input):
        return torch.sign(input)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


class BinaryQuantize_a(Function):  # noqa: N801 (the reference's name)
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.sign(input)

    @staticmethod
    def backward(ctx, grad_output):
        input = ctx.saved_tensors[0]
        grad_input = (2 - torch.abs(2 * input)).clamp(min=0) * grad_output.clone()
        return grad_input


def recu_conv(a, w, alpha, tau, training=True, stride=1, padding=1):
    """ReCU's ``BinarizeConv2d.forward`` (input activations ``a``, weights ``w``, learnable ``alpha``)."""
    w0 = w - w.mean([1, 2, 3], keepdim=True)
    w1 = w0 / (torch.sqrt(w0.var([1, 2, 3], keepdim=True) + 1e-5) / 2 / np.sqrt(2))
    EW = torch.mean(torch.abs(w1))  # noqa: N806
    Q_tau = (-EW * torch.log(2 - 2 * torch.tensor(tau))).detach().cpu().item()  # noqa: N806
    w2 = torch.clamp(w1, -Q_tau, Q_tau)
    a0 = a / torch.sqrt(a.var([1, 2, 3], keepdim=True) + 1e-5) if training else a
    bw = BinaryQuantize.apply(w2)
    ba = BinaryQuantize_a.apply(a0)
    output = F.conv2d(ba, bw, None, stride, padding)
    return output * alpha


def recu_clamp_blocks(w, tau):
    """Which weights (True) ReCU's ``torch.clamp(w1, -Q_tau, Q_tau)`` passes no gradient to: its
    ``BinarizeConv2d.forward`` up to the clamp, then autograd through the clamp alone."""
    w0 = w - w.mean([1, 2, 3], keepdim=True)
    w1 = w0 / (torch.sqrt(w0.var([1, 2, 3], keepdim=True) + 1e-5) / 2 / np.sqrt(2))
    w1 = w1.detach().requires_grad_()
    EW = torch.mean(torch.abs(w1))  # noqa: N806
    Q_tau = (-EW * torch.log(2 - 2 * torch.tensor(tau))).detach().cpu().item()  # noqa: N806
    torch.clamp(w1, -Q_tau, Q_tau).sum().backward()
    return w1.grad == 0


def recu_cpt_tau(epoch: int, epochs: int, tau_min: float = 0.85, tau_max: float = 0.99) -> float:
    a = torch.tensor(np.e)
    T_min, T_max = torch.tensor(tau_min).float(), torch.tensor(tau_max).float()  # noqa: N806
    A = (T_max - T_min) / (a - 1)  # noqa: N806
    B = T_min - A  # noqa: N806
    return float(A * torch.tensor([torch.pow(a, epoch / epochs)]).float() + B)


def adambnn_epoch_lrs(lr0: float, epochs: int) -> list[float]:
    """The lr each epoch of AdamBNN's loop trains at: ``scheduler.step()`` first thing in ``train()``."""
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([w], lr=lr0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / epochs, last_epoch=-1)
    lrs = []
    for _ in range(epochs):
        optimizer.step()  # (the reference steps the scheduler first; stepping the optimizer first
        scheduler.step()  # only silences torch's warning: the lr that follows is the same)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs
