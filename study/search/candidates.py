"""Stage-1 candidates: the few stage-1 settings a search chooses among, so trials share stage 1.

Stage 1 is half of every trial's training, yet only a handful of stage-1 settings are worth
telling apart. With ``search.stage1_candidates: K`` (K >= 1) the search draws K stage-1 settings
once, when the study is created: the first is params.yaml's own stage 1 (the paper's recipe by
default), the others are drawn at random (seeded by ``search.seed``) from the ``stage1.*`` part
of ``search.space``, rounded to three significant digits. Each trial then samples one candidate
(the categorical Optuna parameter ``stage1``, labelled by its settings) and its stage-2 settings
from the rest of the space. Every candidate is trained once and then comes from the stage-1
store, so TPE spends the budget on stage 2 and on choosing among stage-1 results.

The candidates are stored with the study (user attribute ``stage1_candidates``): a resumed study
or a worker on another host uses exactly the same ones, whatever its own params say.
``K = 0`` samples stage 1 freely in every trial (no sharing beyond repeated settings).

    >>> label({"stage1.optimizer": "adam", "stage1.lr": 0.002, "stage1.weight_decay": 5e-06})
    'optimizer=adam lr=0.002 weight_decay=5e-06'
"""

from __future__ import annotations

from typing import Any

import optuna

from study.config import Params
from study.search.sampling import suggest
from study.space import SearchSpace

ATTR = "stage1_candidates"
PARAM = "stage1"
MAX_DRAWS = 1000


def stage_space(space: SearchSpace, stage: str) -> SearchSpace:
    """The dimensions of ``space`` that set ``stage`` (``stage1`` or ``stage2``)."""
    return SearchSpace.model_construct(
        root={k: d for k, d in space.root.items() if k.startswith(f"{stage}.")}
    )


def label(overrides: dict[str, Any]) -> str:
    """A candidate's name in Optuna and MLflow: its settings, in the space's order."""
    return " ".join(f"{key.partition('.')[2]}={_short(value)}" for key, value in overrides.items())


def for_study(params: Params, count: int, seed: int) -> dict[str, dict[str, Any]] | None:
    """What a new study stores: ``count`` candidates, or None (stage 1 per trial) when ``count`` is 0
    or nothing of stage 1 is searched (every trial then has the same stage 1 anyway)."""
    if count == 0 or not stage_space(params.search.space, "stage1").root:
        return None
    return draw(params, count, seed)


def of_study(study: optuna.Study) -> dict[str, dict[str, Any]] | None:
    """The candidates stored with ``study``; None: stage 1 sampled per trial (or an older study)."""
    return study.user_attrs.get(ATTR)


def draw(params: Params, count: int, seed: int) -> dict[str, dict[str, Any]]:
    """``count`` distinct stage-1 settings, params.yaml's stage 1 first; ``{label: overrides}``."""
    space = stage_space(params.search.space, "stage1")
    candidates = [_base(params, space)]
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)  # in memory: only a source of seeded draws
    for _ in range(MAX_DRAWS):
        if len(candidates) >= count:
            break
        drawn = {key: _round(value) for key, value in suggest(study.ask(), space).items()}
        if drawn not in candidates:
            candidates.append(drawn)
    return {label(c): c for c in candidates[:count]}


def _base(params: Params, space: SearchSpace) -> dict[str, Any]:
    """params.yaml's stage-1 values of the searched keys (a conditional key only where it applies)."""
    chosen: dict[str, Any] = {}
    for key, dim in space.root.items():
        if all(chosen.get(other) == value for other, value in dim.when.items()):
            chosen[key] = getattr(params.stage1, key.partition(".")[2])
    return chosen


def _round(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) else value


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
