"""Search throughput: finished trials per minute with 1, 2 and 4 workers, for a tiny trial.

    python -m study.search.throughput --storage postgresql+psycopg2://user:pw@127.0.0.1/db   # a server
    python -m study.search.throughput                                                      # SQLite files

The tiny trial is the test suite's: the 8x8 digits data set, an MLP of width 32, one epoch per
stage. Each worker count runs a fresh study of ``--trials`` trials through ``python -m
study.search`` (a new process, as a user runs it), timed from start to the last finished trial,
so the figure includes process start-up and the MLflow and Optuna writes of every trial.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from ruamel.yaml import YAML
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from study.config import DEFAULT_PARAMS, read_yaml
from study.search.trial import FINISHED
from study.urls import redact


def tiny_params(folder: Path, tracking: str) -> Path:
    raw = read_yaml(DEFAULT_PARAMS)
    raw["data"].update(name="digits", path=None, image_size=None)
    raw["data"]["augment"] = {"crop_padding": 0, "hflip": False}
    raw["model"].update(name="mlp", width=32, options={})
    for stage in ("stage1", "stage2"):
        raw[stage].update(epochs=1, batch_size=64)
    raw["tracking"] = {"uri": tracking, "experiment": "throughput"}
    raw["search"]["fixed"] = {}
    path = folder / "params.yaml"
    with open(path, "w") as stream:
        YAML().dump(raw, stream)
    return path


def fresh_database(server: str | None, folder: Path, name: str) -> str:
    """A new database on ``server`` (PostgreSQL), or an SQLite file in ``folder``."""
    if server is None:
        return f"sqlite:///{folder / f'{name}.db'}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def measure(workers: int, trials: int, server: str | None, folder: Path) -> float:
    run = folder / f"workers{workers}"
    run.mkdir()
    storage = fresh_database(server, run, f"bnn_throughput_optuna_{workers}")
    tracking = fresh_database(server, run, f"bnn_throughput_mlflow_{workers}")
    params = tiny_params(run, tracking)
    command = [
        sys.executable,
        "-m",
        "study.search",
        "--params",
        str(params),
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--pruner",
        "none",
        "--storage",
        storage,
        "--study-name",
        "throughput",
        "--out",
        str(run / "out"),
        "--cache-dir",
        str(run / "cache"),
    ]
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        cwd=run,
        env={**os.environ, "BNN_STUDY_ROOT": str(run), "CI": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    study = optuna.load_study(study_name="throughput", storage=storage)
    trials_done = study.get_trials(states=FINISHED)
    last = max(t.datetime_complete for t in trials_done)
    first = min(t.datetime_start for t in study.trials)
    seconds = (last - first).total_seconds()
    total = time.perf_counter() - start
    print(
        f"{workers} worker(s): {len(trials_done)} trials in {seconds:.1f} s of trials "
        f"({total:.1f} s with start-up and summary): {60 * len(trials_done) / seconds:.1f} trials/min"
    )
    return 60 * len(trials_done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m study.search.throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--storage", default=None, help="a PostgreSQL server URL (default: SQLite files)")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(f"tiny trials on {redact(args.storage) if args.storage else 'SQLite'}, {os.cpu_count()} cores")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        for workers in args.workers:
            measure(workers, args.trials, args.storage, Path(folder))


if __name__ == "__main__":
    main()
