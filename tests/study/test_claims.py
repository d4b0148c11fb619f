"""study.claims on synthetic ablation tables: planted effects are found, planted nulls are not.

The frames have the columns ``study.report.cell_frame`` gives the claims (one row per cell and
seed); every metric is drawn from ``numpy.random.default_rng(0)`` with a known effect planted, and a
shared per-seed offset, so the paired-by-seed analyses have something to remove.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from study.claims import (
    PAPER_CELL,
    WD1,
    WD2,
    all_claims,
    best_cell_claim,
    latent_claim,
    optimizer_claims,
    stages_claim,
    trend_claims,
    verdict_table,
)

GRID1 = [0.0, 1.0e-6, 5.0e-6, 1.0e-5, 5.0e-5, 1.0e-4]
GRID2 = [0.0, 5.0e-6, 1.0e-5]
SEEDS = 5
MARGIN = 0.005
CLAIMS = ["1a", "1b", "2a", "2b", "3", "4a", "4b", "5", "6"]
VERDICTS = {"supported", "contradicted", "inconclusive"}
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
                "mass_near_one": 0.1 + rng.normal(0, 0.01),
                "mass_near_zero": 0.2 + rng.normal(0, 0.01),
            }
        )
    return pd.DataFrame(rows)


def optimizer_frame(
    *, binary_gain: float, real_gain: float, mass_gain: float, noise: float = 0.003, seed: int = 0
) -> pd.DataFrame:
    """Adam and SGD, binary and real-valued. ``binary_gain``: Adam - SGD test accuracy (binary);
    ``real_gain``: SGD - Adam test accuracy (real-valued); ``mass_gain``: Adam - SGD mass near +-1."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 0.02, SEEDS)
    rows = []
    for seed, optimizer, network in itertools.product(range(SEEDS), ("adam", "sgd"), ("binary", "real")):
        acc = 0.80 if network == "binary" else 0.90
        if network == "binary" and optimizer == "adam":
            acc += binary_gain
        if network == "real" and optimizer == "sgd":
            acc += real_gain
        rows.append(
            {
                "ablation": "optimizer",
                "kind": "two_stage" if network == "binary" else "real",
                "seed": seed,
                "optimizer": optimizer,
                "network": network,
                "test_acc": acc + offsets[seed] + rng.normal(0, noise),
                "ff_ratio": 0.004 * math.exp(rng.normal(0, 0.05)) if network == "binary" else math.nan,
                "c2i_ratio": 0.96 + rng.normal(0, 0.002) if network == "binary" else math.nan,
                "c2i_init": 0.94 + rng.normal(0, 0.002) if network == "binary" else math.nan,
                "saturation": 0.3 + rng.normal(0, 0.01),
                "mass_near_one": 0.1 + (mass_gain if optimizer == "adam" else 0) + rng.normal(0, 0.005),
                "mass_near_zero": 0.2 + rng.normal(0, 0.005),
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
                "mass_near_one": 0.1 + rng.normal(0, 0.005),
                "mass_near_zero": 0.2 + rng.normal(0, 0.005),
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


# --- claim 3: the paper's cell is the best -------------------------------------------------------


def test_planted_best_paper_cell_is_supported():
    claim = best_cell_claim(wd_frame(acc=lambda wd1, wd2: 0.83 if (wd1, wd2) == PAPER_CELL else 0.80))
    assert claim.verdict == "supported"
    assert claim.effect.low > 0 and claim.effect.value == pytest.approx(0.03, abs=0.01)
    assert claim.effect.n == SEEDS
    assert claim.detail.startswith("best")


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


# --- claims 4, 5, 6: optimizers, stages, latent weights -----------------------------------------


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
    frame = optimizer_frame(binary_gain=binary_gain, real_gain=real_gain, mass_gain=0.0)
    claims = by_number(optimizer_claims(frame, MARGIN))
    assert claims["4a"].verdict == expected_4a
    assert claims["4b"].verdict == expected_4b
    assert claims["4a"].effect.value == pytest.approx(binary_gain, abs=0.01)
    assert claims["4b"].effect.value == pytest.approx(real_gain, abs=0.01)
    assert claims["4a"].effect.n == claims["4b"].effect.n == SEEDS


def test_non_inferiority_uses_the_margin():
    """SGD worse by less than the margin but not surely worse: supported only with a wide margin."""
    frame = optimizer_frame(binary_gain=0.0, real_gain=-0.002, mass_gain=0.0, noise=0.001)
    gain = by_number(optimizer_claims(frame, 0.05))["4b"].effect
    assert gain.high > 0  # not surely worse
    assert by_number(optimizer_claims(frame, 0.05))["4b"].verdict == "supported"
    assert by_number(optimizer_claims(frame, 0.0))["4b"].verdict == "inconclusive"
    assert "margin 0.05" in by_number(optimizer_claims(frame, 0.05))["4b"].detail


@pytest.mark.parametrize(
    ("gain", "expected"), [(0.05, "supported"), (-0.05, "contradicted"), (0.0, "inconclusive")]
)
def test_stages_claim_finds_planted_effect(gain, expected):
    claim = stages_claim(stages_frame(gain=gain))
    assert claim.verdict == expected
    assert claim.effect.value == pytest.approx(gain, abs=0.01)
    assert claim.number == "5" and claim.effect.n == SEEDS


@pytest.mark.parametrize(("gain", "expected"), [(0.1, "supported"), (-0.1, "contradicted")])
def test_latent_claim_finds_planted_effect(gain, expected):
    claim = latent_claim(optimizer_frame(binary_gain=0.0, real_gain=0.0, mass_gain=gain))
    assert claim.verdict == expected
    assert claim.effect.value == pytest.approx(gain, abs=0.01)
    assert "mass within 0.1 of 0" in claim.detail


def test_planted_nulls_are_inconclusive_at_about_the_nominal_rate():
    """With no effect planted, a 95 % interval excludes 0 in about 5 % of replications, no more.

    One draw of a null can land in that 5 % (default_rng(0) does for claim 6), so the nulls of
    claims 4a, 5 and 6 are checked over 100 seeded replications instead.
    """
    replications = 100
    wrong = {"4a": 0, "5": 0, "6": 0}
    for seed in range(replications):
        optimizer = optimizer_frame(binary_gain=0.0, real_gain=0.0, mass_gain=0.0, seed=seed)
        claims = [
            optimizer_claims(optimizer, MARGIN)[0],
            stages_claim(stages_frame(gain=0.0, seed=seed)),
            latent_claim(optimizer),
        ]
        for claim in claims:
            wrong[claim.number] += claim.verdict != "inconclusive"
    for number, count in wrong.items():
        assert count / replications <= 0.12, (number, count)  # 0.05 expected; 0.12 is 3 sd above


# --- all claims together ----------------------------------------------------------------------------


def test_verdict_table_has_one_row_per_claim():
    claims = all_claims(
        wd_frame(acc=lambda wd1, wd2: 0.83 if (wd1, wd2) == PAPER_CELL else 0.80),
        optimizer_frame(binary_gain=0.05, real_gain=0.01, mass_gain=0.1),
        stages_frame(gain=0.05),
        MARGIN,
    )
    table = verdict_table(claims)
    assert list(table["claim"]) == CLAIMS
    assert {"claim", "effect", "ci_low", "ci_high", "n", "verdict"} <= set(table.columns)
    assert set(table["verdict"]) <= VERDICTS
    # Everything planted in the paper's favour (FF not in stage-1 weight decay: 1b has no trend).
    expected = dict.fromkeys(CLAIMS, "supported") | {"1b": "inconclusive"}
    assert dict(zip(table["claim"], table["verdict"], strict=True)) == expected
    assert (table["ci_low"] <= table["effect"]).all() and (table["effect"] <= table["ci_high"]).all()
    assert (table["n"] == SEEDS).all()
    assert table.loc[table["claim"] == "3", "effect"].item() == pytest.approx(0.03, abs=0.01)
