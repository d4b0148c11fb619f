"""The import rules of README's "Architecture", as import-linter checks them (contracts in pyproject.toml).

The project passes them, and each rule catches the import it forbids: a copy of the three packages
with one wrong import planted fails ``lint-imports`` naming the broken contract.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LONGEST_FUNCTION = 60  # lines, docstring included


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    # lint-imports reads pyproject.toml and analyses the packages found from its working directory
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_project_keeps_every_contract():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("bnn/train.py", "import study.config", "pipelines over study over bnn"),
        ("study/config.py", "import study.search.run", "the wings over the core"),
        ("study/tracking.py", "from study.reproduce import stats", "the wings over the core"),
        ("study/search/trial.py", "from study.export import format", "the wings over the core"),
        ("study/newmodule.py", "", "every module placed"),
        ("pipelines/stage1.py", "import study.reproduce.ablate", "pipelines stay thin"),
        ("study/search/run.py", "from study.search import trial", "no import circle"),
    ],
)
def test_a_planted_wrong_import_breaks_its_contract(tmp_path, module, planted, broken):
    for package in ("bnn", "study", "pipelines"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text((target.read_text() if target.exists() else "") + f"\n{planted}  # planted\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Broken contracts" in done.stdout
    broken_section = done.stdout.split("Broken contracts", 1)[1]
    assert broken in " ".join(broken_section.split())


def test_no_function_in_study_is_longer_than_a_screen():
    long = []
    for path in sorted((ROOT / "study").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + ", ".join(long)
