"""The search with its workers as a job array (``--slurm``, ``--launcher submitit-local``).

This command creates the study and its MLflow parent run once (workers creating a study together
race on PostgreSQL), submits ``launcher.tasks`` array tasks through :mod:`study.launch`, each the
ordinary worker loop (:func:`study.search.optimize.work`) against the same storage and tracking URI,
then shows progress over finished trials as a local search does and writes the summary once the
study holds its N finished trials. ``--no-wait`` says how to follow the tasks instead; the same
command on a complete study then only writes the summary.
"""

from __future__ import annotations

import sys

import optuna

from study import launch
from study.config import LauncherConfig
from study.errors import RunFailed
from study.runner import prepare
from study.search.optimize import describe, finished_count, load_study, open_search, watch, work
from study.search.run import SearchRun
from study.tracking import tracking_uri
from study.urls import redact

SETTLE_SECONDS = 60.0  # after the last trial, how long it waits for the tasks to end before reporting them


def launch_search(run: SearchRun, launcher: LauncherConfig, wait: bool, storage_given: bool) -> None:
    """Submit the search's workers as a job array; unless not ``wait``, wait and summarise the study."""
    executor = launch.executor(launcher, f"bnn-search-{run.study_name}", run.params.threads,
                               run.params.cpu_isa)  # fmt: skip
    launch.check_stores(run.storage, run.params.tracking.uri, launcher.kind, storage_given)
    # Every task uses this process's tracking URI, not its own environment's.
    tracking = run.params.tracking.model_copy(update={"uri": tracking_uri(run.params.tracking.uri)})
    run.params = run.params.model_copy(update={"tracking": tracking})
    study, tracker = open_search(run)
    if finished_count(study) >= run.trials:
        print(describe(run, study, "complete: nothing to submit"))
        summarise(study, run, tracker)
        return
    array = launch.submit(executor, launcher.kind, work, run, launcher.tasks)
    print(describe(run, study, f"{launcher.tasks} worker task(s): {array.label()}"), flush=True)
    if not wait:
        print(follow(run, array))
        return
    try:
        wait_for_trials(run, study, array)
    except KeyboardInterrupt:
        interrupted(run, study, array)
    complete = finished_count(study) >= run.trials
    if complete:
        summarise(study, run, tracker)
        array.wait(SETTLE_SECONDS)  # the tasks end once they see the study complete
    report(run, study, array, complete, launcher.tasks)


def summarise(study: optuna.Study, run: SearchRun, tracker) -> None:
    from study.search.summary import summarize  # pandas and seaborn: needed only at the end

    summarize(study, run, tracker, prepare(run.params))


def wait_for_trials(run: SearchRun, study: optuna.Study, array: launch.Array) -> None:
    """Progress over finished trials (a bar, or lines in a log) until the study holds its ``run.trials``
    finished trials, or every task has ended without them (failed, cancelled)."""
    shown = load_study(run)
    array.wait_for(lambda: finished_count(study) >= run.trials, lambda stop: watch(shown, run.trials, stop))


def report(run: SearchRun, study: optuna.Study, array: launch.Array, complete: bool, tasks: int) -> None:
    """A line per failed task, then :class:`RunFailed` when any failed or the study is incomplete."""
    failures = array.failures()
    for line in failures:
        print(line, file=sys.stderr)
    if not complete:
        raise RunFailed(
            f"the tasks ended with {finished_count(study)} of {run.trials} trials finished; run the same "
            "command again to complete the study"
        )
    if failures:
        raise RunFailed(f"{len(failures)} of {tasks} tasks failed; the study is complete and summarised")


def interrupted(run: SearchRun, study: optuna.Study, array: launch.Array) -> None:
    """Ctrl-C: local tasks are stopped with this command (as local workers are); SLURM's go on."""
    tasks = array.interrupt()
    then = "the same command writes the summary once the study is complete" if array.kind == "slurm" else \
        "run the same command again to complete the study"  # fmt: skip
    done = f"{finished_count(study)} of {run.trials} trials finished"
    print(f"interrupted: {done}; {tasks}; {then}", file=sys.stderr)
    raise SystemExit(130) from None


def follow(run: SearchRun, array: launch.Array) -> str:
    """``--no-wait``: one line on how to follow the tasks, the trials and the runs, and get the summary."""
    uri = run.params.tracking.uri or ""
    runs = f"the MLflow UI at {uri}" if uri.startswith(("http://", "https://")) else \
        f"`mlflow ui --backend-store-uri {redact(uri)}`"  # fmt: skip
    return (
        f"follow the tasks with {array.follow()}, the trials with `optuna-dashboard {redact(run.storage)}` "
        f"and the runs with {runs}; once the tasks are done, the same command without --no-wait writes "
        "the summary (it submits nothing for a complete study)"
    )
