"""The work queue of one worker process: admission, one job at a time, a time budget, cancellation.

A job (one prediction) runs in a worker thread so the event loop keeps answering ``/health``. It
is stopped between tiles, by :meth:`JobBudget.check`, when its request's time budget runs out
(504), when the client disconnects, or when the server is stopping (uvicorn cancels the request
after its graceful-shutdown timeout); the job's thread then ends within one batch of tiles.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
DISCONNECT_POLL_SECONDS = 0.25
"""How often a running job's client connection is checked."""


class JobError(Exception):
    """A job refused or stopped between tiles, and the HTTP answer that says why.

    Attributes:
        status_code: 504 when the time budget ran out; 503 when the queue is full, the client left
            or the server is stopping.
        headers: Extra response headers (``Retry-After`` for a 503).
    """

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers or {}


class JobBudget:
    """The time a request may spend waiting for and running its job, and a flag to stop it early.

    Thread-safe: the event loop cancels, the job's thread checks.

    Args:
        seconds: The budget, from now.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.finished = threading.Event()
        self._stopped: JobError | None = None

    def remaining(self) -> float:
        """Seconds left (negative once it has run out)."""
        return self.deadline - time.monotonic()

    def cancel(self, reason: str) -> None:
        """Ask the job to stop at its next check; ``reason`` ends the 503 message."""
        if self._stopped is None:
            self._stopped = JobError(503, f"the prediction was stopped: {reason}", {"Retry-After": "5"})

    def expired(self) -> JobError:
        """The 504 error of a job that ran out of time."""
        return JobError(
            504,
            f"the prediction took longer than this server's limit of {self.seconds:g} s per request "
            "(--request-timeout) and was stopped; send a smaller image or cut it into tiles",
        )

    def check(self, *_: object) -> None:
        """Raise if the job should stop (usable as a predictor's ``on_tiles`` callback).

        Raises:
            JobError: 503 after :meth:`cancel`, 504 once the budget has run out.
        """
        if self._stopped is not None:
            raise self._stopped
        if self.remaining() < 0:
            raise self.expired()


class WorkQueue:
    """Admits at most ``max_size`` jobs at once (waiting or running); runs one at a time.

    ``admit`` and ``run`` are called from the event loop only, so the count needs no lock.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.active = 0
        self.limiter = anyio.CapacityLimiter(1)
        self.last_job_seconds = 1.0

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait: how long the last job took, at least 1."""
        return max(1, math.ceil(self.last_job_seconds))

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place in the queue for the duration of the block.

        Raises:
            JobError: 503 with ``Retry-After`` when ``max_size`` places are taken.
        """
        if self.active >= self.max_size:
            raise JobError(
                503,
                f"busy: {self.active} image(s) are already being processed or waiting (the limit is "
                f"{self.max_size}, --max-queue); try again in {self.retry_after} s",
                {"Retry-After": str(self.retry_after)},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def run(
        self,
        budget: JobBudget,
        is_disconnected: Callable[[], Awaitable[bool]],
        job: Callable[..., T],
        *args: Any,
    ) -> T:
        """Run ``job(*args)`` in a worker thread once no other job runs, within ``budget``.

        ``job`` must call ``budget.check`` between units of work. While it waits or runs, the
        client connection is watched; a disconnect cancels the budget.

        Raises:
            JobError: 504 if the budget runs out while waiting (or, from ``job``, while running).
        """
        result: list[T] = []
        failure: list[Exception] = []
        async with anyio.create_task_group() as group:
            group.start_soon(self._cancel_on_disconnect, is_disconnected, budget)
            try:
                result.append(await self._run_in_turn(budget, job, *args))
            except Exception as error:
                failure.append(error)
            finally:
                group.cancel_scope.cancel()
        if failure:
            raise failure[0]
        return result[0]

    async def _run_in_turn(self, budget: JobBudget, job: Callable[..., T], *args: Any) -> T:
        try:
            with anyio.fail_after(max(budget.remaining(), 0)):
                await self.limiter.acquire()
        except TimeoutError as error:
            raise budget.expired() from error

        def timed() -> T:
            started = time.perf_counter()
            try:
                budget.check()
                return job(*args)
            finally:
                self.last_job_seconds = time.perf_counter() - started
                budget.finished.set()

        try:
            return await anyio.to_thread.run_sync(timed, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            # uvicorn cancels requests that outlive its graceful-shutdown timeout: stop the job at
            # its next tile and wait for it, so the process can exit.
            budget.cancel("the server is shutting down")
            with anyio.CancelScope(shield=True):
                while not budget.finished.is_set():
                    await anyio.sleep(0.05)
            raise
        finally:
            self.limiter.release()

    @staticmethod
    async def _cancel_on_disconnect(
        is_disconnected: Callable[[], Awaitable[bool]], budget: JobBudget
    ) -> None:
        while not await is_disconnected():
            await anyio.sleep(DISCONNECT_POLL_SECONDS)
        budget.cancel("the client disconnected")
