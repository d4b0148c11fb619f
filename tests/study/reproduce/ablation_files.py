"""The four ablations' JSON files, as ``study.reproduce.ablate.run_ablation`` writes them, from the
synthetic frames of test_claims.py (its effects planted in the paper's favour), and the report's
sections and tables read back.

Each run's per-example correctness becomes its ``test_predictions`` against the ablation's
``test_labels`` (a wrong prediction is the next class); a failed cell holds its labels and its
``failure`` only, as the cell store keeps it; optimizer and latent cells carry per-epoch histories,
latent cells their histograms. Everything is drawn from fixed seeds: the same call writes the same
bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from test_claims import IMAGES, LRS, SEEDS, World, latent_frame, optimizer_frame, stages_frame, wd_frame

ABLATIONS = ("wd", "optimizer", "stages", "latent")
FIGURES = ("ff", "c2i", "heatmap", "residuals", "lr", "curves", "dead", "hist")  # the template's names
TOP = LRS["adam"][-1]  # the Adam lr that failed (binary network: one seed) or diverged (real: every seed)
CLASSES = 10
EPOCHS = 3  # per stage, in the histories
OPTIMIZERS = {"adam": {"lr": LRS["adam"], "betas": [0.9, 0.999]}, "sgd": {"lr": LRS["sgd"], "momentum": 0.9}}
LATENT_OPTIMIZERS = {"adam": {"lr": 0.004}, "sgd": {"lr": 0.1, "momentum": 0.9}}
BUDGET = {"stage1_epochs": 12, "stage1_batch_size": 128, "stage2_epochs": 30, "stage2_batch_size": 32}
KINDS = {"wd": lambda row: "two_stage", "stages": lambda row: row["training"].replace("-", "_"),
         "optimizer": lambda row: "real" if row["network"] == "real" else "two_stage",
         "latent": lambda row: "two_stage"}  # fmt: skip


def history(rng: np.random.Generator) -> list[dict]:
    """Per-epoch records of both stages, as a cell carries them."""
    return [
        {
            "stage": stage,
            "epoch": epoch,
            "step": epoch + EPOCHS * (stage - 1),
            "lr": 0.002 * (1 - epoch / EPOCHS),
            "val_acc": 0.6 + 0.05 * epoch + rng.normal(0, 0.01),
            "saturation": 0.3 + rng.normal(0, 0.01),
            "saturation_train": 0.35 + rng.normal(0, 0.01),
            "dead_beyond_clip": 0.01 * epoch,
            "dead_small_grad": 0.02 + rng.normal(0, 0.002),
            "dead_relative_update": 0.8 + rng.normal(0, 0.05),
        }
        for stage in (1, 2)
        for epoch in range(EPOCHS)
    ]


def histogram(rng: np.random.Generator, limit: float) -> dict:
    return {
        "edges": np.linspace(-limit, limit, 21).tolist(),
        "counts": rng.integers(0, 100, 20).astype(float).tolist(),
    }


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def cells(name: str, frame: pd.DataFrame, labels: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """The frame's rows as result cells: metrics and predictions, or the labels and the failure."""
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        head = {"ablation": name, "kind": KINDS[name](row), "key": f"{name}{i:04d}"}
        if isinstance(row.get("failure"), str):
            scalars = {k: _plain(row[k]) for k in ("seed", "network", "optimizer", "lr")}
            out.append({**head, **scalars, "failure": row["failure"]})
            continue
        correct = np.asarray(row.pop("correct"), dtype=bool)
        scalars = {k: _plain(v) for k, v in row.items() if k != "failure"}
        cell = {**head, **scalars, "test_acc": float(correct.mean()),
                "test_predictions": np.where(correct, labels, (labels + 1) % CLASSES).tolist()}  # fmt: skip
        if name in ("optimizer", "latent"):
            cell["history"] = history(rng)
        if name == "latent":
            cell |= {"histogram": histogram(rng, 1.5), "rel_histogram": histogram(rng, 1.0)}
        out.append(cell)
    return out


def frames(seed: int = 0) -> dict[str, pd.DataFrame]:
    """The synthetic frames of test_claims.py, the latent one with the measures the report shows and
    each run's correctness."""
    world = World(seed)
    latent = latent_frame(world, 0.1)
    rng = world.rng
    latent = latent.assign(
        rel_mass_near_zero=rng.uniform(0.1, 0.2, len(latent)),
        rel_mass_near_extreme=rng.uniform(0.05, 0.1, len(latent)),
        bimodality=rng.uniform(0.3, 0.6, len(latent)),
        dead_beyond_clip=rng.uniform(0.0, 0.05, len(latent)),
        dead_small_grad=rng.uniform(0.01, 0.05, len(latent)),
        dead_relative_update=rng.uniform(0.5, 1.5, len(latent)),
        correct=[world.correct(seed, 0.8) for seed in latent["seed"]],
    )
    optimizer = optimizer_frame(world, binary_gain=0.1, real_gain=0.05)
    diverged = (
        (optimizer["network"] == "real") & (optimizer["optimizer"] == "adam") & (optimizer["lr"] == TOP)
    )
    optimizer.loc[diverged, ["val_acc", "test_acc"]] = np.nan
    optimizer.loc[diverged, ["failure", "correct"]] = "loss is NaN", None
    return {
        "wd": wd_frame(world),
        "optimizer": optimizer,
        "stages": stages_frame(world, 0.1),
        "latent": latent,
    }


def write_ablations(folder: Path, *, run_key: str = "0123abcd", seed: int = 0) -> Path:
    """``folder/{wd,optimizer,stages,latent}.json``. In the optimizer ablation the top Adam lr failed
    on seed 0 for the binary network and diverged on every seed for the real-valued one."""
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, CLASSES, IMAGES)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames(seed).items():
        summary = {
            "ablation": name, "quick": False, "epochs": 12, "budget": BUDGET, "seeds": list(range(SEEDS)),
            "data": "mnist5k", "test_size": IMAGES, "test_labels": labels.tolist(), "cpu_isa": "avx2",
            "model": "mlp width 256", "optimizers": LATENT_OPTIMIZERS if name == "latent" else OPTIMIZERS,
            "lr_extensions": 0, "mlflow_run_key": f"{run_key}-{name}",
            "cells": cells(name, frame, labels, rng),
        }  # fmt: skip
        (folder / f"{name}.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return folder


def edit_ablation(folder: Path, name: str, change: Callable[[dict], object]) -> None:
    """Rewrite ``folder/<name>.json`` after ``change`` edited the loaded ablation in place."""
    path = folder / f"{name}.json"
    ablation = json.loads(path.read_text())
    change(ablation)
    path.write_text(json.dumps(ablation, indent=2, sort_keys=True) + "\n")


def no_figures(results, folder: Path) -> dict[str, Path]:
    """A stand-in for ``study.reproduce.report.draw_figures`` where the figures are not under test (they
    take seconds): every figure the template links, as a path only."""
    return {name: folder / f"{name}.png" for name in FIGURES}


# --- the report read back -------------------------------------------------------------------------


def flat(text: str) -> str:
    """``text`` with every run of white space one space (the template wraps its sentences)."""
    return " ".join(text.split())


def section(text: str, heading: str) -> str:
    """The report's ``## heading`` section, up to the next one."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def markdown_table(text: str, header: list[str]) -> list[dict[str, str]]:
    """The rows of the pipe table of ``text`` whose header is ``header``, cells stripped."""

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and cells(line) == header)
    rows = []
    for line in lines[start + 2 :]:  # past the header and its |:---| line
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, cells(line), strict=True)))
    return rows
