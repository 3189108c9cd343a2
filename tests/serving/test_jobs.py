"""The work queue's time budget and cancellation (pointseg.serving.jobs), without a server."""

import threading
import time

import anyio
import pytest

from pointseg.serving.jobs import JobBudget, JobError, WorkQueue


async def connected() -> bool:
    return False


def test_a_budget_stops_a_job_when_it_runs_out_or_is_cancelled() -> None:
    budget = JobBudget(0.2)
    budget.check()
    time.sleep(0.3)
    with pytest.raises(JobError, match=r"limit of 0\.2 s per request") as expired:
        budget.check(4)
    assert expired.value.status_code == 504
    cancelled = JobBudget(60)
    cancelled.cancel("the client disconnected")
    with pytest.raises(JobError, match="stopped: the client disconnected") as stopped:
        cancelled.check()
    assert stopped.value.status_code == 503 and "Retry-After" in stopped.value.headers


def test_a_job_waiting_past_its_budget_never_runs() -> None:
    queue = WorkQueue(max_size=4)
    release = threading.Event()
    ran: list[str] = []

    def blocking(name: str) -> str:
        ran.append(name)
        assert release.wait(30)
        return name

    async def main() -> tuple[str, JobError]:
        first_budget, second_budget = JobBudget(60), JobBudget(0.3)
        async with anyio.create_task_group() as group:
            results: dict[str, object] = {}

            async def first() -> None:
                results["first"] = await queue.run(first_budget, connected, blocking, "first")

            group.start_soon(first)
            await anyio.sleep(0.1)
            try:
                await queue.run(second_budget, connected, blocking, "second")
            except JobError as error:
                results["second"] = error
            release.set()
        return results["first"], results["second"]  # type: ignore[return-value]

    first, second = anyio.run(main)
    assert first == "first" and ran == ["first"]
    assert second.status_code == 504


def test_a_disconnected_client_cancels_its_running_job() -> None:
    queue = WorkQueue(max_size=4)
    tiles = []

    def tiled(budget: JobBudget) -> None:
        for tile in range(1000):
            budget.check()
            tiles.append(tile)
            time.sleep(0.01)

    async def gone_after_a_moment() -> bool:
        return len(tiles) >= 5

    async def main() -> JobError:
        budget = JobBudget(60)
        with pytest.raises(JobError) as stopped:
            await queue.run(budget, gone_after_a_moment, tiled, budget)
        return stopped.value

    error = anyio.run(main)
    assert "the client disconnected" in str(error) and len(tiles) < 1000
