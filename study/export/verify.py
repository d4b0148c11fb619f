"""Checks of a 1-bit export: its outputs against the trained network's, and its size.

:func:`verify` runs the trained network (mode ``"binary"``, eval) and the network rebuilt from the
export file on one split; :func:`size_report` compares the bytes of the binary layers in the export
with their float32 weights in the checkpoint; :func:`failures` names what is outside the limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bnn import iterate_batches

# Largest logit difference accepted, relative to the largest |logit| (or 1). The export computes
# y * (gamma * alpha / sqrt(var + eps)) + shift on the exact integer +-1 products y, the trained network
# BN(conv(x, alpha * sign(w))): the same values rounded differently, a few float32 ulps (1.2e-7) per
# layer (measured on the default MLP: 2.9e-6 on logits up to 13.8, 2e-7 relative). One wrong sign bit
# or scale moves logits by 1e-2 or more (the tests flip one bit), so 1e-4 lies orders of magnitude
# from both.
RTOL = 1e-4
MAX_SIZE_RATIO = 1 / 25  # binary layers in the export vs their float32 weights in the checkpoint


@torch.no_grad()
def verify(trained: nn.Module, exported: Callable, split, data, batch_size: int = 512) -> dict[str, Any]:
    """Both networks (``exported``: any callable from inputs to logits) on ``split``: accuracy of each,
    differing predictions, max |logit difference|."""
    correct = [0, 0]
    mismatches, max_diff, max_logit = 0, 0.0, 0.0
    for x, y in iterate_batches(split, batch_size=batch_size, mean=data.mean, std=data.std, shuffle=False):
        a, b = trained(x), exported(x)
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


def size_report(payload: dict[str, Any]) -> dict[str, Any]:
    """Bytes of the binary layers in the export (sign bits, and a scale where none is folded) against
    their weights at float32 in the checkpoint."""
    layers = payload["binary_layers"].values()
    weights = sum(torch.Size(e["shape"]).numel() for e in layers)
    export_bytes = sum(e["bits"].numel() + 4 * e.get("scale", torch.empty(0)).numel() for e in layers)
    ratio = export_bytes / (4 * weights)
    return {
        "binary_weights": weights,
        "binary_bytes_export": export_bytes,
        "binary_bytes_float32": 4 * weights,
        "size_ratio": ratio,
    }


def failures(result: dict[str, Any]) -> list[str]:
    found = []
    if not result["match"]:
        found.append("the export's outputs differ from the trained network's")
    if not result.get("onnx_match", True):
        found.append("the ONNX network's outputs differ from the export's")
    if result["size_ratio"] > MAX_SIZE_RATIO:
        found.append(f"the binary layers take more than 1/{round(1 / MAX_SIZE_RATIO)} of their float32 size")
    return found
