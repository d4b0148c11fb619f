"""DVC stage ``export``: the stage-2 network as a 1-bit file, verified against the trained network.

Writes ``runs/export/model.bnn`` (sign bits, scales folded into the BatchNorms, real layers in float:
:mod:`study.export.format`), ``runs/export/model.onnx`` (the same network for a standard runtime, fed
pixels / 255: :mod:`study.export.onnx`), ``runs/export/metrics.json`` (the DVC metrics: the
exported network's test accuracy and whether it and the ONNX file match the trained network) and
``details.json``: on the test split, the accuracy of the trained and the ONNX network, how many
predictions differ, the largest logit difference, and two sizes against float32
(:func:`study.export.verify.size_report`): ``binary_layers_size_ratio`` (the binary layers alone) and
``file_size_ratio`` (the whole file).
Fails, writing nothing, when a check of :mod:`study.export` fails or the export's test accuracy is not
the one the ``evaluate`` stage measured. Logged to MLflow as the pipeline's ``export`` run (metrics and
the 1-bit file) and, as ``export_*`` metrics, to the pipeline's parent run.
"""

from __future__ import annotations

import json

import torch

from bnn import PreparedData
from pipelines.common import PREPARED_DATA, pipeline_parent, stage_dir
from study.artifacts import write_json
from study.cli import run_main
from study.config import load_params
from study.export.exporter import export_verified
from study.export.format import VerificationFailed
from study.tracking import Tracker

COMPARED = ("export_acc", "match", "onnx_match")  # `dvc exp show` and `dvc metrics show`


def main() -> None:
    params = load_params()
    torch.set_num_threads(params.threads)
    data = PreparedData.load(PREPARED_DATA)
    out = stage_dir("export")
    evaluated = json.loads((stage_dir("evaluate") / "metrics.json").read_text())["test_acc"]
    result = export_verified(
        str(stage_dir("stage2") / "model.pt"), params, data, out / "model.bnn", out / "model.onnx"
    )
    if round(result["export_acc"] * len(data.test)) != round(evaluated * len(data.test)):
        for written in ("model.bnn", "model.onnx"):
            (out / written).unlink(missing_ok=True)
        raise VerificationFailed(
            f"the export's test accuracy {result['export_acc']:.4f} is not evaluate's {evaluated:.4f}"
        )
    result["evaluate_test_acc"] = evaluated
    write_json(out / "metrics.json", {k: result[k] for k in COMPARED})
    write_json(out / "details.json", {k: v for k, v in result.items() if k not in COMPARED})

    numbers = {k: float(v) for k, v in result.items() if isinstance(v, int | float)}  # bools as 0/1
    tracker = Tracker.from_params(params)
    parent = pipeline_parent(tracker, params, data)
    with tracker.child(parent, "export", tags={"stage": "export", "data_hash": data.fingerprint()}) as run:
        run.log_metrics(numbers)
        run.log_artifacts([out / "model.bnn"], "export")
    tracker.run_logger(parent).log_metrics({f"export_{k}": v for k, v in numbers.items()})


if __name__ == "__main__":
    run_main(main)
