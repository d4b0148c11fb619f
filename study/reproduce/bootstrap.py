"""Uncertainty over seeds *and* test images: the two-way (pigeonhole) bootstrap of a per-example score.

Every cell of an ablation is trained once per seed and scored on the same fixed test images, so an
accuracy varies with both: another seed trains another network, another draw of test images
scores it differently. An interval over seeds alone treats the test images as fixed and is too
narrow whenever a verdict rests on a few images. The two-way bootstrap (Owen 2007, "The pigeonhole
bootstrap") resamples the rows (seeds) and the columns (test images) of the seeds x images matrix
independently, with replacement, and recomputes the mean each time; its standard deviation over
the draws is the standard error. It counts the seed x image interaction in both margins, so it is
mildly conservative.

Intervals and p-values use that standard error with Student's t on seeds - 1 degrees of freedom
(the seeds are the scarcer replicate), not bootstrap percentiles: a p-value small enough for a
multiplicity correction needs no more draws than an interval. The scores are integers (0/1
correctness, or differences and sums of them), so the draws are summed in exact integer arithmetic
and the result has the same bits on any machine.

>>> a = np.array([[1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 1]])  # 3 seeds x 4 test images, correct = 1
>>> b = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 0, 1]])
>>> result = two_way_mean(a - b)
>>> round(result.estimate.value, 4), result.seeds, result.images
(0.25, 3, 4)
>>> result.se > 0 and result.estimate.low < 0.25 < result.estimate.high
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from study.reproduce.stats import Estimate
from study.reproduce.stats import detectable_effect as stats_detectable

DRAWS = 2000  # bootstrap draws: the standard error to about 1.6 % (1 / sqrt(2 * DRAWS))
SEED = 0  # the draws are fixed, so the report is the same bytes on every run


@dataclass(frozen=True)
class TwoWay:
    """The mean of a seeds x images score matrix, its two-way bootstrap standard error, the t-interval
    (seeds - 1 degrees of freedom) and the two-sided p-value of "the true mean is ``null``"."""

    estimate: Estimate  # value, 95 % interval, n = seeds
    se: float
    p: float
    seeds: int
    images: int

    @property
    def dof(self) -> int:
        return self.seeds - 1

    def p_above(self, bound: float) -> float:
        """One-sided p-value of "the true mean is at most ``bound``" (small: it lies above)."""
        return _t_tail(self.estimate.value - bound, self.se, self.dof)

    def p_below(self, bound: float) -> float:
        """One-sided p-value of "the true mean is at least ``bound``" (small: it lies below)."""
        return _t_tail(bound - self.estimate.value, self.se, self.dof)


def _t_tail(distance: float, se: float, dof: int) -> float:
    if se == 0:
        return 0.0 if distance > 0 else 1.0
    return float(stats.t.sf(distance / se, dof))


def _draw_sums(scores: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Sum of the resampled matrix in each draw: rows and columns drawn as multinomial counts."""
    rows, columns = scores.shape
    rng = np.random.default_rng(seed)
    row_counts = rng.multinomial(rows, np.full(rows, 1 / rows), size=draws)
    column_counts = rng.multinomial(columns, np.full(columns, 1 / columns), size=draws)
    return np.einsum("bn,bn->b", row_counts @ scores, column_counts)


def two_way_mean(
    scores: np.ndarray, scale: int = 1, confidence: float = 0.95, draws: int = DRAWS, seed: int = SEED
) -> TwoWay:
    """Mean of ``scores / scale`` (an integer seeds x images matrix, e.g. correctness, or a difference of
    two cells' correctness paired by seed and image) with its two-way bootstrap standard error.

    Fewer than 2 seeds give a nan interval and p (no seed variance can be estimated).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or not np.issubdtype(scores.dtype, np.integer):
        raise ValueError(
            f"scores must be an integer seeds x images matrix, got {scores.dtype} {scores.shape}"
        )
    rows, columns = scores.shape
    total = rows * columns * scale
    value = float(scores.astype(np.int64).sum()) / total
    if rows < 2:
        return TwoWay(Estimate(value, math.nan, math.nan, rows), math.nan, math.nan, rows, columns)
    sums = _draw_sums(scores.astype(np.int64), draws, seed)
    se = float(np.std(sums / total, ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, rows - 1)) * se
    p = min(1.0, 2 * _t_tail(abs(value), se, rows - 1))
    return TwoWay(Estimate(value, value - half, value + half, rows), se, p, rows, columns)


def detectable_effect(result: TwoWay, alpha: float, power: float = 0.8) -> float:
    """The smallest true mean a two-sided t-test at ``alpha`` on this standard error (seeds - 1
    degrees of freedom) detects with ``power``."""
    return stats_detectable(result.se, result.dof, alpha, power)
