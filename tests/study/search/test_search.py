"""The Optuna search end to end on tiny trials: results, resume, workers, pruning, stage-1 reuse, MLflow."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ruamel.yaml import YAML

from bnn import prepare_data
from study.config import DEFAULT_PARAMS, load_params, read_yaml
from study.search.__main__ import main
from study.search.optimize import create_study, load_study
from study.search.run import SearchRun
from study.search.trial import FINISHED, Objective
from study.tracking import PARENT_TAG, Tracker

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROJECT = Path(__file__).resolve().parents[3]  # a command run elsewhere imports this checkout's code

TINY_SPACE = {
    "stage1.optimizer": ["adam", "sgd"],
    "stage1.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
    "stage1.weight_decay": [0.0, 5.0e-6],
    "stage2.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
    "stage2.weight_decay": {"low": 1.0e-7, "high": 1.0e-5, "log": True, "zero": True},
}


def write_params(folder: Path, space: dict, tracking: str | None = None, epochs: int = 2) -> Path:
    raw = read_yaml(DEFAULT_PARAMS)
    raw["data"].update(name="digits", val_fraction=0.15, test_fraction=0.15)
    raw["data"]["augment"] = {"crop_padding": 0, "hflip": False}
    raw["model"].update(name="mlp", width=32)
    for stage in ("stage1", "stage2"):
        raw[stage].update(epochs=epochs, batch_size=64)
    raw["tracking"] = {"uri": tracking or f"sqlite:///{folder / 'mlflow.db'}", "experiment": "search-test"}
    raw["search"].update(space=space, fixed={})
    path = folder / "params.yaml"
    with open(path, "w") as stream:
        YAML().dump(raw, stream)
    return path


def search_args(folder: Path, trials: int, *extra: str, storage: str | None = None) -> list[str]:
    return [
        "--params", str(folder / "params.yaml"), "--trials", str(trials), "--study-name", "tiny",
        "--storage", storage or f"sqlite:///{folder / 'optuna.db'}", "--out", str(folder / "out"),
        "--cache-dir", str(folder / "cache"), *extra,
    ]  # fmt: skip


def finished_numbers(folder: Path, storage: str | None = None) -> list[int]:
    study = optuna.load_study(study_name="tiny", storage=storage or f"sqlite:///{folder / 'optuna.db'}")
    return sorted(t.number for t in study.get_trials(states=FINISHED))


def mlflow_runs(folder: Path, tracking: str | None = None):
    client = MlflowClient(tracking or f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("search-test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("bnn.kind") == "search"]
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    return client, parents, children


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 4-trial search, then the same command again (no overshoot), then --trials 6 (resume)."""
    folder = tmp_path_factory.mktemp("search")
    write_params(folder, TINY_SPACE)
    main(search_args(folder, 4, "--pruner", "none"))
    after_first = finished_numbers(folder)
    main(search_args(folder, 4, "--pruner", "none"))
    after_repeat = finished_numbers(folder)
    main(search_args(folder, 6, "--pruner", "none"))
    return folder, after_first, after_repeat


def test_search_finishes_exactly_the_requested_trials_and_resumes_without_overshoot(searched):
    folder, after_first, after_repeat = searched
    assert after_first == [0, 1, 2, 3]
    assert after_repeat == after_first
    assert finished_numbers(folder) == [0, 1, 2, 3, 4, 5]


def test_search_writes_tables_figures_and_applicable_best_params(searched):
    folder, *_ = searched
    out = folder / "out"
    for name in ("trials.csv", "top_trials.csv", "importances.csv", "history.png", "hyperparameters.png",
                 "ff_c2i.png", "best_params.yaml"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    best = YAML(typ="safe").load((out / "best_params.yaml").read_text())
    assert set(best) <= {"stage1", "stage2"}
    applied = load_params(folder / "params.yaml").with_overrides(
        {f"{stage}.{key}": value for stage, values in best.items() for key, value in values.items()}
    )
    assert applied.stage1.lr == best["stage1"]["lr"]
    assert len(list((out / "checkpoints").glob("*.pt"))) == 1  # only the best trial's network is kept


def test_search_summary_is_the_template_filled_with_the_trials_tables(searched):
    folder, *_ = searched
    text = (folder / "out" / "summary.md").read_text()
    top = pd.read_csv(folder / "out" / "top_trials.csv")
    assert text.startswith("# Search `tiny`\n")
    lines = text.splitlines()
    header = lines[lines.index("## Top trials (stage-2 validation accuracy)") + 2]
    assert [cell.strip() for cell in header.strip("|").split("|")] == list(top.columns)
    best = int(re.search(r"^## Best trial (\d+)$", text, flags=re.MULTILINE).group(1))
    assert f"val_acc {top['val_acc'].max():.4f}" in text and best in set(top["number"])
    # The advice runs the pipeline up to its export, and says what the whole study would add.
    (command,) = [line.strip() for line in text.splitlines() if line.strip().startswith("dvc exp run ")]
    assert command.startswith("dvc exp run export -S stage"), command
    assert "With no target (`dvc exp run -S stage" in text and "re-run the reproduction study" in text
    assert "{{" not in text


def test_the_whole_study_is_sized_from_the_ablations_results_and_timed_at_the_search_speed(tmp_path):
    import datetime
    import json

    from study.search.summary import exp_run_command, study_cost

    assert exp_run_command({"stage1": {"lr": 0.01}, "stage2": {"weight_decay": 0}}) == (
        "dvc exp run export -S stage1.lr=0.01 -S stage2.weight_decay=0"
    )
    params = load_params(DEFAULT_PARAMS).with_overrides(
        {"search.fixed": {"stage1.epochs": 2, "stage2.epochs": 3}}
    )
    assert "no results" in study_cost([], params, tmp_path)
    for name, runs in (("wd", 3), ("latent", 1)):
        cells = [{"history": [{"epoch": e} for e in range(10)]} for _ in range(runs)]
        (tmp_path / f"{name}.json").write_text(json.dumps({"cells": cells}))
    start = datetime.datetime(2026, 1, 1)

    def trial(seconds: float, cached: bool) -> optuna.trial.FrozenTrial:
        made = optuna.trial.create_trial(value=0.5, user_attrs={"stage1_cached": cached})
        made.datetime_start, made.datetime_complete = start, start + datetime.timedelta(seconds=seconds)
        return made

    # 5 epochs per trial: 2 s and 4 s per epoch (a trial whose stage 1 came from the store is left out).
    trials = [trial(10, False), trial(20, False), trial(1, True), trial(30, False)]
    assert study_cost(trials, params, tmp_path) == (
        f"up to 4 cell runs, 40 epochs in all (as in {tmp_path.name}/), about 3 min at this search's speed"
    )


def test_every_trial_is_a_child_run_of_one_parent_with_per_epoch_ff_and_c2i(searched):
    folder, *_ = searched
    client, parents, children = mlflow_runs(folder)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["optuna.study"] == "tiny" and "sampler_seed" in parent.data.tags
    assert "best_test_acc" in parent.data.metrics and "best_val_acc" in parent.data.metrics
    assert {c.data.tags[PARENT_TAG] for c in children} == {parent.info.run_id}
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == list(range(6))
    child = children[0]
    assert child.info.status == "FINISHED" and child.data.tags["trial_state"] == "COMPLETE"
    for key in ("stage1.ff_ratio", "stage2.ff_ratio", "stage2.c2i_stage", "stage2.saturation"):
        history = client.get_metric_history(child.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    assert {"val_acc", "ff_ratio", "c2i_ratio"} <= set(child.data.metrics)


def test_repeated_stage1_key_trains_once(tmp_path):
    write_params(tmp_path, {"stage2.weight_decay": [0.0, 1.0e-5], "stage2.lr": [1.0e-3, 3.0e-3]})
    main(search_args(tmp_path, 3, "--pruner", "none"))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    cached = [t.user_attrs["stage1_cached"] for t in sorted(study.trials, key=lambda t: t.number)]
    assert cached == [False, True, True]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_two_workers_finish_n_trials_without_duplicates(tmp_path):
    write_params(tmp_path, TINY_SPACE)
    main(search_args(tmp_path, 6, "--workers", "2", "--pruner", "none"))
    numbers = finished_numbers(tmp_path)
    assert len(numbers) == 6 and len(set(numbers)) == 6
    _, parents, children = mlflow_runs(tmp_path)
    finished_children = [c for c in children if c.data.tags.get("trial_state") == "COMPLETE"]
    assert len(parents) == 1
    assert sorted(int(c.data.tags["optuna.trial"]) for c in finished_children) == numbers


def test_pruned_trials_are_recorded_with_the_epoch_they_reached(tmp_path, digits):
    params = load_params(write_params(tmp_path, TINY_SPACE))
    run = SearchRun(params=params, study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}", trials=2,
                    seed=0, pruner="none", objectives=["acc"], parent_run_id="", out_dir=tmp_path / "out",
                    cache_dir=tmp_path / "cache")  # fmt: skip
    create_study(run)
    study = load_study(run)
    study.pruner = optuna.pruners.ThresholdPruner(lower=1.01)  # nothing reaches 101 %: prune at epoch 1
    tracker = Tracker.from_params(params)
    run.parent_run_id = tracker.find_or_create_parent("pruning", "search tiny", {"bnn.kind": "search"})
    data = prepare_data("digits", val_fraction=0.15, test_fraction=0.15, seed=0)
    study.optimize(Objective(run, data, tracker), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert [t.user_attrs["pruned_at_epoch"] for t in study.trials] == [1, 1]
    _, _, children = mlflow_runs(tmp_path)
    assert {c.data.tags["trial_state"] for c in children} == {"PRUNED"}
    assert {c.info.status for c in children} == {"FINISHED"}


def test_interrupted_search_completes_on_rerun(tmp_path):
    write_params(tmp_path, TINY_SPACE)
    env = {**os.environ, "BNN_STUDY_ROOT": str(tmp_path), "CI": "true", "PYTHONPATH": str(PROJECT)}
    command = [sys.executable, "-m", "study.search", *search_args(tmp_path, 8, "--pruner", "none")]

    # A shell without job control starts background jobs with SIGINT ignored, and children inherit
    # that (CI may run us so): give the search the default disposition, as in a terminal.
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=default_sigint)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and _complete_trials(tmp_path) < 1:
        time.sleep(0.2)
    assert process.poll() is None, "the search ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr and "Traceback" not in stderr
    assert _complete_trials(tmp_path) < 8

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    numbers = finished_numbers(tmp_path)
    assert len(numbers) == 8 and len(set(numbers)) == 8
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    settings = [tuple(sorted(t.params.items())) for t in study.get_trials(states=FINISHED)]
    assert len(set(settings)) == 8  # the rerun continued the sampling, it did not replay it


def _complete_trials(folder: Path) -> int:
    """Read the storage directly (read-only, no schema work), while the search is writing it."""
    database = folder / "optuna.db"
    if not database.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return 0


def test_trials_share_the_studys_stage1_candidates_and_a_resume_keeps_them(tmp_path):
    write_params(tmp_path, TINY_SPACE)
    main(search_args(tmp_path, 5, "--pruner", "none", "--stage1-candidates", "2"))
    main(search_args(tmp_path, 7, "--pruner", "none", "--stage1-candidates", "3"))  # resume: the study's own
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    candidates = study.user_attrs["stage1_candidates"]
    assert len(candidates) == 2
    base = load_params(tmp_path / "params.yaml").stage1
    assert list(candidates.values())[0] == {
        "stage1.optimizer": base.optimizer, "stage1.lr": base.lr, "stage1.weight_decay": base.weight_decay
    }  # fmt: skip
    trials = sorted(study.get_trials(states=FINISHED), key=lambda t: t.number)
    assert len(trials) == 7 and {t.params["stage1"] for t in trials} <= set(candidates)
    used = {t.params["stage1"] for t in trials}
    assert len(list((tmp_path / "cache").glob("*.pt"))) == len(used)  # each candidate trained once
    assert sum(not t.user_attrs["stage1_cached"] for t in trials) == len(used)
    # Trials differ from stage 2 on: the pruner sees stage-2 epochs only.
    assert {tuple(sorted(t.intermediate_values)) for t in trials} == {(1, 2)}
    frame = pd.read_csv(tmp_path / "out" / "trials.csv")
    for trial in trials:
        row = frame[frame["number"] == trial.number].iloc[0]
        assert row["stage1.lr"] == candidates[trial.params["stage1"]]["stage1.lr"]
    client, _, children = mlflow_runs(tmp_path)
    child = next(c for c in children if c.data.tags["optuna.trial"] == "0")
    assert float(child.data.params["stage1.lr"]) == candidates[trials[0].params["stage1"]]["stage1.lr"]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "stage1.val_acc")] == [1, 2]


def test_help_answers_without_loading_torch_optuna_or_mlflow():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['study.search', '--help']\n"
        "try:\n    runpy.run_module('study.search', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'optuna', 'mlflow', 'pandas') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--stage1-candidates" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_bad_params_stop_the_early_started_workers_and_exit_in_one_line(tmp_path):
    params = write_params(tmp_path, TINY_SPACE)
    params.write_text(params.read_text().replace("trials: 50", "trials: many"))
    args = search_args(tmp_path, 2, "--workers", "2")
    del args[args.index("--trials") : args.index("--trials") + 2]  # the value comes from the (bad) file
    command = [sys.executable, "-m", "study.search", *args]
    env = {**os.environ, "BNN_STUDY_ROOT": str(tmp_path), "PYTHONPATH": str(PROJECT)}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "search.trials" in done.stderr


def test_a_resumed_study_continues_its_sampling_instead_of_replaying_it(searched):
    folder, *_ = searched  # 4 trials, the same command again, then --trials 6: three invocations
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")
    settings = [tuple(sorted(t.params.items())) for t in study.get_trials(states=FINISHED)]
    assert len(settings) == 6 and len(set(settings)) == 6
    assert study.metric_names == ["val_acc"]


def test_importances_rank_only_parameters_every_trial_has():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from study.search.summary import importances

    study = optuna.create_study(direction="maximize")
    lr, opt, momentum = FloatDistribution(1e-4, 1e-1, log=True), CategoricalDistribution(["adam", "sgd"]), \
        FloatDistribution(0.8, 0.99)  # fmt: skip
    for i in range(30):
        params = {"stage2.lr": 1e-4 * 1.2**i, "stage2.optimizer": "sgd" if i % 10 == 0 else "adam"}
        dists = {"stage2.lr": lr, "stage2.optimizer": opt}
        if params["stage2.optimizer"] == "sgd":
            params["stage2.momentum"], dists["stage2.momentum"] = 0.9, momentum
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=0.5 + i / 100))
    ranked = importances(study)
    assert set(ranked["parameter"]) == {"stage2.lr", "stage2.optimizer"}


def test_two_objective_search_names_its_metrics_and_writes_the_pareto_front(tmp_path):
    write_params(tmp_path, TINY_SPACE)
    main(search_args(tmp_path, 4, "--objectives", "acc,ff"))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.metric_names == ["val_acc", "ff_ratio"]
    front = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert sorted(front["number"]) == sorted(t.number for t in study.best_trials)
    done = pd.read_csv(tmp_path / "out" / "trials.csv").query("state == 'COMPLETE'")
    for _, row in front.iterrows():  # nothing is better on both objectives
        at_least = (done["val_acc"] >= row["val_acc"]) & (done["ff_ratio"] <= row["ff_ratio"])
        strictly = (done["val_acc"] > row["val_acc"]) | (done["ff_ratio"] < row["ff_ratio"])
        assert done[at_least & strictly].empty
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0


def test_the_best_network_is_evaluated_from_mlflow_when_its_worker_was_elsewhere(tmp_path, capsys):
    write_params(tmp_path, TINY_SPACE)
    main(search_args(tmp_path, 2, "--pruner", "none"))
    client, _, children = mlflow_runs(tmp_path)
    for child in children:  # every complete trial's network is an artifact of its run
        assert [a.path for a in client.list_artifacts(child.info.run_id, "model")] == [
            f"model/trial-{child.data.tags['optuna.trial']}.pt"
        ]
    shutil.rmtree(tmp_path / "out" / "checkpoints")  # as on a host that ran none of the trials
    capsys.readouterr()
    main(search_args(tmp_path, 2, "--pruner", "none"))  # the study is complete: only the summary runs
    assert "test_acc" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "checkpoints").glob("trial-*.pt"))) == 1
