"""Learning-rate sweeps that bracket each optimizer's optimum on the validation split.

Comparing two optimizers is fair only at each one's best learning rate; a best learning rate at the
edge of its sweep may not be the best at all. So the optimizer ablation extends each (network,
optimizer)'s sweep until its optimum is bracketed on both sides:

- an lr is *eligible* when it trained on every seed (no seed missing, no NaN loss), and
  *diverged* when most of its seeds (more than half) failed;
- the chosen lr is the eligible one with the highest mean validation accuracy over seeds (ties go
  to the smaller lr); the test split plays no part;
- walking outward from it on each side, past lrs where some (not most) seeds failed, the side is
  ``bracketed`` at the first eligible lr (lower validation accuracy by construction), or ends at a
  ``stability limit`` at the first diverged lr; with neither, it is open and the sweep gets one
  more lr beyond its outermost, one step of the configured list's geometric ratio further, up to
  ``ablation.lr_extensions`` extra lrs on that side (then ``not bracketed``).

>>> sweep = pd.DataFrame({"network": "binary", "optimizer": "adam", "lr": [1e-3, 4e-3],
...                       "val_acc": [0.95, 0.96], "seeds": 3, "failed": 0, "eligible": True})
>>> side_status(sweep, 4e-3, "upper", extensions=0, limit=4)
'open'
>>> next_lr(sweep, "upper", ratio=4.0)
0.016
"""

from __future__ import annotations

import math
from typing import Literal

import pandas as pd

Side = Literal["lower", "upper"]
SIDES: tuple[Side, ...] = ("lower", "upper")
KEYS = ["network", "optimizer"]
LR = "lr"


def lr_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (network, optimizer, lr): seeds, failed seeds, mean validation and test accuracy over the
    seeds that trained, ``eligible`` and ``selected`` (the chosen lr of its (network, optimizer))."""
    failed = runs["failure"].notna() if "failure" in runs else pd.Series(False, index=runs.index)
    sweep = (
        runs.assign(failed=failed)
        .groupby([*KEYS, LR], dropna=False)
        .agg(
            val_acc=("val_acc", "mean"),
            test_acc=("test_acc", "mean"),
            seeds=("seed", "nunique"),
            failed=("failed", "sum"),
        )
        .reset_index()
    )
    complete = sweep["seeds"] == sweep.groupby(KEYS)["seeds"].transform("max")
    sweep = sweep.assign(eligible=complete & (sweep["failed"] == 0))
    best = sweep[sweep["eligible"]].sort_values(LR).groupby(KEYS)["val_acc"].idxmax()
    return sweep.assign(selected=sweep.index.isin(best))


def _outward(group: pd.DataFrame, lr: float, side: Side) -> pd.DataFrame:
    """The lrs of one (network, optimizer) beyond ``lr`` on ``side``, nearest first."""
    if side == "upper":
        return group[group[LR] > lr].sort_values(LR)
    return group[group[LR] < lr].sort_values(LR, ascending=False)


def side_status(group: pd.DataFrame, chosen: float, side: Side, extensions: int, limit: int) -> str:
    """``bracketed``, ``stability limit``, ``open`` (extend it) or ``not bracketed`` (open, but
    ``extensions`` lrs were already added on that side, the ``limit``)."""
    for row in _outward(group, chosen, side).itertuples():
        if row.eligible:
            return "bracketed"
        if 2 * row.failed > row.seeds:
            return "stability limit"
    return "open" if extensions < limit else "not bracketed"


def next_lr(group: pd.DataFrame, side: Side, ratio: float) -> float:
    """One geometric step beyond the outermost lr on ``side``, to 3 significant digits (unrounded when
    rounding would not get beyond it)."""
    outermost = group[LR].max() if side == "upper" else group[LR].min()
    edge = outermost * ratio if side == "upper" else outermost / ratio
    rounded = float(f"{edge:.3g}")
    return rounded if (rounded > outermost if side == "upper" else rounded < outermost) else edge


def ratio(configured: list[float]) -> float:
    """The geometric step of a configured lr list (2 for a single lr)."""
    lrs = sorted(configured)
    return (lrs[-1] / lrs[0]) ** (1 / (len(lrs) - 1)) if len(lrs) > 1 and lrs[0] > 0 else 2.0


def extensions_done(group: pd.DataFrame, configured: list[float], side: Side) -> int:
    """How many lrs of the sweep lie beyond the configured list on ``side``."""
    lrs = group[LR]
    return int((lrs > max(configured)).sum() if side == "upper" else (lrs < min(configured)).sum())


def bracket_status(sweep: pd.DataFrame, configured: dict[str, list[float]], limit: int) -> pd.DataFrame:
    """Per (network, optimizer): the chosen lr and each side's status (:func:`side_status`), given
    each optimizer's configured lr list and the most lrs to add per side."""
    rows = []
    for (network, optimizer), group in sweep.groupby(KEYS, sort=True):
        chosen = group.loc[group["selected"], LR]
        row = {
            "network": network,
            "optimizer": optimizer,
            LR: float(chosen.iloc[0]) if len(chosen) else math.nan,
        }
        for side in SIDES:
            done = extensions_done(group, configured[optimizer], side)
            row[side] = side_status(group, row[LR], side, done, limit) if len(chosen) else "no lr trained"
        rows.append(row)
    return pd.DataFrame(rows)


def extensions(
    sweep: pd.DataFrame, configured: dict[str, list[float]], limit: int
) -> list[tuple[str, str, float]]:
    """The (network, optimizer, lr) to train next: one more lr on every open side."""
    status = bracket_status(sweep, configured, limit)
    todo = []
    for row in status.itertuples():
        group = sweep[(sweep["network"] == row.network) & (sweep["optimizer"] == row.optimizer)]
        for side in SIDES:
            if getattr(row, side) == "open":
                todo.append(
                    (row.network, row.optimizer, next_lr(group, side, ratio(configured[row.optimizer])))
                )
    return todo
