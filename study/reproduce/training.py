"""Training one ablation cell: two-stage, fully binary from scratch, or real-valued, then its measures."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bnn import (
    PreparedData,
    StageConfig,
    StageResult,
    evaluate,
    latent_histogram,
    latent_measures,
    median_abs_weight,
    rel_histogram,
    train_stage,
)
from bnn.train import resolve_device
from study.config import Params
from study.reproduce.cells import Cell
from study.runner import augmentation, load_teacher, new_model, run_stage2
from study.stage1_store import Stage1Cache

HISTOGRAM_BINS = 121
# Columns taken from the last stage's final record (NaN where that stage does not track them).
FINAL_COLUMNS = {
    "val_acc": "val_acc",
    "ff_ratio": "ff_ratio",
    "c2i_stage": "c2i_ratio",
    "c2i_init": "c2i_init",
    "changed_from_init": "changed_from_init",
    "saturation_train": "saturation_train",
    "dead_beyond_clip": "dead_beyond_clip",
    "dead_small_grad": "dead_small_grad",
    "dead_relative_update": "dead_relative_update",
}


@dataclass
class Trained:
    """A cell's network after training, its last stage's result and settings, and where its weights
    stood when that stage started."""

    model: torch.nn.Module
    result: StageResult
    last_stage: StageConfig
    median_abs_start: float
    stage1_cached: bool | None = None


def train_two_stage(params: Params, data: PreparedData, stage1_store: Stage1Cache, record) -> Trained:
    stage1 = stage1_store.run(params, data, observers=(record(1, 0),))
    start = new_model(params, data)
    start.load_state_dict(stage1.state_dict, strict=True)
    stage2 = run_stage2(
        params,
        data,
        stage1.state_dict,
        stage1.init_signs,
        teacher=load_teacher(params, data, stage1.teacher_state_dict),
        observers=(record(2, params.stage1.epochs),),
    )
    return Trained(stage2.model, stage2.result, params.stage2, median_abs_weight(start), stage1.cached)


def train_one_stage(kind: str, params: Params, data: PreparedData, record) -> Trained:
    """Fully binary from scratch (stage 2's settings) or real-valued (stage 1's), for both stages' epochs."""
    total = params.stage1.epochs + params.stage2.epochs
    source = params.stage1 if kind == "real" else params.stage2
    cfg = StageConfig.model_validate({**source.model_dump(), "epochs": total})
    mode = "real" if kind == "real" else "binary"
    model = new_model(params, data)
    start = median_abs_weight(model)
    result = train_stage(
        model,
        data,
        cfg,
        mode=mode,
        seed=params.seed,
        augment=augmentation(params),
        device=resolve_device(params.device),
        track_signs=mode != "real",
        observers=(record(1, 0),),
    )
    return Trained(model, result, cfg, start)


def lr_budget(history: list[dict], steps_per_epoch: int) -> float:
    """The learning rate summed over a stage's optimizer steps (the schedule changes it per epoch)."""
    return steps_per_epoch * sum(epoch["lr"] for epoch in history)


def run_cell(cell: Cell, base: Params, data: PreparedData, stage1_store: Stage1Cache, observer=None) -> dict:
    """Train one cell; returns its metrics, per-epoch history, each test example's predicted class (in
    the test split's order) and end-of-training latent histograms.

    ``stage1_cached`` (whether stage 1 came from the store) depends on which worker got there first:
    it goes to MLflow, never into the results.
    """
    params = cell.params(base)
    history: list[dict] = []

    def record(stage: int, offset: int):
        def observe(epoch: dict) -> None:
            history.append({**epoch, "stage": stage, "step": offset + epoch["epoch"]})
            if observer is not None:
                observer(history[-1])

        return observe

    if cell.kind == "two_stage":
        trained = train_two_stage(params, data, stage1_store, record)
    else:
        trained = train_one_stage(cell.kind, params, data, record)
    model, final = trained.model, trained.result.final
    test = evaluate(model, data.test, data, device=resolve_device(params.device), predictions=True)
    steps_per_epoch = math.ceil(len(data.train) / trained.last_stage.batch_size)
    return {
        "test_acc": test["acc"],
        **{column: final.get(key, float("nan")) for key, column in FINAL_COLUMNS.items()},
        "saturation": test["saturation"],
        **latent_measures(model),
        "median_abs_start": trained.median_abs_start,
        "lr_budget": lr_budget(trained.result.history, steps_per_epoch),
        "stage1_cached": trained.stage1_cached,
        "history": history,
        "test_predictions": test["predictions"],
        "histogram": latent_histogram(model, bins=HISTOGRAM_BINS, limit=1.5),
        "rel_histogram": rel_histogram(model, bins=HISTOGRAM_BINS),
    }
