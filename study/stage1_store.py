"""The content-addressed stage-1 store: a stage-1 result is trained once per key, then reused.

The key hashes everything that determines a stage-1 result: the data set's fingerprint, the
augmentation, the model config, the stage-1 config, the seed, distillation, and the source of the
training code (``bnn/`` and ``study/runner.py``), so a code change never reuses a stale result.
A trial or ablation cell whose key is stored skips stage-1 training (its logged history is
replayed to the observers), which makes grids over stage-2 settings cheap.

Concurrency: a key is claimed with an exclusive ``flock`` while it trains, so concurrent workers on
one host wait for the first instead of training it twice; files are written atomically, so no
reader ever sees half a checkpoint. (Across hosts, point ``--cache-dir`` at a shared file system
with working ``flock``, or accept that each host may train a key once.)
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from bnn import PreparedData
from bnn.checkpoint import atomic_torch_save
from bnn.train import Observer
from study.config import Params
from study.runner import run_stage1

STAGE1_SECTIONS = ("seed", "threads", "cpu_isa", "model", "stage1", "distill")
TRAINING_CODE = ("bnn", "study/runner.py")


@functools.cache
def code_fingerprint() -> str:
    """A hash of the training code's source: a stored result is reused only by the code that made it."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for entry in TRAINING_CODE:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def stage1_key(params: Params, data: PreparedData) -> str:
    parts = [params.training_key(*STAGE1_SECTIONS), data.fingerprint(), params.data.augment.model_dump_json(),
             code_fingerprint()]  # fmt: skip
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


@dataclass
class Stage1Result:
    """What stage 2 and the trackers need from stage 1, trained now or loaded from the store."""

    state_dict: dict[str, torch.Tensor]
    init_signs: list[torch.Tensor]
    history: list[dict]
    final: dict[str, float]
    teacher_state_dict: dict[str, torch.Tensor] | None
    cached: bool


class Stage1Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    @contextmanager
    def claimed(self, key: str) -> Iterator[None]:
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def run(self, params: Params, data: PreparedData, observers: tuple[Observer, ...] = ()) -> Stage1Result:
        """Stage 1 of ``params``: loaded if its key is stored, else trained (and stored)."""
        key = stage1_key(params, data)
        with self.claimed(key):
            if not self.path(key).exists():
                run = run_stage1(params, data, observers=observers)
                payload = {
                    "state_dict": run.model.state_dict(),
                    "init_signs": [s.cpu() for s in run.result.init_signs],
                    "history": run.result.history,
                    "final": run.result.final,
                    "teacher_state_dict": run.teacher.state_dict() if run.teacher is not None else None,
                }
                atomic_torch_save(payload, self.path(key))
                return Stage1Result(**payload, cached=False)
        payload = torch.load(self.path(key), map_location="cpu", weights_only=True)
        for record in payload["history"]:
            for observer in observers:
                observer(record)
        return Stage1Result(**payload, cached=True)
