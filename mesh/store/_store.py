"""
The durable event store of a run: one SQLite file per run, named by the run id.

Every ledger event is appended (WAL mode, one writer). Commits are batched,
except that an event a restart must not miss commits at once: the start of a
delivery or of a call not safe to re-run (recorded before its side effect), a
stage's recorded results (candidates, proofs, a rework), a unit's end, the run's end.
With ``synchronous=NORMAL`` a commit survives the process being killed;
``synchronous="FULL"`` also survives power loss, at some speed.

Opening a store checks it: SQLite's own integrity check, the schema version,
and that event numbers have no gaps. A store that fails is a `StoreError`,
never a silently shorter history.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self

from ..contracts._enums import FailureCode, Lane
from ..contracts._errors import MeshError
from ..contracts._events import LedgerEvent, json_line

__all__ = ["STORE_FILE", "RunStore", "StoreError"]

STORE_FILE: Final = "run.sqlite"
SCHEMA_VERSION: Final = 1
_BARRIERS: Final = frozenset(
    {
        "call_started",
        "candidates_recorded",
        "proofs_recorded",
        "rework",
        "delivery_started",
        "unit_finished",
        "run_finished",
        "run_cancelled",
    }
)
_SCHEMA: Final = """
CREATE TABLE run (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    at REAL NOT NULL,
    unit_id TEXT,
    candidate_id TEXT,
    lane TEXT,
    attempt INTEGER,
    duration_ms REAL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_unit ON events (unit_id, seq);
"""


class StoreError(MeshError):
    """
    A run store is missing, unreadable, damaged or not a mesh store.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


# SQLite keeps what a column's type cannot convert (text in a REAL column, a blob
# anywhere), and a REAL may be infinite: each field is checked for what readers assume.
def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"its {name} is not text")
    return value


def _finite(value: object, name: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"its {name} is not a finite number")
    return float(value)


def _row_event(run_id: str, row: tuple[Any, ...]) -> LedgerEvent:
    seq, event, at, unit_id, candidate_id, lane, attempt, duration_ms, data = row
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise TypeError("its data is not a JSON object")
    if attempt is not None and type(attempt) is not int:
        raise TypeError("its attempt is not a whole number")
    return LedgerEvent(
        event=_text(event, "name"),
        run_id=run_id,
        seq=seq,
        at=_finite(at, "time"),
        unit_id=None if unit_id is None else _text(unit_id, "unit id"),
        candidate_id=None if candidate_id is None else _text(candidate_id, "candidate id"),
        lane=Lane(lane) if lane else None,
        attempt=attempt,
        duration_ms=None if duration_ms is None else _finite(duration_ms, "duration"),
        data=fields,
    )


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _closed_on_error(connection: sqlite3.Connection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        connection.close()
        raise


def _checked(connection: sqlite3.Connection, target: Path) -> tuple[str, str]:
    """The run id and configuration, once the store proved whole."""
    problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise StoreError(f"{target} is damaged: {'; '.join(problems[:3])}")
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version != SCHEMA_VERSION:
        raise StoreError(f"{target} is not a mesh run store (schema version {version})")
    found = connection.execute("SELECT run_id, config FROM run").fetchall()
    if len(found) != 1:
        raise StoreError(f"{target} is damaged: {len(found)} run records, not one")
    run_id, config = found[0]
    count, first, last = connection.execute(
        "SELECT COUNT(*), MIN(seq), MAX(seq) FROM events"
    ).fetchone()
    # Unique numbers from 1 up to their count: exactly 1..count, none missing or moved.
    if count != (last or 0):
        raise StoreError(f"{target} is missing events: {count} recorded, numbered up to {last}")
    if count and first != 1:
        raise StoreError(f"{target} is damaged: its events are numbered from {first}, not 1")
    return str(run_id), str(config)


def _config(text: str, target: Path) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"{target} is damaged: its configuration is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise StoreError(f"{target} is damaged: its configuration is not a JSON object")
    return config


class RunStore:
    """
    One run's configuration and events in SQLite; also a ledger sink.

    Create with `RunStore.create`, reopen with `RunStore.open`; use as a
    context manager or call `close`, which commits what is pending.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        run_id: str,
        config: Mapping[str, Any],
        *,
        batch_size: int,
    ) -> None:
        self._connection = connection
        self.path = path
        self.run_id = run_id
        self.config = config
        """What the run was started with (plan and options), as JSON values."""
        self.batch_size = batch_size
        self._pending: list[tuple[object, ...]] = []

    @staticmethod
    def _configure(connection: sqlite3.Connection, synchronous: str) -> None:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute("PRAGMA busy_timeout=5000")

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        run_id: str,
        config: Mapping[str, Any],
        batch_size: int = 64,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> Self:
        """A new store at ``path`` (which must not exist yet)."""
        target = Path(path)
        if target.exists():
            raise StoreError(f"{target}: a run store is already there")
        # Made whole under a private name, then linked into place: a kill at any moment
        # leaves either no store or a complete one, never half of one.
        draft = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.draft")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            writing = sqlite3.connect(draft, isolation_level=None)
            try:
                with writing:
                    writing.execute("BEGIN")
                    writing.executescript(_SCHEMA)
                    writing.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    writing.execute(
                        "INSERT INTO run (run_id, config) VALUES (?, ?)",
                        (run_id, json_line(config).removesuffix("\n")),
                    )
            finally:
                writing.close()
            _sync(draft)
            try:
                os.link(draft, target)
            except FileExistsError:
                raise StoreError(f"{target}: a run store is already there") from None
            _sync(target.parent)
            connection = sqlite3.connect(target, isolation_level=None)
            with _closed_on_error(connection):
                cls._configure(connection, synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot create the run store {target}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                draft.unlink(missing_ok=True)
        return cls(connection, target, run_id, config, batch_size=batch_size)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 64,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> Self:
        """Reopen a run's store, after checking that nothing in it is damaged or missing."""
        target = Path(path)
        if not target.is_file():
            raise StoreError(f"{target}: no run store there")
        try:
            connection = sqlite3.connect(target, isolation_level=None)
            with _closed_on_error(connection):
                cls._configure(connection, synchronous)
                run_id, config = _checked(connection, target)
        except sqlite3.Error as exc:
            raise StoreError(f"{target} is not a readable mesh run store: {exc}") from exc
        return cls(connection, target, run_id, _config(config, target), batch_size=batch_size)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------

    def emit(self, event: LedgerEvent) -> None:
        """Append one event (a ledger sink); events a restart needs are committed at once."""
        self._pending.append(
            (
                event.seq,
                event.event,
                event.at,
                event.unit_id,
                event.candidate_id,
                event.lane.value if event.lane else None,
                event.attempt,
                event.duration_ms,
                json_line(dict(event.data)).removesuffix("\n"),
            )
        )
        if event.event in _BARRIERS or len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Commit every pending event in one transaction."""
        if not self._pending:
            return
        try:
            with self._connection:
                self._connection.execute("BEGIN")
                self._connection.executemany(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._pending
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the run store {self.path}: {exc}") from exc
        self._pending.clear()

    def close(self) -> None:
        """Commit what is pending and close the file."""
        try:
            self.flush()
        finally:
            self._connection.close()

    # -- reading -----------------------------------------------------------------

    def events(self) -> Iterator[LedgerEvent]:
        """Every committed event, in order."""
        self.flush()
        cursor = self._connection.execute(
            "SELECT seq, event, at, unit_id, candidate_id, lane, attempt, duration_ms, data "
            "FROM events ORDER BY seq"
        )
        for row in cursor:
            try:
                yield _row_event(self.run_id, row)
            except (ValueError, TypeError, RecursionError) as exc:  # JSON, a lane, a type
                raise StoreError(f"{self.path} is damaged: event {row[0]}: {exc}") from None

    @property
    def last_seq(self) -> int:
        """The number of the last committed event (0 when there is none)."""
        self.flush()
        (last,) = self._connection.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(last)
