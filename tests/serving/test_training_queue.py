"""The training queue: FIFO, one job at a time, positions, 409s, cancel, failures (with a fake runner)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pointseg.errors import PointsegError
from pointseg.serving.training_queue import TrainingJob, TrainingQueue
from pointseg.serving.workspace import WorkspaceError


class GatedRunner:
    """A runner that runs each job until its gate opens, checking for cancellation meanwhile."""

    def __init__(self, outcome: Callable[[TrainingJob], int] = lambda job: 1) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.order: list[str] = []
        self.outcome = outcome

    def __call__(self, job: TrainingJob, callbacks: Sequence[Any]) -> int:
        self.order.append(job.project)
        assert [type(c).__name__ for c in callbacks] == ["TrainingProgress"]
        gate = self.gates.setdefault(job.id, threading.Event())
        while not gate.wait(0.01):
            job.check_cancelled()
        return self.outcome(job)

    def release(self, job: TrainingJob) -> None:
        self.gates.setdefault(job.id, threading.Event()).set()


def until(condition: Callable[[], bool], polls: int = 3000) -> None:
    """Wait for ``condition``, polling a bounded number of times (a guard against a hang, not a timing)."""
    for _ in range(polls):
        if condition():
            return
        time.sleep(0.01)
    pytest.fail("the condition never held")


def test_jobs_run_one_at_a_time_first_in_first_out_with_their_positions() -> None:
    runner = GatedRunner()
    queue = TrainingQueue(runner)
    first, second, third = (queue.submit(name, 3, False) for name in ("a", "b", "c"))
    until(lambda: first.state == "running")
    assert [queue.position(job) for job in (first, second, third)] == [0, 1, 2]
    assert queue.describe(second)["state"] == "queued" and queue.describe(second)["position"] == 1
    runner.release(first)
    until(lambda: second.state == "running")
    assert first.state == "done" and first.run == 1 and queue.position(first) is None
    assert queue.position(third) == 1
    runner.release(second)
    runner.release(third)
    until(lambda: third.state == "done")
    assert runner.order == ["a", "b", "c"]
    queue.close()


def test_a_project_has_one_job_at_a_time() -> None:
    runner = GatedRunner()
    queue = TrainingQueue(runner)
    job = queue.submit("a", 3, False)
    with pytest.raises(WorkspaceError, match=f"already has a training .* {job.id}") as refused:
        queue.submit("a", 3, False)
    assert refused.value.status_code == 409
    assert queue.active("a") is job and queue.active("b") is None
    runner.release(job)
    until(lambda: job.state == "done")
    assert queue.active("a") is None
    queue.close()


def test_cancel_removes_a_waiting_job_and_stops_a_running_one() -> None:
    runner = GatedRunner()
    queue = TrainingQueue(runner)
    running, waiting = queue.submit("a", 3, False), queue.submit("b", 3, False)
    until(lambda: running.state == "running")
    assert queue.cancel(waiting.id).state == "cancelled"
    assert queue.cancel(running.id).message.startswith("cancelling")
    until(lambda: running.state == "cancelled")
    assert running.run is None and runner.order == ["a"]
    with pytest.raises(WorkspaceError, match="already finished") as finished:
        queue.cancel(running.id)
    assert finished.value.status_code == 409
    with pytest.raises(WorkspaceError, match="no training job 'nope'") as unknown:
        queue.get("nope")
    assert unknown.value.status_code == 404
    queue.close()


def test_a_failed_job_says_why_and_the_queue_goes_on() -> None:
    def outcome(job: TrainingJob) -> int:
        if job.project == "bad":
            raise PointsegError("nothing left for the held-out check")
        if job.project == "bug":
            raise RuntimeError("a bug")
        return 7

    runner = GatedRunner(outcome)
    queue = TrainingQueue(runner)
    jobs = [queue.submit(name, 1, False) for name in ("bad", "bug", "good")]
    for job in jobs:
        runner.release(job)
    until(lambda: all(job.state in ("done", "failed") for job in jobs))
    assert [job.state for job in jobs] == ["failed", "failed", "done"]
    assert jobs[0].message == "nothing left for the held-out check"
    assert jobs[1].message.startswith("internal error")
    assert jobs[2].run == 7
    queue.close()


def test_closing_cancels_everything() -> None:
    runner = GatedRunner()
    queue = TrainingQueue(runner)
    running, waiting = queue.submit("a", 3, False), queue.submit("b", 3, False)
    until(lambda: running.state == "running")
    queue.close()
    assert (running.state, waiting.state) == ("cancelled", "cancelled")


def test_progress_and_time_left() -> None:
    job = TrainingJob("j", "p", epochs=4, warm_start=False)
    assert job.eta_s is None and job.elapsed_s == 0
    job.state, job.started, job.epoch, job.epoch_seconds = "running", time.monotonic() - 5, 2, [2.0, 3.0]
    assert job.eta_s == pytest.approx(5.0)
    described = job.to_dict(0)
    assert described["position"] == 0 and described["eta_s"] == 5.0 and described["elapsed_s"] >= 5


def test_a_cancel_that_comes_too_late_leaves_a_done_job_that_says_so() -> None:
    finishing = threading.Event()
    proceed = threading.Event()

    def outcome(job: TrainingJob) -> int:
        finishing.set()
        proceed.wait(30)  # the run is written; a cancel now comes too late to stop it
        return 1

    runner = GatedRunner(outcome)
    queue = TrainingQueue(runner)
    job = queue.submit("a", 1, False)
    runner.release(job)
    until(finishing.is_set)
    assert queue.cancel(job.id).message.startswith("cancelling")
    proceed.set()
    until(lambda: job.state in ("done", "cancelled", "failed"))
    assert (job.state, job.message, job.run) == ("done", "run 1 is ready", 1)
    assert queue.position(job) is None and queue.active("a") is None
    queue.close()
