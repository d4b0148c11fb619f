"""Where the project is: the one fact every module needs, kept free of heavy imports."""

from __future__ import annotations

import os
from pathlib import Path


def find_project_root() -> Path:
    """``$BNN_STUDY_ROOT``, else the nearest folder from the working directory up holding ``params.yaml``.

    DVC runs every stage in the project folder; resolving the root this way lets the same code
    serve a clone anywhere (and the end-to-end test's copy of the project in a temporary folder).
    """
    if "BNN_STUDY_ROOT" in os.environ:
        return Path(os.environ["BNN_STUDY_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    return next((folder for folder in (cwd, *cwd.parents) if (folder / "params.yaml").exists()), cwd)


def find_store_root(project_root: Path) -> Path:
    """Where the stores live (``mlflow.db``, ``optuna.db``, ``.cache/``): the project root, except in an
    experiment DVC runs in a temporary copy of the repository (``dvc exp run --temp`` or ``--queue``,
    in ``<repository>/.dvc/tmp/exps/...``, deleted afterwards), where it is the user's repository, so
    the experiment's MLflow runs land beside the others and its stage-1 runs and ablation cells are
    reused. ``$BNN_STUDY_ROOT`` sets both roots."""
    parts = project_root.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return project_root


PROJECT_ROOT = find_project_root()
STORE_ROOT = find_store_root(PROJECT_ROOT)
PREPARED_DATA = PROJECT_ROOT / "data" / "prepared" / "data.pt"  # the DVC stage prepare's data set
