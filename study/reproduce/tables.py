"""The reproduction report's tables, and the short lists and numbers its sentences quote.

A table is a pandas frame of strings, its columns the header: every cell is formatted here, so the
Markdown renderer (:func:`study.render.table` without number parsing) prints it as it is. The
sentences around them live in the report's template (``templates/reproduction.md.j2``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.reproduce.claims import TARGET_EFFECT, Claim, verdict_counts
from study.reproduce.stats import Estimate, binomial_se, mean_ci, shape_verdict

# --- cells ----------------------------------------------------------------------------------------


def _fmt(value: float, ci: tuple[float, float] | None = None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}g}"
    if ci is not None and not any(np.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"
    return text


def _estimate(estimate: Estimate) -> str:
    return _fmt(estimate.value, (estimate.low, estimate.high))


def label(value) -> str:
    """A cell's key as text: ``5e-06`` for a float, the value itself otherwise."""
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- tables ---------------------------------------------------------------------------------------


def summary_table(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and 95 % CI over seeds of each metric the frame has, one row per cell."""
    metrics = [m for m in metrics if m in frame]
    rows = [
        [*map(label, keys), str(len(group)), *(_estimate(mean_ci(group[m].dropna())) for m in metrics)]
        for keys, group in frame.groupby(by, sort=True, dropna=False)
    ]
    return pd.DataFrame(rows, columns=[*by, "seeds", *metrics])


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """Every claim with its measured effect, interval, power, shape test and verdict."""
    rows = [
        [
            c.number,
            c.statement,
            f"{c.measure}: {c.expected}",
            _fmt(c.effect.value),
            f"[{_fmt(c.effect.low)}, {_fmt(c.effect.high)}]",
            str(c.effect.n),
            _fmt(c.mde, digits=2),
            f"{shape_verdict(c.fit)} (p = {c.fit.p:.3g})" if c.fit else "",
            f"**{c.verdict}**",
        ]
        for c in claims
    ]
    header = ["claim", "statement", "expected", "measured", "95 % CI", "n", "mde", "shape", "verdict"]
    return pd.DataFrame(rows, columns=header)


def power_table(claims: list[Claim]) -> pd.DataFrame:
    """The minimum detectable effect of each claim that has one, and whether it reaches the target."""
    rows = [
        [c.number, str(c.effect.n), _fmt(c.mde, digits=3), "yes" if c.mde <= TARGET_EFFECT else "no"]
        for c in claims
        if not np.isnan(c.mde)
    ]
    header = ["claim", "seeds", "minimum detectable effect", f"{TARGET_EFFECT:g} detectable"]
    return pd.DataFrame(rows, columns=header)


def fits_table(claims: list[Claim]) -> pd.DataFrame:
    """The straight-line fit and lack-of-fit test of each weight-decay trend."""
    rows = [
        [
            c.number,
            c.statement,
            _fmt(c.fit.r2, digits=3),
            _fmt(c.fit.residual_sd, digits=3),
            f"F({c.fit.dof[0]}, {c.fit.dof[1]}) = {_fmt(c.fit.f, digits=3)}",
            _fmt(c.fit.p, digits=3),
            shape_verdict(c.fit),
        ]
        for c in claims
        if c.fit
    ]
    header = ["claim", "trend", "R^2 within seeds", "residual SD", "lack of fit", "p", "shape"]
    return pd.DataFrame(rows, columns=header)


def residual_table(residuals: pd.DataFrame) -> pd.DataFrame:
    """Mean residual over seeds of each fitted claim at each weight-decay level."""
    rows = [
        [claim, f"{decay:g}", str(len(group)), _estimate(mean_ci(group["residual"]))]
        for (claim, decay), group in residuals.groupby(["claim", "weight decay"], sort=True)
    ]
    return pd.DataFrame(rows, columns=["claim", "weight decay", "seeds", "mean residual [95 % CI]"])


def lr_sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Mean validation and test accuracy of each learning rate tried, the chosen ones marked."""
    rows = [
        [row.network, row.optimizer, label(row.lr), str(row.seeds), _fmt(row.val_acc), _fmt(row.test_acc),
         "**chosen**" if row.selected else ""]
        for row in sweep.itertuples()
    ]  # fmt: skip
    header = ["network", "optimizer", "lr", "seeds", "mean val_acc", "mean test_acc", "chosen"]
    return pd.DataFrame(rows, columns=header)


# --- what the sentences quote ---------------------------------------------------------------------


def counts_text(claims: list[Claim]) -> str:
    """``9 supported, 0 contradicted, ...``: how many claims got each verdict."""
    return ", ".join(f"{n} {verdict}" for verdict, n in verdict_counts(claims).items())


def accuracy_floor(ablation: dict, frame: pd.DataFrame) -> dict[str, str] | None:
    """The binomial standard error of one test accuracy, from the test-set size the ablation records
    (None when it does not record it)."""
    size = ablation.get("test_size")
    if size is None:
        return None
    accuracy = float(frame["test_acc"].mean())
    se = binomial_se(accuracy, size)
    return {
        "size": str(size),
        "accuracy": f"{accuracy:.3f}",
        "se": f"{se:.4f}",
        "se_pp": f"{100 * se:.2f}",
        "step": f"{1 / size:.2g}",
    }


def seeds_text(ablations: dict[str, dict]) -> str:
    """``wd 15, optimizer 16, ...``: each ablation's seed count (they may differ: seeds_by_ablation)."""
    return ", ".join(f"{name} {len(ablation['seeds'])}" for name, ablation in ablations.items())


def optimizer_text(ablation: dict) -> str:
    """Each optimizer of the ablation with its settings."""
    return "; ".join(f"{name}: {settings}" for name, settings in ablation.get("optimizers", {}).items())


def chosen_text(sweep: pd.DataFrame) -> str:
    """The learning rate chosen per optimizer and network."""
    chosen = sweep[sweep["selected"]]
    return "; ".join(f"{row.optimizer} ({row.network}) lr {row.lr:g}" for row in chosen.itertuples())


def stage_budget_text(budget: dict) -> str:
    """Each stage's epochs and batch size."""
    return "; ".join(
        f"stage {stage}: {budget[f'stage{stage}_epochs']} epochs, batch {budget[f'stage{stage}_batch_size']}"
        for stage in (1, 2)
    )


def lr_budget_text(latent: pd.DataFrame) -> str:
    """The median stage-2 learning-rate budget per optimizer."""
    return "; ".join(
        f"{name} {_fmt(group['lr_budget'].median())}" for name, group in latent.groupby("optimizer")
    )
