"""A manual clock for tests: time moves only when told to, or when everything waits."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel


class ManualClock:
    """
    A `mesh.typing.Clock` whose time moves only by `advance`, or by autojump.

    With `autojumping`, whenever every task is blocked the clock jumps to the
    earliest pending deadline, so timeouts and backoffs take no real time.
    Use async adapters with autojump: a thread running a sync adapter does not
    count as busy.

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
        """Forever: when all tasks are blocked, jump to the next deadline."""
        while True:
            await anyio.wait_all_tasks_blocked()
            deadline = self.next_deadline
            if deadline is not None:
                self.advance(max(0.0, deadline - self._now))
            else:
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
