"""mesh.testing: fakes, answers, the manual clock, ledger capture and the pytest plugin."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import mesh
from mesh.testing import (
    FakeAdapter,
    Hang,
    ManualClock,
    Raise,
    Sleep,
    answer,
    capture_ledger,
    fake_roles,
)

pytestmark = pytest.mark.anyio

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
