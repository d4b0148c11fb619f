"""study.reproduce.trend_claims on synthetic weight-decay grids: planted trends are found, nulls are not.

Every cell (stage-1 x stage-2 weight decay) of every seed gets FF and C2I drawn from
numpy.random.default_rng with a planted trend, a shared per-seed offset and per-run noise.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from study.reproduce.claim import decide
from study.reproduce.stats import spearman
from study.reproduce.trend_claims import (
    TRENDS,
    WD1,
    WD2,
    largest_deviation,
    per_seed,
    size_text,
    trend_claims,
)

GRID1 = [0.0, 1.0e-6, 5.0e-6, 1.0e-5, 5.0e-5, 1.0e-4]
GRID2 = [0.0, 5.0e-6, 1.0e-5]
SEEDS = 5
FF_RATE = 8.0e4  # planted: log FF rises by this per unit of stage-2 weight decay
C2I_RATE = 2.0e3  # planted: C2I falls by this per unit of weight decay


def wd_frame(
    *,
    ff=lambda wd1, wd2: 0.004 * math.exp(FF_RATE * wd2),
    c2i=lambda wd1, wd2: 0.97 - C2I_RATE * wd2,
    c2i_init=lambda wd1, wd2: 0.95 - C2I_RATE * wd1,
    grid1=GRID1,
    grid2=GRID2,
    seeds=SEEDS,
    rng_seed=2,
) -> pd.DataFrame:
    """The weight-decay ablation's trend metrics: every (stage-1, stage-2) cell for every seed. The
    default draw is one where no planted straight line is rejected by chance (about 1 draw in 5 has
    one of four lack-of-fit p below 0.05); the rate is checked over many draws below."""
    rng = np.random.default_rng(rng_seed)
    offsets = rng.normal(0, 0.05, seeds)  # what a seed does to every cell (init, data order)
    rows = []
    for seed, wd1, wd2 in itertools.product(range(seeds), grid1, grid2):
        rows.append(
            {
                "seed": seed,
                WD1: wd1,
                WD2: wd2,
                "ff_ratio": ff(wd1, wd2) * math.exp(offsets[seed] + rng.normal(0, 0.05)),
                "c2i_ratio": c2i(wd1, wd2) + offsets[seed] / 10 + rng.normal(0, 0.002),
                "c2i_init": c2i_init(wd1, wd2) + offsets[seed] / 10 + rng.normal(0, 0.002),
            }
        )
    return pd.DataFrame(rows)


def decided(frame: pd.DataFrame) -> dict:
    return {c.number: c for c in decide(trend_claims(frame))}


def slope_interval(detail: str) -> tuple[float, float, float]:
    """The fitted slope and its interval from a trend claim's detail."""
    match = re.search(r"per unit of weight decay (\S+) \[(\S+), (\S+)\]", detail)
    assert match, detail
    return tuple(float(v) for v in match.groups())


def test_claims_are_1a_to_2b_in_the_mechanism_family():
    claims = trend_claims(wd_frame())
    assert [c.number for c in claims] == [t.number for t in TRENDS] == ["1a", "1b", "2a", "2b"]
    assert {c.family for c in claims} == {"mechanism"}
    assert all(c.power_of is None for c in claims)  # a rank correlation: no accuracy power stated


def test_planted_trends_are_supported_and_the_null_is_inconclusive():
    claims = decided(wd_frame())
    assert {n: claims[n].verdict for n in ("1a", "2a", "2b")} == dict.fromkeys(
        ("1a", "2a", "2b"), "supported"
    )
    assert claims["1a"].effect.low > 0.5 and claims["2a"].effect.high < -0.5
    assert claims["1a"].side == claims["2a"].side == claims["2b"].side == 1
    assert claims["1a"].adjusted_p < 0.05 and claims["1a"].p < 0.01
    assert claims["1a"].effect.n == SEEDS  # one rank correlation per seed: the seeds are the replicates
    # FF does not depend on stage-1 weight decay here: no trend claimed.
    assert claims["1b"].verdict == "inconclusive"
    assert claims["1b"].effect.low < 0 < claims["1b"].effect.high


def test_the_slopes_recover_the_planted_rates():
    claims = decided(wd_frame())
    value, low, high = slope_interval(claims["1a"].detail)
    assert low < FF_RATE < high and value == pytest.approx(FF_RATE, rel=0.1)
    value, low, high = slope_interval(claims["2a"].detail)
    assert low < -C2I_RATE < high
    value, low, high = slope_interval(claims["2b"].detail)
    assert low < -C2I_RATE < high


def test_planted_nulls_are_inconclusive():
    claims = decided(
        wd_frame(ff=lambda wd1, wd2: 0.004, c2i=lambda wd1, wd2: 0.97, c2i_init=lambda wd1, wd2: 0.95)
    )
    for number in ("1a", "1b", "2a", "2b"):
        assert claims[number].verdict == "inconclusive", number


def test_nulls_and_straight_lines_are_rejected_at_about_the_nominal_rate():
    """Over 15 replications, a null grid's raw p, and a planted straight line's lack-of-fit p, fall
    below 0.05 about 5 % of the time."""
    flat = {"ff": lambda wd1, wd2: 0.004, "c2i": lambda wd1, wd2: 0.97, "c2i_init": lambda wd1, wd2: 0.95}
    nulls = [c.p for seed in range(15) for c in trend_claims(wd_frame(**flat, rng_seed=seed + 100))]
    assert np.mean(np.array(nulls) < 0.05) <= 0.12
    lines = [c.fit.p for seed in range(15) for c in trend_claims(wd_frame(rng_seed=seed + 100))]
    assert np.mean(np.array(lines) < 0.05) <= 0.12


def test_planted_opposite_trends_are_contradicted():
    claims = decided(
        wd_frame(
            ff=lambda wd1, wd2: 0.004 * math.exp(-FF_RATE * wd2 - 1.0e4 * wd1),
            c2i=lambda wd1, wd2: 0.95 + C2I_RATE * wd2,
            c2i_init=lambda wd1, wd2: 0.90 + C2I_RATE * wd1,
        )
    )
    for number in ("1a", "1b", "2a", "2b"):
        assert claims[number].verdict == "contradicted", number
        assert claims[number].side == -1


def test_the_per_seed_test_removes_the_seed_offsets():
    """Offsets far larger than the trend (here 0.1 per seed against a C2I range of 0.02) do not hide it:
    the correlation is computed within each seed, so shifting a seed's every cell changes nothing."""
    frame = wd_frame()
    shifted = frame.assign(c2i_ratio=frame["c2i_ratio"] + 0.1 * frame["seed"])
    plain, moved = decided(frame)["2a"], decided(shifted)["2a"]
    assert moved.verdict == plain.verdict == "supported"
    assert moved.effect == plain.effect and moved.p == plain.p
    pooled = spearman(shifted[WD2], shifted["c2i_ratio"])  # every cell of every seed in one correlation
    assert pooled.low < 0 < pooled.high  # would have missed it


def test_per_seed_gives_one_value_per_seed_and_tests_them():
    rho, p = per_seed(wd_frame(), lambda g: float(g["seed"].iloc[0]))
    assert rho.value == pytest.approx(2.0) and rho.n == SEEDS and p < 0.05


def test_size_is_the_fold_change_of_ff_and_the_change_of_c2i():
    claims = decided(wd_frame())
    fold = math.exp(FF_RATE * GRID2[-1])  # exp(0.8) = 2.23
    match = re.fullmatch(r"FF x(\S+) from 0 to 1e-05", claims["1a"].size)
    assert match and float(match.group(1)) == pytest.approx(fold, rel=0.05)
    match = re.fullmatch(r"c2i_init (\S+) from 0 to 0.0001", claims["2b"].size)
    assert match and float(match.group(1)) == pytest.approx(-C2I_RATE * GRID1[-1], rel=0.05)
    match = re.fullmatch(r"c2i_ratio (\S+) from 0 to 1e-05", size_text(TRENDS[2], wd_frame()))
    assert match and float(match.group(1)) == pytest.approx(-C2I_RATE * GRID2[-1], rel=0.1)


def test_trend_ignores_non_positive_ff_on_the_log_scale():
    frame = wd_frame()
    frame.loc[frame.index[:3], "ff_ratio"] = 0.0  # e.g. a network whose signs never flipped
    claim = decided(frame)["1a"]
    assert claim.verdict == "supported" and not math.isnan(claim.effect.value)


def test_planted_shapes_are_consistent_and_fitted_with_residuals():
    claims = decided(wd_frame())
    for number in ("1a", "1b", "2a", "2b"):
        fit = claims[number].fit
        assert fit is not None and fit.p >= 0.05, number
        assert "(shape consistent)" in claims[number].detail, number
    # One point per seed and level (the mean over the other stage's weight decay), an intercept per seed.
    assert len(claims["1a"].fit.residuals) == SEEDS * len(GRID2)
    assert claims["1a"].fit.dof == (len(GRID2) - 2, (SEEDS - 1) * (len(GRID2) - 1))
    assert claims["1b"].fit.dof == (len(GRID1) - 2, (SEEDS - 1) * (len(GRID1) - 1))
    assert claims["1a"].fit.r2 > 0.9 and claims["2a"].fit.r2 > 0.9
    # The planted log-normal noise (sd 0.05), averaged over the stage-1 weight decays.
    assert claims["1a"].fit.residual_sd == pytest.approx(0.05 / math.sqrt(len(GRID1)), rel=0.4)


def test_log_axis_fit_uses_only_positive_weight_decays():
    claims = decided(wd_frame())
    positive = [wd for wd in GRID1 if wd > 0]
    assert sorted(set(claims["2b"].log_fit.x)) == pytest.approx(np.log10(positive).tolist())
    assert len(claims["2b"].log_fit.residuals) == SEEDS * len(positive)
    assert "on a log weight-decay axis" in claims["2b"].detail


def test_curved_c2i_is_shape_rejected_but_the_direction_stands():
    claims = decided(wd_frame(c2i_init=lambda wd1, wd2: 0.95 - 0.1 * math.sqrt(wd1 / 1.0e-4)))
    assert claims["2b"].verdict == "supported"  # it still falls
    assert claims["2b"].fit.p < 0.001 and "(shape rejected)" in claims["2b"].detail
    # The curvature's size: the largest mean deviation from the line, and where it lies.
    deviation, at = largest_deviation(claims["2b"].fit)
    assert deviation > 0.01 and at in GRID1
    assert claims["2b"].deviation == f"{deviation:.2g} at {at:g}"
    assert claims["2a"].fit.p >= 0.05  # the other claims' shapes are untouched


def test_largest_deviation_of_ff_is_in_percent():
    claims = decided(
        wd_frame(ff=lambda wd1, wd2: 0.004 * math.exp(FF_RATE * wd2 + (0.3 if wd2 == 5e-6 else 0)))
    )
    deviation, at = largest_deviation(claims["1a"].fit)
    assert at == 5e-6 and deviation > 0.1
    assert claims["1a"].deviation == f"{100 * math.expm1(deviation):.2g} % of FF at 5e-06"
    assert claims["1a"].fit.p < 0.05


def test_trends_work_on_any_grid():
    """A widened stage-2 grid (to 1e-2, uneven): nothing assumes particular weight decays."""
    grid2 = [0.0, 1.0e-4, 1.0e-3, 3.0e-3, 1.0e-2]
    frame = wd_frame(
        ff=lambda wd1, wd2: 0.004 * math.exp(300 * wd2), c2i=lambda wd1, wd2: 0.97 - 10 * wd2, grid2=grid2
    )
    claims = decided(frame)
    assert claims["1a"].verdict == claims["2a"].verdict == "supported"
    assert claims["1a"].fit.dof[0] == len(grid2) - 2
    assert claims["1a"].fit.p >= 0.05 and claims["2a"].fit.p >= 0.05
    assert sorted(set(claims["1a"].fit.x)) == grid2


def test_a_stage_with_a_single_level_leaves_its_trends_inconclusive():
    """The configuration allows one stage-1 weight decay (ablation.weight_decay.stage1: [5e-6]): no
    trend in stage 1 can be measured (nan rho and p, inconclusive), and stage 2's are still tested."""
    claims = decided(wd_frame(grid1=[5.0e-6]))
    for number in ("1b", "2b"):
        assert claims[number].verdict == "inconclusive" and math.isnan(claims[number].p), number
    assert claims["1a"].verdict == claims["2a"].verdict == "supported"
