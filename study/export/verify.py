"""Checks of a 1-bit export: its outputs against the trained network's, and its size.

:func:`verify` runs the trained network (mode ``"binary"``, eval) and the network rebuilt from the
export file (or the ONNX network, which takes pixels / 255) on one split; :func:`size_report` gives two
ratios to float32, because the binary layers alone shrink 32-fold while the file as a whole may not
(the MLP's real stem is 94 % of its file); :func:`failures` names what is outside the limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bnn import iterate_batches
from bnn.batches import normalize

# Largest logit difference accepted, relative to the largest |logit| (or 1). The export computes
# y * (gamma * alpha / sqrt(var + eps)) + shift on the exact integer +-1 products y, the trained network
# BN(conv(x, alpha * sign(w))): the same values rounded differently, a few float32 ulps (1.2e-7) per
# layer (measured on the default MLP: 2.9e-6 on logits up to 13.8, 2e-7 relative). One wrong sign bit
# or scale moves logits by 1e-2 or more (the tests flip one bit), so 1e-4 lies orders of magnitude
# from both.
RTOL = 1e-4
MAX_BINARY_LAYERS_SIZE_RATIO = 1 / 25  # binary layers in the export vs their float32 weights


@torch.no_grad()
def verify(
    trained: nn.Module, exported: Callable, split, data, batch_size: int = 512, pixels: bool = False
) -> dict[str, Any]:
    """Both networks (``exported``: any callable from inputs to logits) on ``split``: accuracy of each,
    differing predictions, max |logit difference|. ``exported`` takes what the trained network takes,
    ``(pixels / 255 - mean) / std``, or with ``pixels`` the float32 ``pixels / 255`` a user of the ONNX
    file feeds it (so its own normalisation is checked too)."""
    correct = [0, 0]
    mismatches, max_diff, max_logit = 0, 0.0, 0.0
    for start in range(0, len(split), batch_size):
        images, y = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        x = normalize(images, data.mean, data.std)  # as iterate_batches gives it to training and evaluate
        a, b = trained(x), exported(images.to(torch.float32) / 255 if pixels else x)
        correct[0] += int((a.argmax(1) == y).sum())
        correct[1] += int((b.argmax(1) == y).sum())
        mismatches += int((a.argmax(1) != b.argmax(1)).sum())
        max_diff = max(max_diff, float((a - b).abs().max()))
        max_logit = max(max_logit, float(a.abs().max()))
    n = len(split)
    tolerance = RTOL * max(1.0, max_logit)
    return {
        "samples": n,
        "trained_acc": correct[0] / n,
        "export_acc": correct[1] / n,
        "prediction_mismatches": mismatches,
        "max_abs_logit_diff": max_diff,
        "logit_tolerance": tolerance,
        "match": mismatches == 0 and max_diff <= tolerance,
    }


@torch.no_grad()
def accuracy(network: nn.Module, split, data, batch_size: int = 512) -> float:
    correct = 0
    for x, y in iterate_batches(split, batch_size=batch_size, mean=data.mean, std=data.std, shuffle=False):
        correct += int((network(x).argmax(1) == y).sum())
    return correct / len(split)


def float32_inference_bytes(architecture: dict[str, Any]) -> int:
    """4 bytes per element of every parameter and buffer of the architecture's state dict except the
    BatchNorms' ``num_batches_tracked`` (unused in eval mode): what the float32 checkpoint needs to run
    the network (the checkpoint file also holds initial signs and metadata, so its size is not it)."""
    from study.export.inference import build_architecture

    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        state = build_architecture(architecture).state_dict()
    return 4 * sum(t.numel() for key, t in state.items() if not key.endswith(".num_batches_tracked"))


def size_report(payload: dict[str, Any], file_bytes: int) -> dict[str, Any]:
    """The export's size against float32, twice: ``binary_layers_size_ratio``, the bytes of the binary
    layers in the export (sign bits, and a scale where none is folded) over their weights at float32;
    ``file_size_ratio``, the export file's ``file_bytes`` over :func:`float32_inference_bytes`."""
    layers = payload["binary_layers"].values()
    weights = sum(torch.Size(e["shape"]).numel() for e in layers)
    export_bytes = sum(e["bits"].numel() + 4 * e.get("scale", torch.empty(0)).numel() for e in layers)
    float32_bytes = float32_inference_bytes(payload["architecture"])
    return {
        "binary_weights": weights,
        "binary_bytes_export": export_bytes,
        "binary_bytes_float32": 4 * weights,
        "binary_layers_size_ratio": export_bytes / (4 * weights),
        "export_file_bytes": file_bytes,
        "float32_inference_bytes": float32_bytes,
        "file_size_ratio": file_bytes / float32_bytes,
    }


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    if not result["match"]:
        found.append("the export's outputs differ from the trained network's")
    if not result.get("onnx_match", True):
        found.append("the ONNX network's outputs differ from the export's")
    if result["binary_layers_size_ratio"] > MAX_BINARY_LAYERS_SIZE_RATIO:
        limit = round(1 / MAX_BINARY_LAYERS_SIZE_RATIO)
        found.append(f"the binary layers take more than 1/{limit} of their float32 size")
    return found
