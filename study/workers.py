"""Local worker processes, shared by the search and the ablations.

Worker 0 runs in this process and the others in spawned processes (spawn, not fork: torch and
database connections do not survive a fork); a thread shows progress meanwhile. Workers coordinate
only through the storage they share (the Optuna database, or the cell store's file locks).

A :class:`WorkerPool` starts its processes first and hands them their work later: each spends its
first seconds importing torch, Optuna and MLflow, which then overlaps this process's own set-up
(on a minute-long search that start-up is a large share of the second core's time).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from study.errors import RunFailed

Worker = Callable[[Any, int], None]


class WorkerDied(RunFailed):
    """A local worker process ended abnormally (killed, crashed); the others finished the work."""


def _serve(connection: Connection, preload: str) -> None:
    """A spawned worker's entry point: import ``preload``, wait for its work, run it.

    Ctrl-C reaches every process of the group; the parent reports it, so a worker exits quietly.
    """
    try:
        importlib.import_module(preload)
        task = connection.recv()
        if task is not None:
            work, run, index = task
            work(run, index)
            gc.freeze()  # see study.cli.run_main
    except (KeyboardInterrupt, EOFError):  # EOFError: the parent stopped before handing out work
        sys.exit(130)


class WorkerPool:
    """``count`` spawned processes, started now with ``preload`` imported, given work by :meth:`run`."""

    def __init__(self, count: int, preload: str):
        context = multiprocessing.get_context("spawn")
        self.connections: list[Connection] = []
        self.processes = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, preload), daemon=False)
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)

    def run(self, work: Worker, run: Any, progress: Callable[[threading.Event], None], *local: Any) -> None:
        """``work(run, 0, *local)`` here and ``work(run, i)`` in process i (``work`` pickles by its
        module name; ``local``: what this process prepared already, such as the data set).

        Returns when this process's work is done; :meth:`join` waits for the others.
        """
        for index, connection in enumerate(self.connections, start=1):
            connection.send((work, run, index))
            connection.close()
        self.connections = []  # every process has its work: nothing left to stop in __exit__
        stop = threading.Event()
        watcher = threading.Thread(target=progress, args=(stop,), daemon=True)
        watcher.start()
        try:
            work(run, 0, *local)
        finally:
            stop.set()
            watcher.join()

    def join(self) -> None:
        """Wait for every process to end; :class:`WorkerDied` names any that ended abnormally."""
        for process in self.processes:
            process.join()
        died = [(i, p) for i, p in enumerate(self.processes, start=1) if p.exitcode != 0]
        if died:
            raise WorkerDied("; ".join(f"worker {i} (pid {p.pid}) {_ended(p.exitcode)}" for i, p in died))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Processes not given work (set-up failed) are told to stop; any still running after 30 s are
        terminated."""
        for connection in self.connections:
            with contextlib.suppress(BrokenPipeError, OSError):  # that process ended already
                connection.send(None)
            connection.close()
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def run_workers(work: Worker, run: Any, workers: int, progress: Callable[[threading.Event], None]) -> None:
    """Run ``work(run, i)`` for i in 0..workers-1 (a module-level function, so it pickles by name)."""
    with WorkerPool(workers - 1, preload=work.__module__) as pool:
        pool.run(work, run, progress)
        pool.join()


def _ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by signal {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"
