"""``study.launch.Array``'s waiting and Ctrl-C, shared by the search and the ablations, on fake jobs (the
end-to-end job arrays are in tests/study/search/test_launch.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from study import launch


class FakeJob:
    def __init__(self, job_id: str):
        self.job_id = job_id
        self.ended = False
        self.cancelled = False

    def done(self) -> bool:
        return self.ended

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(launch, "POLL_SECONDS", 0.01)


def test_waiting_ends_when_the_work_is_finished_and_stops_the_progress_thread():
    array = launch.Array("local", Path("."), [FakeJob("1")])
    looks, shown = [], []

    def finished() -> bool:
        looks.append(1)
        return len(looks) >= 3

    def progress(stop: threading.Event) -> None:
        stop.wait()
        shown.append("closed")

    array.wait_for(finished, progress)
    assert len(looks) == 3 and shown == ["closed"]
    assert not array.jobs[0].cancelled


def test_waiting_ends_when_every_task_has_ended_though_the_work_is_not_finished():
    jobs = [FakeJob("1"), FakeJob("2")]
    array = launch.Array("local", Path("."), jobs)
    for job in jobs:
        job.ended = True
    never = (lambda: False, lambda stop: stop.wait())  # the work never finishes; progress waits for stop
    waiting = threading.Thread(target=array.wait_for, args=never, daemon=True)
    waiting.start()
    waiting.join(timeout=5)
    assert not waiting.is_alive(), "still waiting though every task has ended"


def test_ctrl_c_stops_local_tasks_and_leaves_slurm_tasks_running():
    local = launch.Array("local", Path("logs"), [FakeJob("11"), FakeJob("12")])
    assert local.interrupt() == "the tasks stopped"
    assert all(job.cancelled for job in local.jobs)

    slurm = launch.Array("slurm", Path("logs"), [FakeJob("77_0"), FakeJob("77_1")])
    said = slurm.interrupt()
    assert not any(job.cancelled for job in slurm.jobs)
    assert said.startswith("the tasks go on: `squeue -j 77`") and "scancel 77" in said
