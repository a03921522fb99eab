"""A manual clock for tests: time moves only when told to, or when everything waits."""

from __future__ import annotations

import asyncio  # noqa: TID251 - only to read the loop's ready queue, which anyio does not expose
import contextlib
import itertools
import typing
import weakref
from collections.abc import AsyncIterator, Collection
from typing import Final

import anyio
import anyio.lowlevel

from ..engine._roles import calls_in_threads

_QUIET_PASSES: Final = 3
"""Loop passes in a row with nothing ready before asyncio counts as idle.

One pass already sees every ready callback and every due timer; the further
passes (microseconds each) give the selector a poll or two to report I/O that
became ready meanwhile.
"""

_JUMPERS: Final[weakref.WeakSet[asyncio.Task[object]]] = weakref.WeakSet()
"""Tasks running `ManualClock.autojump` on asyncio.

Their own passes are not work: two clocks jumping in one loop would otherwise
each see the other ready forever, and neither would ever jump.
"""


def _ready_queue() -> Collection[asyncio.Handle] | None:
    """The running asyncio loop's ready queue; None on trio, or a loop without one (uvloop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    ready: Collection[asyncio.Handle] | None = getattr(loop, "_ready", None)
    return ready


def _is_jumper(handle: asyncio.Handle) -> bool:
    """Whether a ready callback is another autojumper's pass (a task's step knows its task)."""
    callback = handle._callback  # type: ignore[attr-defined]  # noqa: SLF001 - no public view of a handle's task
    owner = getattr(callback, "__self__", None)
    # Only a task can be a jumper; anything else may not even be hashable.
    return isinstance(owner, asyncio.Task) and owner in _JUMPERS


def _threads_at_work() -> bool:
    """
    Whether a sync adapter the engine called from this loop is still working in its thread.

    A task waiting on one is not idle, it waits for real work, and jumping past
    its timeout would time it out spuriously. Other threads (the host's, or an
    abandoned call's) do not count.
    """
    return calls_in_threads() > 0


async def _wait_idle() -> None:
    """
    Return once every other task waits, and none is about to run.

    On trio this is `trio.testing.wait_all_tasks_blocked`, exact by design. On
    asyncio, anyio's equivalent naps 0.1 s whenever a task is runnable, and
    looks only at tasks: work that is still a callback (a finished child's
    done-callback, which tells its task group) passes for idle. So the loop's
    ready queue is read instead: idle means nothing but other autojumpers was
    ready for `_QUIET_PASSES` passes in a row.
    """
    ready = _ready_queue()
    if ready is None:
        await anyio.wait_all_tasks_blocked()
        return
    task = typing.cast("asyncio.Task[object]", asyncio.current_task())
    _JUMPERS.add(task)
    try:
        quiet = 0
        while quiet < _QUIET_PASSES:
            await anyio.lowlevel.checkpoint()
            # A copy, made in C without letting other threads run: a worker thread
            # handing a result back appends to the queue, and would break iteration.
            quiet = quiet + 1 if all(map(_is_jumper, tuple(ready))) else 0
    finally:
        _JUMPERS.discard(task)


class ManualClock:
    """
    A `mesh.typing.Clock` whose time moves only by `advance`, or by autojump.

    With `autojumping`, whenever every task is blocked the clock jumps to the
    earliest pending deadline, so timeouts and backoffs take no real time.
    While a sync adapter the engine called runs in its worker thread, the clock
    waits for its answer; a sync adapter that never returns, or that waits on
    this clock from its thread, therefore stops virtual time (make such
    adapters async).

    .. versionadded:: 0.1.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: dict[int, tuple[float, anyio.Event]] = {}
        self._ids = itertools.count()

    def current_time(self) -> float:
        """The clock's time."""
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        """Wait until the clock reaches ``deadline``."""
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        key, event = next(self._ids), anyio.Event()
        self._sleepers[key] = (deadline, event)
        try:
            await event.wait()
        finally:
            self._sleepers.pop(key, None)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        await self.sleep_until(self._now + seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        for key, (deadline, event) in list(self._sleepers.items()):
            if deadline <= self._now:
                del self._sleepers[key]
                event.set()

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline anyone waits for."""
        return min((deadline for deadline, _ in self._sleepers.values()), default=None)

    async def autojump(self) -> None:
        """
        Forever: when every other task waits, jump to the next deadline.

        Tasks woken by a jump run, and wait again, before the next one: a task
        that becomes ready at a deadline always acts at that deadline's time.
        """
        while True:
            await _wait_idle()
            deadline = self.next_deadline
            if deadline is not None and not _threads_at_work():
                self.advance(max(0.0, deadline - self._now))
            else:
                # Nothing to jump to, or a sync adapter still working in a thread (its
                # answer will wake a task): only threads or real I/O can change that.
                await anyio.sleep(0.001)

    @contextlib.asynccontextmanager
    async def autojumping(self) -> AsyncIterator[ManualClock]:
        """Run `autojump` in the background for the duration of the block."""
        async with anyio.create_task_group() as group:
            group.start_soon(self.autojump)
            try:
                yield self
            finally:
                group.cancel_scope.cancel()
