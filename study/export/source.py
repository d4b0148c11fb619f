"""What ``python -m study.export SOURCE`` exports: the trained weights and the model settings they fit.

``SOURCE`` is one of:

- a stage checkpoint (``runs/stage2/model.pt``: ``{"state_dict", "init_signs", "meta"}``). It does not
  record its settings or its stage, so both come from provenance: the ``dvc.lock`` entry whose output
  has the file's md5 (the stage that wrote it and the ``model`` params it ran with); else the folder it
  is in (``stage1/`` or ``stage2/``, the pipeline's layout) with the ``model`` section of the params
  file. Anything else is refused: export it by its MLflow run id instead. Only stage 2 is fully binary.
- a search trial checkpoint (``reports/search/<study>/checkpoints/trial-N.pt``): a bare stage-2
  state dict; a search varies stage settings only (``study.space`` refuses other keys), so the model is
  the params file's ``model`` section.
- an MLflow run id (32 hex digits): the run's checkpoint artifact under ``model/``; a stage run (tag
  ``stage``, which must be ``2``) logged its ``model.*`` params, a search trial run (tag
  ``optuna.trial``) takes the params file's.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from ruamel.yaml import YAML, YAMLError
from torch import Tensor

from study.config import ModelConfig, Params
from study.export.format import ExportError, first_line
from study.paths import PROJECT_ROOT

RUN_ID = re.compile(r"[0-9a-f]{32}")
STAGE1_NOTE = "a stage-1 network (binary activations, real weights) is not fully binary; export stage 2"


@dataclass
class Trained:
    state_dict: dict[str, Tensor]
    model: ModelConfig
    source: str  # the path or run id, as given
    provenance: str  # where the model settings came from, for the report
    data_hash: str | None = None  # the data set it was trained on, when known


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _read_checkpoint(path: Path, label: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, a pickled object that is not plain data
        raise ExportError(f"{label}: not a readable checkpoint ({first_line(exc)})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _model_config(raw: Any, where: str) -> ModelConfig:
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(p) for p in error["loc"])
        raise ExportError(f"{where}: model.{location}: {error['msg']}") from None


def lock_entry(md5: str, lock: Path) -> tuple[str, dict] | None:
    """``(stage, model params)`` of the ``dvc.lock`` stage with an output of this md5, if any."""
    try:
        stages = (YAML(typ="safe").load(lock.read_text()) or {}).get("stages") or {}
    except (OSError, YAMLError, AttributeError):
        return None
    for stage, entry in stages.items():
        for out in entry.get("outs") or []:
            if out.get("md5") == md5:
                return stage, ((entry.get("params") or {}).get("params.yaml") or {}).get("model")
    return None


def from_file(path: Path, params: Params, lock: Path = PROJECT_ROOT / "dvc.lock") -> Trained:
    label = str(path)
    checkpoint = _read_checkpoint(path, label)
    if _is_state_dict(checkpoint):
        return Trained(checkpoint, params.model, label, "search trial checkpoint; model from the params file")
    if not (isinstance(checkpoint, dict) and _is_state_dict(checkpoint.get("state_dict"))):
        raise ExportError(f"{label}: not a stage or search-trial checkpoint of this project")
    found = lock_entry(_md5(path), lock)
    if found is not None:
        stage, model = found
        provenance = f"{lock.name} stage {stage}"
        config = _model_config(model, provenance) if model is not None else params.model
    elif path.resolve().parent.name in ("stage1", "stage2"):
        stage, provenance = path.resolve().parent.name, "folder name; model from the params file"
        config = params.model
    else:
        raise ExportError(
            f"{label}: cannot tell which stage wrote it (its md5 is in no dvc.lock output and it is not "
            "in a stage1/ or stage2/ folder); export it by its MLflow run id"
        )
    if stage == "stage1":
        raise ExportError(f"{label}: {STAGE1_NOTE}")
    if stage != "stage2":
        raise ExportError(f"{label}: written by DVC stage {stage!r}, not a stage-2 checkpoint")
    return Trained(checkpoint["state_dict"], config, label, provenance)


def _param_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def logged_model(run_params: dict[str, str]) -> dict[str, Any] | None:
    """The ``model`` section from a run's flattened params (``model.width`` = ``"256"``), or None."""
    raw: dict[str, Any] = {}
    for key, text in run_params.items():
        parts = key.split(".")
        if parts[0] != "model" or len(parts) < 2:
            continue
        section = raw
        for part in parts[1:-1]:
            section = section.setdefault(part, {})
        section[parts[-1]] = _param_value(text)
    return raw or None


def from_mlflow(run_id: str, params: Params) -> Trained:
    from mlflow.exceptions import MlflowException

    from study.tracking import CHECKPOINT_ARTIFACTS, Tracker

    client = Tracker.from_params(params).client
    try:
        run = client.get_run(run_id)
        artifacts = [
            f.path for f in client.list_artifacts(run_id, CHECKPOINT_ARTIFACTS) if f.path.endswith(".pt")
        ]
    except MlflowException as exc:
        raise ExportError(f"MLflow run {run_id}: {(str(exc).splitlines() or [''])[0]}") from None
    tags = run.data.tags
    stage = "2" if "optuna.trial" in tags else tags.get("stage")
    if stage == "1":
        raise ExportError(f"MLflow run {run_id}: {STAGE1_NOTE}")
    if stage != "2":
        raise ExportError(f"MLflow run {run_id} is not a stage-2 or search-trial run (tag stage={stage!r})")
    if len(artifacts) != 1:
        raise ExportError(
            f"MLflow run {run_id}: expected one checkpoint under {CHECKPOINT_ARTIFACTS}/, found {artifacts}"
        )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line of output, not a bar
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(client.download_artifacts(run_id, artifacts[0], tmp))
        except MlflowException as exc:
            raise ExportError(f"MLflow run {run_id}: {(str(exc).splitlines() or [''])[0]}") from None
        checkpoint = _read_checkpoint(local, f"MLflow run {run_id} {artifacts[0]}")
    state_dict = checkpoint if _is_state_dict(checkpoint) else checkpoint.get("state_dict")
    if not _is_state_dict(state_dict):
        raise ExportError(f"MLflow run {run_id}: {artifacts[0]} is not a checkpoint of this project")
    logged = logged_model(run.data.params)
    if logged is not None:
        config, provenance = _model_config(logged, f"MLflow run {run_id}"), "the run's logged model params"
    else:
        config, provenance = params.model, "search trial run; model from the params file"
    return Trained(state_dict, config, run_id, provenance, tags.get("data_hash"))


def check_exists(source: str) -> None:
    """Refuse at once a source that is neither a file nor an MLflow run id (before any data is read)."""
    if not Path(source).exists() and not RUN_ID.fullmatch(source):
        raise ExportError(f"{source}: no such checkpoint file, and not an MLflow run id")


def resolve(source: str, params: Params) -> Trained:
    """The trained stage-2 weights of ``source`` (a checkpoint path or an MLflow run id) and their model."""
    path = Path(source)
    if path.exists():
        if not path.is_file():
            raise ExportError(f"{source}: not a file")
        return from_file(path, params)
    if RUN_ID.fullmatch(source):
        return from_mlflow(source, params)
    raise ExportError(f"{source}: no such checkpoint file, and not an MLflow run id")
