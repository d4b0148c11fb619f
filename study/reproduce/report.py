"""``python -m study.reproduce report``: the reproduction report, generated from the ablation results.

Reads ``reports/ablations/{wd,optimizer,stages,latent}.json`` (written by ``python -m study.reproduce ablate``),
tests the claims (:mod:`study.reproduce.claims`), draws the seaborn figures and writes
``reports/reproduction.md`` with the figures beside it in ``reports/figures/`` and the verdicts in
``reports/verdicts.csv``; logs the report, figures and verdicts to each ablation's MLflow parent run.
The report and the verdicts carry no run ids, times or absolute paths: the same results give the
same bytes on any clone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from study.artifacts import atomic_write, write_csv  # noqa: E402
from study.config import PROJECT_ROOT, load_params  # noqa: E402
from study.reproduce.ablate import RESULTS  # noqa: E402
from study.reproduce.claims import (  # noqa: E402
    LR,
    PAPER_CELL,
    REACH,
    TARGET_EFFECT,
    WD1,
    WD2,
    Claim,
    all_claims,
    lr_sweep,
    select_lr,
    verdict_counts,
    verdict_table,
)
from study.reproduce.stats import Estimate, binomial_se, mean_ci, shape_verdict  # noqa: E402
from study.tracking import RUN_KEY_TAG, Tracker  # noqa: E402

REPORT = PROJECT_ROOT / "reports" / "reproduction.md"
REPORTED = ("wd", "optimizer", "stages", "latent")  # the ablations the report reads
METRICS = ["test_acc", "ff_ratio", "c2i_ratio", "c2i_init", "saturation", "saturation_train"]
LATENT_METRICS = [
    "rel_mass_near_extreme",
    "rel_mass_near_zero",
    "bimodality",
    "mass_near_one",
    "mass_near_zero",
    "max_abs_weight",
    "median_abs_start",
    "lr_budget",
]
DEAD_METRICS = ["beyond_clip", "dead_zero_grad"]
VERDICT_CODES = {"supported": 1, "inconclusive": 0, "contradicted": -1}  # MLflow metrics; all are tags


def load_ablation(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m study.reproduce ablate {name}` (or `dvc repro`) first"
        )
    return json.loads(path.read_text())


def cell_frame(ablation: dict) -> pd.DataFrame:
    """One row per cell and seed, without the per-epoch history and histograms; failed cells are dropped."""
    rows = [{k: v for k, v in cell.items() if not isinstance(v, list | dict)} for cell in ablation["cells"]]
    frame = pd.DataFrame(rows)
    return frame[frame["failure"].isna()] if "failure" in frame else frame


def history_frame(ablation: dict, labels: list[str]) -> pd.DataFrame:
    """The per-epoch records of every cell, each with the cell's ``labels`` it has."""
    return pd.DataFrame(
        [
            {**{k: cell[k] for k in labels if k in cell}, **epoch}
            for cell in ablation["cells"]
            for epoch in cell.get("history", [])
        ]
    )


def with_lr(frame: pd.DataFrame, optimizers: dict) -> pd.DataFrame:
    """The optimizer ablation's rows with their learning rate: results from before the lr sweep
    have no ``lr`` column and get each optimizer's single lr from the ablation's settings."""
    if LR in frame:
        return frame
    return frame.assign(**{LR: frame["optimizer"].map(lambda name: optimizers[name].get("lr", np.nan))})


# --- tables ---------------------------------------------------------------------------------------


def _fmt(value: float, ci: tuple[float, float] | None = None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}g}"
    if ci is not None and not any(np.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"
    return text


def _estimate(estimate: Estimate) -> str:
    return _fmt(estimate.value, (estimate.low, estimate.high))


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary_markdown(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> str:
    """Mean and 95 % CI over seeds of each metric the frame has, one row per cell."""
    metrics = [m for m in metrics if m in frame]
    rows = [
        [*map(_label, keys), str(len(group)), *(_estimate(mean_ci(group[m].dropna())) for m in metrics)]
        for keys, group in frame.groupby(by, sort=True, dropna=False)
    ]
    return markdown([*by, "seeds", *metrics], rows)


def verdict_markdown(claims: list[Claim]) -> str:
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
    return markdown(
        ["claim", "statement", "expected", "measured", "95 % CI", "n", "mde", "shape", "verdict"], rows
    )


def counts_text(claims: list[Claim]) -> str:
    counts = ", ".join(f"{n} {verdict}" for verdict, n in verdict_counts(claims).items())
    return f"{len(claims)} claims: {counts}."


def power_markdown(claims: list[Claim]) -> str:
    rows = [
        [c.number, str(c.effect.n), _fmt(c.mde, digits=3), "yes" if c.mde <= TARGET_EFFECT else "no"]
        for c in claims
        if not np.isnan(c.mde)
    ]
    return markdown(["claim", "seeds", "minimum detectable effect", f"{TARGET_EFFECT:g} detectable"], rows)


def accuracy_floor_text(ablation: dict, frame: pd.DataFrame) -> str:
    """The binomial standard error of one test accuracy, from the test-set size the ablation records."""
    size = ablation.get("test_size")
    if size is None:
        return "The ablation results do not record the test-set size, so the test-set floor is not given."
    accuracy = float(frame["test_acc"].mean())
    se = binomial_se(accuracy, size)
    return (
        f"Test-set floor: {size} test samples; one accuracy near {accuracy:.3f} has a binomial standard "
        f"error of {se:.4f} ({100 * se:.2f} pp), and accuracies move in steps of {1 / size:.2g}. "
        "Paired differences on the same test samples vary less than two independent accuracies would."
    )


def fits_markdown(claims: list[Claim]) -> str:
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
    return markdown(header, rows)


def residual_frame(claims: list[Claim]) -> pd.DataFrame:
    """One row per observation of every fitted claim: its weight decay and its residual."""
    return pd.concat(
        [
            pd.DataFrame({"claim": c.number, "weight decay": c.fit.x, "residual": c.fit.residuals})
            for c in claims
            if c.fit
        ],
        ignore_index=True,
    )


def residual_markdown(residuals: pd.DataFrame) -> str:
    rows = [
        [claim, f"{decay:g}", str(len(group)), _estimate(mean_ci(group["residual"]))]
        for (claim, decay), group in residuals.groupby(["claim", "weight decay"], sort=True)
    ]
    return markdown(["claim", "weight decay", "seeds", "mean residual [95 % CI]"], rows)


def lr_sweep_markdown(sweep: pd.DataFrame) -> str:
    rows = [
        [row.network, row.optimizer, _label(row.lr), str(row.seeds), _fmt(row.val_acc), _fmt(row.test_acc),
         "**chosen**" if row.selected else ""]
        for row in sweep.itertuples()
    ]  # fmt: skip
    return markdown(["network", "optimizer", "lr", "seeds", "mean val_acc", "mean test_acc", "chosen"], rows)


# --- figures --------------------------------------------------------------------------------------


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
        data = data.assign(level=pd.Categorical(data["weight decay"].map(_label), [_label(v) for v in order]))
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
    """Fraction of latent weights beyond the clip and with zero gradient, per epoch, Adam vs SGD."""
    panels = (("dead_beyond_clip", "|w| > 1 (no gradient through the clip)"),
              ("dead_zero_grad", "zero gradient at every step of the epoch"))  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        sns.lineplot(data=history.dropna(subset=[metric]), x="step", y=metric, hue="optimizer",
                     errorbar=("ci", 95), seed=0, marker="o", ax=ax)  # fmt: skip
        ax.set(title=title, xlabel="epoch", ylabel="fraction of latent weights")
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


# --- the report -----------------------------------------------------------------------------------


def write_report(folder: Path, report: Path, margin: float) -> tuple[Path, list[Path], list[Claim]]:
    ablations = {name: load_ablation(folder, name) for name in REPORTED}
    frames = {name: cell_frame(ablation) for name, ablation in ablations.items()}
    settings = ablations["optimizer"].get("optimizers", {})
    frames["optimizer"] = with_lr(frames["optimizer"], settings)
    claims = all_claims(frames["wd"], frames["optimizer"], frames["stages"], frames["latent"], margin)
    sweep = lr_sweep(frames["optimizer"])
    chosen = select_lr(frames["optimizer"])
    curves = with_lr(history_frame(ablations["optimizer"], ["optimizer", "network", LR, "seed"]), settings)
    curves = curves.merge(
        chosen[["optimizer", "network", LR]].drop_duplicates(), on=["optimizer", "network", LR]
    )
    residuals = residual_frame(claims)
    figures_dir = report.parent / "figures"
    sns.set_theme(style="whitegrid", context="notebook")
    figures = {
        "ff": ff_figure(frames["wd"], figures_dir / "ff_vs_weight_decay.png"),
        "c2i": c2i_figure(frames["wd"], figures_dir / "c2i_vs_weight_decay.png"),
        "heatmap": heatmap_figure(frames["wd"], figures_dir / "accuracy_heatmap.png"),
        "residuals": residual_figure(residuals, claims, figures_dir / "shape_residuals.png"),
        "lr": lr_sweep_figure(frames["optimizer"], sweep, figures_dir / "lr_sweep.png"),
        "curves": optimizer_curves_figure(curves, figures_dir / "optimizer_curves.png"),
        "dead": dead_weights_figure(
            history_frame(ablations["latent"], ["optimizer", "seed"]), figures_dir / "dead_weights.png"
        ),
        "hist": latent_histograms_figure(ablations["latent"], figures_dir / "latent_weights_adam_sgd.png"),
    }
    write_csv(report.parent / "verdicts.csv", verdict_table(claims))
    first, latent = ablations["wd"], ablations["latent"]
    failures = sum(len(a["cells"]) - len(frames[n]) for n, a in ablations.items())

    def figure(key: str, caption: str) -> str:
        return f"![{caption}]({figures[key].relative_to(report.parent).as_posix()})\n\n*{caption}*"

    text = f"""# Reproduction of AdamBNN's claims

*Generated by `python -m study.reproduce report` from the ablation results; every number and verdict below is
computed from the runs, none is written by hand.*

## Set-up

- **Data**: `{first["data"]}`, split by seed into train / validation / test; every cell's network
  is evaluated once on the test split (accuracies below are test accuracies).
- **Model**: `{first["model"]}` (binary weights and activations; real stem and classifier).
- **Training**: {first["epochs"]} epochs per stage (two-stage cells: stage 1 binary activations
  with real weights, then stage 2 fully binary from stage 1's weights); one-stage and real-valued
  cells train {2 * first["epochs"]} epochs. Adam with linear decay unless stated.
- **Seeds** per cell: {_seeds_text(ablations)}{" (quick run)" if first["quick"] else ""};
  {sum(len(f) for f in frames.values())} runs in all, {failures} failed (NaN or infinite loss).
- **Optimizers** (claim 4): {_optimizer_text(ablations["optimizer"])}. Each optimizer and network
  trains at every learning rate of its list over all seeds; the learning rate with the highest mean
  *validation* accuracy over seeds is chosen per (optimizer, network) (among the learning rates
  that trained on every seed; ties go to the smaller one), and the chosen runs' *test* accuracies
  are compared paired by seed. Chosen: {_chosen_text(sweep)}.
- **Latent weights** (claim 6, dead weights): {_optimizer_text(latent)}; {len(latent["seeds"])}
  seeds; stage 2 only, from the same stage 1 for both optimizers, with a budget of its own:
  {_stage_budget_text(latent["budget"])}. Learning-rate budget of stage 2 (the learning rate summed
  over its steps, the farthest Adam can move a weight): {_lr_budget_text(frames["latent"])}.
- **Statistics**: 95 % confidence intervals: Student t over seeds for means and paired differences
  (paired by seed), Fisher z (Bonett-Wright) for Spearman's rho; claim 3 compares the paper's cell
  with every other cell by paired t-tests with Holm's correction. A claim is *supported* when the
  interval lies on the expected side of zero, *contradicted* when it lies on the other side,
  *inconclusive* otherwise, and *untestable at this budget* when the runs cannot reach the state the
  claim is about (the reason and the budget it would need are given). Accuracy claims carry their
  minimum detectable effect (mde); weight-decay trends carry a fitted straight line and its
  lack-of-fit test (shape).

## Verdicts

{counts_text(claims)}

{verdict_markdown(claims)}

Details:

{chr(10).join(f"- **{c.number}**: {c.detail}" for c in claims if c.detail)}

## Power

The minimum detectable effect (mde) of each accuracy claim: the smallest true mean difference a
two-sided paired t-test at alpha 0.05 detects with power 0.8 at these seeds, from the standard
deviation of the paired differences (exact noncentral t; about (t(0.975, n-1) + t(0.8, n-1)) x
sd / sqrt(n)). Claim 3's is against its strongest rival.

{power_markdown(claims)}

{accuracy_floor_text(first, frames["wd"])}

## Weight decay: stage 1 x stage 2

{summary_markdown(frames["wd"], [WD1, WD2], METRICS)}

{figure("heatmap", "Mean test accuracy per cell; the paper's cell (5e-6, 0) is outlined.")}

{figure("ff", "Stage-2 FF ratio (log scale) against weight decay; bands are 95 % CIs over seeds.")}

{figure("c2i", "C2I ratio against weight decay: against the start of stage 2, and against the first init.")}

### Shapes: fitted straight lines and their residuals

The paper's shapes as models: log FF and C2I, averaged over the other stage's weight decay, are
each fitted by least squares as a straight line in one stage's weight decay with an intercept per
seed (the seed is the replicate: cells of one seed share their stage-1 run). The lack-of-fit
F-test compares that line with a free mean per weight-decay level (any shape), against the pure
error of the seeds at each level: p >= 0.05 is "shape consistent", p < 0.05 "shape rejected".

{fits_markdown(claims)}

Mean residual of the straight line at each weight-decay level (over seeds):

{residual_markdown(residuals)}

{figure("residuals", "Residuals of the straight lines per weight decay (grey: seeds; red: mean, 95 % CI).")}

## Optimizer: Adam vs SGD, binary and real-valued

Learning-rate sweep (means over seeds); the chosen learning rates are marked:

{lr_sweep_markdown(sweep)}

{figure("lr", "Validation accuracy against learning rate (95 % CIs); stars: the chosen lrs.")}

At the chosen learning rates:

{summary_markdown(chosen, ["network", "optimizer", LR], METRICS)}

{figure("curves", "Validation accuracy and saturation per epoch (both stages), at the chosen lrs.")}

## Latent weights: Adam vs SGD (claim 6) and dead weights

{summary_markdown(frames["latent"], ["optimizer"], ["test_acc", *LATENT_METRICS])}

Dead weights (ReCU): the fraction of latent weights beyond the clip (|w| > 1, no gradient through
the clip) and the fraction whose loss gradient was zero at every step of the last epoch:

{summary_markdown(frames["latent"], ["optimizer"], DEAD_METRICS)}

{figure("dead", "Dead-weight fractions per epoch, Adam vs SGD (95 % CIs over seeds).")}

{figure("hist", "Latent weights at the end of stage 2 (all seeds): absolute, and over each layer's q99.")}

## Two-stage vs one-stage

{summary_markdown(frames["stages"], ["training"], METRICS)}

## Choices the paper leaves open

- FF ratio: fraction of binary weights whose sign changes per optimizer step, averaged over
  stage 2's steps. C2I: fraction of signs equal to a reference (start of stage 2, or first init).
- sign(0) = +1; weight decay on conv and linear kernels except the classifier (coupled L2 for Adam
  and SGD); symmetric Kaiming init.
- Saturation (fraction of pre-sign activations outside [-1, 1]): `saturation` is measured in eval
  mode (BatchNorm running statistics) on a held-out split: the validation pass in the per-epoch
  curves, the final test evaluation in the tables; `saturation_train` on sampled training batches
  in train mode (BatchNorm batch statistics).
- One-stage training uses stage 2's settings (fully binary, stage-2 weight decay) for the total epochs.
- Learning rates (claim 4): chosen per optimizer and network on the validation split, highest mean
  validation accuracy over seeds; the test split is used only to compare the chosen runs.
- "At least as good" (claim 4b) is non-inferiority with margin {margin:g} in accuracy.
- Power: a {TARGET_EFFECT:g} (0.5 pp) accuracy difference counts as detectable when the claim's mde
  is at most {TARGET_EFFECT:g}.
- Shapes (claims 1-2): "exponential" is log FF linear in weight decay, "linear" is C2I linear in
  weight decay (not in log weight decay), each tested by a pure-error lack-of-fit F-test.
- Claim 6 in a scale-free form: each binary layer's latent weights over its own 99th percentile of
  |w| (q99) at the end of stage 2; "near the extremes" is |w|/q99 >= 0.9 (6a), "near 0" is
  |w|/q99 <= 0.1 (6b). The paper's absolute form (6c: within 0.1 of +-1) is untestable at this
  budget when no Adam weight reaches |w| = {REACH:g} and the stage-2 learning-rate budget is below
  the 1 - median |w| (at the start of stage 2) that Adam, moving a weight by at most about lr per
  step, needs to carry a typical weight to 1.
"""
    atomic_write(report, lambda tmp: tmp.write_text(text))
    return report, list(figures.values()), claims


def _seeds_text(ablations: dict[str, dict]) -> str:
    """``wd 15, optimizer 16, ...``: each ablation's seed count (they may differ: seeds_by_ablation)."""
    return ", ".join(f"{name} {len(ablation['seeds'])}" for name, ablation in ablations.items())


def _optimizer_text(ablation: dict) -> str:
    return "; ".join(f"{name}: {settings}" for name, settings in ablation.get("optimizers", {}).items())


def _chosen_text(sweep: pd.DataFrame) -> str:
    chosen = sweep[sweep["selected"]]
    return "; ".join(f"{row.optimizer} ({row.network}) lr {row.lr:g}" for row in chosen.itertuples())


def _stage_budget_text(budget: dict) -> str:
    return "; ".join(
        f"stage {stage}: {budget[f'stage{stage}_epochs']} epochs, batch {budget[f'stage{stage}_batch_size']}"
        for stage in (1, 2)
    )


def _lr_budget_text(latent: pd.DataFrame) -> str:
    return "; ".join(
        f"{name} {_fmt(group['lr_budget'].median())}" for name, group in latent.groupby("optimizer")
    )


def log_to_mlflow(folder: Path, report: Path, figures: list[Path], claims: list[Claim]) -> None:
    """Report, figures and verdicts go to every ablation's parent run (found by the run key its
    results record): each verdict as a tag, and as a metric where it has a code (untestable has none)."""
    params = load_params()
    tracker = Tracker.for_ablations(params)
    for name in REPORTED:
        key = load_ablation(folder, name).get("mlflow_run_key")
        parent = tracker.latest_run(RUN_KEY_TAG, key) if key else None
        if not parent:
            continue
        logger = tracker.run_logger(parent)
        logger.log_artifacts([report, report.parent / "verdicts.csv", *figures], "report")
        logger.set_tags({f"claim_{c.number}": c.verdict for c in claims})
        logger.log_metrics(
            {f"claim_{c.number}": VERDICT_CODES[c.verdict] for c in claims if c.verdict in VERDICT_CODES}
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.reproduce report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="ablation results (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=REPORT, help="the report file (default %(default)s)")
    args = parser.parse_args(argv)
    margin = load_params().ablation.margin
    report, figures, claims = write_report(args.results, args.out, margin)
    log_to_mlflow(args.results, report, figures, claims)
    print(
        verdict_table(claims)[["claim", "effect", "ci_low", "ci_high", "n", "mde", "verdict"]].to_string(
            index=False
        )
    )
    print(f"report: {report}")

