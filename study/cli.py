"""Turn expected failures into one line on stderr and an exit status, never a traceback wall.

Exit status 2: the input is wrong (params, data paths, database URLs) and nothing ran. Exit status 1: the
work started and failed (a NaN loss, a missing upstream result, a local worker process that died);
130: interrupted.

Every expected failure is an :class:`~study.errors.InputError` or :class:`~study.errors.RunFailed`
(the wings' errors subclass them), or one of ``bnn``'s two, which are imported only when something
failed, so a command's ``--help`` never pays for torch.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from study.errors import InputError, RunFailed


def exit_status(exc: Exception) -> int | None:
    """2 for wrong input, 1 for a run that failed, None for an unexpected error (a bug: let it through)."""
    from bnn import DataError, NonFiniteLossError

    if isinstance(exc, InputError | DataError):
        return 2
    if isinstance(exc, RunFailed | NonFiniteLossError | FileNotFoundError):
        return 1
    return None


def run_main(main: Callable[[], object]) -> None:
    """Run ``main``; on success, leave its objects to the OS (see below), else exit as documented above."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        status = exit_status(exc)
        if status is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(status)
    # Python's shutdown would spend a second or more collecting torch's, MLflow's and pandas' objects
    # one by one; frozen, the final collection skips them (the files and databases are closed already).
    gc.freeze()
