"""The training queue of a labelling server: one worker thread, first in first out, with progress and cancel.

A job is one training of one project (:mod:`pointseg.serving.project_training` does the work).
Jobs wait in a FIFO queue and run one at a time in a worker thread, so the server keeps answering
while a model trains. A Lightning callback (:mod:`pointseg.serving.training_progress`, imported
only when a job runs, since Lightning is heavy) feeds each job's epoch, loss, held-out point
accuracy and time left, and stops the job at its next batch once it is cancelled, by raising
:class:`TrainingCancelled` inside Lightning's loop (and between batches of tiles while it maps).
Jobs live in memory: a restarted server has none (finished runs are on disk).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pointseg.errors import PointsegError
from pointseg.serving.workspace import WorkspaceError, new_id

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")
KEPT_FINISHED_JOBS = 200
"""Finished jobs remembered for ``GET /api/jobs/{id}`` (older ones are forgotten)."""
CLOSE_TIMEOUT_S = 30.0
"""How long closing the queue waits for a cancelled training to stop."""


class TrainingCancelled(Exception):
    """Raised inside the training loop of a cancelled job."""


@dataclass
class TrainingJob:
    """One training of one project, and how far it got.

    Attributes:
        id: 12 hex digits, made by the server.
        project: The project's id.
        epochs: Epochs to train.
        warm_start: Start from the project's last run's network.
        state: ``queued``, ``running``, ``done``, ``failed`` or ``cancelled``.
        epoch: Epochs finished.
        loss: Training loss of the last finished epoch.
        val_point_accuracy: Accuracy at the held-out points at the last validation.
        message: What the job is doing, or why it failed.
        run: The run number written, once done.
    """

    id: str
    project: str
    epochs: int
    warm_start: bool
    state: JobState = "queued"
    epoch: int = 0
    loss: float | None = None
    val_point_accuracy: float | None = None
    message: str = "waiting for its turn"
    run: int | None = None
    started: float | None = None
    finished: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the job started running (0 while queued)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    @property
    def eta_s(self) -> float | None:
        """Seconds of training left: mean epoch time times epochs left (``None`` before the first epoch)."""
        if self.state != "running" or not self.epoch_seconds:
            return None
        return sum(self.epoch_seconds) / len(self.epoch_seconds) * max(0, self.epochs - self.epoch)

    def check_cancelled(self) -> None:
        """Raise :class:`TrainingCancelled` once the job is cancelled."""
        if self.cancel_requested.is_set():
            raise TrainingCancelled(self.id)

    def to_dict(self, position: int | None) -> dict[str, Any]:
        """The JSON form of ``GET /api/jobs/{id}``; ``position`` 0 = running, k = k-th waiting."""
        return {
            "id": self.id,
            "project": self.project,
            "state": self.state,
            "position": position,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "warm_start": self.warm_start,
            "loss": self.loss,
            "val_point_accuracy": self.val_point_accuracy,
            "elapsed_s": round(self.elapsed_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "message": self.message,
            "run": self.run,
        }


Runner = Callable[[TrainingJob, Sequence["Callback"]], int]
"""Trains a job with these callbacks and returns the number of the run it wrote."""


class TrainingQueue:
    """Jobs waiting (FIFO) and the one running, in a worker thread started with the first job.

    Args:
        runner: Does one job's training (see :data:`Runner`).
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.jobs: dict[str, TrainingJob] = {}
        self.waiting: deque[TrainingJob] = deque()
        self.running: TrainingJob | None = None
        self.condition = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closed = False

    def submit(self, project: str, epochs: int, warm_start: bool) -> TrainingJob:
        """Queue a training of ``project``.

        Raises:
            WorkspaceError: 409 when a job of this project is already queued or running.
        """
        with self.condition:
            active = self.active(project)
            if active is not None:
                raise WorkspaceError(
                    409,
                    f"project {project} already has a training {active.state} (job {active.id}); wait for "
                    "it or cancel it (DELETE /api/jobs/{id})",
                )
            job = TrainingJob(new_id(set(self.jobs)), project, epochs, warm_start)
            self.jobs[job.id] = job
            self.waiting.append(job)
            self._forget_old_jobs()
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, name="pointseg-training", daemon=True)
                self.thread.start()
            self.condition.notify_all()
            return job

    def active(self, project: str) -> TrainingJob | None:
        """The project's queued or running job, if any."""
        with self.condition:
            candidates = [self.running, *self.waiting]
            return next(
                (
                    job
                    for job in candidates
                    if job is not None and job.project == project and job.state not in FINISHED
                ),
                None,
            )

    def get(self, job_id: str) -> TrainingJob:
        """The job with this id.

        Raises:
            WorkspaceError: 404 for an unknown (or long forgotten) job.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise WorkspaceError(
                404, f"no training job {job_id!r} (jobs are forgotten when the server restarts)"
            )
        return job

    def position(self, job: TrainingJob) -> int | None:
        """0 for the running job, k for the k-th waiting one, ``None`` once finished."""
        with self.condition:
            if job.state in FINISHED:
                return None
            if job is self.running:
                return 0
            return next((k for k, waiting in enumerate(self.waiting, start=1) if waiting is job), None)

    def describe(self, job: TrainingJob) -> dict[str, Any]:
        """The job's JSON form with its position."""
        return job.to_dict(self.position(job))

    def cancel(self, job_id: str) -> TrainingJob:
        """Remove a waiting job, or stop the running one at its next batch.

        Raises:
            WorkspaceError: 404 for an unknown job, 409 for a finished one.
        """
        with self.condition:
            job = self.get(job_id)
            if job.state in FINISHED:
                raise WorkspaceError(
                    409, f"job {job_id} has already finished ({job.state}); nothing to cancel"
                )
            if job in self.waiting:
                self.waiting.remove(job)
                self._finish(job, "cancelled", "cancelled before it started")
            else:
                job.cancel_requested.set()
                job.message = "cancelling: stops at the next batch"
            return job

    def close(self) -> None:
        """Cancel every job and wait (a while) for the worker thread to end."""
        with self.condition:
            self.closed = True
            for job in self.waiting:
                self._finish(job, "cancelled", "the server stopped")
            self.waiting.clear()
            if self.running is not None:
                self.running.cancel_requested.set()
            self.condition.notify_all()
        if self.thread is not None:
            self.thread.join(CLOSE_TIMEOUT_S)

    def _work(self) -> None:
        while True:
            with self.condition:
                while not self.waiting and not self.closed:
                    self.condition.wait()
                if self.closed:
                    return
                job = self.running = self.waiting.popleft()
                job.state, job.started, job.message = "running", time.monotonic(), "preparing the training"
            state, message = self._run(job)
            with self.condition:  # one step: a cancel sees the job running or finished, never between
                self._finish(job, state, message)
                self.running = None

    def _run(self, job: TrainingJob) -> tuple[JobState, str]:
        """Run the job; its final state and message (set by the caller, under the lock)."""
        try:
            from pointseg.serving.training_progress import TrainingProgress

            job.run = self.runner(job, [TrainingProgress(job)])
        except TrainingCancelled:
            return "cancelled", "cancelled; nothing was kept"
        except PointsegError as error:
            return "failed", str(error)
        except Exception:
            logger.exception("training job %s of project %s failed", job.id, job.project)
            return "failed", "internal error; the server log has the details"
        return "done", f"run {job.run} is ready"

    @staticmethod
    def _finish(job: TrainingJob, state: JobState, message: str) -> None:
        job.state, job.message, job.finished = state, message, time.monotonic()

    def _forget_old_jobs(self) -> None:
        finished = [job_id for job_id, job in self.jobs.items() if job.state in FINISHED]
        for job_id in finished[: max(0, len(finished) - KEPT_FINISHED_JOBS)]:
            del self.jobs[job_id]
