"""The search summary's seaborn figures: trial history, hyperparameters, FF/C2I, the Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from study.artifacts import atomic_write  # noqa: E402


def history_figure(frame: pd.DataFrame, path: Path) -> Path:
    done = frame[frame["state"] == "COMPLETE"].sort_values("number")
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.scatterplot(data=done, x="number", y="val_acc", ax=ax, label="trial")
    ax.plot(
        done["number"], done["val_acc"].cummax(), color="black", drawstyle="steps-post", label="best so far"
    )
    ax.set(xlabel="trial", ylabel="stage-2 validation accuracy", title="Optimization history")
    ax.legend()
    return _save(fig, path)


def hyperparameter_figure(frame: pd.DataFrame, path: Path) -> Path:
    """Accuracy against each stage's weight decay and learning rate, coloured by optimizer."""
    done = frame[frame["state"] == "COMPLETE"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey=True)
    for row, stage in enumerate(("stage1", "stage2")):
        for col, key in enumerate(("weight_decay", "lr")):
            ax = axes[row, col]
            sns.scatterplot(data=done, x=f"{stage}.{key}", y="val_acc", hue=f"{stage}.optimizer", ax=ax)
            _log_axis(ax, done[f"{stage}.{key}"])
            ax.set(title=f"{stage} {key.replace('_', ' ')}", ylabel="stage-2 val accuracy")
    fig.tight_layout()
    return _save(fig, path)


def ff_c2i_figure(frame: pd.DataFrame, path: Path) -> Path:
    """Stage-2 FF ratio and C2I ratios against each stage's weight decay."""
    done = frame[frame["state"] == "COMPLETE"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for col, stage in enumerate(("stage1", "stage2")):
        x = f"{stage}.weight_decay"
        sns.scatterplot(data=done, x=x, y="ff_ratio", ax=axes[0, col])
        c2i = done.melt(
            id_vars=[x], value_vars=["c2i_ratio", "c2i_init"], var_name="reference", value_name="C2I"
        )
        sns.scatterplot(data=c2i, x=x, y="C2I", hue="reference", ax=axes[1, col])
        for ax in axes[:, col]:
            _log_axis(ax, done[x])
        axes[0, col].set(title=f"stage-2 FF ratio vs {stage} weight decay")
        axes[1, col].set(title=f"C2I vs {stage} weight decay")
    fig.tight_layout()
    return _save(fig, path)


def pareto_figure(frame: pd.DataFrame, front: pd.DataFrame, path: Path) -> Path:
    done = frame[frame["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(7, 5))
    sns.scatterplot(data=done, x="ff_ratio", y="val_acc", color="0.6", label="trial", ax=ax)
    ax.plot(
        front["ff_ratio"], front["val_acc"], "o-", color="C3", drawstyle="steps-post", label="Pareto front"
    )
    ax.set(xlabel="stage-2 FF ratio (lower: more stable signs)", ylabel="stage-2 validation accuracy",
           title="Accuracy against sign stability")  # fmt: skip
    ax.legend()
    return _save(fig, path)


def _log_axis(ax: plt.Axes, values: pd.Series) -> None:
    """Log scale; symmetric-log when 0 is among the values (weight decay 0 is a real choice)."""
    positive = values[values > 0]
    if positive.empty:
        return
    low, high = float(positive.min()), float(positive.max())
    if (values == 0).any():
        ax.set_xscale("symlog", linthresh=low)
        ax.set_xlim(-0.5 * low, 2 * high)
    else:
        ax.set_xscale("log")
        ax.set_xlim(low / 2, 2 * high)


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
