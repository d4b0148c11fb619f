"""What is timed for one model: its sizes, its variants, and one round of steps of each.

Every variant trains a fresh copy of the model as the pipeline builds it (:func:`study.runner.new_model`
with params.yaml's model settings, only name, width and weight binarizer replaced) with stage 2's
optimizer settings, on one fixed batch of random images normalised by :func:`bnn.iterate_batches`:
the real-valued network, and per weight binarizer the binary one without and with every diagnostic
``train_stage`` attaches. A reference implementation (:mod:`study.benchmark.reference`) joins the
model it stands beside, trained by the same step without diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bnn import ImageData, PreparedData, iterate_batches
from bnn.binarize import recu_tau
from study.benchmark.reference import Reference
from study.benchmark.step import TrainStep
from study.config import Params
from study.runner import new_model

REAL, BINARY, DIAGNOSTICS = "real-valued", "binary", "binary + diagnostics"
COMPILED = "binary + diagnostics, compiled"  # params.yaml's stage 2 with compile: true
OUR_BINARY_CONV = ", our binary conv"  # a reference's network with our binary layers: label + this
NUM_CLASSES = 10


@dataclass(frozen=True)
class Size:
    width: int
    batch: int
    image: int
    channels: int
    steps: int  # per round and variant: a multiple of SATURATION_EVERY, a round of about a second or more

    def __str__(self) -> str:
        shape = f"{self.image}x{self.image}x{self.channels}"
        return f"width {self.width}, batch {self.batch}, {shape}, {self.steps} steps a round"


# The sizes of a step as training runs it: params.yaml's batch of 128 for the MLP and the CNN on 28x28
# digits; ResNet-18 and ReActNet-A at the widths of ReCU's resnet18_1w1a and AdamBNN's ReActNet-A (the
# reference comparison needs them) and at batches a 2-core CPU trains in about 1.5 s a step. Smaller
# batches make a step weight-bound (the binarizer, the optimizer and the diagnostics per latent weight)
# as no real training run is. The default run (5 rounds) takes about 20 minutes on one thread here.
SIZES = {
    "mlp": Size(width=256, batch=128, image=28, channels=1, steps=64),
    "cnn": Size(width=32, batch=128, image=28, channels=1, steps=8),
    "resnet18": Size(width=64, batch=32, image=32, channels=3, steps=8),
    "reactnet_a": Size(width=32, batch=16, image=64, channels=3, steps=8),
}


@dataclass(frozen=True)
class Variant:
    binarizer: str  # "" for the real-valued network (the same whichever binarizer)
    name: str


def random_batch(size: Size, seed: int) -> tuple[PreparedData, Tensor, Tensor]:
    """A data set of one batch of random images (for the model's shapes) and that batch, normalised."""
    generator = torch.Generator().manual_seed(seed)
    shape = (size.batch, size.channels, size.image, size.image)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    split = ImageData(images, torch.arange(size.batch) % NUM_CLASSES)
    pixels = images.float() / 255
    data = PreparedData(name="random", classes=[str(c) for c in range(NUM_CLASSES)], train=split, val=split,
                        test=split, mean=pixels.mean((0, 2, 3)), std=pixels.std((0, 2, 3)))  # fmt: skip
    x, y = next(iterate_batches(split, batch_size=size.batch, mean=data.mean, std=data.std, shuffle=False))
    return data, x, y


def model_params(params: Params, model: str, size: Size, binarizer: str, threads: int) -> Params:
    """params.yaml's settings for ``model`` at ``size`` (its ``model.options`` only if it is that model);
    the ``recu`` binarizer with ReCU's whole recipe, its inputs' std division included (as ReCU's code,
    which the reference comparison times, does)."""
    options = params.model.options if model == params.model.name else {}
    std = params.model.act_std_normalise or binarizer == "recu"
    update = {"name": model, "width": size.width, "weight_binarizer": binarizer, "options": options,
              "act_std_normalise": std}  # fmt: skip
    return params.model_copy(update={"model": params.model.model_copy(update=update), "threads": threads})


def rounds_of(
    params: Params,
    model: str,
    size: Size,
    binarizers: list[str],
    threads: int,
    references: dict[Reference, Callable] | None = None,
    compiled: bool = False,
) -> dict[Variant, Callable[[int], None]]:
    """Per variant, a function that runs one round: an epoch's start, then as many steps as it is told.
    With ``compiled``, also the binary step with every diagnostic and ``torch.compile``."""
    data, x, y = random_batch(size, params.seed)
    cfg = params.stage2

    def ours(binarizer: str, mode: str, diagnostics: bool, compile: bool = False) -> TrainStep:
        built = new_model(model_params(params, model, size, binarizer, threads), data)
        return TrainStep(built, cfg.model_copy(update={"compile": compile}), mode, diagnostics)

    trained = {Variant("", REAL): ours(binarizers[0], "real", False)}
    for binarizer in binarizers:
        trained[Variant(binarizer, BINARY)] = ours(binarizer, "binary", False)
        trained[Variant(binarizer, DIAGNOSTICS)] = ours(binarizer, "binary", True)
        if compiled:
            trained[Variant(binarizer, COMPILED)] = ours(binarizer, "binary", True, compile=True)
    for ref, build in (references or {}).items():
        if ref.model == model and ref.binarizer in binarizers:
            torch.manual_seed(params.seed)
            theirs = build(num_classes=NUM_CLASSES, tau=recu_tau(0.0, *cfg.recu_tau))
            eager = cfg.model_copy(update={"compile": False})
            trained[Variant(ref.binarizer, ref.label)] = TrainStep(theirs, eager, "binary", False)
            if ref.binary_conv is not None:
                torch.manual_seed(params.seed)
                swapped = build(num_classes=NUM_CLASSES, tau=recu_tau(0.0, *cfg.recu_tau), ours=True)
                label = ref.label + OUR_BINARY_CONV
                trained[Variant(ref.binarizer, label)] = TrainStep(swapped, eager, "binary", False)
    return {variant: _round(step, x, y) for variant, step in trained.items()}


def _round(step: TrainStep, x: Tensor, y: Tensor) -> Callable[[int], None]:
    def run(steps: int) -> None:
        step.start_epoch()
        for _ in range(steps):
            step(x, y)

    return run
