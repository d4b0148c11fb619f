"""A command's ``main`` run in the test's process as its ``python -m`` entry point runs it."""

from __future__ import annotations

from collections.abc import Callable

from study.cli import run_main


def run_cli(main: Callable[[list[str]], None], argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` under :func:`study.cli.run_main`: exit status, stdout, stderr."""
    try:
        run_main(lambda: main(argv))
        status = 0
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err
