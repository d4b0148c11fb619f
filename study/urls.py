"""Database URLs as users give them: the driver this project installs, and no password ever shown.

Shared by the Optuna storage (:mod:`study.storage`) and the MLflow tracking store
(:mod:`study.tracking`); credentials come from the URL or the environment (``PGPASSWORD``,
``~/.pgpass``) and leave a process only redacted.
"""

from __future__ import annotations

import importlib.util

from sqlalchemy.engine import make_url


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
