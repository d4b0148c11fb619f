"""``python -m study.export SOURCE``: the trained stage-2 network as a 1-bit file, checked against itself.

Writes one file holding the architecture, every binary layer as packed sign bits with its per-channel
scale folded into the BatchNorm that follows it, and every real parameter (format:
:mod:`study.export_format`); rebuilds the inference network from that file alone
(:func:`study.inference_model.load_exported`) and runs it beside the trained network (mode
``"binary"``, eval) on the test split. Fails (exit 1) when a prediction differs or a logit differs by
more than ``RTOL`` times the largest logit (at least 1), see :mod:`study.export_verify`::

    python -m study.export runs/stage2/model.pt --out /tmp/model.bnn --onnx /tmp/model.onnx
    python -m study.export <mlflow run id> --out model.bnn --metrics export.json

``SOURCE``: a stage-2 checkpoint, a search trial checkpoint or an MLflow run id
(:mod:`study.export_source`). An export file (``*.bnn``) as ``SOURCE`` is checked instead: loaded
alone and evaluated on the split. Wrong input (no such source, a stage-1 network, weights or an export
that do not fit the model or the data, a broken file) is one line and exit status 2::

    python -m study.export runs/export/model.bnn           # accuracy of the 1-bit file alone
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from study.cli import run_main
from study.export_format import ExportError, VerificationFailed
from study.export_verify import failures, size_report, verify
from study.paths import PREPARED_DATA, PROJECT_ROOT

DEFAULT_OUT = PROJECT_ROOT / "runs" / "export" / "model.bnn"


def architecture(model_cfg, data) -> dict[str, Any]:
    """``build_model``'s arguments for ``model_cfg`` (a :class:`study.config.ModelConfig`) on ``data``."""
    return {
        "model": model_cfg.name,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "width": model_cfg.width,
        "act_binarizer": model_cfg.act_binarizer,
        "weight_binarizer": model_cfg.weight_binarizer,
        "options": dict(model_cfg.options),
    }


def trained_network(arch: dict[str, Any], state_dict: dict, source: str) -> nn.Module:
    """The trained network of ``arch`` with ``state_dict`` loaded strictly, in mode ``"binary"``, eval."""
    from bnn import set_mode
    from study.inference_model import build_architecture

    model = build_architecture(arch)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0].rstrip(":")
        raise ExportError(
            f"{source}: does not fit model {arch['model']} at width {arch['width']} ({first})"
        ) from None
    return set_mode(model, "binary").eval()


def export_checkpoint(source: str, params, data, out: Path) -> tuple[nn.Module, dict[str, Any], Any]:
    """Export ``source`` to ``out``; returns the trained network, the payload and the resolved source."""
    from study.export_format import save_export
    from study.export_model import export_payload
    from study.export_source import resolve

    trained = resolve(source, params)
    if trained.data_hash and trained.data_hash != data.fingerprint():
        raise ExportError(
            f"{source} was trained on data {trained.data_hash[:12]}, the prepared data is "
            f"{data.fingerprint()[:12]}: verification would be meaningless"
        )
    arch = architecture(trained.model, data)
    model = trained_network(arch, trained.state_dict, source)
    payload = export_payload(model, arch, data.mean, data.std, source)
    save_export(payload, out)
    return model, payload, trained


def _unverified(path: Path) -> Path:
    """Where a result is written until it has passed verification (then renamed to ``path``)."""
    return path.with_name(f".{path.name}.unverified")


def report(result: dict[str, Any], split: str) -> None:
    print(
        f"{split} split, {result['samples']} images: trained acc {result['trained_acc']:.4f}, "
        f"export acc {result['export_acc']:.4f}, differing predictions {result['prediction_mismatches']}, "
        f"max |logit diff| {result['max_abs_logit_diff']:.3g} (tolerance {result['logit_tolerance']:.3g})"
    )
    if "onnx_acc" in result:
        print(
            f"onnxruntime: acc {result['onnx_acc']:.4f}, differing predictions "
            f"{result['onnx_prediction_mismatches']}, "
            f"max |logit diff| {result['onnx_max_abs_logit_diff']:.3g}"
        )
    print(
        f"binary layers: {result['binary_bytes_export']:,} bytes in the export vs "
        f"{result['binary_bytes_float32']:,} at float32 (1/{1 / result['size_ratio']:.1f}); "
        f"file {result['export_file_bytes']:,} bytes"
    )


def export_verified(
    source: str, params, data, out: Path, onnx: Path | None = None, split: str = "test"
) -> dict[str, Any]:
    """Export ``source`` to ``out`` (and ``onnx``), verify both on ``split``, print the figures and
    return them; raises :class:`VerificationFailed`, writing nothing, when a check fails."""
    from study.inference_model import load_exported

    batch = params.evaluation.batch_size
    staged = {out: _unverified(out)} | ({onnx: _unverified(onnx)} if onnx else {})
    try:
        model, payload, trained = export_checkpoint(source, params, data, staged[out])
        print(f"exported {trained.source} (model: {trained.provenance})")
        exported = load_exported(staged[out])
        result = {**verify(model, exported, getattr(data, split), data, batch), **size_report(payload)}
        result["export_file_bytes"] = staged[out].stat().st_size
        if onnx:
            from study.export_onnx import compare_onnx, export_onnx

            export_onnx(exported, staged[onnx], (data.in_channels, data.image_size, data.image_size))
            result.update(
                compare_onnx(staged[onnx], exported, getattr(data, split), data, batch, params.threads)
            )
            result["onnx_match"] = result["onnx_prediction_mismatches"] == 0 and (
                result["onnx_max_abs_logit_diff"] <= result["logit_tolerance"]
            )
        report(result, split)
        failed = failures(result)
        if failed:  # nothing is written: a failed export leaves no file that looks like a good one
            raise VerificationFailed("; ".join(failed))
        for final, tmp in staged.items():
            tmp.replace(final)
            print(f"wrote {final}")
        return result
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def check_export(path: Path, data, split: str = "test", batch_size: int = 512) -> dict[str, Any]:
    """An export file alone on ``split`` of ``data``: its accuracy (it must fit the data's images)."""
    from study.export_format import read_export
    from study.export_verify import accuracy
    from study.inference_model import inference_model

    payload = read_export(path)
    arch = payload["architecture"]
    stored = (arch["in_channels"], arch["image_size"], arch["num_classes"])
    if stored != (data.in_channels, data.image_size, data.num_classes):
        raise ExportError(
            f"{path} takes {stored[0]}x{stored[1]}x{stored[1]} images in {stored[2]} classes, the data "
            f"has {data.in_channels}x{data.image_size}x{data.image_size} in {data.num_classes}"
        )
    result = {"samples": len(getattr(data, split)), **size_report(payload)}
    result["export_acc"] = accuracy(inference_model(payload), getattr(data, split), data, batch_size)
    print(
        f"{path} ({arch['model']}, width {arch['width']}): {split} acc {result['export_acc']:.4f} on "
        f"{result['samples']} images; binary layers {result['binary_bytes_export']:,} bytes "
        f"(1/{1 / result['size_ratio']:.1f} of float32)"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        help="a stage-2 checkpoint, a search trial checkpoint, or an MLflow run id; an export file (.bnn) "
        "to check it alone",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the 1-bit file (default: %(default)s)")
    parser.add_argument("--onnx", type=Path, help="also write the inference network as ONNX and check it")
    parser.add_argument("--params", type=Path, help="params file (default: the project's params.yaml)")
    parser.add_argument(
        "--data", type=Path, default=PREPARED_DATA, help="prepared data (default: %(default)s)"
    )
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--metrics", type=Path, help="write the verification and size figures as JSON here")
    args = parser.parse_args(argv)

    from bnn import PreparedData
    from study.artifacts import write_json
    from study.config import DEFAULT_PARAMS, load_params
    from study.export_source import check_exists

    check_exists(args.source)
    params = load_params(args.params or DEFAULT_PARAMS)
    torch.set_num_threads(params.threads)
    data = PreparedData.load(args.data)
    if args.source.endswith(".bnn"):
        result = check_export(Path(args.source), data, args.split, params.evaluation.batch_size)
    else:
        result = export_verified(args.source, params, data, args.out, args.onnx, args.split)
    if args.metrics:
        write_json(args.metrics, result)


if __name__ == "__main__":
    run_main(main)
