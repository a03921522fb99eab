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
  as a `BaseExceptionGroup`, as a task group raises them;
- cancelling the caller cancels every job through anyio's own cancel scopes, so
  shielded scopes inside a job (an adapter's cleanup) are honoured, and the
  caller's cancellation is raised as it came once they have all ended.

On trio a nursery is that structure already, and anyio's cancel scopes are
trio's. On asyncio, each job but the last runs in a task of its own inside a
cancel scope of its own, which the caller cancels when it is cancelled or a job
fails; the last job runs in the calling task, saving a task.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - the backend's own tasks: anyio's cost more than the calls they run
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

__all__ = ["Job", "cancel_scope_class", "concurrently_on_running_loop"]

Job = Callable[[int], Coroutine[Any, Any, None]]
"""``job(index)``: one of the jobs of a fan-out."""
FanOut = Callable[[Job, int], Coroutine[Any, Any, None]]


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
    scopes = [scope_class() for _ in range(count)]
    failures: list[BaseException] = []
    running = count - 1
    all_ended: asyncio.Future[None] | None = None

    def cancel_all() -> None:
        for scope in scopes:
            scope.cancel()

    async def run(index: int) -> None:
        try:
            with scopes[index]:
                await job(index)
        except (KeyboardInterrupt, SystemExit):
            raise  # as asyncio does: they leave the loop at once
        except BaseException as exc:  # noqa: BLE001 - raised by the caller, with the others
            failures.append(exc)
            cancel_all()

    def ended(_: object) -> None:
        nonlocal running
        running -= 1
        if running == 0 and all_ended is not None and not all_ended.done():
            all_ended.set_result(None)

    # Held here: asyncio keeps only weak references to tasks.
    tasks = [loop.create_task(run(index)) for index in range(count - 1)]
    for task in tasks:
        task.add_done_callback(ended)
    try:
        with scopes[-1]:
            await job(count - 1)
        if running:
            all_ended = loop.create_future()
            await all_ended
    except BaseException as exc:
        # Cancelled from outside, or the caller's own job failed: the others stop too,
        # and are waited for (shielded, as a task group waits) before this goes on.
        cancel_all()
        with anyio.CancelScope(shield=True):
            while running:
                all_ended = loop.create_future()
                await all_ended
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        if isinstance(exc, KeyboardInterrupt | SystemExit) or (cancelled and not failures):
            raise
        if not cancelled:
            failures.insert(0, exc)
    del tasks
    if failures:
        raise BaseExceptionGroup("unhandled errors in a fan-out", failures)
