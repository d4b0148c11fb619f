"""The search's workers as a job array through submitit (params.yaml ``launcher``, ``--slurm``).

The end-to-end tests use submitit's local executor (``--launcher submitit-local``): real array tasks,
each a process running the ordinary worker, through the same code path as on SLURM. SLURM itself is
faked where the test needs only its commands (an ``sbatch`` that accepts the script and says its id).
Every submitit folder is under the test's ``tmp_path``.
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import traceback
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ruamel.yaml import YAML
from test_search import PROJECT, TINY_SPACE, finished_numbers, mlflow_runs, search_args, write_params

from study import launch
from study.cli import run_main
from study.config import DEFAULT_PARAMS, LauncherConfig, ParamsError, read_yaml, validate_params
from study.search.__main__ import main

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def with_launcher(folder: Path, **launcher) -> Path:
    """``folder/params.yaml`` (written by test_search.write_params) with its ``launcher`` section updated;
    submitit's folder is always the test's."""
    path = folder / "params.yaml"
    yaml = YAML()
    raw = yaml.load(path.read_text())
    raw["launcher"].update({"folder": str(folder / "submitit"), **launcher})
    with open(path, "w") as stream:
        yaml.dump(raw, stream)
    return path


def fake_slurm(folder: Path) -> Path:
    """A folder with ``srun`` and an ``sbatch`` that keeps the script it is given and answers like SLURM."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_two_array_tasks_finish_the_search_together(tmp_path):
    """On the default SQLite storage, as a user tries it on one machine; on PostgreSQL and an MLflow
    server, the ablations' array tasks are tested (tests/study/reproduce/test_hosts.py)."""
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", None
    write_params(tmp_path, TINY_SPACE, tracking=tracking, epochs=10)  # trials long enough for both tasks
    with_launcher(tmp_path, tasks=2)
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "BNN_STUDY_ROOT": str(tmp_path), "CI": "true"}
    args = search_args(tmp_path, 4, "--pruner", "none", "--launcher", "submitit-local", storage=storage)
    done = subprocess.run([sys.executable, "-m", "study.search", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "2 worker task(s): 2 local tasks" in done.stdout

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # each trial once, none failed
    assert finished_numbers(tmp_path, storage) == [0, 1, 2, 3]
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in study.trials}
    assert len(pids) == 2, pids  # both array tasks ran trials, neither was this command
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# Search `tiny`")
    _, parents, children = mlflow_runs(tmp_path, tracking)
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    results = sorted((tmp_path / "submitit").glob("*_result.pkl"))
    assert len(results) == 2  # the two tasks, in the test's folder, each ended with a result

    # The same command on the complete study submits nothing and writes the summary again.
    (tmp_path / "out" / "summary.md").unlink()
    main(args)
    assert sorted((tmp_path / "submitit").glob("*_result.pkl")) == results
    assert (tmp_path / "out" / "summary.md").exists()


def test_a_task_that_raised_is_one_line(tmp_path):
    launcher = LauncherConfig(kind="submitit-local", folder=str(tmp_path / "submitit"))
    made = launch.executor(launcher, "raises", 1, "avx2")
    array = launch.submit(made, "submitit-local", operator.truediv, 1, tasks=1)  # task 0 runs 1 / 0
    array.wait(120)
    assert array.done()
    (line,) = array.failures()
    job = array.jobs[0].job_id
    assert line.startswith(f"task 0 (job {job}) failed: ZeroDivisionError: division by zero; its log: ")
    assert line.endswith(str(tmp_path / "submitit" / f"{job}_0_log.err")) and "\n" not in line


def test_a_failure_line_names_the_exception_not_its_last_line():
    """SQLAlchemy's errors end in a link, and an error may be raised while handling another."""
    try:
        try:
            raise KeyError("row")
        except KeyError as exc:
            raise RuntimeError("UNIQUE constraint failed: datasets.name\n[SQL: INSERT]\n(Background on "
                               "this error at: https://sqlalche.me/e/21/gkpj)") from exc  # fmt: skip
    except RuntimeError:
        trace = traceback.format_exc()
    assert launch._exception_line(trace) == "RuntimeError: UNIQUE constraint failed: datasets.name"
    assert launch._exception_line("") == "unknown error"


def test_checkpoint_resubmits_the_same_worker():
    task = launch.WorkerTask(operator.add, 40)
    resubmitted = task.checkpoint(2)
    again = resubmitted.function
    assert isinstance(again, launch.WorkerTask) and again is not task
    assert (again.work, again.run, again.requeues) == (operator.add, 40, 1)
    assert resubmitted.args == (2,) and resubmitted.kwargs == {}
    assert again.checkpoint(2).function.requeues == 2
    assert resubmitted.result() is None  # the worker ran: add(40, 2); a task returns nothing


@pytest.mark.parametrize(
    ("launcher", "key"),
    [
        ({"taskz": 2}, "launcher.taskz: unknown key"),
        ({"tasks": "two"}, "launcher.tasks"),
        ({"tasks": 0}, "launcher.tasks"),
        ({"kind": "pbs"}, "launcher.kind"),
        ({"mem_gb": True}, "launcher.mem_gb"),
        ({"slurm_additional_parameters": ["qos"]}, "launcher.slurm_additional_parameters"),
    ],
)
def test_a_wrong_launcher_key_or_type_is_one_line(launcher, key):
    raw = read_yaml(DEFAULT_PARAMS)
    raw["launcher"].update(launcher)
    with pytest.raises(ParamsError) as err:
        validate_params(raw)
    message = str(err.value)
    assert message.startswith(f"params.yaml: {key}") and "\n" not in message, message


def test_the_repository_launcher_is_todays_local_search():
    assert validate_params(read_yaml(DEFAULT_PARAMS)).launcher.kind == "local"


def test_slurm_without_slurm_is_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    write_params(tmp_path, TINY_SPACE)
    with_launcher(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # neither srun nor sbatch
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(search_args(tmp_path, 2, "--slurm")))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith('error: launcher slurm: cannot submit from here (Could not detect "srun"')
    assert not (tmp_path / "optuna.db").exists()  # refused before the study was created


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slurm"], "error: launcher slurm: the default storage sqlite:///"),
        (["--tasks", "2"], "error: --tasks and --no-wait are for a job array"),
        (["--no-wait"], "error: --tasks and --no-wait are for a job array"),
        (["--slurm", "--workers", "2"], "error: --workers counts local processes"),
    ],
)
def test_refused_combinations_are_one_line(tmp_path, monkeypatch, capsys, extra, message):
    write_params(tmp_path, TINY_SPACE)
    with_launcher(tmp_path)
    monkeypatch.setenv("PATH", f"{fake_slurm(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    args = search_args(tmp_path, 2, *extra)
    if "--slurm" in extra and "--workers" not in extra:
        del args[args.index("--storage") : args.index("--storage") + 2]  # the default SQLite file
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(args))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and err.startswith(message), err
    assert not (tmp_path / "submitted.sh").exists()


def test_no_wait_submits_one_array_and_says_how_to_follow_it(tmp_path, monkeypatch, capsys):
    write_params(tmp_path, TINY_SPACE, tracking="http://mlflow-host:5000")
    extra = {"account": "bnn", "qos": "normal"}
    with_launcher(tmp_path, tasks=3, partition="gpu", gpus_per_task=1, time_min=90,
                  setup=["module load cuda"], slurm_additional_parameters=extra)  # fmt: skip
    monkeypatch.setenv("PATH", f"{fake_slurm(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("study.search.optimize.Tracker", FakeTracker)  # no MLflow server here
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    main(search_args(tmp_path, 5, "--slurm", "--no-wait", storage=storage))

    out, err = capsys.readouterr()
    assert "3 worker task(s): job 4242 (3 tasks)" in out
    follow = out.strip().splitlines()[-1]
    assert follow.startswith("follow the tasks with `squeue -j 4242`")
    assert f"`optuna-dashboard {storage}`" in follow and "the MLflow UI at http://mlflow-host:5000" in follow
    assert "the same command without --no-wait writes the summary" in follow
    assert err.startswith("warning: storage sqlite:///")  # given explicitly: warned, not refused
    script = (tmp_path / "submitted.sh").read_text()
    for flag in ("--array=0-2%3", "--partition=gpu", "--gpus-per-node=1", "--time=90", "--account=bnn",
                 "--qos=normal", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=8GB"):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script, flag
    assert "module load cuda\n" in script
    assert f"env PYTHONPATH={PROJECT}" in script and f"BNN_STUDY_ROOT={PROJECT}" in script
    assert oct((tmp_path / "submitit").stat().st_mode & 0o777) == "0o700"  # the pickles hold the URLs
    assert len(list((tmp_path / "submitit").glob("4242_*_submitted.pkl"))) == 3
    assert optuna.load_study(study_name="tiny", storage=storage).trials == []  # created once, here


class FakeTracker:
    """Stands in for the MLflow parent run when the tracking server of the test's params is not there."""

    @classmethod
    def from_params(cls, params):
        return cls()

    def find_or_create_parent(self, *args, **kwargs) -> str:
        return "parent"
