"""
SIGTERM and SIGHUP stop ``mesh run`` and ``mesh resume`` as Ctrl-C does.

``timeout 600 mesh run ...`` and a cancelled CI job send SIGTERM, a closed
terminal SIGHUP. The first one cancels the run with a reason naming the
signal (its store records ``run_cancelled``, `mesh resume` continues it);
the view stops and gives the cursor back, the command says how to continue
the run and exits with 128 + the signal's number. A second one, while the
run is stopping, ends the process at once.

During the run the signals are received in the event loop
(`anyio.open_signal_receiver`), which is woken for them whatever thread the
system hands them to. Before and after it, a handler raises `Stopped`, as
Ctrl-C raises `KeyboardInterrupt`. The handlers found are put back at the end;
a signal that was ignored (``nohup``) stays ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType, MappingProxyType
from typing import Final, TypeVar

import anyio
import anyio.abc

from ..engine._scheduler import Orchestrator, told_of_orchestrators

__all__ = ["SIGNALS", "SignalStop", "Stopped", "end_process"]

T = TypeVar("T")

SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP)
"""The signals that stop a run as Ctrl-C does."""
_WHAT: Final = MappingProxyType({signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"})


class Stopped(KeyboardInterrupt):
    """
    A run stopped by a signal: which one, and how to continue the run.

    A `KeyboardInterrupt`, as Ctrl-C's is: whoever catches that catches this.
    """

    def __init__(self, number: signal.Signals) -> None:
        super().__init__(number.name)
        self.signal = number
        self.resume_command: str | None = None
        """The command that continues the run (set by whoever knows where it is kept)."""

    @property
    def reason(self) -> str:
        """Why the run stopped, as its ``run_cancelled`` event says: ``terminated (SIGTERM)``."""
        return f"{_WHAT.get(self.signal, 'stopped')} ({self.signal.name})"

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a command the signal ended."""
        return 128 + self.signal


def end_process(number: signal.Signals) -> None:  # pragma: no cover - the process ends here
    """End this process as ``number`` does when nothing catches it."""
    signal.signal(number, signal.SIG_DFL)
    signal.raise_signal(number)
    os._exit(128 + number)  # should the signal not end it


class SignalStop:
    """
    Stop a run on SIGTERM or SIGHUP: `handled` around the event loop, `run` inside it.

    A second signal calls ``abandon``, which leaves the terminal usable (the
    cursor shown), then ``end``, which ends the process (`end_process`).
    """

    def __init__(
        self,
        abandon: Callable[[], None],
        *,
        end: Callable[[signal.Signals], None] = end_process,
    ) -> None:
        self.stopped: Stopped | None = None
        """The first signal caught, if one was."""
        self._abandon = abandon
        self._end = end
        self._signals: tuple[signal.Signals, ...] = ()
        self._orchestrator: Orchestrator | None = None

    @contextlib.contextmanager
    def handled(self) -> Iterator[None]:
        """
        Catch the signals for the length of a ``with`` block, then put back what was there.

        Only the main thread can: elsewhere the signals are left as they are.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.getsignal(number) for number in SIGNALS}
        self._signals = tuple(
            number for number, handler in previous.items() if handler != signal.SIG_IGN
        )
        self._catch()
        try:
            yield
        finally:
            for number in self._signals:
                # None: a handler not set from Python, which cannot be put back.
                signal.signal(number, previous[number] or signal.SIG_DFL)
            self._signals = ()

    async def run(self, main: Callable[[], Awaitable[T]]) -> T:
        """``main()``, cancelled by the first signal: `Stopped` is raised once it has stopped."""
        try:
            with told_of_orchestrators(self._attach):
                return await self._run(main)
        except BaseExceptionGroup as wrapped:
            # The watcher raises nothing: the task group wrapped what was raised, as it was.
            error = wrapped.exceptions[0]
            raise error from error.__cause__

    async def _run(self, main: Callable[[], Awaitable[T]]) -> T:
        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()
            if self._signals:
                await group.start(self._watch, scope)
            try:
                with scope:
                    return await main()
            finally:
                group.cancel_scope.cancel()
            # Only a signal cancels the scope: the run stopped before or after its engine ran.
            raise self.stopped or Stopped(signal.SIGTERM)
        raise AssertionError("unreachable: the task group returns or raises")  # pragma: no cover

    def _attach(self, orchestrator: Orchestrator) -> None:
        # The first engine entered is the run's; one an adapter starts inside it is not.
        if self._orchestrator is None:
            self._orchestrator = orchestrator

    def _catch(self) -> None:
        for number in self._signals:
            signal.signal(number, self._caught)

    def _caught(self, number: int, frame: FrameType | None) -> None:
        """A signal outside the event loop's watch: raised, as Ctrl-C's is."""
        del frame
        raise self._first(signal.Signals(number))

    async def _watch(
        self, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            with anyio.open_signal_receiver(*self._signals) as received:
                task_status.started()
                async for number in received:
                    self._stop(self._first(signal.Signals(number)), scope)
        finally:
            # The event loop leaves the system's handlers behind it: catch them again.
            self._catch()

    def _first(self, number: signal.Signals) -> Stopped:
        if self.stopped is not None:
            # The second: the run is stopping, yet whoever sent it wants the process gone.
            self._abandon()
            self._end(number)
        self.stopped = Stopped(number)
        return self.stopped

    def _stop(self, stopped: Stopped, scope: anyio.CancelScope) -> None:
        """Cancel the run: in its engine, with why, when it runs; else everything of it."""
        if self._orchestrator is not None and self._orchestrator.executing:
            self._orchestrator.cancel(stopped.reason)
        else:
            scope.cancel()
