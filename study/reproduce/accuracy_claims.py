"""Claims 3, 4 and 5: test-accuracy comparisons, each counting the seeds and the test images.

Every comparison pairs two cells by seed and by test image: the score matrix is the difference of
their per-example correctness (seeds x images), and its mean, interval and p-value come from the
two-way bootstrap (:mod:`study.reproduce.bootstrap`). The frames carry each run's correctness in a
``correct`` column (a 0/1 array over the test split, see ``study.reproduce.report.cell_frame``).

- 3: the paper's cell (stage-1 weight decay 5e-6, stage-2 0) is the best of the grid;
  3a / 3b: its stage-1 / stage-2 weight decay is the best level of that stage, averaged over the
  other stage's levels (the grid's main effects: what the paper's recipe chooses, stage by stage).
  "Best" is an intersection-union test: supported when the candidate beats every rival
  (the largest of the p-values is the claim's p); contradicted when some rival beats it
  (Holm across the rivals).
- 4a: Adam beats SGD for the binary network; 4b: SGD is at least as good as Adam for the
  real-valued one, within a margin (non-inferiority: two one-sided tests against -margin); each
  optimizer at the learning rate chosen on validation (:mod:`study.reproduce.lr_bracket`).
- 5: two-stage training beats one-stage training.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.reproduce.bootstrap import TwoWay, two_way_mean
from study.reproduce.claim import Claim, direction_side
from study.reproduce.lr_bracket import LR
from study.reproduce.stats import Estimate, holm
from study.reproduce.trend_claims import WD1, WD2

PAPER_CELL = (5.0e-6, 0.0)  # AdamBNN's recipe: stage-1 weight decay 5e-6, stage-2 weight decay 0


def aligned(cells: dict) -> dict:
    """Each cell's correctness as an int64 seeds x images matrix, on the seeds every cell has."""
    by_seed = {name: rows.set_index("seed")["correct"] for name, rows in cells.items()}
    seeds = sorted(set.intersection(*(set(s.index) for s in by_seed.values())))
    return {name: np.stack([s[seed] for seed in seeds]).astype(np.int64) for name, s in by_seed.items()}


def pp(value: float) -> str:
    return f"{100 * value:+.2f} pp"


def comparison_claim(
    number: str, statement: str, measure: str, a: pd.DataFrame, b: pd.DataFrame, detail: str
) -> Claim:
    """``a`` beats ``b`` in test accuracy (paired by seed and image; two-sided)."""
    matrices = aligned({"a": a, "b": b})
    result = two_way_mean(matrices["a"] - matrices["b"])
    side = direction_side(result.estimate.value, +1)
    return Claim(number, statement, "> 0", measure, result.estimate, pp(result.estimate.value), "accuracy",
                 p=result.p, side=side, detail=detail, power_of=result)  # fmt: skip


def non_inferiority_claim(
    number: str, statement: str, measure: str, a: pd.DataFrame, b: pd.DataFrame, margin: float, detail: str
) -> Claim:
    """``a`` is at least as good as ``b`` within ``margin``: two one-sided tests against -margin
    (supported: above it; contradicted: below it), so the verdict agrees with the 95 % interval."""
    matrices = aligned({"a": a, "b": b})
    result = two_way_mean(matrices["a"] - matrices["b"])
    above, below = result.p_above(-margin), result.p_below(-margin)
    p = math.nan if math.isnan(result.se) else min(1.0, 2 * min(above, below))
    return Claim(
        number, statement, f"> -{margin:g}", measure, result.estimate, pp(result.estimate.value), "accuracy",
        p=p, side=1 if above < below else -1,
        detail=f"non-inferiority margin {margin:g} ({pp(-margin)}); " + detail, power_of=result,
    )  # fmt: skip


def best_of(candidate, matrices: dict, scale: int) -> tuple[dict[object, TwoWay], int, float]:
    """The candidate against every rival (candidate - rival, ``scale``: the cells summed per
    matrix); the claim's side and p (intersection-union for "best", Holm for "beaten")."""
    comparisons = {
        name: two_way_mean(matrices[candidate] - m, scale)
        for name, m in matrices.items()
        if name != candidate
    }
    values = [c.estimate.value for c in comparisons.values()]
    if not comparisons:  # nothing to be better than: untested
        return comparisons, 0, math.nan
    if all(v > 0 for v in values):
        return comparisons, 1, max(c.p for c in comparisons.values())
    adjusted = holm([c.p for c in comparisons.values()])
    return comparisons, -1, min(q for q, v in zip(adjusted, values, strict=True) if v <= 0)


def best_claim(number: str, statement: str, what: str, candidate, matrices: dict, scale: int) -> Claim:
    """Claim: ``candidate`` is the best of ``matrices`` (keyed by a label); the measured effect is
    the difference to its strongest rival."""
    comparisons, side, p = best_of(candidate, matrices, scale)
    measure = f"test accuracy, {what} minus its strongest rival"
    if not comparisons:
        nan = Estimate(math.nan, math.nan, math.nan, 0)
        return Claim(
            number, statement, "best", measure, nan, "n/a", "accuracy", detail="no other level to compare"
        )
    rival = min(comparisons, key=lambda name: comparisons[name].estimate.value)
    strongest = comparisons[rival]
    ahead = sum(c.estimate.value > 0 and c.p < 0.05 for c in comparisons.values())
    behind = sum(c.estimate.value < 0 and c.p < 0.05 for c in comparisons.values())
    detail = (
        f"strongest rival {rival}: {pp(strongest.estimate.value)} (p = {strongest.p:.3g}); "
        f"of {len(comparisons)} rivals, {ahead} significantly behind and {behind} significantly ahead "
        "at p < 0.05 each"
    )
    return Claim(number, statement, "best", measure, strongest.estimate, pp(strongest.estimate.value),
                 "accuracy", p=p, side=side, detail=detail, power_of=strongest)  # fmt: skip


def cell_label(cell: tuple[float, float]) -> str:
    return f"{cell[0]:g}/{cell[1]:g}"


def grid_claims(wd: pd.DataFrame) -> list[Claim]:
    """Claims 3 (the paper's cell is the best cell), 3a and 3b (its levels are the best of their stage)."""
    cells = aligned({cell_label(key): rows for key, rows in wd.groupby([WD1, WD2])})
    paper = cell_label(PAPER_CELL)
    if paper not in cells or len(cells) < 2:
        raise ValueError("the weight-decay grid needs the paper's cell (5e-6, 0) and another cell")
    levels = {stage: sorted(wd[stage].unique()) for stage in (WD1, WD2)}

    def stage_sums(stage: str) -> dict[str, np.ndarray]:
        other = WD2 if stage == WD1 else WD1
        key = (lambda a, b: (a, b)) if stage == WD1 else (lambda a, b: (b, a))
        return {f"{a:g}": sum(cells[cell_label(key(a, b))] for b in levels[other]) for a in levels[stage]}

    return [
        best_claim("3", "stage-1 weight decay 5e-6 with stage-2 weight decay 0 is the best cell",
                   "the paper's cell", paper, cells, 1),
        best_claim("3a", "stage-1 weight decay 5e-6 is the best stage-1 level (mean over stage-2 levels)",
                   "stage-1 5e-6", f"{PAPER_CELL[0]:g}", stage_sums(WD1), len(levels[WD2])),
        best_claim("3b", "stage-2 weight decay 0 is the best stage-2 level (mean over stage-1 levels)",
                   "stage-2 0", f"{PAPER_CELL[1]:g}", stage_sums(WD2), len(levels[WD1])),
    ]  # fmt: skip


def chosen_lrs(chosen: pd.DataFrame) -> str:
    """``adam 0.032, sgd 0.3``: the learning rate each optimizer runs at in ``chosen``."""
    lrs = chosen.groupby("optimizer")[LR].first()
    return ", ".join(f"{name} {lr:g}" for name, lr in lrs.items())


def optimizer_claims(chosen: pd.DataFrame, margin: float) -> list[Claim]:
    """Claims 4a and 4b on the runs at each optimizer's chosen learning rate."""
    runs = {(n, o): rows for (n, o), rows in chosen.groupby(["network", "optimizer"])}
    binary = f"lr chosen on validation: {chosen_lrs(chosen[chosen['network'] == 'binary'])}"
    real = f"lr chosen on validation: {chosen_lrs(chosen[chosen['network'] == 'real'])}"
    return [
        comparison_claim("4a", "Adam beats SGD for the binary network", "test accuracy, Adam - SGD (binary)",
                         runs["binary", "adam"], runs["binary", "sgd"], binary),
        non_inferiority_claim("4b", "SGD is at least as good as Adam for the real-valued network",
                              "test accuracy, SGD - Adam (real-valued)", runs["real", "sgd"],
                              runs["real", "adam"], margin, real),
    ]  # fmt: skip


def stages_claim(stages: pd.DataFrame) -> Claim:
    """Claim 5: two-stage training beats fully binary training from scratch for the same epochs."""
    runs = dict(tuple(stages.groupby("training")))
    return comparison_claim(
        "5",
        "two-stage training beats one-stage training",
        "test accuracy, two-stage - one-stage",
        runs["two-stage"],
        runs["one-stage"],
        "",
    )
