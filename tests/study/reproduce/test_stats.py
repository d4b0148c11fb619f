"""study.reproduce.stats: intervals match hand computations; planted effects are found, planted nulls not."""

import doctest
import math

import numpy as np
import pytest

from study.reproduce import stats
from study.reproduce.stats import (
    BEST_CELL_CLAIM,
    UNTESTABLE,
    VERDICTS,
    Estimate,
    best_cell_verdict,
    binomial_se,
    direction_verdict,
    fit_linear,
    holm,
    mean_ci,
    minimum_detectable_effect,
    non_inferiority_verdict,
    paired_difference,
    paired_t_power,
    shape_verdict,
    slope,
    spearman,
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
    assert direction_verdict(diff, +1) == "supported"
    assert direction_verdict(diff, -1) == "contradicted"


def test_paired_difference_planted_null_is_inconclusive():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5), rng.normal(0, 1, 5)
    diff, p = paired_difference(a, b)
    assert diff.low < 0 < diff.high
    assert p > 0.05
    assert direction_verdict(diff, +1) == direction_verdict(diff, -1) == "inconclusive"


def test_paired_difference_zero_variance():
    diff, p = paired_difference([1, 2, 3], [0, 1, 2])
    assert (diff.value, diff.low, diff.high, p) == (1.0, 1.0, 1.0, 0.0)
    same, p_same = paired_difference([1, 2, 3], [1, 2, 3])
    assert (same.value, same.low, same.high, p_same) == (0.0, 0.0, 0.0, 1.0)
    assert direction_verdict(same, +1) == "inconclusive"


def test_paired_difference_too_few_and_mismatched():
    diff, p = paired_difference([1.0], [0.0])
    assert diff.value == 1.0 and math.isnan(diff.low) and math.isnan(p)
    assert direction_verdict(diff, +1) == "inconclusive"
    with pytest.raises(ValueError, match="length"):
        paired_difference([1, 2, 3], [1, 2])


def test_spearman_planted_trend_and_noise():
    rng = np.random.default_rng(0)
    x = np.arange(30)
    trend = spearman(x, x + rng.normal(0, 5, 30))
    assert trend.low < trend.value < trend.high and trend.n == 30
    assert direction_verdict(trend, +1) == "supported"
    assert direction_verdict(trend, -1) == "contradicted"
    noise = spearman(x, rng.normal(0, 1, 30))
    assert noise.low < 0 < noise.high
    assert direction_verdict(noise, +1) == "inconclusive"


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
    assert direction_verdict(est, +1) == "supported"


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


def test_direction_verdict_rejects_bad_expected():
    with pytest.raises(ValueError, match="expected"):
        direction_verdict(Estimate(1.0, 0.5, 1.5, 5), 0)


@pytest.mark.parametrize(
    ("difference", "verdict"),
    [
        (Estimate(2.0, 1.5, 2.5, 5), "supported"),  # clearly better
        (Estimate(-0.2, -0.5, 0.1, 5), "supported"),  # slightly worse, within the margin
        (Estimate(-3.0, -4.0, -2.0, 5), "contradicted"),  # clearly worse
        (Estimate(0.0, -3.0, 3.0, 5), "inconclusive"),  # too noisy
        (Estimate(-0.3, -0.5, -0.1, 5), "contradicted"),  # within the margin but surely worse
        (Estimate(0.5, NAN, NAN, 1), "inconclusive"),  # too few seeds
    ],
)
def test_non_inferiority_verdict(difference, verdict):
    assert non_inferiority_verdict(difference, margin=1.0) == verdict


def _comparisons(cells: dict[str, np.ndarray], candidate: str) -> dict[str, tuple[Estimate, float]]:
    return {
        name: paired_difference(cells[candidate], acc) for name, acc in cells.items() if name != candidate
    }


def _cells(offsets: dict[str, float], seed: int = 0, noise: float = 0.3, n_seeds: int = 5):
    """Per-seed accuracies: a shared seed effect, plus a per-cell offset, plus per-run noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(70, 2, n_seeds)
    return {name: base + offset + rng.normal(0, noise, n_seeds) for name, offset in offsets.items()}


def test_best_cell_planted_best():
    cells = _cells({"adam": 2.0, "sgd": 0.0, "adamw": 0.0, "lamb": 0.0})
    outcome, names = best_cell_verdict("adam", _comparisons(cells, "adam"))
    assert (outcome, names) == ("best", [])
    assert BEST_CELL_CLAIM[outcome] == "supported"


def test_best_cell_planted_tie():
    cells = _cells({"adam": 0.0, "sgd": 0.0, "adamw": 0.0, "lamb": 0.0})
    outcome, names = best_cell_verdict("adam", _comparisons(cells, "adam"))
    assert (outcome, names) == ("tied within noise", ["sgd", "adamw", "lamb"])
    assert BEST_CELL_CLAIM[outcome] == "inconclusive"


def test_best_cell_planted_better_other():
    cells = _cells({"adam": 0.0, "sgd": 3.0, "adamw": -2.0, "lamb": 0.0})
    outcome, names = best_cell_verdict("adam", _comparisons(cells, "adam"))
    assert (outcome, names) == ("beaten", ["sgd"])
    assert BEST_CELL_CLAIM[outcome] == "contradicted"


def test_best_cell_requires_comparisons():
    with pytest.raises(ValueError, match="no cells"):
        best_cell_verdict("adam", {})


def test_untestable_is_a_verdict():
    assert VERDICTS == ("supported", "contradicted", "inconclusive", "untestable at this budget")
    assert UNTESTABLE in VERDICTS


# --- power ------------------------------------------------------------------------------------------


def _differences(sd: float, n: int) -> np.ndarray:
    """n paired differences with sample standard deviation exactly ``sd``."""
    d = np.arange(n, dtype=float)
    return (d - d.mean()) / d.std(ddof=1) * sd


def test_mde_matches_the_textbook_formula_at_five_seeds():
    """(t_{0.975,4} + t_{0.8,4}) * sd / sqrt(5) from table quantiles; the exact noncentral-t solve
    is slightly larger (the formula ignores the noncentral t's skew) and has exactly power 0.8."""
    formula = (T_975_4DOF + T_80_4DOF) * 0.004 / math.sqrt(5)
    assert formula == pytest.approx(0.0066499, abs=1e-6)
    mde = minimum_detectable_effect(_differences(0.004, 5))
    assert formula < mde < 1.02 * formula
    assert paired_t_power(mde, 0.004, 5) == pytest.approx(0.8, abs=1e-6)


def test_mde_converges_to_the_formula_with_many_seeds():
    from scipy import stats as scipy_stats

    n = 100
    formula = (scipy_stats.t.ppf(0.975, n - 1) + scipy_stats.t.ppf(0.8, n - 1)) / math.sqrt(n)
    assert minimum_detectable_effect(_differences(1.0, n)) == pytest.approx(formula, rel=1e-3)


def test_mde_known_value_and_scaling():
    # Ten pairs: a standardised effect of 0.996 (as power tables give for a paired t-test, n = 10).
    assert minimum_detectable_effect(_differences(1.0, 10)) == pytest.approx(0.996, abs=1e-3)
    assert minimum_detectable_effect(_differences(2.0, 10)) == pytest.approx(2 * 0.996, abs=2e-3)
    # Higher power or a stricter alpha needs a larger effect.
    base = minimum_detectable_effect(_differences(1.0, 10))
    assert minimum_detectable_effect(_differences(1.0, 10), power=0.9) > base
    assert minimum_detectable_effect(_differences(1.0, 10), alpha=0.01) > base


def test_mde_edge_cases():
    assert minimum_detectable_effect([0.01, 0.01, 0.01]) == 0.0  # no variance: any difference shows
    assert math.isnan(minimum_detectable_effect([0.01]))
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect([1, 2, 3], alpha=0.9, power=0.8)


def test_paired_t_power_is_alpha_at_no_effect_and_rises():
    assert paired_t_power(0.0, 1.0, 5) == pytest.approx(0.05)
    assert paired_t_power(1.0, 1.0, 5) < paired_t_power(2.0, 1.0, 5) < paired_t_power(2.0, 1.0, 10)
    assert paired_t_power(50.0, 1.0, 5) == pytest.approx(1.0)


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
