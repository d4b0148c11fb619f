"""``python -m study.benchmark``: the training step as ``bnn.train_stage`` runs it, timed per model.

    python -m study.benchmark                                  # every model, both weight binarizers
    python -m study.benchmark --models mlp --rounds 9
    python -m study.benchmark --reference-dir DIR              # AdamBNN's and ReCU's models beside ours
    python -m study.benchmark --compile                        # and the step under torch.compile
    make benchmark                                             # = ... --readme README.md

Writes reports/benchmarks/step.md (``--out``) and, with ``--readme``, the README's bench-step block.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bnn.binarize import WEIGHT_BINARIZERS
from bnn.train import SATURATION_EVERY
from study.benchmark import reference, report
from study.benchmark.timing import WARMUP_STEPS, interleaved
from study.benchmark.variants import SIZES, Size, rounds_of
from study.cli import run_main
from study.config import Params, load_params
from study.errors import InputError
from study.paths import PROJECT_ROOT
from study.tracking import git_commit

STEP_MD = PROJECT_ROOT / "reports" / "benchmarks" / "step.md"


class BenchmarkError(InputError):
    """Rounds or steps the benchmark cannot summarise."""


def parser(params: Params) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        allow_abbrev=False,  # the CPU pin reads --params before parsing (study.cpu_isa.params_file)
        prog="python -m study.benchmark",
        description=__doc__.splitlines()[0],
    )
    parse.add_argument("--models", nargs="+", choices=list(SIZES), default=list(SIZES))
    parse.add_argument("--binarizers", nargs="+", choices=WEIGHT_BINARIZERS, default=list(WEIGHT_BINARIZERS))
    parse.add_argument("--rounds", type=int, default=5, help="timed rounds (default: %(default)s)")
    steps = f"steps per round and variant, a multiple of {SATURATION_EVERY} (default: each model's own)"
    parse.add_argument("--steps", type=int, help=steps)
    threads = "torch threads (default: params.yaml's, as the pipeline trains)"
    parse.add_argument("--threads", type=int, default=params.threads, help=threads)
    for flag in ("--width", "--batch-size", "--image-size"):
        parse.add_argument(flag, type=int, help="instead of every model's own (variants.SIZES)")
    repos = f"checkouts of the reference repositories (default: ${reference.ENV})"
    parse.add_argument("--reference-dir", type=Path, default=os.environ.get(reference.ENV), help=repos)
    compiled = "also the binary step with every diagnostic under torch.compile (stage 2's compile: true)"
    parse.add_argument("--compile", action="store_true", help=compiled)
    parse.add_argument("--out", type=Path, default=STEP_MD, help="the results file (default: %(default)s)")
    parse.add_argument("--readme", type=Path, help="then put the results into this file's bench-step block")
    return parse


def main(argv: list[str] | None = None) -> None:
    params = load_params()
    args = parser(params).parse_args(argv)
    if args.rounds < 2 or (args.steps is not None and (args.steps < 1 or args.steps % SATURATION_EVERY)):
        raise BenchmarkError(
            f"--rounds {args.rounds} --steps {args.steps}: need 2 rounds or more (for a spread) and steps "
            f"a multiple of {SATURATION_EVERY} (every round probes saturation as often as an epoch does)"
        )
    if args.reference_dir is None:
        print(reference.SKIPPED, flush=True)
    references = reference.load(Path(args.reference_dir)) if args.reference_dir else {}
    if args.compile:
        # A cold compile each time, as on a fresh machine: inductor's caches (in memory and on disk)
        # would hand a later compiled variant the kernels of an earlier one, or of an earlier run.
        import torch._inductor.config

        torch._inductor.config.force_disable_caches = True
    results = []
    for model in args.models:
        size = sized(SIZES[model], args)
        runs = rounds_of(params, model, size, args.binarizers, args.threads, references, args.compile)
        start = time.perf_counter()
        warmup: dict = {}
        seconds = interleaved(runs, args.rounds, size.steps, warmup)
        results.append(report.ModelTimes(model, size, seconds, warmup))
        print(f"{model} ({size}): {len(runs)} variants, {args.rounds} rounds, "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    command = "`" + " ".join(["python -m study.benchmark", *(sys.argv[1:] if argv is None else argv)]) + "`"
    text = report.text(command, setup(params, args, references), results)
    print(f"\n{text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.readme:
        report.update_readme(args.readme, args.out)


def sized(size: Size, args: argparse.Namespace) -> Size:
    """A model's own size, with what the command line sets instead."""
    return Size(
        width=args.width or size.width,
        batch=args.batch_size or size.batch,
        image=args.image_size or size.image,
        channels=size.channels,
        steps=args.steps or size.steps,
    )


def setup(params: Params, args: argparse.Namespace, references: dict) -> str:
    stage, model = params.stage2, params.model
    run = [ref for ref in references if ref.model in args.models and ref.binarizer in args.binarizers]
    theirs = ", ".join(f"{ref.label} ({ref.url} at {reference.commit(Path(args.reference_dir), ref)})"
                       for ref in run) or "none run"  # fmt: skip
    targets = ", ".join(f"{name} <= {bound}" for name, bound in report.TARGETS.items())
    return (
        f"{report.machine()}, cpu_isa {params.cpu_isa}, commit {git_commit()[:7]}. Each variant trains a "
        f"fresh model on one fixed batch of random images; {args.rounds} rounds (of the steps in the size "
        f"column) per variant after {WARMUP_STEPS} untimed steps, a model's variants interleaved. The step "
        f"is stage 2's of params.yaml ({stage.optimizer}, lr {stage.lr}; activations {model.act_binarizer}, "
        f"act_std_normalise {model.act_std_normalise}, on with recu as in ReCU's recipe); diagnostics: the "
        f"sign tracker, the dead-weight tracker and the saturation probe on every {SATURATION_EVERY}th step. "
        f"Ratios: per round, median over the rounds (IQR in parentheses); targets {targets}. "
        f"References: {theirs}."
        + (
            " Compiled: the binary step with every diagnostic under torch.compile (compile: true); "
            "compile s, the seconds its untimed first steps took beyond the eager step's; pays after, "
            "those seconds over the median seconds a step saves."
            if args.compile
            else ""
        )
    )


if __name__ == "__main__":
    run_main(main)
