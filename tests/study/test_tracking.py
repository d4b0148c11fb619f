"""MLflow run tree: parents found by key, children linked and tagged, statuses, per-epoch metrics."""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.common import epoch_logger, pipeline_parent
from study import tracking
from study.config import DEFAULT_PARAMS, PROJECT_ROOT, read_yaml, validate_params
from study.runner import run_stage1, run_stage2
from study.tracking import (
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    PARENT_TAG,
    RUN_KEY_TAG,
    Tracker,
    flatten,
    git_commit,
    git_tags,
    pipeline_outputs,
    tracking_uri,
)

# MLflow's SQLAlchemy store triggers this on first use; it is MLflow's to fix, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds); one experiment per test."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracker(store_uri, request) -> Tracker:
    return Tracker(store_uri, experiment=request.node.name)


def status(tracker: Tracker, run_id: str) -> str:
    return tracker.client.get_run(run_id).info.status


# --- flatten and the store's address ---------------------------------------------------------------


def test_flatten_nested_mappings_to_dotted_keys():
    nested = {
        "seed": 0,
        "stage1": {"lr": 1e-3, "betas": [0.9, 0.999]},
        "data": {"augment": {"hflip": False}, "path": None},
        "model": {"options": {}},
    }
    assert flatten(nested) == {
        "seed": 0,
        "stage1.lr": 1e-3,
        "stage1.betas": [0.9, 0.999],
        "data.augment.hflip": False,
        "data.path": None,
        "model.options": {},  # an empty section stays visible as a value
    }
    assert flatten({"a": {"b": 1}}, prefix="x.") == {"x.a.b": 1}
    assert flatten({}) == {}


def test_tracking_uri_prefers_configured_then_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert tracking_uri("sqlite:///configured.db") == "sqlite:///configured.db"
    assert tracking_uri(None) == "sqlite:///from-env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(None) == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def test_experiment_artifacts_live_beside_the_sqlite_file(tracker, store_uri):
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    db_folder = store_uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert experiment.artifact_location.endswith(f"{db_folder}/mlartifacts")
    # A second tracker on the same experiment reuses it.
    assert Tracker(store_uri, experiment=experiment.name).experiment_id == tracker.experiment_id


def test_every_database_store_gets_an_explicit_artifact_root():
    """Never MLflow's fallback (``./mlruns`` in the working directory): a PostgreSQL store too."""
    assert (
        tracking.artifact_root("postgresql+psycopg2://u@host/db")
        == (tracking.STORE_ROOT / "mlartifacts").as_uri()
    )
    assert tracking.artifact_root("sqlite:////data/x/mlflow.db") == "file:///data/x/mlartifacts"
    assert tracking.artifact_root("http://127.0.0.1:5000") is None  # the server's own --artifacts-destination


def _store_with_a_run(folder: Path) -> str:
    """A project-like folder whose SQLite store holds one finished run with one artifact."""
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", experiment="moved")
    (folder / "model.pt").write_bytes(b"weights")
    with tracker.child(None, "stage2") as run:
        run.log_artifacts([folder / "model.pt"], "model")
    return run.run_id


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_store_follows_its_folder(tmp_path, how):
    import shutil

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    run_id = _store_with_a_run(old)
    (shutil.move if how == "move" else shutil.copytree)(old, new)
    if how == "copy":
        old_files = sorted(p for p in old.rglob("*") if p.is_file())

    tracker = Tracker(f"sqlite:///{new / 'mlflow.db'}", experiment="moved")
    here = (new / "mlartifacts").as_uri()
    assert tracker.client.get_experiment(tracker.experiment_id).artifact_location == here
    assert tracker.client.get_run(run_id).info.artifact_uri.startswith(f"{here}/")
    # An earlier run's artifacts are found in the new folder, and new runs write there.
    fetched = Path(tracker.client.download_artifacts(run_id, "model/model.pt", str(tmp_path)))
    assert fetched.read_bytes() == b"weights"
    (new / "figure.png").write_bytes(b"png")
    with tracker.child(None, "evaluate") as later:
        later.log_artifacts([new / "figure.png"])
    assert tracker.client.get_run(later.run_id).info.artifact_uri.startswith(f"{here}/")
    assert any(new.joinpath("mlartifacts").rglob("figure.png"))
    if how == "move":
        assert not old.exists(), "nothing is written under the old path"
    else:
        assert sorted(p for p in old.rglob("*") if p.is_file()) == old_files, "the original is left alone"
        original = Tracker(f"sqlite:///{old / 'mlflow.db'}", experiment="moved")
        assert original.client.get_run(run_id).info.artifact_uri.startswith((old / "mlartifacts").as_uri())


# --- the commit and whether the checkout is dirty -------------------------------------------------

DVC_YAML = """
stages:
  prepare:
    cmd: python -m pipelines.prepare
    deps: [pipelines/prepare.py]
    outs:
      - data/prepared/data.pt:
          persist: true
      - data/prepared/summary.json:
          cache: false
    metrics:
      - runs/metrics.json:
          cache: false
    plots:
      - runs/curves.png
  ablate:
    foreach: [wd, optimizer]
    do:
      cmd: python -m study.reproduce ablate ${item}
      outs:
        - reports/ablations/${item}.csv:
            cache: false
  report:
    cmd: python -m study.reproduce report
    wdir: reports
    outs:
      - figures
"""


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=tests", "-c", "user.email=tests@invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(
        ["git", *identity, *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A committed project with its pipeline's outputs and dvc.lock, as a fresh clone has them."""
    root = tmp_path / "project"
    files = {
        "dvc.yaml": DVC_YAML,
        "dvc.lock": "schema: '2.0'\n",
        "params.yaml": "seed: 0\n",
        "pipelines/prepare.py": "print('prepare')\n",
        "data/prepared/summary.json": "{}\n",
        "runs/metrics.json": "{}\n",
        "reports/ablations/wd.csv": "acc\n0.5\n",
        "reports/figures/heatmap.png": "png",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project and results")
    monkeypatch.setattr(tracking, "PROJECT_ROOT", root)
    return root


def test_pipeline_outputs_are_read_from_dvc_yaml(checkout):
    assert pipeline_outputs() == [
        "dvc.lock",
        "data/prepared/data.pt",
        "data/prepared/summary.json",
        "runs/metrics.json",
        "runs/curves.png",
        "reports/ablations/*.csv",
        "reports/figures",
    ]


def test_outputs_rewritten_by_the_pipeline_do_not_make_a_checkout_dirty(checkout):
    # The first run of a fresh clone: every stage rewrites its outputs, DVC updates dvc.lock and
    # (core.autostage) stages it, and the run leaves untracked files (mlflow.db, caches).
    for name in ("data/prepared/summary.json", "runs/metrics.json", "reports/ablations/wd.csv"):
        (checkout / name).write_text("changed\n")
    (checkout / "reports/figures/heatmap.png").write_text("other pixels")
    (checkout / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    git(checkout, "add", "dvc.lock")
    (checkout / "mlflow.db").write_text("")
    head = git(checkout, "rev-parse", "HEAD")
    assert git_tags() == {GIT_COMMIT_TAG: head, GIT_DIRTY_TAG: "false"}


@pytest.mark.parametrize("changed", ["pipelines/prepare.py", "params.yaml", "dvc.yaml"])
def test_changed_sources_make_a_checkout_dirty_and_the_commit_stays_a_commit(checkout, changed):
    (checkout / changed).write_text((checkout / changed).read_text() + "# edited\n")
    head = git(checkout, "rev-parse", "HEAD")
    assert git_tags() == {GIT_COMMIT_TAG: head, GIT_DIRTY_TAG: "true"}
    git(checkout, "add", changed)  # staged but not committed: still dirty
    assert git_tags()[GIT_DIRTY_TAG] == "true"


def test_outside_git_the_commit_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setattr(tracking, "PROJECT_ROOT", tmp_path)
    assert git_tags() == {GIT_COMMIT_TAG: "unknown"}


def test_runs_are_tagged_with_the_commit_and_dirtiness(tracker, checkout):
    head = git(checkout, "rev-parse", "HEAD")
    parent = tracker.find_or_create_parent("key", "pipeline", {})
    with tracker.child(parent, "stage1") as clean:
        pass
    (checkout / "pipelines/prepare.py").write_text("print('edited')\n")
    with tracker.child(parent, "stage1") as dirty:
        pass
    tags = {run: tracker.client.get_run(run).data.tags for run in (parent, clean.run_id, dirty.run_id)}
    assert {t[GIT_COMMIT_TAG] for t in tags.values()} == {head}
    assert [t[GIT_DIRTY_TAG] for t in tags.values()] == ["false", "false", "true"]


# --- parents ----------------------------------------------------------------------------------------


def test_find_or_create_parent_is_keyed(tracker):
    first = tracker.find_or_create_parent("pipeline-aaa", "pipeline", {"bnn.kind": "pipeline"})
    again = tracker.find_or_create_parent("pipeline-aaa", "pipeline", {"bnn.kind": "pipeline"})
    other = tracker.find_or_create_parent("pipeline-bbb", "pipeline", {"bnn.kind": "pipeline"})
    assert first == again
    assert other != first
    tags = tracker.client.get_run(first).data.tags
    assert tags[RUN_KEY_TAG] == "pipeline-aaa"
    assert tags[GIT_COMMIT_TAG] == git_commit()
    assert tags["bnn.kind"] == "pipeline"
    assert len(tracker.client.search_runs([tracker.experiment_id])) == 2


# --- children ---------------------------------------------------------------------------------------


def test_child_is_linked_tagged_and_holds_params_and_epoch_metrics(tracker):
    parent = tracker.find_or_create_parent("key", "pipeline", {})
    params = {"seed": 0, "stage1": {"lr": 2e-3, "epochs": 3}, "model": {"name": "mlp", "options": {}}}
    with tracker.child(parent, "stage1", params=params, tags={"stage": "1"}) as run:
        assert status(tracker, run.run_id) == "RUNNING"
        assert status(tracker, parent) == "RUNNING"
        for epoch in (1, 2, 3):
            record = {"epoch": epoch, "val_acc": 0.5 + epoch / 10, "ff_ratio": epoch * 1e-3, "flag": True}
            run.log_metrics(record, step=epoch)
        run.log_metrics({"note": "not a number"})

    child = tracker.client.get_run(run.run_id)
    assert child.info.status == "FINISHED"
    assert status(tracker, parent) == "FINISHED"
    assert child.info.run_name == "stage1"
    assert child.data.tags[PARENT_TAG] == parent
    assert child.data.tags[GIT_COMMIT_TAG] == git_commit()
    assert child.data.tags["stage"] == "1"
    assert child.data.params == {
        "seed": "0",
        "stage1.lr": "0.002",
        "stage1.epochs": "3",
        "model.name": "mlp",
        "model.options": "{}",
    }
    history = tracker.client.get_metric_history(run.run_id, "val_acc")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([0.6, 0.7, 0.8])
    assert len(tracker.client.get_metric_history(run.run_id, "ff_ratio")) == 3
    assert "flag" not in child.data.metrics  # booleans are not metrics
    assert "note" not in child.data.metrics


def test_many_params_are_logged_in_batches(tracker):
    params = {f"p{i:03d}": i for i in range(250)}  # MLflow accepts at most 100 per batch
    with tracker.child(None, "wide", params=params) as run:
        pass
    logged = tracker.client.get_run(run.run_id).data.params
    assert len(logged) == 250 and logged["p249"] == "249"


def test_batched_child_writes_when_it_ends_what_an_unbatched_one_writes_at_once(tracker):
    history = [{"epoch": e, "val_acc": 0.5 + e / 10, "ff_ratio": e * 1e-3} for e in range(1, 401)]
    params = {f"p{i:03d}": i for i in range(150)}
    written = {}
    for batch_seconds in (0.0, 3600.0):
        with tracker.child(None, "trial", params=params, batch_seconds=batch_seconds) as run:
            run.log_history(history[:200], prefix="stage1.")
            for record in history[200:]:
                run.log_metrics(record, step=record["epoch"], prefix="stage2.")
            run.set_tags({"trial_state": "COMPLETE"})
            seen = tracker.client.get_run(run.run_id).data
            written[batch_seconds] = (len(seen.metrics), len(seen.params), "trial_state" in seen.tags)
        logged = tracker.client.get_run(run.run_id).data
        assert len(logged.params) == 150 and logged.tags["trial_state"] == "COMPLETE"
        assert len(tracker.client.get_metric_history(run.run_id, "stage1.val_acc")) == 200
        steps = [m.step for m in tracker.client.get_metric_history(run.run_id, "stage2.ff_ratio")]
        assert sorted(steps) == list(range(201, 401))
    assert written[0.0] == (6, 150, True)  # stage1/stage2 x val_acc, ff_ratio, epoch: written as logged
    assert written[3600.0] == (0, 0, False)  # held until the run ended


def test_child_without_parent_has_no_parent_tag(tracker):
    with tracker.child(None, "alone") as run:
        pass
    found = tracker.client.get_run(run.run_id)
    assert PARENT_TAG not in found.data.tags
    assert found.info.status == "FINISHED"


def test_failing_child_is_failed_with_reason_and_parent_follows(tracker):
    parent = tracker.find_or_create_parent("key", "pipeline", {})
    with pytest.raises(ValueError, match="boom"), tracker.child(parent, "stage1") as run:
        run.log_metrics({"val_acc": 0.1}, step=1)
        raise ValueError("boom")
    child = tracker.client.get_run(run.run_id)
    assert child.info.status == "FAILED"
    assert child.data.tags["failure"] == "ValueError: boom"
    assert child.info.end_time is not None
    assert status(tracker, parent) == "FAILED"

    # A later successful child of the same parent (a re-run) brings the parent back to FINISHED.
    with tracker.child(parent, "stage1") as rerun:
        pass
    assert status(tracker, rerun.run_id) == "FINISHED"
    assert status(tracker, parent) == "FINISHED"


def test_interrupted_child_is_killed(tracker):
    parent = tracker.find_or_create_parent("key", "pipeline", {})
    with pytest.raises(KeyboardInterrupt), tracker.child(parent, "stage2") as run:
        raise KeyboardInterrupt
    child = tracker.client.get_run(run.run_id)
    assert child.info.status == "KILLED"
    assert "failure" not in child.data.tags
    assert status(tracker, parent) == "KILLED"


def test_latest_run_finds_the_newest_run_with_a_tag(tracker):
    assert tracker.latest_run("bnn.checkpoint_md5", "abc") is None
    runs = []
    for _ in range(2):
        with tracker.child(None, "stage1", tags={"bnn.checkpoint_md5": "abc"}) as run:
            runs.append(run.run_id)
    with tracker.child(None, "stage1", tags={"bnn.checkpoint_md5": "def"}):
        pass
    assert tracker.latest_run("bnn.checkpoint_md5", "abc") == runs[-1]


def test_run_logger_writes_into_an_existing_run(tracker):
    parent = tracker.find_or_create_parent("key", "pipeline", {})
    summary = tracker.run_logger(parent)
    summary.log_metrics({"test_acc": 0.9})
    summary.set_tags({"stage1_run_id": "abc"})
    found = tracker.client.get_run(parent)
    assert found.data.metrics["test_acc"] == pytest.approx(0.9)
    assert found.data.tags["stage1_run_id"] == "abc"


# --- the real two-stage runner, logged like the DVC stages log it -----------------------------------


@pytest.mark.slow
def test_two_stage_runner_logs_one_parent_and_two_children(store_uri, digits):
    raw = copy.deepcopy(read_yaml(DEFAULT_PARAMS))
    raw["device"] = "cpu"
    raw["data"]["name"] = "digits"
    raw["model"].update(name="mlp", width=32)
    for stage in ("stage1", "stage2"):
        raw[stage]["epochs"] = 2
    raw["tracking"] = {"uri": store_uri, "experiment": "two-stage-runner"}
    params = validate_params(raw)
    tracker = Tracker.from_params(params)

    parent = pipeline_parent(tracker, params, digits)
    with tracker.child(
        parent, "stage1", params=params.model_dump(include={"seed", "model", "stage1"})
    ) as run1:
        stage1 = run_stage1(params, digits, observers=(epoch_logger(run1),))
    assert pipeline_parent(tracker, params, digits) == parent  # stage 2 finds the same parent
    with tracker.child(
        parent, "stage2", params=params.model_dump(include={"seed", "model", "stage2"})
    ) as run2:
        run_stage2(
            params,
            digits,
            stage1.model.state_dict(),
            stage1.result.init_signs,
            observers=(epoch_logger(run2),),
        )

    client = MlflowClient(tracking_uri=tracker.uri)
    runs = client.search_runs([tracker.experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    assert [r.info.run_id for r in parents] == [parent]
    assert sorted(r.info.run_name for r in children) == ["stage1", "stage2"]
    for child in children:
        assert child.data.tags[PARENT_TAG] == parent
        assert child.info.status == "FINISHED"
        for metric in ("ff_ratio", "c2i_stage", "val_acc"):
            history = client.get_metric_history(child.info.run_id, metric)
            assert sorted(m.step for m in history) == [1, 2], metric
    by_name = {r.info.run_name: r for r in children}
    assert by_name["stage1"].data.params["stage1.epochs"] == "2"
    assert by_name["stage2"].data.params["model.width"] == "32"
    assert client.get_run(parent).info.status == "FINISHED"


def test_workers_logging_a_new_data_set_at_once_each_get_it(store_uri, digits, request):
    """MLflow looks a data set up, then inserts it: without a retry, one of two workers logging a new
    one at the same moment fails on the data sets' unique key (a search's tasks start together)."""
    workers, rounds = 2, 12
    trackers = [Tracker(store_uri, experiment=request.node.name) for _ in range(workers)]
    runs = [[t.client.create_run(t.experiment_id).info.run_id for _ in range(rounds)] for t in trackers]
    start = threading.Barrier(workers)

    def log(worker: int) -> None:
        try:
            for round_, run_id in enumerate(runs[worker]):
                start.wait(timeout=60)
                trackers[worker].run_logger(run_id).log_dataset(digits, f"{round_:032d}")
        except BaseException:
            start.abort()  # the other worker stops waiting
            raise

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(log, range(workers)))  # re-raises a worker's error
    client = trackers[0].client
    for round_ in range(rounds):
        for worker in range(workers):
            (logged,) = client.get_run(runs[worker][round_]).inputs.dataset_inputs
            assert logged.dataset.digest == f"{round_:032d}"


def test_runs_carry_mlflows_source_tags_and_the_data_set_as_an_input(tracker, digits):
    parent = tracker.find_or_create_parent("key", "search", {})
    with tracker.child(parent, "trial-0") as run:
        run.log_dataset(digits, digits.fingerprint())
    for run_id in (parent, run.run_id):
        tags = tracker.client.get_run(run_id).data.tags
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"] and tags["mlflow.source.name"]
    inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "digits" and dataset.digest == digits.fingerprint()[:32]
    assert json.loads(dataset.profile) == {
        split: len(getattr(digits, split).labels) for split in ("train", "val", "test")
    }
