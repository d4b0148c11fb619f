"""Stage checkpoints: model weights, the first-initialisation sign snapshot, and plain metadata.

Written atomically (temporary file in the same directory, then ``os.replace``) so a concurrent
reader never sees half a file; read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, model: nn.Module, init_signs: list[Tensor], meta: dict) -> None:
    atomic_torch_save(
        {"state_dict": model.state_dict(), "init_signs": [s.cpu() for s in init_signs], "meta": meta}, path
    )


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> dict:
    """Load a checkpoint; with ``model``, load its weights into it with strict key matching."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    return checkpoint
