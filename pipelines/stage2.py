"""DVC stage ``stage2``: fully binary, latent weights loaded strictly from stage 1."""

from __future__ import annotations

from bnn import PreparedData, load_checkpoint
from pipelines.common import (
    PREPARED_DATA,
    checkpoint_run_ids,
    epoch_logger,
    pipeline_parent,
    stage_dir,
    write_stage_outputs,
)
from study.cli import run_main
from study.config import load_params
from study.progress import epoch_lines
from study.runner import load_teacher, run_stage2
from study.tracking import Tracker


def main() -> None:
    params = load_params()
    data = PreparedData.load(PREPARED_DATA)
    stage1 = load_checkpoint(stage_dir("stage1") / "model.pt")
    teacher = load_teacher(params, data, stage1["meta"].get("teacher_state_dict"))
    tracker = Tracker.from_params(params)
    parent = pipeline_parent(tracker, params, data)
    logged = params.model_dump(include={"seed", "model", "stage2"})
    tags = {"stage": "2", "data_hash": data.fingerprint(), **checkpoint_run_ids(tracker, ("stage1",))}
    with tracker.child(parent, "stage2", params=logged, tags=tags) as run:
        run.log_dataset(data, data.fingerprint())
        stage = run_stage2(
            params,
            data,
            stage1["state_dict"],
            stage1["init_signs"],
            teacher=teacher,
            observers=(epoch_logger(run), epoch_lines("stage 2", params.stage2.epochs)),
            progress=True,
        )
        write_stage_outputs("stage2", stage, run, {"final": stage.result.final})
    print(
        f"stage 2: val_acc {stage.result.final['val_acc']:.4f}  ff_ratio {stage.result.final['ff_ratio']:.2e}"
    )


if __name__ == "__main__":
    run_main(main)
