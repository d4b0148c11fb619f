"""The rules that keep each cell trained once, on a real Optuna storage (SQLite, as by default)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from study.reproduce import cell_study
from study.reproduce.cell_study import FAILURE, KEY, STAGE1, STAGE1_READY, Standing
from study.storage import open_storage


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return cell_study.open_study("ablation-test", open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"))


ATTRS = {"a": {STAGE1: "s1"}, "b": {STAGE1: "s1"}, "c": {}}


def standing(study, keys=("a", "b", "c"), lost=frozenset()):
    return Standing.of(study.get_trials(deepcopy=False), list(keys), lost)


def test_every_key_is_enqueued_once_and_claimed_by_one_worker(study):
    cell_study.enqueue(study, standing(study).missing(), ATTRS)
    assert standing(study).missing() == []
    first = cell_study.claim(study, standing(study), ["c", "a", "b"])
    assert first.user_attrs[KEY] == "c" and first.state == TrialState.RUNNING
    assert cell_study.superseded_by(study, first, frozenset()) is None
    second = cell_study.claim(study, standing(study), ["c", "a", "b"])
    assert second.user_attrs[KEY] == "a"  # c is taken


def test_of_two_copies_of_a_key_only_the_lowest_numbered_trains(study):
    """Two hosts' commands enqueued the same key at once: whichever copy a worker claims, the trial of
    the lower number is the one to train, and a copy claimed after the key is done yields too."""
    cell_study.enqueue(study, ["c"], ATTRS)
    cell_study.enqueue(study, ["c"], ATTRS)
    low, high = study.get_trials(deepcopy=False)
    study._storage.set_trial_state_values(high._trial_id, TrialState.RUNNING)  # a worker took the copy
    assert cell_study.superseded_by(study, study.trials[1], frozenset()).number == low.number
    study.tell(high.number, state=TrialState.FAIL)  # it yields
    claimed = cell_study.claim(study, standing(study, ["c"]), ["c"])
    assert claimed.number == low.number and cell_study.superseded_by(study, claimed, frozenset()) is None
    study.tell(claimed.number, 0.9)
    cell_study.enqueue(study, ["c"], ATTRS)  # a late host's copy
    late = cell_study.claim(study, standing(study, ["c"]), ["c"])
    assert cell_study.superseded_by(study, late, frozenset()).number == low.number
    assert cell_study.superseded_by(study, late, frozenset({"c"})) is None  # its result was lost: retrain


def test_a_key_is_done_when_complete_or_failed_with_a_recorded_failure(study):
    cell_study.enqueue(study, ["a", "b", "c"], ATTRS)
    a, b, c = study.get_trials(deepcopy=False)
    for trial in (a, b, c):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
    study.tell(a.number, 0.5)
    study._storage.set_trial_user_attr(b._trial_id, FAILURE, "loss became nan")
    study.tell(b.number, state=TrialState.FAIL)
    study.tell(c.number, state=TrialState.FAIL)  # a killed worker's trial, failed by heartbeat
    now = standing(study)
    assert set(now.done) == {"a", "b"} and now.missing() == ["c"] and not now.complete
    assert standing(study, lost=frozenset({"a"})).missing() == ["a", "c"]


def test_a_cell_waits_while_another_worker_trains_its_stage_1(study):
    cell_study.enqueue(study, ["a", "b", "c"], ATTRS)
    first = cell_study.claim(study, standing(study), ["a", "b", "c"])
    assert first.user_attrs[KEY] == "a"
    # b shares a's stage 1, which a's worker is training: c is claimed instead, then nothing.
    second = cell_study.claim(study, standing(study), ["b", "c"])
    assert second.user_attrs[KEY] == "c"
    assert cell_study.claim(study, standing(study), ["b", "c"]) is None
    study._storage.set_trial_user_attr(first._trial_id, STAGE1_READY, True)
    assert cell_study.claim(study, standing(study), ["b", "c"]).user_attrs[KEY] == "b"


def test_a_study_created_twice_is_the_same_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    one = cell_study.open_study("ablation-x", open_storage(url))
    two = cell_study.open_study("ablation-x", open_storage(url))
    assert one._study_id == two._study_id


def test_a_worker_takes_the_next_missing_cell_whose_stage_1_nobody_is_training(study):
    order = ["a", "b", "c"]
    assert standing(study).next_missing(order, ATTRS) == "a"
    cell_study.enqueue(study, ["a"], ATTRS)
    cell_study.claim(study, standing(study), order)  # a's worker trains stage 1 "s1", which b shares
    assert standing(study).next_missing(order, ATTRS) == "c"
    cell_study.enqueue(study, ["c"], ATTRS)
    cell_study.claim(study, standing(study), order)
    assert standing(study).next_missing(order, ATTRS) is None  # b waits for a's stage 1
