"""The PostgreSQL server of the tests: the throwaway one that ``make test`` (``.ci/with-postgres``)
starts and names in ``$BNN_TEST_POSTGRES``. Each test gets databases of its own (the ``databases``
fixture, registered for every test by ``conftest.py``)."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

SERVER = os.environ.get("BNN_TEST_POSTGRES")
postgres = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not SERVER, reason="no PostgreSQL server: run through `make test` (.ci/with-postgres)"
    ),
]


@pytest.fixture
def databases(tmp_path, monkeypatch):
    """A factory of fresh PostgreSQL databases on the test server, dropped afterwards.

    An MLflow store on one keeps its artifacts under the store root (:func:`study.tracking.artifact_root`),
    which in this process is the checkout: it is the test's folder instead, as ``BNN_STUDY_ROOT`` makes it
    for the commands these tests start."""
    import study.tracking  # MLflow: loaded by the tests that use a database only

    monkeypatch.setattr(study.tracking, "STORE_ROOT", tmp_path)
    created = []
    admin = sqlalchemy.create_engine(SERVER, isolation_level="AUTOCOMMIT")

    def new() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        created.append(name)
        return make_url(SERVER).set(database=name).render_as_string(hide_password=False)

    yield new
    with admin.connect() as connection:
        for name in created:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
