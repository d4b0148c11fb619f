"""Claims 1 and 2: the FF ratio rises, and the C2I ratio falls, with weight decay.

The direction is Spearman's rho within each seed, tested over seeds (the seeds are the replicates:
cells of one seed share their initialisation and data order). The size is what a user feels: how
many times FF grows, or how much C2I drops, from the smallest to the largest weight decay of the
grid. The paper's shapes (log FF and C2I roughly linear in weight decay) are straight lines fitted
with an intercept per seed and a lack-of-fit test; beside the test's p stands the size of the
curvature (the largest mean deviation from the line) and the same fit on a log weight-decay axis,
since a line rejected at R^2 0.999 over a 1.6 % deviation is not a different shape in practice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.reproduce.claim import Claim, direction_side
from study.reproduce.stats import LinearFit, fit_linear, mean_test, shape_verdict, slope, spearman

WD1, WD2 = "stage1.weight_decay", "stage2.weight_decay"


@dataclass(frozen=True)
class Trend:
    number: str
    statement: str
    metric: str
    x: str
    sign: int  # +1: rises with x, -1: falls
    log: bool  # the paper's shape: log metric (exponential) or metric (linear) straight in x


TRENDS = (
    Trend("1a", "FF ratio rises with stage-2 weight decay", "ff_ratio", WD2, +1, True),
    Trend("1b", "FF ratio rises with stage-1 weight decay", "ff_ratio", WD1, +1, True),
    Trend(
        "2a",
        "C2I (against the start of stage 2) falls with stage-2 weight decay",
        "c2i_ratio",
        WD2,
        -1,
        False,
    ),
    Trend(
        "2b",
        "C2I (against the first initialisation) falls with stage-1 weight decay",
        "c2i_init",
        WD1,
        -1,
        False,
    ),
)


def per_seed(rows: pd.DataFrame, statistic) -> tuple:
    """A statistic computed within each seed, its mean and t-interval over seeds, and the t-test p."""
    return mean_test([statistic(group) for _, group in rows.groupby("seed")])


def shape_fit(rows: pd.DataFrame, x: str, axis=lambda v: v) -> LinearFit:
    """y straight in ``axis(x)`` with an intercept per seed, fitted to the mean of y over the other
    stage's weight decay at each (seed, x): cells of one seed and stage-1 weight decay share their
    stage-1 run, so they are not independent replicates of a level."""
    means = rows.groupby(["seed", x], as_index=False)["y"].mean()
    return fit_linear(axis(means[x].to_numpy()), means["y"], means["seed"])


def largest_deviation(fit: LinearFit) -> tuple[float, float]:
    """The largest |mean residual over seeds| of a fitted line, and the weight decay where it is."""
    means = pd.DataFrame({"x": fit.x, "r": fit.residuals}).groupby("x")["r"].mean().dropna()
    if means.empty:  # no line fitted (a single level)
        return math.nan, math.nan
    worst = means.abs().idxmax()
    return float(abs(means[worst])), float(worst)


def size_text(trend: Trend, rows: pd.DataFrame) -> str:
    """FF's fold change, or C2I's change, from the smallest to the largest weight decay (mean over
    seeds and the other stage)."""
    levels = rows.groupby(trend.x)[trend.metric].mean()
    low, high = levels.index.min(), levels.index.max()
    if trend.log:
        return f"FF x{levels[high] / levels[low]:.3g} from {low:g} to {high:g}"
    return f"{trend.metric} {levels[high] - levels[low]:+.3g} from {low:g} to {high:g}"


def deviation_text(trend: Trend, fit: LinearFit) -> str:
    """The curvature's size: the largest mean deviation from the line, in the metric's own terms."""
    deviation, at = largest_deviation(fit)
    if math.isnan(deviation):
        return "n/a"
    if trend.log:
        return f"{100 * math.expm1(deviation):.2g} % of FF at {at:g}"
    return f"{deviation:.2g} at {at:g}"


def trend_claim(trend: Trend, wd: pd.DataFrame) -> Claim:
    rows = wd[["seed", WD1, WD2, trend.metric]].dropna()
    rows = rows[rows[trend.metric] > 0] if trend.log else rows
    rows = rows.assign(y=np.log(rows[trend.metric]) if trend.log else rows[trend.metric])
    rho, p = per_seed(rows, lambda g: spearman(g[trend.x], g[trend.metric]).value)
    rate, _ = per_seed(rows, lambda g: slope(g[trend.x], g["y"]).value)
    fit = shape_fit(rows, trend.x)
    log_fit = shape_fit(rows[rows[trend.x] > 0], trend.x, np.log10)
    deviation = deviation_text(trend, fit)
    what = f"log {trend.metric}" if trend.log else trend.metric
    detail = (
        f"slope of {what} per unit of weight decay {rate.value:.4g} [{rate.low:.4g}, {rate.high:.4g}] "
        f"(the paper: roughly {'exponential' if trend.log else 'linear'}); rho and slope within each "
        f"seed, tested over seeds; straight line in weight decay: R^2 within seeds {fit.r2:.3f}, "
        f"lack of fit p = {fit.p:.3g} ({shape_verdict(fit)}), largest deviation {deviation}; on a "
        f"log weight-decay axis (decays > 0): R^2 {log_fit.r2:.3f}, lack of fit p = {log_fit.p:.3g}"
    )
    return Claim(
        trend.number,
        trend.statement,
        "rank correlation " + (">" if trend.sign > 0 else "<") + " 0",
        f"Spearman rho({trend.x}, {trend.metric})",
        rho,
        size_text(trend, rows),
        "mechanism",
        p=p,
        side=direction_side(rho.value, trend.sign),
        detail=detail,
        fit=fit,
        log_fit=log_fit,
        deviation=deviation,
    )


def trend_claims(wd: pd.DataFrame) -> list[Claim]:
    """Claims 1a, 1b, 2a, 2b."""
    return [trend_claim(trend, wd) for trend in TRENDS]
