"""Optuna storage: an embedded SQLite file by default, any database URL (PostgreSQL) to scale out.

Heartbeats mark a trial whose worker died as failed after ``grace`` seconds, and the retry callback
re-queues its parameters as a waiting trial that the next free worker runs. Credentials come from
the URL or the environment (``PGPASSWORD``, ``~/.pgpass``) and are only ever shown redacted.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from study.paths import STORE_ROOT

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30


def default_storage() -> str:
    return f"sqlite:///{STORE_ROOT / 'optuna.db'}"


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver this project installs: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3, which is not installed; psycopg2 (``psycopg2-binary``) is.
    A URL that names its driver (``postgresql+psycopg://``, ``+psycopg2``) is left as it is."""
    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The URL without its password: the only form that may be logged, tagged or printed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: show only its scheme
        return url.split(":", 1)[0] + "://***"


class StorageError(ValueError):
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


def first_line(exc: BaseException, url: str = "") -> str:
    """The first line of an error, without SQLAlchemy's links and without the URL's password."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(" (Background on this error")[0]
    password = _password(url)
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except Exception:
        return None
