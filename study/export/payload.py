"""From a trained fully binary network to the payload of a 1-bit export (see :mod:`study.export.format`).

Every binary layer becomes its sign bits (``forward_signs()``) and a per-output-channel scale: the
``ste`` binarizer's ``alpha``, the mean ``|w|`` over the non-output dims (as ``effective_weight``
computes it), or the ``recu`` binarizer's learnable ``scale`` (its forward is
``RecuSign(w) * scale``, and standardising and clamping keep the sign of the
channel-centred ``w``, which is what ``forward_signs()`` returns).

Where a binary layer's output goes into a BatchNorm and nowhere else, the scale is folded into that
BatchNorm: ``BN(alpha * y) = y * gamma * alpha / sqrt(var + eps) + beta - gamma * mean / sqrt(var + eps)``
(no division by ``alpha``, so exact at ``alpha = 0``). That is found on a sample forward pass, not from
the architecture's code: forward hooks see the BatchNorm's input tensor *be* the binary layer's output
tensor, and the autograd graph shows that tensor has no other consumer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnn.layers import BINARY_WEIGHT_LAYERS
from study.export.format import ExportError, pack_signs

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def layer_alpha(layer: nn.Module) -> Tensor:
    """The per-output-channel factor of a binary layer's output, as its binary forward applies it."""
    if layer.weight_binarizer == "recu":
        return layer.scale.detach().clone()
    w = layer.weight.detach()
    return w.abs().mean(tuple(range(1, w.dim())), keepdim=True).reshape(-1)


def fold_batchnorm(bn: _BatchNorm, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``BN(alpha * y) == y * scale + shift`` per channel (eval mode), in float32."""
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError("a BatchNorm without running statistics cannot be folded")
    invstd = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    ones = torch.ones_like(invstd)
    gamma = bn.weight.detach().double() if bn.weight is not None else ones
    beta = bn.bias.detach().double() if bn.bias is not None else 0 * ones
    scale = gamma * alpha.double() * invstd
    shift = beta - gamma * bn.running_mean.detach().double() * invstd
    return scale.float(), shift.float()


def _consumer_counts(outputs: list[Tensor]) -> Counter:
    """How many autograd nodes take each ``(node, output index)`` as input, over the whole graph."""
    counts: Counter = Counter()
    seen: set = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, index in node.next_functions:
            if parent is not None:
                counts[(parent, index)] += 1
                stack.append(parent)
    return counts


def batchnorm_followers(model: nn.Module, sample: Tensor) -> dict[str, str]:
    """``{binary layer name: BatchNorm name}`` for each binary layer, called once, whose output is the
    input of one BatchNorm (called once) and of nothing else."""
    outputs: dict[str, list[Tensor]] = {}
    bn_inputs: dict[str, list[Tensor]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, BINARY_WEIGHT_LAYERS):
            hooks.append(
                module.register_forward_hook(lambda m, i, o, n=name: outputs.setdefault(n, []).append(o))
            )
        elif isinstance(module, _BatchNorm):
            hooks.append(
                module.register_forward_hook(lambda m, i, o, n=name: bn_inputs.setdefault(n, []).append(i[0]))
            )
    try:
        with torch.enable_grad():  # the sample requires grad: every tensor after it has a graph node
            result = model(sample.detach().requires_grad_(True))
    finally:
        for hook in hooks:
            hook.remove()
    results = [result] if isinstance(result, Tensor) else [t for t in result if isinstance(t, Tensor)]
    consumers = _consumer_counts(results)
    followers = {}
    for bn_name, inputs in bn_inputs.items():
        if len(inputs) != 1:
            continue
        for layer_name, outs in outputs.items():
            out = outs[0]
            if len(outs) == 1 and out is inputs[0] and consumers[(out.grad_fn, out.output_nr)] == 1:
                followers[layer_name] = bn_name
    return followers


def export_payload(
    model: nn.Module, architecture: dict[str, Any], mean: Tensor, std: Tensor, source: str
) -> dict[str, Any]:
    """The export of ``model`` (built from ``architecture`` and in mode ``"binary"``) as a plain dict."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BINARY_WEIGHT_LAYERS)]
    if not layers:
        raise ExportError("the network has no binary layers: nothing to export at 1 bit")
    for name, layer in layers:
        if not layer.binarize_weights:
            raise ExportError(f"binary layer {name} is not in mode 'binary': not a fully binary network")
        if layer.bias is not None:
            raise ExportError(f"binary layer {name} has a bias, which the export does not support")
    model.eval()
    shape = (2, architecture["in_channels"], architecture["image_size"], architecture["image_size"])
    sample = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    followers = batchnorm_followers(model, sample)
    modules = dict(model.named_modules())
    binary: dict[str, dict] = {}
    folded: dict[str, dict] = {}
    for name, layer in layers:
        alpha = layer_alpha(layer)
        entry: dict[str, Any] = {
            "shape": list(layer.weight.shape),
            "bits": pack_signs(layer.forward_signs()),
            "folded_into": followers.get(name, ""),
        }
        if entry["folded_into"]:
            bn_name = entry["folded_into"]
            scale, shift = fold_batchnorm(modules[bn_name], alpha)
            folded[bn_name] = {"scale": scale, "shift": shift}
        else:
            entry["scale"] = alpha.float()
        binary[name] = entry
    state = model.state_dict()
    skipped = skipped_keys(binary, list(state))
    tensors = {key: value.detach().float().clone() for key, value in state.items() if key not in skipped}
    return {
        "source": source,
        "architecture": architecture,
        "input": {"mean": mean.detach().float().clone(), "std": std.detach().float().clone()},
        "binary_layers": binary,
        "folded_bns": folded,
        "tensors": tensors,
    }


def skipped_keys(binary_layers: dict[str, dict], state_keys: list[str]) -> set[str]:
    """The state-dict keys an export does not store as plain tensors (see :func:`export_payload`)."""
    skipped = {key for key in state_keys if key.endswith(".num_batches_tracked")}
    for name, entry in binary_layers.items():
        skipped.update({f"{name}.weight", f"{name}.scale"})
        if entry["folded_into"]:
            skipped.update(f"{entry['folded_into']}.{key}" for key in BN_KEYS)
    return skipped & set(state_keys)
