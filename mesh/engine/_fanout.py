"""
Fan-out: run a few jobs at once and return when all of them have ended.

A unit's stages fan out to two or three adapter calls at a time, tens of
thousands of times in a large run. anyio's task group costs about 12 µs, plus
about 12 µs per task (anyio 4.16: a handle, a cancel scope and an event for
each), more than the rest of a no-op call. This is the same structure for the
one shape the pipeline needs, built on each backend's own tasks:

- every job has ended (returned, failed or been cancelled) before `concurrently`
  returns or raises: no task outlives it;
- a job that fails cancels the others, and the failures are raised together
  as a `BaseExceptionGroup`, as a task group raises them; a cancellation that
  did not come from the fan-out's scopes (a native one) stops the others
  without being a failure, as in a task group;
- cancelling the caller cancels every job at once, through anyio's own cancel
  scopes, so shielded scopes inside a job (an adapter's cleanup) are honoured,
  and the caller's cancellation is raised as it came once they have all ended.

On asyncio a job's scope is its task's outermost, so within a job
`anyio.current_effective_deadline()` does not show the caller's deadline; that
deadline reaches the job as a cancellation when it fires (and not before, if
the caller extends it).

On trio a nursery is that structure already, and anyio's cancel scopes are
trio's. On asyncio, every job runs in a task of its own inside a cancel scope
of its own, while the caller only waits: so a cancellation reaches the caller
at once, whatever a job is doing, and the caller passes it to every job's
scope.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - the backend's own tasks: anyio's cost more than the calls they run
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

__all__ = ["Job", "cancel_scope_class", "concurrently_on_running_loop", "is_stray_cancellation"]

Job = Callable[[int], Coroutine[Any, Any, None]]
"""``job(index)``: one of the jobs of a fan-out."""
FanOut = Callable[[Job, int], Coroutine[Any, Any, None]]


def is_stray_cancellation(exc: BaseException) -> bool:
    """
    Whether ``exc`` is asyncio's cancellation that nothing asked for.

    An adapter that awaits a future someone else cancelled (a client library's
    pool, say) raises `asyncio.CancelledError` while its own task is not being
    cancelled. Passed on, it would look like a cancellation of the unit, and
    stop the run; it is that call's error instead. A real cancellation (a cancel
    scope, a timeout) always has its task's cancel request counted first; trio's
    are never this class.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return True  # no asyncio loop: nothing here cancels with asyncio's class
    return task is not None and task.cancelling() == 0


def cancel_scope_class() -> type[anyio.CancelScope]:
    """
    The running backend's own cancel scope class, to make scopes without a backend lookup.

    ``anyio.CancelScope()`` finds the running backend on every call, which costs
    more than the scope; this class takes the same arguments (``deadline``,
    ``shield``) and is what that call returns.
    """
    return type(anyio.CancelScope())


def concurrently_on_running_loop() -> FanOut:
    """The fan-out for the running loop: ``await fan_out(job, count)`` runs job(0..count - 1)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _on_trio
    return functools.partial(_on_asyncio, scope_class=cancel_scope_class())


async def _on_trio(job: Job, count: int) -> None:
    if count == 1:
        await job(0)
        return
    import trio  # noqa: PLC0415 - running on trio, so it is installed

    async with trio.open_nursery() as nursery:
        for index in range(count - 1):
            nursery.start_soon(job, index)
        await job(count - 1)


async def _on_asyncio(  # noqa: C901 - the whole structure in one place
    job: Job, count: int, *, scope_class: type[anyio.CancelScope]
) -> None:
    if count == 1:
        await job(0)
        return
    loop = asyncio.get_running_loop()
    # The jobs' scopes are their tasks' outermost: the caller's cancellation (a deadline
    # that fires included) reaches them from the caller, below, when it comes.
    scopes = [scope_class() for _ in range(count)]
    failures: list[BaseException] = []
    running = count
    all_ended = loop.create_future()

    def cancel_all() -> None:
        for scope in scopes:
            scope.cancel()

    async def run(index: int) -> None:
        try:
            with scopes[index]:
                await job(index)
        except asyncio.CancelledError:
            cancel_all()  # not from its scope: a native cancellation, which stops the others
        except (KeyboardInterrupt, SystemExit):
            cancel_all()
            raise  # as asyncio does: they leave the loop at once, by themselves
        except BaseException as exc:  # noqa: BLE001 - raised by the caller, with the others
            failures.append(exc)
            cancel_all()

    def ended(task: asyncio.Task[None]) -> None:
        nonlocal running
        if not task.cancelled():
            task.exception()  # retrieved: it is in `failures` (or on its way out of the loop)
        running -= 1
        if not running and not all_ended.done():
            all_ended.set_result(None)

    # Held here: asyncio keeps only weak references to tasks.
    tasks = [loop.create_task(run(index)) for index in range(count)]
    for task in tasks:
        task.add_done_callback(ended)
    try:
        await all_ended
    except BaseException as exc:
        # Cancelled (or interrupted): every job stops too, and is waited for, shielded
        # as a task group waits, and through any further cancellation, before this goes on.
        cancel_all()
        with scope_class(shield=True):
            while running:
                all_ended = loop.create_future()
                try:
                    await all_ended
                except asyncio.CancelledError:
                    continue  # cancelled again: every job is told already
        if not failures or not isinstance(exc, anyio.get_cancelled_exc_class()):
            raise
        # Cancelled while jobs failed: their failures are raised, as a task group raises them.
    del tasks
    if failures:
        raise BaseExceptionGroup("unhandled errors in a fan-out", failures)
