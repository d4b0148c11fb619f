"""The six AdamBNN claims, each tested on the ablation results; nothing here is written by hand.

Input: the cell tables of the three ablations (one row per cell and seed, as ``study.ablate``
writes them). Output: one :class:`Claim` per claim with the measured effect, its confidence
interval, the number of observations and a verdict from :mod:`study.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

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

PAPER_CELL = (5.0e-6, 0.0)  # AdamBNN's recipe: stage-1 weight decay 5e-6, stage-2 weight decay 0
WD1, WD2 = "stage1.weight_decay", "stage2.weight_decay"


@dataclass(frozen=True)
class Claim:
    number: str
    statement: str
    expected: str
    measure: str
    effect: Estimate
    verdict: str
    detail: str = ""


def _paired(frame: pd.DataFrame, column: str, a: str, b: str, metric: str) -> Estimate:
    """``metric`` of rows with ``column == a`` minus ``column == b``, paired by seed."""
    pivot = frame.pivot_table(index="seed", columns=column, values=metric).dropna()
    difference, _ = paired_difference(pivot[a], pivot[b])
    return difference


def per_seed(rows: pd.DataFrame, statistic) -> Estimate:
    """A statistic computed within each seed, then its mean and t-interval over seeds.

    Runs of one seed share their initialisation and data order, so pooling every cell and seed
    into one correlation would count dependent runs as independent and make the interval too
    narrow; the seeds are the independent replicates.
    """
    return mean_ci([statistic(group) for _, group in rows.groupby("seed")])


def trend_claims(wd: pd.DataFrame) -> list[Claim]:
    """Claims 1 and 2: FF rises and C2I falls with weight decay (rank correlation, and a fitted slope)."""
    claims = []
    specs = [
        ("1a", "FF ratio rises with stage-2 weight decay", "ff_ratio", WD2, +1, "log"),
        ("1b", "FF ratio rises with stage-1 weight decay", "ff_ratio", WD1, +1, "log"),
        (
            "2a",
            "C2I (against the start of stage 2) falls with stage-2 weight decay",
            "c2i_ratio",
            WD2,
            -1,
            "linear",
        ),
        (
            "2b",
            "C2I (against the first initialisation) falls with stage-1 weight decay",
            "c2i_init",
            WD1,
            -1,
            "linear",
        ),
    ]
    for number, statement, metric, x, sign, shape in specs:
        rows = wd[["seed", x, metric]].dropna()
        rows = rows[rows[metric] > 0] if shape == "log" else rows
        rows = rows.assign(y=np.log(rows[metric]) if shape == "log" else rows[metric])
        rho = per_seed(rows, lambda g, x=x, metric=metric: spearman(g[x], g[metric]).value)
        fit = per_seed(rows, lambda g, x=x: slope(g[x], g["y"]).value)
        what = "log " + metric if shape == "log" else metric
        paper = "roughly exponential" if shape == "log" else "roughly linear"
        detail = f"slope of {what} per unit of weight decay: {fit.value:.4g} [{fit.low:.4g}, {fit.high:.4g}]"
        detail += f" (the paper: {paper}); rho and slope are computed within each seed, CIs over seeds"
        expected = "rank correlation " + (">" if sign > 0 else "<") + " 0"
        measure = f"Spearman rho({x}, {metric})"
        claims.append(Claim(number, statement, expected, measure, rho, direction_verdict(rho, sign), detail))
    return claims


def best_cell_claim(wd: pd.DataFrame) -> Claim:
    """Claim 3: the paper's cell has the best test accuracy (paired by seed, Holm-corrected)."""
    cells = wd.pivot_table(index="seed", columns=[WD1, WD2], values="test_acc").dropna()
    statement = "stage-1 weight decay 5e-6 with stage-2 weight decay 0 is the best cell"
    if PAPER_CELL not in cells.columns or len(cells.columns) < 2:
        nan = Estimate(math.nan, math.nan, math.nan, 0)
        why = "the paper's cell is not in the grid"
        if PAPER_CELL in cells.columns:
            why = "the grid has no other cell to compare with"
        return Claim("3", statement, "best", "test accuracy", nan, "inconclusive", why)
    comparisons = {
        f"{a:g}/{b:g}": paired_difference(cells[PAPER_CELL], cells[(a, b)])
        for a, b in cells.columns
        if (a, b) != PAPER_CELL
    }
    outcome, names = best_cell_verdict(f"{PAPER_CELL[0]:g}/{PAPER_CELL[1]:g}", comparisons)
    adjusted = dict(zip(comparisons, holm([p for _, p in comparisons.values()]), strict=True))
    closest = min(comparisons, key=lambda name: comparisons[name][0].value)
    listed = ", ".join(names) if len(names) <= 4 else f"{len(names)} of {len(comparisons)} other cells"
    detail = f"{outcome}" + (f" ({listed})" if names else "")
    detail += f"; the strongest rival is {closest} (stage-1/stage-2 weight decay): difference "
    detail += f"{comparisons[closest][0].value:+.4f}, Holm-adjusted p = {adjusted[closest]:.3g}"
    return Claim(
        "3",
        statement,
        "best",
        "test accuracy minus the closest other cell (paired by seed)",
        comparisons[closest][0],
        BEST_CELL_CLAIM[outcome],
        detail,
    )


def optimizer_claims(optimizer: pd.DataFrame, margin: float) -> list[Claim]:
    """Claim 4: Adam beats SGD for the binary network; SGD is at least as good for the real-valued one."""
    binary = optimizer[optimizer["network"] == "binary"]
    real = optimizer[optimizer["network"] == "real"]
    adam_gain = _paired(binary, "optimizer", "adam", "sgd", "test_acc")
    sgd_gain = _paired(real, "optimizer", "sgd", "adam", "test_acc")
    return [
        Claim(
            "4a",
            "Adam beats SGD for the binary network",
            "> 0",
            "test accuracy, Adam - SGD (binary)",
            adam_gain,
            direction_verdict(adam_gain, +1),
        ),
        Claim(
            "4b",
            "SGD is at least as good as Adam for the real-valued network",
            f"> -{margin:g}",
            "test accuracy, SGD - Adam (real-valued)",
            sgd_gain,
            non_inferiority_verdict(sgd_gain, margin),
            f"non-inferiority margin {margin:g}",
        ),
    ]


def stages_claim(stages: pd.DataFrame) -> Claim:
    """Claim 5: two-stage training beats fully binary training from scratch for the same epochs."""
    gain = _paired(stages, "training", "two-stage", "one-stage", "test_acc")
    return Claim(
        "5",
        "two-stage training beats one-stage training",
        "> 0",
        "test accuracy, two-stage - one-stage",
        gain,
        direction_verdict(gain, +1),
    )


def latent_claim(optimizer: pd.DataFrame) -> Claim:
    """Claim 6: Adam's latent weights pile up near -1, 0, +1; SGD's stay centred."""
    binary = optimizer[optimizer["network"] == "binary"]
    near_one = _paired(binary, "optimizer", "adam", "sgd", "mass_near_one")
    near_zero = _paired(binary, "optimizer", "adam", "sgd", "mass_near_zero")
    detail = "mass within 0.1 of 0, Adam - SGD: "
    detail += f"{near_zero.value:+.4f} [{near_zero.low:+.4f}, {near_zero.high:+.4f}]"
    return Claim(
        "6",
        "Adam's latent weights pile up near -1, 0 and +1, SGD's stay centred",
        "> 0",
        "mass within 0.1 of +-1, Adam - SGD (binary)",
        near_one,
        direction_verdict(near_one, +1),
        detail,
    )


def all_claims(wd: pd.DataFrame, optimizer: pd.DataFrame, stages: pd.DataFrame, margin: float) -> list[Claim]:
    return [
        *trend_claims(wd),
        best_cell_claim(wd),
        *optimizer_claims(optimizer, margin),
        stages_claim(stages),
        latent_claim(optimizer),
    ]


def verdict_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "claim": c.number,
                "statement": c.statement,
                "expected": c.expected,
                "measure": c.measure,
                "effect": c.effect.value,
                "ci_low": c.effect.low,
                "ci_high": c.effect.high,
                "n": c.effect.n,
                "verdict": c.verdict,
                "detail": c.detail,
            }
            for c in claims
        ]
    )
