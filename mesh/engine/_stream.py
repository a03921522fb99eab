"""
A run's events as they happen: `EventStream`, read with ``async for`` or ``for``.

The engine hands each event to every open stream and never waits for a
reader: a stream holds at most ``buffer`` events, and a reader that falls
further behind loses the oldest ones (counted in `EventStream.missed`, and
visible as a jump in ``seq``). The run's own ledger sinks, its store among
them, are written before any stream sees the event, so a slow or abandoned
reader never slows or loses the ledger.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Final, final

import anyio

from ..contracts._errors import InputError, MeshError
from ..contracts._events import LedgerEvent

__all__ = ["DEFAULT_BUFFER", "EventStream", "StreamHub"]

DEFAULT_BUFFER: Final = 10_000
"""Events a stream holds for its reader before it drops the oldest."""


@final
class EventStream:
    """
    The events of a run, in order, as they happen.

    Iterate it with ``async for`` in the run's own event loop, or with ``for``
    from another thread (a notebook reading a run `mesh.start` started). The
    iteration ends when the run ends, however it ends (its last event is
    ``run_finished``, ``run_failed`` or ``run_cancelled``).

    The engine never waits for a reader: a stream holds at most ``buffer``
    events, and when its reader falls further behind the oldest are dropped,
    counted in `missed` (the ``seq`` of the events read jumps there). The
    run's ledger and its store lose nothing either way.

    .. versionadded:: 0.2.0
    """

    def __init__(self, *, buffer: int = DEFAULT_BUFFER, engine_thread: int | None = None) -> None:
        self._buffer = _checked_buffer(buffer)
        self._engine_thread = engine_thread
        self._events: collections.deque[LedgerEvent] = collections.deque()
        self._closed = False
        self._missed = 0
        # The engine may run in another thread than the reader (`mesh.start`).
        self._lock = threading.Condition()
        self._wake: anyio.Event | None = None

    @property
    def missed(self) -> int:
        """Events dropped because the reader was ``buffer`` events behind."""
        return self._missed

    @property
    def closed(self) -> bool:
        """Whether the run ended: the events still held are all that will come."""
        return self._closed

    def push(self, event: LedgerEvent) -> None:
        """Hand the stream one event (the engine's side; never blocks)."""
        with self._lock:
            if len(self._events) >= self._buffer:
                self._events.popleft()
                self._missed += 1
            self._events.append(event)
            self._lock.notify_all()
        self._alert()

    def close(self) -> None:
        """The run ended: the reader gets what is held, then the iteration ends."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._alert()

    def _alert(self) -> None:
        with self._lock:
            wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> LedgerEvent:
        # A method, not an async generator: a reader that stops early leaves nothing
        # suspended behind for the garbage collector to finish.
        if self._engine_thread is not None and threading.get_ident() != self._engine_thread:
            # Its wake-up would be set from the engine's loop, which cannot wake this one.
            raise MeshError(
                "this run's events are produced by an event loop in another thread: "
                "read them with a plain `for` (in a worker thread, from async code)",
                hint="or start the run in this loop with mesh.start_async(...)",
            )
        while True:
            with self._lock:
                if self._events:
                    return self._events.popleft()
                if self._closed:
                    raise StopAsyncIteration
                # Every reader waiting now shares one wake-up: the next event wakes them all.
                if self._wake is None:
                    self._wake = anyio.Event()
                wake = self._wake
            await wake.wait()

    def resize(self, buffer: int) -> None:
        """Hold at most ``buffer`` events from now on (the oldest beyond it are dropped)."""
        checked = _checked_buffer(buffer)
        with self._lock:
            self._buffer = checked
            while len(self._events) > checked:
                self._events.popleft()
                self._missed += 1

    def __iter__(self) -> Iterator[LedgerEvent]:
        if threading.get_ident() == self._engine_thread:
            # Waiting here would stop the very loop that runs the engine.
            raise MeshError(
                "this run's events are produced in this thread: read them with `async for`",
                hint="or start the run with mesh.start(...) and iterate its events() with `for`",
            )
        while True:
            with self._lock:
                while not self._events and not self._closed:
                    self._lock.wait()
                if not self._events:
                    return
                event = self._events.popleft()
            yield event


def _checked_buffer(buffer: object) -> int:
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise InputError(f"buffer must be a whole number >= 1, got {buffer!r}")
    return buffer


@final
class StreamHub:
    """The run's sink that hands each event to the streams open at that moment."""

    def __init__(self) -> None:
        self.streams: list[EventStream] = []

    def open(self, buffer: int) -> EventStream:
        """A new stream; opened in the engine's own thread (an orchestrator is loop-bound)."""
        stream = EventStream(buffer=buffer, engine_thread=threading.get_ident())
        self.streams.append(stream)
        return stream

    def emit(self, event: LedgerEvent) -> None:
        for stream in self.streams:
            stream.push(event)

    def close_all(self) -> None:
        streams, self.streams = self.streams, []
        for stream in streams:
            stream.close()
