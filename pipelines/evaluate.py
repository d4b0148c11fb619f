"""DVC stage ``evaluate``: the final binary network on the held-out test split, with figures.

Writes ``runs/evaluate/metrics.json``, the DVC metrics a user compares across experiments (test
accuracy, stage 1's validation accuracy, the stage-2 FF and C2I ratios), ``details.json`` (the
rest: validation accuracy and test loss, C2I against the initial weights, dead weights, and
saturation: ``saturation`` on the test split in eval mode, ``saturation_train`` on stage 2's
last-epoch training batches in train mode) and seaborn figures, and logs them all to the pipeline's
MLflow parent run.
"""

from __future__ import annotations

import math

import pandas as pd

from bnn import PreparedData, evaluate, latent_histogram, load_checkpoint, set_mode
from bnn.train import resolve_device
from pipelines.common import PREPARED_DATA, checkpoint_run_ids, pipeline_parent, stage_dir
from study.artifacts import write_json
from study.cli import run_main
from study.config import load_params
from study.figures import latent_histograms, training_curves
from study.runner import new_model
from study.tracking import Tracker

COMPARED = ("test_acc", "stage1_val_acc", "ff_ratio", "c2i_ratio")  # `dvc exp show` and `dvc metrics show`


def main() -> None:
    params = load_params()
    data = PreparedData.load(PREPARED_DATA)
    device = resolve_device(params.device)
    checkpoints = {stage: load_checkpoint(stage_dir(stage) / "model.pt") for stage in ("stage1", "stage2")}
    models = {}
    for stage, checkpoint in checkpoints.items():
        models[stage] = new_model(params, data).to(device)
        models[stage].load_state_dict(checkpoint["state_dict"], strict=True)
    model = set_mode(models["stage2"], "binary")
    batch = params.evaluation.batch_size
    test = evaluate(model, data.test, data, batch_size=batch, device=device)
    val = evaluate(model, data.val, data, batch_size=batch, device=device)
    stage2 = checkpoints["stage2"]["meta"]["final"]
    metrics = {
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "val_acc": val["acc"],
        "ff_ratio": stage2["ff_ratio"],
        "c2i_ratio": stage2["c2i_stage"],
        "c2i_init": stage2["c2i_init"],
        "changed_from_init": stage2["changed_from_init"],
        "saturation": test["saturation"],
        "saturation_train": stage2["saturation_train"],
        "dead_beyond_clip": stage2["dead_beyond_clip"],
        "dead_small_grad": stage2["dead_small_grad"],
        "dead_relative_update": stage2["dead_relative_update"],
        "stage1_val_acc": checkpoints["stage1"]["meta"]["final"]["val_acc"],
    }
    out = stage_dir("evaluate")
    histories = {f"stage {s[-1]}": pd.read_csv(stage_dir(s) / "history.csv") for s in checkpoints}
    bins = params.evaluation.histogram_bins
    figures = [
        training_curves(histories, out / "curves.png"),
        latent_histograms(
            {f"end of stage {s[-1]}": latent_histogram(m, bins=bins) for s, m in models.items()},
            out / "latent_weights.png",
        ),
    ]
    # null, not NaN (not JSON): dead_relative_update is undefined when no weight had a small gradient
    written = {k: None if math.isnan(v) else v for k, v in metrics.items()}
    write_json(out / "metrics.json", {k: written[k] for k in COMPARED})
    write_json(out / "details.json", {k: v for k, v in written.items() if k not in COMPARED})

    tracker = Tracker.from_params(params)
    parent = pipeline_parent(tracker, params, data)
    with tracker.child(
        parent,
        "evaluate",
        params=params.model_dump(include={"evaluation"}),
        tags={"stage": "evaluate", "data_hash": data.fingerprint()},
    ) as run:
        run.log_metrics(metrics)
    summary = tracker.run_logger(parent)
    summary.log_metrics(metrics)
    summary.log_artifacts(figures, "figures")
    summary.set_tags(checkpoint_run_ids(tracker, tuple(checkpoints)))
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_main(main)
