"""The baseline of ``python -m study.search.bench``: a plain Optuna loop over the same training.

What a user would write without bnn-study: one in-memory study, TPE seeded once, every trial a
full stage 1 and stage 2 (``study.runner``) with the search space and ``search.fixed`` of
params.yaml, no pruning, no stage-1 reuse, no MLflow, one process with 2 torch threads::

    python -m study.search.plain --trials 20 --seed 0 --out result.json

It writes the best validation accuracy, the best trial's test accuracy (its network kept in
memory, evaluated once at the end, as the search does) and the loop's wall time to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import optuna

from bnn import evaluate, set_mode
from study.cli import run_main
from study.config import DEFAULT_PARAMS, load_params
from study.runner import prepare, run_stage1, run_stage2
from study.search.sampling import suggest

THREADS = 2  # the machine's two cores, in the one process a plain loop has


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.search.plain",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    params = params.with_overrides({**params.search.fixed, "threads": THREADS})
    data = prepare(params)

    best: dict = {"val_acc": -1.0}

    def objective(trial: optuna.Trial) -> float:
        trial_params = params.with_overrides(suggest(trial, params.search.space))
        stage1 = run_stage1(trial_params, data)
        stage2 = run_stage2(
            trial_params, data, stage1.model.state_dict(), stage1.result.init_signs, teacher=stage1.teacher
        )
        val_acc = stage2.result.final["val_acc"]
        if val_acc > best["val_acc"]:
            best.update(val_acc=val_acc, model=stage2.model)
        return val_acc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    start = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    test = evaluate(set_mode(best["model"], "binary"), data.test, data)
    result = {"trials": len(study.trials), "best_val_acc": study.best_value, "best_test_acc": test["acc"],
              "loop_seconds": time.perf_counter() - start}  # fmt: skip
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    run_main(main)
