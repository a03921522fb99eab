"""
Who owns a run: one process at a time, for as long as it lives.

The owner holds an exclusive OS lock (``flock``) on ``run.owner`` beside the run
store. The kernel lets go of it when the process ends, however it ends (kill -9
included), so a second owner is refused at once while the first lives and never
after it died. The file also says who the owner is (process, host, since when),
for the refusal, and holds a token that every process mesh starts carries in its
environment (``MESH_RUN_OWNER``): the next owner finds what a dead owner left
running by that token, and ends it before it touches the repository.

Git's own lock files (``index.lock``, ``refs/heads/B.lock``) say nothing about
their writer; one is stale when no live process holds it open (`stale_locks`).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, Self

import anyio
import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import MeshError
from ..contracts._text import one_line

__all__ = [
    "OWNER_FILE",
    "OWNER_VARIABLE",
    "OwnerRecord",
    "RunOwned",
    "RunOwnership",
    "end_leftovers",
    "owner_environment",
    "owning",
    "pid_alive",
    "process_state",
    "stale_locks",
]

OWNER_FILE: Final = "run.owner"
OWNER_VARIABLE: Final = "MESH_RUN_OWNER"
_PROC: Final = Path("/proc")
_current: contextvars.ContextVar[RunOwnership | None] = contextvars.ContextVar(
    "mesh_run_owner", default=None
)


class RunOwned(MeshError):
    """
    Another live process owns this run (``mesh run``/``mesh resume`` refuse at once).

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


@attrs.frozen(kw_only=True)
class OwnerRecord:
    """Who owns (or last owned) a run."""

    pid: int
    host: str
    started: float
    token: str
    inherited: tuple[str, ...] = ()
    """Tokens of earlier owners whose processes this one has not yet seen ended."""

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"process {self.pid} on {one_line(self.host)} since {since}"


_RECORD_WAIT: Final = 0.5
"""Seconds a refused process waits for the lock holder's record to name it."""


def _holder(descriptor: int) -> OwnerRecord | None:
    """
    The record of the process holding the owner lock, or None when it cannot be told.

    An owner writes its record just after taking the lock: refused in between, the
    file is empty or still names the dead owner before it. So the record is read
    again, briefly, until it names a live process (on this host; another host's
    record is taken as it is); it never names a dead one.
    """
    deadline = time.monotonic() + _RECORD_WAIT
    while True:
        owner = _read(_read_all(descriptor))
        if owner is not None and (owner.host != socket.gethostname() or pid_alive(owner.pid)):
            return owner
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def process_state(pid: int) -> str:
    """The process's state letter (``Z`` for a zombie), or "" where /proc cannot tell."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts; a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    # A zombie has exited; only its parent has not collected it yet.
    return process_state(pid) != "Z"


def _read(text: str) -> OwnerRecord | None:
    try:
        document = json.loads(text)
        return OwnerRecord(
            pid=int(document["pid"]),
            host=str(document["host"]),
            started=float(document["started"]),
            token=str(document["token"]),
            inherited=tuple(map(str, document.get("inherited", ()))),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # written halfway by an owner that died: nobody to name


def owner_environment() -> dict[str, str]:
    """The variables every process mesh starts for the current run's owner carries."""
    owned = _current.get()
    return {OWNER_VARIABLE: owned.record.token} if owned is not None else {}


@contextlib.contextmanager
def owning(folder: str | os.PathLike[str]) -> Iterator[RunOwnership]:
    """
    Own the run in ``folder`` for the block.

    `RunOwnership.acquire`, or the ownership this context already holds of that
    folder (a command that owns it calls the library, which takes it again).
    """
    held = _current.get()
    if held is not None and held.folder == Path(folder).resolve():
        yield held
        return
    with RunOwnership.acquire(folder) as owned:
        yield owned


class RunOwnership:
    """
    A process's ownership of the run in ``folder``; `acquire` it, then `release`.

    As a context manager it also marks every process started inside it with the
    owner's token (see `owner_environment`).
    """

    def __init__(
        self, folder: Path, descriptor: int, record: OwnerRecord, previous: OwnerRecord | None
    ) -> None:
        self.folder = folder
        self.record = record
        self.previous = previous
        """The owner before this one (dead by now), if it left its record."""
        self._descriptor: int | None = descriptor
        self._store: int | None = None
        self._reset: contextvars.Token[RunOwnership | None] | None = None

    @classmethod
    def acquire(cls, folder: str | os.PathLike[str]) -> Self:
        """Own the run in ``folder`` (made if missing), or raise `RunOwned` naming its owner."""
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            # Close-on-exec: a child must never keep the lock alive after its parent died.
            descriptor = os.open(path / OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MeshError(
                f"cannot own the run in {one_line(str(path))}: {exc.strerror}",
                code=FailureCode.TOOLING_UNAVAILABLE,
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _holder(descriptor)
            os.close(descriptor)
            who = owner.describe() if owner is not None else "another process"
            raise RunOwned(
                f"the run in {one_line(str(path))} is owned by {who}: wait for it to end, "
                "or stop it (`mesh status` works meanwhile)"
            ) from None
        previous = _read(_read_all(descriptor))
        # Until this owner has seen them ended, the processes of every earlier owner are
        # its charge: killed before it did, it hands them on to the next.
        inherited = (previous.token, *previous.inherited) if previous is not None else ()
        record = OwnerRecord(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.time(),
            token=secrets.token_hex(16),
            inherited=tuple(dict.fromkeys(inherited)),
        )
        _write(descriptor, record)
        return cls(path.resolve(), descriptor, record, previous)

    async def settle(self, *, grace: float = 5.0) -> list[int]:
        """
        End what earlier owners left running (see `end_leftovers`); their pids.

        Once none is left, this owner's record stops naming them.
        """
        ended = await end_leftovers(self.record.inherited, grace=grace)
        if self.record.inherited and self._descriptor is not None:
            self.record = attrs.evolve(self.record, inherited=())
            _write(self._descriptor, self.record)
        return ended

    def hold_store(self, store: Path) -> None:
        """
        Lock the run store too, for as long as this ownership lasts.

        The owner file can be deleted by hand while its lock is held, and a new
        one locked: the store cannot be replaced without losing the run.
        """
        try:
            descriptor = os.open(store, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no store: opening it says so
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunOwned(
                f"the run in {one_line(str(self.folder))} is owned by another process "
                f"(its store {one_line(store.name)} is locked): wait for it to end, or stop it"
            ) from None
        self._store = descriptor

    def release(self) -> None:
        """Let go (the record stays, naming the last owner)."""
        for descriptor in (self._store, self._descriptor):
            if descriptor is not None:
                os.close(descriptor)  # closing the only descriptor drops its lock
        self._store = self._descriptor = None

    def __enter__(self) -> Self:
        self._reset = _current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._reset is not None:
            _current.reset(self._reset)
            self._reset = None
        self.release()


def _write(descriptor: int, record: OwnerRecord) -> None:
    text = json.dumps(attrs.asdict(record)).encode()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, text, 0)


def _read_all(descriptor: int) -> str:
    return os.pread(descriptor, 1 << 16, 0).decode(errors="replace")


def _marked(tokens: Sequence[str]) -> list[int]:
    """Live processes (not this one) whose environment carries one of ``tokens``."""
    needles = {f"{OWNER_VARIABLE}={token}".encode() for token in tokens}
    found = []
    for entry in _processes(but=os.getpid()):
        with contextlib.suppress(OSError):
            if needles.intersection((entry / "environ").read_bytes().split(b"\0")):
                found.append(int(entry.name))
    return found


def _processes(*, but: int | None = None) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        for entry in _PROC.iterdir():
            if entry.name.isdigit() and entry.name != str(but):
                yield entry


def _signal_all(pids: Iterable[int], number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, number)


async def end_leftovers(tokens: Sequence[str], *, grace: float = 5.0) -> list[int]:
    """
    End every process started by dead owners (by their ``tokens``) still running; pids.

    SIGTERM first (git removes its own lock files then), SIGKILL after ``grace``
    seconds; returns once none is left. Nothing to do without /proc.
    """
    if not tokens:
        return []
    found = await anyio.to_thread.run_sync(_marked, tokens)
    if not found:
        return []
    _signal_all(found, signal.SIGTERM)
    deadline = anyio.current_time() + grace
    killed = False
    while alive := await anyio.to_thread.run_sync(_marked, tokens):
        if not killed and anyio.current_time() >= deadline:
            _signal_all(alive, signal.SIGKILL)
            killed = True
        await anyio.sleep(0.05)
    return found


def _open_files() -> set[Path]:
    """Every file some live process holds open, as far as /proc shows them."""
    found: set[Path] = set()
    for entry in _processes():
        with contextlib.suppress(OSError):
            for descriptor in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    found.add(descriptor.readlink())
    return found


def stale_locks(candidates: Sequence[Path]) -> list[Path]:
    """
    The lock files among ``candidates`` whose writer is gone: present, held open by no one.

    Without /proc nobody can tell: none is stale.
    """
    present = [path for path in candidates if path.exists()]
    if not present or not _PROC.is_dir():
        return []
    held = _open_files()
    return [path for path in present if path.resolve() not in held and path not in held]
