"""Stage-1 candidates: drawn once from the stage-1 part of the space, params.yaml's stage 1 first."""

from __future__ import annotations

import pytest

from study.config import DEFAULT_PARAMS, load_params
from study.search import candidates
from study.search.sampling import suggest
from study.space import SearchSpace

SPACE = {
    "stage1.optimizer": ["adam", "sgd"],
    "stage1.lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
    "stage1.weight_decay": [0.0, 5.0e-6, 1.0e-4],
    "stage1.momentum": {"low": 0.8, "high": 0.99, "when": {"stage1.optimizer": "sgd"}},
    "stage2.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "stage2.momentum": {"low": 0.8, "high": 0.99, "when": {"stage1.optimizer": "sgd"}},
}


@pytest.fixture
def params():
    base = load_params(DEFAULT_PARAMS)
    raw = base.model_dump(mode="json")
    raw["search"]["space"] = SPACE
    return type(base).model_validate(raw)


def test_first_candidate_is_the_params_stage1_and_the_rest_come_from_the_space(params):
    drawn = candidates.draw(params, 5, seed=0)
    settings = list(drawn.values())
    assert len(drawn) == 5 and len({tuple(sorted(c.items())) for c in settings}) == 5
    assert settings[0] == {"stage1.optimizer": "adam", "stage1.lr": 2.0e-3, "stage1.weight_decay": 5.0e-6}
    for candidate in settings[1:]:
        assert candidate["stage1.optimizer"] in ("adam", "sgd")
        assert 1.0e-4 <= candidate["stage1.lr"] <= 1.0e-1
        assert candidate["stage1.lr"] == float(f"{candidate['stage1.lr']:.3g}")  # rounded: readable labels
        assert candidate["stage1.weight_decay"] in (0.0, 5.0e-6, 1.0e-4)
        assert ("stage1.momentum" in candidate) == (candidate["stage1.optimizer"] == "sgd")
        assert not any(key.startswith("stage2.") for key in candidate)
    assert list(drawn) == [candidates.label(c) for c in settings]


def test_draws_follow_the_seed(params):
    assert candidates.draw(params, 4, seed=3) == candidates.draw(params, 4, seed=3)
    assert candidates.draw(params, 4, seed=3) != candidates.draw(params, 4, seed=4)


def test_no_candidates_when_turned_off_or_stage1_is_not_searched(params):
    assert candidates.for_study(params, 0, seed=0) is None
    raw = params.model_dump(mode="json")
    raw["search"]["space"] = {"stage2.lr": SPACE["stage2.lr"]}
    only_stage2 = type(params).model_validate(raw)
    assert candidates.for_study(only_stage2, 4, seed=0) is None


def test_label_names_each_setting():
    overrides = {"stage1.optimizer": "sgd", "stage1.lr": 0.03, "stage1.momentum": 0.9}
    assert candidates.label(overrides) == "optimizer=sgd lr=0.03 momentum=0.9"


class FixedTrial:
    """Answers every suggestion with the first choice or the low end: enough to test conditions."""

    def suggest_categorical(self, name, choices):
        return choices[0]

    def suggest_float(self, name, low, high, log=False):
        return low


def test_a_stage2_setting_can_be_conditional_on_the_given_stage1_candidate():
    space = candidates.stage_space(SearchSpace.model_validate(SPACE), "stage2")
    with_sgd = suggest(FixedTrial(), space, given={"stage1.optimizer": "sgd"})
    with_adam = suggest(FixedTrial(), space, given={"stage1.optimizer": "adam"})
    assert with_sgd == {"stage2.lr": 1.0e-4, "stage2.momentum": 0.8}
    assert with_adam == {"stage2.lr": 1.0e-4}
