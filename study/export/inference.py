"""The inference network rebuilt from a 1-bit export file alone: :func:`load_exported`.

The architecture comes from the project's model registry (the export stores ``build_model``'s
arguments); then every binary layer is replaced by a layer holding its +-1 kernel (unpacked from the
sign bits, float32, no latent weights), each BatchNorm that had a binary layer's scale folded into it
by a per-channel affine map, and each sign activation by a plain sign (+1 at zero). Every other
parameter and buffer is loaded from the file. The result is in eval mode and needs no gradient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnn.layers import BINARY_WEIGHT_LAYERS, SignActivation
from bnn.models import build_model
from study.export.format import ExportError, read_export, unpack_signs
from study.export.payload import skipped_keys


def _channel_view(t: Tensor, x: Tensor, channel_dim: int) -> Tensor:
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    return t.view(shape)


class HardSign(nn.Module):
    """``sign`` with +1 at zero (as :func:`bnn.binarize.hard_sign`), without an autograd function."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sign(torch.sign(x) + 0.5)


class SignConv2d(nn.Module):
    """A conv whose kernel is +-1 (buffer ``weight``), times an optional per-channel ``scale``."""

    def __init__(self, like: nn.Conv2d, signs: Tensor, scale: Tensor | None):
        super().__init__()
        if like.padding_mode != "zeros":
            raise ExportError(f"padding mode {like.padding_mode!r} is not supported")
        self.stride, self.padding, self.dilation, self.groups = (
            like.stride, like.padding, like.dilation, like.groups,
        )  # fmt: skip
        self.register_buffer("weight", signs.float() * 2 - 1)
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        return y if self.scale is None else y * _channel_view(self.scale, y, 1)


class SignLinear(nn.Module):
    """A linear layer whose kernel is +-1 (buffer ``weight``), times an optional per-output ``scale``."""

    def __init__(self, signs: Tensor, scale: Tensor | None):
        super().__init__()
        self.register_buffer("weight", signs.float() * 2 - 1)
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight)
        return y if self.scale is None else y * _channel_view(self.scale, y, -1)


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (dim 1): a BatchNorm with a binary layer's scale folded in."""

    def __init__(self, scale: Tensor, shift: Tensor):
        super().__init__()
        self.register_buffer("scale", scale.float())
        self.register_buffer("shift", shift.float())

    def forward(self, x: Tensor) -> Tensor:
        return x * _channel_view(self.scale, x, 1) + _channel_view(self.shift, x, 1)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def build_architecture(arch: dict[str, Any]) -> nn.Module:
    """The registry's model for an export's ``architecture`` (``build_model``'s arguments)."""
    try:
        return build_model(
            arch["model"],
            num_classes=arch["num_classes"],
            in_channels=arch["in_channels"],
            image_size=arch["image_size"],
            width=arch["width"],
            act_binarizer=arch["act_binarizer"],
            weight_binarizer=arch["weight_binarizer"],
            **arch["options"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"the stored architecture cannot be built ({type(exc).__name__}: {exc})") from None


def _check_layers(model: nn.Module, binary: dict[str, dict], folded: dict[str, dict]) -> None:
    modules = dict(model.named_modules())
    expected = sorted(n for n, m in modules.items() if isinstance(m, BINARY_WEIGHT_LAYERS))
    if sorted(binary) != expected:
        raise ExportError(
            f"the stored binary layers {sorted(binary)[:3]}... do not match the architecture's "
            f"{expected[:3]}..."
        )
    for name, entry in binary.items():
        layer, bn_name = modules[name], entry["folded_into"]
        if list(entry["shape"]) != list(layer.weight.shape):
            raise ExportError(
                f"binary layer {name}: stored shape {list(entry['shape'])}, the architecture has "
                f"{list(layer.weight.shape)}"
            )
        out = layer.weight.shape[0]
        if bn_name:
            if not isinstance(modules.get(bn_name), _BatchNorm) or bn_name not in folded:
                raise ExportError(f"binary layer {name} is folded into {bn_name!r}, not a stored BatchNorm")
            affine = folded[bn_name]
            if affine["scale"].shape != (out,) or affine["shift"].shape != (out,):
                raise ExportError(f"folded BatchNorm {bn_name}: expected {out} channels")
        elif not isinstance(entry.get("scale"), Tensor) or entry["scale"].shape != (out,):
            raise ExportError(f"binary layer {name}: expected a scale per output channel ({out})")
    if sorted(folded) != sorted(e["folded_into"] for e in binary.values() if e["folded_into"]):
        raise ExportError("the folded BatchNorms do not match the binary layers")


def _load_tensors(model: nn.Module, binary: dict[str, dict], tensors: dict[str, Tensor]) -> None:
    state = model.state_dict()
    expected = set(state) - skipped_keys(binary, list(state))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ExportError(
            f"the stored tensors do not match the architecture (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for key in expected:
        if tensors[key].shape != state[key].shape:
            raise ExportError(
                f"tensor {key}: stored shape {list(tensors[key].shape)}, the architecture has "
                f"{list(state[key].shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def inference_model(payload: dict[str, Any]) -> nn.Module:
    """The eval-mode inference network of an export payload (as :func:`read_export` returns it)."""
    model = build_architecture(payload["architecture"])
    binary, folded = payload["binary_layers"], payload["folded_bns"]
    _check_layers(model, binary, folded)
    _load_tensors(model, binary, payload["tensors"])
    modules = dict(model.named_modules())
    for name, entry in binary.items():
        signs = unpack_signs(entry["bits"], entry["shape"])
        scale = None if entry["folded_into"] else entry["scale"].float()
        layer = modules[name]
        _replace(
            model,
            name,
            SignConv2d(layer, signs, scale) if isinstance(layer, nn.Conv2d) else SignLinear(signs, scale),
        )
    for bn_name, affine in folded.items():
        _replace(model, bn_name, ChannelAffine(affine["scale"], affine["shift"]))
    for name, module in modules.items():
        if isinstance(module, SignActivation):
            _replace(model, name, HardSign())
    return model.eval().requires_grad_(False)


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild the runnable eval-mode inference network from an export file alone."""
    return inference_model(read_export(path))
