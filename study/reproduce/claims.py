"""The AdamBNN claims, each tested on the ablation results and decided family by family; nothing here
is written by hand.

Input: the cell frames of the four ablations (one row per cell and seed, as
``study.reproduce.report.cell_frame`` reads them, with each run's per-example test correctness).
Output: one :class:`~study.reproduce.claim.Claim` per claim, its verdict given by
:func:`~study.reproduce.claim.decide` (Holm within the accuracy and the mechanism family).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from study.reproduce.accuracy_claims import grid_claims, optimizer_claims, stages_claim
from study.reproduce.claim import NAN, Claim, decide
from study.reproduce.latent_claims import latent_claims
from study.reproduce.lr_bracket import LR, lr_sweep
from study.reproduce.stats import VERDICTS, shape_verdict
from study.reproduce.trend_claims import trend_claims


def select_lr(optimizer: pd.DataFrame) -> pd.DataFrame:
    """The rows (every seed) of each (network, optimizer)'s learning rate chosen on validation;
    ``optimizer`` holds every run, failed ones too (they decide where a sweep diverges)."""
    sweep = lr_sweep(optimizer)
    chosen = sweep.loc[sweep["selected"], ["network", "optimizer", LR]]
    return optimizer.merge(chosen, on=["network", "optimizer", LR])


def all_claims(
    wd: pd.DataFrame, optimizer: pd.DataFrame, stages: pd.DataFrame, latent: pd.DataFrame, margin: float
) -> list[Claim]:
    return decide(
        [
            *trend_claims(wd),
            *grid_claims(wd),
            *optimizer_claims(select_lr(optimizer), margin),
            stages_claim(stages),
            *latent_claims(latent),
        ]
    )


def verdict_counts(claims: list[Claim]) -> dict[str, int]:
    """How many claims got each verdict, every verdict listed (in :data:`~study.reproduce.stats.VERDICTS`
    order)."""
    counts = Counter(c.verdict for c in claims)
    return {verdict: counts[verdict] for verdict in VERDICTS}


def verdict_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "claim": c.number,
                "family": c.family,
                "statement": c.statement,
                "expected": c.expected,
                "measure": c.measure,
                "effect": c.effect.value,
                "ci_low": c.effect.low,
                "ci_high": c.effect.high,
                "n": c.effect.n,
                "size": c.size,
                "p": c.p,
                "p_holm": c.adjusted_p,
                "mde": c.mde,
                "mde_alpha": c.alpha if c.power_of else NAN,
                "shape": shape_verdict(c.fit) if c.fit else "",
                "shape_p": c.fit.p if c.fit else NAN,
                "verdict": c.verdict,
                "detail": c.detail,
            }
            for c in claims
        ]
    )
