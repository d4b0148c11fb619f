"""``python -m study.reproduce ablate``: the reproduction's ablations, cell by cell over several seeds.

    python -m study.reproduce ablate all                 # every ablation of params.yaml's `ablation` section
    python -m study.reproduce ablate wd --workers 2      # one ablation, two local worker processes
    python -m study.reproduce ablate all --quick         # few seeds and epochs: a smoke run (reports/quick/)

Results go to ``reports/ablations/NAME.json`` and ``.csv``, the reproduction's results (the DVC
stage ``ablate``'s outputs). A ``--quick`` run writes them to ``reports/quick/`` (git-ignored)
instead, never over the reproduction's; ``--out`` sets the folder either way. The report on a quick
run: ``python -m study.reproduce report --results reports/quick --out reports/quick/reproduction.md``.

Ablations (grids in ``params.yaml`` → ``ablation``):

- ``wd``: stage-1 weight decay x stage-2 weight decay, two-stage training;
- ``optimizer``: Adam against SGD, each at every learning rate of its small sweep
  (``ablation.optimizers.<name>.lr`` is a list), for the binary network (two stages) and for the
  same network real-valued (one stage of the same total epochs); rows carry an ``lr`` column;
- ``stages``: two-stage training against fully binary training from scratch for the same total
  epochs (stage 2's settings);
- ``latent``: Adam against SGD in stage 2 from the same stage 1 (the pipeline's), with a stage-2
  budget of its own (``ablation.latent``: more epochs, a smaller batch), for the latent-weight
  shape (AdamBNN's three peaks) and the dead weights (which Adam moves and SGD hardly).

Every cell records its test and validation accuracy, the final FF and C2I ratios, saturation (test
split in eval mode, and ``saturation_train`` on training batches), the dead weights of
:mod:`bnn.diagnostics` (``dead_beyond_clip``: no gradient through the weight binarizer;
``dead_small_grad``: a tiny but nonzero gradient; ``dead_relative_update``: how far the optimizer
still moves those, relative to all), the latent-weight measures of :mod:`bnn.latent` (absolute,
scale-free and mixtures), ``median_abs_start`` (median ``|w|`` when its last stage starts: stage
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
import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from bnn import NonFiniteLossError, PreparedData
from study.artifacts import write_csv, write_json
from study.config import PROJECT_ROOT, Params, load_params
from study.paths import PREPARED_DATA, STORE_ROOT
from study.progress import progress
from study.reproduce.cell_store import CellStore
from study.reproduce.cells import (
    ABLATIONS,
    Cell,
    ablation_base,
    ablation_settings,
    expand,
    extension_cells,
    seeds,
)
from study.reproduce.lr_bracket import extensions, lr_sweep
from study.reproduce.training import run_cell
from study.stage1_store import Stage1Cache
from study.tracking import Tracker
from study.workers import run_workers

RESULTS = PROJECT_ROOT / "reports" / "ablations"  # the DVC stage's outputs: only a full run writes them
QUICK_RESULTS = PROJECT_ROOT / "reports" / "quick"  # --quick (smoke) runs, git-ignored
SERIES = ("history", "histogram", "rel_histogram", "test_predictions")  # per cell, in the JSON only
STORE = STORE_ROOT / ".cache"


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
        "dead_small_grad",
        "dead_relative_update",
    )
    return lambda epoch: mlrun.log_metrics(
        {k: epoch[k] for k in keys if k in epoch}, step=epoch["step"], prefix=f"stage{epoch['stage']}."
    )


def watch(store: CellStore, keys: list[str], label: str, stop) -> None:
    bar = progress(len(keys), label, "cell")
    while not stop.wait(1.0):
        bar.n = sum(store.path(k).exists() for k in keys)
        bar.refresh()
    bar.close()


def parent_run_key(name: str, base: Params, data: PreparedData) -> str:
    """The tag value that finds the ablation's MLflow parent run (``bnn.run_key``): made of settings
    and data only, so it is the same in every clone (the run id is not)."""
    content = (
        f"{name}|{base.training_key('cpu_isa', 'model', 'stage1', 'stage2', 'distill')}|{data.fingerprint()}"
    )
    return f"ablation-{hashlib.sha256(content.encode()).hexdigest()[:16]}"


def stage_budget(params: Params) -> dict[str, int]:
    return {
        f"{stage}_{k}": getattr(getattr(params, stage), k)
        for stage in ("stage1", "stage2")
        for k in ("epochs", "batch_size")
    }


def results_folder(quick: bool, out_dir: Path | None = None) -> Path:
    """Where an ablation's results go: ``out_dir`` if given, else ``reports/ablations/`` (the DVC
    stage's outputs) for a full run and ``reports/quick/`` for a quick one, which never overwrites them."""
    if out_dir is not None:
        return out_dir
    return QUICK_RESULTS if quick else RESULTS


def run_ablation(
    name: str,
    params: Params,
    *,
    quick: bool = False,
    workers: int = 1,
    out_dir: Path | None = None,
    store_dir: Path = STORE,
    data_path: Path = PREPARED_DATA,
) -> pd.DataFrame:
    """Run (or reuse) every cell of ``name`` on the prepared data set (the ``prepare`` stage's output);
    write ``<out_dir>/<name>.csv`` and ``.json`` (by default :func:`results_folder`'s). The optimizer
    ablation extends its learning-rate sweeps until each optimum is bracketed
    (:mod:`study.reproduce.lr_bracket`)."""
    out_dir = results_folder(quick, out_dir)
    settings = ablation_settings(params, quick)
    base = ablation_base(params, quick)
    data = PreparedData.load(data_path)
    tracker = Tracker.for_ablations(params)
    run_key = parent_run_key(name, base, data)
    parent = tracker.find_or_create_parent(
        run_key,
        f"ablation {name}",
        {"bnn.kind": "ablation", "ablation": name, "data_hash": data.fingerprint(), "quick": str(quick)},
    )
    run = AblationRun(
        name, params, base, [], [], parent, store_dir / "cells", store_dir / "stage1", workers, data_path
    )
    cells = expand(name, params, quick)
    results = train_cells(run, cells, data, tracker)
    configured = {optimizer: cfg["lr"] for optimizer, cfg in settings.optimizers.items()}
    while name == "optimizer" and (
        todo := extensions(lr_sweep(runs_frame(results)), configured, settings.lr_extensions)
    ):
        cells = [*cells, *extension_cells(settings, todo)]
        results = train_cells(run, cells, data, tracker)
    table = runs_frame(results)
    write_csv(out_dir / f"{name}.csv", table)
    summary = {
        "ablation": name,
        "quick": quick,
        "epochs": base.stage1.epochs,
        "budget": stage_budget(cells[0].params(base)),
        "seeds": seeds(name, settings),
        "data": params.data.name,
        "test_size": len(data.test),
        "test_labels": data.test.labels.tolist(),
        "cpu_isa": params.cpu_isa,
        "model": f"{params.model.name} width {params.model.width}",
        "optimizers": settings.latent.optimizers if name == "latent" else settings.optimizers,
        "lr_extensions": settings.lr_extensions,
        "mlflow_run_key": run_key,
        "cells": results,
    }
    write_json(out_dir / f"{name}.json", summary)
    failed = table["failure"].notna().sum() if "failure" in table else 0
    kind = " (quick: a smoke run)" if quick else ""
    print(f"ablation {name}{kind}: {len(cells)} cells ({failed} failed) -> {out_dir / name}.csv and .json")
    return table


def train_cells(run: AblationRun, cells: list[Cell], data: PreparedData, tracker: Tracker) -> list[dict]:
    """Train every cell the store does not hold (``run.workers`` processes); every cell's result."""
    keys = [cell.key(run.base, data) for cell in cells]
    run = replace(run, cells=cells, keys=keys)
    store = CellStore(run.store_dir)
    run_workers(work, run, run.workers, lambda stop: watch(store, keys, f"ablation {run.name}", stop))
    _log_reused_children(tracker, run, store)
    return [
        {"ablation": run.name, "kind": cell.kind, "key": key, **dict(cell.labels), **store.get(key)}
        for cell, key in zip(cells, keys, strict=True)
    ]


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """One row per cell, without its series (history, histograms, test predictions); accuracies are
    nan where a cell failed (a column even when every cell failed)."""
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in SERIES} for r in results])
    missing = {column: float("nan") for column in ("val_acc", "test_acc") if column not in frame}
    return frame.assign(**missing)


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
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.reproduce ablate",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("ablation", choices=(*ABLATIONS, "all"), help="which ablation to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ablation.quick_seeds seeds and ablation.quick_epochs epochs per stage (latent included): a "
        "smoke run, its results in reports/quick/ (git-ignored) unless --out says where",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: ablation.workers in params.yaml)",
    )
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument(
        "--out",
        type=Path,
        help="results folder (default: reports/ablations/, the DVC stage's outputs; with --quick, "
        "reports/quick/)",
    )
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
