"""study.reproduce.bootstrap: the two-way (seeds x test images) bootstrap of an integer score matrix.

The matrices are built by hand (seed and image effects planted exactly) or drawn as independent
Bernoulli cells from numpy.random.default_rng, where the pigeonhole bootstrap's variance is known in
closed form: resampling R rows and C columns with multinomial counts W, V gives the mean
(W^T X V) / (R C), whose variance given X is tr((I + a J) X (I + b J) X^T) / (R C)^2 - mean^2 with
a = 1 - 1/R, b = 1 - 1/C (E[W W^T] = I + a J).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from study.reproduce import bootstrap
from study.reproduce.bootstrap import DRAWS, TwoWay, detectable_effect, two_way_mean

# With DRAWS draws the bootstrap variance is within about sqrt(2 / DRAWS) = 3 % of its exact value.
VARIANCE_TOLERANCE = 4 * math.sqrt(2 / DRAWS)


def test_module_doctest():
    assert doctest.testmod(bootstrap).failed == 0


def additive(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """An integer matrix x_ij = rows_i + columns_j: a pure seed effect plus a pure image effect."""
    return np.add.outer(np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64))


def exact_bootstrap_variance(scores: np.ndarray) -> float:
    """The variance of the resampled mean over all row and column draws, in closed form (module doc)."""
    x = scores.astype(float)
    rows, columns = x.shape
    a = np.eye(rows) + (1 - 1 / rows) * np.ones((rows, rows))
    b = np.eye(columns) + (1 - 1 / columns) * np.ones((columns, columns))
    return float(np.trace(a @ x @ b @ x.T) / (rows * columns) ** 2 - x.mean() ** 2)


def bernoulli(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return (rng.random(p.shape) < p).astype(np.int8)


# --- the mean and its interval ---------------------------------------------------------------------


def test_mean_is_exact_with_its_shape_and_scale():
    scores = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=np.int8)
    result = two_way_mean(scores)
    assert result.estimate.value == 9 / 15
    assert (result.seeds, result.images, result.dof, result.estimate.n) == (3, 5, 2, 3)
    # A matrix of sums of 4 cells, read with scale 4, is the mean cell: value and se divide by 4.
    scaled = two_way_mean(4 * scores.astype(np.int64), scale=4)
    assert scaled.estimate.value == result.estimate.value
    assert scaled.se == pytest.approx(result.se, rel=1e-12) and scaled.p == pytest.approx(result.p)


def test_interval_is_student_t_on_seeds_minus_one_dof():
    rng = np.random.default_rng(0)
    result = two_way_mean(bernoulli(rng, np.full((4, 300), 0.7)))
    t = scipy_stats.t.ppf(0.975, 3)
    value, low, high = result.estimate.value, result.estimate.low, result.estimate.high
    assert high - value == pytest.approx(t * result.se) and value - low == pytest.approx(t * result.se)
    narrower = two_way_mean(bernoulli(rng, np.full((4, 300), 0.7)), confidence=0.8)
    assert narrower.estimate.high - narrower.estimate.low < high - low


def test_p_is_the_two_sided_t_test_of_zero():
    scores = additive([3, 1, 2, 4], [0, 1, -1, 2, 0, 1])  # mean 2.5
    result = two_way_mean(scores)
    expected = 2 * scipy_stats.t.sf(result.estimate.value / result.se, 3)
    assert result.p == pytest.approx(expected)
    assert result.p == pytest.approx(2 * result.p_above(0.0))  # the value lies above 0
    assert two_way_mean(-scores).p == pytest.approx(result.p)  # the sign does not matter


# --- what the standard error counts -----------------------------------------------------------------


def test_se_of_a_pure_seed_effect_counts_only_the_seeds():
    """Identical columns: resampling images changes nothing, and the variance is var(rows) / R."""
    rows = np.array([0, 2, 4, 6, 8])
    result = two_way_mean(additive(rows, np.zeros(40)))
    assert result.se**2 == pytest.approx(rows.var() / 5, rel=VARIANCE_TOLERANCE)


def test_se_of_a_pure_image_effect_counts_only_the_images():
    columns = np.arange(40) % 5
    result = two_way_mean(additive(np.zeros(5), columns))
    assert result.se**2 == pytest.approx(columns.var() / 40, rel=VARIANCE_TOLERANCE)


def test_se_grows_when_the_images_vary_with_the_same_seeds():
    rows = np.array([0, 1, 2, 1, 0])
    seeds_only = two_way_mean(additive(rows, np.zeros(60)))
    with_images = two_way_mean(additive(rows, np.arange(60) % 4))
    with_more = two_way_mean(additive(rows, 3 * (np.arange(60) % 4)))
    assert seeds_only.se < with_images.se < with_more.se
    # The two effects add: var = var(rows) / R + var(columns) / C.
    expected = rows.var() / 5 + (np.arange(60) % 4).var() / 60
    assert with_images.se**2 == pytest.approx(expected, rel=VARIANCE_TOLERANCE)


def test_se_grows_when_the_seeds_vary_with_the_same_images():
    columns = np.arange(60) % 4
    images_only = two_way_mean(additive(np.zeros(5, dtype=int), columns))
    with_seeds = two_way_mean(additive([0, 1, 2, 1, 0], columns))
    with_more = two_way_mean(additive([0, 3, 6, 3, 0], columns))
    assert images_only.se < with_seeds.se < with_more.se


def test_se_matches_the_exact_bootstrap_variance_of_a_random_matrix():
    rng = np.random.default_rng(0)
    seeds, images = 30, 400
    p = 0.6 + np.add.outer(rng.uniform(-0.1, 0.1, seeds), rng.uniform(-0.25, 0.25, images))
    scores = bernoulli(rng, p)
    assert two_way_mean(scores).se ** 2 == pytest.approx(
        exact_bootstrap_variance(scores), rel=VARIANCE_TOLERANCE
    )


def test_se_matches_the_two_way_variance_of_planted_components():
    """Seed offsets a_i and image offsets b_j planted, the cells independent Bernoulli(0.6 + a_i + b_j).
    Averaged over the Bernoulli draws the bootstrap variance is

        var(a) / S + var(b) / N + [(2 - 1/S)(2 - 1/N) - 1] * mean p(1 - p) / (S N):

    each margin counts once, and the cells' own noise about 3 times (once per margin and once in
    their product): above the variance of a mean over new seeds and images (the noise once), so
    mildly conservative."""
    rng = np.random.default_rng(1)
    seeds, images = 20, 300
    a, b = np.linspace(-0.05, 0.05, seeds), rng.permutation(np.linspace(-0.25, 0.25, images))
    p = 0.6 + np.add.outer(a, b)
    noise = float((p * (1 - p)).mean()) / (seeds * images)
    margins = a.var() / seeds + b.var() / images
    expected = margins + ((2 - 1 / seeds) * (2 - 1 / images) - 1) * noise
    variances = [two_way_mean(bernoulli(rng, p)).se ** 2 for _ in range(20)]
    assert np.mean(variances) == pytest.approx(expected, rel=0.08)
    assert np.mean(variances) > 1.25 * (margins + noise)  # conservative, as the module says
    # Seeds alone (the spread of the per-seed accuracies) would miss the image component.
    seed_only = [bernoulli(rng, p).mean(axis=1).var(ddof=1) / seeds for _ in range(20)]
    assert np.mean(seed_only) < 0.6 * np.mean(variances)


# --- reproducibility --------------------------------------------------------------------------------


def test_fixed_draws_give_identical_results():
    rng = np.random.default_rng(2)
    scores = bernoulli(rng, np.full((5, 200), 0.8)) - bernoulli(rng, np.full((5, 200), 0.75))
    first, second = two_way_mean(scores), two_way_mean(scores.copy())
    assert first == second  # every float bit for bit
    assert two_way_mean(scores.astype(np.int64)) == first  # the dtype does not matter
    assert two_way_mean(scores, seed=1).se != first.se  # the draws are what is fixed
    assert two_way_mean(scores, draws=500).se != first.se


def test_integer_sums_make_the_se_independent_of_the_dtype():
    """The draws are summed in integers: an int16, int32 or int64 copy gives the same bits, and 2000
    draws pin the se of a fixed additive matrix near its exact value."""
    scores = additive([0, 1, 2, 3, 4], np.arange(50) % 3)
    se = two_way_mean(scores).se
    assert se == two_way_mean(scores.astype(np.int16)).se == two_way_mean(scores.astype(np.int32)).se
    exact = math.sqrt(np.arange(5).var() / 5 + (np.arange(50) % 3).var() / 50)
    assert se == pytest.approx(exact, rel=VARIANCE_TOLERANCE / 2)


# --- edge cases -------------------------------------------------------------------------------------


def test_one_seed_gives_a_nan_interval_and_p():
    result = two_way_mean(np.array([[1, 0, 1, 1]]))
    assert result.estimate.value == 0.75 and result.seeds == 1 and result.dof == 0
    assert math.isnan(result.estimate.low) and math.isnan(result.estimate.high)
    assert math.isnan(result.se) and math.isnan(result.p)
    assert math.isnan(detectable_effect(result, 0.05))


def test_constant_matrix_has_zero_se():
    ones = two_way_mean(np.ones((3, 10), dtype=int))
    assert (ones.estimate.value, ones.estimate.low, ones.estimate.high, ones.se, ones.p) == (1, 1, 1, 0, 0)
    zeros = two_way_mean(np.zeros((3, 10), dtype=int))
    assert (zeros.se, zeros.p) == (0.0, 1.0)
    assert zeros.p_above(-0.1) == 0.0 and zeros.p_below(-0.1) == 1.0


@pytest.mark.parametrize(
    "scores",
    [
        np.array([[0.5, 1.0], [1.0, 0.0]]),  # accuracies, not scores
        np.array([[True, False], [False, True]]),  # booleans: convert to 0/1 integers first
        np.array([1, 0, 1]),  # not a seeds x images matrix
    ],
)
def test_non_integer_or_non_matrix_input_is_refused(scores):
    with pytest.raises(ValueError, match="integer seeds x images matrix"):
        two_way_mean(scores)


# --- one-sided tests and power ----------------------------------------------------------------------


def test_one_sided_p_values_are_consistent_with_the_interval():
    rng = np.random.default_rng(3)
    result = two_way_mean(bernoulli(rng, np.full((5, 300), 0.8)) - bernoulli(rng, np.full((5, 300), 0.7)))
    low, high = result.estimate.low, result.estimate.high
    # The 95 % interval's ends are where a one-sided test rejects at 2.5 %.
    assert result.p_above(low) == pytest.approx(0.025)
    assert result.p_below(high) == pytest.approx(0.025)
    inside = (low + high) / 2
    assert result.p_above(inside) > 0.025 and result.p_below(inside) > 0.025
    assert result.p_above(low - 0.01) < 0.025 < result.p_above(low + 0.01)
    # Each pair of one-sided tests at a bound adds to 1, and at 0 the smaller one is half of p.
    assert result.p_above(0.05) + result.p_below(0.05) == pytest.approx(1.0)
    assert 2 * min(result.p_above(0.0), result.p_below(0.0)) == pytest.approx(result.p)


def test_detectable_effect_at_a_smaller_alpha_is_larger():
    rng = np.random.default_rng(4)
    result = two_way_mean(bernoulli(rng, np.full((5, 300), 0.8)) - bernoulli(rng, np.full((5, 300), 0.8)))
    at_05, at_01 = detectable_effect(result, 0.05), detectable_effect(result, 0.05 / 6)
    assert 0 < at_05 < at_01
    assert detectable_effect(result, 0.05, power=0.9) > at_05
    # At power 0.8 the effect is about (t_{0.975, 4} + t_{0.8, 4}) standard errors.
    formula = (scipy_stats.t.ppf(0.975, 4) + scipy_stats.t.ppf(0.8, 4)) * result.se
    assert formula < at_05 < 1.02 * formula


def test_more_images_give_a_narrower_interval():
    """The same seeds and effect on 50 and on 800 test images: the few images' interval is wider."""
    rng = np.random.default_rng(5)
    offsets = rng.normal(0, 0.02, 5)[:, None]

    def width(images: int) -> float:
        a = bernoulli(rng, np.broadcast_to(0.8 + offsets, (5, images)))
        b = bernoulli(rng, np.broadcast_to(0.75 + offsets, (5, images)))
        result: TwoWay = two_way_mean(a - b)
        return result.estimate.high - result.estimate.low

    assert width(50) > 2 * width(800)
