"""``python -m study.export SOURCE``: the trained stage-2 network as a 1-bit file, checked against itself.

Writes the 1-bit file (packed sign bits, scales folded into BatchNorm), rebuilds the inference
network from it alone and compares it with the trained network (mode ``"binary"``, eval) on the test
split (:mod:`study.export.exporter`); a differing prediction or logit fails it (exit 1), writing
nothing::

    python -m study.export runs/stage2/model.pt           # -> exports/runs-stage2-model.bnn
    python -m study.export <mlflow run id> --out model.bnn --onnx model.onnx --metrics export.json

Without ``--out`` the file goes to ``exports/`` (git-ignored), named after the source: a hand-run
export never writes over ``runs/export/``, which only the DVC stage ``export`` writes (with the
metrics that describe it).

``SOURCE``: a stage-2 checkpoint, a search trial checkpoint or an MLflow run id
(:mod:`study.export.source`). An export file (``*.bnn``) as ``SOURCE`` is checked instead: loaded
alone and evaluated on the split. Wrong input (no such source, a stage-1 network, weights or an export
that do not fit the model or the data, a broken file) is one line and exit status 2::

    python -m study.export runs/export/model.bnn           # accuracy of the 1-bit file alone
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from study.cli import run_main
from study.export.exporter import check_export, export_verified
from study.paths import PREPARED_DATA, PROJECT_ROOT

EXPORTS = PROJECT_ROOT / "exports"  # hand-run exports; runs/export/ is the DVC stage's alone


def default_out(source: str) -> Path:
    """Where an export goes without ``--out``: ``exports/<source>.bnn``, the source's path from the
    project root (or its file name) with ``/`` as ``-``, or ``mlflow-<run id>``; never a DVC output."""
    path = Path(source)
    if not path.suffix:  # an MLflow run id
        return EXPORTS / f"mlflow-{source}.bnn"
    try:
        name = path.resolve().relative_to(PROJECT_ROOT).with_suffix("").as_posix()
    except ValueError:
        name = path.stem
    return EXPORTS / f"{name.replace('/', '-')}.bnn"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.export",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "source",
        help="a stage-2 checkpoint, a search trial checkpoint, or an MLflow run id; an export file (.bnn) "
        "to check it alone",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the 1-bit file (default: exports/<source>.bnn; the DVC stage alone writes runs/export/)",
    )
    parser.add_argument(
        "--onnx", type=Path, help="also write the inference network as ONNX (input pixels / 255) and check it"
    )
    parser.add_argument("--params", type=Path, help="params file (default: the project's params.yaml)")
    parser.add_argument(
        "--data", type=Path, default=PREPARED_DATA, help="prepared data (default: %(default)s)"
    )
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--metrics", type=Path, help="write the verification and size figures as JSON here")
    args = parser.parse_args(argv)

    from bnn import PreparedData
    from study.artifacts import write_json
    from study.config import DEFAULT_PARAMS, load_params
    from study.export.source import check_exists

    check_exists(args.source)
    params = load_params(args.params or DEFAULT_PARAMS)
    torch.set_num_threads(params.threads)
    data = PreparedData.load(args.data)
    if args.source.endswith(".bnn"):
        result = check_export(Path(args.source), data, args.split, params.evaluation.batch_size)
    else:
        result = export_verified(args.source, params, data, args.out or default_out(args.source), args.onnx,
                                 args.split)  # fmt: skip
    if args.metrics:
        write_json(args.metrics, result)


if __name__ == "__main__":
    run_main(main)
