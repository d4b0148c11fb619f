"""Optuna storage: an embedded SQLite file by default, any database URL (PostgreSQL) to scale out.

Heartbeats mark a trial whose worker died as failed after ``grace`` seconds, and the retry callback
re-queues its parameters as a waiting trial that the next free worker runs. Credentials come from
the URL or the environment (``PGPASSWORD``, ``~/.pgpass``) and are only ever shown redacted.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial
from sqlalchemy.exc import SQLAlchemyError

from study.errors import InputError
from study.paths import STORE_ROOT
from study.urls import first_line, redact, with_driver

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30


def default_storage() -> str:
    return f"sqlite:///{STORE_ROOT / 'optuna.db'}"


class StorageError(InputError):
    """The storage URL cannot be used (unreachable, bad credentials, unknown driver); no password shown."""


def open_storage(
    url: str,
    heartbeat: int = HEARTBEAT_SECONDS,
    grace: int = GRACE_SECONDS,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> RDBStorage:
    """``on_stale`` runs for each trial whose worker stopped beating, before it is re-queued."""
    if grace <= heartbeat:
        raise StorageError(f"the grace period ({grace} s) must be longer than the heartbeat ({heartbeat} s)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    url = with_driver(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=stale,
            )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open the storage {redact(url)}: {first_line(exc, url)}") from None
