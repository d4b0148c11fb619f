"""Two hosts share an ablation through one PostgreSQL database and one MLflow server, and nothing else.

Each "host" is a folder of its own (its project root, its ``.cache/``, its results) whose commands run
with ``BNN_STUDY_ROOT`` set to it; the only things they share are the CI wrapper's PostgreSQL server
(a fresh database) and a real ``mlflow server`` process this test starts (its own backend store and
artifact root). Host B runs its workers as a job array through submitit's local executor.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from postgres_server import postgres
from ruamel.yaml import YAML
from test_ablate import write_params

from study.config import load_params
from study.reproduce import cell_study
from study.reproduce.ablate import run_ablation

pytestmark = [pytest.mark.slow, *postgres]
PYTHON = sys.executable
SEEDS = 2  # 3 stage-1 weight decays x 2 seeds: 6 stage-1 runs, 12 cells with the second stage-2 value
SECOND_WD = 1.0e-4  # the stage-2 weight decay the second phase adds: its cells reuse phase 1's stage 1


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` with its own backend store and artifact root; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    server = subprocess.Popen(
        [Path(PYTHON).with_name("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
            time.sleep(0.5)
    yield url
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def host(folder: Path, tracking: str | None, storage: str | None, stage2_wd: list[float]) -> Path:
    """A host's project folder: its params (the test ablation's, with the stage-2 grid given) and data."""
    folder.mkdir()
    write_params(folder)
    raw = YAML().load(folder / "params.yaml")
    raw["ablation"]["weight_decay"]["stage2"] = stage2_wd
    raw["ablation"]["quick_seeds"] = SEEDS
    raw["tracking"]["uri"] = tracking or f"sqlite:///{folder / 'mlflow.db'}"
    raw["search"]["storage"] = storage or f"sqlite:///{folder / 'optuna.db'}"
    with open(folder / "params.yaml", "w") as stream:
        YAML().dump(raw, stream)
    return folder


def ablate(folder: Path, *flags: str) -> subprocess.Popen:
    command = [PYTHON, "-m", "study.reproduce", "ablate", "wd", "--quick", "--params", "params.yaml",
               "--data", "data.pt", "--out", "out", "--heartbeat", "1", "--grace", "4", *flags]  # fmt: skip
    env = {**os.environ, "BNN_STUDY_ROOT": str(folder)}
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def test_two_hosts_share_an_ablation_through_postgres_and_an_mlflow_server(
    tmp_path, databases, mlflow_server
):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = databases()
    a = host(tmp_path / "a", mlflow_server, storage, [0.0])
    # Phase 1: host A alone trains the grid with stage-2 weight decay 0 (and so every stage 1).
    finish(ablate(a))
    raw = YAML().load(a / "params.yaml")
    raw["ablation"]["weight_decay"]["stage2"] = [0.0, SECOND_WD]
    with open(a / "params.yaml", "w") as stream:
        YAML().dump(raw, stream)
    b = host(tmp_path / "b", mlflow_server, storage, [0.0, SECOND_WD])
    # Phase 2: both hosts run the whole grid at once; B's workers are a two-task job array. A is
    # killed as soon as it holds a cell.
    first = ablate(a)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and first.poll() is None, "host A never claimed a cell"
        running = [t for t in trials(storage) if t.state == TrialState.RUNNING]
        victim = next((t for t in running if t.user_attrs.get("worker", "").endswith(f":{first.pid}")), None)
        time.sleep(0.05)
    second = ablate(b, "--launcher", "submitit-local", "--tasks", "2")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finish(second)

    # Every (cell, seed) done exactly once; the killed one failed by heartbeat and was trained by B.
    every = trials(storage)
    done = [t for t in every if t.state == TrialState.COMPLETE]
    keys = [t.user_attrs[cell_study.KEY] for t in done]
    assert len(keys) == len(set(keys)) == 3 * 2 * SEEDS
    killed = next(t for t in every if t.number == victim.number)
    assert killed.state == TrialState.FAIL and cell_study.DUPLICATE not in killed.user_attrs
    assert victim.user_attrs[cell_study.KEY] in keys
    b_workers = {
        t.user_attrs["worker"].split(":")[1]
        for t in done
        if t.user_attrs["cell.stage2.weight_decay"] == SECOND_WD
    }
    assert len(b_workers - {str(first.pid)}) == 2  # both array tasks trained cells

    # MLflow: no run left RUNNING; each key's result stored once; stage 1 trained once per key, by A.
    client = MlflowClient(mlflow_server)
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    runs = client.search_runs(list(experiments.values()), max_results=1000)
    assert "RUNNING" not in {r.info.status for r in runs}
    stored = [
        r.data.tags["cell_key"] for r in runs if r.data.tags.get("bnn.stored") and "cell_key" in r.data.tags
    ]
    assert sorted(stored) == sorted(keys)
    stage1 = [r for r in runs if r.data.tags.get("bnn.kind") == "stage1"]
    assert len(stage1) == len({r.data.tags["stage1_key"] for r in stage1}) == 3 * SEEDS
    assert max(r.info.start_time for r in stage1) < min(
        r.info.start_time for r in runs if r.data.tags.get("cell.stage2.weight_decay") == str(SECOND_WD)
    )  # every stage 1 is phase 1's: B trained none, it downloaded A's (it shares no folder with A)
    assert len(list((b / ".cache" / "stage1").glob("*.pt"))) > 0

    # A's command again: nothing left to train; its results files are B's, byte for byte, and a
    # one-host run's (SQLite, its own MLflow store).
    finish(ablate(a))
    reference = host(tmp_path / "one-host", None, None, [0.0, SECOND_WD])
    params = load_params(reference / "params.yaml")
    run_ablation("wd", params, quick=True, out_dir=reference / "out", store_dir=reference / ".cache",
                 data_path=reference / "data.pt")  # fmt: skip
    for suffix in ("json", "csv"):
        ours = (a / "out" / f"wd.{suffix}").read_bytes()
        assert (
            ours
            == (b / "out" / f"wd.{suffix}").read_bytes()
            == (reference / "out" / f"wd.{suffix}").read_bytes()
        )
    assert len(json.loads((a / "out" / "wd.json").read_text())["cells"]) == 3 * 2 * SEEDS
