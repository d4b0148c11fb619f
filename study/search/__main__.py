"""``python -m study.search``: an Optuna search over each stage's optimizer, learning rate and weight decay.

Every trial is a full two-stage run through the same code as the DVC pipeline (stage 1 from the
stage-1 store when its key was trained before), scored by stage-2 **validation** accuracy; the best
trial alone is then evaluated on the test split. Commands:

    python -m study.search --trials 50                 # embedded storage (optuna.db), one worker
    python -m study.search --trials 50 --workers 2     # two local worker processes
    python -m study.search --trials 200 --storage postgresql+psycopg2://user@db/bnn   # on every host
    python -m study.search --trials 200 --storage postgresql+psycopg2://user@db/bnn --slurm   # a job array

``--trials N`` means the study ends with N finished (complete or pruned) trials: running the same
command again after a crash or Ctrl-C completes the missing ones; it neither restarts nor overshoots.
Trials share stage 1: each picks one of a few stage-1 candidates (``search.stage1_candidates``,
see :mod:`study.search.candidates`), trained once and then read from the stage-1 store.

This module is the command line only; it imports torch, Optuna and MLflow after the arguments are
parsed, so ``--help`` answers at once. The study and its workers are in :mod:`study.search.optimize`,
one trial in :mod:`study.search.trial`, the results in :mod:`study.search.summary`; the workers as a
SLURM job array (params.yaml ``launcher``) in :mod:`study.search.cluster`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from study import launch_flags
from study.cli import run_main
from study.paths import PROJECT_ROOT, STORE_ROOT
from study.workers import WorkerPool

if TYPE_CHECKING:
    from study.config import Params
    from study.search.run import SearchRun

SEARCH_FLAGS = ("trials", "study_name", "workers", "seed", "pruner", "stage1_candidates")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags left out are ``None`` here and filled from params.yaml's ``search`` section by :func:`main`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    counts = (args.trials, args.workers, args.heartbeat, args.tasks)
    if any(value is not None and value < 1 for value in counts):
        parser.error("--trials, --workers, --tasks and --heartbeat must be at least 1")
    if args.stage1_candidates is not None and args.stage1_candidates < 0:
        parser.error("--stage1-candidates must be 0 or more")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.search",
        description="Optuna search over each stage's optimizer, learning rate and weight decay; every trial "
        "is a full two-stage run, scored by stage-2 validation accuracy. Flags left out take the value "
        "of the search section of params.yaml.",
    )
    parser.add_argument(
        "--trials", type=int, help="the study ends with this many finished (complete or pruned) trials"
    )
    parser.add_argument("--study-name", help="Optuna study name")
    parser.add_argument(
        "--storage",
        help="database URL shared by all workers, e.g. postgresql+psycopg2://user@host/db "
        "(default: search.storage, else $OPTUNA_STORAGE, else sqlite:///<project>/optuna.db); put the "
        "password in ~/.pgpass or the URL, it is never logged",
    )
    parser.add_argument(
        "--workers", type=int, help="local worker processes, each with params.yaml's `threads` torch threads"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seeds TPE and the stage-1 candidates (a resumed study never replays earlier draws)",
    )
    parser.add_argument(
        "--pruner",
        choices=("halving", "hyperband", "median", "none"),
        help="prunes on validation accuracy per epoch across both stages",
    )
    parser.add_argument(
        "--stage1-candidates",
        type=int,
        help="how many stage-1 settings the trials share (the first is params.yaml's stage 1); 0 samples "
        "stage 1 per trial. Fixed when the study is created",
    )
    parser.add_argument(
        "--objectives",
        choices=("acc", "acc,ff"),
        help="acc: maximise stage-2 val accuracy; acc,ff: also minimise the FF ratio "
        "(two objectives, no pruning)",
    )
    add_run_flags(parser)
    launch_flags.add_flags(parser)
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="with a job array: submit, print how to follow the tasks, and return; the same command "
        "without it writes the summary once the study is complete",
    )
    return parser


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Where the search reads and writes, and how it notices a dead worker."""
    parser.add_argument(
        "--params", type=Path, default=None, help="params file (default <project>/params.yaml)"
    )
    parser.add_argument(
        "--heartbeat", type=int, help="seconds between a running trial's heartbeats (default 10)"
    )
    parser.add_argument(
        "--grace",
        type=int,
        help="seconds without heartbeat after which a trial is failed and re-queued "
        "(default 30, at least 3 heartbeats)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default reports/search/<study-name>)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="the stage-1 store (default <project>/.cache/stage1)"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params_path = args.params or PROJECT_ROOT / "params.yaml"
    local = (args.launcher or configured(params_path, "launcher", "kind", "local")) == "local"
    workers = (args.workers or configured_workers(params_path)) if local else 1
    # The other workers start now and import while this process loads torch, Optuna and MLflow.
    with WorkerPool(workers - 1, preload="study.search.optimize") as pool:
        import optuna

        from study.config import load_params
        from study.search.optimize import run_search

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        params = load_params(params_path)
        launcher = launch_flags.from_args(args, params.launcher, extra=("no_wait",))
        run = search_run(args, params)
        if launcher.kind == "local":
            run_search(run, pool)
        else:
            from study.search.cluster import launch_search

            storage_given = bool(args.storage or params.search.storage or os.environ.get("OPTUNA_STORAGE"))
            launch_search(run, launcher, wait=not args.no_wait, storage_given=storage_given)


def search_run(args: argparse.Namespace, params: Params) -> SearchRun:
    """The run every worker shares: params.yaml's ``search`` section under the command line's flags."""
    from study.search.run import SearchRun, default_out
    from study.storage import GRACE_SECONDS, HEARTBEAT_SECONDS, storage_url

    search = params.search
    for flag in SEARCH_FLAGS:
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(search, flag))
    objectives = args.objectives.split(",") if args.objectives else search.objectives
    return SearchRun(
        params=params,
        study_name=args.study_name,
        storage=storage_url(args.storage, search.storage),
        trials=args.trials,
        seed=args.seed,
        pruner=args.pruner,
        objectives=objectives,
        parent_run_id="",
        out_dir=args.out or default_out(args.study_name),
        cache_dir=args.cache_dir or STORE_ROOT / ".cache" / "stage1",
        stage1_candidates=args.stage1_candidates,
        heartbeat=args.heartbeat or HEARTBEAT_SECONDS,
        grace=args.grace or max(GRACE_SECONDS, 3 * (args.heartbeat or 0)),
    )


def configured_workers(params_path: Path) -> int:
    """``search.workers`` read straight from the file (the full validation comes later, with torch)."""
    workers = configured(params_path, "search", "workers", 1)
    return workers if isinstance(workers, int) and workers >= 1 else 1


def configured(params_path: Path, section: str, key: str, default: Any) -> Any:
    """``section.key`` read straight from the file, ``default`` when absent or unreadable."""
    try:
        return YAML(typ="safe").load(params_path)[section][key]
    except Exception:  # unreadable or incomplete: load_params reports it in one line
        return default


if __name__ == "__main__":
    run_main(main)
