"""bnn: binary neural networks in plain PyTorch (no DVC, Optuna or MLflow here).

Binarizers, binary layers with a stage mode, a model registry, in-memory data sets, the one
training loop :func:`train_stage`, and the AdamBNN diagnostics (FF ratio, C2I ratio, saturation).
"""

from bnn.batches import Augment, iterate_batches
from bnn.checkpoint import load_checkpoint, save_checkpoint
from bnn.data import DATASETS, DataError, ImageData, PreparedData, prepare_data
from bnn.diagnostics import SignTracker, latent_histogram, saturation_probe, sign_agreement, weight_signs
from bnn.latent import (
    latent_mass,
    latent_measures,
    median_abs_weight,
    rel_histogram,
    relative_shape,
)
from bnn.layers import (
    BinaryConv2d,
    BinaryLinear,
    RPReLU,
    RSign,
    binary_weight_layers,
    init_binary_weights,
    set_mode,
)
from bnn.models import MODELS, build_model, model_options, register_model
from bnn.optim import create_optimizer, create_schedule
from bnn.train import NonFiniteLossError, StageConfig, StageResult, evaluate, train_stage

__all__ = [
    "DATASETS",
    "MODELS",
    "Augment",
    "BinaryConv2d",
    "BinaryLinear",
    "DataError",
    "ImageData",
    "NonFiniteLossError",
    "PreparedData",
    "RPReLU",
    "RSign",
    "SignTracker",
    "StageConfig",
    "StageResult",
    "binary_weight_layers",
    "build_model",
    "create_optimizer",
    "create_schedule",
    "evaluate",
    "init_binary_weights",
    "iterate_batches",
    "latent_histogram",
    "load_checkpoint",
    "model_options",
    "prepare_data",
    "register_model",
    "sign_agreement",
    "saturation_probe",
    "save_checkpoint",
    "set_mode",
    "train_stage",
    "weight_signs",
    "latent_mass",
    "latent_measures",
    "median_abs_weight",
    "rel_histogram",
    "relative_shape",
]
