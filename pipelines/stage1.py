"""DVC stage ``stage1``: binary activations, real weights, from a seeded random init."""

from __future__ import annotations

from bnn import PreparedData
from pipelines.common import PREPARED_DATA, epoch_logger, pipeline_parent, write_stage_outputs
from study.cli import run_main
from study.config import load_params
from study.progress import epoch_lines
from study.runner import run_stage1
from study.tracking import Tracker


def main() -> None:
    params = load_params()
    data = PreparedData.load(PREPARED_DATA)
    tracker = Tracker.from_params(params)
    parent = pipeline_parent(tracker, params, data)
    logged = params.model_dump(include={"seed", "model", "stage1", "distill"})
    with tracker.child(
        parent, "stage1", params=logged, tags={"stage": "1", "data_hash": data.fingerprint()}
    ) as run:
        run.log_dataset(data, data.fingerprint())
        stage = run_stage1(
            params,
            data,
            observers=(epoch_logger(run), epoch_lines("stage 1", params.stage1.epochs)),
            progress=True,
        )
        meta = {"final": stage.result.final}
        if stage.teacher is not None:
            meta["teacher_state_dict"] = stage.teacher.state_dict()
        write_stage_outputs("stage1", stage, run, meta)
    print(f"stage 1: val_acc {stage.result.final['val_acc']:.4f}")


if __name__ == "__main__":
    run_main(main)
