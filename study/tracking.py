"""MLflow tracking in one place: the run tree (parent and children) and batched logging.

Runs are linked by the ``mlflow.parentRunId`` tag through an explicit :class:`MlflowClient`, so a
child can be created from any process or host that knows the parent's id (no active-run state).
Metrics are logged per epoch in one ``log_batch`` call (one ``log_metric`` costs ~5 ms on SQLite).

The store is ``tracking.uri`` from params, else ``$MLFLOW_TRACKING_URI``, else an SQLite file
``mlflow.db`` at the project root (absolute, so DVC stages run from anywhere share it), with
artifacts in ``mlartifacts/`` beside it; a store moved or copied with its project follows it
(:func:`follow_moved_store`).

Every run is tagged with the project's commit (``mlflow.source.git.commit``, as MLflow expects it)
and ``bnn.git_dirty``: whether tracked sources differ from that commit. What the pipeline itself
writes (DVC outputs, ``dvc.lock``) does not count, so the first run of a fresh clone is clean.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import posixpath
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ruamel.yaml import YAML, YAMLError
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from bnn import PreparedData
from study.config import Params
from study.errors import InputError
from study.paths import PROJECT_ROOT, STORE_ROOT
from study.urls import first_line, redact, with_driver

PARENT_TAG = "mlflow.parentRunId"
# With a tracking server, MLflow prints a line per ended run and a bar per download: hundreds of lines in
# a stage's or a task's log. Users who want them set these variables themselves.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class TrackingError(InputError):
    """The MLflow store cannot be used (unreachable database, bad credentials); no password shown."""


ARTIFACTS_FOLDER = "mlartifacts"
CHECKPOINT_ARTIFACTS = "model"  # where a run's network goes among its MLflow artifacts
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_DIRTY_TAG = "bnn.git_dirty"
RUN_KEY_TAG = "bnn.run_key"
DATASET_ATTEMPTS = 3  # log_inputs races between workers (RunLogger.log_dataset)


def tracking_uri(configured: str | None = None) -> str:
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{STORE_ROOT / 'mlflow.db'}"
    return with_driver(uri)


def _git(*args: str) -> str:
    # --no-optional-locks: a status check never takes .git/index.lock from a concurrent `git add`
    command = ["git", "--no-optional-locks", *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout


def git_commit() -> str:
    """The project's HEAD commit; ``unknown`` outside git."""
    try:
        return _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pipeline_outputs() -> list[str]:
    """What ``dvc repro`` writes, as globs relative to the project: ``dvc.lock`` and every stage's
    outs, metrics and plots in ``dvc.yaml`` (``${item}`` of a ``foreach`` stage becomes ``*``)."""
    dvc_yaml = PROJECT_ROOT / "dvc.yaml"
    try:
        return list(_outputs_of(dvc_yaml, dvc_yaml.stat().st_mtime_ns))
    except OSError:
        return ["dvc.lock"]


@functools.cache
def _outputs_of(dvc_yaml: Path, mtime_ns: int) -> tuple[str, ...]:
    """Parsed once per version of the file (every tracked run asks, a search once per trial)."""
    try:
        stages = (YAML(typ="safe").load(dvc_yaml) or {}).get("stages") or {}
    except (OSError, YAMLError):
        stages = {}
    paths = ["dvc.lock"]
    for stage in stages.values():
        body = stage.get("do", stage)  # a foreach stage holds its definition under `do`
        wdir = body.get("wdir", ".")
        for field in ("outs", "metrics", "plots"):
            for out in body.get(field) or []:
                path = next(iter(out)) if isinstance(out, dict) else out
                paths.append(posixpath.normpath(posixpath.join(wdir, re.sub(r"\$\{[^}]*\}", "*", path))))
    return tuple(paths)


def git_dirty() -> bool | None:
    """Whether tracked files other than the pipeline's outputs differ from HEAD; None outside git.

    Untracked files and the outputs (which every stage rewrites and DVC stages into the index) are
    left out: a stage run from a clean checkout is not dirty because an earlier stage wrote results.
    """
    excluded = [f":(exclude,glob){path}" for path in pipeline_outputs()]
    try:
        return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded).strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def git_tags() -> dict[str, str]:
    """The commit tag (never suffixed: MLflow reserves it for a commit id) and ``bnn.git_dirty``."""
    dirty = git_dirty()
    tags = {GIT_COMMIT_TAG: git_commit()}
    if dirty is not None:
        tags[GIT_DIRTY_TAG] = str(dirty).lower()
    return tags


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags, as its fluent API sets them: who ran which entry point."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    entry = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path("python")
    name = entry.relative_to(PROJECT_ROOT).as_posix() if entry.is_relative_to(PROJECT_ROOT) else entry.name
    return {"mlflow.user": user, "mlflow.source.name": name, "mlflow.source.type": "LOCAL"}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"stage1": {"lr": 1e-3}}`` -> ``{"stage1.lr": 1e-3}``, the form MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _probe_database(uri: str) -> None:
    """Connect once to a database store before MLflow does: MLflow retries a dead server for minutes."""
    if "://" not in uri or uri.split(":", 1)[0] in ("http", "https", "file", "databricks"):
        return
    args = {"connect_timeout": 10} if uri.startswith("postgresql") else {}
    engine = create_engine(uri, connect_args=args)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``mlartifacts/`` beside an SQLite store, or under the
    store root for any other database (never MLflow's fallback, ``./mlruns`` in whatever folder the
    process runs in); a tracking server (``http(s)://``) decides itself."""
    scheme = uri.split(":", 1)[0]
    if scheme in ("http", "https", "databricks"):
        return None
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS_FOLDER).as_uri()
    return (STORE_ROOT / ARTIFACTS_FOLDER).as_uri()


def follow_moved_store(db: Path) -> None:
    """Point a copied or moved SQLite store at the artifacts beside it.

    MLflow keeps each experiment's artifact location, and each run's, as an absolute path: after
    ``mv`` or ``cp -r`` of the project, new runs would write into the old folder (recreating it)
    and old runs' artifacts would be looked for there. A location in another folder's
    ``mlartifacts/`` (the folder this module gives every SQLite store) is rewritten to the one
    beside ``db``, in MLflow's own tables, in one transaction; a store in place is only read.
    """
    if not db.exists():
        return
    here = (db.parent / ARTIFACTS_FOLDER).as_uri()
    with closing(sqlite3.connect(db, timeout=60)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return
        moved = [
            (experiment, location)
            for experiment, location in connection.execute(
                "SELECT experiment_id, artifact_location FROM experiments"
            )
            if location and location != here and location.rstrip("/").endswith(f"/{ARTIFACTS_FOLDER}")
        ]
        for experiment, old in moved:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (here, experiment)
            )
            for table, column in (("runs", "artifact_uri"), ("logged_models", "artifact_location")):
                if table in tables:
                    connection.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE experiment_id = ? AND substr({column}, 1, ?) = ?",
                        (here, len(old) + 1, experiment, len(old), old),
                    )


class Tracker:
    """A thin layer over :class:`MlflowClient` for bnn-study's run tree."""

    def __init__(self, uri: str | None = None, experiment: str = "bnn-study"):
        self.uri = tracking_uri(uri)
        try:
            _probe_database(self.uri)
            if self.uri.startswith("sqlite:///"):
                follow_moved_store(Path(self.uri.removeprefix("sqlite:///")))
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment_id(experiment)
        except (MlflowException, SQLAlchemyError, ImportError) as exc:
            raise TrackingError(
                f"cannot open the MLflow store {redact(self.uri)}: {first_line(exc, self.uri)}"
            ) from None

    @classmethod
    def from_params(cls, params: Params) -> Tracker:
        return cls(params.tracking.uri, params.tracking.experiment)

    @classmethod
    def for_ablations(cls, params: Params) -> Tracker:
        """The ablations' experiment, ``<experiment>-ablations``: their hundreds of cell runs would
        otherwise push the pipeline's and the searches' runs off the first page of the MLflow UI."""
        return cls(params.tracking.uri, f"{params.tracking.experiment}-ablations")

    def _experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_root(self.uri))
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def find_or_create_parent(
        self, key: str, name: str, tags: Mapping[str, str], params: Mapping[str, Any] = ()
    ) -> str:
        """The parent run tagged with ``key``, created on first use (so stages of one pipeline share
        it) with ``params``: comparing parents in the MLflow UI shows what sets them apart."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={RUN_KEY_TAG: key, **source_tags(), **git_tags(), **tags}
        )
        self.run_logger(run.info.run_id).log_params(params)
        return run.info.run_id

    def latest_run(self, tag: str, value: str) -> str | None:
        """The id of the newest run tagged ``tag = value``, None when there is none."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tag}` = '{value}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    @contextmanager
    def child(
        self,
        parent_id: str | None,
        name: str,
        params: Mapping[str, Any] = (),
        tags: Mapping[str, str] = (),
        batch_seconds: float = 0.0,
    ) -> Iterator[RunLogger]:
        """A child run, FINISHED on success, FAILED (or KILLED on Ctrl-C) when the body raises.

        The parent's status follows its latest child, so an interrupted pipeline never shows as running.
        ``batch_seconds``: what the run logs is written at most that often (and when it ends).
        """
        run_tags = {**source_tags(), **git_tags(), **dict(tags)}
        if parent_id:
            run_tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=run_tags)
        logger = RunLogger(self.client, run.info.run_id, batch_seconds)
        logger.log_params(params)
        if parent_id:
            self.client.update_run(parent_id, status="RUNNING")
        status = "FINISHED"
        try:
            yield logger
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException as exc:
            status = "FAILED"
            logger.set_tags({"failure": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        finally:
            logger.flush()
            self.client.set_terminated(run.info.run_id, status)
            if parent_id:
                self.client.set_terminated(parent_id, status)

    def run_logger(self, run_id: str) -> RunLogger:
        return RunLogger(self.client, run_id)


class RunLogger:
    """Logging into one existing run, in as few store calls as MLflow allows.

    With ``batch_seconds`` > 0, params, metrics and tags are held and written together once that
    much time has passed since the last write, and by :meth:`flush` (a child run flushes when it
    ends): a search trial of a few seconds then costs one write instead of one per epoch (each is a
    database transaction, ~10 ms on SQLite), while a long trial still shows its curves as it runs.
    Not MLflow's own asynchronous logging: that drains its queue when a run ends, up to a second
    per run.
    """

    def __init__(self, client: MlflowClient, run_id: str, batch_seconds: float = 0.0):
        self.client = client
        self.run_id = run_id
        self.batch_seconds = batch_seconds
        self.held: dict[str, list] = {"metrics": [], "params": [], "tags": []}
        self.written = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._hold(params=[Param(k, str(v)[:6000]) for k, v in flatten(dict(params)).items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, prefix: str = "") -> None:
        self._hold(metrics=_metrics(metrics, step, prefix))

    def log_history(self, records: list[Mapping[str, Any]], prefix: str = "") -> None:
        """Per-epoch records (each with its ``epoch``), as :meth:`log_metrics` for each, in one batch."""
        self._hold(metrics=[m for record in records for m in _metrics(record, record["epoch"], prefix)])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._hold(tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dataset(self, data: PreparedData, digest: str, context: str = "training") -> None:
        """The data set as an MLflow input (the runs page's Datasets column): name, content hash
        (``digest``: :meth:`PreparedData.fingerprint`, which the caller has already) and split sizes.
        Written at once, not batched."""
        sizes = {split: len(getattr(data, split).labels) for split in ("train", "val", "test")}
        dataset = Dataset(name=data.name, digest=digest[:32], source_type="local",
                          source=json.dumps({"data_hash": digest}), profile=json.dumps(sizes))  # fmt: skip
        tags = [InputTag("mlflow.data.context", context)]
        for attempt in range(DATASET_ATTEMPTS):
            try:
                self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=tags)])
                return
            except MlflowException:
                # MLflow looks the data set up, then inserts it: two workers logging a new one at once
                # both insert, and one fails on the data sets' unique key. Again, it finds the other's.
                if attempt == DATASET_ATTEMPTS - 1:
                    raise

    def _hold(self, **items: list) -> None:
        for kind, values in items.items():
            self.held[kind].extend(values)
        if time.monotonic() - self.written >= self.batch_seconds:
            self.flush()

    def flush(self) -> None:
        """Write everything held, in batches within MLflow's limits (1000 metrics, 100 params, 100 tags)."""
        held = self.held
        while any(held.values()):
            metrics, params, tags = held["metrics"][:1000], held["params"][:100], held["tags"][:100]
            self.client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags)
            del held["metrics"][:1000], held["params"][:100], held["tags"][:100]
        self.written = time.monotonic()

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def _metrics(values: Mapping[str, Any], step: int, prefix: str) -> list[Metric]:
    """MLflow metrics of the numeric entries of ``values`` (flags and text are left out)."""
    now = int(time.time() * 1000)
    return [
        Metric(f"{prefix}{k}", float(v), now, step)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
