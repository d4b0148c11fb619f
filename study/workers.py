"""Local worker processes, shared by the search and the ablations.

Worker 0 runs in this process and the others in spawned processes (spawn, not fork: torch and
database connections do not survive a fork); a thread shows progress meanwhile. Workers coordinate
only through the storage they share (the Optuna database, or the cell store's file locks).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

Worker = Callable[[Any, int], None]


def _quietly(work: Worker, run: Any, index: int) -> None:
    """A spawned worker's entry point: Ctrl-C reaches every process; the parent reports it."""
    try:
        work(run, index)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(work: Worker, run: Any, workers: int, progress: Callable[[threading.Event], None]) -> None:
    """Run ``work(run, i)`` for i in 0..workers-1 (a module-level function, so it pickles by name)."""
    context = torch.multiprocessing.get_context("spawn")
    processes = [context.Process(target=_quietly, args=(work, run, i)) for i in range(1, workers)]
    for process in processes:
        process.start()
    stop = threading.Event()
    watcher = threading.Thread(target=progress, args=(stop,), daemon=True)
    watcher.start()
    try:
        work(run, 0)
        for process in processes:
            process.join()
    finally:
        stop.set()
        watcher.join()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
