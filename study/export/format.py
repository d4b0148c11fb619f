"""The 1-bit export file: sign-bit packing, the payload's layout, its content hash, reading and writing.

One file, written with ``torch.save`` and read with ``torch.load(weights_only=True)``: a plain dict
of tensors, strings, ints, floats and lists, nothing pickled beyond that::

    format            "bnn-study-1bit"
    format_version    1
    source            what was exported (a checkpoint path or an MLflow run id)
    architecture      {"model", "num_classes", "in_channels", "image_size", "width",
                       "act_binarizer", "weight_binarizer", "options"}: build_model's arguments
    input             {"mean", "std"} float tensors (C,): the model takes (uint8 / 255 - mean) / std
    binary_layers     {module name: {"shape": [out, in, (kh, kw)], "bits": uint8 tensor,
                       "folded_into": BatchNorm name or "", "scale": float tensor (out,) when not folded}}
    folded_bns        {BatchNorm name: {"scale": (C,), "shift": (C,)}}: the BN and the binary layer's
                       per-channel alpha as one affine map, y * scale + shift, of the +-1 layer's output y
    tensors           {state-dict key: float32 tensor}: every other parameter and buffer
                       (BN ``num_batches_tracked`` left out: it does nothing in eval mode)
    content_sha256    sha256 of the architecture, input statistics and every tensor above

Bits: the weight tensor flattened in C order (``weight.reshape(-1)``); bit ``i % 8`` (least significant
first) of byte ``i // 8`` is element ``i``; 1 means +1, 0 means -1, exactly ``forward_signs()``
(+1 at zero). The last byte is padded with zero bits.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bnn.checkpoint import atomic_torch_save
from study.errors import InputError, RunFailed

FORMAT = "bnn-study-1bit"
FORMAT_VERSION = 1


class ExportError(InputError):
    """What cannot be exported or loaded (unknown source, not a fully binary network, a broken
    export file); one line, exit status 2."""


class VerificationFailed(RunFailed):
    """The exported network does not reproduce the trained one (exit status 1)."""


def pack_signs(signs: Tensor) -> Tensor:
    """Bool tensor (True = +1) -> uint8 bytes, 8 signs per byte, least significant bit first."""
    flat = signs.detach().reshape(-1).cpu().numpy()
    return torch.from_numpy(np.packbits(flat, bitorder="little"))


def unpack_signs(bits: Tensor, shape: tuple[int, ...] | list[int]) -> Tensor:
    """The inverse of :func:`pack_signs`: a bool tensor of ``shape``."""
    count = math.prod(shape)
    if bits.dtype != torch.uint8 or bits.dim() != 1 or bits.numel() != math.ceil(count / 8):
        raise ExportError(
            f"packed signs of shape {list(shape)} need {math.ceil(count / 8)} uint8 bytes, "
            f"got {bits.dtype} {list(bits.shape)}"
        )
    unpacked = np.unpackbits(bits.numpy(), count=count, bitorder="little")
    return torch.from_numpy(unpacked).bool().reshape(tuple(shape))


def _hash_tensor(digest: Any, name: str, tensor: Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def content_hash(payload: dict) -> str:
    """sha256 over the architecture, the input statistics and every tensor, in sorted-name order
    (the source, format and the hash itself are not part of it)."""
    digest = hashlib.sha256(json.dumps(payload["architecture"], sort_keys=True).encode())
    for key in sorted(payload["input"]):
        _hash_tensor(digest, f"input.{key}", payload["input"][key])
    for name in sorted(payload["binary_layers"]):
        entry = payload["binary_layers"][name]
        digest.update(f"{name}:{list(entry['shape'])}:{entry['folded_into']};".encode())
        _hash_tensor(digest, f"{name}.bits", entry["bits"])
        if "scale" in entry:
            _hash_tensor(digest, f"{name}.scale", entry["scale"])
    for name in sorted(payload["folded_bns"]):
        for key in ("scale", "shift"):
            _hash_tensor(digest, f"{name}.{key}", payload["folded_bns"][name][key])
    for name in sorted(payload["tensors"]):
        _hash_tensor(digest, name, payload["tensors"][name])
    return digest.hexdigest()


def save_export(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` (without its hash) atomically, with its format, version and content hash."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    full["content_sha256"] = content_hash(full)
    return atomic_torch_save(full, path)


def read_export(path: str | Path) -> dict:
    """The payload of an export file, checked for format, version, completeness and content hash."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such export file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, a disallowed pickled object
        raise ExportError(f"{path}: not a readable export file ({first_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ExportError(f"{path}: not a {FORMAT} export file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: export format version {payload.get('format_version')!r}, this code reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        ok = content_hash(payload) == payload["content_sha256"]
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ExportError(f"{path}: incomplete export file ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise ExportError(f"{path}: content hash mismatch (the file is corrupted or was altered)")
    return payload


def first_line(exc: BaseException) -> str:
    """``Type: first sentence of the message`` (torch's zip errors run to several sentences)."""
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".:")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
