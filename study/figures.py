"""seaborn figures of a two-stage run: per-epoch curves across both stages, latent-weight histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from study.artifacts import atomic_write  # noqa: E402

# The panels of dvc.yaml's interactive plots, as a static image that needs no network to view.
CURVE_PANELS = {
    "accuracy": ["train_acc", "val_acc"],
    "cross-entropy loss": ["train_loss", "val_loss"],
    "FF ratio (signs flipped per step, epoch mean)": ["ff_ratio"],
    "C2I ratio (signs equal to the start)": ["c2i_stage", "c2i_init"],
    "saturation (sign inputs outside [-1, 1])": ["saturation", "saturation_train"],
    "dead weights (fractions; relative update)": [
        "dead_beyond_clip",
        "dead_small_grad",
        "dead_relative_update",
    ],
}


def training_curves(histories: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """One panel per quantity, epochs numbered across stages, a vertical line at each stage start."""
    frames, offset, starts = [], 0, []
    for stage, history in histories.items():
        frame = history.assign(stage=stage, epoch=history["epoch"] + offset)
        starts.append(offset + 0.5)
        offset += len(history)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(3, 2, figsize=(11, 10), sharex=True)
    for ax, (title, columns) in zip(axes.flat, CURVE_PANELS.items(), strict=True):
        present = [c for c in columns if c in data]
        if not present:  # no binary weights in this run: nothing to plot
            ax.set_visible(False)
            continue
        long = data.melt(id_vars=["epoch", "stage"], value_vars=present, var_name="metric")
        sns.lineplot(  # one value per point: no interval, which seaborn would bootstrap unseeded
            data=long, x="epoch", y="value", hue="metric", style="stage", marker="o", errorbar=None, ax=ax
        )
        for start in starts[1:]:
            ax.axvline(start, color="grey", linestyle="--", linewidth=1)
        ax.set(title=title, ylabel=title.split(" (")[0])
    fig.tight_layout()
    return _save(fig, path)


def latent_histograms(histograms: dict[str, dict], path: str | Path) -> Path:
    """Latent-weight distributions at the end of each stage (three peaks at -1, 0, +1 under Adam)."""
    rows = []
    for label, hist in histograms.items():
        edges = hist["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        rows += [
            {"weight": c, "count": n, "run": label} for c, n in zip(centres, hist["counts"], strict=True)
        ]
    data = pd.DataFrame(rows)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = edges[1] - edges[0]
    sns.histplot(
        data=data,
        x="weight",
        weights="count",
        hue="run",
        binwidth=width,
        element="step",
        stat="density",
        common_norm=False,
        ax=ax,
    )
    ax.set_xlabel("latent weight")
    ax.set_title("Latent weights of the binary layers")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Without matplotlib's version in the file's metadata: the bytes change only when the pixels do."""
    try:
        return atomic_write(
            path,
            lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix[1:], metadata={"Software": None}),
        )
    finally:
        plt.close(fig)
