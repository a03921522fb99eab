"""Time, injected: the scheduler reads time only through a `Clock`."""

from __future__ import annotations

import asyncio  # noqa: TID251 - only to read the loop's time, which anyio would look up slower
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


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
