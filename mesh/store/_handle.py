"""
Runs that can be watched and steered while they go: `start` and `start_async`.

`mesh.run` returns when the run ends. A handle returns at once: its
``events()`` follows the run as it happens, ``cancel()`` stops it with a
reason, ``result()`` waits for it. The run is the same `mesh.run_async`
underneath; the handle reaches the engine it builds through a context
variable, so every option and both kinds of run (in memory, on a repository)
work unchanged.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, final, overload

import anyio
import anyio.from_thread

from ..contracts._errors import InputError, MeshError, RunCancelled
from ..engine._plan_change import PlanChange
from ..engine._results import RunResult, RunStatistics
from ..engine._roles import Roles
from ..engine._scheduler import Orchestrator, told_of_orchestrators
from ..engine._stream import DEFAULT_BUFFER, EventStream
from ._front import Backend, _check_backend, _run_anywhere
from ._repo_run import RepositoryRun

__all__ = ["AsyncRunHandle", "RunHandle", "start", "start_async"]

T = TypeVar("T")
R = TypeVar("R")


class _Control(Generic[T]):
    """One run, its engine once built, and the streams and cancellation asked of it."""

    def __init__(self, main: Callable[[], Awaitable[T]]) -> None:
        self._main = main
        self.orchestrator: Orchestrator | None = None
        self._streams: list[EventStream] = []
        self._scope: anyio.CancelScope | None = None
        self.reason: str | None = None
        self.ended = False

    def _attach(self, orchestrator: Orchestrator) -> None:
        # The first engine entered is the run's; one an adapter starts inside it is not.
        if self.orchestrator is None:
            self.orchestrator = orchestrator
            orchestrator.adopt_streams(self._streams)

    def events(self, buffer: int) -> EventStream:
        if self.orchestrator is not None:
            stream = self.orchestrator.events(buffer=buffer)
        else:
            stream = EventStream(buffer=buffer, engine_thread=threading.get_ident())
        self._streams.append(stream)
        if self.ended:
            stream.close()
        return stream

    def cancel(self, reason: str) -> None:
        if not isinstance(reason, str):
            raise InputError(f"reason must be a string, got {type(reason).__name__}")
        if self.ended or self.reason is not None:
            return
        self.reason = reason
        if self.orchestrator is not None and self.orchestrator.executing:
            self.orchestrator.cancel(reason)
        elif self._scope is not None:
            self._scope.cancel()

    def statistics(self) -> RunStatistics | None:
        return None if self.orchestrator is None else self.orchestrator.statistics()

    def update_plan(self, plan: object) -> PlanChange:
        if self.orchestrator is None or not self.orchestrator.executing:
            raise MeshError("the run's plan can change only while it executes")
        return self.orchestrator.update_plan(plan)

    async def run(self) -> T:
        with told_of_orchestrators(self._attach):
            return await self._run()

    async def _run(self) -> T:
        try:
            with anyio.CancelScope() as self._scope:
                if self.reason is not None:  # cancelled before it began
                    self._scope.cancel()
                return await self._main()
            raise RunCancelled(self.reason or "cancelled")
        finally:
            self.ended = True
            # A run that stopped before its engine ran (bad options, a plan error) has no
            # engine to close them.
            for stream in self._streams:
                stream.close()


def _main(
    plan: object,
    roles: Roles,
    repo: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] | None,
    options: Mapping[str, object],
) -> Callable[[], Awaitable[RunResult | RepositoryRun]]:
    async def main() -> RunResult | RepositoryRun:
        return await _run_anywhere(plan, roles=roles, repo=repo, out=out, options=options)

    return main


@final
class AsyncRunHandle(Generic[R]):
    """
    A run going on in this event loop (`start_async`): watch it, cancel it, await it.

    .. versionadded:: 0.2.0
    """

    def __init__(self, control: _Control[R]) -> None:
        self._control = control
        self._done = anyio.Event()
        self._outcome: R | BaseException | None = None
        self._collected = False
        self._first: EventStream | None = control.events(DEFAULT_BUFFER)

    async def _run(self) -> None:
        try:
            self._outcome = await self._control.run()
        except Exception as exc:  # noqa: BLE001 - handed to whoever awaits the result
            self._outcome = exc
        except BaseException:
            # Cancelled with the code around it: the cancellation goes on, the result says so.
            self._outcome = RunCancelled(self._control.reason or "cancelled")
            raise
        finally:
            self._done.set()

    def events(self, *, buffer: int = DEFAULT_BUFFER) -> EventStream:
        """
        The run's events as they happen, for ``async for`` (see `EventStream`).

        The first call gets every event from the run's start; a later one,
        every event from then on.
        """
        if (first := self._first) is not None:
            self._first = None
            first.resize(buffer)
            return first
        return self._control.events(buffer)

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run: ``run_cancelled`` is recorded, `result` raises `RunCancelled`."""
        self._control.cancel(reason)

    def statistics(self) -> RunStatistics | None:
        """Where the run stands now (None until its engine has started)."""
        return self._control.statistics()

    def update_plan(self, plan: object) -> PlanChange:
        """Change the run's plan while it executes (see `Orchestrator.update_plan`)."""
        return self._control.update_plan(plan)

    @property
    def done(self) -> bool:
        """Whether the run has ended, however it ended."""
        return self._done.is_set()

    async def result(self) -> R:
        """Wait for the run to end: what `mesh.run_async` returns, or what it raised."""
        await self._done.wait()
        self._collected = True
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None  # noqa: S101 - set before done is
        return outcome

    def _uncollected_error(self) -> BaseException | None:
        outcome = self._outcome
        return outcome if isinstance(outcome, BaseException) and not self._collected else None


@overload
def start_async(
    plan: object, *, roles: Roles, repo: None = None, out: None = None, **options: object
) -> contextlib.AbstractAsyncContextManager[AsyncRunHandle[RunResult]]: ...


@overload
def start_async(
    plan: object,
    *,
    roles: Roles,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    **options: object,
) -> contextlib.AbstractAsyncContextManager[AsyncRunHandle[RepositoryRun]]: ...


def start_async(
    plan: object,
    *,
    roles: Roles,
    repo: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    **options: object,
) -> contextlib.AbstractAsyncContextManager[AsyncRunHandle[Any]]:
    """
    Start a run in this event loop, to watch or steer while it goes.

    For example::

        async with mesh.start_async(plan, roles=roles) as run:
            async for event in run.events():
                print(event.event, event.unit_id)
            result = await run.result()

    The arguments are `run_async`'s. The run starts as the block is entered;
    leaving the block waits for it to end (`AsyncRunHandle.cancel` stops it
    sooner; an exception in the block cancels it). A run that failed and
    whose `AsyncRunHandle.result` nobody awaited raises its error as the
    block ends, so no failure goes unseen.

    .. versionadded:: 0.2.0
    """
    return _started(_Control(_main(plan, roles, repo, out, options)))


@contextlib.asynccontextmanager
async def _started(control: _Control[R]) -> AsyncIterator[AsyncRunHandle[R]]:
    handle = AsyncRunHandle(control)
    raised: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(handle._run)  # noqa: SLF001 - the handle's own task
        try:
            yield handle
        except Exception as exc:  # noqa: BLE001 - raised as it is once the run stopped
            handle.cancel("the block watching the run raised")
            raised = exc
        except BaseException:
            handle.cancel("the block watching the run was cancelled")
            raise
    if raised is not None:
        raise raised
    if (error := handle._uncollected_error()) is not None:  # noqa: SLF001
        raise error


@final
class RunHandle(Generic[R]):
    """
    A run going on in a thread of its own (`start`): watch it, cancel it, wait for it.

    Made for notebooks and scripts: iterate `events` with a plain ``for``.
    Use it with ``with`` (leaving waits for the run), or call `result`.

    .. versionadded:: 0.2.0
    """

    def __init__(self, main: Callable[[], Awaitable[R]], *, backend: Backend) -> None:
        self._portal_context = anyio.from_thread.start_blocking_portal(backend)
        self._portal = self._portal_context.__enter__()
        self._closed = False
        self._closing = threading.Lock()
        self._collected = False
        control: _Control[R] = _Control(main)
        self._control = control
        self._first: EventStream | None = self._portal.call(control.events, DEFAULT_BUFFER)
        self._future: Future[R] = self._portal.start_task_soon(control.run)
        # The run's thread goes when the run ends, whether or not anyone calls result():
        # a handle nobody closes must not keep the interpreter from exiting.
        self._future.add_done_callback(
            lambda _: threading.Thread(target=self._stop_thread, daemon=True).start()
        )

    def events(self, *, buffer: int = DEFAULT_BUFFER) -> EventStream:
        """
        The run's events as they happen, for a plain ``for`` (see `EventStream`).

        The first call gets every event from the run's start; a later one,
        every event from then on. The loop ends when the run ends.
        """
        if (first := self._first) is not None:
            self._first = None
            first.resize(buffer)
            return first
        if self._closed:
            ended = EventStream(buffer=buffer)
            ended.close()
            return ended
        stream: EventStream = self._portal.call(self._control.events, buffer)
        return stream

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run: ``run_cancelled`` is recorded, `result` raises `RunCancelled`."""
        if not isinstance(reason, str):
            raise InputError(f"reason must be a string, got {type(reason).__name__}")
        if not self._closed:
            self._portal.call(self._control.cancel, reason)

    def statistics(self) -> RunStatistics | None:
        """Where the run stands now (None until its engine has started, or after it ended)."""
        if self._closed:
            return None
        statistics: RunStatistics | None = self._portal.call(self._control.statistics)
        return statistics

    def update_plan(self, plan: object) -> PlanChange:
        """Change the run's plan while it executes (see `Orchestrator.update_plan`)."""
        if self._closed:
            raise MeshError("the run's plan can change only while it executes")
        change: PlanChange = self._portal.call(self._control.update_plan, plan)
        return change

    @property
    def done(self) -> bool:
        """Whether the run has ended, however it ended."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> R:
        """
        Wait for the run to end (at most ``timeout`` seconds): what `mesh.run` returns.

        Raises:
            TimeoutError: The run is still going after ``timeout`` seconds.
            RunCancelled: The run was cancelled.
            MeshError: Whatever else stopped the run (as `mesh.run` raises it).
        """
        try:
            outcome = self._future.result(timeout)
        except TimeoutError:
            raise
        except BaseException:
            self._collected = True
            self.close()
            raise
        self._collected = True
        self.close()
        return outcome

    def close(self) -> None:
        """Wait for the run to end, then stop its thread (``with`` does this)."""
        concurrent.futures.wait([self._future])  # the error, if any, stays for result()
        self._stop_thread()

    def _stop_thread(self) -> None:
        with self._closing:
            if not self._closed:
                self._closed = True
                self._portal_context.__exit__(None, None, None)

    def __enter__(self) -> RunHandle[R]:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if error is not None and not self._future.done():
            self.cancel("the block watching the run raised")
        self.close()
        if error is None and not self._collected:
            self.result()


@overload
def start(
    plan: object,
    *,
    roles: Roles,
    repo: None = None,
    out: None = None,
    backend: Backend = "asyncio",
    **options: object,
) -> RunHandle[RunResult]: ...


@overload
def start(
    plan: object,
    *,
    roles: Roles,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    backend: Backend = "asyncio",
    **options: object,
) -> RunHandle[RepositoryRun]: ...


def start(
    plan: object,
    *,
    roles: Roles,
    repo: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    backend: Backend = "asyncio",
    **options: object,
) -> RunHandle[Any]:
    """
    Start a run in a thread of its own and return at once (notebooks, scripts).

    For example::

        with mesh.start(plan, roles=roles) as run:
            for event in run.events():
                print(event.event, event.unit_id)
            result = run.result()

    The arguments are `run`'s. Unlike `run`, it works inside a running event
    loop too (a Jupyter notebook): the run has its own loop, in its own thread.

    .. versionadded:: 0.2.0
    """
    _check_backend(backend)
    return RunHandle(_main(plan, roles, repo, out, options), backend=backend)
