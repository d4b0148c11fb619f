"""The content-addressed stage-1 store: a stage-1 result is trained once per key, then reused.

The key hashes everything that determines a stage-1 result: the data set's fingerprint, the
augmentation, the model config, the stage-1 config, the seed, distillation, and the source of the
training code (``bnn/`` and ``study/runner.py``), so a code change never reuses a stale result.
A trial or ablation cell whose key is stored skips stage-1 training (its logged history is
replayed to the observers), which makes grids over stage-2 settings cheap.

The store is a local folder (``.cache/stage1``) with, optionally, a shared store behind it: an MLflow
experiment whose runs hold each trained key's checkpoint (:mod:`study.shared_results`), so a stage 1
trained on one host is downloaded by the others, which share no folder. On one host, a key is
claimed with an exclusive ``flock`` on the local folder while it trains, so concurrent workers wait
for the first instead of training it twice; across hosts, the ablations' workers avoid a cell whose
stage 1 another host is training (:mod:`study.reproduce.cell_study`). Files are written atomically,
so no reader ever sees half a checkpoint.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from bnn import PreparedData
from bnn.checkpoint import atomic_torch_save
from bnn.train import Observer
from study.config import Params
from study.runner import run_stage1
from study.shared_results import SharedResults, travels
from study.tracking import Tracker, source_tags, tracking_uri

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


def shared_stage1(params: Params) -> SharedResults | None:
    """The shared stage-1 store, with a tracking server: runs of the experiment
    ``<tracking.experiment>-stage1``, one per key (None otherwise: see :func:`travels`)."""
    if not travels(tracking_uri(params.tracking.uri)):
        return None
    return SharedResults(Tracker(params.tracking.uri, f"{params.tracking.experiment}-stage1"), "stage1_key",
                         "stage1.pt")  # fmt: skip


class Stage1Cache:
    """Stage-1 results by key in ``root``, with ``shared`` behind it when given. ``on_ready(key)`` runs
    once a key's result is stored or found (the ablations tell the other hosts it is there)."""

    def __init__(self, root: str | Path, shared: SharedResults | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared = shared
        self.on_ready: Callable[[str], None] | None = None

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
            if not self.path(key).exists() and not (self.shared and self.shared.fetch(key, self.path(key))):
                run = run_stage1(params, data, observers=observers)
                payload = {
                    "state_dict": run.model.state_dict(),
                    "init_signs": [s.cpu() for s in run.result.init_signs],
                    "history": run.result.history,
                    "final": run.result.final,
                    "teacher_state_dict": run.teacher.state_dict() if run.teacher is not None else None,
                }
                atomic_torch_save(payload, self.path(key))
                if self.shared is not None:
                    tags = {"bnn.kind": "stage1", **source_tags()}
                    self.shared.store(key, self.path(key), f"stage 1 {key[:8]}", tags)
                self._ready(key)
                return Stage1Result(**payload, cached=False)
        self._ready(key)
        payload = torch.load(self.path(key), map_location="cpu", weights_only=True)
        for record in payload["history"]:
            for observer in observers:
                observer(record)
        return Stage1Result(**payload, cached=True)

    def _ready(self, key: str) -> None:
        if self.on_ready is not None:
            self.on_ready(key)
