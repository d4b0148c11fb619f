"""The reproduction report's seaborn figures, each saved as a PNG beside the report.

Every figure is drawn from the frames the report computes and saved without a timestamp, so the same
results give the same bytes; :func:`set_theme` is the style they share.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bnn.diagnostics import SMALL_GRADIENT  # noqa: E402
from study.artifacts import atomic_write  # noqa: E402
from study.reproduce.accuracy_claims import PAPER_CELL  # noqa: E402
from study.reproduce.claim import Claim  # noqa: E402
from study.reproduce.lr_bracket import LR  # noqa: E402
from study.reproduce.stats import shape_verdict  # noqa: E402
from study.reproduce.tables import label  # noqa: E402
from study.reproduce.trend_claims import WD1, WD2  # noqa: E402


def set_theme() -> None:
    """The style every figure of the report is drawn in."""
    sns.set_theme(style="whitegrid", context="notebook")


def _symlog(ax: plt.Axes, values: pd.Series) -> None:
    """Weight decay axis: logarithmic, with 0 (a real choice) shown in a linear strip at the left."""
    positive = values[values > 0]
    low = float(positive.min()) if len(positive) else 1e-6
    ax.set_xscale("symlog", linthresh=low)
    ax.set_xlim(-0.5 * low, 2 * float(values.max()))


def ff_figure(wd: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x, hue in ((axes[0], WD2, WD1), (axes[1], WD1, WD2)):
        sns.lineplot(
            data=wd,
            x=x,
            y="ff_ratio",
            hue=hue,
            marker="o",
            errorbar=("ci", 95),
            seed=0,
            palette="viridis",
            ax=ax,
        )
        _symlog(ax, wd[x])
        ax.set_yscale("log")
        ax.set(title=f"stage-2 FF ratio vs {x.split('.')[0]} weight decay", ylabel="FF ratio (log)")
    fig.tight_layout()
    return _save(fig, path)


def c2i_figure(wd: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (
        (axes[0], WD2, "c2i_ratio", "C2I vs start of stage 2"),
        (axes[1], WD1, "c2i_init", "C2I vs first init"),
    )
    for ax, x, metric, title in panels:
        hue = WD1 if x == WD2 else WD2
        sns.lineplot(
            data=wd, x=x, y=metric, hue=hue, marker="o", errorbar=("ci", 95), seed=0, palette="viridis", ax=ax
        )
        _symlog(ax, wd[x])
        ax.set(title=f"{title} vs {x.split('.')[0]} weight decay", ylabel=metric)
    fig.tight_layout()
    return _save(fig, path)


def heatmap_figure(wd: pd.DataFrame, path: Path) -> Path:
    """Mean test accuracy per cell, the paper's cell outlined."""
    grid = wd.pivot_table(index=WD1, columns=WD2, values="test_acc", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(6, 5))
    sns.heatmap(grid, annot=True, fmt=".4f", cmap="viridis", ax=ax, cbar_kws={"label": "mean test accuracy"})
    if PAPER_CELL[0] in grid.index and PAPER_CELL[1] in grid.columns:
        row, col = list(grid.index).index(PAPER_CELL[0]), list(grid.columns).index(PAPER_CELL[1])
        ax.add_patch(Rectangle((col, row), 1, 1, fill=False, edgecolor="red", linewidth=3))
    ax.set(
        title="Test accuracy (paper's cell outlined)",
        xlabel="stage-2 weight decay",
        ylabel="stage-1 weight decay",
    )
    fig.tight_layout()
    return _save(fig, path)


def residual_figure(residuals: pd.DataFrame, claims: list[Claim], path: Path) -> Path:
    """Residuals of each straight-line fit per weight-decay level: a curve in them is misfit."""
    fitted = [c for c in claims if c.fit]
    fig, axes = plt.subplots(1, len(fitted), figsize=(4 * len(fitted), 3.8), squeeze=False)
    for ax, claim in zip(axes[0], fitted, strict=True):
        data = residuals[residuals["claim"] == claim.number]
        order = sorted(data["weight decay"].unique())
        data = data.assign(level=pd.Categorical(data["weight decay"].map(label), [label(v) for v in order]))
        sns.stripplot(
            data=data, x="level", y="residual", color="grey", alpha=0.4, size=3, jitter=False, ax=ax
        )
        sns.pointplot(data=data, x="level", y="residual", errorbar=("ci", 95), seed=0, color="C3", ax=ax)
        ax.axhline(0, color="black", linewidth=1)
        ax.set(
            title=f"claim {claim.number}: {shape_verdict(claim.fit)}",
            xlabel="weight decay (the claim's stage)",
        )
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    return _save(fig, path)


def lr_sweep_figure(optimizer: pd.DataFrame, sweep: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy against learning rate per optimizer and network; the chosen lrs starred."""
    networks = sorted(optimizer["network"].unique())
    fig, axes = plt.subplots(1, len(networks), figsize=(5.5 * len(networks), 4), squeeze=False)
    for ax, network in zip(axes[0], networks, strict=True):
        data = optimizer[optimizer["network"] == network]
        sns.lineplot(
            data=data, x=LR, y="val_acc", hue="optimizer", marker="o", errorbar=("ci", 95), seed=0, ax=ax
        )
        chosen = sweep[(sweep["network"] == network) & sweep["selected"]]
        ax.scatter(chosen[LR], chosen["val_acc"], marker="*", s=250, color="red", zorder=5, label="chosen")
        ax.set_xscale("log")
        ax.legend()
        ax.set(
            title=f"{network} network: learning-rate sweep",
            xlabel="learning rate",
            ylabel="validation accuracy",
        )
    fig.tight_layout()
    return _save(fig, path)


def optimizer_curves_figure(history: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy and saturation per epoch of the chosen-lr runs."""
    panels = [m for m in ("val_acc", "saturation", "saturation_train") if m in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        sns.lineplot(
            data=history,
            x="step",
            y=metric,
            hue="optimizer",
            style="network",
            errorbar=("ci", 95),
            seed=0,
            ax=ax,
        )
        ax.set(xlabel="epoch (both stages)", title=f"{metric.replace('_', ' ')} per optimizer")
    fig.tight_layout()
    return _save(fig, path)


def dead_weights_figure(history: pd.DataFrame, path: Path) -> Path:
    """Dead weights per epoch, Adam vs SGD: blocked by the binarizer, with a tiny gradient, and how far
    the optimizer moves the latter (AdamBNN: Adam's normalised step revives them, SGD's does not)."""
    fraction = "fraction of latent weights"
    panels = (("dead_beyond_clip", "no gradient through the weight binarizer", fraction),
              ("dead_small_grad", f"mean |gradient| < {SMALL_GRADIENT} x layer median", fraction),
              ("dead_relative_update", "their mean |update| / all weights'", "update ratio"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (metric, title, ylabel) in zip(axes, panels, strict=True):
        if metric not in history:  # results stored before the measure existed
            ax.set_visible(False)
            continue
        sns.lineplot(data=history.dropna(subset=[metric]), x="step", y=metric, hue="optimizer",
                     errorbar=("ci", 95), seed=0, marker="o", ax=ax)  # fmt: skip
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    fig.tight_layout()
    return _save(fig, path)


def histogram_frame(ablation: dict, key: str) -> pd.DataFrame:
    """Bin centres and counts of every cell's ``key`` histogram, with the cell's optimizer."""
    rows = []
    for cell in ablation["cells"]:
        if key not in cell:
            continue
        edges = cell[key]["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        rows += [{"value": c, "count": n, "optimizer": cell["optimizer"]}
                 for c, n in zip(centres, cell[key]["counts"], strict=True)]  # fmt: skip
    return pd.DataFrame(rows)


def latent_histograms_figure(ablation: dict, path: Path) -> Path:
    """Latent weights at the end of stage 2, all seeds: absolute, and each layer over its own q99."""
    panels = (
        ("histogram", "latent weight w", (-1, 0, 1)),
        ("rel_histogram", "w / q99 of its layer", (-0.9, -0.1, 0.1, 0.9)),
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, (key, xlabel, marks) in zip(axes, panels, strict=True):
        data = histogram_frame(ablation, key)
        width = float(np.diff(np.unique(data["value"])).min())
        sns.histplot(data=data, x="value", weights="count", hue="optimizer", binwidth=width, element="step",
                     stat="density", common_norm=False, ax=ax)  # fmt: skip
        for mark in marks:
            ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"Binary layers' latent weights: {xlabel}", xlabel=xlabel)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        return atomic_write(
            path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
        )
    finally:
        plt.close(fig)
