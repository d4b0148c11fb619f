"""The export and its check: a trained network to a 1-bit file, rebuilt from that file and compared.

:func:`export_verified` writes one file holding the architecture, every binary layer as packed sign
bits with its per-channel scale folded into the BatchNorm that follows it, and every real parameter
(format: :mod:`study.export.format`); rebuilds the inference network from that file alone
(:func:`study.export.inference.load_exported`) and runs it beside the trained network (mode
``"binary"``, eval). It fails, writing nothing, when a prediction differs or a logit differs by more
than ``RTOL`` times the largest logit (at least 1), see :mod:`study.export.verify`. The ONNX file
(:mod:`study.export.onnx`), made from the rebuilt network, takes pixels / 255 and is checked on them.
:func:`check_export` evaluates an export file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from study.export.format import ExportError, VerificationFailed
from study.export.verify import failures, size_report, verify
from study.paths import PROJECT_ROOT


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
    from study.export.inference import build_architecture

    model = build_architecture(arch)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0].rstrip(":")
        raise ExportError(
            f"{source}: does not fit model {arch['model']} at width {arch['width']} ({first})"
        ) from None
    return set_mode(model, "binary").eval()


def export_checkpoint(source: str, params, data, out: Path) -> tuple[nn.Module, Any]:
    """Export ``source`` to ``out``; returns the trained network and the resolved source."""
    from study.export.format import save_export
    from study.export.payload import export_payload
    from study.export.source import resolve

    trained = resolve(source, params)
    if trained.data_hash and trained.data_hash != data.fingerprint():
        raise ExportError(
            f"{source} was trained on data {trained.data_hash[:12]}, the prepared data is "
            f"{data.fingerprint()[:12]}: verification would be meaningless"
        )
    arch = architecture(trained.model, data)
    model = trained_network(arch, trained.state_dict, source)
    payload = export_payload(model, arch, data.mean, data.std, portable(source))
    save_export(payload, out)
    return model, trained


def portable(source: str) -> str:
    """How the file names its source: a checkpoint in the project by its path from the project root,
    so that the same export has the same bytes wherever the project is checked out; a checkpoint
    elsewhere, or an MLflow run id, as given."""
    path = Path(source)
    if not path.is_file():
        return source
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return source


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
        f"{result['binary_bytes_float32']:,} at float32 (1/{1 / result['binary_layers_size_ratio']:.1f}); "
        f"file: {result['export_file_bytes']:,} bytes vs {result['float32_inference_bytes']:,} for the "
        f"float32 network (1/{1 / result['file_size_ratio']:.1f})"
    )


def export_verified(
    source: str, params, data, out: Path, onnx: Path | None = None, split: str = "test"
) -> dict[str, Any]:
    """Export ``source`` to ``out`` (and ``onnx``), verify both on ``split``, print the figures and
    return them; raises :class:`VerificationFailed`, writing nothing, when a check fails."""
    from study.export.format import read_export
    from study.export.inference import inference_model

    batch = params.evaluation.batch_size
    staged = {out: _unverified(out)} | ({onnx: _unverified(onnx)} if onnx else {})
    try:
        model, trained = export_checkpoint(source, params, data, staged[out])
        print(f"exported {trained.source} (model: {trained.provenance})")
        payload = read_export(staged[out])  # from here on, only what the file holds
        exported = inference_model(payload)
        result = verify(model, exported, getattr(data, split), data, batch)
        result.update(size_report(payload, staged[out].stat().st_size))
        if onnx:
            result.update(_onnx_checked(staged[onnx], exported, payload, data, split, params.threads, batch))
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


def _onnx_checked(path: Path, exported: nn.Module, payload, data, split: str, threads: int, batch: int):
    """Write the ONNX file of the rebuilt network and compare it, fed pixels / 255, with that network."""
    from study.export.onnx import compare_onnx, export_onnx

    export_onnx(exported, path, payload, data.classes, data.name)
    return compare_onnx(path, exported, getattr(data, split), data, batch, threads)


def check_export(path: Path, data, split: str = "test", batch_size: int = 512) -> dict[str, Any]:
    """An export file alone on ``split`` of ``data``: its accuracy (it must fit the data's images)."""
    from study.export.format import read_export
    from study.export.inference import inference_model
    from study.export.verify import accuracy

    payload = read_export(path)
    arch = payload["architecture"]
    stored = (arch["in_channels"], arch["image_size"], arch["num_classes"])
    if stored != (data.in_channels, data.image_size, data.num_classes):
        raise ExportError(
            f"{path} takes {stored[0]}x{stored[1]}x{stored[1]} images in {stored[2]} classes, the data "
            f"has {data.in_channels}x{data.image_size}x{data.image_size} in {data.num_classes}"
        )
    result = {"samples": len(getattr(data, split)), **size_report(payload, path.stat().st_size)}
    result["export_acc"] = accuracy(inference_model(payload), getattr(data, split), data, batch_size)
    print(
        f"{path} ({arch['model']}, width {arch['width']}): {split} acc {result['export_acc']:.4f} on "
        f"{result['samples']} images; binary layers {result['binary_bytes_export']:,} bytes "
        f"(1/{1 / result['binary_layers_size_ratio']:.1f} of float32), file {result['export_file_bytes']:,} "
        f"bytes (1/{1 / result['file_size_ratio']:.1f} of the float32 network)"
    )
    return result
