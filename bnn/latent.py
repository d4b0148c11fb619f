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
  ``beyond_clip``: ``|w| > 1`` (no gradient through the clip STE; under ReCU's clamp the dead
  weights are others: ``dead_beyond_clip`` of :mod:`bnn.diagnostics`);
  ``max_abs_weight``; ``median_abs_weight`` (see :func:`median_abs_weight`).
- ``rel_mass_near_zero``: ``|w|/q99 <= NEAR``; ``rel_mass_near_extreme``: ``|w|/q99 >= 1 - NEAR``.
- ``bimodality``: Sarle's bimodality coefficient of ``|w|/q99``,
  ``(G1^2 + 1) / (G2 + 3 (n-1)^2 / ((n-2)(n-3)))`` with the sample skewness ``G1`` and excess
  kurtosis ``G2``. It is taken of ``|w|`` because three peaks at -1, 0, +1 are two peaks in
  ``|w|`` (0 and the extreme), while on the signed weights a large central peak makes the
  coefficient fall (a symmetric three-point law with half its mass at 0 scores 0.5, below the
  uniform's 5/9). Reference values of ``|w|``: Gaussian ``w`` (half-normal) about 0.51, uniform
  ``w`` 5/9 ~ 0.556; above 5/9 suggests two modes, 1 is two point masses.
- Mixtures, on the signed weights pooled without per-layer scaling (see :func:`mixture_shape`):
  Gaussian mixtures of 1, 2 and 3 components compared by BIC. ``mixture_components``: the number
  with the lowest BIC; ``bic_gain_3v1``: ``(BIC(1) - BIC(3)) / m`` over the ``m`` weights fitted
  (at most ``MIXTURE_SAMPLE``, evenly spaced), > 0 favouring three. BIC counts Gaussian
  components, not modes: a Gaussian scores about -0.01 (1 component), but heavy tails (Laplace:
  about 0.11, 2 or 3 components) and a flat top (uniform, as the Kaiming init: 0.21, 3
  components) also prefer more than one. Separate peaks score well above that: 0.47 for 8 % of
  the mass near each of +-1 beside a broad centre, 4.4 for equal peaks at -1, 0, +1. So three
  peaks need ``mixture_components == 3`` with a gain well above the init's 0.21, and
  ``mass_near_one`` to place them at the clip (BIC does not see the scale).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from bnn.layers import binary_weight_layers

NEAR = 0.1  # half-width of the bands around 0 and +-1 (or the layer's extreme) in which mass is measured
QUANTILE = 0.99  # each layer's scale: this quantile of its |w|
HISTOGRAM_LIMIT = 1.5  # rel_histogram covers w / q99 in [-1.5, 1.5], outliers in the end bins
MIXTURE_SAMPLE = 20_000  # at most this many weights, evenly spaced, are fitted: fast, machine-independent


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


def mixture_sample(model: nn.Module) -> np.ndarray:
    """At most ``MIXTURE_SAMPLE`` pooled signed weights, at evenly spaced positions (no random draw)."""
    w = torch.cat(_layer_weights(model)).double()
    if w.numel() > MIXTURE_SAMPLE:
        w = w[torch.linspace(0, w.numel() - 1, MIXTURE_SAMPLE, dtype=torch.float64).round().long()]
    return w.numpy()


def mixture_shape(model: nn.Module) -> dict[str, float]:
    """Gaussian mixtures of 1, 2 and 3 components on the pooled signed weights, compared by BIC.

    Fitted to the standardised sample: BIC differences do not change with the scale, and sklearn's
    fixed variance floor (``reg_covar``) would swamp weights as small as ReActNet's init. A fixed
    ``random_state`` seeds the k-means starts. NaN for weights that are all equal (no shape).
    """
    w = mixture_sample(model)
    centre, scale = w.mean(), w.std()
    if not scale > 0:
        return {"mixture_components": math.nan, "bic_gain_3v1": math.nan}
    x = ((w - centre) / scale)[:, None]
    fits = [GaussianMixture(k, random_state=0).fit(x) for k in (1, 2, 3)]
    bic = [fit.bic(x) for fit in fits]
    return {"mixture_components": int(np.argmin(bic)) + 1, "bic_gain_3v1": float(bic[0] - bic[2]) / len(x)}


def latent_measures(model: nn.Module) -> dict[str, float]:
    """Every measure of the module docstring except the median: absolute, relative and mixtures."""
    return {**latent_mass(model), **relative_shape(model), **mixture_shape(model)}


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
