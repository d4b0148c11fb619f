"""Finished cells as JSON files named by cell key, claimed by one worker at a time with a file lock.

The lock is ``flock`` on a file beside the result: processes of one host, or hosts sharing a folder
whose locks work, never train a cell twice. Results are written atomically.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from study.artifacts import atomic_write


class CellStore:
    """Cell results as JSON files named by cell key; a cell is claimed with a non-blocking lock."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        return json.loads(path.read_text()) if path.exists() else None

    @contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """Yields True when this process holds the cell (nobody else is training it)."""
        with open(self.root / f"{key}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, key: str, result: dict) -> None:
        atomic_write(self.path(key), lambda tmp: tmp.write_text(json.dumps(result)))
