"""``mesh run --watch-plan``: the plan file, read again whenever it is saved, changes the run."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import anyio

from ..contracts._convert import loads_json
from ..contracts._errors import MeshError
from ..contracts._files import read_text
from ..contracts._text import one_line
from ..engine._plan_change import describe
from ..engine._scheduler import Orchestrator, told_of_orchestrators

__all__ = ["POLL_SECONDS", "watching_plan"]

POLL_SECONDS: Final = 0.5
"""How often the plan file is looked at (its size and modification time)."""

T = TypeVar("T")


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        found = path.stat()
    except OSError:
        return None  # being replaced, or gone for now: looked at again next time
    # The inode and change time too: a file copied in with its old time and size (`cp -p`,
    # a rename over it, a symlink switched) is still a save.
    return (found.st_ino, found.st_dev, found.st_ctime_ns, found.st_mtime_ns, found.st_size)


async def watching_plan(
    start: Callable[[], Awaitable[T]], plan: str | os.PathLike[str], say: Callable[[str], None]
) -> T:
    """
    Await ``start()`` (a run), applying each saved change of ``plan`` to it.

    Every change is the whole plan again (`Orchestrator.update_plan`); what it
    did, or why it was refused (unreadable JSON, a malformed plan, an edit of a
    unit that started), is told to ``say`` in one line, and the run goes on.
    """
    path = Path(plan)
    engines: list[Orchestrator] = []
    seen = _signature(path)

    async def watch() -> None:
        nonlocal seen
        while True:
            await anyio.sleep(POLL_SECONDS)
            now = _signature(path)
            if now is None or now == seen or not engines or not engines[0].plan_changeable:
                continue  # nothing new, or nothing to change yet: looked at again
            seen = now
            say(_applied(engines[0], path))

    with told_of_orchestrators(engines.append):
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            result = await start()
            group.cancel_scope.cancel()
    return result


def _applied(engine: Orchestrator, path: Path) -> str:
    try:
        document = loads_json(read_text(path, what="plan"), subject="plan")
        change = engine.update_plan(document)
    except MeshError as refused:
        return f"plan change refused: {one_line(str(refused), 400)}"
    return f"plan changed: {describe(change)}"
