"""ONNX export of the 1-bit inference network, and a check of it with onnxruntime (CPU).

The kernels are the inference network's +-1 float tensors (ONNX has no 1-bit type), so the ONNX file
is as large as a float32 network; it is for running the export elsewhere, the ``.bnn`` file for storing
it. torch's TorchScript-based exporter (``dynamo=False``) is used: it needs only the ``onnx`` package,
while the ``torch.export``-based one also needs ``onnxscript``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from bnn import ImageData, PreparedData
from bnn.checkpoint import atomic_write
from study.export.verify import verify

OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int]) -> Path:
    """Write ``model`` (eval mode) as ONNX, batch dimension dynamic: input ``input``, output ``logits``."""
    sample = torch.zeros(1, *input_shape)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                model,
                (sample,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )

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
    """Run the ONNX file with onnxruntime beside ``model`` on ``split`` (:func:`study.export.verify.verify`):
    differing predictions, max absolute logit difference, and the ONNX network's accuracy."""
    session = onnx_session(path, threads)

    def onnx_network(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])

    compared = verify(model, onnx_network, split, data, batch_size)
    return {
        "onnx_acc": compared["export_acc"],
        "onnx_prediction_mismatches": compared["prediction_mismatches"],
        "onnx_max_abs_logit_diff": compared["max_abs_logit_diff"],
    }
