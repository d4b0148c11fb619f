"""The benchmark's results file (reports/benchmarks/step.md) and the README block generated from it.

The file is the command, one paragraph of set-up (machine, torch, commit, sizes of the run), and one
table: per model and variant the median time of a step over the rounds with its spread, and on the
rows they concern the ratios, each the median over rounds of the ratio within a round (IQR beside):
binary / real-valued on a binary row, diagnostics / none on a diagnostics row, ours / reference on a
reference row (our model's binary step over theirs) and on a row of their network with our binary
conv (over their network as they wrote it); with ``--compile``, the compiled rows' cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from study import heap
from study.benchmark.timing import Spread, paired_ratio
from study.benchmark.variants import BINARY, COMPILED, DIAGNOSTICS, OUR_BINARY_CONV, REAL, Size, Variant
from study.cpu_isa import cpu_model
from study.readme import replace_block

TARGETS = {"binary / real": 1.2, "diagnostics / none": 1.05}
RATIOS = (*TARGETS, "ours / reference")
COMPILE_COLUMNS = ("compiled / eager", "compile s", "pays after steps")


@dataclass
class ModelTimes:
    model: str
    size: Size
    seconds: dict[Variant, list[float]]  # seconds per step, one value per round
    warmup: dict[Variant, float] = field(default_factory=dict)  # seconds of the untimed first steps

    def compile_cost(self, variant: Variant) -> dict[str, str]:
        """A compiled row's columns: its ratio to the same step eager, the seconds its untimed first
        steps took beyond the eager step's (compiling), and the steps after which that is repaid."""
        eager = Variant(variant.binarizer, DIAGNOSTICS)
        ratio = paired_ratio(self.seconds[variant], self.seconds[eager])
        extra = self.warmup[variant] - self.warmup[eager]
        saved = Spread.of(self.seconds[eager]).median - Spread.of(self.seconds[variant]).median
        pays = f"{extra / saved:.0f}" if saved > 0 else "never"
        return {"compiled / eager": _ratio(ratio), "compile s": f"{extra:.0f}", "pays after steps": pays}

    def ratios(self, variant: Variant) -> dict[str, Spread]:
        """The ratios a row of ``variant`` carries (none for the real-valued one)."""
        ours = self.seconds.get(Variant(variant.binarizer, BINARY))
        if variant.name == BINARY:
            return {"binary / real": paired_ratio(ours, self.seconds[Variant("", REAL)])}
        if variant.name == DIAGNOSTICS:
            return {"diagnostics / none": paired_ratio(self.seconds[variant], ours)}
        if variant.name.endswith(OUR_BINARY_CONV):  # their network, our binary layers: vs theirs alone
            theirs = Variant(variant.binarizer, variant.name.removesuffix(OUR_BINARY_CONV))
            return {"ours / reference": paired_ratio(self.seconds[variant], self.seconds[theirs])}
        if variant.name not in (REAL, COMPILED):
            return {"ours / reference": paired_ratio(ours, self.seconds[variant])}
        return {}


def table(results: list[ModelTimes]) -> pd.DataFrame:
    rows = []
    for result in results:
        for variant, seconds in result.seconds.items():
            ms = Spread.of([s * 1e3 for s in seconds])
            ratios = result.ratios(variant)
            rows.append({
                "model": result.model,
                "size": str(result.size),
                "binarizer": variant.binarizer or "-",
                "variant": variant.name,
                "median ms": _ms(ms.median),
                "IQR ms": f"{_ms(ms.q1)}-{_ms(ms.q3)}",
                "min-max ms": f"{_ms(ms.low)}-{_ms(ms.high)}",
                **{name: _ratio(ratios[name]) if name in ratios else "" for name in RATIOS},
                **(result.compile_cost(variant) if variant.name == COMPILED else {}),
            })  # fmt: skip
    return pd.DataFrame(rows).fillna("")


def text(command: str, setup: str, results: list[ModelTimes]) -> str:
    return f"{command}\n\n{setup}\n\n{table(results).to_markdown(index=False)}\n"


def machine() -> str:
    """CPU, cores, torch threads and version, and malloc's setting, as the set-up paragraph states them."""
    torch_on = f"torch {torch.__version__} on {torch.get_num_threads()} thread(s)"
    memory = "freed memory kept (study.heap)" if heap.kept else "malloc as the system sets it"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch_on}, {memory}"


def readme_block(step_md: Path) -> str:
    """The command, set-up and table of ``step_md``, as one block."""
    command, setup, table_text = step_md.read_text().split("\n\n")[:3]
    return f"{command}: {setup}\n\n{table_text.rstrip()}"


def update_readme(readme: Path, step_md: Path) -> None:
    """Put :func:`readme_block` into the README's block named after the file: ``bench-step`` for
    ``step.md``, ``bench-compile`` for ``compile.md``."""
    replace_block(readme, f"bench-{step_md.stem}", readme_block(step_md))


def _ms(value: float) -> str:
    """Milliseconds to three or four significant digits."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(spread: Spread) -> str:
    return f"{spread.median:.3f} ({spread.q1:.3f}-{spread.q3:.3f})"
