"""``python -m study.reproduce ablate``: the reproduction's ablations, cell by cell over several seeds.

    python -m study.reproduce ablate all                 # every ablation of params.yaml's `ablation` section
    python -m study.reproduce ablate wd --workers 2      # one ablation, two local worker processes
    python -m study.reproduce ablate all --quick         # few seeds and epochs: a smoke run (reports/quick/)
    python -m study.reproduce ablate all --slurm --tasks 8   # a SLURM job array (PostgreSQL, MLflow server)

Results go to ``reports/ablations/NAME.json`` and ``.csv``, the reproduction's results (the DVC
stage ``ablate``'s outputs). A ``--quick`` run writes them to ``reports/quick/`` (git-ignored)
instead, never over the reproduction's; ``--out`` sets the folder either way. The report on a quick
run: ``python -m study.reproduce report --results reports/quick`` (written beside the results).

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

Each cell (settings x seed) has a key of everything that determines it (the torch thread count
``threads`` included, never derived from the worker count) and is a trial of the ablation's Optuna
study on the search's storage (:mod:`study.reproduce.cell_study`), trained by whichever worker
claims it: this command's local processes (``--workers``), a job array (``--slurm``, ``--launcher
submitit-local``), or the same command on another host against the same database and MLflow
server. A cell done in the study or stored under its key is never trained again, so re-running
after a change trains only the cells whose settings changed; stage 1 comes from the stage-1 store,
so every stage-2 setting of one stage-1 setting shares one stage-1 run. The results files are
written from the study once every cell is done and hold only what the results determine (no run
ids, times or hosts), so every host and clone writes identical files; MLflow has the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd

from bnn import PreparedData
from study import launch, launch_flags
from study.artifacts import write_csv, write_json
from study.config import PROJECT_ROOT, LauncherConfig, Params, load_params
from study.errors import RunFailed
from study.paths import PREPARED_DATA, STORE_ROOT
from study.progress import progress
from study.reproduce import cell_study
from study.reproduce.cell_store import CellStore, shared_cells
from study.reproduce.cell_study import Standing
from study.reproduce.cell_worker import AblationRun, cell_name, load_study, storage_of, work
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
from study.stage1_store import stage1_key
from study.storage import GRACE_SECONDS, HEARTBEAT_SECONDS, default_storage, storage_url
from study.tracking import Tracker, tracking_uri
from study.workers import run_workers

RESULTS = PROJECT_ROOT / "reports" / "ablations"  # the DVC stage's outputs: only a full run writes them
QUICK_RESULTS = PROJECT_ROOT / "reports" / "quick"  # --quick (smoke) runs, git-ignored
SERIES = ("history", "histogram", "rel_histogram", "test_predictions")  # per cell, in the JSON only
STORE = STORE_ROOT / ".cache"


def watch(run: AblationRun, stop: threading.Event) -> None:
    """Progress over the ablation's done cells (a bar, or a line every 30 s in a log)."""
    study = load_study(run)
    bar = progress(len(run.keys), f"ablation {run.name}", "cell")
    while not stop.wait(1.0):
        bar.n = Standing.of(study.get_trials(deepcopy=False), run.keys, run.lost).finished()
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
    storage: str | None = None,
    launcher: LauncherConfig | None = None,
    heartbeat: int = HEARTBEAT_SECONDS,
    grace: int = GRACE_SECONDS,
) -> pd.DataFrame:
    """Run (or reuse) every cell of ``name`` on the prepared data set (the ``prepare`` stage's output);
    write ``<out_dir>/<name>.csv`` and ``.json`` (by default :func:`results_folder`'s). The cells are
    the trials of a study on ``storage`` (default: the search's), trained by ``workers`` local
    processes, or by ``launcher``'s job array, and by any other host working on the same study. The
    optimizer ablation extends its learning-rate sweeps until each optimum is bracketed
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
        name,
        params,
        base,
        parent,
        storage_url(storage, params.search.storage),
        study_name=run_key,
        store_dir=store_dir / "cells",
        cache_dir=store_dir / "stage1",
        data_path=data_path,
        workers=workers,
        heartbeat=heartbeat,
        grace=grace,
    )
    launcher = launcher or LauncherConfig()
    cells = expand(name, params, quick)
    results = train_cells(run, cells, data, tracker, launcher)
    configured = {optimizer: cfg["lr"] for optimizer, cfg in settings.optimizers.items()}
    while name == "optimizer" and (
        todo := extensions(lr_sweep(runs_frame(results)), configured, settings.lr_extensions)
    ):
        cells = [*cells, *extension_cells(settings, todo)]
        results = train_cells(run, cells, data, tracker, launcher)
    table = runs_frame(results)
    write_results(out_dir, name, quick, params, cells, data, run_key, results, table)
    failed = table["failure"].notna().sum() if "failure" in table else 0
    kind = " (quick: a smoke run)" if quick else ""
    print(f"ablation {name}{kind}: {len(cells)} cells ({failed} failed) -> {out_dir / name}.csv and .json")
    return table


def write_results(
    out_dir: Path,
    name: str,
    quick: bool,
    params: Params,
    cells: list[Cell],
    data: PreparedData,
    run_key: str,
    results: list[dict],
    table: pd.DataFrame,
) -> None:
    """``<name>.csv`` (a row per cell) and ``<name>.json`` (the settings, and every cell with its series)."""
    settings = ablation_settings(params, quick)
    base = ablation_base(params, quick)
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


def trial_attrs(cell: Cell, base: Params, data: PreparedData) -> dict:
    """A cell's user attributes in the study (beside its key): what it is, for optuna-dashboard, and the
    stage-1 key of a two-stage cell (workers leave a cell whose stage 1 is in training elsewhere)."""
    attrs = {"ablation": cell.ablation, "kind": cell.kind, **{f"cell.{k}": v for k, v in cell.labels}}
    if cell.kind == "two_stage":
        attrs[cell_study.STAGE1] = stage1_key(cell.params(base), data)
    return attrs


def train_cells(
    run: AblationRun, cells: list[Cell], data: PreparedData, tracker: Tracker, launcher: LauncherConfig
) -> list[dict]:
    """Every cell's result, from the study: this command's workers (and whoever else works on the study)
    enqueue and train the cells not done until every one is done."""
    keys = [cell.key(run.base, data) for cell in cells]
    attrs = {key: trial_attrs(cell, run.base, data) for cell, key in zip(cells, keys, strict=True)}
    store = CellStore(run.store_dir, shared_cells(tracker))
    study = cell_study.open_study(run.study_name, storage_of(run))
    done = Standing.of(study.get_trials(deepcopy=False), keys).done
    lost = frozenset(key for key in done if store.get(key) is None)
    run = replace(run, cells=cells, keys=keys, attrs=attrs, lost=lost)
    if launcher.kind == "local":
        run_workers(work, run, run.workers, lambda stop: watch(run, stop))
    else:
        run_array(run, launcher)
    results = []
    for cell, key in zip(cells, keys, strict=True):
        result = store.get(key)
        if result is None:
            raise RunFailed(
                f"cell {cell_name(cell)} ({key}) is done in the study, but no store holds its result"
            )
        results.append({"ablation": run.name, "kind": cell.kind, "key": key, **dict(cell.labels), **result})
    return results


def run_array(run: AblationRun, launcher: LauncherConfig) -> None:
    """The workers as ``launcher.tasks`` array tasks (:mod:`study.launch`); waits, with progress, until
    every cell is done or every task has ended; a line per failed task."""
    made = launch.executor(launcher, f"bnn-ablation-{run.name}", run.params.threads, run.params.cpu_isa)
    launch.check_stores(run.storage, run.params.tracking.uri, launcher.kind, run.storage != default_storage())
    # Every task uses this process's tracking URI, not its own environment's.
    tracking = run.params.tracking.model_copy(update={"uri": tracking_uri(run.params.tracking.uri)})
    tasks_run = replace(
        run, params=run.params.model_copy(update={"tracking": tracking}), workers=launcher.tasks
    )
    array = launch.submit(made, launcher.kind, work, tasks_run, launcher.tasks)
    print(f"ablation {run.name}: {len(run.keys)} cells, {launcher.tasks} worker task(s): {array.label()}",
          flush=True)  # fmt: skip
    study = load_study(run)
    try:
        array.wait_for(lambda: Standing.of(study.get_trials(deepcopy=False), run.keys, run.lost).complete,
                       lambda stop: watch(run, stop))  # fmt: skip
    except KeyboardInterrupt:
        tasks = array.interrupt()
        print(f"interrupted; {tasks}; the same command goes on from the cells done", file=sys.stderr)
        raise SystemExit(130) from None
    for line in array.failures():
        print(line, file=sys.stderr)
    if not Standing.of(study.get_trials(deepcopy=False), run.keys, run.lost).complete:
        raise RunFailed(f"ablation {run.name}: the tasks ended before every cell was done; run the same "
                        "command again to go on from the cells done")  # fmt: skip


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """One row per cell, without its series (history, histograms, test predictions); accuracies are
    nan where a cell failed (a column even when every cell failed)."""
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in SERIES} for r in results])
    missing = {column: float("nan") for column in ("val_acc", "test_acc") if column not in frame}
    return frame.assign(**missing)


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--storage",
        help="the Optuna storage the cells are trials in (default: search.storage, else $OPTUNA_STORAGE, "
        "else sqlite:///<project>/optuna.db); every host given the same database and MLflow tracking "
        "server shares the cells",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        help=f"seconds between a running cell's heartbeats (default {HEARTBEAT_SECONDS})",
    )
    parser.add_argument(
        "--grace",
        type=int,
        help="seconds without heartbeat after which a cell's worker counts as dead and the cell is trained "
        f"again (default {GRACE_SECONDS}, at least 3 heartbeats)",
    )
    launch_flags.add_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its INFO lines; the progress says what matters
    params = load_params(args.params)
    launcher = launch_flags.from_args(args, params.launcher)
    workers = args.workers or params.ablation.workers
    if workers < 1 or (args.tasks is not None and args.tasks < 1) or (args.heartbeat or 1) < 1:
        parser.error("--workers, --tasks and --heartbeat must be at least 1")
    timing = {
        "heartbeat": args.heartbeat or HEARTBEAT_SECONDS,
        "grace": args.grace or max(GRACE_SECONDS, 3 * (args.heartbeat or 0)),
    }
    for name in ABLATIONS if args.ablation == "all" else (args.ablation,):
        run_ablation(
            name,
            params,
            quick=args.quick,
            workers=workers,
            out_dir=args.out,
            data_path=args.data,
            storage=args.storage,
            launcher=launcher,
            **timing,
        )
