"""``python -m study.reproduce ablate``: the reproduction's ablations, cell by cell over several seeds.

    python -m study.reproduce ablate all                 # every ablation of params.yaml's `ablation` section
    python -m study.reproduce ablate wd --workers 2      # one ablation, two local worker processes
    python -m study.reproduce ablate all --quick         # few seeds and epochs: a smoke run

Ablations (grids in ``params.yaml`` → ``ablation``):

- ``wd``: stage-1 weight decay x stage-2 weight decay, two-stage training;
- ``optimizer``: Adam against SGD, each at every learning rate of its small sweep
  (``ablation.optimizers.<name>.lr`` is a list), for the binary network (two stages) and for the
  same network real-valued (one stage of the same total epochs); rows carry an ``lr`` column;
- ``stages``: two-stage training against fully binary training from scratch for the same total
  epochs (stage 2's settings);
- ``latent``: Adam against SGD in stage 2 from the same stage 1 (the pipeline's), with a stage-2
  budget of its own (``ablation.latent``: more epochs, a smaller batch), for the latent-weight
  shape (AdamBNN's three peaks) and ReCU's dead weights.

Every cell records its test and validation accuracy, the final FF and C2I ratios, saturation (test
split in eval mode, and ``saturation_train`` on training batches), the dead-weight fractions
(``dead_beyond_clip``, ``dead_zero_grad``), the latent-weight measures of :mod:`bnn.latent`
(absolute and scale-free), ``median_abs_start`` (median ``|w|`` when its last stage starts: stage
1's result for two-stage cells), ``lr_budget`` (the learning rate summed over the last stage's
optimizer steps: about the farthest Adam can move a weight), its per-epoch history, and the
histograms of ``w`` and of ``w / q99``.

Each cell (settings x seed) is stored under a key of everything that determines it (the torch
thread count ``threads`` included, never derived from the worker count), so re-running after a
change trains only the cells whose settings changed; stage 1 comes from the stage-1 store, so
every stage-2 setting of one stage-1 setting shares one stage-1 run. Workers (local processes, or
hosts sharing the project folder) claim cells with a file lock and never train one twice. The
results files hold only what the results determine (no run ids, times or hosts), so two clones
give identical files; MLflow has the rest.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from bnn import (
    NonFiniteLossError,
    PreparedData,
    StageConfig,
    StageResult,
    evaluate,
    latent_histogram,
    latent_measures,
    median_abs_weight,
    rel_histogram,
    train_stage,
)
from bnn.train import resolve_device
from study.artifacts import atomic_write, write_csv, write_json
from study.config import PROJECT_ROOT, AblationConfig, Params, load_params
from study.paths import PREPARED_DATA, STORE_ROOT
from study.runner import augmentation, load_teacher, new_model, run_stage2
from study.stage1_store import Stage1Cache, code_fingerprint
from study.tracking import Tracker
from study.workers import run_workers

RESULTS = PROJECT_ROOT / "reports" / "ablations"
STORE = STORE_ROOT / ".cache"
HISTOGRAM_BINS = 121
# Columns taken from the last stage's final record (NaN where that stage does not track them).
FINAL_COLUMNS = {
    "val_acc": "val_acc",
    "ff_ratio": "ff_ratio",
    "c2i_stage": "c2i_ratio",
    "c2i_init": "c2i_init",
    "changed_from_init": "changed_from_init",
    "saturation_train": "saturation_train",
    "dead_beyond_clip": "dead_beyond_clip",
    "dead_zero_grad": "dead_zero_grad",
}


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
            params.training_key("seed", "threads", "model", "stage1", "stage2", "distill"),
            params.data.augment.model_dump_json(),
            data.fingerprint(),
            code_fingerprint(),
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


def optimizer_cells(settings: AblationConfig, seed: int) -> list[Cell]:
    """Each optimizer at each learning rate of its sweep, in both stages; binary and real-valued."""
    cells = []
    for optimizer, cfg in settings.optimizers.items():
        for lr in cfg["lr"]:
            overrides = optimizer_overrides(("stage1", "stage2"), optimizer, {**cfg, "lr": lr})
            for network, kind in (("binary", "two_stage"), ("real", "real")):
                labels = (("optimizer", optimizer), ("lr", lr), ("network", network), ("seed", seed))
                cells.append(Cell("optimizer", kind, (*overrides, ("seed", seed)), labels))
    return cells


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


@dataclass
class Trained:
    """A cell's network after training, its last stage's result and settings, and where its weights
    stood when that stage started."""

    model: torch.nn.Module
    result: StageResult
    last_stage: StageConfig
    median_abs_start: float
    stage1_cached: bool | None = None


def train_two_stage(params: Params, data: PreparedData, stage1_store: Stage1Cache, record) -> Trained:
    stage1 = stage1_store.run(params, data, observers=(record(1, 0),))
    start = new_model(params, data)
    start.load_state_dict(stage1.state_dict, strict=True)
    stage2 = run_stage2(
        params,
        data,
        stage1.state_dict,
        stage1.init_signs,
        teacher=load_teacher(params, data, stage1.teacher_state_dict),
        observers=(record(2, params.stage1.epochs),),
    )
    return Trained(stage2.model, stage2.result, params.stage2, median_abs_weight(start), stage1.cached)


def train_one_stage(kind: str, params: Params, data: PreparedData, record) -> Trained:
    """Fully binary from scratch (stage 2's settings) or real-valued (stage 1's), for both stages' epochs."""
    total = params.stage1.epochs + params.stage2.epochs
    source = params.stage1 if kind == "real" else params.stage2
    cfg = StageConfig.model_validate({**source.model_dump(), "epochs": total})
    mode = "real" if kind == "real" else "binary"
    model = new_model(params, data)
    start = median_abs_weight(model)
    result = train_stage(
        model,
        data,
        cfg,
        mode=mode,
        seed=params.seed,
        augment=augmentation(params),
        device=resolve_device(params.device),
        track_signs=mode != "real",
        observers=(record(1, 0),),
    )
    return Trained(model, result, cfg, start)


def lr_budget(history: list[dict], steps_per_epoch: int) -> float:
    """The learning rate summed over a stage's optimizer steps (the schedule changes it per epoch)."""
    return steps_per_epoch * sum(epoch["lr"] for epoch in history)


def run_cell(cell: Cell, base: Params, data: PreparedData, stage1_store: Stage1Cache, observer=None) -> dict:
    """Train one cell; returns its metrics, per-epoch history and end-of-training latent histograms.

    ``stage1_cached`` (whether stage 1 came from the store) depends on which worker got there first:
    it goes to MLflow, never into the results.
    """
    params = cell.params(base)
    history: list[dict] = []

    def record(stage: int, offset: int):
        def observe(epoch: dict) -> None:
            history.append({**epoch, "stage": stage, "step": offset + epoch["epoch"]})
            if observer is not None:
                observer(history[-1])

        return observe

    if cell.kind == "two_stage":
        trained = train_two_stage(params, data, stage1_store, record)
    else:
        trained = train_one_stage(cell.kind, params, data, record)
    model, final = trained.model, trained.result.final
    test = evaluate(model, data.test, data, device=resolve_device(params.device))
    steps_per_epoch = math.ceil(len(data.train) / trained.last_stage.batch_size)
    return {
        "test_acc": test["acc"],
        **{column: final.get(key, float("nan")) for key, column in FINAL_COLUMNS.items()},
        "saturation": test["saturation"],
        **latent_measures(model),
        "median_abs_start": trained.median_abs_start,
        "lr_budget": lr_budget(trained.result.history, steps_per_epoch),
        "stage1_cached": trained.stage1_cached,
        "history": history,
        "histogram": latent_histogram(model, bins=HISTOGRAM_BINS, limit=1.5),
        "rel_histogram": rel_histogram(model, bins=HISTOGRAM_BINS),
    }


class CellStore:
    """Cell results as JSON files named by cell key; a cell is claimed with a non-blocking lock."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        return json.loads(path.read_text()) if path.exists() else None

    @contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """Yields True when this process holds the cell (nobody else is training it)."""
        with open(self.root / f"{key}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, key: str, result: dict) -> None:
        atomic_write(self.path(key), lambda tmp: tmp.write_text(json.dumps(result)))


@dataclass
class AblationRun:
    """Everything a worker needs; picklable, so it crosses to spawned processes."""

    name: str
    params: Params
    base: Params
    cells: list[Cell]
    keys: list[str]
    parent_run_id: str
    store_dir: Path
    cache_dir: Path
    workers: int
    data_path: Path


def cell_name(cell: Cell) -> str:
    return " ".join(f"{k.split('.')[0] if '.' in k else k}={v}" for k, v in cell.labels)


def child_tags(cell: Cell, key: str) -> dict[str, str]:
    return {
        "bnn.kind": "ablation-cell",
        "cell_key": key,
        "ablation": cell.ablation,
        "cell_kind": cell.kind,
        **{f"cell.{k}": str(v) for k, v in cell.labels},
    }


def final_metrics(result: dict) -> dict[str, float]:
    return {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def work(run: AblationRun, worker: int = 0) -> None:
    """Train every cell nobody has stored or claimed; return when all cells are stored."""
    data = PreparedData.load(run.data_path)
    store, stage1_store = CellStore(run.store_dir), Stage1Cache(run.cache_dir)
    tracker = Tracker.for_ablations(run.params)
    order = list(zip(run.cells, run.keys, strict=True))
    start = worker * len(order) // run.workers  # far apart, so two rarely wait for one stage 1
    order = order[start:] + order[:start]
    while True:
        pending = [(cell, key) for cell, key in order if not store.path(key).exists()]
        if not pending:
            return
        trained = False
        for cell, key in pending:
            with store.claim(key) as mine:
                if not mine or store.path(key).exists():
                    continue
                with tracker.child(
                    run.parent_run_id,
                    cell_name(cell),
                    params=dict(cell.overrides),
                    tags=child_tags(cell, key),
                ) as mlrun:
                    observer = _epoch_logger(mlrun)
                    try:
                        result = run_cell(cell, run.base, data, stage1_store, observer=observer)
                        cached = result.pop("stage1_cached")
                        if cached is not None:
                            mlrun.set_tags({"stage1_cached": str(cached)})
                    except NonFiniteLossError as exc:  # recorded, not fatal: the ablation goes on
                        result = {"failure": str(exc)}
                        mlrun.set_tags({"failure": str(exc)})
                    mlrun.log_metrics(final_metrics(result))
                store.put(key, result)
                trained = True
        if not trained:
            time.sleep(1.0)  # the rest is being trained by other workers


def _epoch_logger(mlrun):
    """Per-epoch series as ``stage1.<metric>`` / ``stage2.<metric>`` (as in the search): unprefixed, their
    last step would hide the cell's final metrics (logged at step 0) in MLflow, e.g. test saturation."""
    keys = (
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "saturation",
        "saturation_train",
        "ff_ratio",
        "c2i_stage",
        "c2i_init",
        "dead_beyond_clip",
        "dead_zero_grad",
    )
    return lambda epoch: mlrun.log_metrics(
        {k: epoch[k] for k in keys if k in epoch}, step=epoch["step"], prefix=f"stage{epoch['stage']}."
    )


def watch(store: CellStore, keys: list[str], label: str, stop) -> None:
    bar = tqdm(total=len(keys), desc=label, unit="cell", disable=None)
    while not stop.wait(1.0):
        bar.n = sum(store.path(k).exists() for k in keys)
        bar.refresh()
    bar.close()


def parent_run_key(name: str, base: Params, data: PreparedData) -> str:
    """The tag value that finds the ablation's MLflow parent run (``bnn.run_key``): made of settings
    and data only, so it is the same in every clone (the run id is not)."""
    content = f"{name}|{base.training_key('model', 'stage1', 'stage2', 'distill')}|{data.fingerprint()}"
    return f"ablation-{hashlib.sha256(content.encode()).hexdigest()[:16]}"


def stage_budget(params: Params) -> dict[str, int]:
    return {
        f"{stage}_{k}": getattr(getattr(params, stage), k)
        for stage in ("stage1", "stage2")
        for k in ("epochs", "batch_size")
    }


def run_ablation(
    name: str,
    params: Params,
    *,
    quick: bool = False,
    workers: int = 1,
    out_dir: Path = RESULTS,
    store_dir: Path = STORE,
    data_path: Path = PREPARED_DATA,
) -> pd.DataFrame:
    """Run (or reuse) every cell of ``name`` on the prepared data set (the ``prepare`` stage's output);
    write ``<out_dir>/<name>.csv`` and ``.json``."""
    settings = ablation_settings(params, quick)
    base = ablation_base(params, quick)
    cells = expand(name, params, quick)
    data = PreparedData.load(data_path)
    keys = [cell.key(base, data) for cell in cells]
    tracker = Tracker.for_ablations(params)
    run_key = parent_run_key(name, base, data)
    parent = tracker.find_or_create_parent(
        run_key,
        f"ablation {name}",
        {"bnn.kind": "ablation", "ablation": name, "data_hash": data.fingerprint(), "quick": str(quick)},
    )
    run = AblationRun(
        name, params, base, cells, keys, parent, store_dir / "cells", store_dir / "stage1", workers, data_path
    )
    store = CellStore(run.store_dir)
    run_workers(work, run, workers, lambda stop: watch(store, keys, f"ablation {name}", stop))
    _log_reused_children(tracker, run, store)

    results = [
        {"ablation": name, "kind": cell.kind, "key": key, **dict(cell.labels), **store.get(key)}
        for cell, key in zip(cells, keys, strict=True)
    ]
    series = ("history", "histogram", "rel_histogram")
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in series} for r in results])
    write_csv(out_dir / f"{name}.csv", table)
    summary = {
        "ablation": name,
        "quick": quick,
        "epochs": base.stage1.epochs,
        "budget": stage_budget(cells[0].params(base)),
        "seeds": seeds(name, settings),
        "data": params.data.name,
        "test_size": len(data.test),
        "model": f"{params.model.name} width {params.model.width}",
        "optimizers": settings.latent.optimizers if name == "latent" else settings.optimizers,
        "mlflow_run_key": run_key,
        "cells": results,
    }
    write_json(out_dir / f"{name}.json", summary)
    failed = table["failure"].notna().sum() if "failure" in table else 0
    print(f"ablation {name}: {len(cells)} cells ({failed} failed) -> {out_dir / f'{name}.csv'}")
    return table


def _log_reused_children(tracker: Tracker, run: AblationRun, store: CellStore) -> None:
    """Cells reused from the store (trained for another ablation or an earlier run) get a child here too."""
    logged = {
        r.data.tags.get("cell_key")
        for r in tracker.client.search_runs(
            [tracker.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run.parent_run_id}'",
            max_results=50000,
        )
    }
    for cell, key in zip(run.cells, run.keys, strict=True):
        if key in logged:
            continue
        result = store.get(key)
        with tracker.child(
            run.parent_run_id,
            cell_name(cell),
            params=dict(cell.overrides),
            tags={**child_tags(cell, key), "reused": "true"},
        ) as mlrun:
            for epoch in result.get("history", []):
                _epoch_logger(mlrun)(epoch)
            mlrun.log_metrics(final_metrics(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m study.reproduce ablate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("ablation", choices=(*ABLATIONS, "all"), help="which ablation to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ablation.quick_seeds seeds and ablation.quick_epochs epochs per stage (latent included)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: ablation.workers in params.yaml)",
    )
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default %(default)s)")
    parser.add_argument(
        "--data", type=Path, default=PREPARED_DATA, help="the prepared data set (default %(default)s)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    workers = args.workers or params.ablation.workers
    if workers < 1:
        parser.error("--workers must be at least 1")
    for name in ABLATIONS if args.ablation == "all" else (args.ablation,):
        run_ablation(name, params, quick=args.quick, workers=workers, out_dir=args.out, data_path=args.data)

