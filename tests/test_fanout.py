"""The pipeline's fan-out keeps a task group's promises: nothing outlives it, nothing is lost."""

from __future__ import annotations

import asyncio  # noqa: TID251 - asyncio's own tasks and cancellation, which trio does not have
import contextlib
import gc
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

import mesh
from mesh.engine._fanout import Job, concurrently_on_running_loop, is_stray_cancellation

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


async def test_a_cancellation_reaches_every_job_while_one_is_shielded() -> None:
    """However busy one job is (here in a shielded step), the others are cancelled at once."""
    others_stopped = anyio.Event()
    stopped: list[int] = []
    shielded_done: list[bool] = []

    async def job(index: int) -> None:
        if index == 2:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await others_stopped.wait()
            shielded_done.append(others_stopped.is_set())
            return
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append(index)
            if len(stopped) == 2:
                others_stopped.set()

    with anyio.fail_after(5), anyio.move_on_after(0.05):
        await concurrently_on_running_loop()(job, 3)
    assert sorted(stopped) == [0, 1]
    assert shielded_done == [True]  # the others stopped while it was still shielded


async def test_a_caller_deadline_extended_meanwhile_lets_the_jobs_finish() -> None:
    """The caller's deadline reaches the jobs when it fires: moved later, it does not cut them."""
    finished: list[int] = []

    async def job(index: int) -> None:
        if index == 0:
            await anyio.sleep(0.02)
            outer.deadline = anyio.current_time() + 10
        await anyio.sleep(0.2)
        finished.append(index)

    with anyio.fail_after(5), anyio.CancelScope(deadline=anyio.current_time() + 0.1) as outer:
        await concurrently_on_running_loop()(job, 2)
    assert sorted(finished) == [0, 1]
    assert not outer.cancelled_caught


def test_a_native_cancellation_in_a_job_stops_the_others_without_failing() -> None:
    """As in a task group: a job's stray CancelledError (asyncio) cancels the rest, quietly."""
    cancelled: list[int] = []

    async def job(index: int) -> None:
        if index == 0:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # a CancelledError no cancel scope sent
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(index)

    async def main() -> None:
        with anyio.fail_after(5):
            await concurrently_on_running_loop()(job, 3)

    anyio.run(main, backend="asyncio")
    assert sorted(cancelled) == [1, 2]


def test_a_keyboard_interrupt_in_a_job_is_raised_and_nothing_is_left_unretrieved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in a job's task (asyncio) leaves the loop; asyncio has nothing to complain of."""
    complaints: list[str] = []
    monkeypatch.setattr(
        asyncio.BaseEventLoop,
        "default_exception_handler",
        lambda _, context: complaints.append(context["message"]),
    )

    async def job(index: int) -> None:
        if index == 0:
            await anyio.lowlevel.checkpoint()
            raise KeyboardInterrupt
        await anyio.sleep_forever()

    async def main() -> None:
        await concurrently_on_running_loop()(job, 3)

    with pytest.raises(KeyboardInterrupt):
        anyio.run(main, backend="asyncio")
    gc.collect()  # an unretrieved task exception is reported when the task goes
    assert complaints == []


def test_cancelled_twice_it_still_waits_for_every_job() -> None:
    """A second native cancel does not make the fan-out leave jobs behind (asyncio)."""
    ended: list[int] = []

    async def job(index: int) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if index < 2:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.1)
            ended.append(index)

    async def main() -> list[int]:
        task = asyncio.ensure_future(concurrently_on_running_loop()(job, 3))
        await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return sorted(ended)

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_job_cancelled_before_it_started_has_simply_ended() -> None:
    """asyncio: a job's task cancelled natively before its first step counts as ended."""
    started: list[int] = []

    async def job(index: int) -> None:
        started.append(index)
        if index == 0:  # runs first, and cancels the other jobs' tasks before they start
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current and getattr(task.get_coro(), "__qualname__", "").endswith(
                    "run"
                ):
                    task.cancel()

    async def main() -> None:
        with anyio.fail_after(5):
            await concurrently_on_running_loop()(job, 3)

    anyio.run(main, backend="asyncio")
    assert started == [0]


async def test_only_asyncios_unasked_cancellations_are_stray() -> None:
    """A CancelledError nobody asked for is stray; a real cancellation (either backend's) is not."""
    assert is_stray_cancellation(asyncio.CancelledError())  # nothing is cancelling this task
    assert not is_stray_cancellation(ValueError())
    real: list[bool] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class() as cancelled:
            real.append(is_stray_cancellation(cancelled))
            raise
    assert real == [False]


def test_a_delivery_requests_plan_state_is_read_through_on_instances_only() -> None:
    """On the class, the field's descriptor is itself (as attrs' slot was)."""
    descriptor = mesh.DeliveryRequest.plan_state
    assert descriptor is type(mesh.DeliveryRequest).__getattribute__(
        mesh.DeliveryRequest, "plan_state"
    )
