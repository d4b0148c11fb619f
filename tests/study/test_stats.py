"""study.stats: intervals match hand computations, planted effects are found, planted nulls are not."""

import doctest
import math

import numpy as np
import pytest

from study import stats
from study.stats import (
    BEST_CELL_CLAIM,
    Estimate,
    best_cell_verdict,
    direction_verdict,
    holm,
    mean_ci,
    non_inferiority_verdict,
    paired_difference,
    slope,
    spearman,
)

NAN = float("nan")
T_975_2DOF = 4.302652729749462  # Student t quantile: 0.975 level, 2 degrees of freedom (from a table)


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
