"""Optuna storage: an embedded SQLite file by default, any database URL (PostgreSQL) to scale out.

Heartbeats mark a trial whose worker died as failed after ``grace`` seconds, and the retry callback
re-queues its parameters as a waiting trial that the next free worker runs.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from study.config import PROJECT_ROOT

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30


def default_storage() -> str:
    return f"sqlite:///{PROJECT_ROOT / 'optuna.db'}"


def redact(url: str) -> str:
    """The URL without its password: the only form that may be logged, tagged or printed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: show only its scheme
        return url.split(":", 1)[0] + "://***"


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS) -> RDBStorage:
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat,
            grace_period=grace,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
