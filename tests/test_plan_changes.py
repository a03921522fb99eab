"""Plan changes during a run: adding, editing and cancelling steps while units stream."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import mesh
import mesh.engine._scheduler
from mesh.testing import FakeAdapter, answer, capture_ledger, fake_roles

from engine_helpers import new_file_answer, unit

pytestmark = pytest.mark.anyio


def step(
    step_id: str, *deps: str, text: str | None = None, status: str = "pending"
) -> dict[str, Any]:
    return {
        "id": step_id,
        "step": text or f"do {step_id}",
        "deps": list(deps),
        "write_scope": [f"src/{step_id}"],
        "status": status,
    }


def plan(*steps: dict[str, Any]) -> dict[str, object]:
    return {"plan": list(steps)}


async def slow(request: object) -> object:
    await anyio.sleep(0.05)
    return answer(request)


async def hang(request: object) -> object:
    await anyio.sleep_forever()
    raise AssertionError  # pragma: no cover - never wakes


async def run_changing(
    first: object,
    change: Callable[[mesh.Orchestrator, mesh.LedgerEvent], None],
    roles: mesh.Roles | None = None,
    **options: Any,
) -> tuple[mesh.RunResult, list[mesh.LedgerEvent]]:
    """Run ``first``, calling ``change`` with every event as it happens (in the engine's loop)."""
    with capture_ledger() as ledger:
        async with mesh.Orchestrator(
            roles=roles or fake_roles(coder=FakeAdapter(slow)), **options
        ) as orchestrator:
            stream = orchestrator.events()
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    async for event in stream:
                        change(orchestrator, event)

                group.start_soon(watch)
                result = await orchestrator.execute(first)
    return result, ledger


def named(ledger: list[mesh.LedgerEvent], name: str) -> list[mesh.LedgerEvent]:
    return [event for event in ledger if event.event == name]


class TestChanges:
    async def test_a_step_added_mid_run_runs_and_is_in_the_plan_state(self) -> None:
        changes: list[mesh.PlanChange] = []

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and not changes:
                changes.append(run.update_plan(plan(step("a"), step("b", "a"), step("c", "a"))))

        result, ledger = await run_changing(plan(step("a"), step("b", "a")), change)
        assert changes[0].added == ("unit-003",)
        assert (changes[0].edited, changes[0].removed) == ((), ())
        assert [o.unit_id for o in result.outcomes] == ["unit-001", "unit-002", "unit-003"]
        assert all(o.state == "completed" for o in result.outcomes)
        assert [s["status"] for s in result.plan_state["plan"]] == ["completed"] * 3
        (recorded,) = named(ledger, "plan_changed")
        assert recorded.data["added"] == ["unit-003"]
        assert recorded.data["unit_ids"] == {"a": "unit-001", "b": "unit-002", "c": "unit-003"}

    async def test_an_edit_before_the_unit_starts_is_what_runs(self) -> None:
        coder = FakeAdapter(slow)

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and event.unit_id == "unit-001":
                edited = run.update_plan(plan(step("a"), step("b", text="the new b")))
                assert edited.edited == ("unit-002",)

        result, _ = await run_changing(
            plan(step("a"), step("b", "a")), change, fake_roles(coder=coder)
        )
        assert all(o.state == "completed" for o in result.outcomes)
        asked = {request.unit.objective for request in coder.calls}
        assert "the new b" in asked
        assert "do b" not in asked

    async def test_a_unit_that_started_cannot_be_edited(self) -> None:
        refused: list[str] = []

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and not refused:
                with pytest.raises(mesh.PlanError, match="unit-001 has started") as caught:
                    run.update_plan(plan(step("a", text="too late"), step("b", "a")))
                refused.append(str(caught.value))

        result, ledger = await run_changing(plan(step("a"), step("b", "a")), change)
        assert refused
        assert not named(ledger, "plan_changed")
        assert all(o.state == "completed" for o in result.outcomes)

    async def test_cancelling_a_running_unit_stops_its_calls(self) -> None:
        """Its hanging coders are cancelled, its leases released, it leaves without outcome."""
        roles = fake_roles(prover=FakeAdapter(hang))
        done: list[mesh.PlanChange] = []

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.lane is mesh.Lane.APPLIER and event.unit_id == "unit-002" and not done:
                done.append(run.update_plan(plan(step("a"))))

        first = plan(step("a"), step("b"))
        roles = fake_roles(
            prover=FakeAdapter(
                lambda request: hang(request) if request.unit.id == "unit-002" else answer(request)
            )
        )
        result, ledger = await run_changing(first, change, roles)
        assert done[0].removed == ("unit-002",)
        assert [o.unit_id for o in result.outcomes] == ["unit-001"]
        (cancelled,) = named(ledger, "unit_cancelled")
        assert cancelled.unit_id == "unit-002"
        assert not [e for e in named(ledger, "unit_finished") if e.unit_id == "unit-002"]
        leases = [e for e in ledger if e.unit_id == "unit-002" and "action" in e.data]
        assert [e.data["action"] for e in leases] == ["acquire", "release"]

    async def test_cancelling_a_waiting_unit_and_its_dependants(self) -> None:
        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and event.unit_id == "unit-001":
                change = run.update_plan(plan(step("a")))
                assert change.removed == ("unit-002", "unit-003")

        result, ledger = await run_changing(plan(step("a"), step("b", "a"), step("c", "b")), change)
        assert [o.unit_id for o in result.outcomes] == ["unit-001"]
        assert not named(ledger, "unit_cancelled")  # they never started

    async def test_a_new_unit_after_a_failed_one_is_blocked(self) -> None:
        def refuse_a(request: mesh.AuthorRequest) -> object:
            if request.unit.id == "unit-001":
                return mesh.answers.reject(request, reason="no")
            return answer(request)

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_finished" and event.unit_id == "unit-001":
                run.update_plan(plan(step("a"), step("b"), step("c", "a")))

        result, _ = await run_changing(
            plan(step("a"), step("b")), change, fake_roles(coder=FakeAdapter(refuse_a))
        )
        states = {o.unit_id: o.state for o in result.outcomes}
        assert states["unit-001"] == "failed"
        assert states["unit-003"] == "blocked"

    async def test_a_finished_step_marked_completed_keeps_its_outcome(self) -> None:
        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_finished" and event.unit_id == "unit-001":
                edit = run.update_plan(plan(step("a", status="completed"), step("b", "a")))
                assert edit.removed == ()

        result, _ = await run_changing(plan(step("a"), step("b", "a")), change)
        assert {o.unit_id for o in result.outcomes} == {"unit-001", "unit-002"}

    @pytest.mark.parametrize(
        ("new", "says"),
        [
            (plan(step("a", "b"), step("b", "a")), "cycle"),
            (plan(step("a", "zz")), "zz"),
            ({"plan": [{"step": "no id", "status": "pending"}]}, "every step needs an id"),
            ({"units": [{"id": "unit-001", "objective": "x"}]}, "same kind"),
        ],
    )
    async def test_bad_changes_are_refused_whole(self, new: object, says: str) -> None:
        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and event.unit_id == "unit-001":
                with pytest.raises((mesh.PlanError, mesh.ValidationError), match=says):
                    run.update_plan(new)

        result, ledger = await run_changing(plan(step("a"), step("b", "a")), change)
        assert not named(ledger, "plan_changed")
        assert len(result.outcomes) == 2

    async def test_units_are_matched_by_their_own_ids(self) -> None:
        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and event.unit_id == "x":
                edit = run.update_plan([unit("x"), unit("z", "x")])
                assert (edit.added, edit.removed) == (("z",), ("y",))
                with pytest.raises(mesh.PlanError, match="same kind"):
                    run.update_plan(plan(step("x")))

        result, _ = await run_changing([unit("x"), unit("y", "x")], change)
        assert [o.unit_id for o in result.outcomes] == ["x", "z"]

    async def test_an_unchanged_plan_changes_nothing(self) -> None:
        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started":
                assert not run.update_plan(plan(step("a"))).changed

        _, ledger = await run_changing(plan(step("a")), change)
        assert not named(ledger, "plan_changed")

    async def test_only_while_executing(self) -> None:
        async with mesh.Orchestrator(roles=fake_roles()) as orchestrator:
            with pytest.raises(mesh.MeshError, match="needs a run executing"):
                orchestrator.update_plan(plan(step("a")))


class TestHandles:
    async def test_through_start_async(self) -> None:
        async with mesh.start_async(
            plan(step("a"), step("b", "a")), roles=fake_roles(coder=FakeAdapter(slow))
        ) as run:
            with pytest.raises(mesh.MeshError, match="only while it executes"):
                run.update_plan(plan(step("a")))
            async for event in run.events():
                if event.event == "unit_started" and event.unit_id == "unit-001":
                    run.update_plan(plan(step("a"), step("b", "a"), step("c")))
            result = await run.result()
        assert len(result.outcomes) == 3

    def test_through_start(self) -> None:
        with mesh.start(
            plan(step("a"), step("b", "a")), roles=fake_roles(coder=FakeAdapter(slow))
        ) as run:
            for event in run.events():
                if event.event == "unit_started" and event.unit_id == "unit-001":
                    assert run.update_plan(plan(step("a"))).removed == ("unit-002",)
            result = run.result()
        assert [o.unit_id for o in result.outcomes] == ["unit-001"]
        with pytest.raises(mesh.MeshError, match="only while it executes"):
            run.update_plan(plan(step("a")))


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs."""


def file_coder(request: mesh.AuthorRequest) -> dict[str, object]:
    return new_file_answer(
        request, request.unit.write_scope[0] + "/file.txt", request.unit.objective
    )


class FileCoder:
    """Writes a file per unit; killed (as by kill -9) when it reaches ``kill``."""

    def __init__(self, kill: str | None = None) -> None:
        self.kill = kill

    def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
        if request.unit.id == self.kill:
            raise Killed
        return file_coder(request)


class TestDurable:
    async def test_a_resume_continues_the_changed_plan(self, repo: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        steps = [
            {**step("a"), "proof_command": "true"},
            {**step("b", "a"), "proof_command": "true"},
        ]
        first = plan(*steps)
        changed = plan(*steps, {**step("c", "a"), "proof_command": "true"})

        with pytest.raises(BaseExceptionGroup):  # noqa: PT012 - the run is watched as it goes
            async with mesh.start_async(
                first, roles=mesh.Roles(coder=FileCoder(kill="unit-003")), repo=repo, out=out
            ) as run:
                async for event in run.events():
                    if event.event == "unit_finished" and event.unit_id == "unit-001":
                        run.update_plan(changed)
        resumed = await mesh.resume_async(out, roles=mesh.Roles(coder=FileCoder()))
        states = {o.unit_id: o.state for o in resumed.result.outcomes}
        assert states == {"unit-001": "completed", "unit-002": "completed", "unit-003": "completed"}
        written = (resumed.plan_path).read_text()
        assert '"c"' in written


class TestUnderLoad:
    @pytest.mark.parametrize("seed", range(12))
    async def test_random_changes_keep_the_engine_invariants(self, seed: int) -> None:
        """Random adds, edits and cancellations while units run: every invariant holds."""
        rng = random.Random(seed)
        steps = [
            step(f"s{i}", *rng.sample([f"s{j}" for j in range(i)], k=min(i, rng.randint(0, 2))))
            for i in range(8)
        ]

        async def jittery(request: object) -> object:
            await anyio.sleep(rng.random() * 0.01)
            return answer(request)

        current = list(steps)
        made = 8
        changes: list[mesh.PlanChange] = []

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            nonlocal current, made
            if event.event not in {"unit_started", "unit_finished"} or rng.random() < 0.5:
                return
            proposal = list(current)
            action = rng.choice(["add", "edit", "drop"])
            if action == "add":
                ids = [s["id"] for s in proposal]
                proposal.append(
                    step(f"s{made}", *rng.sample(ids, k=min(len(ids), rng.randint(0, 2))))
                )
                made += 1
            elif action == "edit" and proposal:
                index = rng.randrange(len(proposal))
                proposal[index] = {**proposal[index], "step": f"edited {rng.random()}"}
            elif proposal:
                dropped = rng.choice(proposal)["id"]
                proposal = [s for s in proposal if s["id"] != dropped and dropped not in s["deps"]]
            try:
                changes.append(run.update_plan(plan(*proposal)))
            except mesh.MeshError:  # refused, or every unit has ended
                return
            current = proposal

        result, ledger = await run_changing(
            plan(*steps), change, fake_roles(coder=FakeAdapter(jittery)), max_threads=4
        )
        check_invariants(result, ledger, steps)


def check_invariants(
    result: mesh.RunResult, ledger: list[mesh.LedgerEvent], steps: list[dict[str, Any]]
) -> None:
    """What must hold after any run whose plan changed, however it changed."""
    final = {o.unit_id: o for o in result.outcomes}
    assert len(final) == len(result.outcomes)
    finished = [e.unit_id for e in named(ledger, "unit_finished")]
    blocked = [e.unit_id for e in named(ledger, "unit_blocked")]
    cancelled = {e.unit_id for e in named(ledger, "unit_cancelled")}
    # Every unit ended exactly once, and a cancelled one never finished.
    assert sorted(map(str, finished + blocked)) == sorted(final)
    assert not cancelled & set(finished)
    assert ledger[-1].event == "run_finished"
    # Each started unit ended (finished, or cancelled by a change).
    started = {e.unit_id for e in named(ledger, "unit_started")}
    assert started <= set(finished) | cancelled
    # A unit started only after each of its dependencies completed.
    seq_done = {e.unit_id: e.seq for e in named(ledger, "unit_finished")}
    first_start: dict[str | None, int] = {}
    for event in named(ledger, "unit_started"):
        first_start.setdefault(event.unit_id, event.seq)
    assert all(o.state in {"completed", "blocked", "failed"} for o in final.values())
    recorded = named(ledger, "plan_changed")
    units_now = (
        mesh.parse_units(recorded[-1].data["units"])
        if recorded
        else mesh.slice_plan(plan(*steps)).units
    )
    for unit_now in units_now:
        if unit_now.id in first_start and unit_now.id in final:
            for dep in unit_now.deps:
                assert final[dep].state == "completed"
                assert seq_done[dep] < first_start[unit_now.id]
    # Leases all went back.
    actions = [e.data.get("action") for e in ledger if e.lane is mesh.Lane.LOCKSMITH]
    assert actions.count("acquire") == actions.count("release")


class TestWhatTheAttackFound:
    async def test_a_resumed_run_never_gives_a_cancelled_units_id_again(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """unit-003 was added, then cancelled, then the run died: a new step is not unit-003."""
        out = tmp_path / "out"
        steps = [
            {**step("a"), "proof_command": "true"},
            {**step("b", "a"), "proof_command": "true"},
        ]
        added = [*steps, {**step("c", "a"), "proof_command": "true"}]
        with pytest.raises(BaseExceptionGroup):  # noqa: PT012 - the run is watched as it goes
            async with mesh.start_async(
                plan(*steps), roles=mesh.Roles(coder=FileCoder(kill="unit-002")), repo=repo, out=out
            ) as run:
                async for event in run.events():
                    if event.event == "unit_started" and event.unit_id == "unit-001":
                        run.update_plan(plan(*added))
                        run.update_plan(plan(*steps))  # unit-003 cancelled at once
        changes: list[mesh.PlanChange] = []

        def change(orchestrator: mesh.Orchestrator) -> None:
            async def later() -> None:
                while not orchestrator.plan_changeable:  # noqa: ASYNC110 - no event says so
                    await anyio.sleep(0.01)
                changes.append(
                    orchestrator.update_plan(plan(*steps, {**step("d"), "proof_command": "true"}))
                )

            group.start_soon(later)

        async with anyio.create_task_group() as group:
            with mesh.engine._scheduler.told_of_orchestrators(change):
                resumed = await mesh.resume_async(out, roles=mesh.Roles(coder=FileCoder()))
        assert changes[0].added == ("unit-004",)
        assert {o.unit_id for o in resumed.result.outcomes} == {"unit-001", "unit-002", "unit-004"}

    async def test_a_unit_given_again_while_it_stops_is_refused(self) -> None:
        refused: list[str] = []

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.lane is mesh.Lane.APPLIER and event.unit_id == "y" and not refused:
                run.update_plan([unit("x")])
                with pytest.raises(mesh.PlanError, match="y is still stopping") as caught:
                    run.update_plan([unit("x"), unit("y")])
                refused.append(str(caught.value))

        roles = fake_roles(prover=FakeAdapter(lambda r: hang(r) if r.unit.id == "y" else answer(r)))
        result, _ = await run_changing([unit("x"), unit("y")], change, roles)
        assert refused
        assert [o.unit_id for o in result.outcomes] == ["x"]

    @pytest.mark.parametrize(
        ("new", "says"),
        [
            ({"plan": [step("a"), "b: do b"]}, "entry 1 is not an object"),
            ({"plan": [step("a"), {**step("b", "a"), "status": "Pending"}]}, "unknown status"),
            ([1, 2], "entry 0 is not an object"),
            ({"units": [{"objective": "no id"}]}, "entry 0 has no id"),
        ],
    )
    async def test_what_a_lenient_reading_would_skip_is_refused(
        self, new: object, says: str
    ) -> None:
        """Skipped, an entry would cancel its unit: a change refuses it instead."""

        def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and event.unit_id == "unit-001":
                with pytest.raises(mesh.PlanError, match=says):
                    run.update_plan(new)

        result, _ = await run_changing(plan(step("a"), step("b", "a")), change)
        assert len(result.outcomes) == 2

    async def test_a_change_made_from_a_sink_keeps_every_sink_in_order(
        self, tmp_path: Path
    ) -> None:
        ledger_file = tmp_path / "ledger.jsonl"
        changed: list[int] = []

        def on_event(event: mesh.LedgerEvent) -> None:
            if event.event == "unit_started" and not changed:
                changed.append(event.seq)
                orchestrator.update_plan(plan(step("a"), step("b")))

        async with mesh.Orchestrator(
            roles=fake_roles(), sinks=[mesh.CallbackSink(on_event)], ledger_path=ledger_file
        ) as orchestrator:
            await orchestrator.execute(plan(step("a")))
        seqs = [json.loads(line)["seq"] for line in ledger_file.read_text().splitlines()]
        assert seqs == sorted(seqs)
        assert changed

    def test_a_tampered_change_record_is_said(self) -> None:
        from mesh.engine._scheduler import _changed_plan  # noqa: PLC0415 - the reader itself

        units = {"units": [{"id": "a", "objective": "a"}]}
        with pytest.raises(mesh.InputError, match="its steps do not match"):
            _changed_plan({"units": units, "step_of": {"a": 5}, "unit_ids": {}})
        with pytest.raises(mesh.InputError, match="its steps do not match"):
            _changed_plan({"units": units, "step_of": {"zz": 0}, "unit_ids": {}})
        with pytest.raises(mesh.InputError, match="unreadable"):
            _changed_plan({"units": units, "step_of": [], "unit_ids": {}})


async def test_a_unit_cancelled_as_it_finishes_keeps_its_outcome() -> None:
    """Left out while it releases its lease (its work done): it stays, in the recorded plan too."""
    changed: list[mesh.PlanChange] = []

    async def locksmith(request: mesh.LeaseRequest) -> object:
        # In the engine's loop (an async adapter): where a plan can change.
        if request.action == "release" and request.unit.id == "y" and not changed:
            changed.append(orchestrator.update_plan([unit("x")]))
        return await table(request)

    table = mesh.LeaseTable()

    with capture_ledger() as ledger:
        async with mesh.Orchestrator(roles=fake_roles(locksmith=locksmith)) as orchestrator:
            result = await orchestrator.execute([unit("x"), unit("y")])
    assert changed[0].removed == ("y",)
    assert {o.unit_id: o.state for o in result.outcomes} == {"x": "completed", "y": "completed"}
    recorded = named(ledger, "plan_changed")
    assert [e.data["removed"] for e in recorded] == [["y"], []]
    assert recorded[-1].data["added"] == ["y"]
    assert not named(ledger, "unit_cancelled")


async def test_a_plan_record_is_a_change_too() -> None:
    def change(run: mesh.Orchestrator, event: mesh.LedgerEvent) -> None:
        if event.event == "unit_started" and event.unit_id == "unit-001":
            assert run.update_plan(mesh.parse_plan(plan(step("a"), step("b")))).added == (
                "unit-002",
            )

    result, _ = await run_changing(plan(step("a")), change)
    assert len(result.outcomes) == 2
