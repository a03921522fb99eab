"""
The budget from Codex's own rate-limit account.

Every answer of OpenAI's Codex backend carries the account's rate-limit windows
(``x-codex-primary-used-percent`` and the rest: the 5-hour window, and the weekly
one as "secondary"), and Codex CLI writes them into its session files
(``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl``) as the ``rate_limits`` of
each ``token_count`` event::

    {"timestamp": "...", "type": "event_msg", "payload": {"type": "token_count",
     "info": {...}, "rate_limits": {"limit_id": "codex",
       "primary": {"used_percent": 40.0, "window_minutes": 300, "resets_at": 1796680047},
       "secondary": {"used_percent": 70.0, "window_minutes": 10080, "resets_at": ...}}}}

`codex_budget` reads the newest of them, each time the engine asks, and turns them
into a `BudgetDecision` with `budget_policy`. Reading (`codex_limits`) is kept apart
from the pure parsing (`parse_limits`) and arithmetic (`CodexLimits.remaining`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio.to_thread
import attrs

from ..contracts._records import BudgetDecision
from ..planning._budget import budget_policy

if TYPE_CHECKING:
    from ..engine._scheduler import BudgetProvider

__all__ = [
    "CodexLimits",
    "CodexWindow",
    "codex_budget",
    "codex_home",
    "codex_limits",
    "parse_limits",
]

# Only the end of a session file is read: the newest events are there, and a
# long session's file can be large.
_TAIL_BYTES: Final = 1024 * 1024
# How far a session file's time may run ahead of the clock (clocks differ a little).
_CLOCK_SLACK: Final = 300.0
# How many of the newest session files are searched for a token_count event.
_FILES_SEARCHED: Final = 32


@attrs.frozen(kw_only=True)
class CodexWindow:
    """
    One rate-limit window: how much of it is used, how long it is, when it resets.

    .. versionadded:: 0.1.0
    """

    used_percent: float
    window_minutes: int | None = None
    resets_at: float | None = None
    """Unix time (seconds) at which the window resets, if known."""

    def remaining(self, *, now: float, seen_at: float | None) -> float:
        """Percent left at ``now``: all of it once the window has reset since it was seen."""
        if self.resets_at is not None:
            if self.resets_at <= now:
                return 100.0
        elif (
            seen_at is not None
            and self.window_minutes is not None
            and seen_at + self.window_minutes * 60 <= now
        ):
            return 100.0
        return min(100.0, max(0.0, 100.0 - self.used_percent))


@attrs.frozen(kw_only=True)
class CodexLimits:
    """
    Codex's rate-limit windows as last recorded: primary (5 hours), secondary (weekly).

    .. versionadded:: 0.1.0
    """

    primary: CodexWindow | None = None
    secondary: CodexWindow | None = None
    seen_at: float | None = None
    """Unix time of the event that recorded them, if known."""

    def remaining(self, *, now: float) -> tuple[float, float]:
        """Percent left of the 5-hour and of the weekly window (100 where unknown or reset)."""

        def left(window: CodexWindow | None) -> float:
            return 100.0 if window is None else window.remaining(now=now, seen_at=self.seen_at)

        return left(self.primary), left(self.secondary)


def codex_home(env: Mapping[str, str]) -> Path:
    """Codex's folder: ``$CODEX_HOME``, else ``~/.codex``."""
    return Path(env.get("CODEX_HOME") or Path.home() / ".codex")


def parse_limits(lines: Iterable[str]) -> CodexLimits | None:
    """
    The rate limits of the last ``token_count`` event that has any, in a session file's lines.

    Lines that are not such events, or whose fields have the wrong types, are
    skipped. A window's reset time is ``resets_at`` (Unix seconds), or
    ``resets_in_seconds`` after the event (as older Codex versions wrote it).

    .. versionadded:: 0.1.0
    """
    found: CodexLimits | None = None
    for line in lines:
        limits = _limits_of(line)
        if limits is not None:
            found = limits
    return found


def _limits_of(line: str) -> CodexLimits | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    payload = event.get("payload")
    if not isinstance(payload, dict) or payload.get("type") != "token_count":
        return None
    limits = payload.get("rate_limits")
    if not isinstance(limits, dict):
        return None
    seen_at = _timestamp(event.get("timestamp"))
    primary = _window(limits.get("primary"), seen_at)
    secondary = _window(limits.get("secondary"), seen_at)
    if primary is None and secondary is None:
        return None
    return CodexLimits(primary=primary, secondary=secondary, seen_at=seen_at)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _window(value: object, seen_at: float | None) -> CodexWindow | None:
    if not isinstance(value, dict):
        return None
    used = _number(value.get("used_percent"))
    if used is None:
        return None
    minutes = value.get("window_minutes")
    resets_at = _number(value.get("resets_at"))
    later = _number(value.get("resets_in_seconds"))
    if resets_at is None and later is not None and seen_at is not None:
        resets_at = seen_at + later
    return CodexWindow(
        used_percent=used,
        window_minutes=minutes
        if isinstance(minutes, int) and not isinstance(minutes, bool)
        else None,
        resets_at=resets_at,
    )


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        # Codex writes UTC with a "Z"; fromisoformat reads that from Python 3.11.
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _tail(path: Path) -> list[str]:
    """The whole lines at the end of a file (up to ``_TAIL_BYTES``); none if it cannot be read."""
    try:
        with path.open("rb") as stream:
            size = stream.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            stream.seek(start)
            data = stream.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if start else lines  # the first line was cut


def _newest_sessions(home: Path, now: float) -> list[Path]:
    found = []
    for path in (home / "sessions").glob("*/*/*/rollout-*.jsonl"):
        try:
            written = path.stat().st_mtime
        except OSError:  # removed since the listing
            continue
        # A file dated in the future would stay "newest" for good: Codex never wrote it.
        if written <= now + _CLOCK_SLACK:
            found.append((written, path))
    found.sort(reverse=True)
    return [path for _, path in found[:_FILES_SEARCHED]]


def codex_limits(
    home: str | os.PathLike[str] | None = None, *, now: float | None = None
) -> CodexLimits | None:
    """
    Codex's newest recorded rate limits, from its session files; None if there are none.

    ``home`` is Codex's folder (default ``$CODEX_HOME`` or ``~/.codex``). A
    missing folder, unreadable or junk files count as no record; files dated
    after ``now`` (default: the current time) are passed over.

    .. versionadded:: 0.1.0
    """
    folder = Path(home) if home is not None else codex_home(os.environ)
    for path in _newest_sessions(folder, time.time() if now is None else now):
        limits = parse_limits(_tail(path))
        if limits is not None:
            return limits
    return None


def codex_budget(
    home: str | os.PathLike[str] | None = None,
    *,
    max_threads: int = 12,
    clock: Callable[[], float] = time.time,
) -> BudgetProvider:
    """
    A budget provider that follows Codex's own 5-hour and weekly rate-limit windows.

    Pass it as ``mesh.run(..., budget=codex_budget())`` (or ``--budget-from-agent``):
    the engine reads it at the start and again during the run, and each read
    takes the newest windows Codex recorded in its session files (the coders'
    own runs keep them fresh) through `budget_policy`. Windows never recorded,
    or reset since (their reset time has passed), count as fully remaining.

    Args:
        home: Codex's folder (default ``$CODEX_HOME`` or ``~/.codex``).
        max_threads: Upper bound on active units.
        clock: Unix time now (for tests).

    .. versionadded:: 0.1.0
    """
    folder = None if home is None else Path(home)

    async def provider() -> BudgetDecision:
        limits = await anyio.to_thread.run_sync(
            functools.partial(codex_limits, folder, now=clock())
        )
        five_hour, weekly = (100.0, 100.0) if limits is None else limits.remaining(now=clock())
        return budget_policy(
            remaining_five_hour=five_hour, remaining_weekly=weekly, max_threads=max_threads
        )

    return provider
