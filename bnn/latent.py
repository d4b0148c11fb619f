"""The shape of the binary layers' latent weights: AdamBNN's three peaks, measured with and without scale.

AdamBNN reports that Adam-trained latent weights pile up near -1, 0 and +1 while SGD-trained ones
stay centred. The absolute measures test that picture as stated (mass within ``NEAR`` of 0 and of
+-1, the fraction beyond the clip). They depend on the weights' scale, and a small run cannot
reach it: Adam moves a weight by at most about ``lr`` per step, so a run whose summed learning
rate is well below 1 cannot carry weights from near 0 to +-1 at all. The relative measures
normalise each layer's weights by the layer's own 99th percentile of ``|w|`` (``q99``: robust to a
few outliers, unlike the maximum) and ask the same question of the shape: is the mass near 0 and
near the layer's extreme, with little between?

Measures (weights of all binary layers pooled, each weight counted once):

- ``mass_near_zero``: ``|w| <= NEAR``; ``mass_near_one``: ``||w| - 1| <= NEAR``;
  ``beyond_clip``: ``|w| > 1`` (no gradient through the clip STE: ReCU's dead weights);
  ``max_abs_weight``; ``median_abs_weight`` (see :func:`median_abs_weight`).
- ``rel_mass_near_zero``: ``|w|/q99 <= NEAR``; ``rel_mass_near_extreme``: ``|w|/q99 >= 1 - NEAR``.
- ``bimodality``: Sarle's bimodality coefficient of ``|w|/q99``,
  ``(G1^2 + 1) / (G2 + 3 (n-1)^2 / ((n-2)(n-3)))`` with the sample skewness ``G1`` and excess
  kurtosis ``G2``. It is taken of ``|w|`` because three peaks at -1, 0, +1 are two peaks in
  ``|w|`` (0 and the extreme), while on the signed weights a large central peak makes the
  coefficient fall (a symmetric three-point law with half its mass at 0 scores 0.5, below the
  uniform's 5/9). Reference values of ``|w|``: Gaussian ``w`` (half-normal) about 0.51, uniform
  ``w`` 5/9 ~ 0.556; above 5/9 suggests two modes, 1 is two point masses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bnn.layers import binary_weight_layers

NEAR = 0.1  # half-width of the bands around 0 and +-1 (or the layer's extreme) in which mass is measured
QUANTILE = 0.99  # each layer's scale: this quantile of its |w|
HISTOGRAM_LIMIT = 1.5  # rel_histogram covers w / q99 in [-1.5, 1.5], outliers in the end bins


def _layer_weights(model: nn.Module) -> list[Tensor]:
    """Each binary layer's latent weights, flattened, as float32 on the CPU (the bands compare in the
    weights' own precision, so a weight stored as 0.1 lies within ``NEAR`` of 0)."""
    weights = [layer.weight.detach().flatten().float().cpu() for layer in binary_weight_layers(model)]
    if not weights:
        raise ValueError("the model has no binary layers")
    return weights


def _quantile(values: Tensor, q: float) -> Tensor:
    """The ``q`` quantile (nearest rank, any size: ``torch.quantile`` refuses over 2**24 values)."""
    rank = max(1, math.ceil(q * values.numel()))
    return values.kthvalue(rank).values


def relative_weights(model: nn.Module) -> Tensor:
    """All binary latent weights, each layer divided by its own ``q99`` of ``|w|``, pooled."""
    scaled = []
    for w in _layer_weights(model):
        scale = _quantile(w.abs(), QUANTILE).clamp_min(torch.finfo(w.dtype).tiny)
        scaled.append(w / scale)
    return torch.cat(scaled)


def bimodality(values: Tensor) -> float:
    """Sarle's bimodality coefficient (sample skewness and excess kurtosis); NaN for constant input."""
    x = values.double()
    n = x.numel()
    if n < 4:
        raise ValueError("the bimodality coefficient needs at least 4 values")
    d = x - x.mean()
    m2, m3, m4 = (float((d**k).mean()) for k in (2, 3, 4))
    if m2 == 0:
        return float("nan")
    skew = m3 / m2**1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    excess = ((n + 1) * (m4 / m2**2 - 3) + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (skew**2 + 1) / (excess + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def _fraction(mask: Tensor) -> float:
    return int(mask.sum()) / mask.numel()


def latent_mass(model: nn.Module) -> dict[str, float]:
    """The absolute measures: mass near 0 and near +-1, beyond the clip, and the largest ``|w|``."""
    a = torch.cat(_layer_weights(model)).abs()
    return {
        "mass_near_zero": _fraction(a <= NEAR),
        "mass_near_one": _fraction((a - 1).abs() <= NEAR),
        "beyond_clip": _fraction(a > 1),
        "max_abs_weight": float(a.max()),
    }


def relative_shape(model: nn.Module) -> dict[str, float]:
    """The scale-free measures: mass near 0 and near the layer's extreme, and the bimodality of ``|w|``."""
    a = relative_weights(model).abs()
    return {
        "rel_mass_near_zero": _fraction(a <= NEAR),
        "rel_mass_near_extreme": _fraction(a >= 1 - NEAR),
        "bimodality": bimodality(a),
    }


def latent_measures(model: nn.Module) -> dict[str, float]:
    """Every measure of the module docstring except the median: absolute and relative."""
    return {**latent_mass(model), **relative_shape(model)}


def median_abs_weight(model: nn.Module) -> float:
    """The median ``|w|`` of all binary latent weights: how far a weight typically is from 0."""
    return float(torch.cat(_layer_weights(model)).abs().median())


def rel_histogram(model: nn.Module, bins: int = 121) -> dict[str, list[float]]:
    """Histogram of ``w / q99`` on ``[-1.5, 1.5]`` (outliers in the end bins), as ``latent_histogram``."""
    limit = HISTOGRAM_LIMIT
    values = relative_weights(model).clamp(-limit, limit)
    counts = torch.histc(values, bins=bins, min=-limit, max=limit)
    edges = torch.linspace(-limit, limit, bins + 1)
    return {"edges": edges.tolist(), "counts": counts.tolist()}
