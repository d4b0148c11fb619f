"""Atomic file writes and stage checkpoints.

Every result file is written to a temporary name in its folder and renamed over the old one only
when complete, so a concurrent reader never sees half a file and a failed run leaves the previous
result in place. Checkpoints hold model weights, the first-initialisation sign snapshot and plain
metadata, and are read with ``torch.load(..., weights_only=True)``. Saved bytes depend only on the
saved object (not on the file's name or the time), so DVC sees the same md5 when a stage re-runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: _torch_save(obj, tmp))


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a file object: given a path, torch names the zip records after the file
    (here a random temporary name), while a file object always gets the fixed prefix ``archive/``."""
    with open(path, "wb") as file:
        torch.save(obj, file)


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
