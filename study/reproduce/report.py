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
from study.cpu_isa import PINS, cpu_model
from study.errors import InputError
from study.render import render, table
from study.reproduce import figures as draw
from study.reproduce import tables
from study.reproduce.ablate import RESULTS
from study.reproduce.claim import ALPHA, TARGET_EFFECT, Claim
from study.reproduce.claims import all_claims, select_lr, verdict_table
from study.reproduce.latent_claims import REACHED
from study.reproduce.lr_bracket import LR, bracket_status, lr_sweep
from study.reproduce.trend_claims import WD1, WD2
from study.tracking import RUN_KEY_TAG, Tracker

REPORT = PROJECT_ROOT / "reports" / "reproduction.md"
REPORTED = ("wd", "optimizer", "stages", "latent")  # the ablations the report reads
METRICS = ["test_acc", "ff_ratio", "c2i_ratio", "c2i_init", "saturation", "saturation_train"]
LATENT_METRICS = [
    "mass_near_zero",
    "mass_near_one",
    "beyond_clip",
    "mixture_components",
    "bic_gain_3v1",
    "max_abs_weight",
    "lr_budget",
    "rel_mass_near_zero",
    "rel_mass_near_extreme",
    "bimodality",
]
DEAD_METRICS = ["dead_beyond_clip", "dead_small_grad", "dead_relative_update"]
VERDICT_CODES = {"supported": 1, "inconclusive": 0, "contradicted": -1}  # MLflow metrics; all are tags


# --- the results ----------------------------------------------------------------------------------


def load_ablation(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m study.reproduce ablate {name}` (or `dvc repro`) first"
        )
    return json.loads(path.read_text())


class ResultsError(InputError):
    """An ablation's results lack what the report needs."""


def correctness(ablation: dict, cell: dict) -> np.ndarray:
    """A run's per-example test correctness (0/1), from its predictions and the test labels."""
    if "test_predictions" not in cell or "test_labels" not in ablation:
        raise ResultsError(
            f"the {ablation['ablation']} ablation's results hold no per-example test predictions (an older "
            f"version made them): re-run `python -m study.reproduce ablate {ablation['ablation']}`"
        )
    return (np.asarray(cell["test_predictions"]) == np.asarray(ablation["test_labels"])).astype(np.int8)


def cell_frame(ablation: dict, failed: bool = False) -> pd.DataFrame:
    """One row per cell and seed, without the per-epoch history and histograms, with its test
    correctness (``correct``); failed cells are dropped unless ``failed``."""
    rows = [
        {
            **{k: v for k, v in cell.items() if not isinstance(v, list | dict)},
            "correct": None if "failure" in cell else correctness(ablation, cell),
        }
        for cell in ablation["cells"]
    ]
    frame = pd.DataFrame(rows)
    if "failure" not in frame:
        return frame.assign(failure=np.nan)
    return frame if failed else frame[frame["failure"].isna()]


def history_frame(ablation: dict, labels: list[str]) -> pd.DataFrame:
    """The per-epoch records of every cell, each with the cell's ``labels`` it has."""
    return pd.DataFrame(
        [
            {**{k: cell[k] for k in labels if k in cell}, **epoch}
            for cell in ablation["cells"]
            for epoch in cell.get("history", [])
        ]
    )


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
    robust: dict[str, str]  # per claim, its robustness to the CPU code path ("" without a comparison)


def load_robustness(path: Path | None) -> pd.DataFrame | None:
    """``reports/robustness.csv`` (``python -m study.reproduce robustness``), if it was made."""
    return pd.read_csv(path) if path is not None and path.exists() else None


def load_results(folder: Path, margin: float, robustness: Path | None = None) -> Results:
    """Every reported ablation read from ``folder`` and its claims tested (``margin``: claim 4b's),
    with their robustness to the code path when ``robustness`` (a comparison file) exists."""
    ablations = {name: load_ablation(folder, name) for name in REPORTED}
    frames = {name: cell_frame(ablation) for name, ablation in ablations.items()}
    frames["optimizer"] = cell_frame(ablations["optimizer"], failed=True)  # failures bound the lr sweeps
    claims = all_claims(frames["wd"], frames["optimizer"], frames["stages"], frames["latent"], margin)
    chosen = select_lr(frames["optimizer"])
    curves = history_frame(ablations["optimizer"], ["optimizer", "network", LR, "seed"])
    curves = curves.merge(
        chosen[["optimizer", "network", LR]].drop_duplicates(), on=["optimizer", "network", LR]
    )
    robust = tables.robust_text(claims, load_robustness(robustness))
    sweep = lr_sweep(frames["optimizer"])
    return Results(ablations, frames, claims, sweep, chosen, curves, residual_frame(claims), robust)


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


def bracket(results: Results) -> pd.DataFrame:
    """Each (network, optimizer)'s chosen lr and whether its sweep brackets it on each side."""
    ablation = results.ablations["optimizer"]
    configured = {name: cfg["lr"] for name, cfg in ablation["optimizers"].items()}
    return bracket_status(results.sweep, configured, ablation["lr_extensions"])


def markdown_tables(results: Results) -> dict[str, str]:
    """The report's tables as Markdown, by the name the template gives them; every cell is already
    text, so none is parsed as a number and reformatted."""
    frames = results.frames
    cells = {
        "verdicts": tables.claims_table(results.claims, results.robust),
        "power": tables.power_table(results.claims),
        "wd": tables.summary_table(frames["wd"], [WD1, WD2], METRICS),
        "fits": tables.fits_table(results.claims),
        "residuals": tables.residual_table(results.residuals),
        "lr_sweep": tables.lr_sweep_table(results.sweep),
        "bracket": tables.bracket_table(bracket(results)),
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
        "runs": sum(len(a["cells"]) for a in ablations.values()),
        "failures": sum("failure" in cell for a in ablations.values() for cell in a["cells"]),
        "cpu": cpu_model(),
        "cpu_isa": first.get("cpu_isa", "native"),
        "pins": ", ".join(f"{k}={v}" for k, v in PINS.get(first.get("cpu_isa", "native"), {}).items()),
        "optimizers": tables.optimizer_text(ablations["optimizer"]),
        "lr_extensions": ablations["optimizer"]["lr_extensions"],
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
        "counts": tables.counts_text(results.claims, results.robust),
        "robustness": tables.robustness_text(results.robust),
        "floor": tables.accuracy_floor(results.ablations["wd"], results.frames["wd"]),
        "tables": markdown_tables(results),
        "figures": {name: path.relative_to(folder).as_posix() for name, path in figures.items()},
        "margin": f"{margin:g}",
        "target_effect": f"{TARGET_EFFECT:g}",
        "alpha": f"{ALPHA:g}",
        "reached": f"{100 * REACHED:g}",
    }


def write_report(folder: Path, report: Path, margin: float) -> tuple[Path, list[Path], list[Claim]]:
    """The report, its figures and ``verdicts.csv`` beside it, from the ablation results in ``folder``."""
    results = load_results(folder, margin, report.parent / "robustness.csv")
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
    parser.add_argument(
        "--out",
        type=Path,
        help=f"the report file (default {REPORT}, the DVC stage's, for the default results; else "
        "reproduction.md in the results folder: a report on other results never replaces it)",
    )
    args = parser.parse_args(argv)
    out = args.out or (
        REPORT if args.results.resolve() == RESULTS.resolve() else args.results / "reproduction.md"
    )
    margin = load_params().ablation.margin
    report, figures, claims = write_report(args.results, out, margin)
    log_to_mlflow(args.results, report, figures, claims)
    print(
        verdict_table(claims)[["claim", "effect", "ci_low", "ci_high", "n", "mde", "verdict"]].to_string(
            index=False
        )
    )
    print(f"report: {report}")
