"""study.reproduce.claims end to end on synthetic ablation frames: every claim decided, the verdict table.

The frames have the columns ``study.reproduce.report.cell_frame`` gives the claims (one row per cell
and seed, each run's per-example test correctness in ``correct``); every value is drawn from
numpy.random.default_rng with an effect planted and per-seed offsets shared by a seed's runs. Each
claim module has its own tests; these check that the pieces are put together and decided as one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from study.reproduce.accuracy_claims import PAPER_CELL, chosen_lrs
from study.reproduce.claim import ALPHA
from study.reproduce.claims import all_claims, select_lr, verdict_counts, verdict_table
from study.reproduce.stats import VERDICTS
from study.reproduce.trend_claims import WD1, WD2

SEEDS = 5
IMAGES = 300
GRID1 = [0.0, 5.0e-6, 1.0e-4]
GRID2 = [0.0, 1.0e-5, 1.0e-3]
LRS = {"adam": [1e-3, 4e-3, 1.6e-2], "sgd": [0.03, 0.1, 0.3]}
BEST_LR = {"adam": 4e-3, "sgd": 0.1}
MARGIN = 0.02
CLAIMS = ["1a", "1b", "2a", "2b", "3", "3a", "3b", "4a", "4b", "5", "6a", "6b", "6c"]
ACCURACY = ["3", "3a", "3b", "4a", "4b", "5"]
COLUMNS = ["claim", "family", "statement", "expected", "measure", "effect", "ci_low", "ci_high", "n", "size",
           "p", "p_holm", "mde", "mde_alpha", "shape", "shape_p", "verdict", "detail"]  # fmt: skip


class World:
    """Seed offsets, image difficulties and each seed's per-image uniforms, shared by a study's runs
    (a run draws 10 % of its images afresh)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.offsets = self.rng.normal(0, 0.02, SEEDS)
        self.difficulty = self.rng.normal(0, 0.1, IMAGES)
        self.uniform = self.rng.random((SEEDS, IMAGES))

    def correct(self, seed: int, p: float) -> np.ndarray:
        u = np.where(self.rng.random(IMAGES) < 0.9, self.uniform[seed], self.rng.random(IMAGES))
        return (u < p + self.offsets[seed] - self.difficulty).astype(np.int8)


def wd_frame(world: World, sign: int = 1) -> pd.DataFrame:
    """FF rising (``sign`` +1) or falling with stage-2 weight decay, C2I falling (or rising) with both
    stages' weight decays; the paper's stage-1 and stage-2 levels each 0.06 better (worse)."""
    rows = []
    for seed, wd1, wd2 in itertools.product(range(SEEDS), GRID1, GRID2):
        acc = 0.72 + sign * 0.06 * ((wd1 == PAPER_CELL[0]) + (wd2 == PAPER_CELL[1]))
        rows.append(
            {
                "seed": seed,
                WD1: wd1,
                WD2: wd2,
                "ff_ratio": 0.004 * math.exp(sign * 1000 * wd2 + world.rng.normal(0, 0.05)),
                "c2i_ratio": 0.97 - sign * 20 * wd2 + world.offsets[seed] + world.rng.normal(0, 0.002),
                "c2i_init": 0.95 - sign * 500 * wd1 + world.offsets[seed] + world.rng.normal(0, 0.002),
                "correct": world.correct(seed, acc),
            }
        )
    return pd.DataFrame(rows)


def optimizer_frame(world: World, binary_gain: float, real_gain: float) -> pd.DataFrame:
    """Each optimizer's sweep; the middle lr is the best on validation, and the largest Adam lr
    diverged on one seed. At the best lrs, Adam - SGD is ``binary_gain`` (binary) and SGD - Adam
    ``real_gain`` (real-valued)."""
    rows = []
    for seed, network, optimizer in itertools.product(range(SEEDS), ("binary", "real"), ("adam", "sgd")):
        for lr in LRS[optimizer]:
            acc = 0.75 + (binary_gain if (network, optimizer) == ("binary", "adam") else 0)
            acc += real_gain if (network, optimizer) == ("real", "sgd") else 0
            acc -= 0 if lr == BEST_LR[optimizer] else 0.1
            failed = optimizer == "adam" and lr == LRS["adam"][-1] and seed == 0
            correct = world.correct(seed, acc)
            rows.append(
                {
                    "seed": seed,
                    "network": network,
                    "optimizer": optimizer,
                    "lr": lr,
                    "val_acc": math.nan if failed else acc + world.rng.normal(0, 0.005),
                    "test_acc": math.nan if failed else float(correct.mean()),
                    "failure": "loss is NaN" if failed else None,
                    "correct": None if failed else correct,
                }
            )
    return pd.DataFrame(rows)


def stages_frame(world: World, gain: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"seed": seed, "training": training, "correct": world.correct(seed, p)}
            for seed, (training, p) in itertools.product(
                range(SEEDS), {"two-stage": 0.75 + gain, "one-stage": 0.75}.items()
            )
        ]
    )


def latent_frame(world: World, gain: float, at_clip: float = 0.2) -> pd.DataFrame:
    """Adam's mass near +-1 is ``at_clip`` (SGD's ``gain`` less); its masses near 0 and BIC gain are
    ``gain`` above SGD's."""
    rows = []
    for seed, optimizer in itertools.product(range(SEEDS), ("adam", "sgd")):
        up = gain if optimizer == "adam" else 0.0
        near_one = at_clip if optimizer == "adam" else at_clip - gain
        rows.append(
            {
                "seed": seed,
                "optimizer": optimizer,
                "mass_near_one": near_one + world.rng.normal(0, 0.002),
                "beyond_clip": 0.0,
                "mass_near_zero": 0.3 + up + world.offsets[seed] + world.rng.normal(0, 0.005),
                "bic_gain_3v1": 0.01 + up + world.offsets[seed] + world.rng.normal(0, 0.005),
                "mixture_components": 3 if optimizer == "adam" else 1,
                "max_abs_weight": 1.2 if at_clip >= 0.01 else 0.4,
                "lr_budget": 0.36,
            }
        )
    return pd.DataFrame(rows)


def study(sign: int = 1, at_clip: float = 0.2, seed: int = 0) -> list:
    """All claims, every effect planted in the paper's favour (``sign`` +1) or against it (-1)."""
    world = World(seed)
    return all_claims(
        wd_frame(world, sign),
        optimizer_frame(world, binary_gain=sign * 0.1, real_gain=0.05 if sign > 0 else -0.15),
        stages_frame(world, sign * 0.1),
        latent_frame(world, sign * 0.1, at_clip),
        MARGIN,
    )


@pytest.fixture(scope="module")
def favourable() -> list:
    return study(+1)


def verdicts(claims) -> dict[str, str]:
    return {c.number: c.verdict for c in claims}


# --- select_lr ---------------------------------------------------------------------------------------


def test_select_lr_keeps_every_seed_of_each_chosen_lr():
    frame = optimizer_frame(World(), 0.1, 0.0)
    chosen = select_lr(frame)
    assert len(chosen) == SEEDS * 4  # every seed, at one lr per (network, optimizer)
    picked = chosen.groupby(["network", "optimizer"])["lr"].unique().map(list).to_dict()
    assert picked == {(n, o): [BEST_LR[o]] for n in ("binary", "real") for o in ("adam", "sgd")}
    assert chosen["failure"].isna().all() and chosen["correct"].notna().all()
    assert set(frame.columns) <= set(chosen.columns)
    assert chosen_lrs(chosen[chosen["network"] == "binary"]) == "adam 0.004, sgd 0.1"


def test_select_lr_skips_an_lr_where_a_seed_failed():
    """The largest Adam lr is made the best on validation, but it failed on seed 0: not eligible;
    without the failure it is chosen."""
    frame = optimizer_frame(World(), 0.1, 0.0)
    frame.loc[frame["lr"] == LRS["adam"][-1], "val_acc"] = 0.99
    assert set(select_lr(frame).loc[lambda f: f["optimizer"] == "adam", "lr"]) == {BEST_LR["adam"]}
    healthy = frame.assign(failure=None)
    assert set(select_lr(healthy).loc[lambda f: f["optimizer"] == "adam", "lr"]) == {LRS["adam"][-1]}


def test_select_lr_ignores_the_test_accuracy():
    frame = optimizer_frame(World(), 0.1, 0.0)
    frame.loc[frame["lr"] == 0.3, "test_acc"] = 1.0
    assert set(select_lr(frame).loc[lambda f: f["optimizer"] == "sgd", "lr"]) == {0.1}


# --- all_claims --------------------------------------------------------------------------------------


def test_every_claim_is_decided_once_in_order(favourable):
    assert [c.number for c in favourable] == CLAIMS
    assert all(c.verdict in VERDICTS for c in favourable)
    families = {c.number: c.family for c in favourable}
    assert [n for n in CLAIMS if families[n] == "accuracy"] == ACCURACY
    assert {families[n] for n in CLAIMS if n not in ACCURACY} == {"mechanism"}


def test_planted_favourable_study_is_supported(favourable):
    expected = dict.fromkeys(CLAIMS, "supported") | {"1b": "inconclusive"}  # FF: stage 2 only
    assert verdicts(favourable) == expected


def test_planted_unfavourable_study_is_contradicted():
    expected = dict.fromkeys(CLAIMS, "contradicted") | {"1b": "inconclusive"}
    assert verdicts(study(-1)) == expected


def test_claim_6_is_untestable_when_adams_weights_stay_off_the_clip():
    claims = {c.number: c for c in study(+1, at_clip=0.002)}
    assert claims["6a"].verdict == claims["6b"].verdict == "untestable at this budget"
    assert claims["6c"].verdict == "supported"
    assert "do not reach the clip" in claims["6a"].detail


def test_holm_and_power_are_per_family(favourable):
    claims = {c.number: c for c in favourable}
    for number in ACCURACY:
        assert claims[number].alpha == pytest.approx(ALPHA / len(ACCURACY))
        assert claims[number].mde > 0 and claims[number].power_of is not None
    for number in set(CLAIMS) - set(ACCURACY):
        assert claims[number].alpha == pytest.approx(ALPHA / 7) and math.isnan(claims[number].mde)
    assert all(c.adjusted_p >= c.p for c in favourable)
    assert "adam 0.004, sgd 0.1" in claims["4a"].detail


# --- verdict_table and verdict_counts ---------------------------------------------------------------


def test_verdict_table_has_one_row_per_claim_with_the_columns_it_writes(favourable):
    table = verdict_table(favourable)
    assert list(table.columns) == COLUMNS
    assert list(table["claim"]) == CLAIMS
    assert dict(zip(table["claim"], table["verdict"], strict=True)) == verdicts(favourable)
    assert (table["ci_low"] <= table["effect"]).all() and (table["effect"] <= table["ci_high"]).all()
    assert (table["n"] == SEEDS).all()
    assert (table["p_holm"] >= table["p"]).all()
    accuracy = table["claim"].isin(ACCURACY)
    assert table.loc[accuracy, "mde"].gt(0).all() and table.loc[~accuracy, "mde"].isna().all()
    assert (table.loc[accuracy, "mde_alpha"] == ALPHA / len(ACCURACY)).all()
    assert table.loc[~accuracy, "mde_alpha"].isna().all()
    trends = table["claim"].isin(["1a", "1b", "2a", "2b"])
    assert table.loc[trends, "shape"].isin(["shape consistent", "shape rejected"]).all()
    assert table.loc[trends, "shape_p"].notna().all()
    assert (table.loc[~trends, "shape"] == "").all() and table.loc[~trends, "shape_p"].isna().all()
    assert set(table["family"]) == {"accuracy", "mechanism"}
    assert table.loc[table["claim"] == "3", "size"].item().endswith(" pp")


def test_verdict_table_of_an_untestable_claim():
    table = verdict_table(study(+1, at_clip=0.002)).set_index("claim")
    assert table.loc["6a", "verdict"] == "untestable at this budget"
    assert math.isnan(table.loc["6a", "p_holm"]) and not math.isnan(table.loc["6a", "p"])


def test_verdict_counts_list_every_verdict(favourable):
    counts = verdict_counts(favourable)
    assert list(counts) == list(VERDICTS)
    assert counts == {"supported": 12, "contradicted": 0, "inconclusive": 1, "untestable at this budget": 0}
    assert verdict_counts([]) == dict.fromkeys(VERDICTS, 0)
    flipped = [replace(favourable[0], verdict="contradicted"), *favourable[1:]]
    assert verdict_counts(flipped) == counts | {"supported": 11, "contradicted": 1}
    assert sum(verdict_counts(study(+1, at_clip=0.002)).values()) == len(CLAIMS)
