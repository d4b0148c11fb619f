"""``python -m study.reproduce COMMAND``: the reproduction study's two commands, as the DVC stages run them.

    python -m study.reproduce ablate {wd,optimizer,stages,latent,all} [--quick] [--workers K]
    python -m study.reproduce report
    python -m study.reproduce robustness

``ablate`` trains an ablation's cells over seeds (or takes them from its study and the cell store) and writes
``reports/ablations/NAME.json`` and ``.csv`` (with ``--quick``, a smoke run, ``reports/quick/``
instead: never the reproduction's results); ``report`` tests the claims on them and writes
``reports/reproduction.md``, ``reports/verdicts.csv`` and ``reports/figures/`` (on a quick run's:
``report --results reports/quick``, which writes beside them); ``robustness`` runs every
ablation again on the CPU's native code path and writes ``reports/robustness.csv``.
``python -m study.reproduce COMMAND --help`` lists a command's options.
"""

from __future__ import annotations

import argparse
import importlib

from study.cli import run_main

COMMANDS = {
    "ablate": ("study.reproduce.ablate", "train an ablation's cells over seeds"),
    "report": ("study.reproduce.report", "test the claims and write the report"),
    "robustness": ("study.reproduce.robustness", "the ablations on the native code path, verdicts compared"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m study.reproduce",
        description=__doc__.splitlines()[0].strip("`:"),
        epilog="; ".join(f"{name}: {help}" for name, (_, help) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments (see its --help)")
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    module.main(args.args)


if __name__ == "__main__":
    run_main(main)
