"""The DVC stage entry points fail with one line on stderr and an exit status, never a traceback.

Each end-to-end case runs ``python -m pipelines.<stage>`` in its own temporary copy of the project
(``params.yaml`` only; ``BNN_STUDY_ROOT`` points the stages there). The three processes start together,
since each spends seconds importing torch and MLflow; the rest of :func:`study.cli.run_main`'s mapping
is checked in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bnn import DataError, NonFiniteLossError, PreparedData
from study.cli import run_main
from study.config import DEFAULT_PARAMS, ParamsError

PROJECT = Path(__file__).resolve().parents[2]  # the stages run elsewhere import this checkout's code
EARLIER_METRICS = {"val_acc": 0.5, "note": "from an earlier run"}
EARLIER_CHECKPOINT = b"an earlier checkpoint"
EARLIER_SUMMARY = {"name": "earlier"}


@dataclass
class Finished:
    root: Path
    returncode: int
    stdout: str
    stderr: str


def make_project(root: Path, **sections) -> Path:
    """``root`` holding the real params.yaml with keys of top-level ``sections`` updated.

    Round-trip YAML keeps the file's key order and comments, as a user's edit would.
    """
    yaml = YAML()
    raw = yaml.load(DEFAULT_PARAMS.read_text())
    for name, values in sections.items():
        raw[name].update(values)
    root.mkdir(parents=True)
    with (root / "params.yaml").open("w") as f:
        yaml.dump(raw, f)
    return root


def start(root: Path, stage: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "BNN_STUDY_ROOT": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": str(PROJECT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", f"pipelines.{stage}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits) -> dict[str, Finished]:
    base = tmp_path_factory.mktemp("cli")

    # stage1 with a negative learning rate, over the outputs of an earlier successful run.
    bad_stage1 = make_project(base / "bad_stage1", stage1={"lr": -0.001})
    (bad_stage1 / "runs" / "stage1").mkdir(parents=True)
    (bad_stage1 / "runs" / "stage1" / "metrics.json").write_text(json.dumps(EARLIER_METRICS))
    (bad_stage1 / "runs" / "stage1" / "model.pt").write_bytes(EARLIER_CHECKPOINT)

    # prepare with cifar10 pointing at a folder that does not exist, over an earlier summary.
    bad_prepare = make_project(base / "bad_prepare", data={"name": "cifar10", "path": "no/such/cifar"})
    (bad_prepare / "data" / "prepared").mkdir(parents=True)
    (bad_prepare / "data" / "prepared" / "summary.json").write_text(json.dumps(EARLIER_SUMMARY))

    # stage2 with prepared data but no stage-1 checkpoint: the work starts and fails (status 1).
    no_checkpoint = make_project(base / "no_checkpoint")
    digits.save(no_checkpoint / "data" / "prepared" / "data.pt")

    cases = {
        "bad_stage1": (bad_stage1, "stage1"),
        "bad_prepare": (bad_prepare, "prepare"),
        "no_checkpoint": (no_checkpoint, "stage2"),
    }
    processes = {name: (root, start(root, stage)) for name, (root, stage) in cases.items()}
    results = {}
    try:
        for name, (root, process) in processes.items():
            stdout, stderr = process.communicate(timeout=120)
            results[name] = Finished(root, process.returncode, stdout, stderr)
    finally:
        for _, process in processes.values():
            if process.poll() is None:  # only after a timeout: do not leave it running
                process.kill()
                process.communicate()
    return results


def assert_one_error_line(run: Finished, *named: str) -> str:
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    (line,) = lines
    assert line.startswith("error: "), line
    for text in named:
        assert text in line, line
    return line


def test_bad_stage1_params_exit_2_with_one_line(finished):
    run = finished["bad_stage1"]
    assert run.returncode == 2, run.stderr
    assert_one_error_line(run, "stage1.lr", "params.yaml")


def test_failed_stage1_leaves_earlier_results_untouched(finished):
    out = finished["bad_stage1"].root / "runs" / "stage1"
    assert json.loads((out / "metrics.json").read_text()) == EARLIER_METRICS
    assert (out / "model.pt").read_bytes() == EARLIER_CHECKPOINT
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.pt"]
    assert not (finished["bad_stage1"].root / "mlflow.db").exists()


def test_bad_prepare_params_exit_2_naming_data_path(finished):
    run = finished["bad_prepare"]
    assert run.returncode == 2, run.stderr
    assert_one_error_line(run, "data.path", "no/such/cifar")
    prepared = run.root / "data" / "prepared"
    assert json.loads((prepared / "summary.json").read_text()) == EARLIER_SUMMARY
    assert not (prepared / "data.pt").exists()


def test_stage2_without_stage1_checkpoint_exits_1(finished):
    run = finished["no_checkpoint"]
    assert run.returncode == 1, run.stderr
    assert_one_error_line(run, str(Path("runs") / "stage1" / "model.pt"))
    assert not (run.root / "runs" / "stage2").exists()
    assert not (run.root / "mlflow.db").exists()


def raiser(exc: BaseException):
    def main() -> None:
        raise exc

    return main


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        pytest.param(ParamsError("params.yaml: stage1.lr: bad"), 2, id="params"),
        pytest.param(DataError("prepared data file x does not exist."), 2, id="data"),
        pytest.param(NonFiniteLossError("loss became nan at epoch 1"), 1, id="nan-loss"),
        pytest.param(FileNotFoundError(2, "No such file", "runs/stage1/model.pt"), 1, id="missing"),
    ],
)
def test_run_main_maps_expected_errors_to_one_line_and_status(capsys, exc, status):
    with pytest.raises(SystemExit) as exit_info:
        run_main(raiser(exc))
    assert exit_info.value.code == status
    assert capsys.readouterr().err == f"error: {exc}\n"


def test_run_main_interrupted_exits_130(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(raiser(KeyboardInterrupt()))
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_run_main_lets_unexpected_errors_through():
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_main(raiser(ZeroDivisionError("bug")))


def test_run_main_success_does_not_exit(capsys):
    run_main(lambda: print("done"))
    assert capsys.readouterr() == ("done\n", "")


def test_missing_prepared_data_is_a_usage_error(tmp_path, capsys):
    """What stage1/stage2/evaluate do first after params: a missing data file is status 2, one line."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: PreparedData.load(tmp_path / "data" / "prepared" / "data.pt"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "data.pt does not exist" in err
