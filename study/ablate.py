"""``python -m study.ablate``: the reproduction's ablations, cell by cell over several seeds.

    python -m study.ablate all                 # every ablation of params.yaml's `ablation` section
    python -m study.ablate wd --workers 2      # one ablation, two local worker processes
    python -m study.ablate all --quick         # few seeds and epochs: a smoke run

Ablations (grids in ``params.yaml`` → ``ablation``):

- ``wd``: stage-1 weight decay x stage-2 weight decay, two-stage training;
- ``optimizer``: Adam against SGD, each at its own learning rate, for the binary network (two
  stages) and for the same network real-valued (one stage of the same total epochs);
- ``stages``: two-stage training against fully binary training from scratch for the same total
  epochs (stage 2's settings).

Each cell (settings x seed) is stored under a key of everything that determines it, so re-running
after a change trains only the cells whose settings changed; stage 1 comes from the stage-1 store,
so every stage-2 setting of one stage-1 setting shares one stage-1 run. Workers (local processes,
or hosts sharing the project folder) claim cells with a file lock and never train one twice.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
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
    evaluate,
    latent_histogram,
    train_stage,
)
from bnn.train import resolve_device
from study.artifacts import atomic_write, write_csv, write_json
from study.cache import Stage1Cache, code_fingerprint
from study.cli import run_main
from study.config import PROJECT_ROOT, Params, load_params
from study.runner import augmentation, load_teacher, new_model, prepare, run_stage2
from study.tracking import Tracker
from study.workers import run_workers

ABLATIONS = ("wd", "optimizer", "stages")
RESULTS = PROJECT_ROOT / "reports" / "ablations"
STORE = PROJECT_ROOT / ".cache"
NEAR = 0.1  # half-width of the bands around 0 and +-1 in which latent-weight mass is measured


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
            params.training_key("seed", "model", "stage1", "stage2", "distill"),
            params.data.augment.model_dump_json(),
            data.fingerprint(),
            code_fingerprint(),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def ablation_base(params: Params, quick: bool) -> Params:
    """The pipeline's params with the ablation's epochs (and the quick variant's) applied."""
    settings = params.ablation
    epochs = settings.quick_epochs if quick else settings.epochs
    return params.with_overrides({"stage1.epochs": epochs, "stage2.epochs": epochs})


def seeds(params: Params, quick: bool) -> list[int]:
    return list(range(params.ablation.quick_seeds if quick else params.ablation.seeds))


def expand(name: str, params: Params, quick: bool = False) -> list[Cell]:
    """The cells of one ablation, in a fixed order (grid values, then seeds)."""
    settings = params.ablation
    cells = []
    for seed in seeds(params, quick):
        if name == "wd":
            for wd1 in settings.weight_decay.stage1:
                for wd2 in settings.weight_decay.stage2:
                    labels = (("stage1.weight_decay", wd1), ("stage2.weight_decay", wd2), ("seed", seed))
                    cells.append(Cell(name, "two_stage", labels, labels))
        elif name == "optimizer":
            for optimizer, cfg in settings.optimizers.items():
                overrides = tuple(
                    (f"{stage}.{k}", v)
                    for stage in ("stage1", "stage2")
                    for k, v in {"optimizer": optimizer, **cfg}.items()
                )
                for network, kind in (("binary", "two_stage"), ("real", "real")):
                    labels = (("optimizer", optimizer), ("network", network), ("seed", seed))
                    cells.append(Cell(name, kind, (*overrides, ("seed", seed)), labels))
        elif name == "stages":
            for training, kind in (("two-stage", "two_stage"), ("one-stage", "one_stage")):
                cells.append(Cell(name, kind, (("seed", seed),), (("training", training), ("seed", seed))))
        else:
            raise ValueError(f"unknown ablation {name!r}, choose from {ABLATIONS}")
    return sorted(cells, key=lambda c: dict(c.labels)["seed"])


def latent_mass(model: torch.nn.Module) -> dict[str, float]:
    """Fraction of binary latent weights within ``NEAR`` of 0 and of +-1 (AdamBNN's three peaks)."""
    hist = latent_histogram(model, bins=600, limit=1.5)
    edges, counts = hist["edges"], hist["counts"]
    total = sum(counts)
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    near_zero = sum(n for c, n in zip(centres, counts, strict=True) if abs(c) <= NEAR)
    near_one = sum(n for c, n in zip(centres, counts, strict=True) if abs(abs(c) - 1) <= NEAR)
    return {"mass_near_zero": near_zero / total, "mass_near_one": near_one / total}


def run_cell(cell: Cell, base: Params, data: PreparedData, stage1_store: Stage1Cache, observer=None) -> dict:
    """Train one cell; returns its metrics, per-epoch history and end-of-training latent histogram."""
    params = cell.params(base)
    device = resolve_device(params.device)
    history: list[dict] = []

    def record(stage: int, offset: int):
        def observe(epoch: dict) -> None:
            history.append({**epoch, "stage": stage, "step": offset + epoch["epoch"]})
            if observer is not None:
                observer(history[-1])

        return observe

    stage1_cached = None
    if cell.kind == "two_stage":
        stage1 = stage1_store.run(params, data, observers=(record(1, 0),))
        stage1_cached = stage1.cached
        stage2 = run_stage2(
            params,
            data,
            stage1.state_dict,
            stage1.init_signs,
            teacher=load_teacher(params, data, stage1.teacher_state_dict),
            observers=(record(2, params.stage1.epochs),),
        )
        result, model = stage2.result, stage2.model
    else:
        total = params.stage1.epochs + params.stage2.epochs
        source = params.stage1 if cell.kind == "real" else params.stage2
        cfg = StageConfig.model_validate({**source.model_dump(), "epochs": total})
        mode = "real" if cell.kind == "real" else "binary"
        model = new_model(params, data)
        result = train_stage(
            model,
            data,
            cfg,
            mode=mode,
            seed=params.seed,
            augment=augmentation(params),
            device=device,
            track_signs=mode != "real",
            observers=(record(1, 0),),
        )
    test = evaluate(model, data.test, data, device=device)
    final = result.final
    return {
        "test_acc": test["acc"],
        "val_acc": final["val_acc"],
        "ff_ratio": final.get("ff_ratio", float("nan")),
        "c2i_ratio": final.get("c2i_stage", float("nan")),
        "c2i_init": final.get("c2i_init", float("nan")),
        "changed_from_init": final.get("changed_from_init", float("nan")),
        "saturation": test["saturation"],
        "stage1_cached": stage1_cached,
        **latent_mass(model),
        "history": history,
        "histogram": latent_histogram(model, bins=121, limit=1.5),
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
    threads: int


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
    torch.set_num_threads(run.threads)
    data = prepare(run.params)
    store, stage1_store = CellStore(run.store_dir), Stage1Cache(run.cache_dir)
    tracker = Tracker.from_params(run.params)
    order = list(zip(run.cells, run.keys, strict=True))
    order = order[worker:] + order[:worker]  # workers start at different cells
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
        "ff_ratio",
        "c2i_stage",
        "c2i_init",
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


def run_ablation(
    name: str,
    params: Params,
    *,
    quick: bool = False,
    workers: int = 1,
    out_dir: Path = RESULTS,
    store_dir: Path = STORE,
) -> pd.DataFrame:
    """Run (or reuse) every cell of ``name``; write ``<out_dir>/<name>.csv`` and ``.json``."""
    base = ablation_base(params, quick)
    cells = expand(name, params, quick)
    data = prepare(params)
    keys = [cell.key(base, data) for cell in cells]
    tracker = Tracker.from_params(params)
    parent_key = hashlib.sha256(
        f"{name}|{base.training_key('model', 'stage1', 'stage2', 'distill')}|{data.fingerprint()}".encode()
    ).hexdigest()[:16]
    parent = tracker.find_or_create_parent(
        f"ablation-{parent_key}",
        f"ablation {name}",
        {"bnn.kind": "ablation", "ablation": name, "data_hash": data.fingerprint(), "quick": str(quick)},
    )
    run = AblationRun(
        name,
        params,
        base,
        cells,
        keys,
        parent,
        store_dir / "cells",
        store_dir / "stage1",
        threads=max(1, (os.cpu_count() or 1) // workers),
    )
    store = CellStore(run.store_dir)
    run_workers(work, run, workers, lambda stop: watch(store, keys, f"ablation {name}", stop))
    _log_reused_children(tracker, run, store)

    results = [
        {"ablation": name, "kind": cell.kind, "key": key, **dict(cell.labels), **store.get(key)}
        for cell, key in zip(cells, keys, strict=True)
    ]
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("history", "histogram")} for r in results])
    write_csv(out_dir / f"{name}.csv", table)
    model = f"{params.model.name} width {params.model.width}"
    summary = {
        "ablation": name,
        "quick": quick,
        "epochs": base.stage1.epochs,
        "seeds": seeds(params, quick),
        "data": params.data.name,
        "model": model,
        "optimizers": params.ablation.optimizers,
        "parent_run_id": parent,
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
    parser = argparse.ArgumentParser(prog="python -m study.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("ablation", choices=(*ABLATIONS, "all"), help="which ablation to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ablation.quick_seeds seeds and ablation.quick_epochs epochs per stage",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: ablation.workers in params.yaml)",
    )
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default %(default)s)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    workers = args.workers or params.ablation.workers
    if workers < 1:
        parser.error("--workers must be at least 1")
    for name in ABLATIONS if args.ablation == "all" else (args.ablation,):
        run_ablation(name, params, quick=args.quick, workers=workers, out_dir=args.out)


if __name__ == "__main__":
    run_main(main)
