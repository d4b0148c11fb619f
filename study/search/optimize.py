"""The search's study and its workers: creating or joining the Optuna study, and the worker loop.

Workers coordinate only through the study's storage: a worker runs trials until the study holds
``trials`` finished (complete or pruned) ones, and waits while the rest of the budget is running
elsewhere (a dead worker's trial goes stale after the grace period, is re-queued, and run again).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bnn import NonFiniteLossError, PreparedData
from study.progress import progress
from study.runner import prepare
from study.search import candidates as stage1_candidates
from study.search.run import DIRECTIONS, METRIC_NAMES, SearchRun
from study.search.trial import FINISHED, Objective, SurplusTrial
from study.storage import MarkRunKilled, StorageError, adopt_unbeaten, open_storage
from study.tracking import Tracker
from study.urls import redact
from study.workers import WorkerPool


def make_pruner(name: str, run: SearchRun, shared_stage1: bool) -> optuna.pruners.BasePruner:
    """Pruning on validation accuracy per epoch: of stage 2 alone when trials share stage-1
    candidates (their stage-1 curves are the candidate's, not the trial's), else of both stages."""
    if name == "none" or len(run.objectives) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    total = run.params.stage2.epochs + (0 if shared_stage1 else run.params.stage1.epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=total)
    if name == "halving":  # keeps the best third at epochs 1, 3, 9, ...
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def storage_of(run: SearchRun):
    """The study's storage; a trial whose worker died has its MLflow run marked KILLED and its
    parameters re-queued as a waiting trial (at most 3 times), which the next free worker runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
    mark_killed = MarkRunKilled(run.params.tracking.uri)

    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mark_killed(study, trial)
        retry(study, trial)

    return open_storage(run.storage, run.heartbeat, run.grace, on_stale=stale)


def load_study(run: SearchRun, worker: int = 0) -> optuna.Study:
    study = optuna.load_study(study_name=run.study_name, storage=storage_of(run))
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(run.seed, worker, len(study.trials)))
    study.pruner = make_pruner(run.pruner, run, shared_stage1=stage1_candidates.of_study(study) is not None)
    return study


def sampler_seed(seed: int, worker: int, trials_so_far: int) -> int:
    """TPE's seed for ``worker`` joining a study that holds ``trials_so_far`` trials.

    Optuna does not store a sampler's state, so a sampler seeded alike on every run would replay
    its first draws when a study is resumed (the same parameters as trials 0, 1, ...). Seeding from
    the study's size continues the search instead; a new study with one worker is still reproducible.
    """
    digest = hashlib.sha256(f"{seed}:{worker}:{trials_so_far}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def create_study(run: SearchRun) -> optuna.Study:
    """Create the study once, before any worker starts (concurrent creation races on PostgreSQL).

    A new study draws its stage-1 candidates here and stores them; a resumed one keeps its own.
    """
    study = optuna.create_study(
        study_name=run.study_name,
        storage=storage_of(run),
        directions=[DIRECTIONS[o] for o in run.objectives],
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != [DIRECTIONS[o] for o in run.objectives]:
        raise StorageError(
            f"study {run.study_name!r} exists with other objectives; pick another --study-name"
        )
    if study.metric_names is None:  # optuna-dashboard and trials_dataframe show these names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[o] for o in run.objectives])
    if stage1_candidates.ATTR not in study.user_attrs and not study.get_trials(deepcopy=False):
        study.set_user_attr(
            stage1_candidates.ATTR, stage1_candidates.for_study(run.params, run.stage1_candidates, run.seed)
        )
    return load_study(run)


def counts(study: optuna.Study) -> dict[TrialState, int]:
    tally = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        tally[trial.state] += 1
    return tally


def work(run: SearchRun, worker: int = 0, data: PreparedData | None = None) -> None:
    """A worker: run trials until the study holds ``run.trials`` finished ones.

    When the rest of the budget is running elsewhere, wait: if one of those workers dies, its trial
    goes stale after the grace period, is re-queued, and this worker runs it.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in one line below
    study = load_study(run, worker)
    data = data or prepare(run.params)
    objective = Objective(run, data, Tracker.from_params(run.params), stage1_candidates.of_study(study))
    failures = 0
    adopted: set[int] = set()
    while failures <= run.trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        adopt_unbeaten(study, adopted)
        tally = counts(study)
        finished = sum(tally[s] for s in FINISHED)
        if finished >= run.trials:
            return
        if not tally[TrialState.WAITING] and finished + tally[TrialState.RUNNING] >= run.trials:
            time.sleep(min(0.5, run.heartbeat))  # the rest is running elsewhere; re-queued if a worker dies
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
    """Progress over finished trials with the best value so far (a bar, or lines in a log)."""
    bar = progress(total, "trials", "trial")
    while not stop.wait(1.0):
        tally = counts(study)
        bar.n = min(total, tally[TrialState.COMPLETE] + tally[TrialState.PRUNED])
        if tally[TrialState.COMPLETE] and len(study.directions) == 1:
            bar.set_postfix(best=f"{study.best_value:.4f}", pruned=tally[TrialState.PRUNED], refresh=False)
        bar.refresh()
    bar.close()


def open_search(run: SearchRun) -> tuple[optuna.Study, Tracker]:
    """Create or join the study (once, before any worker starts) and its MLflow parent run."""
    study = create_study(run)
    tracker = Tracker.from_params(run.params)
    key = hashlib.sha256(f"{run.study_name}|{redact(run.storage)}".encode()).hexdigest()[:16]
    run.parent_run_id = tracker.find_or_create_parent(
        f"search-{key}",
        f"search {run.study_name}",
        {
            "bnn.kind": "search",
            "optuna.study": run.study_name,
            "optuna.storage": redact(run.storage),
            "sampler_seed": str(run.seed),
            "pruner": run.pruner,
            "objectives": ",".join(run.objectives),
        },
    )
    return study, tracker


def describe(run: SearchRun, study: optuna.Study, workers: str) -> str:
    """The line a search starts with: where, how many trials, who runs them, how stage 1 is shared."""
    candidates = stage1_candidates.of_study(study)
    shared = (
        f"stage 1 from {len(candidates)} shared candidates" if candidates else "stage 1 sampled per trial"
    )
    return f"study {run.study_name!r} on {redact(run.storage)}: {run.trials} trials, {workers}, {shared}"


def finished_count(study: optuna.Study) -> int:
    tally = counts(study)
    return sum(tally[state] for state in FINISHED)


def run_search(run: SearchRun, pool: WorkerPool) -> None:
    """Create or join the study, run its trials here and in ``pool``'s processes, then summarise it."""
    from study.search.summary import summarize  # pandas and seaborn: needed only at the end

    study, tracker = open_search(run)
    print(describe(run, study, f"{len(pool.processes) + 1} worker(s)"))
    try:
        data = prepare(run.params)
        pool.run(work, run, lambda stop: watch(load_study(run), run.trials, stop), data)
    except KeyboardInterrupt:
        print(
            f"interrupted: {finished_count(study)} of {run.trials} trials "
            "finished; run the same command again to complete the study",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    summarize(study, run, tracker, data)
    pool.join()  # the other workers end meanwhile; one that died is reported after the summary
