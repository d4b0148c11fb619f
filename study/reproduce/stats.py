"""Statistics for a multi-seed ablation study: estimates with intervals and p-values over seeds,
Holm's correction, power, and the shape of a trend (a straight line against any shape, by a
lack-of-fit F-test). The verdicts built on them are :mod:`study.reproduce.claim`'s; too few seeds
give nan intervals and p-values.

>>> a = [71.2, 70.8, 71.9, 71.4, 70.9]  # accuracy of cell A over five seeds
>>> b = [70.1, 69.9, 70.6, 70.5, 69.8]  # accuracy of cell B over the same seeds
>>> diff, p = paired_difference(a, b)
>>> round(diff.value, 2), round(diff.low, 2), round(diff.high, 2), diff.n
(1.06, 0.85, 1.27, 5)
>>> p < 0.001
True
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
>>> d = np.subtract(a, b)  # the paired t-test's standard error: sd / sqrt(n), n - 1 dof
>>> round(detectable_effect(d.std(ddof=1) / np.sqrt(5), dof=4), 2)  # alpha 0.05, power 0.8
0.28
>>> seed = [0, 0, 0, 1, 1, 1]  # y at x = 0, 1, 2 for two seeds; each seed its own intercept
>>> fit = fit_linear([0, 1, 2, 0, 1, 2], [0.1, 1.0, 2.1, 0.0, 1.1, 1.9], blocks=seed)
>>> round(fit.r2, 3), fit.dof, round(fit.p, 2), shape_verdict(fit)
(0.994, (1, 2), 0.81, 'shape consistent')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy import optimize, stats

Values = Sequence[float] | np.ndarray
Verdict = Literal["supported", "contradicted", "inconclusive", "untestable at this budget"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
UNTESTABLE: Verdict = "untestable at this budget"
ShapeVerdict = Literal["shape consistent", "shape rejected", "shape untested"]


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


def mean_test(values: Values, confidence: float = 0.95) -> tuple[Estimate, float]:
    """Mean with its t-interval, and the two-sided one-sample t-test p-value of "the mean is 0".

    Identical values have zero variance, where the t-test is undefined: the interval is then
    [v, v] and p is 0.0 if v != 0, else 1.0; n < 2 gives a nan p.
    """
    x = _vector(values)
    estimate = mean_ci(x, confidence)
    if len(x) < 2:
        return estimate, NAN
    if np.ptp(x) == 0:
        return estimate, 0.0 if x[0] != 0 else 1.0
    return estimate, float(stats.ttest_1samp(x, 0.0).pvalue)


def paired_difference(a: Values, b: Values, confidence: float = 0.95) -> tuple[Estimate, float]:
    """Mean of a - b paired by position (seed), its t-interval, and the two-sided paired t-test p-value
    (:func:`mean_test` of the differences)."""
    a, b = _paired(a, b)
    return mean_test(a - b, confidence)


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


def t_power(effect: float, se: float, dof: int, alpha: float = 0.05) -> float:
    """Power of a two-sided t-test at level ``alpha`` against a true mean ``effect``, for an estimate
    with standard error ``se`` on ``dof`` degrees of freedom:

        P(|T| > t_{1-alpha/2, dof}),  T ~ noncentral t(dof, effect / se).

    A paired t-test on n pairs with differences of standard deviation sd has se = sd / sqrt(n),
    dof = n - 1.
    """
    critical = stats.t.ppf(1 - alpha / 2, dof)
    noncentrality = effect / se
    # The lower tail P(T < -c | nc) is taken as P(T > c | -nc): scipy's nct.cdf can return nan there.
    return float(stats.nct.sf(critical, dof, noncentrality) + stats.nct.sf(critical, dof, -noncentrality))


def detectable_effect(se: float, dof: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean that a two-sided t-test at ``alpha`` detects with probability ``power``,
    for an estimate with standard error ``se`` on ``dof`` degrees of freedom (the minimum detectable
    effect).

    The textbook approximation is (t_{1-alpha/2, dof} + t_{power, dof}) * se; this solves the exact
    equation ``t_power(effect, se, dof, alpha) == power`` (noncentral t), about 1 % larger at 4
    degrees of freedom and the same for many. A nan se or dof < 1 gives nan; se = 0 gives 0.
    """
    if not 0 < alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1, got alpha {alpha}, power {power}")
    if dof < 1 or math.isnan(se):
        return NAN
    if se == 0:
        return 0.0
    upper = (stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(power, dof)) * se
    while t_power(upper, se, dof, alpha) < power:
        upper *= 2
    return float(optimize.brentq(lambda effect: t_power(effect, se, dof, alpha) - power, 0.0, upper))


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of one accuracy measured on n independent test samples: sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


@dataclass(frozen=True)
class LinearFit:
    """y = (intercept of its block) + slope * x by least squares, and the lack-of-fit F-test.

    ``r2``: share of the within-block variance of y that the slope explains; ``residual_sd``: the
    residual standard deviation on the linear model's degrees of freedom; ``f``, ``dof`` (lack of
    fit, pure error) and ``p``: the lack-of-fit test; ``x`` and ``residuals``: one per observation.
    """

    r2: float
    residual_sd: float
    f: float
    dof: tuple[int, int]
    p: float
    x: np.ndarray
    residuals: np.ndarray


def _indicators(labels: np.ndarray) -> np.ndarray:
    """One 0/1 column per distinct label."""
    _, codes = np.unique(labels, return_inverse=True)
    return np.eye(codes.max() + 1)[codes.reshape(-1)]


def _least_squares(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Residuals of y on the design's columns, and the design's rank."""
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coef, int(rank)


def fit_linear(x: Values, y: Values, blocks: Values | None = None) -> LinearFit:
    """Is y linear in x? Three nested least-squares models, each with an intercept per block (a
    seed, say, so seed-to-seed offsets are not mistaken for misfit; one block if None):

    - blocks only;
    - linear: blocks + slope * x;
    - saturated: blocks + one mean per distinct x (any shape at all).

    The pure-error lack-of-fit test: F = [(RSS_linear - RSS_saturated) / df_lof] / [RSS_saturated /
    df_pe], df_lof = rank_saturated - rank_linear (levels - 2 in a complete design) and df_pe =
    n - rank_saturated (replicates at one x, e.g. seeds, measure the pure error); a small p rejects
    the straight line. With fewer than 3 distinct x or no replicates, f and p are nan; with a
    single distinct x everything is nan.
    """
    x, y = _paired(x, y)
    labels = np.zeros(len(x)) if blocks is None else np.asarray(blocks).reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"blocks differ in length from x: {len(labels)} != {len(x)}")
    if len(x) == 0 or np.ptp(x) == 0:
        return LinearFit(NAN, NAN, NAN, (0, 0), NAN, x, np.full(len(x), NAN))
    base = _indicators(labels)
    scaled = (x - x.mean()) / x.std()  # residuals do not depend on x's scale; lstsq is better conditioned
    within, _ = _least_squares(base, y)
    linear, rank_linear = _least_squares(np.column_stack([base, scaled]), y)
    saturated, rank_saturated = _least_squares(np.column_stack([base, _indicators(x)]), y)
    rss_within, rss_linear, rss_saturated = (float(r @ r) for r in (within, linear, saturated))
    n = len(y)
    dof = (rank_saturated - rank_linear, n - rank_saturated)
    f = p = NAN
    if min(dof) > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = float(np.divide((rss_linear - rss_saturated) / dof[0], rss_saturated / dof[1]))
        p = float(stats.f.sf(f, *dof))
    r2 = 1 - rss_linear / rss_within if rss_within > 0 else NAN
    sd = math.sqrt(rss_linear / (n - rank_linear)) if n > rank_linear else NAN
    return LinearFit(r2, sd, f, dof, p, x, linear)


def shape_verdict(fit: LinearFit, alpha: float = 0.05) -> ShapeVerdict:
    """ "shape rejected" if the lack-of-fit p-value is below alpha, "shape consistent" if not, and
    "shape untested" when the test has no degrees of freedom (p is nan)."""
    if math.isnan(fit.p):
        return "shape untested"
    return "shape rejected" if fit.p < alpha else "shape consistent"


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
