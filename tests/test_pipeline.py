"""End to end: the real DVC pipeline (prepare -> stage1 -> ... -> evaluate -> export) on a tiny params file.

A module-scoped fixture copies the project's code and ``dvc.yaml`` into a temporary git + DVC repository,
writes a small ``params.yaml`` derived from the real one (digits, a 32-wide MLP, two epochs per stage) and
runs ``dvc repro`` once. The tests then read its results and drive DVC further, in file order: a no-op
repro, the pipeline re-run from scratch over its committed results (as the first ``make repro`` of a
fresh clone), a change to one stage's params and back (DVC's run-cache), a queued ``dvc exp run`` (run in a
temporary copy of the project), a data file that changes, and params files that fail validation.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from study.config import validate_params
from study.reproduce.stats import VERDICTS

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
STAGES = ["validate", "prepare", "stage1", "stage2", "evaluate"]
EXPORT = ["export"]
STUDY_STAGES = ["ablate@wd", "ablate@optimizer", "ablate@stages", "ablate@latent", "report"]
RUNNING = re.compile(r"^Running stage '([^']+)':", re.MULTILINE)
EVALUATE_KEYS = {
    "test_acc",
    "val_acc",
    "ff_ratio",
    "c2i_ratio",
    "changed_from_init",
    "saturation",
}
TIMEOUT = 600  # seconds per command: generous, only there so a hang fails instead of blocking CI


def stages_run(output: str) -> list[str]:
    """The stages DVC ran, in order, from its ``Running stage '...':`` lines."""
    return RUNNING.findall(output)


def locked_md5s(project: Project) -> dict[str, str]:
    """``{output path: md5}`` of every stage output recorded in ``dvc.lock``."""
    lock = YAML(typ="safe").load(project.root / "dvc.lock")
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def tiny_params() -> dict:
    """The project's params.yaml, shrunk to seconds: digits, a 32-wide MLP, two epochs per stage."""
    params = YAML().load(PROJECT / "params.yaml")  # round trip: keeps key order and comments
    params["data"].update(name="digits", path=None, image_size=None)
    params["data"]["augment"]["crop_padding"] = 0
    params["model"].update(name="mlp", width=32, options={})
    for stage in ("stage1", "stage2"):
        params[stage].update(epochs=2, batch_size=64, compile=False)
    params["distill"]["enabled"] = False
    params["tracking"]["uri"] = None  # the default store: <project root>/mlflow.db
    params["device"] = "cpu"
    params["ablation"].update(seeds=3, seeds_by_ablation={}, epochs=2, workers=1, lr_extensions=0)  # shrunk
    params["ablation"]["optimizers"] = {"adam": {"lr": [2.0e-3]}, "sgd": {"lr": [0.1], "momentum": 0.9}}
    params["ablation"]["weight_decay"].update(stage1=[0.0, 5.0e-6], stage2=[0.0])
    params["ablation"]["latent"].update(seeds=3, epochs=2, batch_size=64)
    return params


@dataclass
class Project:
    """A throw-away copy of the project, with the environment its commands run in."""

    root: Path
    env: dict[str, str]
    first_repro: subprocess.CompletedProcess | None = None
    first_commit: str = ""
    first_metrics: dict | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"`{' '.join(args)}` exited with {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("dvc", *args, check=check)

    def git(self, *args: str) -> str:
        return self.run("git", *args).stdout.strip()

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        if self.git("status", "--porcelain"):
            self.git("commit", "-q", "-m", message)

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def read_params(self) -> dict:
        return YAML().load(self.params_path)

    def write_params(self, params: dict) -> None:
        validate_params(params)  # a broken fixture shows up here, not as a DVC failure
        self._dump(params)

    def write_invalid_params(self, params: dict) -> None:
        self._dump(params)

    def _dump(self, params: dict) -> None:
        YAML().dump(params, self.params_path)

    def metrics(self, stage: str = "evaluate") -> dict:
        """A stage's numbers: its DVC metrics, and its details where it writes them apart."""
        folder = self.root / "runs" / stage
        numbers = json.loads((folder / "metrics.json").read_text())
        if (folder / "details.json").exists():
            numbers |= json.loads((folder / "details.json").read_text())
        return numbers

    def run_queue(self) -> None:
        """``dvc queue start`` (a background worker, which stops when the queue is empty), waited for;
        every queued experiment must succeed."""
        self.dvc("queue", "start")
        deadline = time.monotonic() + TIMEOUT
        while "Queued" in (status := self.dvc("queue", "status").stdout) or "Running" in status:
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert "Success" in status, status + self.dvc("queue", "logs", "--fail", check=False).stdout

    def table(self, *args: str, width: int = 200) -> str:
        """A DVC command's table as a terminal ``width`` characters wide shows it."""
        proc = subprocess.run(
            ["dvc", *args], cwd=self.root, env={**self.env, "COLUMNS": str(width)},
            capture_output=True, text=True, timeout=TIMEOUT, check=True,
        )  # fmt: skip
        return proc.stdout


def fits(table: str, width: int = 200) -> bool:
    """Every column shown in full (rich elides a squeezed cell with "…") within ``width``."""
    return "…" not in table and max(map(len, table.splitlines())) <= width


def isolated_env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The stages find the project from their working directory, and MLflow defaults to its mlflow.db.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "BNN_STUDY_ROOT", "PYTHONPATH"):
        env.pop(name, None)
    identity = {"NAME": "bnn-study tests", "EMAIL": "tests@bnn-study.invalid"}
    for role in ("AUTHOR", "COMMITTER"):
        for field, value in identity.items():
            env[f"GIT_{role}_{field}"] = value
    (scratch / "dvc-global").mkdir()
    (scratch / "dvc-system").mkdir()
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` and `dvc` of this venv
        CI="true",
        # A 32-wide MLP gains nothing from threads, and OpenMP spin-waits double its time on a busy machine.
        OMP_NUM_THREADS="1",
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=str(scratch / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(scratch / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(scratch / "dvc-site-cache"),
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The project copied into a fresh git + DVC repository, after one full ``dvc repro``."""
    root = tmp_path_factory.mktemp("pipeline")
    env = isolated_env(tmp_path_factory.mktemp("pipeline-env"))
    assert shutil.which("dvc", path=env["PATH"]) == str(VENV_BIN / "dvc"), "run with the venv's python"
    for folder in ("bnn", "study", "pipelines"):
        shutil.copytree(PROJECT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", "reports/robustness.csv"):  # as a clone has them
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, root / name)
    proj = Project(root, env)
    proj.write_params(tiny_params())

    proj.git("init", "-q")
    proj.git("config", "user.name", "bnn-study tests")
    proj.git("config", "user.email", "tests@bnn-study.invalid")
    proj.git("config", "commit.gpgsign", "false")
    proj.commit("project")
    proj.dvc("init", "-q")
    shutil.copy2(PROJECT / ".dvc" / "config", root / ".dvc" / "config")  # as a clone has it: autostage
    proj.commit("dvc init")

    proj.first_commit = proj.git("rev-parse", "HEAD")
    proj.first_repro = proj.dvc("repro")  # everything: the pipeline, the ablations and the report
    proj.first_metrics = proj.metrics()
    return proj


def test_repro_runs_every_stage(project: Project) -> None:
    assert stages_run(project.first_repro.stdout) == STAGES + EXPORT + STUDY_STAGES
    for out in ("data/prepared/data.pt", "runs/stage1/model.pt", "runs/stage2/model.pt"):
        assert (project.root / out).stat().st_size > 0, out
    for stage in ("stage1", "stage2"):
        history = (project.root / "runs" / stage / "history.csv").read_text().splitlines()
        assert len(history) == 1 + 2, f"{stage}: a header and one row per epoch"
    summary = json.loads((project.root / "data/prepared/summary.json").read_text())
    assert summary["name"] == "digits"
    report = (project.root / "reports/reproduction.md").read_text()
    verdict = "|".join(re.escape(v) for v in VERDICTS)
    for claim in ("1a", "1b", "2a", "2b", "3", "4a", "4b", "5", "6a", "6b", "6c"):
        assert re.search(rf"^\| {claim} +\|.*\*\*({verdict})\*\*", report, re.M), claim


def test_evaluate_metrics(project: Project) -> None:
    metrics = project.first_metrics
    assert set(metrics) >= EVALUATE_KEYS
    assert all(math.isfinite(metrics[key]) for key in EVALUATE_KEYS)
    assert metrics["test_acc"] > 0.5, "two epochs per stage on digits already beat chance (0.1) by far"
    assert 0 < metrics["val_acc"] <= 1
    for key in ("c2i_ratio", "changed_from_init", "saturation"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["ff_ratio"] >= 0


def test_figures(project: Project) -> None:
    for name in ("curves.png", "latent_weights.png"):
        figure = project.root / "runs" / "evaluate" / name
        assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name


def test_dvc_plots_show_offline_images_and_names_every_axis(project: Project) -> None:
    """Every plot of dvc.yaml is shown, its axes named (tests/test_plots_offline.py renders them)."""
    shown = json.loads(project.dvc("plots", "show", "--json").stdout)["data"]
    images = {name for name, entries in shown.items() if entries[0]["type"] == "image"}
    assert {"runs/evaluate/curves.png", "runs/evaluate/latent_weights.png"} <= images
    for definition in YAML(typ="safe").load(project.root / "dvc.yaml")["plots"]:
        ((name, plot),) = definition.items()
        spec = json.dumps(shown[name][0]["content"])
        for label in (plot["x_label"], plot["y_label"]):
            assert json.dumps({"title": label})[1:-1] in spec, (name, label)


def test_dvc_metrics_show_is_what_a_user_compares_and_fits_a_terminal(project: Project) -> None:
    shown = json.loads(project.dvc("metrics", "show", "--json").stdout)
    (workspace,) = shown.values()  # one revision: the workspace
    assert set(workspace["data"]) == {"runs/evaluate/metrics.json", "runs/export/metrics.json"}
    evaluate = workspace["data"]["runs/evaluate/metrics.json"]["data"]
    assert set(evaluate) == {"test_acc", "stage1_val_acc", "ff_ratio", "c2i_ratio"}
    export = workspace["data"]["runs/export/metrics.json"]["data"]
    assert set(export) == {"export_acc", "match", "onnx_match"}
    assert export["match"] and export["export_acc"] == evaluate["test_acc"]
    table = project.table("metrics", "show")
    assert fits(table, width=120), table


def test_export_is_the_evaluated_network_at_one_bit(project: Project) -> None:
    from study.export.inference import load_exported

    export = project.metrics("export")
    assert export["match"] and export["prediction_mismatches"] == 0
    assert export["onnx_match"] and export["onnx_prediction_mismatches"] == 0
    assert export["export_acc"] == export["trained_acc"] == project.first_metrics["test_acc"]
    assert export["binary_layers_size_ratio"] <= 1 / 25
    bnn_file = project.root / "runs" / "export" / "model.bnn"
    assert export["file_size_ratio"] == bnn_file.stat().st_size / export["float32_inference_bytes"]
    network = load_exported(bnn_file)  # from the file alone
    assert not any(name.endswith("weight") and p.requires_grad for name, p in network.named_parameters())
    assert (project.root / "runs" / "export" / "model.onnx").stat().st_size > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy deprecations inside MLflow
def test_mlflow_run_tree(project: Project) -> None:
    from mlflow.tracking import MlflowClient

    store = project.root / "mlflow.db"
    assert store.exists(), "the default tracking store is <project root>/mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("bnn-study")
    assert experiment is not None
    assert experiment.artifact_location == (project.root.resolve() / "mlartifacts").as_uri()

    # Later tests add pipelines (new params, an experiment): the first repro's parent is the oldest.
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`bnn.kind` = 'pipeline'", order_by=["attributes.start_time ASC"]
    )
    assert parents
    parent = parents[0]
    fingerprint = json.loads((project.root / "data/prepared/summary.json").read_text())["fingerprint"]
    assert parent.data.tags["data_hash"] == fingerprint
    assert parent.data.tags["mlflow.source.git.commit"] == project.first_commit
    assert parent.data.tags["bnn.git_dirty"] == "false"
    # Parents are told apart by name and compared by params in the UI (not "pipeline", no params).
    params = tiny_params()
    s1, s2 = params["stage1"], params["stage2"]
    assert parent.info.run_name == (
        f"mlp-32 | s1 {s1['optimizer']} lr {s1['lr']:g} wd {s1['weight_decay']:g} "
        f"| s2 {s2['optimizer']} lr {s2['lr']:g} wd {s2['weight_decay']:g} | seed {params['seed']}"
    )
    for key in ("stage1.lr", "stage2.weight_decay", "model.width", "data.name", "seed"):
        section, _, field = key.rpartition(".")
        assert parent.data.params[key] == str(params[section][field] if section else params[field]), key
    assert "dvc.exp_name" not in parent.data.tags, "a plain dvc repro is no DVC experiment"
    for key in ("test_acc", "ff_ratio", "c2i_ratio"):
        assert parent.data.metrics[key] == pytest.approx(project.first_metrics[key]), key

    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    by_name = {run.info.run_name: run for run in children}
    assert sorted(by_name) == ["evaluate", "export", "stage1", "stage2"]
    assert all(run.info.status == "FINISHED" for run in children)
    assert all(run.data.tags["bnn.git_dirty"] == "false" for run in children)
    # Checkpoints hold no run id: runs are linked to them by the md5 DVC records in dvc.lock.
    md5 = locked_md5s(project)
    for stage in ("stage1", "stage2"):
        assert by_name[stage].data.tags["bnn.checkpoint_md5"] == md5[f"runs/{stage}/model.pt"]
        assert parent.data.tags[f"{stage}_run_id"] == by_name[stage].info.run_id
        # The network is in the run too, and the data set is its logged input.
        artifacts = client.list_artifacts(by_name[stage].info.run_id, "model")
        assert [artifact.path for artifact in artifacts] == ["model/model.pt"]
        (dataset,) = by_name[stage].inputs.dataset_inputs
        assert (dataset.dataset.name, dataset.dataset.digest) == ("digits", fingerprint[:32])
    assert by_name["stage2"].data.tags["stage1_run_id"] == by_name["stage1"].info.run_id
    for stage in ("stage1", "stage2"):
        run_id = by_name[stage].info.run_id
        for metric in ("ff_ratio", "val_acc"):
            steps = sorted(m.step for m in client.get_metric_history(run_id, metric))
            assert steps == [1, 2], f"{stage}.{metric}: one value per epoch"
    assert by_name["evaluate"].data.metrics["test_acc"] == pytest.approx(project.first_metrics["test_acc"])
    assert by_name["export"].data.metrics["export_acc"] == pytest.approx(project.first_metrics["test_acc"])
    assert parent.data.metrics["export_match"] == 1.0
    assert {"export_binary_layers_size_ratio", "export_file_size_ratio"} <= set(parent.data.metrics)
    exported = client.list_artifacts(by_name["export"].info.run_id, "export")
    assert [artifact.path for artifact in exported] == ["export/model.bnn"]


def test_second_repro_runs_nothing_but_validate(project: Project) -> None:
    proc = project.dvc("repro")
    assert stages_run(proc.stdout) == ["validate"]  # always: the whole params.yaml, the data source
    for stage in STAGES[1:] + EXPORT + STUDY_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout


def test_rerun_over_committed_results_rewrites_the_same_bytes_and_leaves_git_clean(project: Project) -> None:
    """The first ``make repro`` of a fresh clone: the pipeline re-made from scratch over its committed
    results writes byte-identical outputs (the same md5s in dvc.lock), and its runs are not dirty."""
    project.commit("tiny pipeline results")
    head = project.git("rev-parse", "HEAD")
    before = locked_md5s(project)
    proc = project.dvc("repro", "--force", "export")  # the pipeline, its 1-bit export included
    assert stages_run(proc.stdout) == STAGES + EXPORT
    assert locked_md5s(project) == before
    assert project.git("status", "--porcelain") == "", "the re-run changed tracked or unignored files"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bnn-study")
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.`bnn.kind` = 'pipeline' and tags.`mlflow.source.git.commit` = '{head}'",
    )
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(run.info.run_name for run in runs) == ["evaluate", "export", "stage1", "stage2"]
    for run in [parent, *runs]:
        assert run.data.tags["mlflow.source.git.commit"] == head, run.info.run_name
        assert run.data.tags["bnn.git_dirty"] == "false", run.info.run_name


def test_stage2_param_change_reruns_only_stage2_and_evaluate(project: Project) -> None:
    params = project.read_params()
    params["stage2"]["lr"] = params["stage2"]["lr"] / 2
    project.write_params(params)
    proc = project.dvc("repro", "evaluate")  # the pipeline only; the ablations read stage2 params too
    assert stages_run(proc.stdout) == ["validate", "stage2", "evaluate"]
    assert project.metrics()["test_acc"] > 0.5


def test_switching_a_param_back_restores_from_the_run_cache(project: Project) -> None:
    md5 = locked_md5s(project)["runs/stage2/model.pt"]
    params = project.read_params()
    params["stage2"]["lr"] = params["stage2"]["lr"] * 2  # the value before the previous test
    project.write_params(params)
    proc = project.dvc("repro", "evaluate")
    assert stages_run(proc.stdout) == ["validate"], "stage2 and evaluate ran with these params before"
    for stage in ("stage2", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in proc.stdout
    assert locked_md5s(project)["runs/stage2/model.pt"] != md5
    assert project.metrics() == project.first_metrics


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy deprecations inside MLflow
def test_a_queued_experiment_uses_the_projects_stores_and_retrains_no_ablation_cell(project: Project) -> None:
    """``dvc exp run --queue -S stage1.weight_decay=1e-5 && dvc queue start``: the experiment runs in a
    copy under ``.dvc/tmp/exps`` that DVC deletes. Its MLflow runs land in the project's store, and
    the ablation's cells come from the project's cell store (the ablations train with the recipe's
    weight decays, ``ablation.recipe_weight_decay``, whatever the pipeline's)."""
    from mlflow.tracking import MlflowClient

    project.write_params(tiny_params())  # the settings of the first repro, whose cells are stored
    project.commit("before a queued experiment")
    client = MlflowClient(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bnn-study")
    before = {run.info.run_id for run in client.search_runs([experiment.experiment_id], max_results=1000)}
    cells = {path: path.stat().st_mtime_ns for path in (project.root / ".cache" / "cells").glob("*.json")}
    assert cells, "the first repro stored its ablation cells in the project"

    # The pipeline and one ablation (the rest reuse cells alike: tests/study/reproduce/test_ablate.py).
    project.dvc("exp", "run", "--queue", "-S", "stage1.weight_decay=1e-5", "export", "ablate@stages")
    project.run_queue()

    new = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=1000)
        if r.info.run_id not in before
    ]
    (parent,) = [run for run in new if run.data.tags.get("bnn.kind") == "pipeline"]
    # The parent is the DVC experiment's: named after it, tagged with it and its baseline commit.
    exp_name = parent.data.tags["dvc.exp_name"]
    assert parent.info.run_name == exp_name and exp_name in project.dvc("exp", "list", "--name-only").stdout
    assert parent.data.tags["dvc.baseline_rev"] == project.git("rev-parse", "HEAD")
    assert float(parent.data.params["stage1.weight_decay"]) == pytest.approx(1e-5)
    assert sorted(run.info.run_name for run in new) == sorted(
        ["evaluate", "export", exp_name, "stage1", "stage2"]
    )
    (stage1,) = [run for run in new if run.info.run_name == "stage1"]
    assert float(stage1.data.params["stage1.weight_decay"]) == pytest.approx(1e-5)
    after = {path: path.stat().st_mtime_ns for path in (project.root / ".cache" / "cells").glob("*.json")}
    assert after == cells, "every ablation cell was reused from the project's cell store, none trained again"
    assert project.read_params()["stage1"]["weight_decay"] == pytest.approx(5e-6), (
        "the workspace is untouched"
    )
    shown = project.dvc("exp", "show", "--csv").stdout
    assert "1e-05" in shown, shown
    # The README's view of "which experiment is better" fits a terminal: the metrics, the params that
    # differ, and the experiments' names.
    table = project.table("exp", "show", "--only-changed", "--drop", ".*/")
    assert fits(table), table
    header = table.splitlines()[1].split()
    assert {"test_acc", "export_acc", "stage1.weight_decay"} <= set(header), table
    assert not [column for column in header if "/" in column], "no file hashes"


def test_a_changed_data_file_reruns_prepare_and_the_old_one_comes_from_the_run_cache(
    project: Project, tmp_path: Path
) -> None:
    """``data.path`` is a param, not a DVC dependency: ``validate`` hashes its content for ``prepare``."""
    import numpy as np

    rows = np.random.default_rng(0).integers(0, 256, size=(300, 785))
    rows[:, -1] = np.arange(300) % 10  # the label column, 30 images per class
    csv = tmp_path / "mnist.csv"
    np.savetxt(csv, rows, fmt="%d", delimiter=",")
    original = project.params_path.read_text()
    params = project.read_params()
    params["data"].update(name="mnist5k", path=str(csv))
    project.write_params(params)
    try:
        assert stages_run(project.dvc("repro", "prepare").stdout) == ["validate", "prepare"]
        assert stages_run(project.dvc("repro", "prepare").stdout) == ["validate"]
        with open(csv, "a") as stream:  # ten more images
            np.savetxt(stream, rows[:10], fmt="%d", delimiter=",")
        assert stages_run(project.dvc("repro", "prepare").stdout) == ["validate", "prepare"]
        assert json.loads((project.root / "data/prepared/summary.json").read_text())["train"] > 0
    finally:
        project.params_path.write_text(original)
    proc = project.dvc("repro", "prepare")
    assert stages_run(proc.stdout) == ["validate"]
    assert "Stage 'prepare' is cached - skipping run, checking out outputs" in proc.stdout
    assert json.loads((project.root / "data/prepared/summary.json").read_text())["name"] == "digits"


def test_an_unknown_top_level_key_fails_dvc_repro_in_one_line(project: Project) -> None:
    original = project.params_path.read_text()
    params = project.read_params()
    params["epochs"] = 3  # meant for a stage: no stage declares it, so DVC alone would say "up to date"
    project.write_invalid_params(params)
    try:
        proc = project.dvc("repro", check=False)
    finally:
        project.params_path.write_text(original)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert stages_run(proc.stdout) == ["validate"]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors == ["error: params.yaml: epochs: unknown key"], output
    assert "Traceback" not in output


def workspace_files(project: Project) -> dict[str, bytes]:
    """Every file of the workspace but git's and DVC's own state, with its content."""
    skip = (".git", ".dvc")
    return {
        path.relative_to(project.root).as_posix(): path.read_bytes()
        for path in sorted(project.root.rglob("*"))
        if path.is_file() and path.relative_to(project.root).parts[0] not in skip
    }


def test_invalid_params_fail_in_one_line_and_keep_results(project: Project) -> None:
    before = workspace_files(project)
    original = project.params_path.read_text()
    params = project.read_params()
    params["stage2"]["lrr"] = params["stage2"]["lr"]
    project.write_invalid_params(params)
    try:
        proc = project.dvc("repro", "evaluate", check=False)
    finally:
        project.params_path.write_text(original)

    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert stages_run(proc.stdout) == ["validate"], "validate reads the whole file, first"
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stage2.lrr" in errors[0], output
    assert "Traceback" not in output
    after = workspace_files(project)
    assert set(after) == set(before), (
        "a refused params.yaml added or removed files (DVC removes a stage's outputs)"
    )
    changed = [path for path in before if after[path] != before[path]]
    assert changed == [], f"changed by a refused params.yaml: {changed}"
    # The failed run recorded nothing: with the params restored, the pipeline is up to date again.
    assert stages_run(project.dvc("repro", "evaluate").stdout) == ["validate"]


def test_a_moved_project_keeps_working_and_writes_nothing_under_its_old_path(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``mv`` of a project that has run (last in this file: it moves the module's project). In the new
    folder ``dvc repro``, a queued experiment, a search and an export by MLflow run id work, and
    nothing is written under the old path, which MLflow's absolute artifact locations would recreate."""
    from mlflow.tracking import MlflowClient

    def stage2_runs(root: Path) -> list:
        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("bnn-study")
        return client.search_runs(
            [experiment.experiment_id], "attributes.run_name = 'stage2'", max_results=1000
        )

    old = project.root
    earlier = stage2_runs(old)[-1].info.run_id  # a run whose network was logged before the move
    project.write_params(tiny_params())
    project.commit("before the move")
    new = tmp_path_factory.mktemp("moved") / "project"
    shutil.move(old, new)
    project.root = new
    try:
        params = project.read_params()
        params["stage2"]["lr"] = 3e-3
        project.write_params(params)
        assert "stage2" in stages_run(project.dvc("repro", "export").stdout)
        project.commit("stage 2 at another lr")

        project.dvc("exp", "run", "--queue", "-S", "stage2.lr=4e-3", "export")
        project.run_queue()

        project.run("python", "-m", "study.search", "--trials", "2", "--study-name", "moved",
                    "--stage1-candidates", "0", "--pruner", "none")  # fmt: skip
        exported = project.run("python", "-m", "study.export", earlier).stdout
        assert (new / "exports" / f"mlflow-{earlier}.bnn").exists(), exported

        assert not old.exists(), sorted(str(p) for p in old.rglob("*"))
        here = (new / "mlartifacts").as_uri()
        runs = stage2_runs(new)
        assert len(runs) >= 3 and all(run.info.artifact_uri.startswith(here) for run in runs)
    finally:
        shutil.move(new, old)
        project.root = old
