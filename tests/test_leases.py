"""A lease belongs to a live holder: renewed while it works, never expired under it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mesh
from mesh.testing import FakeAdapter, ManualClock, answer, fake_roles

from engine_helpers import unit

pytestmark = pytest.mark.anyio


class Writers:
    """Who is applying or proving right now, and every moment two units did at once."""

    def __init__(self, clock: ManualClock, durations: dict[tuple[str, str], float]) -> None:
        self.clock = clock
        self.durations = durations
        self.working: Counter[str] = Counter()
        self.together: list[tuple[float, str, str]] = []

    def adapter(self, lane: str) -> FakeAdapter:
        async def work(request: Any) -> dict[str, object]:
            unit_id = request.unit.id
            for other in self.working:
                if other != unit_id and self.working[other]:
                    self.together.append((self.clock.current_time(), unit_id, other))
            self.working[unit_id] += 1
            try:
                await self.clock.sleep(self.durations.get((unit_id, lane), 1.0))
            finally:
                self.working[unit_id] -= 1
            return answer(request)

        return FakeAdapter(work)


class LostWhileShielded:
    """
    Units a and b on one scope; a's first renewal finds its lease gone (as if expired).

    a's third applier is in a shielded step then, its provers in plain, long work;
    ``overlaps`` records every apply of b while a prover of a still runs.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.table = mesh.LeaseTable(clock=clock)
        self.held: dict[str, str] = {}
        self.provers_of_a = 0
        self.overlaps: list[tuple[float, str]] = []

    async def locksmith(self, request: mesh.LeaseRequest) -> dict[str, object]:
        if request.action == "acquire" and request.holder == "a" and "a" in self.held:
            drop = attrs.evolve(request, action="release", lease_id=self.held.pop("a"))
            await self.table(drop)
            return answer(request, decision="deny", lease_id="none", notes="expired")
        result = await self.table(request)
        if request.action == "acquire" and result["decision"] == "grant":
            self.held.setdefault(request.holder, str(result["lease_id"]))
        return result

    async def coder(self, request: mesh.AuthorRequest) -> dict[str, object]:
        if request.unit.id == "b":
            await self.clock.sleep(1)  # a takes the scope first
        return answer(request)

    async def applier(self, request: mesh.ApplyRequest) -> dict[str, object]:
        if request.unit.id == "b" and self.provers_of_a:
            self.overlaps.append((self.clock.current_time(), request.candidate_id))
        if request.unit.id == "a" and request.candidate_id.endswith("-3"):
            with anyio.CancelScope(shield=True):  # an uninterruptible step
                await self.clock.sleep(400)
        return answer(request)

    async def prover(self, request: mesh.ProofRequest) -> dict[str, object]:
        if request.unit.id == "a":
            self.provers_of_a += 1
            try:
                await self.clock.sleep(500)
            finally:
                self.provers_of_a -= 1
        return answer(request)


async def execute_recorded(
    clock: ManualClock, roles: mesh.Roles, plan: list[mesh.Unit], **options: Any
) -> tuple[mesh.RunResult, list[mesh.LedgerEvent]]:
    """Run ``plan`` on ``clock`` (autojumping): its result and every ledger event."""
    events: list[mesh.LedgerEvent] = []
    async with (
        clock.autojumping(),
        mesh.Orchestrator(
            roles=roles, clock=clock, sinks=[mesh.MemorySink(events)], **options
        ) as run,
    ):
        return await run.execute(plan), events


async def run_with(
    plan: list[mesh.Unit], writers: Writers, **options: Any
) -> tuple[mesh.RunResult, list[mesh.LedgerEvent]]:
    events: list[mesh.LedgerEvent] = []
    roles = fake_roles(applier=writers.adapter("apply"), prover=writers.adapter("prove"))
    async with (
        writers.clock.autojumping(),
        mesh.Orchestrator(
            roles=roles, clock=writers.clock, sinks=[mesh.MemorySink(events)], **options
        ) as run,
    ):
        return await run.execute(plan), events


class TestRenewal:
    async def test_a_long_apply_and_proof_keep_their_lease(self) -> None:
        """
        The issue's case: apply 400 s, proof 590 s, default options (lease_ttl 900 s).

        The second unit with the same scope waits until the first is done.
        """
        clock = ManualClock()
        writers = Writers(clock, {("a", "apply"): 400, ("a", "prove"): 590})
        plan = [unit("a", scope="src/shared"), unit("b", scope="src/shared")]
        result, events = await run_with(plan, writers)
        assert [o.state for o in result.outcomes] == ["completed", "completed"]
        assert writers.together == []
        renewals = [
            e for e in events if e.event == "adapter_call" and e.data.get("action") == "renew"
        ]
        assert renewals, "a lease held past a third of its life is renewed"
        assert all(e.unit_id == "a" for e in renewals)

    @pytest.mark.timeout(300)
    @settings(max_examples=60, deadline=None, database=None)
    @given(
        durations=st.lists(st.tuples(st.floats(0, 20), st.floats(0, 20)), min_size=2, max_size=4),
        ttl=st.floats(1, 1000),
    )
    def test_overlapping_scopes_never_work_together(
        self, durations: list[tuple[float, float]], ttl: float
    ) -> None:
        """Random apply and proof times up to twenty lease lives each: never together (trio)."""
        self.never_together(durations, ttl, "trio")

    @pytest.mark.timeout(300)
    @settings(max_examples=4, deadline=None, database=None)
    @given(
        durations=st.lists(st.tuples(st.floats(0, 4), st.floats(0, 4)), min_size=2, max_size=2),
        ttl=st.floats(1, 1000),
    )
    def test_overlapping_scopes_never_work_together_on_asyncio(
        self, durations: list[tuple[float, float]], ttl: float
    ) -> None:
        """
        The same on asyncio, with fewer and shorter runs.

        There each jump of the manual clock with a task runnable costs anyio's
        0.1 s of real time (`anyio.wait_all_tasks_blocked`).
        """
        self.never_together(durations, ttl, "asyncio")

    @staticmethod
    def never_together(durations: list[tuple[float, float]], ttl: float, backend: str) -> None:
        names = [f"u{index}" for index in range(len(durations))]
        timing = {}
        for name, (apply, prove) in zip(names, durations, strict=True):
            timing[name, "apply"] = apply * ttl
            timing[name, "prove"] = prove * ttl
        plan = [unit(name, scope="src") for name in names]

        async def main() -> tuple[mesh.RunResult, Writers]:
            writers = Writers(ManualClock(), timing)
            result, _ = await run_with(plan, writers, lease_ttl=ttl, call_timeout=30 * ttl)
            return result, writers

        result, writers = anyio.run(main, backend=backend)
        assert [o.state for o in result.outcomes] == ["completed"] * len(names)
        assert writers.together == []

    async def test_a_lease_the_locksmith_will_not_renew_stops_the_work(self) -> None:
        """Lost (the locksmith denies the renewal): the proof is stopped, the unit fails."""
        clock = ManualClock()
        table = mesh.LeaseTable(clock=clock)

        async def locksmith(request: mesh.LeaseRequest) -> dict[str, object]:
            if request.action == "acquire" and clock.current_time() > 0:
                return answer(request, decision="deny", lease_id="none", notes="revoked")
            return await table(request)

        writers = Writers(clock, {("a", "prove"): 500})
        roles = fake_roles(
            locksmith=locksmith,
            applier=writers.adapter("apply"),
            prover=writers.adapter("prove"),
        )
        events: list[mesh.LedgerEvent] = []
        async with (
            clock.autojumping(),
            mesh.Orchestrator(
                roles=roles, clock=clock, sinks=[mesh.MemorySink(events)], lease_ttl=30
            ) as run,
        ):
            result = await run.execute([unit("a")])
        (outcome,) = result.outcomes
        assert (outcome.state, outcome.failure_code) == (
            "failed",
            mesh.FailureCode.SCOPE_OVERLAP_CONFLICT,
        )
        assert "was lost: revoked" in outcome.evidence
        assert [e.data["reason"] for e in events if e.event == "lease_lost"] == ["revoked"]
        assert clock.current_time() < 500  # stopped, not proved to the end
        assert table.active == ()

    async def test_a_lost_lease_stops_every_call_of_the_stage_at_once(self) -> None:
        """A's lease lost while an applier is shielded: its provers stop, B never works beside."""
        clock = ManualClock()
        scene = LostWhileShielded(clock)
        roles = fake_roles(
            locksmith=scene.locksmith,
            coder=FakeAdapter(scene.coder),
            reducer=FakeAdapter(scene.coder),
            applier=FakeAdapter(scene.applier),
            prover=FakeAdapter(scene.prover),
        )
        async with (
            clock.autojumping(),
            mesh.Orchestrator(roles=roles, clock=clock, lease_ttl=30, max_attempts=1) as run,
        ):
            result = await run.execute([unit("a", scope="src"), unit("b", scope="src")])
        assert [(o.unit_id, o.state) for o in result.outcomes] == [
            ("a", "failed"),
            ("b", "completed"),
        ]
        assert result.outcomes[0].failure_code is mesh.FailureCode.SCOPE_OVERLAP_CONFLICT
        assert scene.overlaps == []

    async def test_a_lease_granted_anew_goes_back(self) -> None:
        """The renewal answers with another lease (the held one had expired): lost, returned."""
        clock = ManualClock()
        table = mesh.LeaseTable(clock=clock)
        released: list[str | None] = []

        async def locksmith(request: mesh.LeaseRequest) -> dict[str, object]:
            if request.action == "release":
                released.append(request.lease_id)
            if request.action == "acquire" and clock.current_time() > 0:
                return answer(request, decision="grant", lease_id="lease-anew")
            return await table(request)

        writers = Writers(clock, {("a", "prove"): 500})
        roles = fake_roles(
            locksmith=locksmith, applier=writers.adapter("apply"), prover=writers.adapter("prove")
        )
        async with (
            clock.autojumping(),
            mesh.Orchestrator(roles=roles, clock=clock, lease_ttl=30) as run,
        ):
            result = await run.execute([unit("a")])
        assert result.outcomes[0].evidence.endswith("was lost: it had expired")
        assert released == ["lease-anew", "lease-1"]

    async def test_a_renewal_answered_after_the_unit_finished(self) -> None:
        """The unit ends while its renewal is under way: the late grant goes back, nothing lost."""
        clock = ManualClock()
        table = mesh.LeaseTable(clock=clock)
        finished = anyio.Event()
        released: list[str | None] = []

        async def locksmith(request: mesh.LeaseRequest) -> dict[str, object]:
            if request.action == "release":
                released.append(request.lease_id)
                finished.set()
            elif clock.current_time() > 0:  # the renewal: answered once the unit is done
                await finished.wait()
            return await table(request)

        writers = Writers(clock, {("a", "prove"): 15})
        roles = fake_roles(
            locksmith=locksmith, applier=writers.adapter("apply"), prover=writers.adapter("prove")
        )
        events: list[mesh.LedgerEvent] = []
        async with (
            clock.autojumping(),
            mesh.Orchestrator(
                roles=roles, clock=clock, lease_ttl=30, sinks=[mesh.MemorySink(events)]
            ) as run,
        ):
            result = await run.execute([unit("a")])
        assert result.outcomes[0].state == "completed"
        assert not [e for e in events if e.event == "lease_lost"]
        assert len(released) == 2  # the unit's own lease, then the one granted late
        assert table.active == ()

    async def test_a_lease_lost_while_delivering(self) -> None:
        """A delivery under way is not stopped by a lost lease: it finishes, the loss is logged."""
        clock = ManualClock()
        table = mesh.LeaseTable(clock=clock)
        delivering = anyio.Event()

        async def locksmith(request: mesh.LeaseRequest) -> dict[str, object]:
            if request.action == "acquire" and delivering.is_set():
                return answer(request, decision="deny", lease_id="none", notes="revoked")
            return await table(request)

        async def integrator(request: mesh.DeliveryRequest) -> dict[str, object]:
            delivering.set()
            await clock.sleep(100)
            return answer(request)

        roles = fake_roles(locksmith=locksmith, integrator=FakeAdapter(integrator))
        result, events = await execute_recorded(clock, roles, [unit("a")], lease_ttl=30)
        assert result.outcomes[0].state == "completed", result.outcomes[0].evidence
        assert [e.data["reason"] for e in events if e.event == "lease_lost"] == ["revoked"]


async def test_a_release_while_a_denial_is_being_judged_wakes_the_denied_unit() -> None:
    """A locksmith that takes its time to deny: a release meanwhile is not missed (no TTL wait)."""
    clock = ManualClock()
    table = mesh.LeaseTable(clock=clock)

    async def slow_locksmith(request: mesh.LeaseRequest) -> dict[str, object]:
        decided = await table(request)
        if decided["decision"] == "deny":
            await clock.sleep(5)  # judged at once, answered late; a meanwhile releases
        return decided

    async def prover(request: mesh.ProofRequest) -> dict[str, object]:
        await clock.sleep(2)
        return answer(request)

    roles = fake_roles(locksmith=slow_locksmith, prover=FakeAdapter(prover))
    plan = [unit("a", scope="src"), unit("b", scope="src")]
    result, events = await execute_recorded(clock, roles, plan, lease_ttl=900)
    assert [o.state for o in result.outcomes] == ["completed", "completed"]
    # Whichever unit came second (trio's task order varies) was denied once.
    assert len([e for e in events if e.event == "lease_denied"]) == 1
    assert clock.current_time() < 60  # asked again when its denial came, not after 900 s
