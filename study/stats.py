"""Statistics for a multi-seed ablation study, and claim verdicts computed from them.

Every estimate carries a confidence interval, and every verdict is derived from intervals or
(Holm-adjusted) p-values, never written by hand. A verdict is one of "supported", "contradicted"
or "inconclusive"; too few seeds give nan intervals, which are always "inconclusive".

>>> a = [71.2, 70.8, 71.9, 71.4, 70.9]  # accuracy of cell A over five seeds
>>> b = [70.1, 69.9, 70.6, 70.5, 69.8]  # accuracy of cell B over the same seeds
>>> diff, p = paired_difference(a, b)
>>> round(diff.value, 2), round(diff.low, 2), round(diff.high, 2), diff.n
(1.06, 0.85, 1.27, 5)
>>> p < 0.001
True
>>> direction_verdict(diff, expected=+1)
'supported'
>>> non_inferiority_verdict(diff, margin=0.5)
'supported'
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Values = Sequence[float] | np.ndarray
Verdict = Literal["supported", "contradicted", "inconclusive"]
BestCell = Literal["best", "tied within noise", "beaten"]

BEST_CELL_CLAIM: dict[str, Verdict] = {
    "best": "supported",
    "tied within noise": "inconclusive",
    "beaten": "contradicted",
}

NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval [low, high]; the bounds are nan when n is too small."""

    value: float
    low: float
    high: float
    n: int


def _vector(values: Values) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(-1)


def _paired(x: Values, y: Values) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(x), _vector(y)
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} != {len(y)}")
    return x, y


def _two_sided(confidence: float) -> float:
    """The upper quantile level of a two-sided interval, e.g. 0.975 for confidence 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return (1 + confidence) / 2


def _t_estimate(value: float, se: float, dof: int, n: int, confidence: float) -> Estimate:
    # Not stats.t.interval: it rejects scale=0, and a zero standard error should give [value, value].
    half = stats.t.ppf(_two_sided(confidence), dof) * se
    return Estimate(float(value), float(value - half), float(value + half), n)


def mean_ci(values: Values, confidence: float = 0.95) -> Estimate:
    """Mean with a Student-t interval; n < 2 gives a nan interval (and n = 0 a nan mean)."""
    x = _vector(values)
    n = len(x)
    if n < 2:
        return Estimate(float(x[0]) if n else NAN, NAN, NAN, n)
    return _t_estimate(x.mean(), stats.sem(x), n - 1, n, confidence)


def paired_difference(a: Values, b: Values, confidence: float = 0.95) -> tuple[Estimate, float]:
    """Mean of a - b paired by position (seed), its t-interval, and the two-sided paired t-test p-value.

    Identical differences have zero variance, where the t-test is undefined: the interval is then
    [d, d] and p is 0.0 if d != 0, else 1.0.
    """
    a, b = _paired(a, b)
    d = a - b
    estimate = mean_ci(d, confidence)
    if len(d) < 2:
        return estimate, NAN
    if np.ptp(d) == 0:
        return estimate, 0.0 if d[0] != 0 else 1.0
    return estimate, float(stats.ttest_rel(a, b).pvalue)


def spearman(x: Values, y: Values, confidence: float = 0.95) -> Estimate:
    """Spearman rank correlation with a Fisher-z interval (Bonett-Wright standard error).

    n < 4 gives a nan interval, even when rho is exactly +-1 (with 3 points that happens by chance
    one time in three); otherwise rho = +-1 gives [rho, rho], where Fisher's z is infinite.
    """
    x, y = _paired(x, y)
    n = len(x)
    constant = n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0  # no ranking to correlate
    rho = NAN if constant else float(stats.spearmanr(x, y).statistic)
    if n < 4 or math.isnan(rho):
        return Estimate(rho, NAN, NAN, n)
    if abs(rho) > 1 - 1e-12:  # scipy may return 0.9999999999999999 for a perfect ranking
        rho = math.copysign(1.0, rho)
        return Estimate(rho, rho, rho, n)
    se = math.sqrt((1 + rho**2 / 2) / (n - 3))
    half = stats.norm.ppf(_two_sided(confidence)) * se
    z = math.atanh(rho)
    return Estimate(rho, math.tanh(z - half), math.tanh(z + half), n)


def slope(x: Values, y: Values, confidence: float = 0.95) -> Estimate:
    """Least-squares slope of y on x with a t-interval (n - 2 degrees of freedom); n < 3: nan interval.

    For an exponential trend y = exp(a + b x), fit log(y) on x: the slope estimates b. With a single
    distinct x there is no slope: all nan.
    """
    x, y = _paired(x, y)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return Estimate(NAN, NAN, NAN, n)
    fit = stats.linregress(x, y)
    if n < 3:
        return Estimate(float(fit.slope), NAN, NAN, n)
    return _t_estimate(fit.slope, fit.stderr, n - 2, n, confidence)


def holm(pvalues: Values) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order; nan entries stay nan and do not count as tests.

    The i-th smallest of m p-values is multiplied by (m - i), then made monotone and capped at 1.
    """
    p = _vector(pvalues)
    adjusted = np.full(len(p), NAN)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return [float(v) for v in adjusted]


def direction_verdict(estimate: Estimate, expected: int) -> Verdict:
    """Supported if the interval lies strictly on the expected side of 0 (+1 or -1), contradicted if
    strictly on the other side, else (also for a nan interval) inconclusive."""
    if expected not in (1, -1):
        raise ValueError(f"expected must be +1 or -1, got {expected}")
    side = 1 if estimate.low > 0 else -1 if estimate.high < 0 else 0  # 0 also when nan
    if side == 0:
        return "inconclusive"
    return "supported" if side == expected else "contradicted"


def non_inferiority_verdict(difference: Estimate, margin: float) -> Verdict:
    """Verdict on "A is at least as good as B", given difference = A - B and a margin >= 0.

    Supported if the interval's low end is above -margin; contradicted if its high end is below 0
    (B is significantly better). When both hold (A is worse by less than the margin, but surely
    worse), contradicted wins: the claim says "at least as good", not "almost as good".
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if difference.high < 0:
        return "contradicted"
    if difference.low > -margin:
        return "supported"
    return "inconclusive"


def best_cell_verdict(
    candidate: str, comparisons: dict[str, tuple[Estimate, float]], alpha: float = 0.05
) -> tuple[BestCell, list[str]]:
    """Is ``candidate`` the best cell? Tests it against every other cell, with Holm across the tests.

    ``comparisons`` maps each other cell to (paired difference candidate - other, raw p-value).
    Returns ("beaten", cells significantly better) if any; else ("best", []) if every other cell is
    significantly worse; else ("tied within noise", cells not significantly different).
    Map the outcome to a claim verdict with BEST_CELL_CLAIM.
    """
    if not comparisons:
        raise ValueError(f"no cells to compare {candidate!r} with")
    names = list(comparisons)
    adjusted = holm([comparisons[name][1] for name in names])
    significant = {name: p < alpha for name, p in zip(names, adjusted, strict=True)}
    better = [name for name in names if significant[name] and comparisons[name][0].value < 0]
    if better:
        return "beaten", better
    if all(significant[name] and comparisons[name][0].value > 0 for name in names):
        return "best", []
    return "tied within noise", [name for name in names if not significant[name]]
