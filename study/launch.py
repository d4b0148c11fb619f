"""Workers as a job array through submitit: on a SLURM cluster, or in local processes to try it.

The search's workers coordinate only through their storage, so a worker can run on any host: this
module submits ``launcher.tasks`` of them as one job array with submitit (which writes the sbatch
script, pickles the task and reads its outcome; we write no scheduler), one worker per task. A task
is a :class:`WorkerTask`, a submitit ``Checkpointable``: when SLURM preempts it or its time limit
comes, submitit calls :meth:`WorkerTask.checkpoint` and requeues the same worker, which rejoins the
study (the trial it was running goes stale and another worker retries it).

A wing gives its worker function and run (the search: ``study.search.optimize.work``; the ablations
can use it the same way); the storage and tracking URIs travel inside the run, so every task uses
the same ones. This module loads neither torch nor Optuna: an array task imports them with its work.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit
from submitit.core.utils import DelayedSubmission, pickle_load

from study import cpu_isa
from study.errors import InputError
from study.paths import PROJECT_ROOT, STORE_ROOT
from study.urls import first_line, redact

if TYPE_CHECKING:
    from study.config import LauncherConfig

CLUSTERS = {"slurm": "slurm", "submitit-local": "local"}  # launcher.kind -> submitit's executor
POLL_SECONDS = 2.0  # how often a submitting command looks at its study and the tasks


class LaunchError(InputError):
    """The job array cannot be submitted (no SLURM here, a parameter sbatch refuses): one line, exit 2."""


class WorkerTask(submitit.helpers.Checkpointable):
    """One array task: ``work(run, index)``, the ordinary worker. Requeued as the same worker
    (same ``index``) when preempted or timed out; ``requeues`` counts how often that happened."""

    def __init__(self, work: Callable[[Any, int], None], run: Any, requeues: int = 0):
        self.work = work
        self.run = run
        self.requeues = requeues

    def __call__(self, index: int) -> None:
        if self.requeues:
            print(f"worker {index}: requeued ({self.requeues}x), rejoining the study", file=sys.stderr)
        self.work(self.run, index)

    def checkpoint(self, index: int) -> DelayedSubmission:
        """What submitit resubmits on preemption or timeout: the same worker, nothing to save (its
        finished trials are in the storage; the running one fails by heartbeat and is retried)."""
        return DelayedSubmission(WorkerTask(self.work, self.run, self.requeues + 1), index)


def check_stores(storage: str, tracking: str | None, kind: str, storage_given: bool) -> None:
    """On SLURM the tasks run on other hosts, which share no file but through a network file system,
    where SQLite's locking is unsafe: the default SQLite storage is refused, a given one warned about."""
    if kind != "slurm":
        return
    if storage.startswith("sqlite"):
        if not storage_given:
            raise LaunchError(
                f"launcher slurm: the default storage {redact(storage)} is an SQLite file, which tasks "
                "on other hosts cannot share safely; give a PostgreSQL URL (--storage, search.storage or "
                "$OPTUNA_STORAGE), or that file explicitly with --storage if you accept the risk"
            )
        print(
            f"warning: storage {redact(storage)} is an SQLite file: safe only if every task sees it on "
            "a local disk, never over NFS; PostgreSQL is the storage for a cluster",
            file=sys.stderr,
        )
    from study.tracking import tracking_uri  # MLflow and torch: loaded only on this path

    uri = tracking_uri(tracking)
    if uri.startswith("sqlite"):
        print(
            f"warning: MLflow store {redact(uri)} is an SQLite file that tasks on other hosts write over "
            "the shared file system; a tracking server (MLFLOW_TRACKING_URI=http://...) is safer",
            file=sys.stderr,
        )


def log_folder(launcher: LauncherConfig) -> Path:
    """submitit's folder (sbatch scripts, pickled tasks, logs): ``launcher.folder``, relative to the
    project, else ``<store root>/submitit``; every host of the cluster must see it."""
    from study.config import resolve_path

    return resolve_path(launcher.folder) if launcher.folder else STORE_ROOT / "submitit"


def task_environment(isa: str) -> dict[str, str]:
    """What a task must see, set explicitly rather than inherited (sbatch may not export the
    environment): this code first on the import path (the task unpickles this command's objects), the
    project root, and the CPU code path (set before numpy loads in the task)."""
    code = str(Path(cpu_isa.__file__).resolve().parents[1])  # the folder holding this `study` package
    path = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
    pins = cpu_isa.PINS.get(isa, {}) if cpu_isa.is_x86() else {}
    return {"PYTHONPATH": path, "BNN_STUDY_ROOT": str(PROJECT_ROOT), **pins}


def executor(launcher: LauncherConfig, name: str, threads: int, isa: str) -> submitit.AutoExecutor:
    """submitit's executor for ``launcher`` (kind ``slurm`` or ``submitit-local``); raises
    :class:`LaunchError` in one line where it cannot submit (``slurm`` without SLURM)."""
    cluster = CLUSTERS[launcher.kind]
    folder = log_folder(launcher)
    python = shlex.join(["env", *(f"{k}={v}" for k, v in task_environment(isa).items()), sys.executable])
    try:
        made = submitit.AutoExecutor(folder=folder, cluster=cluster, **{f"{cluster}_python": python})
    except RuntimeError as exc:  # SlurmExecutor without srun: 'Could not detect "srun", ...'
        raise LaunchError(
            f"launcher {launcher.kind}: cannot submit from here ({first_line(exc)}); run on a SLURM "
            "login node, or try it here with --launcher submitit-local"
        ) from None
    settings: dict[str, Any] = {
        "name": name,
        "timeout_min": launcher.time_min,
        "cpus_per_task": launcher.cpus_per_task or threads,
        "mem_gb": launcher.mem_gb,
        "nodes": 1,
        "tasks_per_node": 1,  # one worker per array task
    }
    if launcher.gpus_per_task:
        settings["gpus_per_node"] = launcher.gpus_per_task  # one task per node: the task's GPUs
    if cluster == "slurm":
        settings |= {f"slurm_{key}": value for key, value in _slurm_settings(launcher).items()}
    try:
        made.update_parameters(**settings)
    except (ValueError, NameError, AssertionError) as exc:
        raise LaunchError(f"launcher: submitit refused the settings ({first_line(exc)})") from None
    return made


def _slurm_settings(launcher: LauncherConfig) -> dict[str, Any]:
    settings: dict[str, Any] = {"additional_parameters": dict(launcher.slurm_additional_parameters)}
    if launcher.partition:
        settings["partition"] = launcher.partition
    if launcher.setup:
        settings["setup"] = list(launcher.setup)
    return settings


@dataclass
class Array:
    """A submitted job array: its jobs, one per task, in task order."""

    kind: str
    folder: Path
    jobs: list[submitit.Job]

    def label(self) -> str:
        """``job 1234 (4 tasks)`` on SLURM; the processes' ids with the local executor."""
        if self.kind == "slurm":
            return f"job {self.jobs[0].job_id.split('_')[0]} ({len(self.jobs)} tasks)"
        return f"{len(self.jobs)} local tasks (job ids {', '.join(job.job_id for job in self.jobs)})"

    def follow(self) -> str:
        """How to watch the tasks themselves."""
        if self.kind == "slurm":
            array_id = self.jobs[0].job_id.split("_")[0]
            return f"`squeue -j {array_id}` (cancel: `scancel {array_id}`), logs in {self.folder}"
        return f"their logs in {self.folder}"

    def done(self) -> bool:
        return all(job.done() for job in self.jobs)

    def wait(self, seconds: float) -> None:
        """Until every task has ended, at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.done() and time.monotonic() < deadline:
            time.sleep(1.0)

    def wait_for(self, finished: Callable[[], bool], progress: Callable[[threading.Event], None]) -> None:
        """Until ``finished()`` or every task has ended, looking every ``POLL_SECONDS``; meanwhile
        ``progress(stop)`` shows the work in a thread, and ends when ``stop`` is set."""
        stop = threading.Event()
        watcher = threading.Thread(target=progress, args=(stop,), daemon=True)
        watcher.start()
        try:
            while not finished() and not self.done():
                time.sleep(POLL_SECONDS)
        finally:
            stop.set()
            watcher.join()

    def cancel(self) -> None:
        for job in self.jobs:
            with contextlib.suppress(Exception):  # ended already, or the scheduler is gone
                job.cancel(check=False)

    def interrupt(self) -> str:
        """Ctrl-C while waiting: local tasks stop with the command (as local workers do), SLURM's go on;
        says which."""
        if self.kind == "slurm":
            return f"the tasks go on: {self.follow()}"
        self.cancel()
        return "the tasks stopped"

    def failures(self) -> list[str]:
        """One line per ended task that raised or ended without a result (killed, cancelled)."""
        lines = []
        for index, job in enumerate(self.jobs):
            if not job.done():
                continue
            outcome = _outcome(job)
            where = f"task {index} (job {job.job_id})"
            if outcome is None:
                lines.append(f"{where} ended without a result ({job.state}); its log: {job.paths.stderr}")
            elif outcome[0] == "error":
                lines.append(f"{where} failed: {_exception_line(outcome[1])}; its log: {job.paths.stderr}")
        return lines


def submit(made: submitit.AutoExecutor, kind: str, work: Callable[[Any, int], None], run: Any,
           tasks: int) -> Array:  # fmt: skip
    """``tasks`` workers ``work(run, i)`` as one job array (``map_array``): one worker per task."""
    folder = Path(made.folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # the pickled tasks hold the database URLs
    os.chmod(folder, 0o700)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # sbatch's own error is in the exception
            jobs = made.map_array(WorkerTask(work, run), range(tasks))
    except (OSError, RuntimeError) as exc:  # no sbatch, sbatch refused (FailedJobError), pickle too big
        raise LaunchError(f"launcher {kind}: submitting {tasks} tasks failed: {first_line(exc)}") from None
    return Array(kind, folder, jobs)


def _outcome(job: submitit.Job) -> tuple[str, Any] | None:
    """``("success", result)`` or ``("error", traceback)`` as the task wrote it; None without one."""
    try:
        return pickle_load(job.paths.result_pickle)
    except Exception:  # no result file (killed, cancelled, never started), or a partial one
        return None


def _exception_line(trace: Any) -> str:
    """The line naming the exception that ended the task: the first unindented line after the last
    frame of the traceback (an error's message may go on over lines, SQLAlchemy's ending in a link)."""
    lines = str(trace).strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    after = lines[frames[-1] + 1 :] if frames else lines
    named = [line.strip() for line in after if line.strip() and not line.startswith(" ")]
    return named[0] if named else "unknown error"
