"""The streaming scheduler, run for real on asyncio and trio with fake role adapters."""

from __future__ import annotations

import functools
import json
import pickle
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import structlog

import mesh
from mesh.testing import FakeAdapter, Hang, ManualClock, Raise, answer, capture_ledger, fake_roles

from engine_helpers import execute, unit

pytestmark = pytest.mark.anyio
EXAMPLE_PLAN = Path(__file__).parents[1] / "examples" / "plan.json"


def names(events: Sequence[mesh.LedgerEvent], event: str) -> list[mesh.LedgerEvent]:
    return [e for e in events if e.event == event]


def fail_proof(request: mesh.ProofRequest) -> dict[str, object]:
    return answer(
        request,
        decision="fail",
        proof_status="fail",
        proof_evidence={"command": "pytest", "key_line": "1 failed", "exit_code": 1},
    )


class TestHappyPath:
    async def test_example_plan(self) -> None:
        """Every unit of the example plan completes; plan state marks them completed."""
        with capture_ledger() as events:
            result = await execute(json.loads(EXAMPLE_PLAN.read_text()), fake_roles())
        assert [o.state for o in result.outcomes] == ["completed"] * 3
        assert [s["status"] for s in result.plan_state["plan"]] == ["completed"] * 4
        transitions = names(events, "unit_transition")
        assert len(transitions) == 3 * 4
        assert {e.data["to_state"] for e in transitions} == {
            "candidates_ready",
            "proofs_ready",
            "fixer_accept",
            "completed",
        }
        calls = names(events, "adapter_call")
        assert all(e.duration_ms is not None and e.lane is not None for e in calls)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))

    @pytest.mark.parametrize("read_every", [1, 2, 5])
    async def test_each_delivery_sees_the_plan_state_as_of_its_own_step(
        self, read_every: int
    ) -> None:
        """A delivery's plan state holds the steps delivered before it, and its own, for good."""
        kept: list[tuple[str, mesh.DeliveryRequest]] = []
        fakes = fake_roles()
        deliver = FakeAdapter()

        async def integrator(request: mesh.DeliveryRequest) -> object:
            if len(kept) % read_every == 0:
                json.dumps(request.plan_state)  # a real dict, as an integrator writes it
                json.dumps(attrs.asdict(request))  # the request's public shape: plain data
                assert pickle.loads(pickle.dumps(request)) == request  # noqa: S301 - our own
            kept.append((request.unit.id, request))
            if request.unit.id == "u3":
                return answer(request, decision="blocked_delivery", notes="refused")
            return await deliver(request)

        units = [unit(f"u{i}", *([f"u{i - 1}"] if i % 4 else [])) for i in range(8)]
        result = await execute(units, attrs.evolve(fakes, integrator=integrator), max_attempts=1)
        delivered: list[str] = []
        for unit_id, request in kept:
            completed = [s["id"] for s in request.plan_state["plan"] if s["status"] == "completed"]
            assert sorted(completed) == sorted([*delivered, unit_id]), unit_id
            assert isinstance(request.plan_state, dict)
            if unit_id != "u3":
                delivered.append(unit_id)
        assert [s["status"] == "completed" for s in result.plan_state["plan"]] == [
            unit_id in delivered for unit_id in (u.id for u in units)
        ]
        assert isinstance(result.plan_state, dict)

    async def test_dependency_order_and_streaming(self) -> None:
        """A unit starts only after its deps complete, and without waiting for unrelated units."""
        slow = FakeAdapter(delay=0.2)
        roles = fake_roles(integrator=FakeAdapter(answer))
        roles = attrs.evolve(roles, coder=FakeAdapter(lambda r: slow_if(r, "slow")))
        with capture_ledger() as events:
            await execute([unit("slow"), unit("fast"), unit("next", "fast")], roles)
        finished = {e.unit_id: e.seq for e in names(events, "unit_finished")}
        started = {e.unit_id: e.seq for e in names(events, "unit_started")}
        assert started["next"] > finished["fast"]
        assert started["next"] < finished["slow"]  # no wave barrier
        del slow

    async def test_sync_adapters_run_in_threads(self) -> None:
        """Plain functions work as adapters."""
        roles = mesh.Roles(
            coder=answer,
            reducer=answer,
            applier=answer,
            prover=answer,
            fixer=answer,
            integrator=answer,
        )
        result = await execute([unit("a")], roles)
        assert result.outcome("a").state == "completed"


async def slow_if(request: mesh.AuthorRequest, unit_id: str) -> dict[str, object]:
    if request.unit.id == unit_id:
        await anyio.sleep(0.3)
    return answer(request)


class TestQuorum:
    @pytest.mark.parametrize(("risk", "fixers"), [("low", 1), ("med", 2), ("high", 3)])
    async def test_fixers_called_per_tier(self, risk: str, fixers: int) -> None:
        """Low risk asks 1 fixer, med 2, high 3, and all approve the same candidate."""
        fixer = FakeAdapter()
        result = await execute([unit("a", risk=risk)], fake_roles(fixer=fixer))
        assert len(fixer.calls) == fixers
        assert result.outcome("a").accepted_candidate == "a-coder-1"

    async def test_split_vote_is_no_quorum(self) -> None:
        """Two med-risk fixers picking different candidates do not accept; rework, then failure."""

        def split(request: mesh.AdjudicationRequest) -> dict[str, object]:
            picked = request.proven[request.fixer_index - 1][0].candidate_id
            return answer(request, selected_candidate=picked)

        result = await execute([unit("a")], fake_roles(fixer=FakeAdapter(split)))
        outcome = result.outcome("a")
        assert (outcome.state, outcome.failure_code, outcome.attempts) == (
            "failed",
            mesh.FailureCode.REQUIRES_CLARIFICATION,
            2,
        )
        assert "quorum" in outcome.evidence

    async def test_blocked_safety_fails_at_once(self) -> None:
        """A fixer blocking for safety fails the unit with safety_regression_risk, no rework."""
        fixer = FakeAdapter(
            lambda r: answer(
                r, decision="blocked_safety", selected_candidate=None, notes="drops auth check"
            )
        )
        result = await execute([unit("a", risk="low")], fake_roles(fixer=fixer))
        outcome = result.outcome("a")
        assert (outcome.failure_code, outcome.evidence, outcome.attempts) == (
            mesh.FailureCode.SAFETY_REGRESSION_RISK,
            "drops auth check",
            1,
        )


class TestProofs:
    async def test_one_proof_retry(self) -> None:
        """A failed proof is retried once; a pass on the retry counts."""
        prover = FakeAdapter(script=[fail_proof, fail_proof, fail_proof])
        with capture_ledger() as events:
            result = await execute([unit("a", risk="low")], fake_roles(prover=prover))
        assert result.outcome("a").state == "completed"
        assert [r.proof_attempt for r in prover.calls[:2]].count(2) >= 1
        assert len(names(events, "proof_retry")) >= 1

    async def test_proofs_that_never_pass(self) -> None:
        """When every candidate's proof fails twice, the unit fails proof_missing after rework."""
        prover = FakeAdapter(fail_proof)
        result = await execute([unit("a")], fake_roles(prover=prover))
        outcome = result.outcome("a")
        assert (outcome.state, outcome.failure_code) == ("failed", mesh.FailureCode.PROOF_MISSING)
        assert outcome.evidence == "pytest: 1 failed"
        assert len(prover.calls) == 3 * 2 * 2  # 3 candidates x 2 proof attempts x 2 unit attempts
        assert result.metrics.proof_fail_rate == 1.0

    async def test_apply_failures(self) -> None:
        """Candidates whose patch does not apply are never proved."""
        applier = FakeAdapter(lambda r: answer(r, decision="apply_failed", notes="conflict"))
        prover = FakeAdapter()
        result = await execute(
            [unit("a")], fake_roles(applier=applier, prover=prover), max_attempts=1
        )
        assert (result.outcome("a").failure_code, len(prover.calls)) == (
            mesh.FailureCode.PROOF_MISSING,
            0,
        )


class TestAdapterFailures:
    async def test_timeout_then_retry(self) -> None:
        """A hung call is retried once and the retry's answer is used."""
        clock = ManualClock()
        coder = FakeAdapter(script=[Hang()])
        with capture_ledger() as events:
            async with clock.autojumping():
                result = await execute(
                    [unit("a")], fake_roles(coder=coder), clock=clock, call_timeout=30
                )
        assert result.outcome("a").state == "completed"
        assert len(names(events, "adapter_retry")) == 1
        timeouts = [e for e in names(events, "adapter_call") if e.data["outcome"] == "timeout"]
        assert [e.duration_ms for e in timeouts] == [30_000]

    async def test_timeout_retry_exhausted(self) -> None:
        """Three timeouts (call, retry, replacement) end with timeout_retry_exhausted."""
        clock = ManualClock()
        integrator = FakeAdapter(script=[Hang(), Hang()])
        replacement = FakeAdapter(script=[Hang()])
        roles = attrs.evolve(
            fake_roles(integrator=integrator), replacements={mesh.Lane.INTEGRATOR: replacement}
        )
        with capture_ledger() as events:
            async with clock.autojumping():
                result = await execute([unit("a", risk="low")], roles, clock=clock, call_timeout=5)
        outcome = result.outcome("a")
        assert outcome.failure_code == mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED
        assert (len(integrator.calls), len(replacement.calls)) == (2, 1)
        assert [r.call for r in integrator.calls + replacement.calls] == [1, 2, 3]
        assert len(names(events, "adapter_replacement")) == 1
        assert result.metrics.timeouts == 3

    async def test_real_clock_timeout(self) -> None:
        """With the event loop's clock, a slow call times out too."""
        prover = FakeAdapter(script=[Hang()])
        result = await execute(
            [unit("a", risk="low")], fake_roles(prover=prover), call_timeout=0.05
        )
        assert result.outcome("a").state == "completed"
        assert result.metrics.timeout_retries == 1

    @pytest.mark.mesh_strict(strict=False)
    async def test_invalid_output_schema(self) -> None:
        """Garbage answers become invalid_output_schema events, failures and backpressure."""
        coder = FakeAdapter(lambda r: {"id": r.unit.id, "decision": "done"})
        with capture_ledger() as events:
            result = await execute([unit("a")], fake_roles(coder=coder), max_attempts=1)
        outcome = result.outcome("a")
        assert outcome.failure_code == mesh.FailureCode.INVALID_OUTPUT_SCHEMA
        invalid = [
            e for e in names(events, "adapter_call") if e.data["outcome"] == "invalid_output_schema"
        ]
        assert len(invalid) == 2
        assert "$.candidate_id: required key missing" in invalid[0].data["problems"]  # type: ignore[operator]
        assert names(events, "concurrency_changed")[0].data["reason"] == "backpressure"

    @pytest.mark.mesh_strict(strict=False)
    async def test_answer_about_another_candidate(self) -> None:
        """An answer naming the wrong candidate is invalid, even if well-formed."""
        applier = FakeAdapter(lambda r: answer(r, candidate_id="someone-else"))
        result = await execute([unit("a")], fake_roles(applier=applier), max_attempts=1)
        outcome = result.outcome("a")
        assert outcome.failure_code == mesh.FailureCode.INVALID_OUTPUT_SCHEMA
        assert "expected 'a-coder-" in outcome.evidence

    @pytest.mark.mesh_strict(strict=False)
    async def test_adapter_exception(self) -> None:
        """An adapter that raises is an aborted turn: tooling_unavailable, nothing crashes."""
        integrator = FakeAdapter(script=[Raise(ConnectionError("agent gone"))])
        result = await execute([unit("a", risk="low")], fake_roles(integrator=integrator))
        outcome = result.outcome("a")
        assert (outcome.failure_code, outcome.evidence) == (
            mesh.FailureCode.TOOLING_UNAVAILABLE,
            "integrator: ConnectionError: agent gone",
        )

    async def test_blocked_delivery(self) -> None:
        """An integrator refusing delivery fails the unit with delivery_blocked."""
        integrator = FakeAdapter(
            lambda r: answer(r, decision="blocked_delivery", notes="dirty tree")
        )
        result = await execute([unit("a", risk="low")], fake_roles(integrator=integrator))
        assert (result.outcome("a").failure_code, result.outcome("a").evidence) == (
            mesh.FailureCode.DELIVERY_BLOCKED,
            "dirty tree",
        )

    async def test_rejecting_authors(self) -> None:
        """Authors that reject leave too few candidates: rework, then failure."""
        coder = FakeAdapter(lambda r: answer(r, decision="reject", patch=None, notes="unclear"))
        with capture_ledger() as events:
            result = await execute([unit("a")], fake_roles(coder=coder, reducer=coder))
        assert result.outcome("a").failure_code == mesh.FailureCode.REQUIRES_CLARIFICATION
        assert len(names(events, "rework")) == 1
        assert result.metrics.reject_rate == 1.0


class TestBlocking:
    async def test_dependents_of_a_failed_unit_are_blocked(self) -> None:
        """Failure blocks dependents transitively; unrelated units still complete."""
        fixer = FakeAdapter(
            lambda r: (
                answer(r, decision="blocked_safety", selected_candidate=None, notes="unsafe")
                if r.unit.id == "a"
                else answer(r)
            )
        )
        plan = [unit("a"), unit("b", "a"), unit("c", "b"), unit("d")]
        result = await execute(plan, fake_roles(fixer=fixer))
        states = {o.unit_id: (o.state, o.blocked_by) for o in result.outcomes}
        assert states == {
            "a": ("failed", None),
            "b": ("blocked", "a"),
            "c": ("blocked", "b"),
            "d": ("completed", None),
        }
        with pytest.raises(mesh.RunFailed) as caught:
            result.check()
        assert [e.unit_id for e in caught.value.failures] == ["a", "b", "c"]

    async def test_dependency_on_a_step_outside_the_run(self) -> None:
        """A unit waiting on a plan step that is neither done nor sliced is blocked by it."""
        plan = {
            "plan": [
                {"id": "held", "step": "x", "status": "blocked"},
                {"id": "b", "step": "y", "deps": ["held"]},
            ]
        }
        result = await execute(plan, fake_roles())
        assert (result.outcomes[0].state, result.outcomes[0].blocked_by) == ("blocked", "held")

    async def test_unknown_dependency_in_units(self) -> None:
        """Units naming an unknown dependency are refused before anything runs."""
        with pytest.raises(mesh.PlanError, match="unknown id 'ghost'"):
            await execute([unit("a", "ghost")], fake_roles())


class TestConcurrency:
    async def test_budget_caps_units_in_flight(self) -> None:
        """No more units run at once than the budget's target."""
        budget = mesh.budget_policy(remaining_five_hour=20, remaining_weekly=90, max_threads=6)
        roles = fake_roles(prover=FakeAdapter(delay=0.01))
        result = await execute([unit(f"u{i}") for i in range(12)], roles, budget=budget)
        assert budget.max_active_units == 2
        assert result.metrics.peak_in_flight == 2
        assert result.metrics.completed == 12

    async def test_ready_units_start_by_longest_remaining_path(self) -> None:
        """With estimates, the head of the longest chain starts before shorter work."""
        plan = [
            attrs.evolve(unit("short"), estimate_seconds=5.0),
            attrs.evolve(unit("lone"), estimate_seconds=1.0),
            attrs.evolve(unit("head"), estimate_seconds=2.0),
            attrs.evolve(unit("tail", "head"), estimate_seconds=9.0),
        ]
        one_at_a_time = mesh.budget_policy(
            remaining_five_hour=100, remaining_weekly=100, max_threads=1
        )
        with capture_ledger() as events:
            await execute(plan, fake_roles(), budget=one_at_a_time)
        started = [e.unit_id for e in names(events, "unit_started")]
        assert started == ["head", "tail", "short", "lone"]

    async def test_given_estimates_take_precedence(self) -> None:
        """Estimates given to the orchestrator (a past run's durations) outrank the units' own."""
        plan = [
            attrs.evolve(unit("a"), estimate_seconds=50.0),
            unit("b"),
            attrs.evolve(unit("c"), estimate_seconds=1.0),
        ]
        one_at_a_time = mesh.budget_policy(
            remaining_five_hour=100, remaining_weekly=100, max_threads=1
        )
        with capture_ledger() as events:
            await execute(plan, fake_roles(), budget=one_at_a_time, estimates={"a": 2.0, "b": 30.0})
        assert [e.unit_id for e in names(events, "unit_started")] == ["b", "a", "c"]

    @pytest.mark.parametrize(
        ("estimates", "message"),
        [
            ([("a", 1.0)], "estimates must map unit ids to seconds, got list"),
            ({1: 2.0}, "estimates: unit ids are strings, got int"),
            ({"a": 0}, r"estimates\['a'\]: expected a positive, finite number of seconds, got 0"),
            ({"a": None}, r"estimates\['a'\]: expected a number of seconds"),
            ({"a": "5"}, r"estimates\['a'\]: expected a number of seconds, got str"),
        ],
    )
    def test_bad_estimates_are_input_errors(self, estimates: object, message: str) -> None:
        """Estimates are checked when the orchestrator is made, before any run."""
        with pytest.raises(mesh.InputError, match=message):
            mesh.Orchestrator(roles=fake_roles(), estimates=estimates)  # type: ignore[arg-type]

    async def test_without_estimates_plan_order_stands(self) -> None:
        """No estimate anywhere: ready units start in plan order, as before."""
        plan = [unit("c"), unit("a"), unit("b", "a")]
        one_at_a_time = mesh.budget_policy(
            remaining_five_hour=100, remaining_weekly=100, max_threads=1
        )
        with capture_ledger() as events:
            await execute(plan, fake_roles(), budget=one_at_a_time)
        assert [e.unit_id for e in names(events, "unit_started")] == ["c", "a", "b"]

    async def test_a_lease_table_subclass_is_called_as_it_is(self) -> None:
        """A LeaseTable subclass's own __call__ judges every lease (no shortcut around it)."""
        calls: list[str] = []

        class Audited(mesh.LeaseTable):
            async def __call__(self, request: mesh.LeaseRequest) -> dict[str, object]:
                calls.append(request.action)
                return await super().__call__(request)

        result = await execute([unit("a")], attrs.evolve(fake_roles(), locksmith=Audited()))
        assert result.metrics.completed == 1
        assert calls.count("acquire") == 1  # one lease for all three candidates
        assert calls.count("release") == 1

    async def test_budget_is_re_read(self) -> None:
        """A budget provider is consulted during the run; its new target takes effect."""
        decisions = iter(
            [mesh.budget_policy(remaining_five_hour=80, remaining_weekly=80, max_threads=4)]
        )
        low = mesh.budget_policy(remaining_five_hour=5, remaining_weekly=80)

        async def provider() -> mesh.BudgetDecision:
            return next(decisions, low)

        with capture_ledger() as events:
            result = await execute([unit(f"u{i}") for i in range(8)], fake_roles(), budget=provider)
        targets = [e.data["target"] for e in names(events, "budget_read")]
        assert targets == [4, 1]
        assert result.metrics.targets_seen == (4, 1)
        reducer_calls = [e for e in names(events, "adapter_call") if e.lane is mesh.Lane.REDUCER]
        assert len(reducer_calls) < 8  # critical budget narrowed the width to 1

    async def test_narrow_budget_width(self) -> None:
        """A low budget narrows candidates to two (no reducer)."""
        reducer = FakeAdapter()
        budget = mesh.budget_policy(remaining_five_hour=12, remaining_weekly=80)
        result = await execute([unit("a")], fake_roles(reducer=reducer), budget=budget)
        assert (result.outcome("a").state, reducer.calls) == ("completed", [])

    async def test_overlapping_scopes_never_hold_leases_together(self) -> None:
        """Units whose write scopes overlap never apply/prove at the same time."""
        active: dict[str, tuple[str, ...]] = {}
        overlaps: list[tuple[str, str]] = []

        async def prove(request: mesh.ProofRequest) -> dict[str, object]:
            for other, scope in active.items():
                if other != request.unit.id and mesh.scopes_overlap(
                    scope, request.unit.write_scope
                ):
                    overlaps.append((other, request.unit.id))
            active[request.unit.id] = request.unit.write_scope
            await anyio.sleep(0.02)
            return answer(request)

        class Release(FakeAdapter):
            async def __call__(self, request: Any) -> object:
                active.pop(request.unit.id, None)
                return await super().__call__(request)

        plan = [
            unit("a", scope="src/api"),
            unit("b", scope="src/api/routes.py"),
            unit("c", scope="docs"),
            unit("d", scope="src"),
        ]
        with capture_ledger() as events:
            result = await execute(
                plan, fake_roles(prover=FakeAdapter(prove), integrator=Release())
            )
        assert overlaps == []
        assert result.metrics.completed == 4
        assert result.metrics.scope_conflict_requeues >= 2
        assert len(names(events, "lease_denied")) == result.metrics.scope_conflict_requeues

    async def test_backpressure_lowers_and_restores(self) -> None:
        """Timeouts halve the limit and serialize; a clean stretch restores the target."""
        clock = ManualClock()
        # Every author call takes 0.5 s, so units keep finishing after the timeouts at t=1.
        coder = FakeAdapter(script=[Hang(), Hang()], delay=0.5, clock=clock)
        with capture_ledger() as events:
            async with clock.autojumping():
                result = await execute(
                    [unit(f"u{i}") for i in range(30)],
                    fake_roles(coder=coder),
                    budget=mesh.budget_policy(
                        remaining_five_hour=90, remaining_weekly=90, max_threads=8
                    ),
                    clock=clock,
                    call_timeout=1,
                    clean_stretch=2,
                )
        changes = [
            (e.data["reason"], e.data["limit"]) for e in names(events, "concurrency_changed")
        ]
        assert ("backpressure", 4) in changes
        assert changes[-1] == ("restored", 8)
        assert result.metrics.restores >= 1
        assert result.metrics.completed == 30

    async def test_thousand_unit_dag(self) -> None:
        """A random 1,000-unit DAG finishes, every unit after all its dependencies."""
        rng = random.Random(7)
        plan = [
            unit(f"u{i:04}", *(f"u{j:04}" for j in rng.sample(range(i), min(i, rng.randint(0, 3)))))
            for i in range(1000)
        ]
        rng.shuffle(plan)
        finished: dict[str, int] = {}
        started: dict[str, int] = {}

        def watch(event: mesh.LedgerEvent) -> None:
            if event.event == "unit_finished" and event.unit_id:
                finished[event.unit_id] = event.seq
            elif event.event == "unit_started" and event.unit_id:
                started[event.unit_id] = event.seq

        roles = fake_roles()
        result = await execute(plan, roles, sinks=[mesh.CallbackSink(watch)], max_threads=32)
        assert result.metrics.completed == 1000
        for u in plan:
            assert all(finished[dep] < started[u.id] for dep in u.deps)


class TestCancellation:
    async def test_cancel_mid_run_leaves_no_tasks_or_leases(self) -> None:
        """Cancelling a run stops every unit task and releases every lease."""
        table = mesh.LeaseTable()
        proving = anyio.Event()

        async def prover(request: mesh.ProofRequest) -> dict[str, object]:
            proving.set()
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover

        roles = attrs.evolve(fake_roles(prover=prover), locksmith=table)
        before = len(anyio.get_running_tasks())
        seen: list[mesh.LedgerEvent] = []
        plan = [unit(f"u{i}") for i in range(20)]
        async with anyio.create_task_group() as group:
            group.start_soon(
                functools.partial(execute, plan, roles, sinks=[mesh.CallbackSink(seen.append)])
            )
            # Cancelled mid-run: units hold leases and wait in their proofs.
            await proving.wait()
            assert table.active
            group.cancel_scope.cancel()
        assert any(e.event == "adapter_call" for e in seen)
        assert not any(e.event == "run_finished" for e in seen)
        await anyio.wait_all_tasks_blocked()
        assert len(anyio.get_running_tasks()) == before
        assert table.active == ()

    async def test_execute_needs_async_with(self) -> None:
        """Calling execute outside `async with` is a clear mesh error."""
        with pytest.raises(mesh.MeshError, match="async with"):
            await mesh.Orchestrator(roles=fake_roles()).execute([unit("a")])


class TestObserving:
    async def test_statistics_while_running(self) -> None:
        """statistics() reports units by state during the run."""
        snapshots: list[mesh.RunStatistics] = []
        orchestrator = mesh.Orchestrator(roles=fake_roles(), max_threads=2)

        def watch(event: mesh.LedgerEvent) -> None:
            if event.event == "unit_transition":
                snapshots.append(orchestrator.statistics())

        orchestrator = mesh.Orchestrator(
            roles=fake_roles(), max_threads=2, sinks=[mesh.CallbackSink(watch)]
        )
        async with orchestrator:
            await orchestrator.execute([unit(f"u{i}") for i in range(4)])
        assert snapshots
        assert all(s.in_flight <= 2 and s.units_total == 4 for s in snapshots)
        assert snapshots[-1].by_state.get(mesh.OutcomeState.COMPLETED) == 4
        assert orchestrator.statistics().finished == 4
        # Units in flight count by their lifecycle state, finished ones by their outcome.
        seen = {type(state) for s in snapshots for state in s.by_state}
        assert seen == {mesh.UnitState, mesh.OutcomeState}

    async def test_json_lines_and_structlog_sinks(self, tmp_path: Path) -> None:
        """The ledger file gets one JSON line per event; structlog stays unconfigured."""
        path = tmp_path / "ledger" / "run.jsonl"
        captured: list[dict[str, object]] = []

        class Logger:
            def info(self, event: str, **fields: object) -> None:
                captured.append({"event": event, **fields})

        result = await execute(
            [unit("a")],
            fake_roles(),
            ledger_path=path,
            sinks=[mesh.StructlogSink(Logger())],
            run_id="run-1",
        )
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines[0]["event"] == "run_started"
        assert lines[-1]["event"] == "run_finished"
        assert all(line["run_id"] == "run-1" for line in lines)
        assert len(captured) == len(lines)
        assert not structlog.is_configured()
        assert result.run_id == "run-1"

    async def test_orchestrator_options_are_checked(self) -> None:
        """Nonsense options are input errors."""
        with pytest.raises(mesh.InputError):
            mesh.Orchestrator(roles=fake_roles(), max_attempts=0)
        with pytest.raises(mesh.InputError):
            mesh.Orchestrator(roles=fake_roles(), call_timeout=0)


def test_sync_run_on_both_backends(tmp_path: Path) -> None:
    """mesh.run works from synchronous code on asyncio and trio, and writes a learning."""
    for backend in ("asyncio", "trio"):
        result = mesh.run([unit("a"), unit("b", "a")], roles=fake_roles(), backend=backend)
        assert [o.state for o in result.outcomes] == ["completed", "completed"]
        learning = mesh.append_learning(result, tmp_path / ".learnings.jsonl")
        assert learning is not None
        assert "completed" in learning
    lines = (tmp_path / ".learnings.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["source"] == "mesh"
