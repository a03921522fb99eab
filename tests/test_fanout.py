"""The pipeline's fan-out keeps a task group's promises: nothing outlives it, nothing is lost."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from mesh.engine._fanout import Job, concurrently_on_running_loop

pytestmark = pytest.mark.anyio


class Jobs:
    """Jobs that record when they start and end; each behaves as its index says."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started: list[int] = []
        self.ended: list[int] = []
        self.all_started = anyio.Event()

    async def started_all(self, index: int) -> None:
        self.started.append(index)
        if len(self.started) == self.count:
            self.all_started.set()

    def ended_at_return(self) -> list[int]:
        return sorted(self.ended)


async def cancelled_once_started(
    jobs: Jobs, job: Job, seen: Callable[[], list[int]]
) -> tuple[bool, list[int]]:
    """
    Fan out ``jobs``, cancelled from outside once all have started.

    Returns whether the outer scope caught its cancellation, and what ``seen()``
    gave the moment the fan-out ended.
    """
    when_ended: list[int] = []
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel_when_started() -> None:
                await jobs.all_started.wait()
                scope.cancel()

            group.start_soon(cancel_when_started)
            try:
                await concurrently_on_running_loop()(job, jobs.count)
            finally:
                when_ended.extend(seen())
    return scope.cancelled_caught, when_ended


async def test_every_job_runs_at_once_and_has_ended_when_it_returns() -> None:
    """Each job waits for all the others to start, so run one after another they would hang."""
    jobs = Jobs(3)

    async def job(index: int) -> None:
        try:
            await jobs.started_all(index)
            await jobs.all_started.wait()
            await anyio.sleep(0.01 * index)
        finally:
            jobs.ended.append(index)

    with anyio.fail_after(5):
        await concurrently_on_running_loop()(job, 3)
    assert jobs.ended_at_return() == [0, 1, 2]


async def test_a_single_job_runs_in_the_calling_task() -> None:
    """One job needs no task of its own."""
    caller = anyio.get_current_task().id
    ran_in: list[int] = []

    async def job(index: int) -> None:
        ran_in.append(anyio.get_current_task().id)

    await concurrently_on_running_loop()(job, 1)
    assert ran_in == [caller]


@pytest.mark.parametrize("failing", [0, 2])
async def test_a_failing_job_cancels_the_others_and_its_error_is_raised(failing: int) -> None:
    """Whichever job fails (in a task of its own, or the caller's), the rest stop; all end first."""
    jobs = Jobs(3)
    cancelled: list[int] = []

    async def job(index: int) -> None:
        try:
            await jobs.started_all(index)
            await jobs.all_started.wait()
            if index == failing:
                raise ValueError(f"job {index} broke")
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(index)
            raise
        finally:
            jobs.ended.append(index)

    broke = pytest.RaisesExc(ValueError, match=f"job {failing} broke")
    with anyio.fail_after(5), pytest.RaisesGroup(broke):
        await concurrently_on_running_loop()(job, 3)
    assert jobs.ended_at_return() == [0, 1, 2]
    assert sorted(cancelled) == sorted({0, 1, 2} - {failing})


async def test_every_failure_is_raised() -> None:
    """Two jobs failing before either could be cancelled are both reported."""

    async def job(index: int) -> None:
        raise KeyError(index)

    with pytest.raises(BaseExceptionGroup) as raised:
        await concurrently_on_running_loop()(job, 2)
    assert sorted(exc.args[0] for exc in raised.value.exceptions) == [0, 1]


async def test_cancelling_the_caller_cancels_every_job_and_waits_for_them() -> None:
    """An outer cancel scope stops every job; the fan-out ends only after all have ended."""
    jobs = Jobs(3)

    async def job(index: int) -> None:
        try:
            await jobs.started_all(index)
            await anyio.sleep_forever()
        finally:
            jobs.ended.append(index)

    caught, ended_when_cancelled = await cancelled_once_started(jobs, job, lambda: jobs.ended)
    assert caught
    assert sorted(ended_when_cancelled) == [0, 1, 2]


async def test_a_shielded_cleanup_in_a_job_finishes_before_the_cancellation_goes_on() -> None:
    """Cancellation reaches jobs through cancel scopes: a job's shielded cleanup runs to its end."""
    jobs = Jobs(2)
    cleaned: list[int] = []

    async def job(index: int) -> None:
        try:
            await jobs.started_all(index)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # a process being reaped, a worktree removed
                cleaned.append(index)

    _, cleaned_when_cancelled = await cancelled_once_started(jobs, job, lambda: cleaned)
    assert sorted(cleaned_when_cancelled) == [0, 1]


async def test_a_deadline_around_the_caller_stops_the_jobs() -> None:
    """fail_after around a fan-out raises TimeoutError once every job has stopped."""
    jobs = Jobs(3)

    async def job(index: int) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            jobs.ended.append(index)

    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.05):
            await concurrently_on_running_loop()(job, 3)
    assert jobs.ended_at_return() == [0, 1, 2]


async def test_a_failure_while_the_caller_is_cancelled_is_still_raised() -> None:
    """A job's error is not lost when the caller is cancelled at the same time."""
    jobs = Jobs(2)

    async def job(index: int) -> None:
        await jobs.started_all(index)
        if index == 0:
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.lowlevel.checkpoint()
                raise RuntimeError("cleanup failed")
        await anyio.sleep_forever()

    failed = pytest.RaisesExc(RuntimeError, match="cleanup failed")
    with pytest.RaisesGroup(failed, flatten_subgroups=True):
        await cancelled_once_started(jobs, job, list)
