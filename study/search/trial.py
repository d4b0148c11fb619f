"""One search trial: stage 1 (a shared candidate, from the store when trained before), then stage 2.

Tracked as an MLflow child run of the search's parent run; what it logs is written in batches
(every ``LOG_EVERY_SECONDS`` and when the trial ends), and a complete trial's network is an artifact.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import optuna

from bnn import NonFiniteLossError, PreparedData
from bnn.checkpoint import atomic_torch_save
from study.runner import load_teacher, run_stage2
from study.search import candidates as stage1_candidates
from study.search.run import SearchRun, checkpoint_path
from study.search.sampling import suggest
from study.stage1_store import Stage1Cache
from study.tracking import CHECKPOINT_ARTIFACTS, Tracker

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
PENDING = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
LOG_EVERY_SECONDS = 5.0  # a trial's MLflow metrics are written in batches at most this often


class SurplusTrial(Exception):
    """A trial started after the budget was already taken by earlier trials (a race between workers)."""


def trial_settings(trial: Any, run: SearchRun, candidates: dict[str, dict] | None) -> dict[str, Any]:
    """The dotted stage settings of ``trial``: ``search.fixed``, its stage-1 candidate (or freely
    sampled stage 1 when the study has no candidates), then its sampled stage-2 settings."""
    space = run.params.search.space
    if candidates is None:
        return {**run.params.search.fixed, **suggest(trial, space)}
    stage1 = candidates[trial.suggest_categorical(stage1_candidates.PARAM, list(candidates))]
    stage2 = suggest(trial, stage1_candidates.stage_space(space, "stage2"), given=stage1)
    return {**run.params.search.fixed, **stage1, **stage2}


class Objective:
    """One trial: stage 1 (stored or trained), stage 2 from it, tracked as an MLflow child run."""

    def __init__(self, run: SearchRun, data: PreparedData, tracker: Tracker, candidates: dict | None = None):
        self.run = run
        self.data = data
        self.tracker = tracker
        self.candidates = candidates
        self.cache = Stage1Cache(run.cache_dir)
        self.data_hash = data.fingerprint()  # a hash of every image: once per worker, not per trial

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self._check_budget(trial)
        overrides = trial_settings(trial, self.run, self.candidates)
        params = self.run.params.with_overrides(overrides)
        tags = {
            "optuna.study": self.run.study_name,
            "optuna.trial": str(trial.number),
            "data_hash": self.data_hash,
        }
        pruned: optuna.TrialPruned | None = None
        with self.tracker.child(
            self.run.parent_run_id, f"trial-{trial.number}", overrides, tags, batch_seconds=LOG_EVERY_SECONDS
        ) as mlrun:
            trial.set_user_attr("mlflow_run_id", mlrun.run_id)
            mlrun.log_dataset(self.data, self.data_hash)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            try:
                stage1, stage2 = self._train(trial, mlrun, params)
            except optuna.TrialPruned as exc:
                mlrun.set_tags({"trial_state": "PRUNED"})
                pruned = exc
            except NonFiniteLossError as exc:
                trial.set_user_attr("fail_reason", str(exc))
                mlrun.set_tags({"trial_state": "FAIL"})
                raise
            else:
                metrics = self._record(trial, mlrun, stage1, stage2)
        if pruned is not None:
            raise pruned
        if self.run.objectives == ["acc"]:
            return metrics["val_acc"]
        return metrics["val_acc"], metrics["ff_ratio"]

    def _check_budget(self, trial: optuna.Trial) -> None:
        """Workers race for the last trials: one that starts beyond the budget ends as surplus."""
        earlier = [
            t for t in trial.study.get_trials(deepcopy=False, states=FINISHED + PENDING)
            if t.number < trial.number
        ]  # fmt: skip
        if len(earlier) >= self.run.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {self.run.trials}")

    def _train(self, trial: optuna.Trial, mlrun, params):
        """Stage 1 (its own, pruned while it trains, or a shared candidate), then stage 2 from it."""
        if self.candidates is None:  # a stage 1 of its own: pruned while it trains
            stage1 = self.cache.run(params, self.data, observers=(self._observer(trial, mlrun, "stage1", 0),))
            offset = params.stage1.epochs
        else:  # a shared candidate, trained to the end for the trials after this one
            stage1 = self.cache.run(params, self.data)
            mlrun.log_history(stage1.history, prefix="stage1.")
            offset = 0  # trials differ from stage 2 on: prune on stage-2 epochs alone
        trial.set_user_attr("stage1_cached", stage1.cached)
        mlrun.set_tags({"stage1_cached": stage1.cached})
        teacher = load_teacher(params, self.data, stage1.teacher_state_dict)
        observer = self._observer(trial, mlrun, "stage2", offset)
        stage2 = run_stage2(
            params, self.data, stage1.state_dict, stage1.init_signs, teacher=teacher, observers=(observer,)
        )
        return stage1, stage2

    def _record(self, trial: optuna.Trial, mlrun, stage1, stage2) -> dict[str, float]:
        """A complete trial's metrics on the trial and its MLflow run, its network as an artifact."""
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
        checkpoint = checkpoint_path(self.run, trial.number)
        atomic_torch_save(stage2.model.state_dict(), checkpoint)
        mlrun.log_artifacts([checkpoint], CHECKPOINT_ARTIFACTS)  # any host can evaluate it
        return metrics

    def _observer(self, trial: optuna.Trial, mlrun, stage: str, offset: int):
        """Log each epoch under ``stage.<metric>``; report val_acc at step ``offset + epoch`` for pruning."""
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
