"""Optuna storage: an embedded SQLite file by default, any database URL (PostgreSQL) to scale out.

Shared by the search's trials and the ablations' cells. Heartbeats mark a trial whose worker died
as failed after ``grace`` seconds; ``on_stale`` then runs for it (the search re-queues its
parameters, the ablations their cell). Credentials come from the URL or the environment
(``PGPASSWORD``, ``~/.pgpass``) and are only ever shown redacted.

SQLite transactions start with ``BEGIN IMMEDIATE``: Optuna claims a waiting trial by reading its
state and then writing it, which PostgreSQL makes atomic with ``SELECT ... FOR UPDATE`` but SQLite
(whose Python driver opens a transaction only at the write) does not: measured here, four processes
popping 300 enqueued trials from one SQLite file claimed 314, 14 of them twice. Taking the write lock
at the start of every transaction makes the read and the write one step, as on PostgreSQL. The file
is in WAL mode with ``synchronous=NORMAL``: a commit costs 1.6 ms instead of 4.8 ms here (a cell
makes about ten), and a power cut can undo the last commits but never corrupt the file (a cell whose
COMPLETE was undone is found in the cell store and not trained again). WAL, like SQLite itself, needs
a local disk: never put this file on NFS (``--slurm`` refuses it by default).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from study.errors import InputError
from study.paths import STORE_ROOT
from study.tracking import tracking_uri
from study.urls import first_line, redact, with_driver

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def default_storage() -> str:
    return f"sqlite:///{STORE_ROOT / 'optuna.db'}"


def storage_url(given: str | None, configured: str | None) -> str:
    """The storage of the search and the ablations: the command's ``--storage``, else params.yaml's
    ``search.storage``, else ``$OPTUNA_STORAGE``, else the embedded SQLite file."""
    return given or configured or os.environ.get("OPTUNA_STORAGE") or default_storage()


class StorageError(InputError):
    """The storage URL cannot be used (unreachable, bad credentials, unknown driver); no password shown."""


def open_storage(
    url: str,
    heartbeat: int = HEARTBEAT_SECONDS,
    grace: int = GRACE_SECONDS,
    on_stale: StaleCallback | None = None,
) -> RDBStorage:
    """``on_stale`` runs for each trial whose worker stopped beating, once, by the worker that failed it."""
    if grace <= heartbeat:
        raise StorageError(f"the grace period ({grace} s) must be longer than the heartbeat ({heartbeat} s)")
    url = with_driver(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=on_stale,
            )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open the storage {redact(url)}: {first_line(exc, url)}") from None
    if storage.engine.dialect.name == "sqlite":
        _serialize_sqlite(storage)
    return storage


def _serialize_sqlite(storage: RDBStorage) -> None:
    """Every transaction on this SQLite storage takes the write lock at its start (SQLAlchemy's recipe
    for SQLite transactions: the driver's own transaction handling off, ``BEGIN`` emitted here)."""

    @event.listens_for(storage.engine, "connect")
    def _driver_autocommit(connection, record) -> None:
        connection.isolation_level = None
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(storage.engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # connections opened while Optuna set up its tables predate the listeners


class MarkRunKilled:
    """For a trial whose worker died: mark its MLflow run (user attribute ``mlflow_run_id``) KILLED,
    so no run stays RUNNING for ever."""

    def __init__(self, tracking: str | None):
        self.tracking = tracking

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            client = MlflowClient(tracking_uri(self.tracking))
            reason = f"worker {trial.user_attrs.get('worker', '?')} stopped beating; its work goes to another"
            client.log_batch(run_id, tags=[RunTag("trial_state", "FAIL"), RunTag("failure", reason)])
            client.set_terminated(run_id, "KILLED")


def adopt_unbeaten(study: optuna.Study, adopted: set[int]) -> None:
    """Give each running trial one heartbeat when this worker first sees it.

    Optuna fails a trial whose heartbeat went stale, but never one without any heartbeat: a worker
    killed between creating (or claiming) its trial and the first beat (Ctrl-C or a cluster's
    preemption at a trial's start) would leave it running for ever, and the study waiting for it. With
    this beat, such a trial goes stale after the grace period and is failed like any other; a live
    trial beats on.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial._trial_id not in adopted:
            adopted.add(trial._trial_id)
            study._storage.record_heartbeat(trial._trial_id)


@contextmanager
def beating(storage: RDBStorage, trial_id: int, interval: float) -> Iterator[None]:
    """Heartbeats for a trial this worker claimed itself (``study.optimize`` beats for its own trials)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
