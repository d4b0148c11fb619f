"""Variants timed in interleaved rounds, and what the rounds say: medians, spreads, paired ratios.

A round runs every variant once, one after the other, each for the same number of steps; the
variant that starts a round rotates. Drift on a shared machine (another process, a clock change)
then hits every variant of a round alike, and a ratio is taken per round, between variants measured
seconds apart, before its median over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and extremes of a few values (at least two)."""

    median: float
    q1: float
    q3: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3, min(values), max(values))


WARMUP_STEPS = 2  # the first steps allocate (optimizer state, kernels' caches); untimed


def interleaved(
    rounds_of: dict[Hashable, Callable[[int], None]],
    rounds: int,
    steps: int,
    warmup: dict[Hashable, float] | None = None,
) -> dict[Hashable, list[float]]:
    """Seconds per step of each variant in each of ``rounds`` rounds, after ``WARMUP_STEPS`` untimed
    (their seconds into ``warmup`` when given: a compiled variant compiles then).

    ``rounds_of[variant](n)`` runs a round of ``n`` steps of that variant.
    """
    names = list(rounds_of)
    for name in names:
        begin = time.perf_counter()
        rounds_of[name](WARMUP_STEPS)
        if warmup is not None:
            warmup[name] = time.perf_counter() - begin
    seconds: dict[Hashable, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        start = index % len(names)
        for name in names[start:] + names[:start]:
            begin = time.perf_counter()
            rounds_of[name](steps)
            seconds[name].append((time.perf_counter() - begin) / steps)
    return seconds


def paired_ratio(numerator: list[float], denominator: list[float]) -> Spread:
    """The ratio of two variants' times round by round, summarised over the rounds."""
    return Spread.of([a / b for a, b in zip(numerator, denominator, strict=True)])
