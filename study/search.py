"""``python -m study.search``: an Optuna search over each stage's optimizer, learning rate and weight decay.

Every trial is a full two-stage run through the same code as the DVC pipeline (stage 1 from the
stage-1 store when its key was trained before), scored by stage-2 **validation** accuracy; the best
trial alone is then evaluated on the test split. Commands:

    python -m study.search --trials 50                 # embedded storage (optuna.db), one worker
    python -m study.search --trials 50 --workers 2     # two local worker processes
    python -m study.search --trials 200 --storage postgresql+psycopg2://user@db/bnn   # on every host

``--trials N`` means the study ends with N finished (complete or pruned) trials: running the same
command again after a crash or Ctrl-C completes the missing ones; it neither restarts nor overshoots.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tqdm.auto import tqdm

from bnn import NonFiniteLossError, PreparedData
from bnn.checkpoint import atomic_torch_save
from study.cache import Stage1Cache
from study.cli import run_main
from study.config import PROJECT_ROOT, Params, load_params
from study.runner import load_teacher, prepare, run_stage2
from study.search_report import summarize
from study.space import suggest
from study.storage import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    StorageError,
    default_storage,
    open_storage,
    redact,
)
from study.tracking import Tracker, tracking_uri
from study.workers import run_workers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PENDING = (TrialState.RUNNING, TrialState.WAITING)
DIRECTIONS = {"acc": "maximize", "ff": "minimize"}


class SurplusTrial(Exception):
    """A trial started after the budget was already taken by earlier trials (a race between workers)."""


@dataclass
class SearchRun:
    """Everything a worker process needs; picklable, so it crosses to spawned processes."""

    params: Params
    study_name: str
    storage: str
    trials: int
    seed: int
    pruner: str
    objectives: list[str]
    parent_run_id: str
    out_dir: Path
    cache_dir: Path
    heartbeat: int = HEARTBEAT_SECONDS
    grace: int = GRACE_SECONDS


def make_pruner(name: str, run: SearchRun) -> optuna.pruners.BasePruner:
    if name == "none" or len(run.objectives) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    total = run.params.stage1.epochs + run.params.stage2.epochs
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=total)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


class MarkRunKilled:
    """For a trial whose worker died: mark its MLflow run KILLED, so no run stays RUNNING forever."""

    def __init__(self, tracking: str | None):
        self.tracking = tracking

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            client = MlflowClient(tracking_uri(self.tracking))
            reason = f"worker {trial.user_attrs.get('worker', '?')} stopped beating; trial re-queued"
            client.log_batch(run_id, tags=[RunTag("trial_state", "FAIL"), RunTag("failure", reason)])
            client.set_terminated(run_id, "KILLED")


def storage_of(run: SearchRun):
    return open_storage(
        run.storage, run.heartbeat, run.grace, on_stale=MarkRunKilled(run.params.tracking.uri)
    )


def load_study(run: SearchRun, worker: int = 0) -> optuna.Study:
    return optuna.load_study(
        study_name=run.study_name,
        storage=storage_of(run),
        sampler=optuna.samplers.TPESampler(seed=run.seed + worker),
        pruner=make_pruner(run.pruner, run),
    )


def create_study(run: SearchRun) -> optuna.Study:
    """Create the study once, before any worker starts (concurrent creation races on PostgreSQL)."""
    optuna.create_study(
        study_name=run.study_name,
        storage=storage_of(run),
        directions=[DIRECTIONS[o] for o in run.objectives],
        load_if_exists=True,
    )
    study = load_study(run)
    if [d.name.lower() for d in study.directions] != [DIRECTIONS[o] for o in run.objectives]:
        raise StorageError(
            f"study {run.study_name!r} exists with other objectives; pick another --study-name"
        )
    return study


def counts(study: optuna.Study) -> dict[TrialState, int]:
    tally = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        tally[trial.state] += 1
    return tally


class Objective:
    """One trial: stage 1 (stored or trained), stage 2 from it, tracked as an MLflow child run."""

    def __init__(self, run: SearchRun, data: PreparedData, tracker: Tracker):
        self.run = run
        self.data = data
        self.tracker = tracker
        self.cache = Stage1Cache(run.cache_dir)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        study = trial.study
        earlier = [
            t for t in study.get_trials(deepcopy=False, states=FINISHED + PENDING) if t.number < trial.number
        ]
        if len(earlier) >= self.run.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {self.run.trials}")
        search = self.run.params.search
        overrides = {**search.fixed, **suggest(trial, search.space)}
        params = self.run.params.with_overrides(overrides)
        tags = {
            "optuna.study": self.run.study_name,
            "optuna.trial": str(trial.number),
            "data_hash": self.data.fingerprint(),
        }
        pruned: optuna.TrialPruned | None = None
        with self.tracker.child(
            self.run.parent_run_id, f"trial-{trial.number}", params=overrides, tags=tags
        ) as mlrun:
            trial.set_user_attr("mlflow_run_id", mlrun.run_id)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            try:
                stage1 = self.cache.run(
                    params, self.data, observers=(self._observer(trial, mlrun, "stage1", 0),)
                )
                trial.set_user_attr("stage1_cached", stage1.cached)
                mlrun.set_tags({"stage1_cached": stage1.cached})
                teacher = load_teacher(params, self.data, stage1.teacher_state_dict)
                observer = self._observer(trial, mlrun, "stage2", params.stage1.epochs)
                stage2 = run_stage2(
                    params,
                    self.data,
                    stage1.state_dict,
                    stage1.init_signs,
                    teacher=teacher,
                    observers=(observer,),
                )
            except optuna.TrialPruned as exc:
                mlrun.set_tags({"trial_state": "PRUNED"})
                pruned = exc
            except NonFiniteLossError as exc:
                trial.set_user_attr("fail_reason", str(exc))
                mlrun.set_tags({"trial_state": "FAIL"})
                raise
            else:
                final = stage2.result.final
                metrics = {
                    "val_acc": final["val_acc"],
                    "ff_ratio": final["ff_ratio"],
                    "c2i_ratio": final["c2i_stage"],
                    "c2i_init": final["c2i_init"],
                    "changed_from_init": final["changed_from_init"],
                    "saturation": final["saturation"],
                    "stage1_val_acc": stage1.final["val_acc"],
                    "stage1_ff_ratio": stage1.final["ff_ratio"],
                    "stage1_c2i_init": stage1.final["c2i_init"],
                }
                mlrun.log_metrics(metrics)
                mlrun.set_tags({"trial_state": "COMPLETE"})
                for key, value in metrics.items():
                    trial.set_user_attr(key, value)
                atomic_torch_save(stage2.model.state_dict(), checkpoint_path(self.run, trial.number))
        if pruned is not None:
            raise pruned
        if self.run.objectives == ["acc"]:
            return metrics["val_acc"]
        return metrics["val_acc"], metrics["ff_ratio"]

    def _observer(self, trial: optuna.Trial, mlrun, stage: str, offset: int):
        """Log each epoch under ``stage.<metric>``; report val_acc at the global epoch for pruning."""
        prunable = len(self.run.objectives) == 1

        def observe(record: dict) -> None:
            mlrun.log_metrics(record, step=record["epoch"], prefix=f"{stage}.")
            if prunable:
                step = offset + record["epoch"]
                trial.report(record["val_acc"], step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at_epoch", step)
                    raise optuna.TrialPruned(f"pruned at epoch {step} ({stage})")

        return observe


def checkpoint_path(run: SearchRun, number: int) -> Path:
    return run.out_dir / "checkpoints" / f"trial-{number}.pt"


def work(run: SearchRun, worker: int = 0) -> None:
    """A worker: run trials until the study holds ``run.trials`` finished ones.

    When the rest of the budget is running elsewhere, wait: if one of those workers dies, its trial
    goes stale after the grace period, is re-queued, and this worker runs it.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in one line below
    study = load_study(run, worker)
    data = prepare(run.params)
    objective = Objective(run, data, Tracker.from_params(run.params))
    failures = 0
    while failures <= run.trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        tally = counts(study)
        finished = sum(tally[s] for s in FINISHED)
        if finished >= run.trials:
            return
        if not tally[TrialState.WAITING] and finished + tally[TrialState.RUNNING] >= run.trials:
            time.sleep(min(2.0, run.heartbeat))  # the rest is running elsewhere; re-queued if a worker dies
            continue
        study.optimize(
            objective,
            n_trials=1,
            catch=(NonFiniteLossError, SurplusTrial),
            gc_after_trial=False,
            callbacks=[report_failure],
        )
        last = study.get_trials(deepcopy=False)[-1]
        failures += last.state == TrialState.FAIL and not last.user_attrs.get("surplus", False)


def report_failure(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
        reason = trial.user_attrs.get("fail_reason", "interrupted")
        print(f"trial {trial.number} failed: {reason}", file=sys.stderr)


def watch(study: optuna.Study, total: int, stop: threading.Event) -> None:
    """A progress bar over finished trials with the best value so far (terminals only)."""
    bar = tqdm(total=total, desc="trials", unit="trial", disable=None)
    while not stop.wait(1.0):
        tally = counts(study)
        bar.n = min(total, tally[TrialState.COMPLETE] + tally[TrialState.PRUNED])
        if tally[TrialState.COMPLETE] and len(study.directions) == 1:
            bar.set_postfix(best=f"{study.best_value:.4f}", pruned=tally[TrialState.PRUNED], refresh=False)
        bar.refresh()
    bar.close()


def parse_args(argv: list[str] | None, params: Params) -> argparse.Namespace:
    search = params.search
    parser = argparse.ArgumentParser(
        prog="python -m study.search",
        description="Optuna search over each stage's optimizer, learning rate and weight decay; every trial "
        "is a full two-stage run, scored by stage-2 validation accuracy. Defaults come from the "
        "search section of params.yaml.",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=search.trials,
        help="the study ends with this many finished (complete or pruned) trials (default %(default)s)",
    )
    parser.add_argument(
        "--study-name", default=search.study_name, help="Optuna study name (default %(default)s)"
    )
    parser.add_argument(
        "--storage",
        default=search.storage or os.environ.get("OPTUNA_STORAGE"),
        help="database URL shared by all workers, e.g. postgresql+psycopg2://user@host/db "
        "(default: $OPTUNA_STORAGE, else sqlite:///<project>/optuna.db); put the password "
        "in ~/.pgpass or the URL, it is never logged",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=search.workers,
        help="local worker processes, each with params.yaml's `threads` torch threads (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=search.seed,
        help="TPE sampler seed; worker i uses seed+i (default %(default)s)",
    )
    parser.add_argument(
        "--pruner",
        choices=("hyperband", "median", "none"),
        default=search.pruner,
        help="prunes on validation accuracy per epoch across both stages (default %(default)s)",
    )
    parser.add_argument(
        "--objectives",
        default=",".join(search.objectives),
        choices=("acc", "acc,ff"),
        help="acc: maximise stage-2 val accuracy; acc,ff: also minimise the FF ratio "
        "(two objectives, no pruning) (default %(default)s)",
    )
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml", help="params file")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=HEARTBEAT_SECONDS,
        help="seconds between a running trial's heartbeats (default %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=int,
        default=GRACE_SECONDS,
        help="seconds without heartbeat after which a trial is failed and re-queued (default %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default reports/search/<study-name>)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=PROJECT_ROOT / ".cache" / "stage1",
        help="the stage-1 store (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if min(args.trials, args.workers, args.heartbeat) < 1 or args.grace <= args.heartbeat:
        parser.error("--trials, --workers and --heartbeat must be at least 1, and --grace above --heartbeat")
    return args


def main(argv: list[str] | None = None) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    params = load_params(_params_path(argv))
    args = parse_args(argv, params)
    storage = args.storage or default_storage()
    out_dir = args.out or PROJECT_ROOT / "reports" / "search" / args.study_name
    run = SearchRun(
        params=params,
        study_name=args.study_name,
        storage=storage,
        trials=args.trials,
        seed=args.seed,
        pruner=args.pruner,
        objectives=args.objectives.split(","),
        parent_run_id="",
        out_dir=out_dir,
        cache_dir=args.cache_dir,
        heartbeat=args.heartbeat,
        grace=args.grace,
    )
    study = create_study(run)
    tracker = Tracker.from_params(params)
    key = hashlib.sha256(f"{args.study_name}|{redact(storage)}".encode()).hexdigest()[:16]
    run.parent_run_id = tracker.find_or_create_parent(
        f"search-{key}",
        f"search {args.study_name}",
        {
            "bnn.kind": "search",
            "optuna.study": args.study_name,
            "optuna.storage": redact(storage),
            "sampler_seed": str(args.seed),
            "pruner": run.pruner,
            "objectives": args.objectives,
        },
    )
    print(f"study {args.study_name!r} on {redact(storage)}: {args.trials} trials, {args.workers} worker(s)")
    try:
        run_workers(work, run, args.workers, lambda stop: watch(load_study(run), run.trials, stop))
    except KeyboardInterrupt:
        tally = counts(study)
        print(
            f"interrupted: {tally[TrialState.COMPLETE] + tally[TrialState.PRUNED]} of {args.trials} trials "
            "finished; run the same command again to complete the study",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    summarize(study, run, tracker, checkpoint_path)


def _params_path(argv: list[str] | None) -> Path:
    """``--params`` is needed before the parser (its defaults come from the params file)."""
    args = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(args):
        if arg == "--params" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--params="):
            return Path(arg.split("=", 1)[1])
    return PROJECT_ROOT / "params.yaml"


if __name__ == "__main__":
    run_main(main)
