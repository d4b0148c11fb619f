"""``python -m study.report``: the reproduction report, generated from the ablation results.

Reads ``reports/ablations/{wd,optimizer,stages}.json`` (written by ``python -m study.ablate``),
tests the six claims (:mod:`study.claims`), draws the seaborn figures and writes
``reports/reproduction.md`` with the figures beside it in ``reports/figures/``; logs the report,
figures and verdicts to each ablation's MLflow parent run.
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

from study.ablate import ABLATIONS, RESULTS  # noqa: E402
from study.artifacts import atomic_write, write_csv  # noqa: E402
from study.claims import PAPER_CELL, WD1, WD2, Claim, all_claims, verdict_table  # noqa: E402
from study.cli import run_main  # noqa: E402
from study.config import PROJECT_ROOT, load_params  # noqa: E402
from study.stats import mean_ci  # noqa: E402
from study.tracking import Tracker  # noqa: E402

REPORT = PROJECT_ROOT / "reports" / "reproduction.md"
METRICS = ["test_acc", "ff_ratio", "c2i_ratio", "c2i_init", "saturation"]


def load_ablation(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m study.ablate {name}` (or `dvc repro`) first"
        )
    return json.loads(path.read_text())


def cell_frame(ablation: dict) -> pd.DataFrame:
    """One row per cell and seed, without the per-epoch history; failed cells are dropped."""
    rows = [
        {k: v for k, v in cell.items() if k not in ("history", "histogram")} for cell in ablation["cells"]
    ]
    frame = pd.DataFrame(rows)
    return frame[frame["failure"].isna()] if "failure" in frame else frame


def summary_table(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and 95 % CI over seeds of each metric, per cell."""
    rows = []
    for keys, group in frame.groupby(by, sort=True):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
        row["seeds"] = len(group)
        for metric in METRICS:
            estimate = mean_ci(group[metric].dropna())
            row[metric] = estimate.value
            row[f"{metric}_ci"] = (estimate.low, estimate.high)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: float, ci: tuple[float, float] | None = None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}g}"
    if ci is not None and not any(np.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"
    return text


def markdown_table(table: pd.DataFrame, by: list[str]) -> str:
    header = [*by, "seeds", *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in by]
        cells.append(str(row["seeds"]))
        cells += [_fmt(row[m], row[f"{m}_ci"]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- figures --------------------------------------------------------------------------------------


def _symlog(ax: plt.Axes, values: pd.Series) -> None:
    """Weight decay axis: logarithmic, with 0 (a real choice) shown in a linear strip at the left."""
    positive = values[values > 0]
    low = float(positive.min()) if len(positive) else 1e-6
    ax.set_xscale("symlog", linthresh=low)
    ax.set_xlim(-0.5 * low, 2 * float(values.max()))


def _as_labels(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """A numeric column as ordered text labels, so seaborn gives each value its own colour."""
    order = sorted(frame[column].unique())
    labels = pd.Categorical(frame[column].map(lambda v: f"{v:g}"), categories=[f"{v:g}" for v in order])
    return frame.assign(**{column: labels})


def ff_figure(wd: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x, hue in ((axes[0], WD2, WD1), (axes[1], WD1, WD2)):
        sns.lineplot(
            data=wd, x=x, y="ff_ratio", hue=hue, marker="o", errorbar=("ci", 95), palette="viridis", ax=ax
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
            data=wd, x=x, y=metric, hue=hue, marker="o", errorbar=("ci", 95), palette="viridis", ax=ax
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


def optimizer_curves_figure(ablation: dict, path: Path) -> Path:
    rows = [{"optimizer": cell["optimizer"], "network": cell["network"], "seed": cell["seed"], **epoch}
            for cell in ablation["cells"] if "history" in cell for epoch in cell["history"]]  # fmt: skip
    history = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("val_acc", "saturation"), strict=True):
        sns.lineplot(
            data=history, x="step", y=metric, hue="optimizer", style="network", errorbar=("ci", 95), ax=ax
        )
        ax.set(xlabel="epoch (both stages)", title=f"{metric.replace('_', ' ')} per optimizer")
    fig.tight_layout()
    return _save(fig, path)


def histogram_figure(ablation: dict, path: Path) -> Path:
    """Latent weights of the binary network at the end of training, summed over seeds."""
    rows = []
    for cell in ablation["cells"]:
        if cell.get("network") != "binary" or "histogram" not in cell:
            continue
        edges = cell["histogram"]["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        rows += [{"weight": c, "count": n, "optimizer": cell["optimizer"]}
                 for c, n in zip(centres, cell["histogram"]["counts"], strict=True)]  # fmt: skip
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(data=data, x="weight", weights="count", hue="optimizer", binwidth=edges[1] - edges[0],
                 element="step", stat="density", common_norm=False, ax=ax)  # fmt: skip
    for mark in (-1, 0, 1):
        ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    ax.set(title="Latent weights of the binary layers: Adam vs SGD", xlabel="latent weight")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


# --- the report -----------------------------------------------------------------------------------


def verdict_markdown(claims: list[Claim]) -> str:
    lines = [
        "| claim | statement | expected | measured | 95 % CI | n | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        ci = _fmt(c.effect.low) + ", " + _fmt(c.effect.high)
        lines.append(f"| {c.number} | {c.statement} | {c.measure}: {c.expected} | {_fmt(c.effect.value)} | "
                     f"[{ci}] | {c.effect.n} | **{c.verdict}** |")  # fmt: skip
    return "\n".join(lines)


def write_report(folder: Path, report: Path, margin: float) -> tuple[Path, list[Path], list[Claim]]:
    ablations = {name: load_ablation(folder, name) for name in ABLATIONS}
    frames = {name: cell_frame(ablation) for name, ablation in ablations.items()}
    claims = all_claims(frames["wd"], frames["optimizer"], frames["stages"], margin)
    figures_dir = report.parent / "figures"
    sns.set_theme(style="whitegrid", context="notebook")
    figures = {
        "ff": ff_figure(frames["wd"], figures_dir / "ff_vs_weight_decay.png"),
        "c2i": c2i_figure(frames["wd"], figures_dir / "c2i_vs_weight_decay.png"),
        "heatmap": heatmap_figure(frames["wd"], figures_dir / "accuracy_heatmap.png"),
        "curves": optimizer_curves_figure(ablations["optimizer"], figures_dir / "optimizer_curves.png"),
        "hist": histogram_figure(ablations["optimizer"], figures_dir / "latent_weights_adam_sgd.png"),
    }
    write_csv(report.parent / "verdicts.csv", verdict_table(claims))
    first = ablations["wd"]
    failures = sum(len(a["cells"]) - len(frames[n]) for n, a in ablations.items())
    supported = sum(c.verdict == "supported" for c in claims)

    def figure(key: str, caption: str) -> str:
        return f"![{caption}]({figures[key].relative_to(report.parent).as_posix()})\n\n*{caption}*"

    text = f"""# Reproduction of AdamBNN's claims

*Generated by `python -m study.report` from the ablation results; every number and verdict below is
computed from the runs, none is written by hand.*

## Set-up

- **Data**: `{first["data"]}`, split by seed into train / validation / test; every cell's network
  is evaluated once on the test split (accuracies below are test accuracies).
- **Model**: `{first["model"]}` (binary weights and activations; real stem and classifier).
- **Training**: {first["epochs"]} epochs per stage (two-stage cells: stage 1 binary activations
  with real weights, then stage 2 fully binary from stage 1's weights); one-stage and real-valued
  cells train {2 * first["epochs"]} epochs. Adam with linear decay unless stated.
- **Seeds**: {len(first["seeds"])} per cell{" (quick run)" if first["quick"] else ""};
  {sum(len(f) for f in frames.values())} runs in all, {failures} failed (NaN or infinite loss).
- **Optimizers** (ablation 4): {_optimizer_text(ablations["optimizer"])}.
- **Statistics**: 95 % confidence intervals: Student t over seeds for means and paired differences
  (paired by seed), Fisher z (Bonett-Wright) for Spearman's rho; claim 3 compares the paper's cell
  with every other cell by paired t-tests with Holm's correction. A claim is *supported* when the
  interval lies on the expected side of zero, *contradicted* when it lies on the other side, and
  *inconclusive* otherwise.

## Verdicts

{supported} of {len(claims)} claims supported.

{verdict_markdown(claims)}

Details:

{chr(10).join(f"- **{c.number}**: {c.detail}" for c in claims if c.detail)}

## Weight decay: stage 1 x stage 2

{markdown_table(summary_table(frames["wd"], [WD1, WD2]), [WD1, WD2])}

{figure("heatmap", "Mean test accuracy per cell; the paper's cell (5e-6, 0) is outlined.")}

{figure("ff", "Stage-2 FF ratio (log scale) against weight decay; bands are 95 % CIs over seeds.")}

{figure("c2i", "C2I ratio against weight decay: against the start of stage 2, and against the first init.")}

## Optimizer: Adam vs SGD, binary and real-valued

{markdown_table(summary_table(frames["optimizer"], ["network", "optimizer"]), ["network", "optimizer"])}

{figure("curves", "Validation accuracy and activation saturation per epoch (both stages), per optimizer.")}

{figure("hist", "Latent weights of the binary network at the end of training (all seeds), Adam vs SGD.")}

## Two-stage vs one-stage

{markdown_table(summary_table(frames["stages"], ["training"]), ["training"])}

## Choices the paper leaves open

- FF ratio: fraction of binary weights whose sign changes per optimizer step, averaged over
  stage 2's steps. C2I: fraction of signs equal to a reference (start of stage 2, or first init).
- sign(0) = +1; weight decay on conv and linear kernels except the classifier (coupled L2 for Adam
  and SGD); symmetric Kaiming init; saturation measured on the validation pass.
- One-stage training uses stage 2's settings (fully binary, stage-2 weight decay) for the total epochs.
- "At least as good" (claim 4b) is non-inferiority with margin {margin:g} in accuracy.
- Claim 6 is measured as the fraction of latent weights within 0.1 of +-1 (and of 0).
"""
    atomic_write(report, lambda tmp: tmp.write_text(text))
    return report, list(figures.values()), claims


def _optimizer_text(ablation: dict) -> str:
    return "; ".join(f"{name}: {settings}" for name, settings in ablation.get("optimizers", {}).items())


def log_to_mlflow(folder: Path, report: Path, figures: list[Path], claims: list[Claim]) -> None:
    """Report, figures and verdicts go to every ablation's parent run."""
    params = load_params()
    tracker = Tracker.from_params(params)
    verdict_codes = {"supported": 1, "inconclusive": 0, "contradicted": -1}
    for name in ABLATIONS:
        parent = load_ablation(folder, name).get("parent_run_id")
        if not parent:
            continue
        logger = tracker.run_logger(parent)
        logger.log_artifacts([report, report.parent / "verdicts.csv", *figures], "report")
        logger.log_metrics({f"claim_{c.number}": verdict_codes[c.verdict] for c in claims})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="ablation results (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=REPORT, help="the report file (default %(default)s)")
    args = parser.parse_args(argv)
    margin = load_params().ablation.margin
    report, figures, claims = write_report(args.results, args.out, margin)
    log_to_mlflow(args.results, report, figures, claims)
    print(
        verdict_table(claims)[["claim", "effect", "ci_low", "ci_high", "n", "verdict"]].to_string(index=False)
    )
    print(f"report: {report}")


if __name__ == "__main__":
    run_main(main)
