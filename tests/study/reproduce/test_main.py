"""``python -m study.reproduce``: one command, three subcommands, each with its own --help."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.reproduce", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_help_names_every_command():
    done = reproduce("--help")
    assert done.returncode == 0
    assert "{ablate,report,robustness}" in done.stdout and "ablate: train" in done.stdout


def test_a_command_passes_its_arguments_on():
    done = reproduce("ablate", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m study.reproduce ablate")
    assert "--quick" in done.stdout and "{wd,optimizer,stages,latent,all}" in done.stdout
    report = reproduce("report", "--help")
    assert report.returncode == 0 and report.stdout.startswith("usage: python -m study.reproduce report")
    robustness = reproduce("robustness", "--help")
    assert robustness.returncode == 0 and "--params" in robustness.stdout


def test_an_unknown_command_or_ablation_is_one_usage_error():
    done = reproduce("ablations", "wd")
    assert done.returncode == 2 and "invalid choice: 'ablations'" in done.stderr
    done = reproduce("ablate", "weights")
    assert done.returncode == 2 and "invalid choice: 'weights'" in done.stderr
    assert "Traceback" not in done.stderr
