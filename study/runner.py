"""The two-stage run: what the DVC pipeline, every search trial and every ablation cell execute.

Stage 1 trains binary activations with real weights from a seeded random init; stage 2 builds the
same model, loads stage 1's weights with strict key matching, and trains fully binary. Both call
:func:`bnn.train_stage`; nothing here knows about DVC, Optuna or MLflow (observers carry that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bnn import (
    Augment,
    PreparedData,
    StageResult,
    build_model,
    init_binary_weights,
    prepare_data,
    set_mode,
    train_stage,
)
from bnn.layers import set_act_std_normalise
from bnn.train import Observer, resolve_device
from study import cpu_isa
from study.config import Params, resolve_path


@dataclass
class StageRun:
    model: nn.Module
    result: StageResult
    teacher: nn.Module | None = None


def prepare(params: Params) -> PreparedData:
    """The configured data set, split by ``data.split_seed``: the same bytes wherever it is prepared."""
    cfg = params.data
    path = resolve_path(cfg.path) if cfg.path else None
    return prepare_data(
        cfg.name,
        path,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        image_size=cfg.image_size,
        verify_checksums=cfg.verify_checksums,
    )


def new_model(params: Params, data: PreparedData) -> nn.Module:
    """The configured model, with its latent weights seeded from ``params.seed``.

    Also fixes torch's intra-op threads to ``params.threads`` and checks the CPU code path
    (``params.cpu_isa``): every run (pipeline stage, trial, ablation cell, in any worker process)
    builds its model here first, so its float sums, and so its metrics, depend neither on the worker
    count nor on the machine's cores or instruction set.
    """
    cpu_isa.check(params.cpu_isa)
    torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    m = params.model
    model = build_model(
        m.name,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        width=m.width,
        act_binarizer=m.act_binarizer,
        weight_binarizer=m.weight_binarizer,
        **m.options,
    )
    init_binary_weights(model, m.init)
    return set_act_std_normalise(model, m.act_std_normalise)


def augmentation(params: Params) -> Augment:
    return Augment(crop_padding=params.data.augment.crop_padding, hflip=params.data.augment.hflip)


def train_teacher(params: Params, data: PreparedData, progress: str | None = None) -> nn.Module:
    """A real-valued network of the same architecture, trained with stage 1's optimizer settings."""
    teacher = new_model(params, data)
    cfg = params.stage1.model_copy(update={"epochs": params.distill.teacher_epochs})
    train_stage(
        teacher,
        data,
        cfg,
        mode="real",
        seed=params.seed,
        augment=augmentation(params),
        device=resolve_device(params.device),
        track_signs=False,
        progress=progress,
    )
    return set_mode(teacher, "real").eval()


def load_teacher(params: Params, data: PreparedData, state_dict: dict | None) -> nn.Module | None:
    """The stored real-valued teacher of a distilled stage 1 (``None`` without distillation)."""
    if state_dict is None:
        return None
    teacher = new_model(params, data)
    teacher.load_state_dict(state_dict, strict=True)
    return set_mode(teacher, "real").eval()


def run_stage1(
    params: Params, data: PreparedData, observers: tuple[Observer, ...] = (), progress: bool = False
) -> StageRun:
    teacher = train_teacher(params, data, "teacher" if progress else None) if params.distill.enabled else None
    model = new_model(params, data)
    result = train_stage(
        model,
        data,
        params.stage1,
        mode="binary_act",
        seed=params.seed,
        augment=augmentation(params),
        device=resolve_device(params.device),
        teacher=teacher,
        observers=observers,
        progress="stage 1" if progress else None,
    )
    return StageRun(model, result, teacher)


def run_stage2(
    params: Params,
    data: PreparedData,
    stage1_state: dict,
    init_signs: list[torch.Tensor],
    teacher: nn.Module | None = None,
    observers: tuple[Observer, ...] = (),
    progress: bool = False,
) -> StageRun:
    """Stage 2 from stage 1's final weights (``strict=True``: a renamed key is an error, not a no-op)."""
    model = new_model(params, data)
    model.load_state_dict(stage1_state, strict=True)
    result = train_stage(
        model,
        data,
        params.stage2,
        mode="binary",
        seed=params.seed,
        augment=augmentation(params),
        device=resolve_device(params.device),
        init_signs=init_signs,
        teacher=teacher,
        observers=observers,
        progress="stage 2" if progress else None,
    )
    return StageRun(model, result, teacher)
