"""Binary layers that keep real latent weights, and the stage mode that switches them.

One model definition serves every stage; :func:`set_mode` flips plain Python attributes (never
parameters or buffers), so a stage-2 model loads a stage-1 state dict with ``strict=True``.

Modes:

- ``"real"``: a real-valued network (no sign anywhere); teachers and the real-valued baselines.
- ``"binary_act"`` (stage 1): binary activations, real weights.
- ``"binary"`` (stage 2): binary activations and binary weights ``alpha * sign(w)``, with
  ``alpha`` the detached per-output-channel mean ``|w|`` of the latent weights ``w`` (ReActNet);
  with the ``recu`` weight binarizer, ReCU's ``sign(clamp(standardise(w)))`` and the layer's output multiplied
  by a learnable per-channel ``scale`` (ReCU's ``alpha``, initialised ``U[0, 1)`` as in ReCU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnn.binarize import (
    ACTIVATION_BINARIZERS,
    WEIGHT_BINARIZERS,
    RecuSign,
    ScaledSignSTE,
    StdNormalise,
    recu_bound,
    recu_signs,
    recu_standardised,
)

MODES = ("real", "binary_act", "binary")


class _BinaryWeightMixin:
    """Weight binarization shared by :class:`BinaryConv2d` and :class:`BinaryLinear`."""

    weight: Tensor
    binarize_weights: bool
    weight_binarizer: str
    tau: float

    def _init_binary(self, weight_binarizer: str) -> None:
        if weight_binarizer not in WEIGHT_BINARIZERS:
            raise ValueError(
                f"unknown weight binarizer {weight_binarizer!r}; choose from {WEIGHT_BINARIZERS}"
            )
        self.weight_binarizer = weight_binarizer
        self.binarize_weights = False
        self.tau = 0.85  # ReCU's clamp quantile; the training loop schedules it.
        if weight_binarizer == "recu":
            self.scale = nn.Parameter(torch.rand(self.weight.shape[0]))

    def effective_weight(self) -> Tensor:
        w = self.weight
        if not self.binarize_weights:
            return w
        if self.weight_binarizer == "recu":
            return RecuSign.apply(w, self.tau)
        alpha = w.detach().abs().mean(tuple(range(1, w.dim())), keepdim=True)
        return ScaledSignSTE.apply(w, alpha)

    def forward_signs(self, out: Tensor | None = None) -> Tensor:
        """The signs (True = +1) the binary forward pass uses: of ``w``, or for ReCU of the
        channel-centred ``w`` (standardising and clamping keep the sign). With ``out`` (of ``w``'s
        shape), written there as ``out``'s 1 and 0: into float32 several times faster than into a
        new bool tensor on CPU."""
        w = self.weight.detach()
        if self.weight_binarizer == "recu":
            return recu_signs(w, out)
        return torch.ge(w, 0, out=out) if out is not None else w >= 0

    def blocked_weights(self) -> Tensor:
        """Latent weights (True) to which the weight binarizer passes no gradient: ``|w| > 1`` under
        the clip STE; under ``recu`` those beyond the clamp, ``|standardised w| > Q_tau`` at the
        layer's current ``tau`` (only the channel's mean and std still carry a gradient to them);
        none while the weights are real (no binarizer)."""
        w = self.weight.detach()
        if not self.binarize_weights:
            return torch.zeros_like(w, dtype=torch.bool)
        if self.weight_binarizer == "recu":
            scaled, _ = recu_standardised(w)
            return (scaled.abs() > recu_bound(scaled, self.tau)).view_as(w)
        return w.abs() > 1

    def _scaled(self, out: Tensor, channel_dim: int) -> Tensor:
        if self.weight_binarizer != "recu" or not self.binarize_weights:
            return out
        shape = [1] * out.dim()
        shape[channel_dim] = -1
        return out * self.scale.view(shape)


class BinaryConv2d(_BinaryWeightMixin, nn.Conv2d):
    """Conv2d whose kernel is ``alpha * sign(w)`` in mode ``"binary"`` and ``w`` otherwise."""

    def __init__(self, *args, weight_binarizer: str = "ste", **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self._init_binary(weight_binarizer)

    def forward(self, x: Tensor) -> Tensor:
        return self._scaled(self._conv_forward(x, self.effective_weight(), self.bias), 1)


class BinaryLinear(_BinaryWeightMixin, nn.Linear):
    """Linear layer whose kernel is ``alpha * sign(w)`` in mode ``"binary"`` and ``w`` otherwise."""

    def __init__(self, *args, weight_binarizer: str = "ste", **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self._init_binary(weight_binarizer)

    def forward(self, x: Tensor) -> Tensor:
        return self._scaled(F.linear(x, self.effective_weight(), self.bias), -1)


BINARY_WEIGHT_LAYERS = (BinaryConv2d, BinaryLinear)


class LearnableBias(nn.Module):
    """A per-channel learnable shift, broadcast over (N, C) or (N, C, H, W) inputs."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x + self.bias.view(shape)


class SignActivation(nn.Module):
    """Binarizes its input in the binary modes, passes it through in mode ``"real"``.

    ``std_normalise`` (ReCU's recipe, off by default): in training mode, divide each sample by
    its standard deviation before the sign, as ReCU's ``BinarizeConv2d`` does with its input. The
    forward sign is unchanged (a positive scale); the gradient window of the estimator moves.
    ``probe``, when set (by :func:`bnn.diagnostics.saturation_probe`), is called with the exact
    tensor the sign sees.
    """

    def __init__(self, binarizer: str = "approx_sign"):
        super().__init__()
        if binarizer not in ACTIVATION_BINARIZERS:
            raise ValueError(
                f"unknown activation binarizer {binarizer!r}; choose from {tuple(ACTIVATION_BINARIZERS)}"
            )
        self.binarizer = binarizer
        self._sign = ACTIVATION_BINARIZERS[binarizer]
        self.enabled = True
        self.std_normalise = False
        self.probe: Callable[[Tensor], None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if self.std_normalise and self.training:
            x = StdNormalise.apply(x)
        if self.probe is not None:
            self.probe(x)
        return self._sign(x)

    def extra_repr(self) -> str:
        return f"binarizer={self.binarizer}"


class RSign(nn.Module):
    """ReActNet's RSign: a learnable per-channel threshold, then sign."""

    def __init__(self, channels: int, binarizer: str = "approx_sign"):
        super().__init__()
        self.shift = LearnableBias(channels)
        self.sign = SignActivation(binarizer)

    def forward(self, x: Tensor) -> Tensor:
        return self.sign(self.shift(x))


class RPReLU(nn.Module):
    """ReActNet's RPReLU: shift, per-channel PReLU, shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=0.25)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))


def binary_weight_layers(model: nn.Module) -> Iterator[BinaryConv2d | BinaryLinear]:
    """The layers whose kernels are binarized in stage 2, in module order."""
    for module in model.modules():
        if isinstance(module, BINARY_WEIGHT_LAYERS):
            yield module


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch every binary layer of ``model`` to ``mode`` (see module docstring); returns ``model``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    for module in model.modules():
        if isinstance(module, BINARY_WEIGHT_LAYERS):
            module.binarize_weights = mode == "binary"
        elif isinstance(module, SignActivation):
            module.enabled = mode != "real"
    return model


def set_act_std_normalise(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn ReCU's per-sample std division of sign inputs (training only) on or off; returns ``model``."""
    for module in model.modules():
        if isinstance(module, SignActivation):
            module.std_normalise = enabled
    return model


def set_recu_tau(model: nn.Module, tau: float) -> None:
    for layer in binary_weight_layers(model):
        layer.tau = tau


INITS = ("kaiming", "reactnet")


@torch.no_grad()
def init_binary_weights(model: nn.Module, scheme: str) -> None:
    """Initialise the latent weights of every binary layer.

    ``kaiming`` (default) is torch's symmetric Kaiming-uniform init: half the signs start negative,
    so C2I against init is informative. ``reactnet`` is the public ReActNet/AdamBNN init,
    ``U[0, 0.001)``: every sign starts at +1, and C2I against init then means "fraction still
    positive".
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose from {INITS}")
    for layer in binary_weight_layers(model):
        if scheme == "kaiming":
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))  # torch's default for conv/linear
        else:
            layer.weight.uniform_(0.0, 0.001)
