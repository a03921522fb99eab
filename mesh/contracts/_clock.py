"""Time, injected: the scheduler reads time only through a `Clock`."""

from __future__ import annotations

import asyncio  # noqa: TID251 - only to read the loop's time, which anyio would look up slower
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock", "time_reader"]


@runtime_checkable
class Clock(Protocol):
    """
    **Protocol:** where the scheduler gets time and sleeps.

    .. versionadded:: 0.1.0
    """

    def current_time(self) -> float:
        """Seconds on this clock's own scale."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``current_time() >= deadline``."""


class SystemClock:
    """
    The event loop's clock (`anyio.current_time`); the default.

    .. versionadded:: 0.1.0
    """

    def current_time(self) -> float:
        """The event loop's monotonic time."""
        # What anyio answers on asyncio, without its backend lookup: the engine
        # reads the time several times per adapter call.
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep on the event loop."""
        await anyio.sleep_until(deadline)


def time_reader(clock: Clock) -> Callable[[], float]:
    """
    ``clock.current_time`` as the cheapest function for the running loop (call it there).

    The system clock on asyncio's own loops reads `time.monotonic`, which is the
    loop's time, without the loop lookup; every other clock and loop (trio,
    uvloop, a manual clock) is read through ``current_time`` itself.
    """
    if type(clock) is not SystemClock:  # a subclass may keep its own time
        return clock.current_time
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return clock.current_time
    standard = getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time
    return time.monotonic if standard else clock.current_time
