"""The suite leaves the checkout alone: a pytest plugin (``pytest_plugins`` in conftest.py).

The checkout's state when the session starts (every path ``git status`` shows: modified tracked
files, untracked and ignored ones, with size and time) is compared when it ends: a path that is new,
changed or gone fails the session, listed. Under xdist only the controller checks, after every
worker has finished; paths that were there before (.venv, the stores, results) count only if changed.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
# Left out of the checkout check on purpose: pytest's cache, Python's bytecode (of the project and of
# .venv, written on import) and ruff's cache (an editor's or a lint run's meanwhile), never results.
OWN_CACHES = {".pytest_cache", "__pycache__", ".ruff_cache"}
SHOWN = 40  # paths listed when the suite wrote into the checkout
_BEFORE = pytest.StashKey[dict | None]()  # the checkout when the session started
_CHANGES = pytest.StashKey[list[str]]()
_KINDS = {"??": "new untracked", "!!": "new ignored"}  # git status codes; any other: a tracked file


def checkout_state() -> dict[str, tuple] | None:
    """``git status --porcelain --ignored --untracked-files=all`` of the checkout: path -> (status, size,
    mtime); None outside a git checkout (an unpacked sdist: nothing to check)."""
    top = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True)  # fmt: skip
    if top.returncode != 0:
        return None
    root = Path(top.stdout.strip())
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-z", "--ignored",
                             "--untracked-files=all"], capture_output=True, check=True)  # fmt: skip
    entries = iter(os.fsdecode(status.stdout).split("\0"))
    state = {}
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if "R" in code or "C" in code:
            next(entries, None)  # a rename's or copy's source follows its target
        if OWN_CACHES.isdisjoint(Path(path).parts) and not path.endswith(".pyc"):
            state[path] = (code, *_size_and_time(root / path))
    return state


def _size_and_time(path: Path) -> tuple[int | None, int | None]:
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None, None
    return stat.st_size, stat.st_mtime_ns


def checkout_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """One line per path the session created, changed or removed."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            lines.append(f"{_KINDS.get(after[path][0], f'tracked, now {after[path][0].strip()}')}: {path}")
        elif path not in after:
            lines.append(f"gone, or a tracked file restored ({before[path][0]}): {path}")
        elif before[path] != after[path]:
            lines.append(f"changed ({after[path][0]}): {path}")
    return lines


def _controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # an xdist worker has it


def pytest_sessionstart(session: pytest.Session) -> None:
    if _controller(session.config):
        session.config.stash[_BEFORE] = checkout_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if not _controller(session.config) or before is None:
        return
    changes = checkout_changes(before, checkout_state() or {})
    session.config.stash[_CHANGES] = changes
    if changes and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    changes = config.stash.get(_CHANGES, [])
    if not changes:
        return
    terminalreporter.section(f"the tests wrote into the checkout {PROJECT}", sep="!", red=True, bold=True)
    folders = Counter(line.split(": ", 1)[1].split("/", 1)[0] for line in changes)
    terminalreporter.line("by top folder: " + ", ".join(f"{name} {n}" for name, n in folders.most_common()))
    for line in changes[:SHOWN]:
        terminalreporter.line(line, red=True)
    if len(changes) > SHOWN:
        terminalreporter.line(f"... and {len(changes) - SHOWN} more", red=True)
    terminalreporter.line("a test must write under tmp_path (or another temporary folder), never the project")
