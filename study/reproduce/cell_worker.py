"""An ablation's worker: claims cells from the ablation's Optuna study and trains them, on any host.

The same loop runs as a local worker process of ``python -m study.reproduce ablate``, on another host
running the same command against the same storage and MLflow server, or as a task of a job array
(:mod:`study.launch`). It returns when every cell of the ablation is done, whoever trained it.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from bnn import NonFiniteLossError, PreparedData
from study.config import Params
from study.reproduce import cell_study
from study.reproduce.cell_store import CELL_KEY_TAG, CellStore, shared_cells
from study.reproduce.cell_study import Standing
from study.reproduce.cells import Cell
from study.reproduce.training import run_cell
from study.stage1_store import Stage1Cache, shared_stage1
from study.storage import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    MarkRunKilled,
    adopt_unbeaten,
    beating,
    open_storage,
)
from study.tracking import RunLogger, Tracker

POLL_SECONDS = 1.0  # how often an idle worker looks for a cell again
EPOCH_METRICS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "saturation",
    "saturation_train",
    "ff_ratio",
    "c2i_stage",
    "c2i_init",
    "dead_beyond_clip",
    "dead_small_grad",
    "dead_relative_update",
)


@dataclass
class AblationRun:
    """Everything a worker needs; picklable, so it crosses to spawned processes and array tasks.
    ``attrs``: each key's user attributes in the study; ``lost``: keys done in the study whose result
    no store holds any more (trained again)."""

    name: str
    params: Params
    base: Params
    parent_run_id: str
    storage: str
    study_name: str
    store_dir: Path
    cache_dir: Path
    data_path: Path
    workers: int = 1
    cells: list[Cell] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    attrs: dict[str, dict] = field(default_factory=dict)
    lost: frozenset[str] = frozenset()
    heartbeat: int = HEARTBEAT_SECONDS
    grace: int = GRACE_SECONDS


def storage_of(run: AblationRun) -> RDBStorage:
    """The ablation's storage; a trial whose worker died has its MLflow run marked KILLED."""
    return open_storage(
        run.storage, run.heartbeat, run.grace, on_stale=MarkRunKilled(run.params.tracking.uri)
    )


def load_study(run: AblationRun) -> optuna.Study:
    return optuna.load_study(study_name=run.study_name, storage=storage_of(run))


def cell_name(cell: Cell) -> str:
    return " ".join(f"{k.split('.')[0] if '.' in k else k}={v}" for k, v in cell.labels)


def child_tags(cell: Cell, key: str) -> dict[str, str]:
    return {
        "bnn.kind": "ablation-cell",
        CELL_KEY_TAG: key,
        "ablation": cell.ablation,
        "cell_kind": cell.kind,
        **{f"cell.{k}": str(v) for k, v in cell.labels},
    }


def final_metrics(result: dict) -> dict[str, float]:
    return {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_epoch(mlrun: RunLogger, epoch: dict) -> None:
    """Per-epoch series as ``stage1.<metric>`` / ``stage2.<metric>`` (as in the search): unprefixed, their
    last step would hide the cell's final metrics (logged at step 0) in MLflow, e.g. test saturation."""
    metrics = {k: epoch[k] for k in EPOCH_METRICS if k in epoch}
    mlrun.log_metrics(metrics, step=epoch["step"], prefix=f"stage{epoch['stage']}.")


def rotated(keys: list[str], worker: int, workers: int) -> list[str]:
    """Worker ``worker``'s order of the keys: workers start far apart, so two rarely want one stage 1."""
    start = (worker % max(workers, 1)) * len(keys) // max(workers, 1)
    return keys[start:] + keys[:start]


def work(run: AblationRun, worker: int = 0) -> None:
    """Claim and train cells until every cell of the ablation is done (here or anywhere else)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = PreparedData.load(run.data_path)
    tracker = Tracker.for_ablations(run.params)
    store = CellStore(run.store_dir, shared_cells(tracker))
    stage1_store = Stage1Cache(run.cache_dir, shared_stage1(run.params))
    study = load_study(run)
    cells = dict(zip(run.keys, run.cells, strict=True))
    order = rotated(run.keys, worker, run.workers)
    adopted: set[int] = set()
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        adopt_unbeaten(study, adopted)
        standing = Standing.of(study.get_trials(deepcopy=False), run.keys, run.lost)
        if standing.complete:
            return
        trial = cell_study.claim(study, standing, order)
        if trial is None:
            key = standing.next_missing(order, run.attrs)
            if key is None:
                time.sleep(POLL_SECONDS)  # the rest is running elsewhere, or waits for a stage 1 in training
            else:
                cell_study.enqueue(study, [key], run.attrs)  # claimed next round, by whoever comes first
            continue
        adopted.add(trial._trial_id)
        with beating(study._storage, trial._trial_id, run.heartbeat):
            other = cell_study.superseded_by(study, trial, run.lost)
            if other is not None:
                study._storage.set_trial_user_attr(trial._trial_id, cell_study.DUPLICATE, other.number)
                study.tell(trial.number, state=TrialState.FAIL)
                continue
            key = trial.user_attrs[cell_study.KEY]
            try:
                train_trial(run, study, trial, cells[key], key, data, tracker, store, stage1_store)
            except BaseException:  # Ctrl-C, a bug: failed now, not after the grace period; retried
                with contextlib.suppress(Exception):  # already told, or the database is gone
                    study.tell(trial.number, state=TrialState.FAIL)
                raise


def train_trial(
    run: AblationRun,
    study: optuna.Study,
    trial: FrozenTrial,
    cell: Cell,
    key: str,
    data: PreparedData,
    tracker: Tracker,
    store: CellStore,
    stage1_store: Stage1Cache,
) -> None:
    """One claimed cell: its result reused when a store holds it, else trained and stored; its MLflow
    child run either way (tagged ``reused``); the trial COMPLETE with the test accuracy, or FAILed with
    its recorded ``failure`` (a non-finite loss)."""

    def set_attr(name: str, value) -> None:
        study._storage.set_trial_user_attr(trial._trial_id, name, value)

    set_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    result = store.get(key)
    reused = result is not None
    tags = {**child_tags(cell, key), **({"reused": "true"} if reused else {})}
    with tracker.child(run.parent_run_id, cell_name(cell), params=dict(cell.overrides), tags=tags) as mlrun:
        set_attr("mlflow_run_id", mlrun.run_id)
        if reused:
            for epoch in result.get("history", []):
                log_epoch(mlrun, epoch)
        else:
            stage1_store.on_ready = lambda _: set_attr(cell_study.STAGE1_READY, True)
            try:
                result = run_cell(
                    cell, run.base, data, stage1_store, observer=lambda epoch: log_epoch(mlrun, epoch)
                )
                cached = result.pop("stage1_cached")
                if cached is not None:
                    mlrun.set_tags({"stage1_cached": str(cached)})
            except NonFiniteLossError as exc:  # recorded, not fatal: the ablation goes on
                result = {"failure": str(exc)}
                mlrun.set_tags({"failure": str(exc)})
        mlrun.log_metrics(final_metrics(result))
        mlrun.flush()
        if not reused:
            store.put(key, result, mlrun.run_id)
    accuracy = result.get("test_acc", math.nan)
    if "failure" in result or not math.isfinite(accuracy):
        set_attr(cell_study.FAILURE, result.get("failure", "no finite test accuracy"))
        study.tell(trial.number, state=TrialState.FAIL)
    else:
        study.tell(trial.number, accuracy)
