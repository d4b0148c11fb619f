"""The AdamBNN claims, each tested on the ablation results; nothing here is written by hand.

Input: the cell tables of the four ablations (one row per cell and seed, as ``study.reproduce.ablate``
writes them). Output: one :class:`Claim` per claim with the measured effect, its confidence
interval, the number of observations, a verdict from :mod:`study.reproduce.stats`, and where it applies the
minimum detectable effect (accuracy claims) or the fitted shape (weight-decay trends).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.reproduce.stats import (
    BEST_CELL_CLAIM,
    UNTESTABLE,
    VERDICTS,
    Estimate,
    LinearFit,
    best_cell_verdict,
    direction_verdict,
    fit_linear,
    holm,
    mean_ci,
    minimum_detectable_effect,
    non_inferiority_verdict,
    paired_difference,
    shape_verdict,
    slope,
    spearman,
)

PAPER_CELL = (5.0e-6, 0.0)  # AdamBNN's recipe: stage-1 weight decay 5e-6, stage-2 weight decay 0
WD1, WD2 = "stage1.weight_decay", "stage2.weight_decay"
LR = "lr"
TARGET_EFFECT = 0.005  # 0.5 percentage points: the accuracy difference the seeds should detect
REACH = 0.9  # claim 6's absolute form needs an Adam weight with |w| at least this close to 1
NAN = float("nan")


@dataclass(frozen=True)
class Claim:
    number: str
    statement: str
    expected: str
    measure: str
    effect: Estimate
    verdict: str
    detail: str = ""
    mde: float = NAN  # minimum detectable effect (accuracy claims)
    fit: LinearFit | None = None  # the fitted shape (weight-decay trends)


def _pair(frame: pd.DataFrame, column: str, a: str, b: str, metric: str) -> tuple[pd.Series, pd.Series]:
    """``metric`` of rows with ``column == a`` and of rows with ``column == b``, aligned by seed."""
    pivot = frame.pivot_table(index="seed", columns=column, values=metric).dropna()
    return pivot[a], pivot[b]


def _difference(frame: pd.DataFrame, column: str, a: str, b: str, metric: str) -> Estimate:
    """``metric`` of ``column == a`` minus ``column == b``, paired by seed."""
    difference, _ = paired_difference(*_pair(frame, column, a, b, metric))
    return difference


def _accuracy_gain(frame: pd.DataFrame, column: str, a: str, b: str) -> tuple[Estimate, float]:
    """Test accuracy of ``a`` minus ``b`` paired by seed, and that comparison's minimum detectable effect."""
    x, y = _pair(frame, column, a, b, "test_acc")
    difference, _ = paired_difference(x, y)
    return difference, minimum_detectable_effect(x - y)


def power_note(mde: float, n: int) -> str:
    """The minimum detectable effect in words, and whether it reaches ``TARGET_EFFECT``."""
    if math.isnan(mde):
        return f"minimum detectable effect: n/a at {n} seeds"
    can = "detectable" if mde <= TARGET_EFFECT else "not detectable"
    return (
        f"minimum detectable effect {mde:.4f} at {n} seeds (paired t, alpha 0.05, power 0.8): "
        f"a {TARGET_EFFECT:g} difference is {can}"
    )


def per_seed(rows: pd.DataFrame, statistic) -> Estimate:
    """A statistic computed within each seed, then its mean and t-interval over seeds.

    Runs of one seed share their initialisation and data order, so pooling every cell and seed
    into one correlation would count dependent runs as independent and make the interval too
    narrow; the seeds are the independent replicates.
    """
    return mean_ci([statistic(group) for _, group in rows.groupby("seed")])


def shape_fit(rows: pd.DataFrame, x: str) -> LinearFit:
    """y linear in ``x`` with an intercept per seed, fitted to the mean of y over the other stage's
    weight decay at each (seed, x). The seed is the replicate: cells of one seed and stage-1 weight
    decay share their stage-1 run, so they are not independent replicates of a stage-1 level."""
    means = rows.groupby(["seed", x], as_index=False)["y"].mean()
    return fit_linear(means[x], means["y"], means["seed"])


def shape_text(what: str, x: str, fit: LinearFit) -> str:
    """The fitted model, its R^2, residual SD and lack-of-fit test in one line."""
    return (
        f"fit {what} (mean over the other stage's weight decay) = intercept per seed + slope x {x}: "
        f"R^2 within seeds {fit.r2:.3f}, residual SD {fit.residual_sd:.3g}; "
        f"lack-of-fit F({fit.dof[0]}, {fit.dof[1]}) = {fit.f:.3g}, p = {fit.p:.3g}: {shape_verdict(fit)}"
    )


def trend_claims(wd: pd.DataFrame) -> list[Claim]:
    """Claims 1 and 2: FF rises and C2I falls with weight decay (rank correlation for the direction;
    log FF and C2I fitted as straight lines in weight decay, with a lack-of-fit test for the shape)."""
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
        rate = per_seed(rows, lambda g, x=x: slope(g[x], g["y"]).value)
        fit = shape_fit(rows, x)
        what = "log " + metric if shape == "log" else metric
        paper = "roughly exponential" if shape == "log" else "roughly linear"
        detail = f"slope of {what} per unit of weight decay: {rate.value:.4g} "
        detail += f"[{rate.low:.4g}, {rate.high:.4g}] (the paper: {paper}); "
        detail += "rho and slope are computed within each seed, CIs over seeds; "
        detail += shape_text(what, x, fit)
        expected = "rank correlation " + (">" if sign > 0 else "<") + " 0"
        measure = f"Spearman rho({x}, {metric})"
        verdict = direction_verdict(rho, sign)
        claims.append(Claim(number, statement, expected, measure, rho, verdict, detail, fit=fit))
    return claims


def best_cell_claim(wd: pd.DataFrame) -> Claim:
    """Claim 3: the paper's cell has the best test accuracy (paired by seed, Holm-corrected)."""
    cells = wd.pivot_table(index="seed", columns=[WD1, WD2], values="test_acc").dropna()
    statement = "stage-1 weight decay 5e-6 with stage-2 weight decay 0 is the best cell"
    if PAPER_CELL not in cells.columns or len(cells.columns) < 2:
        nan = Estimate(NAN, NAN, NAN, 0)
        why = "the paper's cell is not in the grid"
        if PAPER_CELL in cells.columns:
            why = "the grid has no other cell to compare with"
        return Claim("3", statement, "best", "test accuracy", nan, "inconclusive", why)
    rivals = {f"{a:g}/{b:g}": (a, b) for a, b in cells.columns if (a, b) != PAPER_CELL}
    comparisons = {name: paired_difference(cells[PAPER_CELL], cells[cell]) for name, cell in rivals.items()}
    outcome, names = best_cell_verdict(f"{PAPER_CELL[0]:g}/{PAPER_CELL[1]:g}", comparisons)
    adjusted = dict(zip(comparisons, holm([p for _, p in comparisons.values()]), strict=True))
    closest = min(comparisons, key=lambda name: comparisons[name][0].value)
    difference = comparisons[closest][0]
    mde = minimum_detectable_effect(cells[PAPER_CELL] - cells[rivals[closest]])
    listed = ", ".join(names) if len(names) <= 4 else f"{len(names)} of {len(comparisons)} other cells"
    detail = f"{outcome}" + (f" ({listed})" if names else "")
    detail += f"; the strongest rival is {closest} (stage-1/stage-2 weight decay): difference "
    detail += f"{difference.value:+.4f}, Holm-adjusted p = {adjusted[closest]:.3g}; "
    detail += power_note(mde, difference.n) + " (against the strongest rival)"
    return Claim(
        "3",
        statement,
        "best",
        "test accuracy minus the closest other cell (paired by seed)",
        difference,
        BEST_CELL_CLAIM[outcome],
        detail,
        mde,
    )


def lr_sweep(optimizer: pd.DataFrame) -> pd.DataFrame:
    """Per (network, optimizer, lr): mean validation and test accuracy over seeds, the number of
    seeds, and ``selected``: the lr with the highest mean validation accuracy of its (network,
    optimizer) among the lrs trained on every seed (an lr that failed on a seed is not eligible;
    ties go to the smaller lr). The test accuracy plays no part in the choice."""
    keys = ["network", "optimizer"]
    sweep = (
        optimizer.groupby([*keys, LR], dropna=False)
        .agg(val_acc=("val_acc", "mean"), test_acc=("test_acc", "mean"), seeds=("seed", "nunique"))
        .reset_index()
    )
    complete = sweep["seeds"] == sweep.groupby(keys)["seeds"].transform("max")
    best = sweep[complete].groupby(keys)["val_acc"].idxmax()
    return sweep.assign(selected=sweep.index.isin(best))


def select_lr(optimizer: pd.DataFrame) -> pd.DataFrame:
    """The rows (every seed) of each (network, optimizer)'s lr selected by :func:`lr_sweep`."""
    sweep = lr_sweep(optimizer)
    chosen = sweep.loc[sweep["selected"], ["network", "optimizer", LR]]
    return optimizer.merge(chosen, on=["network", "optimizer", LR])


def _chosen_lrs(chosen: pd.DataFrame) -> str:
    lrs = chosen.groupby("optimizer")[LR].first()
    return ", ".join(f"{name} {lr:g}" for name, lr in lrs.items())


def optimizer_claims(optimizer: pd.DataFrame, margin: float) -> list[Claim]:
    """Claim 4: Adam beats SGD for the binary network; SGD is at least as good for the real-valued one.

    Each optimizer runs at the learning rate chosen on the validation split (:func:`select_lr`);
    the chosen runs' test accuracies are compared paired by seed.
    """
    chosen = select_lr(optimizer)
    binary = chosen[chosen["network"] == "binary"]
    real = chosen[chosen["network"] == "real"]
    adam_gain, adam_mde = _accuracy_gain(binary, "optimizer", "adam", "sgd")
    sgd_gain, sgd_mde = _accuracy_gain(real, "optimizer", "sgd", "adam")
    return [
        Claim(
            "4a",
            "Adam beats SGD for the binary network",
            "> 0",
            "test accuracy, Adam - SGD (binary)",
            adam_gain,
            direction_verdict(adam_gain, +1),
            f"lr chosen on validation: {_chosen_lrs(binary)}; {power_note(adam_mde, adam_gain.n)}",
            adam_mde,
        ),
        Claim(
            "4b",
            "SGD is at least as good as Adam for the real-valued network",
            f"> -{margin:g}",
            "test accuracy, SGD - Adam (real-valued)",
            sgd_gain,
            non_inferiority_verdict(sgd_gain, margin),
            f"non-inferiority margin {margin:g}; lr chosen on validation: {_chosen_lrs(real)}; "
            + power_note(sgd_mde, sgd_gain.n),
            sgd_mde,
        ),
    ]


def stages_claim(stages: pd.DataFrame) -> Claim:
    """Claim 5: two-stage training beats fully binary training from scratch for the same epochs."""
    gain, mde = _accuracy_gain(stages, "training", "two-stage", "one-stage")
    return Claim(
        "5",
        "two-stage training beats one-stage training",
        "> 0",
        "test accuracy, two-stage - one-stage",
        gain,
        direction_verdict(gain, +1),
        power_note(mde, gain.n),
        mde,
    )


def needed_budget_factor(median_abs_start: float, lr_budget: float) -> float:
    """How many times the run's learning-rate budget Adam would need to carry a typical weight to 1.

    Adam moves a weight by at most about lr per step, so going from |w| = ``median_abs_start`` to 1
    takes an lr budget (the sum of the learning rate over the steps) of at least 1 - median_abs_start;
    the run had ``lr_budget``. A lower bound: the factor of steps (at the same learning rate) needed.
    A run that trained at learning rate 0 throughout needs an infinite factor.
    """
    return (1 - median_abs_start) / lr_budget if lr_budget > 0 else math.inf


def relative_latent_claims(latent: pd.DataFrame) -> list[Claim]:
    """Claim 6 in a form free of the weights' scale: each layer's |w| over its own 99th percentile."""
    extreme = _difference(latent, "optimizer", "adam", "sgd", "rel_mass_near_extreme")
    zero = _difference(latent, "optimizer", "adam", "sgd", "rel_mass_near_zero")
    return [
        Claim(
            "6a",
            "Adam's latent weights pile up near their layer's extremes (+-q99) more than SGD's",
            "> 0",
            "fraction with |w|/q99 >= 0.9, Adam - SGD",
            extreme,
            direction_verdict(extreme, +1),
            "q99: each binary layer's 99th percentile of |w| at the end of stage 2",
        ),
        Claim(
            "6b",
            "Adam's latent weights pile up near 0 more than SGD's",
            "> 0",
            "fraction with |w|/q99 <= 0.1, Adam - SGD",
            zero,
            direction_verdict(zero, +1),
        ),
    ]


def absolute_latent_claim(latent: pd.DataFrame) -> Claim:
    """Claim 6 as the paper states it (peaks at -1, 0, +1), tested on the fraction within 0.1 of
    +-1; untestable at this budget when no Adam weight reached |w| = ``REACH`` and the learning-rate
    budget could not carry a typical weight to 1 (:func:`needed_budget_factor` above 1)."""
    near_one = _difference(latent, "optimizer", "adam", "sgd", "mass_near_one")
    adam = latent[latent["optimizer"] == "adam"]
    reach = float(adam["max_abs_weight"].max())
    start, budget = float(adam["median_abs_start"].median()), float(adam["lr_budget"].median())
    statement = "Adam's latent weights pile up near -1 and +1 (absolute), SGD's stay centred"
    measure = "mass within 0.1 of +-1, Adam - SGD"
    if reach >= REACH or needed_budget_factor(start, budget) <= 1:
        detail = f"largest Adam |w| {reach:.3g}; stage-2 lr budget {budget:.3g}, "
        detail += f"median |w| at its start {start:.3g}"
        return Claim("6c", statement, "> 0", measure, near_one, direction_verdict(near_one, +1), detail)
    detail = (
        f"no Adam weight reaches |w| = {REACH:g} (largest {reach:.3g}): Adam moves a weight by at most "
        f"about lr per step, so carrying |w| from its median at the start of stage 2 ({start:.3g}) to 1 "
        f"needs an lr budget (sum of the stage-2 learning rates) of at least {1 - start:.3g}; the run "
        f"had {budget:.3g}, so at least {needed_budget_factor(start, budget):.3g} times as many "
        "stage-2 steps at this learning rate"
    )
    return Claim("6c", statement, "> 0", measure, near_one, UNTESTABLE, detail)


def all_claims(
    wd: pd.DataFrame, optimizer: pd.DataFrame, stages: pd.DataFrame, latent: pd.DataFrame, margin: float
) -> list[Claim]:
    return [
        *trend_claims(wd),
        best_cell_claim(wd),
        *optimizer_claims(optimizer, margin),
        stages_claim(stages),
        *relative_latent_claims(latent),
        absolute_latent_claim(latent),
    ]


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
                "statement": c.statement,
                "expected": c.expected,
                "measure": c.measure,
                "effect": c.effect.value,
                "ci_low": c.effect.low,
                "ci_high": c.effect.high,
                "n": c.effect.n,
                "mde": c.mde,
                "shape": shape_verdict(c.fit) if c.fit else "",
                "shape_p": c.fit.p if c.fit else NAN,
                "verdict": c.verdict,
                "detail": c.detail,
            }
            for c in claims
        ]
    )
