"""``python -m study.reproduce robustness``: every ablation again on this CPU's native code path, and
each claim's verdict compared with the pinned one's.

    python -m study.reproduce robustness            # ~30 min on 2 cores; not part of `dvc repro`
    dvc repro report                                # the report then marks each verdict robust or not

The reproduction trains with ``cpu_isa: avx2`` (the same numbers on any x86-64). Another code path
rounds differently, so every network differs; a verdict that flips with the rounding is not a
finding. This command writes the project's params with ``cpu_isa: native`` to
``.cache/robustness/params.yaml``, runs ``python -m study.reproduce ablate all`` on it in a fresh
process (the pin is set per process, before torch loads; the cells land in the same cell store
under their own keys), tests the claims on those results, and writes ``reports/robustness.csv``:
each claim's verdict on both code paths. The report reads it and marks a verdict that differs as
*not robust*; when the pinned verdicts it records are not the report's own (the results changed
since), the report says the comparison is stale instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from ruamel.yaml import YAML

from study.artifacts import write_csv
from study.config import PROJECT_ROOT, load_params, read_yaml
from study.cpu_isa import PINS, cpu_model
from study.errors import RunFailed
from study.paths import STORE_ROOT
from study.reproduce.ablate import RESULTS
from study.reproduce.claim import Claim
from study.reproduce.report import load_results

ROBUSTNESS = PROJECT_ROOT / "reports" / "robustness.csv"
WORK = STORE_ROOT / ".cache" / "robustness"


def native_params(source: Path, folder: Path) -> Path:
    """``source`` with ``cpu_isa: native``, written to ``folder``."""
    raw = read_yaml(source)
    raw["cpu_isa"] = "native"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    with open(path, "w") as stream:
        YAML().dump(raw, stream)
    return path


def run_native_ablations(params: Path, out: Path) -> None:
    """``ablate all`` in a new process, which pins (here: does not pin) the code path its params ask for."""
    command = [
        sys.executable,
        "-m",
        "study.reproduce",
        "ablate",
        "all",
        "--params",
        str(params),
        "--out",
        str(out),
    ]
    pins = {name for pin in PINS.values() for name in pin}
    unpinned = {name: value for name, value in os.environ.items() if name not in pins}  # this process pinned
    if subprocess.run(command, cwd=PROJECT_ROOT, env=unpinned).returncode != 0:
        raise RunFailed(f"the native-path ablations failed: {' '.join(command[2:])}")


def compare(pinned: list[Claim], native: list[Claim], cpu: str) -> pd.DataFrame:
    """One row per claim: the verdict on each code path, and whether they agree."""
    by_number = {c.number: c for c in native}
    return pd.DataFrame(
        [
            {
                "claim": c.number,
                "verdict_avx2": c.verdict,
                "verdict_native": by_number[c.number].verdict,
                "robust": c.verdict == by_number[c.number].verdict,
                "native_cpu": cpu,
            }
            for c in pinned
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.reproduce robustness",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=ROBUSTNESS, help="the comparison (default %(default)s)")
    args = parser.parse_args(argv)
    margin = load_params(args.params).ablation.margin
    results = WORK / "ablations"
    run_native_ablations(native_params(args.params, WORK), results)
    table = compare(load_results(RESULTS, margin).claims, load_results(results, margin).claims, cpu_model())
    write_csv(args.out, table)
    print(table.to_string(index=False))
    print(f"robustness: {args.out}")
