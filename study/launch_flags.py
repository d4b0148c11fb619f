"""The launcher's command-line flags, shared by the search and the ablations.

Light (no torch, no submitit): a command parses them before it loads anything heavy, so ``--help``
answers at once. What the flags select runs in :mod:`study.launch`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from study.errors import InputError

if TYPE_CHECKING:
    from study.config import LauncherConfig


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Where a command's workers run: local processes (``--workers``), or a job array (params.yaml's
    ``launcher`` under these flags)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--launcher",
        choices=("local", "slurm", "submitit-local"),
        help="local: worker processes of this command (--workers); slurm: a SLURM job array of "
        "launcher.tasks workers, one per task (and GPU); submitit-local: the same through submitit's "
        "local executor, to try it here (default: launcher.kind)",
    )
    where.add_argument(
        "--slurm", dest="launcher", action="store_const", const="slurm", help="short for --launcher slurm"
    )
    parser.add_argument("--tasks", type=int, help="the job array's size (default launcher.tasks)")


def from_args(
    args: argparse.Namespace, launcher: LauncherConfig, extra: tuple[str, ...] = ()
) -> LauncherConfig:
    """params.yaml's ``launcher`` with the command line's kind and tasks; ``--tasks`` (and the ``extra``
    array-only flags) without an array, or ``--workers`` with one, refused in one line."""
    launcher = launcher.model_copy(
        update={"kind": args.launcher or launcher.kind, "tasks": args.tasks or launcher.tasks}
    )
    array_only = ["tasks", *extra]
    if launcher.kind == "local" and any(getattr(args, flag) for flag in array_only):
        flags = " and ".join(f"--{flag.replace('_', '-')}" for flag in array_only)
        raise InputError(f"{flags} are for a job array: add --slurm or --launcher submitit-local")
    if launcher.kind != "local" and args.workers:
        raise InputError(
            f"--workers counts local processes; with launcher {launcher.kind} the workers are the array's "
            "tasks (--tasks, launcher.tasks)"
        )
    return launcher
