"""study.reproduce.accuracy_claims on synthetic per-example correctness: planted effects are found, nulls not.

Every run's ``correct`` is a 0/1 array over the same test images, drawn from numpy.random.default_rng:
image i is correct when u < p_cell + offset[seed] - difficulty[i], where the offset is shared by
every run of a seed, the difficulty by every run on that image, and u, for most images, by every
run of the seed (runs of one seed agree on most images, as networks from one initialisation do)
and drawn afresh per run for the rest.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from study.reproduce.accuracy_claims import (
    PAPER_CELL,
    aligned,
    best_of,
    cell_label,
    grid_claims,
    non_inferiority_claim,
    optimizer_claims,
    pp,
    stages_claim,
)
from study.reproduce.bootstrap import two_way_mean
from study.reproduce.claim import decide
from study.reproduce.trend_claims import WD1, WD2

SEEDS = 5
IMAGES = 300
GRID1 = [0.0, 1.0e-6, 5.0e-6, 1.0e-4]
GRID2 = [0.0, 1.0e-5, 1.0e-3]
OTHER = (1.0e-4, 1.0e-5)  # a rival cell
MARGIN = 0.05  # claim 4b's non-inferiority margin


class World:
    """The shared randomness of one synthetic study: seed offsets, image difficulties, and each seed's
    per-image uniforms."""

    def __init__(self, seed: int = 0, seeds: int = SEEDS, images: int = IMAGES, share: float = 0.9):
        self.rng = np.random.default_rng(seed)
        self.seeds, self.images, self.share = seeds, images, share
        self.offsets = self.rng.normal(0, 0.02, seeds)
        self.difficulty = self.rng.normal(0, 0.1, images)
        self.uniform = self.rng.random((seeds, images))

    def correct(self, seed: int, p: float) -> np.ndarray:
        fresh = self.rng.random(self.images) >= self.share
        u = np.where(fresh, self.rng.random(self.images), self.uniform[seed])
        return (u < p + self.offsets[seed] - self.difficulty).astype(np.int8)


def wd_frame(acc, world: World | None = None, grid1=GRID1, grid2=GRID2) -> pd.DataFrame:
    """The weight-decay grid; ``acc(wd1, wd2)``: the cell's planted accuracy."""
    world = world or World()
    return pd.DataFrame(
        [
            {"seed": seed, WD1: wd1, WD2: wd2, "correct": world.correct(seed, acc(wd1, wd2))}
            for seed, wd1, wd2 in itertools.product(range(world.seeds), grid1, grid2)
        ]
    )


def paper_best(gain: float = 0.1, rivals: dict | None = None):
    """The paper's cell ``gain`` above the rest (0.75), except the ``rivals`` given."""
    cells = {PAPER_CELL: 0.75 + gain, **(rivals or {})}
    return lambda wd1, wd2: cells.get((wd1, wd2), 0.75)


def optimizer_frame(binary_gain: float, real_gain: float, world: World | None = None) -> pd.DataFrame:
    """Adam and SGD at their chosen lr: ``binary_gain``, Adam - SGD (binary); ``real_gain``, SGD - Adam
    (real-valued)."""
    world = world or World()
    accuracy = {
        ("binary", "adam"): 0.75 + binary_gain,
        ("binary", "sgd"): 0.75,
        ("real", "adam"): 0.85,
        ("real", "sgd"): 0.85 + real_gain,
    }
    lrs = {"adam": 2e-3, "sgd": 0.1}
    rows = []
    for seed, ((network, optimizer), p) in itertools.product(range(world.seeds), accuracy.items()):
        run = {"network": network, "optimizer": optimizer, "lr": lrs[optimizer]}
        rows.append({"seed": seed, **run, "correct": world.correct(seed, p)})
    return pd.DataFrame(rows)


def stages_frame(gain: float, world: World | None = None) -> pd.DataFrame:
    world = world or World()
    return pd.DataFrame(
        [
            {"seed": seed, "training": training, "correct": world.correct(seed, p)}
            for seed, (training, p) in itertools.product(
                range(world.seeds), {"two-stage": 0.75 + gain, "one-stage": 0.75}.items()
            )
        ]
    )


def decided(claims) -> dict:
    return {c.number: c for c in decide(claims)}


def accuracy_family(wd: pd.DataFrame, optimizer: pd.DataFrame, stages: pd.DataFrame, margin: float = MARGIN):
    """Claims 3 to 5 decided together, as one family."""
    return decided([*grid_claims(wd), *optimizer_claims(optimizer, margin), stages_claim(stages)])


# --- the score matrices -----------------------------------------------------------------------------


def test_aligned_pairs_cells_by_seed_on_the_common_seeds():
    world = World()
    a = pd.DataFrame({"seed": [2, 0, 1], "correct": [world.correct(s, 0.8) for s in (2, 0, 1)]})
    b = pd.DataFrame({"seed": [0, 1, 3], "correct": [world.correct(s % SEEDS, 0.8) for s in (0, 1, 3)]})
    matrices = aligned({"a": a, "b": b})
    assert matrices["a"].shape == matrices["b"].shape == (2, IMAGES)  # seeds 0 and 1 only
    assert matrices["a"].dtype == np.int64
    np.testing.assert_array_equal(matrices["a"][1], a["correct"][2])  # seed 1, in seed order
    np.testing.assert_array_equal(matrices["b"][0], b["correct"][0])


def test_helpers():
    assert pp(0.0123) == "+1.23 pp" and pp(-0.005) == "-0.50 pp"
    assert cell_label(PAPER_CELL) == "5e-06/0" and cell_label((1e-4, 1e-3)) == "0.0001/0.001"


# --- claim 3: the paper's cell is the best cell -----------------------------------------------------


def test_planted_best_cell_is_supported():
    claims = decided(grid_claims(wd_frame(paper_best(0.1))))
    best = claims["3"]
    assert best.verdict == "supported" and best.side == 1 and best.family == "accuracy"
    assert best.effect.value == pytest.approx(0.1, abs=0.03) and best.effect.low > 0
    assert best.effect.n == SEEDS
    assert best.power_of is not None and best.mde > 0
    rivals = len(GRID1) * len(GRID2) - 1
    assert f"of {rivals} rivals, {rivals} significantly behind and 0 significantly ahead" in best.detail


def test_best_is_an_intersection_union_test():
    """The claim's p is the largest of its comparisons' p: every rival must be beaten."""
    frame = wd_frame(paper_best(0.1))
    matrices = aligned({cell_label(key): rows for key, rows in frame.groupby([WD1, WD2])})
    paper = cell_label(PAPER_CELL)
    rivals = [two_way_mean(matrices[paper] - m) for name, m in matrices.items() if name != paper]
    (claim,) = [c for c in grid_claims(frame) if c.number == "3"]
    assert claim.p == max(r.p for r in rivals)
    assert claim.effect == min(rivals, key=lambda r: r.estimate.value).estimate  # the strongest rival


def test_a_tied_rival_makes_claim_3_inconclusive():
    claims = decided(grid_claims(wd_frame(paper_best(0.1, {OTHER: 0.85}))))
    assert claims["3"].verdict == "inconclusive"
    assert "strongest rival" in claims["3"].detail


def test_a_better_rival_contradicts_claim_3():
    claims = decided(grid_claims(wd_frame(paper_best(0.05, {OTHER: 0.95}))))
    assert claims["3"].verdict == "contradicted" and claims["3"].side == -1
    assert claims["3"].effect.high < 0  # the paper's cell minus its strongest rival
    assert claims["3"].detail.startswith(f"strongest rival {cell_label(OTHER)}: -")


def test_all_cells_equal_is_inconclusive():
    claims = decided(grid_claims(wd_frame(lambda wd1, wd2: 0.75)))
    assert {c.verdict for c in claims.values()} == {"inconclusive"}


def test_grid_without_the_paper_cell_is_refused():
    with pytest.raises(ValueError, match="paper's cell"):
        grid_claims(wd_frame(lambda wd1, wd2: 0.75, grid1=[0.0, 1e-4]))


def test_a_stage_with_a_single_level_leaves_its_best_level_claim_inconclusive():
    """The configuration allows one stage-1 weight decay (ablation.weight_decay.stage1: [5e-6]); 3a then
    has no rival level to beat: untested (nan p, inconclusive), while 3 and 3b are still tested."""
    claims = decided(grid_claims(wd_frame(paper_best(0.1), grid1=[PAPER_CELL[0]])))
    assert claims["3a"].verdict == "inconclusive" and np.isnan(claims["3a"].p)
    assert claims["3"].verdict == claims["3b"].verdict == "supported"


def test_best_of_sides_and_p():
    """Ahead of every rival: side +1 and the largest p; behind one: side -1 and its Holm-adjusted p."""
    world = World()
    good = np.stack([world.correct(s, 0.9) for s in range(SEEDS)]).astype(np.int64)
    bad = [np.stack([world.correct(s, 0.7) for s in range(SEEDS)]).astype(np.int64) for _ in range(3)]
    matrices = {"good": good, "b0": bad[0], "b1": bad[1], "b2": bad[2]}
    comparisons, side, p = best_of("good", matrices, 1)
    assert side == 1 and set(comparisons) == {"b0", "b1", "b2"}
    assert p == max(c.p for c in comparisons.values())
    comparisons, side, p = best_of("b0", matrices, 1)
    assert side == -1
    behind = sorted(c.p for c in comparisons.values())
    assert p == pytest.approx(min(1.0, 3 * comparisons["good"].p)) and comparisons["good"].p == behind[0]
    # ``scale``: matrices of sums of k cells compare their means.
    doubled = {name: 2 * m for name, m in matrices.items()}
    scaled, _, _ = best_of("good", doubled, 2)
    assert scaled["b0"].estimate.value == pytest.approx(float((good - bad[0]).mean()))


# --- claims 3a and 3b: the best level of each stage, averaged over the other ------------------------


def test_additive_main_effects_support_3_3a_and_3b():
    def acc(wd1, wd2):
        return 0.70 + 0.06 * (wd1 == PAPER_CELL[0]) + 0.06 * (wd2 == PAPER_CELL[1])

    claims = decided(grid_claims(wd_frame(acc)))
    assert {n: claims[n].verdict for n in ("3", "3a", "3b")} == dict.fromkeys(("3", "3a", "3b"), "supported")
    assert claims["3a"].effect.value == pytest.approx(0.06, abs=0.02)  # averaged over stage 2
    assert claims["3b"].effect.value == pytest.approx(0.06, abs=0.02)
    assert claims["3a"].measure.endswith("stage-1 5e-6 minus its strongest rival")


def test_main_effect_found_when_the_level_wins_on_average_though_not_in_every_cell():
    """Stage-1 5e-6 is 0.1 better at stage-2 0 and 1e-3, and tied at 1e-5: the best stage-1 level on
    average (3a), while the paper's cell ties with (5e-6, 1e-3) (3) and so does stage-2 0 with 1e-3 (3b)."""

    def acc(wd1, wd2):
        return 0.75 + 0.1 * (wd1 == PAPER_CELL[0] and wd2 != 1.0e-5)

    claims = decided(grid_claims(wd_frame(acc)))
    assert claims["3a"].verdict == "supported"
    assert claims["3a"].effect.value == pytest.approx(0.2 / 3, abs=0.02)
    assert claims["3"].verdict == claims["3b"].verdict == "inconclusive"


def test_main_effect_found_though_the_paper_cell_is_beaten():
    """Stage-1 5e-6 is 0.1 better everywhere, but the cell (1e-4, 1e-3) is 0.15 better: the paper's
    stage-1 level is still the best on average (3a), its cell is not the best (3), and stage-2 1e-3
    beats stage-2 0 on average (3b)."""

    def acc(wd1, wd2):
        return 0.75 + 0.1 * (wd1 == PAPER_CELL[0]) + 0.15 * ((wd1, wd2) == (1.0e-4, 1.0e-3))

    claims = decided(grid_claims(wd_frame(acc)))
    assert claims["3a"].verdict == "supported"
    assert claims["3"].verdict == "contradicted" and claims["3"].detail.startswith(
        "strongest rival 0.0001/0.001"
    )
    assert claims["3b"].verdict == "contradicted" and claims["3b"].detail.startswith("strongest rival 0.001")


def test_a_better_level_of_stage_2_contradicts_3b():
    def acc(wd1, wd2):
        return 0.75 + 0.1 * (wd2 == 1.0e-3)

    claims = decided(grid_claims(wd_frame(acc)))
    assert claims["3b"].verdict == "contradicted"
    assert claims["3b"].detail.startswith("strongest rival 0.001: -")
    assert claims["3a"].verdict == "inconclusive"


# --- claims 4a and 4b: the optimizers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("binary_gain", "expected"), [(0.1, "supported"), (-0.1, "contradicted"), (0.0, "inconclusive")]
)
def test_4a_finds_the_planted_effect(binary_gain, expected):
    claims = decided(optimizer_claims(optimizer_frame(binary_gain, 0.0), MARGIN))
    assert claims["4a"].verdict == expected
    assert claims["4a"].effect.value == pytest.approx(binary_gain, abs=0.03)
    assert claims["4a"].effect.n == SEEDS
    assert claims["4a"].detail == "lr chosen on validation: adam 0.002, sgd 0.1"


def test_4b_inside_the_margin_but_below_zero_is_supported():
    """SGD surely worse than Adam, but by less than the margin: SGD is non-inferior (supported)."""
    precise = World(images=1000, share=0.97)
    claim = decided(optimizer_claims(optimizer_frame(0.0, -0.02, precise), MARGIN))["4b"]
    assert claim.effect.low > -MARGIN and claim.effect.high < 0
    assert claim.verdict == "supported" and claim.side == 1
    assert claim.expected == f"> -{MARGIN:g}"
    assert claim.detail.startswith(f"non-inferiority margin {MARGIN:g} (-5.00 pp); lr chosen on validation")


def test_4b_entirely_below_the_margin_is_contradicted():
    claim = decided(optimizer_claims(optimizer_frame(0.0, -0.15), MARGIN))["4b"]
    assert claim.effect.high < -MARGIN
    assert claim.verdict == "contradicted" and claim.side == -1


def test_4b_straddling_the_margin_is_inconclusive():
    claim = decided(optimizer_claims(optimizer_frame(0.0, -MARGIN), MARGIN))["4b"]
    assert claim.effect.low < -MARGIN < claim.effect.high
    assert claim.verdict == "inconclusive"


def test_4b_is_two_one_sided_tests_against_the_margin():
    """Its p is twice the smaller one-sided p at -margin, so it agrees with the 95 % interval."""
    frame = optimizer_frame(0.0, -0.02, World(share=0.97))
    runs = {key: rows for key, rows in frame.groupby(["network", "optimizer"])}
    claim = non_inferiority_claim("4b", "", "", runs["real", "sgd"], runs["real", "adam"], MARGIN, "")
    matrices = aligned({"a": runs["real", "sgd"], "b": runs["real", "adam"]})
    result = two_way_mean(matrices["a"] - matrices["b"])
    assert claim.p == pytest.approx(2 * result.p_above(-MARGIN))
    assert (claim.p < 0.05) == (result.estimate.low > -MARGIN)
    assert claim.power_of == result and claim.effect == result.estimate


def test_one_seed_leaves_4b_untested_like_4a():
    """With a single common seed no seed variance can be estimated: two_way_mean gives a nan p, and
    the claim is untested (a nan p, not counted in its family) -- 4a is; 4b should be too, rather
    than p = 1.0, which counts in the accuracy family and doubles claim 5's Holm-adjusted p here."""
    claims = optimizer_claims(optimizer_frame(0.1, 0.0, World(seeds=1)), MARGIN)
    numbers = {c.number: c for c in claims}
    assert np.isnan(numbers["4a"].p)
    assert np.isnan(numbers["4b"].p)
    five = decided([*claims, stages_claim(stages_frame(0.1))])["5"]
    assert five.adjusted_p == pytest.approx(five.p)


# --- claim 5 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gain", "expected"), [(0.1, "supported"), (-0.1, "contradicted"), (0.0, "inconclusive")]
)
def test_5_finds_the_planted_effect(gain, expected):
    claim = decided([stages_claim(stages_frame(gain))])["5"]
    assert claim.verdict == expected
    assert claim.effect.value == pytest.approx(gain, abs=0.03)
    assert claim.measure == "test accuracy, two-stage - one-stage"


# --- the test images count --------------------------------------------------------------------------


def test_intervals_are_wider_with_few_test_images():
    """The same seeds and effect on 40 and on 600 images: the two-way interval counts the images."""
    few = stages_claim(stages_frame(0.05, World(images=40))).effect
    many = stages_claim(stages_frame(0.05, World(images=600))).effect
    assert few.high - few.low > 2 * (many.high - many.low)


def test_accuracy_claims_carry_their_mde_at_the_family_level():
    claims = accuracy_family(wd_frame(paper_best(0.1)), optimizer_frame(0.1, 0.0), stages_frame(0.1))
    assert list(claims) == ["3", "3a", "3b", "4a", "4b", "5"]
    for claim in claims.values():
        assert claim.family == "accuracy"
        assert claim.alpha == pytest.approx(0.05 / 6)
        assert 0 < claim.mde < 0.2


def test_planted_nulls_are_inconclusive_at_about_the_nominal_rate():
    """With no effect planted, claims 4a and 5 reach raw p < 0.05 in about 5 % of replications."""
    wrong = 0
    for seed in range(40):
        world = World(seed=seed + 1, images=100)
        four_a = optimizer_claims(optimizer_frame(0.0, 0.0, world), MARGIN)[0]
        wrong += (four_a.p < 0.05) + (stages_claim(stages_frame(0.0, world)).p < 0.05)
    assert wrong / 80 <= 0.12  # 0.05 expected
