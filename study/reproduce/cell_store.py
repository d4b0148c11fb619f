"""Finished cells' results as JSON named by cell key: a local folder in front of a shared store.

The local folder (``.cache/cells``) answers first; a result another host trained is downloaded from
the artifact of its MLflow cell run (:mod:`study.shared_results`) into it. Which worker trains a
cell is decided by the ablation's Optuna study (:mod:`study.reproduce.cell_study`), not here.
"""

from __future__ import annotations

import json
from pathlib import Path

from study.artifacts import atomic_write
from study.shared_results import SharedResults, travels
from study.tracking import Tracker

CELL_KEY_TAG = "cell_key"


def shared_cells(tracker: Tracker) -> SharedResults | None:
    """Cell results as the artifact ``cell.json`` of the cell runs in the ablations' experiment, with
    a tracking server (None otherwise: see :func:`study.shared_results.travels`)."""
    return SharedResults(tracker, CELL_KEY_TAG, "cell.json") if travels(tracker.uri) else None


class CellStore:
    """Cell results by key in ``root``, with ``shared`` behind it when given."""

    def __init__(self, root: Path, shared: SharedResults | None = None):
        self.root = root
        self.shared = shared
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored result, downloaded first when only the shared store has it; None when nobody does."""
        path = self.path(key)
        if not path.exists() and not (self.shared and self.shared.fetch(key, path)):
            return None
        return json.loads(path.read_text())

    def put(self, key: str, result: dict, run_id: str | None = None) -> None:
        """Store ``result`` here and, when shared, as the artifact of the cell's run ``run_id``."""
        atomic_write(self.path(key), lambda tmp: tmp.write_text(json.dumps(result)))
        if self.shared is not None and run_id is not None:
            self.shared.publish(run_id, key, self.path(key))
