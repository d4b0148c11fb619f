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


PROJECT_ROOT = find_project_root()
