"""Model zoo; importing the family modules registers their builders."""

from bnn.models import cnn, mlp, reactnet, resnet  # noqa: F401
from bnn.models.registry import MODELS, build_model, model_options, register_model

__all__ = ["MODELS", "build_model", "model_options", "register_model"]
