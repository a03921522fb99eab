"""
How ``mesh run`` and ``mesh resume`` show a run as it goes: a live view, lines, or nothing.

Each view follows the ledger through ``on_event``, which only folds the event
into a `LiveState` (and, for lines, prints one): the engine's task never
waits for a terminal, and an event costs the same however many units are in
flight. The live view is drawn by rich's own refresh thread, at most
`REFRESHES_PER_SECOND` times a second, from a snapshot of the current state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Final, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..contracts._errors import OptionError
from ..contracts._events import LedgerEvent
from ._live_state import LiveState, RunPhase, clock_text, event_line

__all__ = [
    "REFRESHES_PER_SECOND",
    "VIEWS",
    "LineView",
    "LiveView",
    "QuietView",
    "RunView",
    "open_view",
    "render",
]

REFRESHES_PER_SECOND: Final = 4
VIEWS: Final = ("auto", "live", "lines", "quiet")
"""``--view``: live on a terminal and lines elsewhere (auto), or one of them always."""
_ROWS_SHOWN: Final = 15
"""Units in flight listed; the others are counted."""
_ID_WIDTH: Final = 24
"""Columns of a unit id or failure code; longer ones end in an ellipsis."""


class RunView(Protocol):
    """**Protocol:** what `mesh run` shows while it runs."""

    def on_event(self, event: LedgerEvent) -> None:
        """Follow one ledger event (called in the engine's task: quick, never raising)."""

    def shown(self) -> contextlib.AbstractContextManager[object]:
        """Show the run for the length of a ``with`` block."""

    def abandon(self) -> None:
        """The process ends at once (a second SIGTERM): leave the terminal usable."""

    def say(self, line: str) -> None:
        """Tell one line that is no ledger event (what became of a saved plan change)."""


def _header(state: LiveState, now: float) -> Text:
    elapsed = clock_text(now - state.started_at) if state.started_at is not None else "0:00"
    verb = "mesh resume" if state.resumed else "mesh run"
    phase = state.phase.value
    header = Text.assemble((verb, "bold"), " ", state.run_id, "  ", (phase, "bold"))
    if state.phase in {RunPhase.CANCELLED, RunPhase.FAILED}:
        header.append(f": {state.reason}", "red")
    header.append(f"  {elapsed}")
    return header


def _concurrency(state: LiveState) -> Text:
    limit = "?" if state.limit is None else str(state.limit)
    target = "?" if state.target is None else str(state.target)
    line = Text.assemble("concurrency: limit ", (limit, "bold"), " of target ", target)
    details = ", ".join(part for part in (state.budget_mode, state.concurrency_reason) if part)
    if details:
        line.append(f" ({details})")
    return line


def _counts(state: LiveState) -> Text:
    waiting = state.waiting
    parts: list[tuple[str, str]] = [
        (f"{state.completed} completed", "green"),
        (f"{state.failed} failed", "red" if state.failed else ""),
        (f"{state.blocked} blocked", "yellow" if state.blocked else ""),
        (f"{len(state.in_flight)} in flight", "cyan"),
    ]
    if waiting is not None:
        parts.append((f"{waiting} ready or waiting", ""))
    if state.earlier:
        parts.append((f"{state.earlier} ended before the resume", ""))
    line = Text()
    for index, (words, style) in enumerate(parts):
        line.append(" · " if index else "")
        line.append(words, style)
    if state.total is not None:
        line.append(f"  (of {state.total})")
    return line


def _in_flight(state: LiveState, now: float) -> RenderableType:
    table = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    table.add_column("unit", no_wrap=True, max_width=_ID_WIDTH)
    table.add_column("objective", no_wrap=True, ratio=1)
    table.add_column("stage", no_wrap=True, style="cyan", min_width=len("adjudication"))
    table.add_column("attempt", no_wrap=True, justify="right", min_width=len("attempt"))
    table.add_column("elapsed", no_wrap=True, justify="right", min_width=len("elapsed"))
    for unit_id, unit in itertools.islice(state.in_flight.items(), _ROWS_SHOWN):
        table.add_row(
            Text(unit.label),
            Text(state.objective(unit_id)),
            Text(unit.stage.value),
            Text(str(unit.attempt)),
            Text(clock_text(now - unit.started_at)),
        )
    if len(state.in_flight) > _ROWS_SHOWN:
        table.add_row(Text(f"… and {len(state.in_flight) - _ROWS_SHOWN} more"), "", "", "", "")
    return table


def _failures(state: LiveState) -> RenderableType:
    table = Table(
        box=None, pad_edge=False, expand=True, title="latest failures", title_justify="left"
    )
    table.add_column("unit", no_wrap=True, max_width=_ID_WIDTH, header_style="bold")
    table.add_column("state", no_wrap=True, header_style="bold", min_width=7)
    table.add_column("code", no_wrap=True, max_width=_ID_WIDTH, header_style="bold")
    table.add_column("evidence", no_wrap=True, ratio=1, header_style="bold")
    for failure in reversed(state.failures):
        table.add_row(
            Text(failure.label),
            Text(failure.state, "red" if failure.state == "failed" else "yellow"),
            Text(failure.code),
            Text(failure.evidence),
        )
    return table


def render(state: LiveState, now: float) -> Group:
    """
    The live view of ``state`` at run clock time ``now``: no I/O.

    Every text from the plan or an adapter goes in as `rich.text.Text`, never
    as markup, and is already one bounded line (see `LiveState`).
    """
    parts: list[RenderableType] = [_header(state, now), _concurrency(state), _counts(state)]
    if state.in_flight:
        parts += [Text(), _in_flight(state, now)]
    if state.failures:
        parts += [Text(), _failures(state)]
    return Group(*parts)


class LiveView:
    """A live picture of the run on a terminal, redrawn a few times a second."""

    def __init__(
        self,
        console: Console,
        objectives: Mapping[str, str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.state = LiveState.of_plan(objectives)
        # Events are folded in the engine's thread, the picture drawn in rich's: one at a time.
        self._lock = threading.Lock()
        self._monotonic = monotonic
        # The run's clock is not this process's: "now" is the latest event's time
        # moved on by how long ago, on this process's clock, it came.
        self._clock = (0.0, monotonic())

    def on_event(self, event: LedgerEvent) -> None:
        """Fold the event in; the refresh thread draws it."""
        with self._lock:
            self.state.apply(event)
            self._clock = (event.at, self._monotonic())

    def renderable(self) -> Group:
        """The current state at the run clock's time now (drawn from a copy of it)."""
        with self._lock:
            state, (at, seen) = self.state.snapshot(), self._clock
        return render(state, at + self._monotonic() - seen)

    @contextlib.contextmanager
    def shown(self) -> Iterator[LiveView]:
        """
        Draw the view for the length of a ``with`` block, then leave its last picture.

        What the run prints to stderr meanwhile is printed above the view; stdout
        is not touched (it may be a file the report goes to).
        """
        live = Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=REFRESHES_PER_SECOND,
            redirect_stdout=False,
        )
        live.start()
        try:
            yield self
        finally:
            # A run refused before its first event leaves no empty picture above the error.
            live.transient = self.state.phase is RunPhase.STARTING
            # A terminal closed under the run (SIGHUP) takes no last picture: what stopped
            # the run is the error to tell, not that the picture could not be drawn.
            with contextlib.suppress(OSError):
                live.stop()

    def say(self, line: str) -> None:
        """Print the line above the picture (as plain text: never markup)."""
        with contextlib.suppress(OSError):
            self.console.print(Text(line))

    def abandon(self) -> None:
        """Give the cursor back, on a line of its own, straight to the terminal (no lock)."""
        if self.console.is_terminal:
            with contextlib.suppress(OSError, ValueError):  # no file descriptor, or a closed one
                os.write(self.console.file.fileno(), b"\x1b[?25h\n")


def _write(stream: IO[str], line: str) -> None:
    # Encoded here: the stream's encoding must not decide whether a line can be written.
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(line)
    else:
        stream.flush()
        buffer.write(line.encode("utf-8", "backslashreplace"))
    stream.flush()


class LineView:
    """One plain line per event worth a line, flushed at once: for logs and pipes."""

    def __init__(self, stream: IO[str], objectives: Mapping[str, str]) -> None:
        self.stream: IO[str] | None = stream
        self.state = LiveState.of_plan(objectives)

    def on_event(self, event: LedgerEvent) -> None:
        """Fold the event in, and print its line if it has one."""
        self.state.apply(event)
        if (line := event_line(self.state, event)) is not None:
            self.say(line)

    def say(self, line: str) -> None:
        """Print one line, flushed."""
        if self.stream is None:
            return
        try:
            _write(self.stream, line + "\n")
        except OSError:
            # The reader went away (`mesh run 2>&1 | head`): the run goes on, unseen.
            self.stream = None

    def shown(self) -> contextlib.AbstractContextManager[object]:
        """Lines need no setting up."""
        return contextlib.nullcontext(self)

    def abandon(self) -> None:
        """Each line is already written whole: nothing to leave."""


class QuietView:
    """Shows nothing."""

    def on_event(self, event: LedgerEvent) -> None:
        """Ignore the event."""

    def shown(self) -> contextlib.AbstractContextManager[object]:
        """Nothing to set up."""
        return contextlib.nullcontext(self)

    def abandon(self) -> None:
        """Nothing shown, nothing to leave."""

    def say(self, line: str) -> None:
        """Say nothing."""


def open_view(view: str, console: Console | None, objectives: Mapping[str, str]) -> RunView:
    """
    The view ``--view`` asks for: ``auto`` is live when the console is a terminal, else lines.

    Without a console the view goes to stderr; ``live`` draws there even when
    it is not a terminal.
    """
    if view not in VIEWS:
        expected = ", ".join(VIEWS)
        raise OptionError("InvalidOptionValue", f"--view expects one of {expected}, got {view!r}")
    if view == "quiet":
        return QuietView()
    if console is None:
        console = Console(stderr=True, force_terminal=True if view == "live" else None)
    if view == "lines" or (view == "auto" and not console.is_terminal):
        return LineView(console.file, objectives)
    return LiveView(console, objectives)
