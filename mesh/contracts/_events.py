"""
Ledger events and their sinks.

Every transition and adapter call becomes one `LedgerEvent`, produced through a
structlog logger that mesh builds with ``structlog.wrap_logger`` around its own
sink fan-out. mesh never calls ``structlog.configure()``: the host's logging
stays the host's. `StructlogSink` forwards events into the host's structlog
configuration when wanted.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, Self, runtime_checkable

import attrs
import structlog

from ._enums import Lane
from ._errors import FileAccessError

__all__ = [
    "CallbackSink",
    "JsonLinesSink",
    "LedgerEvent",
    "LedgerSink",
    "MemorySink",
    "StructlogSink",
    "capture_sinks",
]


@attrs.frozen(kw_only=True)
class LedgerEvent:
    """
    One thing that happened in a run.

    .. versionadded:: 0.1.0
    """

    event: str
    """Stable snake_case name, e.g. ``unit_transition`` or ``adapter_call``."""
    run_id: str
    seq: int
    """Position in the run's event stream, from 1."""
    at: float
    """Clock time when it happened (seconds, the run's clock)."""
    unit_id: str | None = None
    candidate_id: str | None = None
    lane: Lane | None = None
    attempt: int | None = None
    duration_ms: float | None = None
    """How long the call took, for adapter calls."""
    data: Mapping[str, object] = attrs.field(factory=dict, hash=False)
    """Event-specific fields (JSON values)."""

    def to_document(self) -> dict[str, object]:
        """The event as a JSON object (absent fields left out)."""
        document: dict[str, object] = {
            "event": self.event,
            "run_id": self.run_id,
            "seq": self.seq,
            "at": self.at,
        }
        for name in ("unit_id", "candidate_id", "lane", "attempt", "duration_ms"):
            value = getattr(self, name)
            if value is not None:
                document[name] = value.value if isinstance(value, Lane) else value
        if self.data:
            document["data"] = dict(self.data)
        return document


# JSON escapes every C0 control character, but with ensure_ascii=False it writes
# NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR raw, and str.splitlines() (and
# editors, and JavaScript before ES2019) break lines there; a lone surrogate
# cannot be written as UTF-8 at all. Escaped, each is still the same JSON string.
_RAW_IN_JSON: Final = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def _json_escape(found: re.Match[str]) -> str:
    return f"\\u{ord(found.group()):04x}"


def json_line(document: Mapping[str, object]) -> str:
    r"""
    A JSON document as exactly one line (newline included), for any line reader.

    The text is ``json.dumps(document, ensure_ascii=False)``, except that
    U+0085, U+2028, U+2029 and lone surrogates are written as ``\uXXXX``
    escapes.
    """
    text = json.dumps(document, ensure_ascii=False)
    if not text.isascii():
        text = _RAW_IN_JSON.sub(_json_escape, text)
    return text + "\n"


def ledger_text(events: Iterable[LedgerEvent]) -> str:
    """The JSON-lines ledger of ``events``: one `json_line` per event, as `JsonLinesSink` writes."""
    return "".join(json_line(event.to_document()) for event in events)


@runtime_checkable
class LedgerSink(Protocol):
    """
    **Protocol:** receives every ledger event of a run, in order.

    ``emit`` is called in the scheduler's task and must not block for long.

    .. versionadded:: 0.1.0
    """

    def emit(self, event: LedgerEvent) -> None:
        """Take one event."""


@attrs.define(eq=False)
class MemorySink:
    """
    Keeps every event in ``events``.

    .. versionadded:: 0.1.0
    """

    events: list[LedgerEvent] = attrs.Factory(list)

    def emit(self, event: LedgerEvent) -> None:
        """Append the event."""
        self.events.append(event)


class JsonLinesSink:
    """
    Appends each event as one JSON line to a file (created with its folders).

    Lines are flushed as they are written, so a crash loses at most the line
    being written. Use as a context manager, or call `close`.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise FileAccessError(f"cannot open ledger {self.path}: {exc.strerror}") from None

    def emit(self, event: LedgerEvent) -> None:
        """Write the event as one line."""
        self._stream.write(json_line(event.to_document()))
        self._stream.flush()

    def close(self) -> None:
        """Close the file."""
        self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@attrs.define(eq=False)
class CallbackSink:
    """
    Calls ``callback(event)`` for each event: progress bars, notebooks, dashboards.

    .. versionadded:: 0.1.0
    """

    callback: Callable[[LedgerEvent], object]

    def emit(self, event: LedgerEvent) -> None:
        """Hand the event to the callback."""
        self.callback(event)


@attrs.define(eq=False)
class StructlogSink:
    """
    Forwards events to a structlog logger configured by the host application.

    .. versionadded:: 0.1.0
    """

    logger: Any = attrs.field(factory=lambda: structlog.get_logger("mesh"))

    def emit(self, event: LedgerEvent) -> None:
        """Log the event with its fields as key/values."""
        document = event.to_document()
        name = document.pop("event")
        self.logger.info(name, **document)


_CAPTURE: Final[contextvars.ContextVar[tuple[LedgerSink, ...]]] = contextvars.ContextVar(
    "mesh_capture_sinks", default=()
)


@contextlib.contextmanager
def capture_sinks(sink: LedgerSink) -> Iterator[LedgerSink]:
    """Add ``sink`` to every run started in this context (used by ``mesh.testing``)."""
    token = _CAPTURE.set((*_CAPTURE.get(), sink))
    try:
        yield sink
    finally:
        _CAPTURE.reset(token)


_NO_KEYWORDS: Final[dict[str, Any]] = {}
"""What the ledger's processor hands the fan-out besides the event: nothing (never changed)."""


class _Fanout:
    """The structlog 'logger' at the end of mesh's private pipeline."""

    def __init__(self, sinks: Sequence[LedgerSink]) -> None:
        self.sinks = tuple(sinks)

    def info(self, event: LedgerEvent) -> None:
        failed: Exception | None = None
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # noqa: BLE001 - raised once every other sink has it
                failed = failed or exc
        if failed is not None:
            # A sink that raises (a host's) must not cost the store, the ledger file or
            # the run's readers the event: they all have it before the error goes on.
            raise failed


class _LedgerLogger(structlog.BoundLoggerBase):
    """
    The ledger's structlog logger: one method, taking the event's fields as a dict.

    An event runs through the logger's processors into the ledger's fan-out, as
    structlog's `_process_event` runs them, minus what this logger never needs:
    it has no bound context to merge (so the fields dict, the ledger's own, is
    the event dict), and its last processor always returns positional arguments.
    """

    def record(self, event: str, fields: dict[str, Any]) -> None:
        fields["event"] = event
        processed: Any = fields
        logger = self._logger
        for processor in self._processors:
            processed = processor(logger, "info", processed)
        args, _ = processed
        logger.info(*args)


class Ledger:
    """Builds events with sequence numbers and sends them to the run's sinks."""

    def __init__(
        self,
        *,
        run_id: str,
        sinks: Sequence[LedgerSink],
        now: Callable[[], float],
        first_seq: int = 1,
    ) -> None:
        self.run_id = run_id
        self._now = now
        self._seq = first_seq - 1
        fanout = _Fanout((*sinks, *_CAPTURE.get()))
        # Bound once: the lazy proxy wrap_logger returns would build a logger per event.
        self._log: _LedgerLogger = structlog.wrap_logger(
            fanout,
            processors=[self._to_event],
            wrapper_class=_LedgerLogger,
            context_class=dict,
        ).bind()
        self._record = self._log.record
        # Events a sink emits while an event is being handed out (a callback that changes
        # the plan): they wait their turn, so every sink sees the events in their order.
        self._emitting = False
        self._waiting: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()

    def _to_event(
        self, _: object, __: str, fields: MutableMapping[str, Any]
    ) -> tuple[tuple[LedgerEvent], dict[str, Any]]:
        self._seq += 1
        pop = fields.pop
        event = LedgerEvent(
            event=pop("event"),
            run_id=self.run_id,
            seq=self._seq,
            at=self._now(),
            unit_id=pop("unit_id", None),
            candidate_id=pop("candidate_id", None),
            lane=pop("lane", None),
            attempt=pop("attempt", None),
            duration_ms=pop("duration_ms", None),
            data=fields,
        )
        return (event,), _NO_KEYWORDS

    def emit_fields(self, event: str, fields: dict[str, Any]) -> None:
        """`emit` with the fields already in a dict of their own (the dict is consumed)."""
        self._waiting.append((event, fields))
        if self._emitting:
            return
        self._emitting = True
        failed: Exception | None = None
        try:
            while self._waiting:
                try:
                    self._record(*self._waiting.popleft())
                except Exception as exc:  # noqa: BLE001 - raised once the waiting ones are out
                    failed = failed or exc
        finally:
            self._emitting = False
        if failed is not None:
            raise failed

    def emit(self, event: str, **fields: object) -> None:
        """Record one event (``unit_id``, ``lane``... as keywords; the rest is data)."""
        self.emit_fields(event, fields)
