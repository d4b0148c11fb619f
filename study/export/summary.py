"""``python -m study.export.summary``: parameters, memory and operations of every model of the registry.

What larq's ``summary`` gives Keras users, counted the way ReActNet and AdamBNN report cost: the
multiply-accumulates of a binary layer (binary weights and binary inputs) are BOPs, those of a real
conv or linear layer (the stem, the classifier) FLOPs, and ``OPs = BOPs / 64 + FLOPs``; BatchNorm,
activations, shortcuts and pooling are not counted. Memory holds binary weights at 1 bit and every
other parameter at 32 bits. Counts are per image, at each model's usual input::

    python -m study.export.summary                      # the four models; ReActNet-A beside the paper
    python -m study.export.summary --layers reactnet_a  # one model, layer by layer
    python -m study.export.summary --readme README.md   # also put the table into the README's block

Example (a binary MLP on 28x28 digits)::

    >>> from bnn.models.registry import build_model
    >>> model = build_model("mlp", num_classes=10, in_channels=1, image_size=28, width=256)
    >>> costs = totals(layer_table(model, (1, 28, 28)))
    >>> costs["binary_params"], costs["bops"]
    (131072, 131072)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from bnn.layers import BINARY_WEIGHT_LAYERS
from bnn.models.registry import build_model
from study.cli import run_main
from study.readme import replace_block


@dataclass(frozen=True)
class Setting:
    """A model at the input it is used with: ``(channels, size, size)`` and ``classes``."""

    model: str
    width: int
    channels: int
    size: int
    classes: int
    data: str


SETTINGS = (
    Setting("mlp", 256, 1, 28, 10, "MNIST 28x28 (the default)"),
    Setting("cnn", 32, 1, 28, 10, "MNIST 28x28"),
    Setting("resnet18", 64, 3, 32, 10, "CIFAR-10 32x32"),
    Setting("reactnet_a", 32, 3, 224, 1000, "ImageNet 224x224"),
)
PAPER_REACTNET_A = {"ops": 0.87e8}  # ReActNet-A's OPs as AdamBNN reports them (ImageNet, 224x224)


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> pd.DataFrame:
    """One row per module that holds parameters or computes a conv/linear: binary and real
    parameters, BOPs and FLOPs for one image (counted in a forward pass with hooks)."""
    macs: dict[str, int] = {}

    def count(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = (
                    module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                )
                macs[name] = macs.get(name, 0) + output[0].numel() * per_output
            elif isinstance(module, nn.Linear):
                macs[name] = macs.get(name, 0) + module.in_features * module.out_features

        return hook

    hooks = [module.register_forward_hook(count(name)) for name, module in model.named_modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()

    rows = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own and name not in macs:
            continue
        binary = isinstance(module, BINARY_WEIGHT_LAYERS)
        weights = own["weight"].numel() if binary else 0
        rows.append({
            "layer": name,
            "type": type(module).__name__,
            "binary_params": weights,
            "real_params": sum(p.numel() for p in own.values()) - weights,
            "bops": macs.get(name, 0) if binary else 0,
            "flops": 0 if binary else macs.get(name, 0),
        })  # fmt: skip
    return pd.DataFrame(rows)


def totals(table: pd.DataFrame) -> dict[str, float]:
    """Sums of a :func:`layer_table`, memory in bytes at 32 bits and with 1-bit binary weights, OPs."""
    binary, real = int(table["binary_params"].sum()), int(table["real_params"].sum())
    bops, flops = int(table["bops"].sum()), int(table["flops"].sum())
    return {
        "binary_params": binary,
        "real_params": real,
        "bytes_32bit": 4 * (binary + real),
        "bytes_1bit": binary / 8 + 4 * real,
        "bops": bops,
        "flops": flops,
        "ops": bops / 64 + flops,
    }


def build(setting: Setting) -> nn.Module:
    return build_model(setting.model, num_classes=setting.classes, in_channels=setting.channels,
                       image_size=setting.size, width=setting.width)  # fmt: skip


def summary_table() -> pd.DataFrame:
    """Every model of :data:`SETTINGS` in one table, ReActNet-A's paper figures in their own columns."""
    rows = []
    for setting in SETTINGS:
        cost = totals(layer_table(build(setting), (setting.channels, setting.size, setting.size)))
        paper = PAPER_REACTNET_A if setting.model == "reactnet_a" else {}
        rows.append({
            "model": setting.model, "width": setting.width, "input": setting.data,
            "binary params": f"{cost['binary_params']:,}", "real params": f"{cost['real_params']:,}",
            "MB at 32 bit": f"{cost['bytes_32bit'] / 1e6:.2f}",
            "MB at 1 bit": f"{cost['bytes_1bit'] / 1e6:.2f}",
            "BOPs": f"{cost['bops']:.3g}", "FLOPs": f"{cost['flops']:.3g}", "OPs": f"{cost['ops']:.3g}",
            "paper OPs": f"{paper['ops']:.3g}" if paper else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m study.export.summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--layers", choices=[s.model for s in SETTINGS], help="one model, layer by layer")
    parser.add_argument("--readme", type=Path, help="put the table into this file's model-summary block")
    args = parser.parse_args(argv)
    if args.layers:
        setting = next(s for s in SETTINGS if s.model == args.layers)
        table = layer_table(build(setting), (setting.channels, setting.size, setting.size))
        print(table.to_markdown(index=False, intfmt=","))
        return
    table = summary_table().to_markdown(index=False, disable_numparse=True)
    print(table)
    if args.readme:
        replace_block(args.readme, "model-summary", table)


if __name__ == "__main__":
    run_main(main)
