"""What the DVC stages share: output paths, the pipeline's MLflow parent run, stage outputs.

Stage outputs hold results only, never a run id or a time, so a stage re-run from the same inputs
writes the same bytes (and DVC the same md5). A checkpoint is linked to the MLflow run that wrote it
by its md5, the one in ``dvc.lock``: the run's ``bnn.checkpoint_md5`` tag.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from bnn import PreparedData, save_checkpoint
from bnn.train import Observer
from study.artifacts import write_csv, write_json
from study.config import PROJECT_ROOT, Params
from study.paths import PREPARED_DATA
from study.runner import StageRun
from study.tracking import CHECKPOINT_ARTIFACTS, RunLogger, Tracker, git_commit

PREPARED = PREPARED_DATA.parent
RUNS = PROJECT_ROOT / "runs"
TRAINED_SECTIONS = ("seed", "threads", "cpu_isa", "data", "model", "stage1", "stage2", "distill")
CHECKPOINT_TAG = "bnn.checkpoint_md5"
DVC_EXPERIMENT_TAGS = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}


def stage_dir(stage: str) -> Path:
    return RUNS / stage


def dvc_experiment() -> dict[str, str]:
    """The DVC experiment this stage runs in, as MLflow tags: ``dvc exp run`` passes its name and
    baseline commit to every stage in the environment. Empty under ``dvc repro``."""
    return {tag: os.environ[name] for name, tag in DVC_EXPERIMENT_TAGS.items() if os.environ.get(name)}


def describe(params: Params) -> str:
    """A run name a user tells apart in the MLflow UI: the model and each stage's recipe."""
    stages = " | ".join(
        f"{name} {stage.optimizer} lr {stage.lr:g} wd {stage.weight_decay:g}"
        for name, stage in (("s1", params.stage1), ("s2", params.stage2))
    )
    return f"{params.model.name}-{params.model.width} | {stages} | seed {params.seed}"


def pipeline_parent(tracker: Tracker, params: Params, data: PreparedData) -> str:
    """The parent run of this configuration (of this DVC experiment, under ``dvc exp run``): every
    stage trained from the same settings shares it. It carries the settings as its params, the
    experiment's name (else :func:`describe`) as its name, and the experiment as tags."""
    experiment = dvc_experiment()
    name = experiment.get(DVC_EXPERIMENT_TAGS["DVC_EXP_NAME"], "")
    key = f"pipeline-{params.training_key(*TRAINED_SECTIONS)}-{data.fingerprint()[:12]}-{git_commit()[:12]}"
    return tracker.find_or_create_parent(
        f"{key}-{name}" if name else key,
        name or describe(params),
        {"bnn.kind": "pipeline", "data_hash": data.fingerprint(), **experiment},
        params=params.model_dump(include=set(TRAINED_SECTIONS)),
    )


def epoch_logger(run: RunLogger) -> Observer:
    return lambda record: run.log_metrics(record, step=record["epoch"])


def file_md5(path: Path) -> str:
    """As DVC 3 hashes a file: the tag equals the file's md5 in ``dvc.lock``."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_stage_outputs(stage: str, run: StageRun, logger: RunLogger, meta: dict) -> None:
    """Checkpoint, metrics.json and history.csv of one stage (each written atomically); the run that
    wrote the checkpoint is tagged with its md5 and holds a copy (any host can fetch it from MLflow)."""
    out = stage_dir(stage)
    save_checkpoint(out / "model.pt", run.model, run.result.init_signs, meta)
    write_json(out / "metrics.json", run.result.final)
    write_csv(out / "history.csv", pd.DataFrame(run.result.history))
    logger.set_tags({CHECKPOINT_TAG: file_md5(out / "model.pt")})
    logger.log_artifacts([out / "model.pt"], CHECKPOINT_ARTIFACTS)


def checkpoint_run_ids(tracker: Tracker, stages: tuple[str, ...]) -> dict[str, str]:
    """``{"<stage>_run_id": id}`` of the newest run that wrote each stage's current checkpoint, for
    the stages whose run is in this store (a checkpoint pulled from a DVC remote may have none)."""
    found = {
        stage: tracker.latest_run(CHECKPOINT_TAG, file_md5(stage_dir(stage) / "model.pt")) for stage in stages
    }
    return {f"{stage}_run_id": run_id for stage, run_id in found.items() if run_id}
