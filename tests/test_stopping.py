"""SIGTERM and SIGHUP stop a `mesh run` as Ctrl-C does (see test_live_view for the command)."""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import anyio
import pytest

import mesh
from mesh.cli._stopping import SignalStop, Stopped
from mesh.engine import _scheduler
from mesh.engine._scheduler import Orchestrator

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


class Engine:
    """Stands for the run's engine: what `SignalStop` asks of it."""

    def __init__(self) -> None:
        self.executing = True
        self.reasons: list[str] = []
        self.scope: anyio.CancelScope | None = None

    def cancel(self, reason: str) -> None:
        self.reasons.append(reason)
        assert self.scope is not None
        self.scope.cancel()


@pytest.fixture(autouse=True)
def _handlers_put_back() -> Iterator[None]:
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP)}
    yield
    assert before == {number: signal.getsignal(number) for number in before}


def test_a_signal_outside_the_event_loop_is_raised() -> None:
    """Before or after the run's event loop, SIGTERM raises, as Ctrl-C raises KeyboardInterrupt."""
    stop = SignalStop(lambda: None)
    with pytest.raises(KeyboardInterrupt) as caught, stop.handled():
        signal.raise_signal(signal.SIGTERM)
    assert isinstance(caught.value, Stopped)
    assert caught.value is stop.stopped
    assert (caught.value.exit_code, caught.value.reason) == (143, "terminated (SIGTERM)")


def test_a_second_signal_ends_the_process() -> None:
    """A second signal while the run stops leaves the terminal usable, then ends the process."""
    calls: list[object] = []

    class Ended(BaseException):
        pass

    def end(number: signal.Signals) -> None:
        calls.append(number)
        raise Ended

    stop = SignalStop(lambda: calls.append("abandoned"), end=end)
    with stop.handled():
        with pytest.raises(Stopped):
            signal.raise_signal(signal.SIGTERM)
        with pytest.raises(Ended):
            signal.raise_signal(signal.SIGHUP)
    assert calls == ["abandoned", signal.SIGHUP]


def test_an_ignored_signal_stays_ignored() -> None:
    """Under nohup SIGHUP is ignored: it stays so, during the run and after."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop = SignalStop(lambda: None)
        with stop.handled():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_another_thread_leaves_the_signals_alone() -> None:
    """Only the main thread can catch signals: elsewhere the run goes on without."""
    seen: list[object] = []

    def other() -> None:
        with SignalStop(lambda: None).handled():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


def tell(engine: object) -> None:
    """What entering an orchestrator does: everyone listening in this context is told."""
    told = _scheduler._ON_ORCHESTRATOR.get()
    assert told
    for listener in told:
        listener(cast("Orchestrator", engine))


def test_a_running_engine_is_cancelled_naming_the_signal() -> None:
    """In the event loop, the run's engine (the first one entered) is cancelled with why."""
    engine, inner = Engine(), Engine()

    async def main() -> str:
        tell(engine)
        tell(inner)  # one an adapter starts inside the run
        with anyio.CancelScope() as engine.scope:
            signal.raise_signal(signal.SIGHUP)
            await anyio.sleep_forever()
        raise mesh.RunCancelled(engine.reasons[0])

    stop = SignalStop(lambda: None)
    with pytest.raises(mesh.RunCancelled) as caught, stop.handled():
        anyio.run(stop.run, main)
    assert caught.value.reason == "hung up (SIGHUP)"
    assert (engine.reasons, inner.reasons) == (["hung up (SIGHUP)"], [])
    assert stop.stopped is not None
    assert stop.stopped.exit_code == 129


def test_before_the_engine_runs_the_whole_run_is_cancelled() -> None:
    """A signal before (or after) the engine runs cancels everything; Stopped comes out."""
    engine = Engine()
    engine.executing = False

    async def main() -> None:
        tell(engine)
        signal.raise_signal(signal.SIGTERM)
        await anyio.sleep_forever()

    stop = SignalStop(lambda: None)
    with pytest.raises(Stopped) as caught, stop.handled():
        anyio.run(stop.run, main)
    assert (caught.value.signal, engine.reasons) == (signal.SIGTERM, [])


def test_without_signals_to_catch_the_run_just_runs() -> None:
    """Outside `handled` the run goes on unwatched, and its errors come out as they are."""

    async def main() -> str:
        return "done"

    async def failing() -> None:
        raise ValueError("plain")

    stop = SignalStop(lambda: None)
    assert anyio.run(stop.run, main) == "done"
    with pytest.raises(ValueError, match="plain"), stop.handled():
        anyio.run(stop.run, failing)
    assert stop.stopped is None


def test_the_command_line_says_how_to_continue(tmp_path: Path) -> None:
    """`mesh run` stopped by SIGTERM raises Stopped with the command that continues the run."""
    from mesh.cli._run_command import _watched  # noqa: PLC0415 - the command line's own

    (tmp_path / mesh.STORE_FILE).touch()
    engine = Engine()

    async def main(follow: Callable[[mesh.LedgerEvent], None]) -> mesh.RepositoryRun:
        del follow
        tell(engine)
        with anyio.CancelScope() as engine.scope:
            signal.raise_signal(signal.SIGTERM)
            await anyio.sleep_forever()
        raise mesh.RunCancelled(engine.reasons[0])

    with pytest.raises(Stopped) as caught:
        _watched(None, main, tmp_path, view="quiet")
    assert (caught.value.exit_code, caught.value.resume_command) == (
        143,
        f"mesh resume {shlex.quote(str(tmp_path))}",
    )
