"""An ablation's cells as the trials of an Optuna study, on the search's storage.

Every cell (settings x seed) is a trial enqueued with fixed parameters: its key (everything that
determines its result, :meth:`Cell.key`), its labels and, for two-stage cells, its stage-1 key as user
attributes. Any worker on any host that reaches the storage claims waiting trials, so workers
coordinate through the database alone (no file lock, no shared folder); a trial's worker beats, and a
trial whose worker died fails by heartbeat. A worker enqueues a cell when it is about to train it,
not all cells up front: Optuna re-reads every unfinished trial each time a worker looks at the study,
and a queue of hundreds made that a second per cell (measured: ``make repro`` 10 % slower).

The rules, which keep every key trained exactly once however many hosts enqueue and claim at once:

- a key is *done* when a trial of it is COMPLETE, or FAILed with a recorded ``failure`` (a NaN loss:
  a result, not retried); *live* trials are WAITING or RUNNING;
- a key with neither is enqueued by the next worker free to train it (again, after a worker died);
  when two workers enqueue one key at once, it gets several trials;
- a worker claims a waiting trial (one atomic step on either back end, :mod:`study.storage`), then
  yields it (FAIL, ``duplicate_of``) when its key is already done or has a live trial of a lower
  number: of several live trials of a key, only the lowest-numbered one trains;
- a worker leaves a cell alone while another running trial is training its stage 1 (until that trial
  sets ``stage1_ready``), so two hosts do not train one stage 1 side by side.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

KEY = "cell_key"
STAGE1 = "stage1_key"
STAGE1_READY = "stage1_ready"
FAILURE = "failure"
DUPLICATE = "duplicate_of"
LIVE = (TrialState.WAITING, TrialState.RUNNING)


def is_done(trial: FrozenTrial) -> bool:
    recorded_failure = trial.state == TrialState.FAIL and FAILURE in trial.user_attrs
    return trial.state == TrialState.COMPLETE or recorded_failure


@dataclass
class Standing:
    """Where each key of an ablation stands in its study: the trial holding its result, its live trials.
    ``lost`` keys (done, but whose result no store holds any more) count as not done."""

    keys: list[str]
    done: dict[str, FrozenTrial] = field(default_factory=dict)
    live: dict[str, list[FrozenTrial]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, trials: Iterable[FrozenTrial], keys: list[str], lost: frozenset[str] = frozenset()
    ) -> Standing:
        standing = cls(keys)
        for trial in sorted(trials, key=lambda t: t.number):
            key = trial.user_attrs.get(KEY)
            if key is None:
                continue
            if is_done(trial) and key not in lost:
                standing.done.setdefault(key, trial)
            elif trial.state in LIVE:
                standing.live.setdefault(key, []).append(trial)
        return standing

    @property
    def complete(self) -> bool:
        return all(key in self.done for key in self.keys)

    def finished(self) -> int:
        return sum(key in self.done for key in self.keys)

    def missing(self) -> list[str]:
        """Keys neither done nor live: to be enqueued."""
        return [key for key in self.keys if key not in self.done and not self.live.get(key)]

    def next_missing(self, order: list[str], attrs: dict[str, dict]) -> str | None:
        """The first missing key in ``order`` whose stage 1 (``attrs[key]``) no running trial is training;
        None when there is none."""
        missing, busy = set(self.missing()), self.stage1_in_training()
        return next((k for k in order if k in missing and attrs[k].get(STAGE1) not in busy), None)

    def stage1_in_training(self) -> set[str]:
        """Stage-1 keys that running trials are training now."""
        return {
            trial.user_attrs[STAGE1]
            for trials in self.live.values()
            for trial in trials
            if trial.state == TrialState.RUNNING and STAGE1 in trial.user_attrs
            and not trial.user_attrs.get(STAGE1_READY)
        }  # fmt: skip


def open_study(name: str, storage: RDBStorage) -> optuna.Study:
    """The ablation's study, created on first use. Several hosts may create it at once: the losers of
    PostgreSQL's race (on the study's name, or on the tables of a new database) load it instead."""
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=name, storage=storage, direction="maximize", load_if_exists=True
            )
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def enqueue(study: optuna.Study, keys: list[str], attrs: dict[str, dict]) -> None:
    """One waiting trial per key, with the key's user attributes (``attrs[key]``: its labels etc.)."""
    for key in keys:
        study.enqueue_trial({}, user_attrs={KEY: key, **attrs[key]})


def claim(study: optuna.Study, standing: Standing, order: list[str]) -> FrozenTrial | None:
    """Claim a waiting trial of a key in ``order`` (this worker's own order of the keys it knows), leaving
    cells whose stage 1 another trial is training; None when there is none to claim now."""
    busy = standing.stage1_in_training()
    waiting = {  # the lowest-numbered waiting trial of each key
        key: next(t for t in trials if t.state == TrialState.WAITING)
        for key, trials in standing.live.items()
        if any(t.state == TrialState.WAITING for t in trials)
    }
    storage = study._storage
    for key in order:
        trial = waiting.get(key)
        if trial is None or trial.user_attrs.get(STAGE1) in busy:
            continue
        if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
            return storage.get_trial(trial._trial_id)
    return None


def superseded_by(study: optuna.Study, trial: FrozenTrial, lost: frozenset[str]) -> FrozenTrial | None:
    """The trial that ``trial`` (just claimed) must yield to: one of its key that is done, or live with a
    lower number; None when ``trial`` is the one to train."""
    key = trial.user_attrs[KEY]
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or other.user_attrs.get(KEY) != key:
            continue
        if (is_done(other) and key not in lost) or (other.state in LIVE and other.number < trial.number):
            return other
    return None
