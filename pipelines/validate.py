"""DVC stage ``validate``, run by every ``dvc repro``: the whole params.yaml, and the data source.

DVC re-runs a stage only when the params it declares change, so a key no stage declares (``epochs: 3``
at the top of the file, a misspelt section) would pass with "up to date": here the whole file is
validated as every other entry point validates it. A local data folder (``data.path``) is not a DVC
dependency either: this stage writes a digest of its files' names and content to
``data/source.json``, which ``prepare`` depends on, so adding or changing images re-runs ``prepare``
(and the training stages only if the prepared data set changed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from study.artifacts import write_json
from study.cli import run_main
from study.config import ParamsError, load_params, resolve_path
from study.paths import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "data" / "source.json"


def source_digest(path: Path | None) -> dict:
    """File count, bytes and a SHA-256 over the relative names and content of ``path`` (a file or a
    folder); ``{"files": 0}`` for the embedded data sets (``data.path: null``)."""
    if path is None:
        return {"files": 0}
    if not path.exists():
        raise ParamsError(f"data.path: {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path.parent if path.is_file() else path).as_posix().encode() + b"\0")
        with open(file, "rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "sha256": digest.hexdigest()}


def main() -> None:
    params = load_params()
    path = resolve_path(params.data.path) if params.data.path else None
    source = source_digest(path)
    write_json(SOURCE, source)
    where = f"{source['files']} files in {path}" if path else f"embedded {params.data.name}"
    print(f"params.yaml is valid; data source: {where}")


if __name__ == "__main__":
    run_main(main)
