"""Running a coroutine function to its result from synchronous code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple

import anyio

__all__ = ["run_to_result"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def run_to_result(
    function: Callable[[*Ts], Awaitable[T]], *args: *Ts, backend: str = "asyncio"
) -> T:
    """
    ``anyio.run(function, *args, backend=backend)``, without the main task holding the result.

    On asyncio the runner formats its main task, result included, when it puts
    back its Ctrl-C handler: for a run's result (every outcome and the whole plan
    state) that is text for thousands of records, written for nothing. The
    result is handed out beside the task instead.
    """
    box: list[T] = []

    async def main() -> None:
        box.append(await function(*args))

    anyio.run(main, backend=backend)
    return box[0]
