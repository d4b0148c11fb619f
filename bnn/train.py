"""``train_stage``: the only training loop, shared by both stages, the search and the ablations.

Read top to bottom: seed, build optimizer and schedule, then per epoch train (tracking sign flips
after every optimizer step, the binary weights' gradients and updates around it (dead weights),
and activation saturation on every ``SATURATION_EVERY``-th batch), validate (measuring saturation
again, in eval mode), report the epoch record to the observers. Observers are how tracking,
progress and pruning plug in; an observer may raise to stop the stage (an Optuna ``TrialPruned``,
for example).

    from bnn import build_model, prepare_data, StageConfig, train_stage
    data = prepare_data("digits", val_fraction=0.1, test_fraction=0.2, seed=0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, width=64)
    stage1 = train_stage(model, data, StageConfig(epochs=3, lr=1e-3, weight_decay=5e-6),
                         mode="binary_act", seed=0)
    stage2 = train_stage(model, data, StageConfig(epochs=3, lr=1e-3), mode="binary", seed=0,
                         init_signs=stage1.init_signs)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from bnn.batches import Augment, iterate_batches
from bnn.binarize import recu_tau
from bnn.data import ImageData, PreparedData
from bnn.diagnostics import (
    DEAD_WEIGHT_KEYS,
    DeadWeightTracker,
    SignTracker,
    saturation_fraction,
    saturation_probe,
)
from bnn.distill import distribution_loss
from bnn.layers import set_mode, set_recu_tau
from bnn.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_schedule

Observer = Callable[[dict], None]
SATURATION_EVERY = 8  # training saturation is counted on every 8th batch: cheap, and enough to estimate


class StageConfig(BaseModel):
    """Everything that sets how one stage trains; validated on construction."""

    model_config = ConfigDict(extra="forbid")

    epochs: PositiveInt
    batch_size: PositiveInt = 128
    optimizer: str = "adam"
    lr: PositiveFloat
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "linear"
    recu_tau: tuple[float, float] = (0.85, 0.99)
    compile: bool = False

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}, choose from {sorted(OPTIMIZERS)}")
        return name

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, name: str) -> str:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}, choose from {list(SCHEDULES)}")
        return name

    @field_validator("betas", "recu_tau")
    @classmethod
    def _unit_interval(cls, pair: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= v < 1 for v in pair):
            raise ValueError("both values must lie in [0, 1)")
        return pair


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the stage stops at that step."""


@dataclass
class StageResult:
    history: list[dict]
    final: dict[str, float]
    init_signs: list[Tensor]


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks the GPU when present, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: ImageData,
    data: PreparedData,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    predictions: bool = False,
) -> dict:
    """Loss, accuracy and saturation of ``model`` on one split (eval mode, no augmentation); with
    ``predictions``, also each example's predicted class in the split's order (``"predictions"``)."""
    model.eval()
    loss_sum, correct, predicted = 0.0, 0, []
    with saturation_probe(model) as counts:
        for x, y in iterate_batches(
            split, batch_size=batch_size, mean=data.mean, std=data.std, shuffle=False, device=device
        ):
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            labels = logits.argmax(1)
            correct += int((labels == y).sum())
            if predictions:
                predicted.extend(labels.tolist())
    n = len(split)
    result = {"loss": loss_sum / n, "acc": correct / n, "saturation": saturation_fraction(counts)}
    return {**result, "predictions": predicted} if predictions else result


def trained_epochs(history: list[dict]) -> list[dict]:
    """The epochs whose learning rate was above 0, or all when none was: an epoch at lr 0 (the
    linear schedule's last) moves no weight, so its FF is 0 and its dead weights' update ratio
    undefined by construction."""
    return [r for r in history if r["lr"] > 0] or history


def stage_ff_ratio(history: list[dict]) -> float:
    """Mean FF over the epochs that trained; when none did the stage flipped nothing, and the mean
    over all epochs (0) says so."""
    trained = trained_epochs(history)
    return sum(r["ff_ratio"] for r in trained) / len(trained)


def stage_final(history: list[dict]) -> dict[str, float]:
    """The last epoch's values, except the FF ratio (:func:`stage_ff_ratio`) and the dead-weight
    measures, taken from the last epoch that trained."""
    final = {key: history[-1][key] for key in history[-1] if key not in ("epoch", "lr")}
    if "ff_ratio" in final:
        final["ff_ratio"] = stage_ff_ratio(history)
    last = trained_epochs(history)[-1]
    final.update({key: last[key] for key in DEAD_WEIGHT_KEYS if key in last})
    return final


class StageParts(NamedTuple):
    """What trains a stage's model besides its data: the forward pass (compiled with ``cfg.compile``),
    the optimizer (at the first epoch's learning rate) and the schedule."""

    forward: Callable[[Tensor], Tensor]
    optimizer: Optimizer
    schedule: LRScheduler


def stage_parts(model: nn.Module, cfg: StageConfig) -> StageParts:
    """``cfg``'s forward pass, optimizer and schedule for ``model``, as :func:`train_stage` sets them up
    (and the benchmark's replica of its step, ``study.benchmark.step``)."""
    forward = torch.compile(model) if cfg.compile else model
    optimizer = create_optimizer(
        model,
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        betas=cfg.betas,
    )
    return StageParts(forward, optimizer, create_schedule(optimizer, cfg.schedule, cfg.epochs))


def train_stage(
    model: nn.Module,
    data: PreparedData,
    cfg: StageConfig,
    *,
    mode: str,
    seed: int,
    augment: Augment | None = None,
    device: torch.device | str | None = None,
    init_signs: list[Tensor] | None = None,
    teacher: nn.Module | None = None,
    observers: Sequence[Observer] = (),
    track_signs: bool = True,
    progress: str | None = None,
) -> StageResult:
    """Train ``model`` in ``mode`` for one stage; returns per-epoch history and final diagnostics.

    ``final`` holds the last epoch's values, except ``ff_ratio`` (the mean over the epochs that
    trained) and the dead-weight measures (of the last epoch that trained): :func:`stage_final`.

    ``init_signs`` is the sign snapshot of the very first random initialisation (stage 1's
    ``result.init_signs``); without it the start of this stage is the reference.
    ``progress`` is a label for a progress bar over epochs (shown on terminals only).
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    set_mode(model, mode)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    step_model, optimizer, schedule = stage_parts(model, cfg)
    tracker = SignTracker(model, init_signs) if track_signs else None
    dead = DeadWeightTracker(model) if track_signs else None

    history: list[dict] = []
    epochs = tqdm(
        range(cfg.epochs), desc=progress, leave=False, disable=True if progress is None else None
    )  # None: only on terminals
    for epoch in epochs:
        set_recu_tau(model, recu_tau(epoch / cfg.epochs, *cfg.recu_tau))
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum = 0.0
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        train_saturation = {"saturated": 0, "total": 0}
        for step, (x, y) in enumerate(
            iterate_batches(
                data.train,
                batch_size=cfg.batch_size,
                mean=data.mean,
                std=data.std,
                shuffle=True,
                generator=shuffle,
                augment=augment,
                device=device,
            )
        ):
            with saturation_probe(model) if step % SATURATION_EVERY == 0 else nullcontext({}) as counts:
                logits = step_model(x)
            for key, count in counts.items():
                train_saturation[key] += count
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = distribution_loss(logits, teacher_logits)
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(f"loss became {value} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dead is not None:
                dead.before_step()
            optimizer.step()
            if dead is not None:
                dead.after_step()
            if tracker is not None:
                tracker.step()
            loss_sum += value * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        schedule.step()

        val = evaluate(model, data.val, data, device=device)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_acc": int(correct) / seen,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "saturation": val["saturation"],
            "saturation_train": saturation_fraction(train_saturation),
            **(tracker.epoch_summary() if tracker is not None else {}),
            **(dead.epoch_summary() if dead is not None else {}),
        }
        history.append(record)
        epochs.set_postfix(val_acc=f"{record['val_acc']:.3f}")
        for observer in observers:
            observer(record)

    return StageResult(
        history=history,
        final=stage_final(history),
        init_signs=tracker.init if tracker is not None else [],
    )
