"""study.reproduce.stats: intervals match hand computations; planted effects are found, planted nulls not."""

import doctest
import math

import numpy as np
import pytest

from study.reproduce import stats
from study.reproduce.stats import (
    UNTESTABLE,
    VERDICTS,
    Estimate,
    binomial_se,
    detectable_effect,
    fit_linear,
    holm,
    mean_ci,
    mean_test,
    paired_difference,
    shape_verdict,
    slope,
    spearman,
    t_power,
)

NAN = float("nan")
T_975_2DOF = 4.302652729749462  # Student t quantile: 0.975 level, 2 degrees of freedom (from a table)
T_975_4DOF, T_80_4DOF = 2.776445105, 0.940964577  # 0.975 and 0.8 quantiles, 4 degrees of freedom (table)


def test_module_doctest():
    assert doctest.testmod(stats).failed == 0


def test_mean_ci_matches_hand_computation():
    est = mean_ci([1, 2, 3])
    half = T_975_2DOF * 1 / math.sqrt(3)  # sample sd is 1
    assert est == Estimate(pytest.approx(2.0), pytest.approx(2 - half), pytest.approx(2 + half), 3)


def test_mean_ci_too_few_values_gives_nan_interval():
    est = mean_ci([5.0])
    assert est.value == 5.0 and est.n == 1
    assert math.isnan(est.low) and math.isnan(est.high)
    assert math.isnan(mean_ci([]).value)


def test_mean_ci_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1, 2, 3], confidence=95)


def test_paired_difference_finds_planted_effect():
    rng = np.random.default_rng(0)
    a = rng.normal(70, 2, 5)
    b = a - 1 + rng.normal(0, 0.1, 5)
    diff, p = paired_difference(a, b)
    assert diff.low > 0 and diff.low < 1 < diff.high
    assert p < 0.01


def test_paired_difference_planted_null_is_inconclusive():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5), rng.normal(0, 1, 5)
    diff, p = paired_difference(a, b)
    assert diff.low < 0 < diff.high
    assert p > 0.05


def test_paired_difference_zero_variance():
    diff, p = paired_difference([1, 2, 3], [0, 1, 2])
    assert (diff.value, diff.low, diff.high, p) == (1.0, 1.0, 1.0, 0.0)
    same, p_same = paired_difference([1, 2, 3], [1, 2, 3])
    assert (same.value, same.low, same.high, p_same) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_too_few_and_mismatched():
    diff, p = paired_difference([1.0], [0.0])
    assert diff.value == 1.0 and math.isnan(diff.low) and math.isnan(p)
    with pytest.raises(ValueError, match="length"):
        paired_difference([1, 2, 3], [1, 2])


def test_spearman_planted_trend_and_noise():
    rng = np.random.default_rng(0)
    x = np.arange(30)
    trend = spearman(x, x + rng.normal(0, 5, 30))
    assert 0 < trend.low < trend.value < trend.high and trend.n == 30
    noise = spearman(x, rng.normal(0, 1, 30))
    assert noise.low < 0 < noise.high


def test_spearman_exact_and_small():
    x = [1, 2, 3, 4, 5]
    assert spearman(x, [10, 20, 30, 40, 50]) == Estimate(1.0, 1.0, 1.0, 5)
    assert spearman(x, [5, 4, 3, 2, 1]) == Estimate(-1.0, -1.0, -1.0, 5)
    small = spearman([1, 2, 3], [1, 2, 3])
    assert small.value == 1.0 and math.isnan(small.low) and math.isnan(small.high)


def test_slope_recovers_planted_exponential_trend():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 20)
    y = np.exp(2 + 3 * x) * rng.lognormal(0, 0.1, 20)
    est = slope(x, np.log(y))
    assert est.low < 3 < est.high
    assert est.high - est.low < 0.5


def test_slope_too_few_points():
    est = slope([0, 1], [1, 3])
    assert est.value == pytest.approx(2.0) and math.isnan(est.low) and math.isnan(est.high)


def test_holm_hand_example():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_holm_ignores_nan():
    adjusted = holm([0.01, NAN, 0.04, 0.03])
    assert math.isnan(adjusted[1])
    assert [adjusted[0], adjusted[2], adjusted[3]] == pytest.approx([0.03, 0.06, 0.06])


def test_untestable_is_a_verdict():
    assert VERDICTS == ("supported", "contradicted", "inconclusive", "untestable at this budget")
    assert UNTESTABLE in VERDICTS


# --- mean_test: the one-sample t-test ---------------------------------------------------------------


def test_mean_test_matches_the_closed_form_at_two_degrees_of_freedom():
    """[1, 2, 3]: t = 2 / (1 / sqrt(3)) = sqrt(12); with 2 dof the t cdf is 1/2 + t / (2 sqrt(t^2 + 2)),
    so the two-sided p is 1 - sqrt(12) / sqrt(14)."""
    est, p = mean_test([1, 2, 3])
    assert est == mean_ci([1, 2, 3])
    assert p == pytest.approx(1 - math.sqrt(12 / 14))
    _, p_shifted = mean_test([-1, 0, 1])
    assert p_shifted == pytest.approx(1.0)  # mean exactly 0


def test_mean_test_zero_variance_and_too_few():
    assert mean_test([2.0, 2.0, 2.0]) == (Estimate(2.0, 2.0, 2.0, 3), 0.0)
    assert mean_test([0.0, 0.0]) == (Estimate(0.0, 0.0, 0.0, 2), 1.0)
    est, p = mean_test([3.0])
    assert est.value == 3.0 and math.isnan(est.low) and math.isnan(p)


def test_mean_test_planted_effect_found_and_null_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    _, p_effect = mean_test(rng.normal(1.0, 0.5, 8))
    assert p_effect < 0.001
    rejected = sum(mean_test(rng.normal(0.0, 0.5, 8))[1] < 0.05 for _ in range(400))
    assert 0.02 <= rejected / 400 <= 0.09  # 0.05 expected


def test_paired_difference_is_mean_test_of_the_differences():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 6), rng.normal(0, 1, 6)
    assert paired_difference(a, b) == mean_test(a - b)


# --- power: t_power and detectable_effect on a standard error and its degrees of freedom -----------


def test_detectable_effect_matches_the_textbook_formula_at_four_dof():
    """(t_{0.975,4} + t_{0.8,4}) * se from table quantiles; the exact noncentral-t solve is slightly
    larger (the formula ignores the noncentral t's skew) and has exactly power 0.8."""
    se = 0.004 / math.sqrt(5)  # a paired t-test on 5 seeds whose differences have sd 0.004
    formula = (T_975_4DOF + T_80_4DOF) * se
    assert formula == pytest.approx(0.0066499, abs=1e-6)
    mde = detectable_effect(se, 4)
    assert formula < mde < 1.02 * formula
    assert t_power(mde, se, 4) == pytest.approx(0.8, abs=1e-6)


def test_detectable_effect_converges_to_the_formula_with_many_dof():
    from scipy import stats as scipy_stats

    formula = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)  # 2.8016 standard errors
    assert detectable_effect(1.0, 10_000) == pytest.approx(formula, rel=1e-3)
    assert detectable_effect(1.0, 99) > detectable_effect(1.0, 10_000)  # fewer dof: a larger effect


def test_detectable_effect_known_value_and_scaling():
    # A paired t-test on ten pairs: a standardised effect of 0.996 (power tables, n = 10).
    se = 1 / math.sqrt(10)
    base = detectable_effect(se, 9)
    assert base == pytest.approx(0.996, abs=1e-3)
    assert detectable_effect(2 * se, 9) == pytest.approx(2 * base, rel=1e-9)  # linear in se
    # Higher power or a stricter alpha needs a larger effect.
    assert detectable_effect(se, 9, power=0.9) > base
    assert detectable_effect(se, 9, alpha=0.05 / 6) > detectable_effect(se, 9, alpha=0.01) > base


def test_detectable_effect_edge_cases():
    assert detectable_effect(0.0, 4) == 0.0  # no variance: any difference shows
    assert math.isnan(detectable_effect(0.01, 0))  # one seed: no degrees of freedom
    assert math.isnan(detectable_effect(NAN, 4))
    with pytest.raises(ValueError, match="power"):
        detectable_effect(0.01, 4, alpha=0.9, power=0.8)
    with pytest.raises(ValueError, match="alpha"):
        detectable_effect(0.01, 4, alpha=0.0)


def test_t_power_is_alpha_at_no_effect_and_rises():
    assert t_power(0.0, 1.0, 4) == pytest.approx(0.05)
    assert t_power(0.0, 1.0, 4, alpha=0.01) == pytest.approx(0.01)
    assert t_power(1.0, 1.0, 4) < t_power(2.0, 1.0, 4) < t_power(2.0, 1.0, 9) < t_power(2.0, 0.5, 9)
    assert t_power(-2.0, 1.0, 4) == pytest.approx(t_power(2.0, 1.0, 4))  # two-sided
    assert t_power(50.0, 1.0, 4) == pytest.approx(1.0)


def test_t_power_of_a_paired_test_matches_a_simulation():
    """Five pairs, differences N(1, 1): se = 1 / sqrt(5) on 4 dof; the share of simulated paired
    t-tests rejecting at 0.05 agrees with the noncentral t."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, (20_000, 5))
    rejected = (scipy_stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05).mean()
    assert rejected == pytest.approx(t_power(1.0, 1 / math.sqrt(5), 4), abs=0.01)


def test_binomial_se_of_one_accuracy():
    assert binomial_se(0.97, 1000) == pytest.approx(math.sqrt(0.97 * 0.03 / 1000))
    assert binomial_se(0.97, 1000) == pytest.approx(0.0053944, abs=1e-7)
    assert binomial_se(1.0, 1000) == 0.0


# --- shapes: straight line against any shape ------------------------------------------------------

LEVELS = np.array([0.0, 1e-4, 1e-3, 3e-3, 1e-2])  # an uneven grid, as weight decays are


def _curves(shape, seeds: int = 4, noise: float = 0.01, seed: int = 0):
    """y = shape(x) + a per-seed offset + noise at every level for every seed."""
    rng = np.random.default_rng(seed)
    x = np.tile(LEVELS, seeds)
    blocks = np.repeat(np.arange(seeds), len(LEVELS))
    y = shape(x) + rng.normal(0, 0.5, seeds)[blocks] + rng.normal(0, noise, len(x))
    return x, y, blocks


def test_lack_of_fit_accepts_a_straight_line_with_noise():
    x, y, blocks = _curves(lambda x: 2.0 - 100 * x)
    fit = fit_linear(x, y, blocks)
    assert fit.dof == (len(LEVELS) - 2, (4 - 1) * (len(LEVELS) - 1))
    assert fit.p >= 0.05 and shape_verdict(fit) == "shape consistent"
    assert fit.r2 > 0.99
    assert fit.residual_sd == pytest.approx(0.01, rel=0.5)
    assert len(fit.residuals) == len(x) and abs(fit.residuals.mean()) < 1e-12


def test_lack_of_fit_rejects_a_curve():
    x, y, blocks = _curves(lambda x: 2.0 - 100 * x + 1.0e4 * x**2)
    fit = fit_linear(x, y, blocks)
    assert fit.p < 1e-6 and shape_verdict(fit) == "shape rejected"
    # The curve shows in the residuals: the mean residual per level is not flat.
    means = [fit.residuals[fit.x == level].mean() for level in LEVELS]
    assert max(means) - min(means) > 0.05


def test_lack_of_fit_nominal_rate_under_a_straight_line():
    rejected = sum(fit_linear(*_curves(lambda x: 1.0 + 50 * x, seed=seed)).p < 0.05 for seed in range(200))
    assert rejected / 200 <= 0.1  # 0.05 expected


def test_lack_of_fit_matches_the_textbook_pure_error_test_with_one_block():
    """Without blocks: RSS of the least-squares line against the within-level (pure error) RSS."""
    from scipy import stats as scipy_stats

    x = np.repeat([0.0, 1.0, 2.0, 4.0], 3)
    y = np.array([1.0, 1.2, 0.9, 2.1, 1.8, 2.0, 2.8, 3.1, 3.0, 4.1, 3.8, 4.4])
    fit = fit_linear(x, y)
    line = np.polyval(np.polyfit(x, y, 1), x)
    rss_line = float(((y - line) ** 2).sum())
    pure = sum(float(((y[x == v] - y[x == v].mean()) ** 2).sum()) for v in np.unique(x))
    f = ((rss_line - pure) / 2) / (pure / 8)
    assert fit.dof == (2, 8)
    assert fit.f == pytest.approx(f)
    assert fit.p == pytest.approx(scipy_stats.f.sf(f, 2, 8))
    assert fit.residual_sd == pytest.approx(math.sqrt(rss_line / 10))


def test_lack_of_fit_without_degrees_of_freedom_is_untested():
    no_replicates = fit_linear([0, 1, 2, 3], [0.0, 1.1, 1.9, 3.2])
    assert math.isnan(no_replicates.p) and shape_verdict(no_replicates) == "shape untested"
    two_levels = fit_linear([0, 1, 0, 1], [0.0, 1.0, 0.1, 1.2])
    assert two_levels.dof[0] == 0 and shape_verdict(two_levels) == "shape untested"
    one_level = fit_linear([1, 1, 1], [0.0, 1.0, 2.0])
    assert math.isnan(one_level.r2) and shape_verdict(one_level) == "shape untested"
    with pytest.raises(ValueError, match="blocks"):
        fit_linear([0, 1, 2], [0, 1, 2], blocks=[0, 1])
