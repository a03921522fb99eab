"""The async test harness itself: anyio's pytest plugin runs each async test on both backends."""

from __future__ import annotations

import sniffio


async def test_runs_on_the_requested_backend(anyio_backend: str) -> None:
    """Each async test really runs under the backend it is parametrized with."""
    assert anyio_backend == sniffio.current_async_library()
