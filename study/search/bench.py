"""Search throughput against a plain Optuna loop over the same training (a benchmark, not a test).

    python -m study.search.bench                         # 20 trials, seeds 0 1 2, 2 workers
    python -m study.search.bench --trials 100 --seeds 0 1 2
    make bench-search                                    # both, written to reports/benchmarks/
                                                         # and their summaries into the README

For each seed, one after the other on this machine: the plain loop (:mod:`study.search.plain`: one
process, 2 torch threads, every trial a full stage 1 and stage 2, no pruning, no reuse, no MLflow)
and ``python -m study.search`` with the same params, space, seed and trial count. Both are timed
from outside, from process start to exit, so imports, set-up, MLflow logging and the search's
summary (tables, figures, the best trial's test accuracy) are in the search's time. The search
runs against stores that already exist (an MLflow and an Optuna database with their schemas, as
after any earlier run; creating an MLflow schema costs about 2 s once) and an empty stage-1 store.

Reported per run: wall time, finished trials per minute, best validation accuracy, the best
trial's test accuracy (evaluated once), how many trials took stage 1 from the store; then per arm
the means and the ratio of trials per minute. The standard error of one validation accuracy (from
the validation split's size) says what "within noise" means; the best of many noisy trials is
biased upwards, the more so the more trials complete, which the test accuracy of the best is not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd

from study.config import DEFAULT_PARAMS, PROJECT_ROOT, load_params
from study.readme import replace_block
from study.runner import prepare
from study.search.trial import FINISHED
from study.tracking import Tracker, git_commit


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"error: {' '.join(command[1:4])} failed: {last}")
    return seconds


def plain(trials: int, seed: int, folder: Path, params: Path) -> dict:
    out = folder / f"plain-{seed}.json"
    command = [sys.executable, "-m", "study.search.plain", "--trials", str(trials), "--seed", str(seed),
               "--params", str(params), "--out", str(out)]  # fmt: skip
    seconds = timed(command, dict(os.environ))
    result = json.loads(out.read_text())
    return {"arm": "plain loop", "seed": seed, "workers": 1, "seconds": seconds, "trials": result["trials"],
            "best_val_acc": result["best_val_acc"], "best_test_acc": result["best_test_acc"],
            "stage1_reused": 0}  # fmt: skip


def search(trials: int, seed: int, workers: int, folder: Path, params: Path) -> dict:
    run = folder / f"search-{seed}-{workers}"
    run.mkdir()
    storage, tracking = f"sqlite:///{run / 'optuna.db'}", f"sqlite:///{run / 'mlflow.db'}"
    optuna.storages.RDBStorage(storage)  # the schemas exist, as after any earlier search
    Tracker(tracking, load_params(params).tracking.experiment)
    command = [sys.executable, "-m", "study.search", "--trials", str(trials), "--seed", str(seed),
               "--workers", str(workers), "--params", str(params), "--storage", storage, "--study-name",
               "bench", "--out", str(run / "out"), "--cache-dir", str(run / "stage1")]  # fmt: skip
    seconds = timed(command, {**os.environ, "MLFLOW_TRACKING_URI": tracking, "CI": "true"})
    study = optuna.load_study(study_name="bench", storage=storage)
    finished = study.get_trials(states=FINISHED)
    tracker = Tracker(tracking, load_params(params).tracking.experiment)
    parent = tracker.client.get_run(tracker.latest_run("bnn.kind", "search"))
    return {"arm": "study.search", "seed": seed, "workers": workers, "seconds": seconds,
            "trials": len(finished), "best_val_acc": study.best_value,
            "best_test_acc": parent.data.metrics["best_test_acc"],
            "stage1_reused": sum(bool(t.user_attrs.get("stage1_cached")) for t in finished)}  # fmt: skip


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    table = runs.groupby(["arm", "workers"], sort=False).agg(
        runs=("seed", "count"),
        seconds=("seconds", "mean"),
        trials_per_min=("trials_per_min", "mean"),
        best_val_acc=("best_val_acc", "mean"),
        best_val_acc_sd=("best_val_acc", "std"),
        best_test_acc=("best_test_acc", "mean"),
        stage1_reused=("stage1_reused", "mean"),
    )
    baseline = table.loc[("plain loop", 1), "trials_per_min"]
    table["speed_vs_plain"] = table["trials_per_min"] / baseline
    return table.reset_index()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.search.bench",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="search workers to measure")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this .md file")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="then put the summary of every search-*.md beside --out into this file's bench-search block",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append(plain(args.trials, seed, Path(tmp), args.params))
            print(_line(rows[-1]), flush=True)
            for workers in args.workers:
                rows.append(search(args.trials, seed, workers, Path(tmp), args.params))
                print(_line(rows[-1]), flush=True)
    runs = pd.DataFrame(rows)
    runs["trials_per_min"] = 60 * runs["trials"] / runs["seconds"]
    table = summary(runs)
    params = load_params(args.params)
    accuracy = runs["best_val_acc"].mean()
    val_size = len(prepare(params).val.labels)
    head = (f"{args.trials} trials per run, seeds {' '.join(map(str, args.seeds))}, {os.cpu_count()} cores "
            f"({cpu_model()}), commit {git_commit()[:7]}, params {args.params.name} "
            f"(search.fixed {params.search.fixed}). One validation accuracy near {accuracy:.3f} on "
            f"{val_size} images has a standard error of "
            f"{100 * math.sqrt(accuracy * (1 - accuracy) / val_size):.2f} pp.")  # fmt: skip
    text = f"{head}\n\n{table.to_markdown(index=False, floatfmt='.3g')}\n\nEvery run:\n\n" + runs.to_markdown(
        index=False, floatfmt=".4g"
    )
    print(f"\n{text}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"`python -m study.search.bench {' '.join(argv or sys.argv[1:])}`\n\n{text}\n")
        if args.readme:
            update_readme(args.readme, args.out.parent)


def cpu_model() -> str:
    """The processor's name (Linux), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    return names[0].strip() if names else os.uname().machine


def readme_block(folder: Path) -> str:
    """The command, set-up and summary table of every ``search-<trials>.md`` in ``folder``, fewest
    trials first (the per-run tables stay in the files)."""
    parts = []
    for path in sorted(folder.glob("search-*.md"), key=lambda p: int(p.stem.removeprefix("search-"))):
        command, head, table = path.read_text().split("\n\n")[:3]
        parts.append(f"{command}: {head}\n\n{table}")
    return "\n\n".join(parts)


def update_readme(readme: Path, folder: Path) -> None:
    """Put :func:`readme_block` into the README's ``bench-search`` block."""
    replace_block(readme, "bench-search", readme_block(folder))


def _line(row: dict) -> str:
    return (f"{row['arm']:>12} seed {row['seed']} workers {row['workers']}: {row['trials']} trials in "
            f"{row['seconds']:.1f} s, best val acc {row['best_val_acc']:.4f} "
            f"(test {row['best_test_acc']:.4f}), stage 1 reused {row['stage1_reused']}")  # fmt: skip


if __name__ == "__main__":
    main()
