"""Progress that shows in a terminal and in a log alike.

tqdm's bar redraws one line with carriage returns: right in a terminal, unreadable (or, with
``disable=None``, absent) where output goes to a pipe, as under ``dvc repro``/``dvc exp run`` or in a
batch job's log. There :class:`LineProgress` prints a plain line every ``interval`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log


class LineProgress:
    """The part of tqdm's interface the watchers use (``n``, ``set_postfix``, ``refresh``, ``close``),
    as a line ``desc: n/total units, elapsed, about eta left`` at most every ``interval`` seconds."""

    def __init__(
        self, total: int, desc: str, unit: str, interval: float = LOG_INTERVAL, file: TextIO | None = None
    ):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.file = file or sys.stderr
        self.n = 0
        self.postfix = ""
        self.start = self.printed = time.monotonic()
        self.last_n = 0

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.printed >= self.interval and self.n != self.last_n:
            self._print(now)

    def close(self) -> None:
        if self.n != self.last_n:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        elapsed = now - self.start
        line = f"{self.desc}: {self.n}/{self.total} {self.unit}s, {tqdm.format_interval(elapsed)} elapsed"
        if 0 < self.n < self.total:
            line += f", about {tqdm.format_interval(elapsed * (self.total - self.n) / self.n)} left"
        if self.postfix:
            line += f" ({self.postfix})"
        print(line, file=self.file, flush=True)
        self.printed, self.last_n = now, self.n


def progress(total: int, desc: str, unit: str) -> tqdm | LineProgress:
    """A tqdm bar on a terminal (tqdm writes to stderr), else progress lines in the log."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit)
    return LineProgress(total, desc, unit)


def epoch_lines(desc: str, epochs: int) -> Callable[[dict], None]:
    """An observer of training that prints a line per epoch in a log (a terminal has tqdm's bar)."""
    if sys.stderr.isatty():
        return lambda record: None

    def line(record: dict) -> None:
        shown = ", ".join(
            f"{k} {record[k]:.4f}" for k in ("train_loss", "val_acc", "ff_ratio") if k in record
        )
        print(f"{desc}: epoch {record['epoch']}/{epochs}, {shown}", file=sys.stderr, flush=True)

    return line
