"""mesh.testing: fakes, answers, the manual clock, ledger capture and the pytest plugin."""

from __future__ import annotations

import asyncio  # noqa: TID251 - only to put a callback on the loop's ready queue
import threading
import time

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import attrs
import pytest

import mesh
from mesh.testing import (
    FakeAdapter,
    Hang,
    ManualClock,
    Raise,
    Sleep,
    _clock,
    answer,
    capture_ledger,
    fake_roles,
)

pytestmark = pytest.mark.anyio


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # on trio
        return None


UNIT = mesh.Unit(
    id="u1", objective="add a flag", write_scope=("src/flags.py",), proof_command="pytest"
)
AUTHOR = mesh.AuthorRequest(
    unit=UNIT, lane=mesh.Lane.REDUCER, candidate_id="u1-reducer-3", triplet_index=3, attempt=1
)


class TestAnswer:
    def test_answers_are_valid_for_every_request(self) -> None:
        """answer() builds a contract-valid result for each kind of request."""
        author = mesh.parse_worker_result(answer(AUTHOR))
        assert author.reduce_record is not None
        assert "src/flags.py" in (author.patch or "")
        lease = mesh.LeaseRequest(
            unit=UNIT,
            candidate_id="u1-coder-1",
            action="release",
            holder="u1",
            write_scope=UNIT.write_scope,
            ttl_ms=10,
        )
        assert mesh.parse_worker_result(answer(lease)).decision is mesh.Decision.RECLAIM
        apply = mesh.ApplyRequest(
            unit=UNIT, candidate_id="u1-reducer-3", candidate=author, lease_id="l", attempt=1
        )
        applied = mesh.parse_worker_result(answer(apply))
        proof = mesh.parse_worker_result(
            answer(
                mesh.ProofRequest(
                    unit=UNIT,
                    candidate_id="u1-reducer-3",
                    candidate=author,
                    applied=applied,
                    proof_attempt=2,
                    attempt=1,
                )
            )
        )
        assert (proof.proof_attempts, proof.proof_evidence.command) == (2, "pytest")
        no_proven = mesh.AdjudicationRequest(
            unit=UNIT,
            candidate_id="u1-fixer-1",
            proven=(),
            rejected=(author,),
            fixer_index=1,
            quorum_target=2,
            attempt=1,
        )
        verdict = mesh.parse_worker_result(answer(no_proven))
        assert (verdict.decision, verdict.failure_code) == (
            mesh.Decision.REWORK_REQUIRED,
            mesh.FailureCode.PROOF_MISSING,
        )
        commit_unit = mesh.Unit(
            id="u1", objective="x", delivery_mode=mesh.DeliveryMode.COMMIT_FIRST
        )
        delivery = mesh.parse_worker_result(
            answer(
                mesh.DeliveryRequest(
                    unit=commit_unit,
                    candidate_id="u1-reducer-3",
                    candidate=author,
                    proof=proof,
                    approvals=2,
                    plan_state={},
                    attempt=1,
                )
            )
        )
        assert delivery.decision is mesh.Decision.INTEGRATED_COMMIT

    def test_overrides_and_unknown_requests(self) -> None:
        """Overrides replace fields (None removes one); other objects are refused."""
        document = answer(AUTHOR, decision="no_diff", patch=None, notes="done already")
        assert "patch" not in document
        with pytest.raises(TypeError, match="no fake answer for str"):
            answer("hello")


class TestFakeAdapter:
    async def test_script_then_handler(self) -> None:
        """Scripted steps are used in order, then the handler answers; calls are recorded."""
        adapter = FakeAdapter(
            lambda r: "from handler",
            script=[{"scripted": 1}, lambda r: f"callable for {r}", Sleep(0.0)],
        )
        assert await adapter("a") == {"scripted": 1}
        assert await adapter("b") == "callable for b"
        assert await adapter("c") == "from handler"
        assert await adapter("d") == "from handler"
        assert adapter.calls == ["a", "b", "c", "d"]

    async def test_async_handler_and_raise(self) -> None:
        """Async handlers are awaited; Raise raises."""

        async def handler(request: object) -> str:
            await anyio.lowlevel.checkpoint()
            return "async"

        adapter = FakeAdapter(handler, script=[Raise(ValueError("boom"))])
        with pytest.raises(ValueError, match="boom"):
            await adapter("x")
        assert await adapter("y") == "async"

    async def test_hang_never_answers(self) -> None:
        """Hang blocks until cancelled."""
        adapter = FakeAdapter(script=[Hang()])
        with anyio.move_on_after(0.05) as scope:
            await adapter("x")
        assert scope.cancelled_caught

    async def test_delay_on_a_manual_clock(self) -> None:
        """A delay waits on the given clock, not in real time."""
        clock = ManualClock()
        adapter = FakeAdapter(lambda r: "late", delay=60, clock=clock)
        async with clock.autojumping():
            assert await adapter("x") == "late"
        assert clock.current_time() == 60


class TestManualClock:
    async def test_advance_wakes_sleepers(self) -> None:
        """Sleepers wake when time is advanced past their deadline, not before."""
        clock = ManualClock(start=10)
        woke: list[float] = []

        async def sleeper(seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(clock.current_time())

        async with anyio.create_task_group() as group:
            group.start_soon(sleeper, 5)
            group.start_soon(sleeper, 1)
            await anyio.wait_all_tasks_blocked()
            assert clock.next_deadline == 11
            clock.advance(2)
            await anyio.wait_all_tasks_blocked()
            assert woke == [12]
            clock.advance(3)
        assert woke == [12, 15]
        assert clock.next_deadline is None

    async def test_past_deadline_returns_at_once(self) -> None:
        """Sleeping until a past deadline does not block."""
        clock = ManualClock(start=5)
        await clock.sleep_until(1)
        assert clock.current_time() == 5

    def test_time_only_moves_forward(self) -> None:
        """advance() refuses negative steps."""
        with pytest.raises(ValueError, match="forward"):
            ManualClock().advance(-1)

    async def test_cancelled_sleepers_are_forgotten(self) -> None:
        """A cancelled sleep leaves no deadline behind for autojump to jump to."""
        clock = ManualClock()
        with anyio.move_on_after(0.01):
            await clock.sleep(100)
        assert clock.next_deadline is None

    async def test_autojump_idles_without_deadlines(self) -> None:
        """With nothing sleeping, autojump waits instead of spinning or jumping."""
        clock = ManualClock()
        async with clock.autojumping():
            await anyio.sleep(0.01)
        assert clock.current_time() == 0

    async def test_autojump_runs_a_chain_in_virtual_time(self) -> None:
        """A ten-unit chain of 60 s coders ends at exactly 600 s, in far less real time."""
        clock = ManualClock()
        units = [
            mesh.Unit(
                id=f"c{i}",
                objective="wait",
                write_scope=(f"src/c{i}.py",),
                deps=(f"c{i - 1}",) if i else (),
                risk_tier=mesh.RiskTier.LOW,
            )
            for i in range(10)
        ]
        slow = FakeAdapter(answer, delay=60, clock=clock)
        started = time.perf_counter()
        async with (
            clock.autojumping(),
            mesh.Orchestrator(roles=fake_roles(coder=slow, reducer=slow), clock=clock) as run,
        ):
            result = await run.execute(units)
        # Generous: the point is no real nap per jump (it used to be 0.1 s each on asyncio).
        assert time.perf_counter() - started < 5
        assert result.metrics.completed == 10
        assert clock.current_time() == 600
        assert result.metrics.elapsed_seconds == 600

    async def test_autojump_waits_for_tasks_woken_by_a_jump(self) -> None:
        """Whatever a woken task starts, sets, cancels or joins acts at the woken time."""
        clock = ManualClock()
        stamps: dict[str, float] = {}
        handed_over = anyio.Event()

        async def busy(turns: int) -> None:
            for _ in range(turns):
                await anyio.lowlevel.checkpoint()

        async def started_late() -> None:
            await busy(20)
            stamps["started"] = clock.current_time()
            await clock.sleep(5)
            stamps["started woke"] = clock.current_time()

        async def waiter() -> None:
            await handed_over.wait()
            await busy(20)
            stamps["handed over"] = clock.current_time()
            await clock.sleep(1)
            stamps["waiter woke"] = clock.current_time()

        async def cancelled(scope: anyio.CancelScope) -> None:
            with scope:
                await anyio.sleep_forever()
            await busy(20)
            stamps["cancelled"] = clock.current_time()
            await clock.sleep(2)
            stamps["cancelled woke"] = clock.current_time()

        async def first(group: anyio.abc.TaskGroup, scope: anyio.CancelScope) -> None:
            await clock.sleep(10)
            await busy(20)
            group.start_soon(started_late)
            handed_over.set()
            scope.cancel()

        async def joiner() -> None:
            # A child's end reaches its task group through a callback, not a task.
            async with anyio.create_task_group() as children:
                children.start_soon(clock.sleep, 20)
            stamps["joined"] = clock.current_time()
            await clock.sleep(3)
            stamps["joiner woke"] = clock.current_time()

        scope = anyio.CancelScope()
        async with clock.autojumping(), anyio.create_task_group() as group:
            group.start_soon(clock.sleep, 100)  # a later deadline a hasty jump would skip to
            group.start_soon(joiner)
            group.start_soon(waiter)
            group.start_soon(cancelled, scope)
            group.start_soon(first, group, scope)
        assert stamps == {
            "started": 10,
            "handed over": 10,
            "cancelled": 10,
            "waiter woke": 11,
            "cancelled woke": 12,
            "started woke": 15,
            "joined": 20,
            "joiner woke": 23,
        }
        assert clock.current_time() == 100

    async def test_two_clocks_jump_in_one_loop(self) -> None:
        """Two autojumping clocks do not take each other's polling for work."""
        first, second = ManualClock(), ManualClock()
        with anyio.fail_after(30):
            async with first.autojumping(), second.autojumping():
                for _ in range(3):
                    await first.sleep(7)
                    await second.sleep(11)
        assert (first.current_time(), second.current_time()) == (21, 33)

    async def test_autojump_without_a_ready_queue(
        self, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A loop without asyncio's ready queue (uvloop) falls back to anyio's check."""
        monkeypatch.setattr(_clock, "_ready_queue", lambda: None)
        clock = ManualClock()
        async with clock.autojumping():
            await clock.sleep(30)
            await clock.sleep(30)
        assert clock.current_time() == 60

    async def test_ready_callbacks_of_unhashable_objects(self) -> None:
        """A ready callback bound to an unhashable object is not taken for a jumper's pass."""

        @attrs.define
        class Tracker:  # attrs.define: unhashable, as dataclasses are by default
            calls: int = 0

            def tick(self) -> None:
                self.calls += 1

        tracker = Tracker()
        clock = ManualClock()
        async with clock.autojumping():
            for _ in range(5):
                asyncio_loop = _running_asyncio_loop()
                if asyncio_loop is not None:
                    asyncio_loop.call_soon(tracker.tick)
                await clock.sleep(4)
        assert clock.current_time() == 20

    async def test_sync_adapters_in_threads_are_not_timed_out(self) -> None:
        """While a sync adapter works in a thread, virtual time waits for its answer."""

        def slow_coder(request: mesh.AuthorRequest) -> dict[str, object]:
            time.sleep(0.02)  # real work, which no virtual deadline should cut short
            return answer(request)

        clock = ManualClock()
        roles = fake_roles(coder=slow_coder)
        async with (
            clock.autojumping(),
            mesh.Orchestrator(roles=roles, clock=clock, call_timeout=600) as orchestrator,
        ):
            result = await orchestrator.execute([UNIT])
        assert result.metrics.completed == 1
        assert clock.current_time() < 600  # no call waited out its timeout

    async def test_threads_of_the_host_do_not_stop_time(self) -> None:
        """A thread of the host's own (not a sync adapter's call) never stops the clock."""
        release = threading.Event()
        clock = ManualClock()

        async def hold_a_thread() -> None:
            await anyio.to_thread.run_sync(release.wait)

        async with anyio.create_task_group() as group:
            group.start_soon(hold_a_thread)
            with anyio.fail_after(10):
                async with clock.autojumping():
                    await clock.sleep(30)
            release.set()
        assert clock.current_time() == 30


class TestCaptureLedger:
    async def test_captures_runs_inside_only(self) -> None:
        """Events of runs started inside the block are captured; later runs are not."""
        with capture_ledger() as events:
            async with mesh.Orchestrator(roles=fake_roles()) as run:
                await run.execute([UNIT])
        count = len(events)
        assert events[0].event == "run_started"
        assert events[-1].event == "run_finished"
        async with mesh.Orchestrator(roles=fake_roles()) as run:
            await run.execute([UNIT])
        assert len(events) == count


class TestPytestPlugin:
    async def test_fixtures(
        self,
        mesh_roles: mesh.Roles,
        mesh_ledger: list[mesh.LedgerEvent],
        mesh_clock: ManualClock,
    ) -> None:
        """The plugin's fixtures give fake roles, a ledger capture and a manual clock."""
        async with (
            mesh_clock.autojumping(),
            mesh.Orchestrator(roles=mesh_roles, clock=mesh_clock) as run,
        ):
            result = await run.execute([UNIT])
        assert result.outcome("u1").state == "completed"
        assert any(event.event == "unit_finished" for event in mesh_ledger)
