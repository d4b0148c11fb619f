"""``python -m study.reproduce report``: the reproduction report, generated from the ablation results.

Reads ``reports/ablations/{wd,optimizer,stages,latent}.json`` (written by
``python -m study.reproduce ablate``), tests the claims (:mod:`study.reproduce.claims`), draws the
seaborn figures (:mod:`study.reproduce.figures`) and writes ``reports/reproduction.md`` (the template
``templates/reproduction.md.j2`` filled in with the numbers and the tables of
:mod:`study.reproduce.tables`) with the figures beside it in ``reports/figures/`` and the verdicts in
``reports/verdicts.csv``; logs the report, figures and verdicts to each ablation's MLflow parent run.
The report and the verdicts carry no run ids, times or absolute paths: the same results give the
same bytes on any clone.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study.artifacts import atomic_write, write_csv
from study.config import PROJECT_ROOT, load_params
from study.render import render, table
from study.reproduce import figures as draw
from study.reproduce import tables
from study.reproduce.ablate import RESULTS
from study.reproduce.claims import (
    LR,
    REACH,
    TARGET_EFFECT,
    WD1,
    WD2,
    Claim,
    all_claims,
    lr_sweep,
    select_lr,
    verdict_table,
)
from study.tracking import RUN_KEY_TAG, Tracker

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


# --- the results ----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Results:
    """What the report shows: the ablations as read, their cell frames and the claims tested on them."""

    ablations: dict[str, dict]  # name -> the ablation's JSON
    frames: dict[str, pd.DataFrame]  # name -> one row per cell and seed (the optimizer's with its lr)
    claims: list[Claim]
    sweep: pd.DataFrame  # the optimizer ablation's learning-rate sweep, the chosen lrs marked
    chosen: pd.DataFrame  # the optimizer ablation's runs at the chosen lrs
    curves: pd.DataFrame  # their per-epoch records
    residuals: pd.DataFrame  # the residuals of the weight-decay trends' straight lines


def load_results(folder: Path, margin: float) -> Results:
    """Every reported ablation read from ``folder`` and its claims tested (``margin``: claim 4b's)."""
    ablations = {name: load_ablation(folder, name) for name in REPORTED}
    frames = {name: cell_frame(ablation) for name, ablation in ablations.items()}
    settings = ablations["optimizer"].get("optimizers", {})
    frames["optimizer"] = with_lr(frames["optimizer"], settings)
    claims = all_claims(frames["wd"], frames["optimizer"], frames["stages"], frames["latent"], margin)
    chosen = select_lr(frames["optimizer"])
    curves = with_lr(history_frame(ablations["optimizer"], ["optimizer", "network", LR, "seed"]), settings)
    curves = curves.merge(
        chosen[["optimizer", "network", LR]].drop_duplicates(), on=["optimizer", "network", LR]
    )
    return Results(
        ablations, frames, claims, lr_sweep(frames["optimizer"]), chosen, curves, residual_frame(claims)
    )


# --- the report -----------------------------------------------------------------------------------


def draw_figures(results: Results, folder: Path) -> dict[str, Path]:
    """The report's figures, saved in ``folder``, by the name the template gives them."""
    wd, latent = results.frames["wd"], results.ablations["latent"]
    draw.set_theme()
    return {
        "ff": draw.ff_figure(wd, folder / "ff_vs_weight_decay.png"),
        "c2i": draw.c2i_figure(wd, folder / "c2i_vs_weight_decay.png"),
        "heatmap": draw.heatmap_figure(wd, folder / "accuracy_heatmap.png"),
        "residuals": draw.residual_figure(results.residuals, results.claims, folder / "shape_residuals.png"),
        "lr": draw.lr_sweep_figure(results.frames["optimizer"], results.sweep, folder / "lr_sweep.png"),
        "curves": draw.optimizer_curves_figure(results.curves, folder / "optimizer_curves.png"),
        "dead": draw.dead_weights_figure(
            history_frame(latent, ["optimizer", "seed"]), folder / "dead_weights.png"
        ),
        "hist": draw.latent_histograms_figure(latent, folder / "latent_weights_adam_sgd.png"),
    }


def markdown_tables(results: Results) -> dict[str, str]:
    """The report's tables as Markdown, by the name the template gives them; every cell is already
    text, so none is parsed as a number and reformatted."""
    frames = results.frames
    cells = {
        "verdicts": tables.claims_table(results.claims),
        "power": tables.power_table(results.claims),
        "wd": tables.summary_table(frames["wd"], [WD1, WD2], METRICS),
        "fits": tables.fits_table(results.claims),
        "residuals": tables.residual_table(results.residuals),
        "lr_sweep": tables.lr_sweep_table(results.sweep),
        "chosen": tables.summary_table(results.chosen, ["network", "optimizer", LR], METRICS),
        "latent": tables.summary_table(frames["latent"], ["optimizer"], ["test_acc", *LATENT_METRICS]),
        "dead": tables.summary_table(frames["latent"], ["optimizer"], DEAD_METRICS),
        "stages": tables.summary_table(frames["stages"], ["training"], METRICS),
    }
    return {name: table(frame, disable_numparse=True) for name, frame in cells.items()}


def setup_context(results: Results) -> dict:
    """The numbers and lists the set-up section quotes."""
    ablations, frames = results.ablations, results.frames
    first, latent = ablations["wd"], ablations["latent"]
    return {
        "data": first["data"],
        "model": first["model"],
        "epochs": first["epochs"],
        "one_stage_epochs": 2 * first["epochs"],
        "seeds": tables.seeds_text(ablations),
        "quick": first["quick"],
        "runs": sum(len(frame) for frame in frames.values()),
        "failures": sum(len(a["cells"]) - len(frames[name]) for name, a in ablations.items()),
        "optimizers": tables.optimizer_text(ablations["optimizer"]),
        "chosen": tables.chosen_text(results.sweep),
        "latent_optimizers": tables.optimizer_text(latent),
        "latent_seeds": len(latent["seeds"]),
        "latent_budget": tables.stage_budget_text(latent["budget"]),
        "lr_budget": tables.lr_budget_text(frames["latent"]),
    }


def report_context(results: Results, figures: dict[str, Path], folder: Path, margin: float) -> dict:
    """Everything the template fills in; ``folder`` is the report's (figure paths are relative to it)."""
    return {
        **setup_context(results),
        "claims": results.claims,
        "counts": tables.counts_text(results.claims),
        "floor": tables.accuracy_floor(results.ablations["wd"], results.frames["wd"]),
        "tables": markdown_tables(results),
        "figures": {name: path.relative_to(folder).as_posix() for name, path in figures.items()},
        "margin": f"{margin:g}",
        "target_effect": f"{TARGET_EFFECT:g}",
        "reach": f"{REACH:g}",
    }


def write_report(folder: Path, report: Path, margin: float) -> tuple[Path, list[Path], list[Claim]]:
    """The report, its figures and ``verdicts.csv`` beside it, from the ablation results in ``folder``."""
    results = load_results(folder, margin)
    figures = draw_figures(results, report.parent / "figures")
    write_csv(report.parent / "verdicts.csv", verdict_table(results.claims))
    context = report_context(results, figures, report.parent, margin)
    text = render("study.reproduce", "reproduction.md.j2", **context)
    atomic_write(report, lambda tmp: tmp.write_text(text))
    return report, list(figures.values()), results.claims


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
    parser = argparse.ArgumentParser(
        prog="python -m study.reproduce report", description=__doc__.splitlines()[0]
    )
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
