"""The engine's less travelled paths: failing roles, leases, budget providers, sinks, results."""

from __future__ import annotations

import asyncio  # noqa: TID251 - asyncio's own cancellation, which trio does not have
import functools
import json
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import mesh
import mesh.testing
from mesh.engine._roles import check_result, invoke
from mesh.testing import FakeAdapter, ManualClock, Raise, answer, fake_roles

from engine_helpers import execute, first_coder_request, lease_request
from engine_helpers import unit as _unit

pytestmark = pytest.mark.anyio


# Low risk: one fixer, so these tests read the fewest calls.
unit = functools.partial(_unit, risk="low")


@pytest.mark.mesh_strict(strict=False)  # failing roles, as a lenient run records them
class TestFailingRoles:
    async def test_broken_locksmith(self) -> None:
        """A locksmith that breaks leaves no candidate proved: the unit fails with its code."""
        locksmith = FakeAdapter(lambda r: {"nonsense": True})
        result = await execute(
            [unit("a")], attrs.evolve(fake_roles(), locksmith=locksmith), max_attempts=1
        )
        assert result.outcome("a").failure_code is mesh.FailureCode.INVALID_OUTPUT_SCHEMA
        assert result.outcome("a").evidence.startswith("locksmith: $.")

    async def test_prover_that_crashes(self) -> None:
        """A prover raising is recorded as tooling_unavailable for the unit."""
        prover = FakeAdapter(script=[Raise(OSError("no shell"))] * 3)
        result = await execute([unit("a")], fake_roles(prover=prover), max_attempts=1)
        assert result.outcome("a").failure_code is mesh.FailureCode.TOOLING_UNAVAILABLE

    async def test_fixer_that_crashes_then_recovers(self) -> None:
        """A fixer failure means rework; the next attempt can still complete."""
        fixer = FakeAdapter(script=[Raise(RuntimeError("model overloaded"))])
        result = await execute([unit("a")], fake_roles(fixer=fixer))
        assert (result.outcome("a").state, result.outcome("a").attempts) == ("completed", 2)
        assert result.metrics.reworks == 1

    async def test_fixer_asks_for_rework(self) -> None:
        """A rework_required verdict carries its failure code into the unit's failure."""
        fixer = FakeAdapter(
            lambda r: answer(
                r,
                decision="rework_required",
                selected_candidate=None,
                failure_code="requires_clarification",
                notes="objective is ambiguous",
            )
        )
        result = await execute([unit("a")], fake_roles(fixer=fixer))
        outcome = result.outcome("a")
        assert (outcome.failure_code, outcome.evidence, outcome.attempts) == (
            mesh.FailureCode.REQUIRES_CLARIFICATION,
            "objective is ambiguous",
            2,
        )

    async def test_fixer_accepting_an_unproven_candidate_counts_for_nothing(self) -> None:
        """Approving a candidate whose proof failed is not an approval: it is an invalid answer."""

        def prove(request: mesh.ProofRequest) -> dict[str, object]:
            if request.candidate_id.endswith("-1"):
                return answer(request, decision="fail", proof_status="fail")
            return answer(request)

        fixer = FakeAdapter(lambda r: answer(r, selected_candidate=f"{r.unit.id}-coder-1"))
        result = await execute(
            [unit("a")], fake_roles(prover=FakeAdapter(prove), fixer=fixer), max_attempts=1
        )
        assert result.outcome("a").failure_code is mesh.FailureCode.INVALID_OUTPUT_SCHEMA
        assert result.outcome("a").evidence.startswith(
            "fixer: $.selected_candidate: 'a-coder-1' is not one of the proven candidates"
        )

    async def test_errors_under_a_manual_clock(self) -> None:
        """An adapter raising while a manual clock times the call is still an aborted turn."""
        clock = ManualClock()
        integrator = FakeAdapter(script=[Raise(ValueError("bad diff"))])
        async with clock.autojumping():
            result = await execute([unit("a")], fake_roles(integrator=integrator), clock=clock)
        assert result.outcome("a").evidence == "integrator: ValueError: bad diff"

    async def test_no_timeout(self) -> None:
        """call_timeout=None lets calls take as long as they take."""
        result = await execute([unit("a")], fake_roles(), call_timeout=None)
        assert result.outcome("a").state == "completed"


class TestLeases:
    async def test_table_reclaims_expired_leases(self) -> None:
        """An expired lease no longer blocks an overlapping request."""
        clock = ManualClock()
        table = mesh.LeaseTable(clock=clock)
        first = lease_request("a", "src", ttl_ms=1000)
        second = lease_request("b", "src/x", ttl_ms=1000)
        assert (await table(first))["decision"] == "grant"
        assert (await table(second))["decision"] == "deny"
        clock.advance(1.5)
        assert table.active == ()
        assert (await table(second))["decision"] == "grant"

    async def test_a_renewed_lease_outlives_its_first_expiry(self) -> None:
        """Renewing moves the expiry: the lease holds past the first one, then expires."""
        clock = ManualClock()
        table = mesh.LeaseTable(clock=clock)
        mine = lease_request("a", "src", ttl_ms=1000)
        theirs = lease_request("b", "src", ttl_ms=1000)
        granted = await table(mine)
        clock.advance(0.8)
        assert (await table(attrs.evolve(mine, candidate_id="a-coder-2")))["notes"] == "renewed"
        clock.advance(0.8)  # past the first expiry, not the renewed one
        denied = await table(theirs)
        assert (denied["decision"], denied["lease_id"]) == ("deny", granted["lease_id"])
        clock.advance(0.5)
        assert (await table(theirs))["decision"] == "grant"
        assert table.active == (("b", ("src",)),)

    async def test_same_holder_shares_and_renews(self) -> None:
        """A unit never conflicts with itself: the same scope renews, another scope adds a lease."""
        table = mesh.LeaseTable()
        request = mesh.LeaseRequest(
            unit=unit("a"),
            candidate_id="a-coder-1",
            action="acquire",
            holder="a",
            write_scope=("src",),
            ttl_ms=60_000,
        )
        granted = await table(request)
        renewed = await table(attrs.evolve(request, candidate_id="a-coder-2"))
        other = await table(attrs.evolve(request, write_scope=("src/sub",)))
        assert granted["lease_id"] == renewed["lease_id"]
        assert renewed["notes"] == "renewed"
        assert other["decision"] == "grant"
        assert other["lease_id"] != granted["lease_id"]
        await table(attrs.evolve(request, action="release", lease_id=str(other["lease_id"])))
        assert table.active == (("a", ("src",)),)  # the holder keeps its other lease
        released = await table(attrs.evolve(request, action="release", lease_id="lease-404"))
        assert released["notes"] == "already released or expired"

    async def test_explicit_table_uses_the_run_clock(self) -> None:
        """A LeaseTable given without a clock adopts the orchestrator's."""
        clock = ManualClock(start=100)
        table = mesh.LeaseTable()
        async with clock.autojumping():
            await execute([unit("a")], attrs.evolve(fake_roles(), locksmith=table), clock=clock)
        table_clock = ManualClock(start=5)
        kept = mesh.LeaseTable(clock=table_clock)
        kept.bind_clock(clock)
        assert kept._clock is table_clock

    async def test_backpressure_serializes_overlapping_units(self) -> None:
        """Units admitted under backpressure never run beside a unit whose scope overlaps."""

        async def author(request: mesh.AuthorRequest) -> dict[str, object]:
            if request.unit.id == "reject-me":
                return answer(request, decision="reject", patch=None, notes="no")
            if request.unit.id == "gate":
                # The gate finishes after the rejection has lowered the limit.
                await anyio.sleep(0.05)
            return answer(request)

        running: set[str] = set()
        together: list[set[str]] = []

        class Track(FakeAdapter):
            async def __call__(self, request: Any) -> object:
                running.add(request.unit.id)
                together.append(set(running))
                await anyio.sleep(0.01)
                running.discard(request.unit.id)
                return await super().__call__(request)

        plan = [
            unit("reject-me", scope="elsewhere"),
            unit("gate", scope="gate"),
            *(unit(f"s{i}", "gate", scope="src") for i in range(3)),
        ]
        result = await execute(
            plan,
            fake_roles(coder=FakeAdapter(author), applier=Track()),
            max_threads=8,
            max_attempts=1,
            clean_stretch=10,
        )
        assert result.metrics.backpressure_events >= 1
        assert [o.state for o in result.outcomes] == ["failed"] + ["completed"] * 4
        assert [group for group in together if len(group & {"s0", "s1", "s2"}) > 1] == []


class TestBudgetProviders:
    async def test_sync_provider_and_same_target(self) -> None:
        """A sync provider works; a new decision with the same target changes no limit."""
        decisions = [
            mesh.budget_policy(remaining_five_hour=80, remaining_weekly=80, max_threads=2),
            mesh.budget_policy(remaining_five_hour=70, remaining_weekly=80, max_threads=2),
        ]
        calls = iter(range(100))

        def provider() -> mesh.BudgetDecision:
            return decisions[min(next(calls), 1)]

        async with mesh.Orchestrator(roles=fake_roles(), budget=provider) as run:
            result = await run.execute([unit(f"u{i}") for i in range(4)])
        assert result.metrics.targets_seen == (2,)
        assert result.metrics.backpressure_events == 0

    async def test_provider_returning_nonsense(self) -> None:
        """A provider must return a BudgetDecision."""
        with pytest.raises(ExceptionGroup) as caught:
            await execute([unit("a")], fake_roles(), budget=lambda: 42)
        assert caught.group_contains(mesh.InputError, match="returned int, not BudgetDecision") or (
            isinstance(caught.value, mesh.InputError)
        )

    async def test_concurrent_execute_is_refused(self) -> None:
        """One orchestrator runs one plan at a time."""
        orchestrator = mesh.Orchestrator(roles=fake_roles(prover=FakeAdapter(delay=0.05)))
        async with orchestrator, anyio.create_task_group() as group:
            group.start_soon(orchestrator.execute, [unit("a")])
            await anyio.sleep(0.01)
            with pytest.raises(mesh.MeshError, match="already executing"):
                await orchestrator.execute([unit("b")])


class TestPlansAndResults:
    async def test_plan_record_and_units_document(self) -> None:
        """Execute accepts a Plan record and a units document."""
        plan = mesh.parse_plan([{"id": "a", "step": "x"}, {"id": "b", "step": "y", "deps": ["a"]}])
        first = await execute(plan, fake_roles())
        second = await execute(mesh.slice_plan(plan).to_document(), fake_roles())
        assert (
            [o.state for o in first.outcomes]
            == [o.state for o in second.outcomes]
            == ["completed", "completed"]
        )

    async def test_result_views(self, tmp_path: Path) -> None:
        """RunResult groups outcomes, renders its ledger and checks cleanly when all completed."""
        result = await execute([unit("a"), unit("b", "a")], fake_roles())
        assert [o.unit_id for o in result.completed] == ["a", "b"]
        assert result.failed == result.blocked == ()
        assert result.ledger().startswith("Orchestration Ledger\n")
        result.check()
        with pytest.raises(KeyError):
            result.outcome("zzz")
        with pytest.raises(mesh.FileAccessError):
            mesh.append_learning(result, tmp_path / "missing" / "learn.jsonl")
        empty = mesh.RunResult(run_id="r", outcomes=(), metrics=mesh.RunMetrics(), plan_state={})
        assert mesh.append_learning(empty, tmp_path / "l.jsonl") is None
        assert not (tmp_path / "l.jsonl").exists()

    async def test_diamond_below_a_failure_is_blocked_once(self) -> None:
        """A unit reached through two blocked paths gets one outcome and one event."""
        fixer = FakeAdapter(
            lambda r: (
                answer(r, decision="blocked_safety", selected_candidate=None, notes="no")
                if r.unit.id == "a"
                else answer(r)
            )
        )
        with mesh.testing.capture_ledger() as events:
            result = await execute(
                [unit("a"), unit("b", "a"), unit("c", "a"), unit("d", "b", "c")],
                fake_roles(fixer=fixer),
            )
        assert [(o.unit_id, o.state) for o in result.outcomes] == [
            ("a", "failed"),
            ("b", "blocked"),
            ("c", "blocked"),
            ("d", "blocked"),
        ]
        assert sorted(e.unit_id or "" for e in events if e.event == "unit_blocked") == [
            "b",
            "c",
            "d",
        ]

    async def test_statistics_count_blocked_units(self) -> None:
        """Blocked units show up in statistics."""
        fixer = FakeAdapter(
            lambda r: answer(r, decision="blocked_safety", selected_candidate=None, notes="no")
        )
        async with mesh.Orchestrator(roles=fake_roles(fixer=fixer)) as run:
            await run.execute([unit("a"), unit("b", "a")])
            assert run.statistics().by_state == {"failed": 1, "blocked": 1}


class TestInvoke:
    async def test_sync_callable_returning_awaitable(self) -> None:
        """A sync callable (a partial of an async function) is awaited after the thread call."""

        async def reply(prefix: str, request: str) -> str:
            return prefix + request

        assert await invoke(functools.partial(reply, "re: "), "x") == "re: x"
        assert await invoke(lambda request: reply("re: ", request), "y") == "re: y"

    def test_worker_result_objects_are_rechecked(self) -> None:
        """An adapter may answer with a WorkerResult; it is validated like a document."""
        request = first_coder_request(unit("a"))
        parsed = mesh.parse_worker_result(answer(request))
        assert (
            check_result(parsed, unit=unit("a"), candidate_id="a-coder-1", lane=mesh.Lane.CODER)
            == parsed
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="lane"):
            check_result(parsed, unit=unit("a"), candidate_id="a-coder-1", lane=mesh.Lane.REDUCER)


class TestSinks:
    def test_json_lines_sink_context_and_errors(self, tmp_path: Path) -> None:
        """The JSON-lines sink closes as a context manager and reports unwritable paths."""
        event = mesh.LedgerEvent(event="x", run_id="r", seq=1, at=0.0, lane=mesh.Lane.CODER)
        with mesh.JsonLinesSink(tmp_path / "a.jsonl") as sink:
            sink.emit(event)
        assert json.loads((tmp_path / "a.jsonl").read_text())["lane"] == "coder"
        (tmp_path / "file").write_text("")
        with pytest.raises(mesh.FileAccessError, match="cannot open ledger"):
            mesh.JsonLinesSink(tmp_path / "file" / "ledger.jsonl")

    def test_memory_sink(self) -> None:
        """MemorySink keeps events; LedgerSink is a runtime-checkable protocol."""
        sink = mesh.MemorySink()
        assert isinstance(sink, mesh.LedgerSink)
        sink.emit(mesh.LedgerEvent(event="x", run_id="r", seq=1, at=0.0))
        assert [e.event for e in sink.events] == ["x"]


class TestDelivery:
    async def test_deliveries_are_serialized_and_cumulative(self) -> None:
        """One delivery at a time, each carrying the plan state the previous one wrote."""
        seen: list[list[str]] = []
        delivering = 0
        overlap = False

        async def deliver(request: mesh.DeliveryRequest) -> dict[str, object]:
            nonlocal delivering, overlap
            delivering += 1
            overlap = overlap or delivering > 1
            await anyio.sleep(0.02)
            seen.append([step["status"] for step in request.plan_state["plan"]])
            delivering -= 1
            return answer(request)

        result = await execute(
            [unit(f"u{i}") for i in range(3)], fake_roles(integrator=FakeAdapter(deliver))
        )
        assert len(result.completed) == 3
        assert not overlap
        assert [state.count("completed") for state in seen] == [1, 2, 3]


@pytest.mark.mesh_strict(strict=False)
@pytest.mark.parametrize("where", ["a fan-out's last call", "a call of its own"])
def test_a_stray_cancelled_error_from_an_adapter_is_that_calls_error(where: str) -> None:
    """
    asyncio: an adapter awaiting a future someone else cancelled fails its call, not the run.

    (Passed on, it looked like the unit being cancelled: the run stopped with a KeyError.)
    """

    async def stray() -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    async def coder(request: mesh.AuthorRequest) -> dict[str, object]:
        if where.startswith("a fan-out") and request.triplet_index == 3:
            await stray()
        return answer(request)

    async def integrator(request: mesh.DeliveryRequest) -> dict[str, object]:
        if where.endswith("own") and request.unit.id == "u2":
            await stray()
        return answer(request)

    roles = fake_roles(
        coder=FakeAdapter(coder), reducer=FakeAdapter(coder), integrator=FakeAdapter(integrator)
    )
    result = mesh.run([_unit("u1"), _unit("u2")], roles=roles, backend="asyncio")
    failed = [
        (o.unit_id, o.failure_code, o.evidence) for o in result.outcomes if o.state != "completed"
    ]
    if where.endswith("own"):
        assert failed == [
            ("u2", mesh.FailureCode.TOOLING_UNAVAILABLE, "integrator: CancelledError: ")
        ]
    else:
        assert failed == []  # the reducer's candidate failed; the two coders' were enough
        assert result.metrics.adapter_errors == 2
