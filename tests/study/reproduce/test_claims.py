"""study.reproduce.claims on synthetic ablation tables: planted effects are found, planted nulls are not.

The frames have the columns ``study.reproduce.report.cell_frame`` gives the claims (one row per cell and
seed); every metric is drawn from ``numpy.random.default_rng(0)`` with a known effect planted, and a
shared per-seed offset, so the paired-by-seed analyses have something to remove.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from study.reproduce.claims import (
    PAPER_CELL,
    WD1,
    WD2,
    absolute_latent_claim,
    all_claims,
    best_cell_claim,
    lr_sweep,
    needed_budget_factor,
    optimizer_claims,
    power_note,
    relative_latent_claims,
    select_lr,
    stages_claim,
    trend_claims,
    verdict_counts,
    verdict_table,
)
from study.reproduce.stats import minimum_detectable_effect

GRID1 = [0.0, 1.0e-6, 5.0e-6, 1.0e-5, 5.0e-5, 1.0e-4]
GRID2 = [0.0, 5.0e-6, 1.0e-5]
SEEDS = 5
MARGIN = 0.005
CLAIMS = ["1a", "1b", "2a", "2b", "3", "4a", "4b", "5", "6a", "6b", "6c"]
VERDICTS = {"supported", "contradicted", "inconclusive", "untestable at this budget"}
FF_RATE = 8.0e4  # planted: log FF rises by this per unit of stage-2 weight decay
C2I_RATE = 2.0e3  # planted: C2I falls by this per unit of weight decay


def wd_frame(
    *,
    ff=lambda wd1, wd2: 0.004 * math.exp(FF_RATE * wd2),
    c2i=lambda wd1, wd2: 0.97 - C2I_RATE * wd2,
    c2i_init=lambda wd1, wd2: 0.95 - C2I_RATE * wd1,
    acc=lambda wd1, wd2: 0.80,
    grid1=GRID1,
    grid2=GRID2,
    seeds=SEEDS,
    noise=0.003,
) -> pd.DataFrame:
    """The weight-decay ablation: every (stage-1, stage-2) cell for every seed."""
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 0.02, seeds)  # what a seed does to every cell (init, data order)
    rows = []
    for seed, wd1, wd2 in itertools.product(range(seeds), grid1, grid2):
        rows.append(
            {
                "ablation": "wd",
                "kind": "two_stage",
                "seed": seed,
                WD1: wd1,
                WD2: wd2,
                "test_acc": acc(wd1, wd2) + offsets[seed] + rng.normal(0, noise),
                "ff_ratio": ff(wd1, wd2) * math.exp(rng.normal(0, 0.05)),
                "c2i_ratio": c2i(wd1, wd2) + rng.normal(0, 0.002),
                "c2i_init": c2i_init(wd1, wd2) + rng.normal(0, 0.002),
                "saturation": 0.3 + rng.normal(0, 0.01),
            }
        )
    return pd.DataFrame(rows)


def optimizer_frame(
    *,
    binary_gain: float,
    real_gain: float,
    noise: float = 0.003,
    seed: int = 0,
    lrs: dict[str, list[float]] | None = None,
    lr_effect=lambda optimizer, lr: 0.0,
) -> pd.DataFrame:
    """Adam and SGD, binary and real-valued, each at every lr of ``lrs``. ``binary_gain``: Adam - SGD
    test accuracy (binary); ``real_gain``: SGD - Adam test accuracy (real-valued); ``lr_effect``:
    what an lr adds to validation and test accuracy. Validation accuracy is test accuracy plus
    independent noise."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 0.02, SEEDS)
    lrs = lrs or {"adam": [2.0e-3], "sgd": [0.1]}
    rows = []
    for seed, optimizer, network in itertools.product(range(SEEDS), ("adam", "sgd"), ("binary", "real")):
        for lr in lrs[optimizer]:
            acc = 0.80 if network == "binary" else 0.90
            if network == "binary" and optimizer == "adam":
                acc += binary_gain
            if network == "real" and optimizer == "sgd":
                acc += real_gain
            acc += offsets[seed] + lr_effect(optimizer, lr) + rng.normal(0, noise)
            rows.append(
                {
                    "ablation": "optimizer",
                    "kind": "two_stage" if network == "binary" else "real",
                    "seed": seed,
                    "optimizer": optimizer,
                    "network": network,
                    "lr": lr,
                    "test_acc": acc,
                    "val_acc": acc + rng.normal(0, noise),
                    "ff_ratio": 0.004 * math.exp(rng.normal(0, 0.05)) if network == "binary" else math.nan,
                    "c2i_ratio": 0.96 + rng.normal(0, 0.002) if network == "binary" else math.nan,
                    "c2i_init": 0.94 + rng.normal(0, 0.002) if network == "binary" else math.nan,
                    "saturation": 0.3 + rng.normal(0, 0.01),
                }
            )
    return pd.DataFrame(rows)


def stages_frame(*, gain: float, noise: float = 0.003, seed: int = 0) -> pd.DataFrame:
    """Two-stage against one-stage; ``gain``: two-stage - one-stage test accuracy."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 0.02, SEEDS)
    rows = []
    for seed, training in itertools.product(range(SEEDS), ("two-stage", "one-stage")):
        acc = 0.80 + (gain if training == "two-stage" else 0)
        rows.append(
            {
                "ablation": "stages",
                "kind": "two_stage" if training == "two-stage" else "one_stage",
                "seed": seed,
                "training": training,
                "test_acc": acc + offsets[seed] + rng.normal(0, noise),
                "ff_ratio": 0.004 * math.exp(rng.normal(0, 0.05)),
                "c2i_ratio": 0.96 + rng.normal(0, 0.002),
                "c2i_init": 0.94 + rng.normal(0, 0.002),
                "saturation": 0.3 + rng.normal(0, 0.01),
            }
        )
    return pd.DataFrame(rows)


def latent_frame(
    *,
    extreme_gain: float = 0.0,
    zero_gain: float = 0.0,
    one_gain: float = 0.0,
    adam_max: float = 0.3,
    median_abs_start: float = 0.06,
    lr_budget: float = 0.36,
    seed: int = 0,
) -> pd.DataFrame:
    """The latent ablation: Adam and SGD per seed. The gains are Adam - SGD in the fraction near the
    layer's extremes (|w|/q99 >= 0.9), near 0 (|w|/q99 <= 0.1) and within 0.1 of +-1; ``adam_max``
    is Adam's largest |w| (SGD's is half of it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for seed, optimizer in itertools.product(range(SEEDS), ("adam", "sgd")):
        adam = optimizer == "adam"
        rows.append(
            {
                "ablation": "latent",
                "seed": seed,
                "optimizer": optimizer,
                "test_acc": 0.80 + rng.normal(0, 0.003),
                "rel_mass_near_extreme": 0.05 + (extreme_gain if adam else 0) + rng.normal(0, 0.005),
                "rel_mass_near_zero": 0.10 + (zero_gain if adam else 0) + rng.normal(0, 0.005),
                "bimodality": 0.4 + rng.normal(0, 0.01),
                "mass_near_one": 0.01 + (one_gain if adam else 0) + rng.normal(0, 0.005),
                "mass_near_zero": 0.30 + rng.normal(0, 0.005),
                "beyond_clip": 0.0,
                "dead_zero_grad": 0.01 + rng.normal(0, 0.001),
                "max_abs_weight": adam_max * (1 if adam else 0.5) * (1 - 0.01 * seed),
                "median_abs_start": median_abs_start,
                "lr_budget": lr_budget if adam else 100 * lr_budget,
            }
        )
    return pd.DataFrame(rows)


def by_number(claims) -> dict:
    return {c.number: c for c in claims}


def slope_interval(detail: str) -> tuple[float, float, float]:
    """The fitted slope and its CI from a trend claim's detail line."""
    match = re.search(r"per unit of weight decay: (\S+) \[(\S+), (\S+)\]", detail)
    assert match, detail
    return tuple(float(v) for v in match.groups())


# --- claims 1 and 2: trends in weight decay -------------------------------------------------------


def test_planted_exponential_ff_and_linear_c2i_trends_are_supported():
    claims = by_number(trend_claims(wd_frame()))
    assert claims["1a"].verdict == "supported"
    assert claims["2a"].verdict == "supported"
    assert claims["2b"].verdict == "supported"  # c2i_init falls with stage-1 weight decay
    assert claims["1a"].effect.low > 0.5 and claims["2a"].effect.high < -0.5
    assert claims["1a"].effect.n == SEEDS  # one rank correlation per seed: the seeds are the replicates
    # The exponential fit (log FF on weight decay) and the linear fit recover the planted rates.
    value, low, high = slope_interval(claims["1a"].detail)
    assert low < FF_RATE < high and value == pytest.approx(FF_RATE, rel=0.1)
    value, low, high = slope_interval(claims["2a"].detail)
    assert low < -C2I_RATE < high
    # FF does not depend on stage-1 weight decay here: no trend claimed.
    assert claims["1b"].verdict == "inconclusive"


def test_planted_null_ff_is_inconclusive():
    claims = by_number(trend_claims(wd_frame(ff=lambda wd1, wd2: 0.004, c2i=lambda wd1, wd2: 0.97)))
    for number in ("1a", "1b", "2a"):
        assert claims[number].verdict == "inconclusive", number
        assert claims[number].effect.low < 0 < claims[number].effect.high, number


def test_planted_opposite_trends_are_contradicted():
    claims = by_number(
        trend_claims(
            wd_frame(
                ff=lambda wd1, wd2: 0.004 * math.exp(-FF_RATE * wd2 - 1.0e4 * wd1),
                c2i=lambda wd1, wd2: 0.95 + C2I_RATE * wd2,
                c2i_init=lambda wd1, wd2: 0.90 + C2I_RATE * wd1,
            )
        )
    )
    assert {n: claims[n].verdict for n in ("1a", "1b", "2a", "2b")} == dict.fromkeys(
        ("1a", "1b", "2a", "2b"), "contradicted"
    )


def test_trend_ignores_non_positive_ff_on_the_log_scale():
    frame = wd_frame()
    frame.loc[frame.index[:3], "ff_ratio"] = 0.0  # e.g. a network whose signs never flipped
    claim = by_number(trend_claims(frame))["1a"]
    assert claim.verdict == "supported" and not math.isnan(claim.effect.value)


def test_planted_shapes_are_consistent_and_fitted_with_residuals():
    claims = by_number(trend_claims(wd_frame()))
    for number in ("1a", "1b", "2a", "2b"):
        fit = claims[number].fit
        assert fit is not None and fit.p >= 0.05, number
        assert "shape consistent" in claims[number].detail and "lack-of-fit F(" in claims[number].detail
    # One point per seed and level (the mean over the other stage's weight decay), an intercept per seed.
    assert len(claims["1a"].fit.residuals) == SEEDS * len(GRID2)
    assert claims["1a"].fit.dof == (len(GRID2) - 2, (SEEDS - 1) * (len(GRID2) - 1))
    assert claims["1b"].fit.dof == (len(GRID1) - 2, (SEEDS - 1) * (len(GRID1) - 1))
    assert claims["1a"].fit.r2 > 0.9 and claims["2a"].fit.r2 > 0.9
    # The planted log-normal noise (sd 0.05), averaged over the stage-1 weight decays.
    assert claims["1a"].fit.residual_sd == pytest.approx(0.05 / math.sqrt(len(GRID1)), rel=0.4)


def test_curved_c2i_is_shape_rejected_but_the_direction_stands():
    claims = by_number(trend_claims(wd_frame(c2i_init=lambda wd1, wd2: 0.95 - 0.1 * math.sqrt(wd1 / 1.0e-4))))
    assert claims["2b"].verdict == "supported"  # it still falls
    assert claims["2b"].fit.p < 0.001 and "shape rejected" in claims["2b"].detail
    table = verdict_table(list(claims.values())).set_index("claim")
    assert table.loc["2b", "shape"] == "shape rejected" and table.loc["2a", "shape"] == "shape consistent"


def test_trends_work_on_any_grid():
    """A widened stage-2 grid (to 1e-2, uneven): nothing assumes particular weight decays."""
    grid2 = [0.0, 1.0e-4, 1.0e-3, 3.0e-3, 1.0e-2]
    frame = wd_frame(
        ff=lambda wd1, wd2: 0.004 * math.exp(300 * wd2), c2i=lambda wd1, wd2: 0.97 - 10 * wd2, grid2=grid2
    )
    claims = by_number(trend_claims(frame))
    assert claims["1a"].verdict == claims["2a"].verdict == "supported"
    assert claims["1a"].fit.dof[0] == len(grid2) - 2
    assert claims["1a"].fit.p >= 0.05 and claims["2a"].fit.p >= 0.05
    assert sorted(set(claims["1a"].fit.x)) == grid2


# --- claim 3: the paper's cell is the best -------------------------------------------------------


def test_planted_best_paper_cell_is_supported():
    claim = best_cell_claim(wd_frame(acc=lambda wd1, wd2: 0.83 if (wd1, wd2) == PAPER_CELL else 0.80))
    assert claim.verdict == "supported"
    assert claim.effect.low > 0 and claim.effect.value == pytest.approx(0.03, abs=0.01)
    assert claim.effect.n == SEEDS
    assert claim.detail.startswith("best")
    # Its power is that of the comparison with the strongest rival.
    assert claim.mde > 0 and "minimum detectable effect" in claim.detail


def test_planted_better_other_cell_contradicts_claim_3():
    def acc(wd1, wd2):
        return {PAPER_CELL: 0.83, (1.0e-5, 0.0): 0.86}.get((wd1, wd2), 0.80)

    claim = best_cell_claim(wd_frame(acc=acc))
    assert claim.verdict == "contradicted"
    assert claim.effect.high < 0  # the paper's cell minus its strongest rival
    assert claim.detail.startswith("beaten (1e-05/0)")
    assert "the strongest rival is 1e-05/0" in claim.detail


def test_all_cells_equal_is_inconclusive():
    claim = best_cell_claim(wd_frame())
    assert claim.verdict == "inconclusive"
    assert claim.detail.startswith("tied within noise")


def test_paper_cell_missing_from_the_grid_is_inconclusive():
    frame = wd_frame(grid1=[0.0, 1.0e-5, 1.0e-4], acc=lambda wd1, wd2: 0.80 + wd1)
    claim = best_cell_claim(frame)
    assert claim.verdict == "inconclusive"
    assert "not in the grid" in claim.detail
    assert claim.effect.n == 0 and math.isnan(claim.effect.value)


def test_grid_of_only_the_paper_cell_is_inconclusive_not_an_error():
    frame = wd_frame(grid1=[PAPER_CELL[0]], grid2=[PAPER_CELL[1]])
    claim = best_cell_claim(frame)
    assert claim.verdict == "inconclusive"
    assert "no other cell" in claim.detail


# --- power -----------------------------------------------------------------------------------------


def test_accuracy_claims_carry_their_minimum_detectable_effect():
    frame = optimizer_frame(binary_gain=0.05, real_gain=0.01)
    claims = by_number(optimizer_claims(frame, MARGIN))
    binary = frame[frame["network"] == "binary"].pivot_table(
        index="seed", columns="optimizer", values="test_acc"
    )
    expected = minimum_detectable_effect(binary["adam"] - binary["sgd"])
    assert claims["4a"].mde == pytest.approx(expected)
    assert claims["4a"].mde == pytest.approx(
        0.0080, abs=0.004
    )  # noise 0.003 per run: sd of a difference ~0.0042
    stages = stages_claim(stages_frame(gain=0.05))
    assert stages.mde > 0 and f"{stages.mde:.4f}" in stages.detail
    assert math.isnan(by_number(trend_claims(wd_frame()))["1a"].mde)  # not an accuracy claim


def test_power_note_says_whether_half_a_point_is_detectable():
    assert power_note(0.004, 5).endswith("a 0.005 difference is detectable")
    assert power_note(0.006, 5).endswith("a 0.005 difference is not detectable")
    assert "0.0040 at 5 seeds" in power_note(0.004, 5)
    assert "n/a" in power_note(math.nan, 1)


# --- claim 4: optimizers at learning rates chosen on validation ------------------------------------


def sweep_frame(val: dict[float, float], test: dict[float, float], seeds: int = 3) -> pd.DataFrame:
    """One optimizer and network, at the lrs of ``val``: val_acc and test_acc given per lr."""
    rows = [
        {"network": "binary", "optimizer": "adam", "lr": lr, "seed": seed,
         "val_acc": val[lr] + 0.001 * seed, "test_acc": test[lr] + 0.001 * seed}
        for lr in val
        for seed in range(seeds)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_lr_is_selected_on_validation_not_test():
    # Validation prefers 1e-3, test prefers 4e-3: validation decides.
    frame = sweep_frame(val={1e-3: 0.90, 2e-3: 0.88, 4e-3: 0.85}, test={1e-3: 0.80, 2e-3: 0.85, 4e-3: 0.95})
    sweep = lr_sweep(frame)
    assert list(sweep.loc[sweep["selected"], "lr"]) == [1e-3]
    assert sweep["val_acc"].tolist() == pytest.approx([0.901, 0.881, 0.851])
    chosen = select_lr(frame)
    assert set(chosen["lr"]) == {1e-3} and len(chosen) == 3  # every seed of the chosen lr


def test_lr_selection_skips_lrs_missing_a_seed_and_breaks_ties_low():
    frame = sweep_frame(val={1e-3: 0.90, 2e-3: 0.90, 4e-3: 0.99}, test={1e-3: 0.8, 2e-3: 0.8, 4e-3: 0.8})
    frame = frame[~((frame["lr"] == 4e-3) & (frame["seed"] == 0))]  # 4e-3 failed on seed 0
    sweep = lr_sweep(frame)
    assert list(sweep.loc[sweep["selected"], "lr"]) == [1e-3]
    assert sweep.set_index("lr").loc[4e-3, "seeds"] == 2


def test_optimizer_claims_compare_the_lrs_chosen_per_optimizer_and_network():
    """Adam's best lr is 1e-3 and SGD's 0.3; at those, Adam beats SGD on the binary network by 0.05."""
    lrs = {"adam": [1e-3, 4e-3], "sgd": [0.03, 0.3]}
    bad = {("adam", 4e-3): -0.1, ("sgd", 0.03): -0.2}
    frame = optimizer_frame(
        binary_gain=0.05, real_gain=0.01, lrs=lrs, lr_effect=lambda optimizer, lr: bad.get((optimizer, lr), 0)
    )
    claims = by_number(optimizer_claims(frame, MARGIN))
    assert claims["4a"].verdict == "supported" and claims["4a"].effect.value == pytest.approx(0.05, abs=0.01)
    assert "lr chosen on validation: adam 0.001, sgd 0.3" in claims["4a"].detail
    assert claims["4a"].effect.n == SEEDS


@pytest.mark.parametrize(
    ("binary_gain", "real_gain", "expected_4a", "expected_4b"),
    [
        (0.05, 0.01, "supported", "supported"),  # Adam wins binary; SGD wins real-valued
        (0.05, 0.0, "supported", "supported"),  # SGD ties Adam (real-valued): non-inferior
        (-0.05, -0.05, "contradicted", "contradicted"),  # SGD wins binary; Adam wins real-valued
        (0.0, -0.004, "inconclusive", "inconclusive"),  # no binary effect; real-valued within noise
    ],
)
def test_optimizer_claims_find_planted_effects(binary_gain, real_gain, expected_4a, expected_4b):
    frame = optimizer_frame(binary_gain=binary_gain, real_gain=real_gain)
    claims = by_number(optimizer_claims(frame, MARGIN))
    assert claims["4a"].verdict == expected_4a
    assert claims["4b"].verdict == expected_4b
    assert claims["4a"].effect.value == pytest.approx(binary_gain, abs=0.01)
    assert claims["4b"].effect.value == pytest.approx(real_gain, abs=0.01)
    assert claims["4a"].effect.n == claims["4b"].effect.n == SEEDS


def test_non_inferiority_uses_the_margin():
    """SGD worse by less than the margin but not surely worse: supported only with a wide margin."""
    frame = optimizer_frame(binary_gain=0.0, real_gain=-0.001, noise=0.001)
    gain = by_number(optimizer_claims(frame, 0.05))["4b"].effect
    assert gain.high > 0  # not surely worse
    assert by_number(optimizer_claims(frame, 0.05))["4b"].verdict == "supported"
    assert by_number(optimizer_claims(frame, 0.0))["4b"].verdict == "inconclusive"
    assert "margin 0.05" in by_number(optimizer_claims(frame, 0.05))["4b"].detail


# --- claim 5: two stages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gain", "expected"), [(0.05, "supported"), (-0.05, "contradicted"), (0.0, "inconclusive")]
)
def test_stages_claim_finds_planted_effect(gain, expected):
    claim = stages_claim(stages_frame(gain=gain))
    assert claim.verdict == expected
    assert claim.effect.value == pytest.approx(gain, abs=0.01)
    assert claim.number == "5" and claim.effect.n == SEEDS


# --- claim 6: latent weights -----------------------------------------------------------------------


@pytest.mark.parametrize(("gain", "expected"), [(0.1, "supported"), (-0.1, "contradicted")])
def test_relative_latent_claims_find_planted_effects(gain, expected):
    claims = by_number(relative_latent_claims(latent_frame(extreme_gain=gain, zero_gain=-gain)))
    assert claims["6a"].verdict == expected
    assert claims["6a"].effect.value == pytest.approx(gain, abs=0.01)
    assert claims["6b"].verdict == {"supported": "contradicted", "contradicted": "supported"}[expected]
    assert claims["6b"].effect.value == pytest.approx(-gain, abs=0.01)
    assert claims["6a"].effect.n == SEEDS


def test_absolute_claim_is_untestable_when_no_weight_nears_one():
    """Adam's largest |w| 0.3 < 0.9; from a median |w| of 0.06 a weight needs an lr budget of 0.94,
    the run had 0.36: 0.94 / 0.36 = 2.61 times as many steps."""
    claim = absolute_latent_claim(
        latent_frame(one_gain=0.1, adam_max=0.3, median_abs_start=0.06, lr_budget=0.36)
    )
    assert claim.number == "6c"
    assert claim.verdict == "untestable at this budget"
    assert "largest 0.3" in claim.detail and "at least 0.94" in claim.detail and "had 0.36" in claim.detail
    assert "at least 2.61 times as many" in claim.detail
    assert needed_budget_factor(0.06, 0.36) == pytest.approx(0.94 / 0.36)


def test_absolute_claim_is_tested_when_weights_reach_one():
    claim = absolute_latent_claim(latent_frame(one_gain=0.1, adam_max=1.2))
    assert claim.verdict == "supported" and claim.effect.value == pytest.approx(0.1, abs=0.01)
    assert "largest Adam |w| 1.2" in claim.detail


def test_absolute_claim_is_tested_when_the_budget_sufficed():
    """Weights could have reached 1 (lr budget 2 > 1 - 0.06) but did not: a result, not a budget limit."""
    claim = absolute_latent_claim(latent_frame(adam_max=0.3, lr_budget=2.0))
    assert claim.verdict == "inconclusive"


def test_planted_nulls_are_inconclusive_at_about_the_nominal_rate():
    """With no effect planted, a 95 % interval excludes 0 in about 5 % of replications, no more.

    One draw of a null can land in that 5 %, so the nulls of claims 4a, 5 and 6a-b are checked over
    100 seeded replications instead.
    """
    replications = 100
    wrong = {"4a": 0, "5": 0, "6a": 0, "6b": 0}
    for seed in range(replications):
        claims = [
            optimizer_claims(optimizer_frame(binary_gain=0.0, real_gain=0.0, seed=seed), MARGIN)[0],
            stages_claim(stages_frame(gain=0.0, seed=seed)),
            *relative_latent_claims(latent_frame(seed=seed)),
        ]
        for claim in claims:
            wrong[claim.number] += claim.verdict != "inconclusive"
    for number, count in wrong.items():
        assert count / replications <= 0.12, (number, count)  # 0.05 expected; 0.12 is 3 sd above


# --- all claims together ----------------------------------------------------------------------------


def favourable_claims():
    """Everything planted in the paper's favour, except that no weight gets near 1."""
    return all_claims(
        wd_frame(acc=lambda wd1, wd2: 0.83 if (wd1, wd2) == PAPER_CELL else 0.80),
        optimizer_frame(binary_gain=0.05, real_gain=0.01),
        stages_frame(gain=0.05),
        latent_frame(extreme_gain=0.1, zero_gain=0.1),
        MARGIN,
    )


def test_verdict_table_has_one_row_per_claim():
    table = verdict_table(favourable_claims())
    assert list(table["claim"]) == CLAIMS
    columns = {"claim", "effect", "ci_low", "ci_high", "n", "mde", "shape", "shape_p", "verdict", "detail"}
    assert columns <= set(table.columns)
    assert set(table["verdict"]) <= VERDICTS
    # FF not in stage-1 weight decay: 1b has no trend; no weight near 1: 6c untestable.
    expected = dict.fromkeys(CLAIMS, "supported") | {"1b": "inconclusive", "6c": "untestable at this budget"}
    assert dict(zip(table["claim"], table["verdict"], strict=True)) == expected
    assert (table["ci_low"] <= table["effect"]).all() and (table["effect"] <= table["ci_high"]).all()
    assert (table["n"] == SEEDS).all()
    assert table.loc[table["claim"] == "3", "effect"].item() == pytest.approx(0.03, abs=0.01)
    accuracy = table["claim"].isin(["3", "4a", "4b", "5"])
    assert table.loc[accuracy, "mde"].gt(0).all() and table.loc[~accuracy, "mde"].isna().all()
    trends = table["claim"].isin(["1a", "1b", "2a", "2b"])
    assert (table.loc[trends, "shape"] == "shape consistent").all() and (
        table.loc[~trends, "shape"] == ""
    ).all()


def test_verdict_counts_list_every_verdict():
    claims = favourable_claims()
    counts = verdict_counts(claims)
    assert list(counts) == ["supported", "contradicted", "inconclusive", "untestable at this budget"]
    assert counts == {"supported": 9, "contradicted": 0, "inconclusive": 1, "untestable at this budget": 1}
    assert verdict_counts([]) == dict.fromkeys(counts, 0)
    flipped = [replace(claims[0], verdict="contradicted"), *claims[1:]]
    assert verdict_counts(flipped) == counts | {"supported": 8, "contradicted": 1}


# --- the report built from these claims ------------------------------------------------------------


def _history(epochs: int = 3) -> list[dict]:
    """Per-epoch records of both stages, as a cell carries them."""
    return [
        {"stage": stage, "step": epoch + epochs * (stage - 1), "epoch": epoch, "val_acc": 0.9,
         "saturation": 0.3, "saturation_train": 0.35, "dead_beyond_clip": 0.01 * epoch,
         "dead_zero_grad": 0.02}
        for stage in (1, 2)
        for epoch in range(epochs)
    ]  # fmt: skip


def _histogram(seed: int) -> dict:
    counts = np.random.default_rng(seed).integers(0, 100, 20).astype(float)
    return {"edges": np.linspace(-1.5, 1.5, 21).tolist(), "counts": counts.tolist()}


def write_ablations(folder, *, lr: bool = True, run_key: str = "0123abcd") -> None:
    """The four ablations' JSON files, as ``study.reproduce.ablate`` writes them, from synthetic frames."""
    lrs = {"adam": [1e-3, 4e-3], "sgd": [0.03, 0.3]}
    optimizer = optimizer_frame(binary_gain=0.05, real_gain=0.01, lrs=lrs if lr else None)
    frames = {
        "wd": wd_frame(acc=lambda wd1, wd2: 0.83 if (wd1, wd2) == PAPER_CELL else 0.80),
        "optimizer": optimizer if lr else optimizer.drop(columns="lr"),
        "stages": stages_frame(gain=0.05),
        "latent": latent_frame(extreme_gain=0.1, zero_gain=0.1),
    }
    extras = {
        "optimizer": lambda i: {"history": _history()},
        "latent": lambda i: {
            "history": _history(),
            "histogram": _histogram(i),
            "rel_histogram": _histogram(i + 1),
        },
    }
    settings = {
        "adam": {"lr": lrs["adam"] if lr else 2e-3},
        "sgd": {"lr": lrs["sgd"] if lr else 0.1, "momentum": 0.9},
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        cells = [
            {**row, **extras.get(name, lambda i: {})(i)} for i, row in enumerate(frame.to_dict("records"))
        ]
        summary = {"ablation": name, "quick": False, "epochs": 12, "seeds": list(range(SEEDS)),
                   "data": "mnist5k", "model": "mlp width 256", "optimizers": settings, "test_size": 1000,
                   "budget": {"stage1_epochs": 12, "stage1_batch_size": 128, "stage2_epochs": 30,
                              "stage2_batch_size": 32},
                   "mlflow_run_key": run_key, "cells": cells}  # fmt: skip
        (folder / f"{name}.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The same results in two folders (two clones), each with its report."""
    from study.reproduce.report import write_report

    out = {}
    for clone in ("one", "two"):
        root = tmp_path_factory.mktemp(f"clone-{clone}")
        write_ablations(root / "ablations", run_key=f"key{clone}9f3e")
        report, figures, claims = write_report(
            root / "ablations", root / "reports" / "reproduction.md", MARGIN
        )
        out[clone] = {"root": root, "report": report, "figures": figures, "claims": claims}
    return out


def test_report_and_verdicts_are_byte_identical_across_clones(reports):
    one, two = reports["one"], reports["two"]
    for name in ("reproduction.md", "verdicts.csv"):
        first, second = (r["report"].parent / name for r in (one, two))
        assert first.read_bytes() == second.read_bytes(), name
        text = first.read_text()
        assert str(one["root"]) not in text and "/tmp" not in text and "keyone9f3e" not in text, name


def test_report_shows_power_shapes_lr_choice_and_latent_weights(reports):
    text = reports["one"]["report"].read_text()
    assert "11 claims: 9 supported, 0 contradicted, 1 inconclusive, 1 untestable at this budget." in text
    assert re.search(r"^\| 6c +\|.*\| \*\*untestable at this budget\*\* +\|$", text, flags=re.MULTILINE)
    header = ["claim", "statement", "expected", "measured", "95 % CI", "n", "mde", "shape", "verdict"]
    assert re.search(r"^\| " + r" +\| ".join(map(re.escape, header)) + r" +\|$", text, flags=re.MULTILINE)
    assert "## Power" in text and "0.005 detectable" in text and "1000 test samples" in text
    assert "### Shapes" in text and "lack of fit" in text and "mean residual" in text
    assert "Chosen: adam (binary) lr 0.001" in text and "**chosen**" in text
    assert "beyond_clip" in text and "dead_zero_grad" in text and "rel_mass_near_extreme" in text
    assert "`saturation_train` on sampled training batches" in text
    assert "stage 2: 30 epochs, batch 32" in text
    assert len(reports["one"]["figures"]) == 8
    for figure in reports["one"]["figures"]:
        assert figure.stat().st_size > 0 and f"(figures/{figure.name})" in text
    verdicts = pd.read_csv(reports["one"]["report"].parent / "verdicts.csv")
    assert list(verdicts["claim"].astype(str)) == CLAIMS
    assert {"mde", "shape", "shape_p"} <= set(verdicts.columns)


def test_report_without_latent_results_fails_in_one_line(tmp_path):
    from study.reproduce.report import write_report

    write_ablations(tmp_path)
    (tmp_path / "latent.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"latent\.json is missing: run `python -m study.reproduce ablate latent`"
    ):
        write_report(tmp_path, tmp_path / "out" / "reproduction.md", MARGIN)


def test_results_without_lrs_use_the_single_lr_per_optimizer(tmp_path):
    from study.reproduce.report import cell_frame, with_lr

    write_ablations(tmp_path, lr=False)
    ablation = json.loads((tmp_path / "optimizer.json").read_text())
    frame = with_lr(cell_frame(ablation), ablation["optimizers"])
    assert dict(frame.groupby("optimizer")["lr"].unique().map(list)) == {"adam": [2e-3], "sgd": [0.1]}
    claims = by_number(optimizer_claims(frame, MARGIN))
    assert claims["4a"].verdict == "supported" and "adam 0.002, sgd 0.1" in claims["4a"].detail
