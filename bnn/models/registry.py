"""Model registry in the style of timm: builders register under their function name.

A builder takes the common arguments (:data:`COMMON_ARGS`) as keywords plus model-specific options,
each with a default; :func:`model_options` reads those options off the signature so a config
validator can reject unknown keys before anything is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from bnn.layers import set_mode

COMMON_ARGS = ("num_classes", "in_channels", "image_size", "width", "act_binarizer", "weight_binarizer")

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``builder`` under its ``__name__``; returns it unchanged."""
    name = builder.__name__
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    params = inspect.signature(builder).parameters
    missing = [arg for arg in COMMON_ARGS if arg not in params]
    if missing:
        raise TypeError(f"builder {name!r} lacks the common arguments {missing}")
    for p in params.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"builder {name!r}: *args/**kwargs would hide its options from model_options")
        if p.name not in COMMON_ARGS and p.default is p.empty:
            raise TypeError(f"builder {name!r}: option {p.name!r} needs a default")
    MODELS[name] = builder
    return builder


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None


def model_options(name: str) -> dict[str, Any]:
    """The model-specific keyword options of ``name`` and their defaults."""
    params = inspect.signature(_builder(name)).parameters
    return {p.name: p.default for p in params.values() if p.name not in COMMON_ARGS}


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int,
    act_binarizer: str = "approx_sign",
    weight_binarizer: str = "ste",
    **options: Any,
) -> nn.Module:
    """Build model ``name`` in mode ``"binary_act"`` (stage 1); switch with :func:`bnn.layers.set_mode`."""
    builder = _builder(name)
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise ValueError(
            f"unknown options {unknown} for model {name!r}; choose from {sorted(model_options(name))}"
        )
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size, "width": width}
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    model = builder(**sizes, act_binarizer=act_binarizer, weight_binarizer=weight_binarizer, **options)
    # The optimizer factory exempts `model.classifier` from weight decay; it must be the real head.
    if type(getattr(model, "classifier", None)) is not nn.Linear:
        raise TypeError(f"model {name!r} must expose its final real nn.Linear as `classifier`")
    return set_mode(model, "binary_act")
