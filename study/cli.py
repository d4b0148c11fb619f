"""Turn expected failures into one line on stderr and an exit status, never a traceback wall.

Exit status 2: the input is wrong (params, data paths, database URLs) and nothing ran. Exit status 1: the work
started and failed (a NaN loss, a missing upstream result); 130: interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bnn import DataError, NonFiniteLossError
from study.config import ParamsError
from study.storage import StorageError
from study.tracking import TrackingError

USAGE_ERRORS = (ParamsError, DataError, StorageError, TrackingError)
RUN_ERRORS = (NonFiniteLossError, FileNotFoundError)


def run_main(main: Callable[[], object]) -> None:
    try:
        main()
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RUN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
