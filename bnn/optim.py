"""Optimizer and learning-rate schedule factories, and the one weight-decay rule.

What AdamBNN's code decays (``step1/train.py`` and ``step2/train.py``, one rule): every parameter
with 4 dimensions or ``conv`` in its name. In its ReActNet that is every conv kernel (the real
stem and the binary 3x3 and 1x1 kernels) **and** the learnable shifts (``LearnableBias``, stored as
``(1, C, 1, 1)``: 78 tensors); BatchNorm weights and biases, PReLU slopes and the final ``fc``
(weight and bias) get none. Its model has no other linear layer and no conv bias.

What we decay (:func:`decayed_parameters`): the kernel (``weight``) of every ``nn.Conv2d`` and
``nn.Linear``, binary or real, **except** ``model.classifier``; nothing else: biases, BatchNorm,
PReLU slopes, ReCU's ``scale`` and the learnable shifts (stored as ``(C,)``) get none. The kernels
and the classifier match AdamBNN; linear kernels extend the rule to the MLP's layers. The shifts
differ: AdamBNN decays them, we do not; that matters only where the decay is above 0 (AdamBNN's
stage 1, 5e-6; its stage 2 uses 0).

``adam`` and ``sgd`` apply it as coupled L2 (added to the gradient, as ``torch.optim.Adam``/
``SGD`` do); ``adamw`` decouples it.

>>> import torch
>>> from bnn.models import build_model
>>> model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, width=16)
>>> opt = create_optimizer(model, "adam", lr=1e-3, weight_decay=5e-6)
>>> [g["weight_decay"] for g in opt.param_groups]
[5e-06, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda groups, lr, momentum, nesterov, betas: torch.optim.Adam(groups, lr=lr, betas=betas),
    "adamw": lambda groups, lr, momentum, nesterov, betas: torch.optim.AdamW(groups, lr=lr, betas=betas),
    "sgd": lambda groups, lr, momentum, nesterov, betas: torch.optim.SGD(
        groups, lr=lr, momentum=momentum, nesterov=nesterov
    ),
}
SCHEDULES = ("linear", "cosine", "constant")


def decayed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Kernels of every conv and linear layer except ``model.classifier``."""
    classifier = getattr(model, "classifier", None)
    return [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and module is not classifier
    ]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decayed = {id(p) for p in decayed_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]


def create_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](param_groups(model, weight_decay), lr, momentum, nesterov, tuple(betas))


def create_schedule(
    optimizer: torch.optim.Optimizer, name: str, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch schedule, stepped once after each epoch.

    ``linear`` is AdamBNN's: its ``LambdaLR(1 - e/E)`` is stepped at the *start* of each epoch, so
    0-based epoch ``e`` runs at ``lr0 * (1 - (e + 1) / E)`` and the last epoch at 0 (one epoch
    with ``linear`` therefore trains nothing, as in AdamBNN). ``cosine`` runs epoch ``e`` at
    ``lr0 * (1 + cos(pi * e / E)) / 2``; ``constant`` at ``lr0``.

    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.Adam([w], lr=1.0)
    >>> schedule = create_schedule(opt, "linear", epochs=4)
    >>> lrs = []
    >>> for epoch in range(4):
    ...     lrs.append(opt.param_groups[0]["lr"])
    ...     schedule.step()
    >>> lrs
    [0.75, 0.5, 0.25, 0.0]
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")
    factors = {
        "linear": lambda epoch: 1.0 - (epoch + 1) / epochs,
        "cosine": lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
        "constant": lambda epoch: 1.0,
    }
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[name])
