"""What a search run is: the settings every worker process of one search shares, and where it writes.

Kept apart from the study loop (:mod:`study.search.optimize`), the trial (:mod:`study.search.trial`)
and the summary (:mod:`study.search.summary`) so that each of them imports this and none the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from study.config import PROJECT_ROOT, Params
from study.storage import GRACE_SECONDS, HEARTBEAT_SECONDS

DIRECTIONS = {"acc": "maximize", "ff": "minimize"}
METRIC_NAMES = {"acc": "val_acc", "ff": "ff_ratio"}


@dataclass
class SearchRun:
    """Everything a worker process needs; picklable, so it crosses to spawned processes."""

    params: Params
    study_name: str
    storage: str
    trials: int
    seed: int
    pruner: str
    objectives: list[str]
    parent_run_id: str
    out_dir: Path
    cache_dir: Path
    stage1_candidates: int = 0
    heartbeat: int = HEARTBEAT_SECONDS
    grace: int = GRACE_SECONDS


def checkpoint_path(run: SearchRun, number: int) -> Path:
    return run.out_dir / "checkpoints" / f"trial-{number}.pt"


def default_out(study_name: str) -> Path:
    return PROJECT_ROOT / "reports" / "search" / study_name
