"""Watching and steering a live run: event streams, cancellation and run handles."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

import mesh
import mesh.typing
from mesh.testing import FakeAdapter, answer, capture_ledger, fake_roles

from engine_helpers import new_file_answer, two_steps, unit

pytestmark = pytest.mark.anyio
EXAMPLE_PLAN = json.loads((Path(__file__).parents[1] / "examples" / "plan.json").read_text())
CHAIN = [unit("a"), unit("b", "a"), unit("c", "b")]


async def hang(request: object) -> object:
    await anyio.sleep_forever()
    raise AssertionError  # pragma: no cover - never wakes


def hanging_roles() -> mesh.Roles:
    """Roles whose coders never answer: a run that goes on until it is cancelled."""
    return fake_roles(coder=FakeAdapter(hang))


async def file_coder(request: mesh.AuthorRequest) -> dict[str, object]:
    await anyio.lowlevel.checkpoint()
    return new_file_answer(request)


class TestEventStream:
    async def test_a_stream_opened_before_the_run_gets_every_event(self) -> None:
        """Every ledger event, in order, the last one run_finished; then the stream ends."""
        async with mesh.Orchestrator(roles=fake_roles()) as orchestrator:
            stream = orchestrator.events()
            seen: list[mesh.LedgerEvent] = []
            with capture_ledger() as ledger:
                async with anyio.create_task_group() as group:
                    group.start_soon(orchestrator.execute, EXAMPLE_PLAN)
                    seen.extend([event async for event in stream])
        assert seen == ledger
        assert seen[-1].event == "run_finished"
        assert stream.closed
        assert stream.missed == 0

    async def test_a_slow_reader_never_slows_the_run_and_loses_only_the_oldest(self) -> None:
        """Past its buffer a stream drops its oldest events and counts them; the ledger is whole."""
        async with mesh.Orchestrator(roles=fake_roles()) as orchestrator:
            stream = orchestrator.events(buffer=5)
            with capture_ledger() as ledger:
                await orchestrator.execute(CHAIN)  # nobody reads while it runs
            read = [event async for event in stream]
        assert read == ledger[-5:]
        assert stream.missed == len(ledger) - 5

    async def test_a_stream_opened_mid_run_gets_what_follows(self) -> None:
        streams: list[mesh.EventStream] = []
        opened_after: list[int] = []

        def on_event(event: mesh.LedgerEvent) -> None:
            if event.event == "unit_finished" and not streams:
                opened_after.append(event.seq)
                streams.append(orchestrator.events())

        async with mesh.Orchestrator(
            roles=fake_roles(), sinks=[mesh.CallbackSink(on_event)]
        ) as orchestrator:
            await orchestrator.execute(CHAIN)
        events = [event async for event in streams[0]]
        # Opened while that event was being handed out: it is the stream's first.
        assert events[0].seq == opened_after[0]
        assert events[-1].event == "run_finished"

    def test_buffer_must_be_a_positive_whole_number(self) -> None:
        for wrong in (0, -1, 1.5, True, "9"):
            with pytest.raises(mesh.InputError, match="buffer must be a whole number"):
                mesh.EventStream(buffer=wrong)  # type: ignore[arg-type]

    async def test_a_plain_for_in_the_engines_own_thread_is_refused(self) -> None:
        """Waiting there would stop the loop that produces the events."""
        async with mesh.Orchestrator(roles=fake_roles()) as orchestrator:
            stream = orchestrator.events()
            with pytest.raises(mesh.MeshError, match="async for"):
                next(iter(stream))

    def test_a_closed_stream_hands_out_what_it_holds_then_ends(self) -> None:
        stream = mesh.EventStream(buffer=2)
        events = [mesh.LedgerEvent(event="x", run_id="r", seq=seq, at=0.0) for seq in range(1, 4)]
        for event in events:
            stream.push(event)
        stream.close()
        assert list(stream) == events[1:]
        assert stream.missed == 1


class TestCancel:
    async def test_cancel_records_the_reason_and_raises_run_cancelled(self) -> None:
        """run_cancelled is the last event; the hanging calls stop; leases are released."""
        roles = fake_roles(prover=FakeAdapter(hang))
        async with mesh.Orchestrator(roles=roles) as orchestrator:
            stream = orchestrator.events()
            with capture_ledger() as ledger:
                async with anyio.create_task_group() as group:

                    async def watch() -> None:
                        async for event in stream:
                            if event.lane is mesh.Lane.APPLIER:
                                orchestrator.cancel("enough for today")

                    group.start_soon(watch)
                    with pytest.raises(mesh.RunCancelled) as raised:
                        await orchestrator.execute(CHAIN)
        assert raised.value.reason == "enough for today"
        assert "enough for today" in str(raised.value)
        assert ledger[-1].event == "run_cancelled"
        assert ledger[-1].data == {"reason": "enough for today"}
        assert not orchestrator.executing
        acquired = [e for e in ledger if e.data.get("action") == "acquire"]
        released = [e for e in ledger if e.data.get("action") == "release"]
        assert len(acquired) == len(released) >= 1

    async def test_only_the_first_cancel_of_a_run_counts(self) -> None:
        """A cancel with no run executing does nothing; a second one keeps the first reason."""

        def on_event(event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started":
                orchestrator.cancel("first")
                orchestrator.cancel("second")

        async with mesh.Orchestrator(
            roles=hanging_roles(), sinks=[mesh.CallbackSink(on_event)]
        ) as orchestrator:
            orchestrator.cancel("nothing runs: ignored")
            with pytest.raises(mesh.RunCancelled, match="first"):
                await orchestrator.execute(CHAIN)

    async def test_cancel_wants_text(self) -> None:
        async with mesh.Orchestrator(roles=fake_roles()) as orchestrator:
            with pytest.raises(mesh.InputError, match="reason must be a string"):
                orchestrator.cancel(3)  # type: ignore[arg-type]

    async def test_cancelling_the_awaiting_code_is_recorded(self) -> None:
        """A cancel scope around execute: run_cancelled says so, and the cancellation goes on."""
        with capture_ledger() as ledger:
            async with mesh.Orchestrator(roles=hanging_roles()) as orchestrator:
                with anyio.move_on_after(0.5) as scope:
                    await orchestrator.execute(CHAIN)
        assert scope.cancelled_caught
        assert ledger[-1].event == "run_cancelled"
        assert str(ledger[-1].data["reason"]).startswith("cancelled from outside the run")

    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_a_ctrl_c_inside_the_run_is_recorded(self, backend: mesh.typing.Backend) -> None:
        def interrupt(request: object) -> object:
            raise KeyboardInterrupt

        events: list[mesh.LedgerEvent] = []
        with pytest.raises(KeyboardInterrupt):
            mesh.run(
                CHAIN, roles=fake_roles(coder=interrupt), on_event=events.append, backend=backend
            )
        assert events[-1].event == "run_cancelled"
        # asyncio's runner turns a Ctrl-C into cancelling its main task; trio raises it.
        reason = "Ctrl-C" if backend == "asyncio" else "interrupted (Ctrl-C)"
        assert reason in str(events[-1].data["reason"])

    async def test_a_cancelled_repository_run_resumes(self, tmp_path: Path, repo: Path) -> None:
        """The store keeps the cancel; a resume finishes the run, nothing done twice."""
        out = tmp_path / "out"
        roles = mesh.Roles(coder=file_coder)
        async with mesh.start_async(two_steps(), roles=roles, repo=repo, out=out) as run:
            async for event in run.events():
                if event.event == "unit_finished":
                    run.cancel("stop after one unit")
            with pytest.raises(mesh.RunCancelled, match="stop after one unit"):
                await run.result()
        stored = [e.event for e in mesh.RunStore.open(out / mesh.STORE_FILE).events()]
        assert stored[-1] == "run_cancelled"
        resumed = await mesh.resume_async(out, roles=roles)
        assert [o.state for o in resumed.result.outcomes] == ["completed", "completed"]


class TestStartAsync:
    async def test_events_then_result(self) -> None:
        async with mesh.start_async(EXAMPLE_PLAN, roles=fake_roles()) as run:
            names = [event.event async for event in run.events()]
            result = await run.result()
            assert run.done
        assert names[0] == "run_started"
        assert names[-1] == "run_finished"
        assert [o.state for o in result.outcomes] == ["completed"] * 3

    async def test_a_failure_nobody_awaited_is_raised_as_the_block_ends(self) -> None:
        with pytest.raises(mesh.ValidationError, match="unknown_option"):
            async with mesh.start_async(CHAIN, roles=fake_roles(), unknown_option=1):
                pass

    async def test_a_failure_awaited_is_raised_by_result_only(self) -> None:
        async with mesh.start_async(CHAIN, roles=fake_roles(), unknown_option=1) as run:
            events = [event async for event in run.events()]
            with pytest.raises(mesh.ValidationError):
                await run.result()
        assert events == []
        assert run.statistics() is None

    async def test_cancel_before_the_engine_starts(self) -> None:
        async with mesh.start_async(CHAIN, roles=hanging_roles()) as run:
            run.cancel("changed my mind")
            run.cancel("ignored")
            with pytest.raises(mesh.RunCancelled, match="changed my mind"):
                await run.result()

    async def test_cancel_while_it_runs_and_statistics(self) -> None:
        async with mesh.start_async(CHAIN, roles=hanging_roles()) as run:
            async for event in run.events():
                if event.event == "unit_started":
                    statistics = run.statistics()
                    assert statistics is not None
                    assert statistics.in_flight == 1
                    run.cancel("seen enough")
            with pytest.raises(mesh.RunCancelled):
                await run.result()
            later = run.events()
            assert [event async for event in later] == []
            with pytest.raises(mesh.InputError):
                run.cancel(None)  # type: ignore[arg-type]

    async def test_an_error_in_the_block_cancels_the_run(self) -> None:
        with pytest.raises(ZeroDivisionError):  # noqa: PT012
            async with mesh.start_async(CHAIN, roles=hanging_roles()) as run:
                async for event in run.events():
                    if event.event == "unit_started":
                        1 / 0  # noqa: B018
        with pytest.raises(mesh.RunCancelled, match="the block watching the run raised"):
            await run.result()

    async def test_cancel_while_a_repository_run_prepares(self, repo: Path, tmp_path: Path) -> None:
        """Before its engine runs (the coder's preflight is slow): the run stops all the same."""
        asked = anyio.Event()

        class SlowToCheck:
            async def preflight(self) -> list[str]:
                asked.set()
                await anyio.sleep_forever()
                return []  # pragma: no cover - never reached

            async def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
                return await file_coder(request)  # pragma: no cover - never called

        async with mesh.start_async(
            two_steps(), roles=mesh.Roles(coder=SlowToCheck()), repo=repo, out=tmp_path / "out"
        ) as run:
            await asked.wait()
            run.cancel("not now")
            with pytest.raises(mesh.RunCancelled, match="not now"):
                await run.result()

    async def test_a_cancelled_block_cancels_the_run(self) -> None:
        with anyio.move_on_after(0.3) as scope:
            async with mesh.start_async(CHAIN, roles=hanging_roles()) as run:
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert run.done
        with pytest.raises(mesh.RunCancelled, match="the block watching the run was cancelled"):
            await run.result()

    async def test_a_second_stream_with_its_own_buffer(self) -> None:
        async with mesh.start_async(CHAIN, roles=fake_roles()) as run:
            small = run.events(buffer=1)
            everything = run.events()
            await run.result()
        assert [e.event async for e in small] == ["run_finished"]
        assert small.missed > 0
        assert [e.event async for e in everything][-1] == "run_finished"

    async def test_an_adapter_starting_a_run_of_its_own_is_not_watched(self) -> None:
        """Only the first engine entered is the handle's: a nested run's events stay its own."""

        async def nested_coder(request: mesh.AuthorRequest) -> object:
            if request.unit.id == "a":
                await mesh.run_async([unit("inner")], roles=fake_roles())
            return answer(request)

        async with mesh.start_async(
            CHAIN, roles=fake_roles(coder=FakeAdapter(nested_coder))
        ) as run:
            units = {e.unit_id async for e in run.events() if e.event == "unit_started"}
        assert units == {"a", "b", "c"}


class TestStart:
    def test_a_plain_for_from_another_thread(self) -> None:
        with mesh.start(EXAMPLE_PLAN, roles=fake_roles(), backend="trio") as run:
            names = [event.event for event in run.events()]
            result = run.result()
        assert names[-1] == "run_finished"
        assert [o.state for o in result.outcomes] == ["completed"] * 3
        assert run.done
        assert run.statistics() is None
        assert list(run.events()) == []
        run.cancel("too late: nothing happens")

    def test_cancel_from_the_notebook(self) -> None:
        run = mesh.start(CHAIN, roles=hanging_roles())
        first = run.events(buffer=100)  # the first gets every event, whatever its buffer
        for event in first:
            if event.event == "unit_started":
                assert run.statistics() is not None
                second = run.events(buffer=3)
                run.cancel("interrupting from the notebook")
        with pytest.raises(mesh.RunCancelled, match="interrupting"):
            run.result()
        assert [event.event for event in second][-1] == "run_cancelled"
        with pytest.raises(mesh.InputError):
            run.cancel(b"x")  # type: ignore[arg-type]

    def test_result_waits_at_most_its_timeout(self) -> None:
        run = mesh.start(CHAIN, roles=fake_roles(coder=FakeAdapter(delay=0.2)))
        with pytest.raises(TimeoutError):
            run.result(timeout=0.01)
        assert [o.state for o in run.result().outcomes] == ["completed"] * 3

    def test_it_works_where_an_event_loop_already_runs(self) -> None:
        """A notebook cell: mesh.run refuses there, mesh.start does not."""

        async def cell() -> mesh.RunResult | mesh.RepositoryRun:
            with mesh.start(CHAIN, roles=fake_roles()) as run:
                return await anyio.to_thread.run_sync(run.result)

        assert isinstance(anyio.run(cell), mesh.RunResult)

    def test_a_failure_nobody_collected_is_raised_by_the_with(self) -> None:
        with (
            pytest.raises(mesh.ValidationError, match="unknown_option"),
            mesh.start(CHAIN, roles=fake_roles(), unknown_option=1),
        ):
            pass

    def test_an_error_in_the_with_cancels_the_run(self) -> None:
        with pytest.raises(ZeroDivisionError), mesh.start(CHAIN, roles=hanging_roles()) as run:  # noqa: PT012
            for event in run.events():
                if event.event == "unit_started":
                    1 / 0  # noqa: B018
        with pytest.raises(mesh.RunCancelled):
            run.result()

    def test_the_thread_is_gone_after_the_run(self) -> None:
        before = set(threading.enumerate())
        with mesh.start(CHAIN, roles=fake_roles()) as run:
            run.result()
        # The run's own thread is joined on close; the helper that would have closed it
        # had nobody called result() ends on its own, at once.
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=10)
            assert not thread.is_alive()

    def test_a_bad_backend_is_refused_at_once(self) -> None:
        with pytest.raises(mesh.OptionError):
            mesh.start(CHAIN, roles=fake_roles(), backend="curio")  # type: ignore[call-overload]


class TestWhatTheAttackFound:
    async def test_a_raising_sink_costs_no_other_sink_or_reader_an_event(
        self, tmp_path: Path
    ) -> None:
        """The ledger file and the stream have every event; run_failed ends the stream."""

        class Choking:
            def emit(self, event: mesh.LedgerEvent) -> None:
                if event.event == "unit_started":
                    raise RuntimeError("the host's sink broke")

        ledger_file = tmp_path / "ledger.jsonl"
        async with mesh.Orchestrator(
            roles=fake_roles(), sinks=[Choking()], ledger_path=ledger_file
        ) as orchestrator:
            stream = orchestrator.events()
            with capture_ledger() as captured, pytest.raises(BaseExceptionGroup):
                await orchestrator.execute(CHAIN)
        read = [event async for event in stream]
        assert read == captured
        assert read[-1].event == "run_failed"
        assert "the host's sink broke" in str(read[-1].data["error"])
        lines = ledger_file.read_text().splitlines()
        assert len(lines) == len(read)

    async def test_two_readers_of_one_stream_both_end(self) -> None:
        async with mesh.Orchestrator(roles=fake_roles()) as orchestrator:
            stream = orchestrator.events()
            counts: list[int] = []

            async def read() -> None:
                counts.append(len([event async for event in stream]))

            async with anyio.create_task_group() as group:
                group.start_soon(read)
                group.start_soon(read)
                await anyio.sleep(0.01)  # both wait before the first event
                await orchestrator.execute(CHAIN)
        assert len(counts) == 2

    def test_async_for_from_another_loop_is_refused(self) -> None:
        async def elsewhere(run: mesh.RunHandle[mesh.RunResult]) -> None:
            async for _ in run.events():
                pass  # pragma: no cover - refused before the first

        with mesh.start(CHAIN, roles=fake_roles()) as run:
            with pytest.raises(mesh.MeshError, match="plain `for`"):
                anyio.run(elsewhere, run)
            run.result()

    def test_a_handle_nobody_closes_lets_the_interpreter_exit(self, tmp_path: Path) -> None:
        script = tmp_path / "orphan.py"
        script.write_text(
            "import mesh\nfrom mesh.testing import fake_roles\n"
            "run = mesh.start([mesh.Unit(id='a', objective='a', write_scope=('a',))],"
            " roles=fake_roles())\n"
            "for event in run.events():\n    pass\nprint('read', flush=True)\n"
        )
        finished = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert finished.returncode == 0, finished.stderr
        assert finished.stdout == "read\n"

    def test_the_first_stream_of_a_handle_starts_at_the_start_whatever_its_buffer(self) -> None:
        with mesh.start(CHAIN, roles=fake_roles()) as run:
            first = run.events(buffer=50_000)
            assert next(iter(first)).event == "run_started"
            run.result()


def test_a_stream_made_smaller_drops_its_oldest() -> None:
    stream = mesh.EventStream(buffer=5)
    for seq in range(1, 5):
        stream.push(mesh.LedgerEvent(event="x", run_id="r", seq=seq, at=0.0))
    stream.resize(2)
    stream.close()
    assert [event.seq for event in stream] == [3, 4]
    assert stream.missed == 2
