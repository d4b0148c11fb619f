"""What the DVC stages share: output paths, the pipeline's MLflow parent run, stage outputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bnn import PreparedData, save_checkpoint
from bnn.train import Observer
from study.artifacts import write_csv, write_json
from study.config import PROJECT_ROOT, Params
from study.runner import StageRun
from study.tracking import RunLogger, Tracker, git_commit

PREPARED = PROJECT_ROOT / "data" / "prepared"
PREPARED_DATA = PREPARED / "data.pt"
RUNS = PROJECT_ROOT / "runs"
TRAINED_SECTIONS = ("seed", "data", "model", "stage1", "stage2", "distill")


def stage_dir(stage: str) -> Path:
    return RUNS / stage


def pipeline_parent(tracker: Tracker, params: Params, data: PreparedData) -> str:
    """The parent run of this configuration: every stage trained from the same settings shares it."""
    key = f"pipeline-{params.training_key(*TRAINED_SECTIONS)}-{data.fingerprint()[:12]}-{git_commit()[:12]}"
    return tracker.find_or_create_parent(
        key, "pipeline", {"bnn.kind": "pipeline", "data_hash": data.fingerprint()}
    )


def epoch_logger(run: RunLogger) -> Observer:
    return lambda record: run.log_metrics(record, step=record["epoch"])


def write_stage_outputs(stage: str, run: StageRun, meta: dict) -> None:
    """Checkpoint, metrics.json and history.csv of one stage (each written atomically)."""
    out = stage_dir(stage)
    save_checkpoint(out / "model.pt", run.model, run.result.init_signs, meta)
    write_json(out / "metrics.json", run.result.final)
    write_csv(out / "history.csv", pd.DataFrame(run.result.history))
