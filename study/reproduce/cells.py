"""The cells of an ablation: one training run each (settings x seed), and the key that names its result.

The grids come from ``params.yaml``'s ``ablation`` section; every cell takes the rest of its settings
from the pipeline's ``stage1``/``stage2`` sections, except the weight decays of the cells that do not
sweep them (``ablation.recipe_weight_decay``). A cell's key hashes everything that determines its
result, the training code's source and what a cell records (``training.py``) included, so a stored
result is reused only by what made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnn import PreparedData
from study.config import AblationConfig, Params
from study.stage1_store import code_fingerprint

CELL_CODE_HASH = hashlib.sha256(Path(__file__).with_name("training.py").read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One run of an ablation: how it trains (``kind``), its settings, and the labels it is reported by."""

    ablation: str
    kind: str  # "two_stage" | "one_stage" | "real"
    overrides: tuple[tuple[str, Any], ...]
    labels: tuple[tuple[str, Any], ...] = field(default=())

    def params(self, base: Params) -> Params:
        return base.with_overrides(dict(self.overrides))

    def key(self, base: Params, data: PreparedData) -> str:
        params = self.params(base)
        parts = [
            self.kind,
            params.training_key("seed", "threads", "cpu_isa", "model", "stage1", "stage2", "distill"),
            params.data.augment.model_dump_json(),
            data.fingerprint(),
            code_fingerprint(),
            CELL_CODE_HASH,  # what a cell records (study/reproduce/training.py) is part of its result
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def ablation_settings(params: Params, quick: bool) -> AblationConfig:
    """``params.ablation``; with ``quick``, its quick seeds and epochs in every ablation (latent too)."""
    settings = params.ablation
    if not quick:
        return settings
    short = {"seeds": settings.quick_seeds, "epochs": settings.quick_epochs}
    latent = settings.latent.model_copy(update=short)
    return settings.model_copy(update={**short, "seeds_by_ablation": {}, "latent": latent})


def ablation_base(params: Params, quick: bool) -> Params:
    """The pipeline's params with the ablation's epochs (and the quick variant's) and the recipe's
    weight decays (``ablation.recipe_weight_decay``, not the pipeline's) applied."""
    settings = ablation_settings(params, quick)
    return params.with_overrides(
        {
            "stage1.epochs": settings.epochs,
            "stage2.epochs": settings.epochs,
            "stage1.weight_decay": settings.recipe_weight_decay.stage1,
            "stage2.weight_decay": settings.recipe_weight_decay.stage2,
        }
    )


def seeds(name: str, settings: AblationConfig) -> list[int]:
    if name == "latent":
        return list(range(settings.latent.seeds))
    return list(range(settings.seeds_by_ablation.get(name, settings.seeds)))


def optimizer_overrides(stages: tuple[str, ...], optimizer: str, settings: dict[str, Any]) -> tuple:
    return tuple(
        (f"{stage}.{k}", v) for stage in stages for k, v in {"optimizer": optimizer, **settings}.items()
    )


def wd_cells(settings: AblationConfig, seed: int) -> list[Cell]:
    cells = []
    for wd1 in settings.weight_decay.stage1:
        for wd2 in settings.weight_decay.stage2:
            labels = (("stage1.weight_decay", wd1), ("stage2.weight_decay", wd2), ("seed", seed))
            cells.append(Cell("wd", "two_stage", labels, labels))
    return cells


NETWORKS = {"binary": "two_stage", "real": "real"}  # the optimizer ablation's networks, by how they train


def optimizer_cell(settings: AblationConfig, optimizer: str, lr: float, network: str, seed: int) -> Cell:
    """One optimizer at one learning rate, in both stages, for the binary or the real-valued network."""
    overrides = optimizer_overrides(
        ("stage1", "stage2"), optimizer, {**settings.optimizers[optimizer], "lr": lr}
    )
    labels = (("optimizer", optimizer), ("lr", lr), ("network", network), ("seed", seed))
    return Cell("optimizer", NETWORKS[network], (*overrides, ("seed", seed)), labels)


def optimizer_cells(settings: AblationConfig, seed: int) -> list[Cell]:
    """Each optimizer at each learning rate of its configured sweep; binary and real-valued."""
    return [
        optimizer_cell(settings, optimizer, lr, network, seed)
        for optimizer, cfg in settings.optimizers.items()
        for lr in cfg["lr"]
        for network in NETWORKS
    ]


def extension_cells(settings: AblationConfig, todo: list[tuple[str, str, float]]) -> list[Cell]:
    """The optimizer ablation's cells at learning rates beyond its configured sweeps: one per
    (network, optimizer, lr) of ``todo`` and seed (see :mod:`study.reproduce.lr_bracket`)."""
    return [
        optimizer_cell(settings, optimizer, lr, network, seed)
        for seed in seeds("optimizer", settings)
        for network, optimizer, lr in todo
    ]


def stages_cells(settings: AblationConfig, seed: int) -> list[Cell]:
    return [
        Cell("stages", kind, (("seed", seed),), (("training", training), ("seed", seed)))
        for training, kind in (("two-stage", "two_stage"), ("one-stage", "one_stage"))
    ]


def latent_cells(settings: AblationConfig, seed: int) -> list[Cell]:
    """Each optimizer in stage 2 only (stage 1 stays the pipeline's, so both start from the same
    weights), with the latent ablation's stage-2 budget."""
    latent = settings.latent
    budget = (("stage2.epochs", latent.epochs), ("stage2.batch_size", latent.batch_size))
    return [
        Cell(
            "latent",
            "two_stage",
            (*optimizer_overrides(("stage2",), optimizer, cfg), *budget, ("seed", seed)),
            (("optimizer", optimizer), ("seed", seed)),
        )
        for optimizer, cfg in latent.optimizers.items()
    ]


EXPANSIONS = {"wd": wd_cells, "optimizer": optimizer_cells, "stages": stages_cells, "latent": latent_cells}
ABLATIONS = tuple(EXPANSIONS)


def expand(name: str, params: Params, quick: bool = False) -> list[Cell]:
    """The cells of one ablation, in a fixed order (seeds, then grid values)."""
    if name not in EXPANSIONS:
        raise ValueError(f"unknown ablation {name!r}, choose from {ABLATIONS}")
    settings = ablation_settings(params, quick)
    return [cell for seed in seeds(name, settings) for cell in EXPANSIONS[name](settings, seed)]
