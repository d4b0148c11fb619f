"""The search space of ``params.yaml``'s ``search.space``: which stage settings a trial samples.

Keys are dotted stage settings (``stage1.lr``, ``stage2.weight_decay``, any field of a stage);
values are one of

- a list: a categorical choice, e.g. ``[adam, adamw, sgd]`` or ``[0.0, 1.0e-6, 5.0e-6]``;
- a range: ``{low: 1.0e-4, high: 1.0e-2, log: true}`` (integers for integer settings);
- a range with ``zero: true``: 0 as an explicit choice beside a log range (weight decay);

each optionally with ``when: {stage1.optimizer: sgd}``: sampled only when the named settings took
those values (conditional parameters such as SGD momentum), otherwise the base value stays.

The schema lives in the core because ``params.yaml`` is validated as a whole (:mod:`study.config`);
sampling it on an Optuna trial is the search's business (:mod:`study.search.sampling`).

    >>> space = SearchSpace.model_validate({"stage1.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    ...                                      "stage1.optimizer": ["adam", "sgd"]})
    >>> sorted(space.root)
    ['stage1.lr', 'stage1.optimizer']
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel, field_validator, model_validator

from bnn.train import StageConfig

STAGES = ("stage1", "stage2")


class Dimension(BaseModel):
    """One searchable setting: a list of choices, or a range (optionally with 0 beside it)."""

    model_config = ConfigDict(extra="forbid")

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    zero: bool = False
    when: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _list_is_choices(cls, value: Any) -> Any:
        return {"choices": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.zero:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices: must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices (a list) or both low and high")
        if not self.low < self.high:
            raise ValueError(f"low: must be below high ({self.low} >= {self.high})")
        if (self.log or self.zero) and self.low <= 0:
            raise ValueError("low: must be positive for a log range")
        if self.zero and not self.log:
            raise ValueError("zero: only beside a log range (log: true)")
        return self


class SearchSpace(RootModel[dict[str, Dimension]]):
    @field_validator("root")
    @classmethod
    def _known_keys(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        order = list(space)
        for key, dim in space.items():
            stage, _, field = key.partition(".")
            if stage not in STAGES or field not in StageConfig.model_fields:
                raise ValueError(f"{key}: not a stage setting (stage1.<field> or stage2.<field>)")
            for other in dim.when:
                if other not in order[: order.index(key)]:
                    raise ValueError(f"{key}.when.{other}: must name a searched key listed before {key}")
        return space


def check_against(space: SearchSpace, stages: dict[str, StageConfig]) -> None:
    """Every value a dimension can take must make a valid stage config (raises ValueError naming it)."""
    for key, dim in space.root.items():
        stage, _, field = key.partition(".")
        values = dim.choices if dim.choices is not None else [dim.low, dim.high]
        if field_is_int(field):
            values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        for value in values:
            try:
                StageConfig.model_validate({**stages[stage].model_dump(), field: value})
            except ValueError as exc:
                message = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
                raise ValueError(f"{key}: value {value!r} is not allowed ({message})") from None


def field_is_int(field: str) -> bool:
    return StageConfig.model_fields[field].annotation is int
