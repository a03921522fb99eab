"""The engine's time: read the cheapest way the running loop allows, and the same time."""

from __future__ import annotations

import asyncio  # noqa: TID251 - the asyncio-only fast path is what is tested
import time

import anyio

import mesh
from mesh.contracts._clock import time_reader
from mesh.testing import ManualClock


class _OwnTimeLoop(asyncio.SelectorEventLoop):
    """A loop keeping its own time, as uvloop does."""

    def time(self) -> float:
        return super().time() + 1000.0


def test_manual_clocks_and_no_loop() -> None:
    """Any clock but the system clock, and any place outside a loop, reads current_time."""
    manual = ManualClock(start=5)
    assert time_reader(manual) == manual.current_time
    system = mesh.SystemClock()
    assert time_reader(system) == system.current_time


def test_asyncio_reads_the_monotonic_clock() -> None:
    """On asyncio's own loop the reader is time.monotonic, which is the loop's time."""

    async def main() -> None:
        reader = time_reader(mesh.SystemClock())
        assert reader is time.monotonic
        assert abs(reader() - asyncio.get_running_loop().time()) < 1.0

    asyncio.run(main())


def test_a_loop_with_its_own_time_is_asked() -> None:
    """A loop that keeps its own time is read through the clock, never around it."""

    async def main() -> None:
        clock = mesh.SystemClock()
        reader = time_reader(clock)
        assert reader == clock.current_time
        assert reader() > time.monotonic() + 999

    with asyncio.Runner(loop_factory=_OwnTimeLoop) as runner:
        runner.run(main())


def test_trio_reads_its_own_clock() -> None:
    """On trio the reader is the clock's current_time (trio's clock)."""

    async def main() -> None:
        clock = mesh.SystemClock()
        reader = time_reader(clock)
        assert reader == clock.current_time
        assert abs(reader() - anyio.current_time()) < 1.0

    anyio.run(main, backend="trio")


class _OffsetClock(mesh.SystemClock):
    """A system clock that keeps its own time."""

    def current_time(self) -> float:
        return super().current_time() + 1e6


def test_subclasses_and_patched_loops_are_asked() -> None:
    """A SystemClock subclass, or a loop whose time is replaced, is read through the clock."""

    async def main() -> None:
        offset = _OffsetClock()
        assert time_reader(offset) == offset.current_time
        loop = asyncio.get_running_loop()
        loop.time = lambda: 42.0  # type: ignore[method-assign]
        clock = mesh.SystemClock()
        assert time_reader(clock) == clock.current_time

    asyncio.run(main())
