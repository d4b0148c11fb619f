"""ONNX export of the 1-bit inference network, usable as shipped, and a check of it with onnxruntime (CPU).

The graph takes what an image file gives: input ``pixels``, float32 NCHW, the uint8 pixels / 255 (in
[0, 1]); the training normalisation with the data set's mean and std is part of it
(:class:`PixelInput`), and the file's ``metadata_props`` say so, with the classes and where the network
came from (:func:`onnx_metadata`). Without both, a user who fed it pixels / 255 got wrong answers (18 %
accuracy on the mnist5k test split instead of 96 %) and no hint why. The kernels are the inference
network's +-1 float tensors (ONNX has no 1-bit type), so the ONNX file is as large as a float32
network; it is for running the export elsewhere, the ``.bnn`` file for storing it. torch's
TorchScript-based exporter (``dynamo=False``) is used: it needs only the ``onnx`` package, the
``torch.export``-based one also ``onnxscript``.
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bnn import ImageData, PreparedData
from bnn.checkpoint import atomic_write
from study.export.verify import verify

OPSET = 17
INPUT, OUTPUT = "pixels", "logits"


class PixelInput(nn.Module):
    """``network`` on ``(pixels / 255 - mean) / std`` from its input ``pixels / 255``, computed as
    training computes it (:func:`bnn.batches.normalize`: ``pixels * (1 / (255 std)) - mean / std``),
    so that the ONNX network gives the trained network's logits, not values a rounding away."""

    def __init__(self, network: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("scale", (1.0 / (255.0 * std)).to(torch.float32).view(1, -1, 1, 1))
        self.register_buffer("shift", (mean / std).to(torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.network((x * 255.0) * self.scale - self.shift)  # x * 255: the integer pixel, exactly


def bnn_study_version() -> str:
    try:
        return version("bnn-study")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def onnx_metadata(payload: dict[str, Any], classes: list[str], data_name: str) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` for an export ``payload`` (as :func:`read_export` returns it):
    what to feed it and what it answers, without the ``.bnn`` file or this project at hand."""
    arch, stats = payload["architecture"], payload["input"]
    c, size = arch["in_channels"], arch["image_size"]
    return {
        "input_name": INPUT,
        "input_layout": "NCHW",
        "input_shape": f"[batch, {c}, {size}, {size}]",
        "input_dtype": "float32",
        "input_range": "[0, 1]: uint8 pixels / 255",
        "normalization": "in the graph: (input - mean) / std per channel, as in training",
        "mean": json.dumps(stats["mean"].tolist()),
        "std": json.dumps(stats["std"].tolist()),
        "output_name": OUTPUT,
        "output": "float32 [batch, num_classes] logits; argmax is the index into class_names",
        "num_classes": str(arch["num_classes"]),
        "class_names": json.dumps(list(classes)),
        "dataset": data_name,
        "architecture": json.dumps(arch, sort_keys=True),
        "source": payload["source"],
        "bnn_content_sha256": payload["content_sha256"],
        "bnn_study_version": bnn_study_version(),
    }


def export_onnx(
    model: nn.Module, path: str | Path, payload: dict[str, Any], classes: list[str], data_name: str
) -> Path:
    """Write the export's inference network ``model`` (eval mode) with its input normalisation as ONNX,
    batch dimension dynamic, with :func:`onnx_metadata`: input ``pixels``, output ``logits``."""
    import onnx

    arch = payload["architecture"]
    network = PixelInput(model, payload["input"]["mean"], payload["input"]["std"]).eval()
    sample = torch.zeros(1, arch["in_channels"], arch["image_size"], arch["image_size"])

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                network,
                (sample,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, onnx_metadata(payload, classes, data_name))
        proto.doc_string = f"bnn-study 1-bit network from {payload['source']}; input pixels / 255, NCHW"
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def onnx_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_onnx(
    path: str | Path,
    model: nn.Module,
    split: ImageData,
    data: PreparedData,
    batch_size: int = 512,
    threads: int = 1,
) -> dict[str, float]:
    """Run the ONNX file with onnxruntime on ``split``'s pixels / 255 beside ``model`` on the normalised
    images (:func:`study.export.verify.verify`): differing predictions, max absolute logit difference,
    and the ONNX network's accuracy."""
    session = onnx_session(path, threads)

    def onnx_network(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT], {INPUT: x.numpy()})[0])

    compared = verify(model, onnx_network, split, data, batch_size, pixels=True)
    return {
        "onnx_acc": compared["export_acc"],
        "onnx_prediction_mismatches": compared["prediction_mismatches"],
        "onnx_max_abs_logit_diff": compared["max_abs_logit_diff"],
    }
