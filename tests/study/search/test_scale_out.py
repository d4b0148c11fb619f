"""Scale-out and faults: PostgreSQL workers, killed workers, NaN trials, bad URLs, no leaked credentials.

The PostgreSQL tests use the throwaway server that ``make test`` (``.ci/with-postgres``) starts and
names in ``$BNN_TEST_POSTGRES``; each test gets databases of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from postgres_server import SERVER, postgres
from sqlalchemy.engine import make_url
from test_search import PROJECT, TINY_SPACE, finished_numbers, mlflow_runs, search_args, write_params

import study.search.trial
import study.tracking
from bnn import NonFiniteLossError
from study.cli import run_main
from study.search.__main__ import main
from study.storage import adopt_unbeaten, open_storage
from study.urls import with_driver

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=postgres)])
def test_four_workers_on_postgres_finish_n_trials_once_each(tmp_path, databases, backend):
    storage, tracking = databases(), databases()
    write_params(tmp_path, TINY_SPACE, tracking=tracking, epochs=1)
    main(search_args(tmp_path, 40, "--workers", "4", "--pruner", "none", storage=storage))

    numbers = finished_numbers(tmp_path, storage)
    assert numbers == sorted(set(numbers)) and len(numbers) == 40
    _, parents, children = mlflow_runs(tmp_path, tracking)
    assert len(parents) == 1
    complete = [c for c in children if c.data.tags.get("trial_state") == "COMPLETE"]
    assert sorted(int(c.data.tags["optuna.trial"]) for c in complete) == numbers
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert not [c for c in children if c.info.status == "RUNNING"]


def test_killed_worker_trial_is_failed_retried_and_its_run_closed(tmp_path):
    """On SQLite; a worker killed on PostgreSQL (with an MLflow server) is tested with the ablations'
    cells, which go through the same storage and heartbeats (tests/study/reproduce/test_hosts.py)."""
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", None
    write_params(tmp_path, TINY_SPACE, tracking=tracking, epochs=10)  # trials long enough to be caught
    env = {**os.environ, "BNN_STUDY_ROOT": str(tmp_path), "CI": "true", "PYTHONPATH": str(PROJECT)}
    args = search_args(tmp_path, 6, "--workers", "2", "--pruner", "none", "--heartbeat", "1", "--grace", "4",
                       storage=storage)  # fmt: skip
    search = subprocess.Popen([sys.executable, "-m", "study.search", *args], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline and search.poll() is None:
        victim = _running_trial_of_another_process(storage, search.pid)
        time.sleep(0.1)
    assert victim is not None, "no trial ran in a worker process"
    number, pid = victim
    os.kill(pid, signal.SIGKILL)
    _, stderr = search.communicate(timeout=300)
    assert search.returncode == 1, stderr  # the study is complete, but a local worker died: say so
    assert stderr.strip().splitlines()[-1] == f"error: worker 1 (pid {pid}) was killed by signal SIGKILL"
    assert "Traceback" not in stderr

    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = {t.number: t for t in study.trials}
    assert trials[number].state == TrialState.FAIL
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == number]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[number].params
    assert len(finished_numbers(tmp_path, storage)) == 6
    client, _, children = mlflow_runs(tmp_path, tracking)
    killed = [c for c in children if c.data.tags["optuna.trial"] == str(number)]
    assert [c.info.status for c in killed] == ["KILLED"]
    assert not [c for c in children if c.info.status == "RUNNING"]


def _running_trial_of_another_process(storage: str, main_pid: int) -> tuple[int, int] | None:
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # the study or its tables do not exist yet
        return None
    for trial in running:
        worker = trial.user_attrs.get("worker", "")
        pid = int(worker.rsplit(":", 1)[1]) if ":" in worker else None
        if pid and pid != main_pid and "mlflow_run_id" in trial.user_attrs:
            return trial.number, pid
    return None


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_a_trial_whose_worker_died_before_its_first_heartbeat_goes_stale_once_adopted(tmp_path):
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)  # as the search's storage has
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat=1, grace=2, on_stale=retry)
    study = optuna.create_study(study_name="tiny", storage=storage)
    orphan = study.ask()  # running, never beating: its worker died between creating it and the first beat
    adopt_unbeaten(study, adopted := set())
    adopt_unbeaten(study, adopted)  # once per trial: a dead one is not kept alive by it
    unadopted = study.ask()
    time.sleep(3.5)  # the grace period and a second: SQLite's clock counts whole seconds
    optuna.storages.fail_stale_trials(study)
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert study.trials[unadopted.number].state == TrialState.RUNNING  # Optuna alone waits for ever
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state == TrialState.WAITING  # re-queued for the next free worker


def test_nan_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    real_stage2 = study.search.trial.run_stage2
    calls = []

    def stage2_with_one_nan(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise NonFiniteLossError("loss became nan at epoch 1, step 3")
        return real_stage2(*args, **kwargs)

    monkeypatch.setattr(study.search.trial, "run_stage2", stage2_with_one_nan)
    write_params(tmp_path, TINY_SPACE, epochs=1)
    main(search_args(tmp_path, 3, "--pruner", "none"))

    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "loss became nan at epoch 1, step 3"
    assert len(finished_numbers(tmp_path)) == 3
    assert f"trial {failed[0].number} failed: loss became nan" in capsys.readouterr().err
    _, _, children = mlflow_runs(tmp_path)
    run = next(c for c in children if c.data.tags["optuna.trial"] == str(failed[0].number))
    assert run.info.status == "FAILED" and "nan" in run.data.tags["failure"]


BAD_URLS = {
    "unreachable": "postgresql+psycopg2://bnn:planted-pw@127.0.0.1:1/bnn",
    "unknown-driver": "nosuchdb://somewhere/db",
}


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_bad_storage_url_is_one_line_and_exit_status_2(tmp_path, capsys, case):
    write_params(tmp_path, TINY_SPACE)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(search_args(tmp_path, 1, storage=BAD_URLS[case])))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.startswith("error: cannot open the storage") and "\n" not in err
    assert "planted-pw" not in err


def test_a_grace_period_within_the_heartbeat_is_one_line_and_exit_status_2(tmp_path, capsys):
    write_params(tmp_path, TINY_SPACE)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(search_args(tmp_path, 1, "--heartbeat", "20", "--grace", "15")))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: the grace period (15 s) must be longer than the heartbeat (20 s)"
    )


@pytest.mark.postgres
@pytest.mark.skipif(not SERVER, reason="no PostgreSQL server")
def test_bad_credentials_are_one_line_without_the_password(tmp_path, capsys, databases):
    url = make_url(databases()).set(password="wrong-planted-pw").render_as_string(hide_password=False)
    write_params(tmp_path, TINY_SPACE)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(search_args(tmp_path, 1, storage=url)))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert "password authentication failed" in err and "wrong-planted-pw" not in err


def test_unreachable_mlflow_store_is_one_line_and_exit_status_2(tmp_path, capsys):
    write_params(tmp_path, TINY_SPACE, tracking="postgresql+psycopg2://bnn:planted-pw@127.0.0.1:1/mlflow")
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(search_args(tmp_path, 1)))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert (
        err.startswith("error: cannot open the MLflow store") and "\n" not in err and "planted-pw" not in err
    )


@pytest.mark.postgres
@pytest.mark.skipif(not SERVER, reason="no PostgreSQL server")
def test_no_credential_reaches_mlflow_logs_tables_or_reports(tmp_path, capfd, databases):
    password = make_url(SERVER).password
    storage, tracking = databases(), databases()
    write_params(tmp_path, TINY_SPACE, tracking=tracking, epochs=1)
    main(search_args(tmp_path, 3, "--pruner", "none", storage=storage))

    output = capfd.readouterr()
    assert password not in output.out + output.err
    client, parents, children = mlflow_runs(tmp_path, tracking)
    for run in parents + children:
        assert password not in repr(run.data.params) + repr(run.data.tags)
    for file in (tmp_path / "out").rglob("*"):
        if file.is_file() and file.suffix in (".csv", ".yaml", ".txt", ".md"):
            assert password not in file.read_text(), file
    assert parents[0].data.tags["optuna.storage"].count("***") == 1


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=postgres)])
def test_a_bare_postgresql_url_works_for_optuna_and_mlflow(tmp_path, databases, backend):
    def bare(url: str) -> str:
        return "postgresql://" + url.split("://", 1)[1]

    storage, tracking = bare(databases()), bare(databases())
    write_params(tmp_path, TINY_SPACE, tracking=tracking, epochs=1)
    main(search_args(tmp_path, 1, "--pruner", "none", storage=storage))
    assert len(finished_numbers(tmp_path, with_driver(storage))) == 1
    _, parents, children = mlflow_runs(tmp_path, with_driver(tracking))
    assert len(parents) == 1 and len(children) == 1


def test_bare_postgresql_urls_get_the_installed_driver_and_named_drivers_stay():
    assert with_driver("postgresql://bnn@db/x") == "postgresql+psycopg2://bnn@db/x"
    assert with_driver("postgresql+psycopg://bnn@db/x") == "postgresql+psycopg://bnn@db/x"
    assert with_driver("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
