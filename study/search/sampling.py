"""Sampling a search space (:mod:`study.space`, the schema of ``search.space``) on an Optuna trial."""

from __future__ import annotations

from typing import Any

from study.space import SearchSpace, field_is_int


def suggest(trial: Any, space: SearchSpace, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sample ``space`` on an Optuna trial; returns the dotted overrides of this trial.

    Dimensions are sampled in the order given (a ``when`` condition names an earlier key, or a key
    of ``given``: settings already fixed for this trial, such as its stage-1 candidate).
    """
    chosen: dict[str, Any] = dict(given or {})
    for key, dim in space.root.items():
        if any(chosen.get(other) != value for other, value in dim.when.items()):
            continue
        if dim.choices is not None:
            chosen[key] = trial.suggest_categorical(key, dim.choices)
        elif field_is_int(key.partition(".")[2]):
            chosen[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        elif dim.zero and trial.suggest_categorical(f"{key}:zero", [True, False]):
            chosen[key] = 0.0
        else:
            chosen[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return {key: value for key, value in chosen.items() if key in space.root}
