"""Resuming stopped runs: engine checkpoints, exactly-once delivery, kill -9 at many points."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import mesh
import mesh.commands
from mesh.store._repo_run import _pending_requests
from mesh.testing import FakeAdapter, answer, fake_roles

from engine_helpers import unit
from repo_helpers import candidate, delivery, diff_of, git, killed_after_the_branch_moved, make_repo

pytestmark = pytest.mark.anyio


class TestEngineResume:
    async def test_resume_reproves_recorded_candidates_and_keeps_finished_units(self) -> None:
        """A unit stopped after its candidates were recorded is proved again, not written again."""
        store: list[mesh.LedgerEvent] = []
        plan = [unit("done"), unit("halfway"), unit("later", "done", "halfway")]

        async def slow_prover(request: mesh.ProofRequest) -> dict[str, object]:
            if request.unit.id == "halfway":
                await anyio.sleep(30)  # stopped here: candidates recorded, proofs not finished
            return answer(request)

        with anyio.move_on_after(1):
            async with mesh.Orchestrator(
                roles=fake_roles(prover=FakeAdapter(slow_prover)),
                sinks=[mesh.MemorySink(store)],
                run_id="r1",
            ) as run:
                await run.execute(plan)
        point = mesh.resume_point(store)
        assert point.checkpoints["done"].outcome is not None
        assert len(point.checkpoints["halfway"].candidates) == 3

        coder = FakeAdapter()
        again: list[mesh.LedgerEvent] = []
        async with mesh.Orchestrator(
            roles=fake_roles(coder=coder), sinks=[mesh.MemorySink(again)], run_id="r1"
        ) as run:
            result = await run.execute(plan, resume=point)
        assert [o.state for o in result.outcomes] == ["completed"] * 3
        assert sorted({request.unit.id for request in coder.calls}) == ["later"]
        assert again[0].event == "run_resumed"
        assert again[0].seq == point.next_seq
        assert result.metrics.completed == 3  # the first process's units count too

    async def test_plan_state_keeps_units_finished_before_the_stop(self) -> None:
        """What the resumed run delivers carries the units completed before it as completed."""
        plan = [unit("early"), unit("late")]
        done = mesh.UnitOutcome(unit_id="early", state=mesh.OutcomeState.COMPLETED, attempts=1)
        point = mesh.ResumePoint(
            checkpoints={"early": mesh.UnitCheckpoint(unit_id="early", outcome=done)}, next_seq=9
        )
        integrator = FakeAdapter()
        async with mesh.Orchestrator(roles=fake_roles(integrator=integrator), run_id="r1") as run:
            result = await run.execute(plan, resume=point)
        (request,) = integrator.calls
        assert request.unit.id == "late"
        assert request.plan_state["plan"] == [
            {"id": "early", "step": "do early", "status": "completed"},
            {"id": "late", "step": "do late", "status": "completed"},
        ]
        assert result.plan_state == request.plan_state

    @staticmethod
    async def stopped_in(role: str, plan: list[mesh.Unit]) -> list[mesh.LedgerEvent]:
        """The events of a run stopped while unit ``late`` waited in ``role``."""
        store: list[mesh.LedgerEvent] = []

        async def hang(request: Any) -> dict[str, object]:
            if request.unit.id == "late":
                await anyio.sleep(30)
            return answer(request)

        with anyio.move_on_after(1):
            async with mesh.Orchestrator(
                roles=fake_roles(**{role: FakeAdapter(hang)}),
                sinks=[mesh.MemorySink(store)],
                run_id="r1",
            ) as run:
                await run.execute(plan)
        return store

    async def test_recorded_proofs_are_adjudicated_not_proved_again(self) -> None:
        """Stopped in adjudication: the resumed run asks the fixers, not the prover."""
        plan = [unit("late", risk="med")]
        point = mesh.resume_point(await self.stopped_in("fixer", plan))
        assert len(point.checkpoints["late"].proofs) == 3
        assert point.checkpoints["late"].accepted is None
        prover, fixer = FakeAdapter(), FakeAdapter()
        async with mesh.Orchestrator(
            roles=fake_roles(prover=prover, fixer=fixer), run_id="r1"
        ) as run:
            result = await run.execute(plan, resume=point)
        assert result.outcomes[0].state == "completed"
        assert prover.calls == []
        assert len(fixer.calls) == 2  # the quorum of a medium-risk unit

    async def test_a_started_delivery_is_delivered_again_with_its_candidate(self) -> None:
        """Stopped while delivering: the same candidate is delivered again, nothing else runs."""
        plan = [unit("late", risk="high")]
        events = await self.stopped_in("integrator", plan)
        started = next(e for e in events if e.event == "delivery_started")
        point = mesh.resume_point(events)
        assert point.checkpoints["late"].accepted == started.candidate_id
        assert point.checkpoints["late"].approvals == 3
        prover, fixer, integrator = FakeAdapter(), FakeAdapter(), FakeAdapter()
        again: list[mesh.LedgerEvent] = []
        async with mesh.Orchestrator(
            roles=fake_roles(prover=prover, fixer=fixer, integrator=integrator),
            sinks=[mesh.MemorySink(again)],
            run_id="r1",
        ) as run:
            result = await run.execute(plan, resume=point)
        assert result.outcomes[0].state == "completed"
        assert result.outcomes[0].accepted_candidate == started.candidate_id
        assert (prover.calls, fixer.calls) == ([], [])
        [delivery] = integrator.calls
        assert delivery.candidate_id == started.candidate_id
        assert delivery.idempotency_key == "r1/late"
        # Delivering still happens under a lease of the unit's write scope.
        leases = [e for e in again if e.lane is mesh.Lane.LOCKSMITH]
        assert [e.data["action"] for e in leases] == ["acquire", "release"]

    async def test_a_recorded_verdict_short_of_the_quorum_is_adjudicated_again(self) -> None:
        """A delivery record without its approvals (an older store) does not skip the fixers."""
        plan = [unit("late")]
        events = [
            e
            if e.event != "delivery_started"
            else attrs.evolve(e, data={k: v for k, v in e.data.items() if k != "approvals"})
            for e in await self.stopped_in("integrator", plan)
        ]
        point = mesh.resume_point(events)
        assert point.checkpoints["late"].approvals == 0
        fixer = FakeAdapter()
        async with mesh.Orchestrator(roles=fake_roles(fixer=fixer), run_id="r1") as run:
            result = await run.execute(plan, resume=point)
        assert result.outcomes[0].state == "completed"
        assert len(fixer.calls) == 2  # the quorum of a medium-risk unit

    async def test_a_recorded_verdict_for_an_unproven_candidate_is_not_trusted(self) -> None:
        """The recorded accepted candidate must be among the proven ones, or fixers decide."""
        plan = [unit("late")]
        point = mesh.resume_point(await self.stopped_in("integrator", plan))
        checkpoint = attrs.evolve(point.checkpoints["late"], accepted="late-nobody", approvals=9)
        fixer = FakeAdapter()
        async with mesh.Orchestrator(roles=fake_roles(fixer=fixer), run_id="r1") as run:
            result = await run.execute(
                plan, resume=attrs.evolve(point, checkpoints={"late": checkpoint})
            )
        assert result.outcomes[0].accepted_candidate != "late-nobody"
        assert len(fixer.calls) == 2

    @pytest.mark.mesh_strict(strict=False)
    async def test_a_lease_refused_on_resume_reworks_the_unit(self) -> None:
        """Recorded proofs need a fresh lease; a broken locksmith sends the unit to rework."""
        plan = [unit("late")]
        point = mesh.resume_point(await self.stopped_in("fixer", plan))
        broken = FakeAdapter(lambda request: {"not": "a result"})
        async with mesh.Orchestrator(
            roles=fake_roles(locksmith=broken), run_id="r1", max_attempts=1
        ) as run:
            result = await run.execute(plan, resume=point)
        assert result.outcomes[0].failure_code is mesh.FailureCode.INVALID_OUTPUT_SCHEMA

    async def test_stopped_dependencies_block_on_resume(self) -> None:
        """A dependency that failed before the stop blocks its dependents after it."""
        failed = mesh.UnitOutcome(
            unit_id="a", state=mesh.OutcomeState.FAILED, failure_code=mesh.FailureCode.PROOF_MISSING
        )
        point = mesh.ResumePoint(
            checkpoints={"a": mesh.UnitCheckpoint(unit_id="a", outcome=failed)}, next_seq=5
        )
        async with mesh.Orchestrator(roles=fake_roles()) as run:
            result = await run.execute([unit("a"), unit("b", "a"), unit("c")], resume=point)
            assert run.statistics().by_state == {"blocked": 1, "completed": 1}
        blocked = result.outcome("b")
        again = mesh.ResumePoint(
            checkpoints={
                "a": mesh.UnitCheckpoint(unit_id="a", outcome=failed),
                "b": mesh.UnitCheckpoint(unit_id="b", outcome=blocked),
            },
            next_seq=9,
        )
        async with mesh.Orchestrator(roles=fake_roles()) as run:
            await run.execute([unit("a"), unit("b", "a"), unit("c")], resume=again)
            assert run.statistics().by_state == {"blocked": 1, "completed": 1}
        assert [(o.unit_id, o.state, o.blocked_by) for o in result.outcomes] == [
            ("a", "failed", None),
            ("b", "blocked", "a"),
            ("c", "completed", None),
        ]


COMMITTING = mesh.Unit(
    id="u1", objective="change", write_scope=("src",), delivery_mode=mesh.DeliveryMode.COMMIT_FIRST
)


def delivered(repo: Path, changes: dict[str, str | None], key: str) -> mesh.DeliveryRequest:
    return delivery(COMMITTING, candidate(COMMITTING, diff_of(repo, changes)), key)


class TestExactlyOnceDelivery:
    async def test_a_delivered_key_is_not_delivered_again(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """The same delivery twice makes one commit; the second answer names it."""
        request = delivered(repo, {"src/util.py": "VALUE = 2\n"}, "run-1/u1")
        integrator = mesh.GitIntegrator(
            workspaces, artifacts=tmp_path / "out", plan_path=tmp_path / "p.json"
        )
        first = mesh.parse_worker_result(await integrator(request))
        second = mesh.parse_worker_result(await integrator(request))
        assert second.artifact_ref == first.artifact_ref == git(repo, "rev-parse", "HEAD")
        assert second.proof_evidence.key_line.startswith("already delivered as ")
        assert git(repo, "log", "--format=%s").splitlines() == ["change", "initial"]
        without_plan = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        third = mesh.parse_worker_result(await without_plan(request))
        assert third.artifact_ref == first.artifact_ref

    async def test_a_key_that_prefixes_a_delivered_key_is_delivered(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Keys are matched whole: ``run-1/u`` is not delivered by the commit of ``run-1/u1``."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator(delivered(repo, {"src/util.py": "VALUE = 2\n"}, "run-1/u1"))
        shorter = delivered(repo, {"src/other.py": "x = 1\n"}, "run-1/u")
        result = mesh.parse_worker_result(await integrator(shorter))
        assert result.proof_evidence.key_line.startswith("committed ")
        assert git(repo, "log", "--format=%s").splitlines() == ["change", "change", "initial"]

    async def test_recover_after_a_kill_between_branch_and_checkout(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A branch moved by mesh but a checkout left behind (and a stale lock) are put right."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator(delivered(repo, {"src/util.py": "VALUE = 2\n"}, "run/a"))
        request = delivered(repo, {"src/util.py": "VALUE = 3\n"}, "run/b")
        behind = await killed_after_the_branch_moved(workspaces, tmp_path, request)
        (repo / ".git" / "index.lock").write_text("")
        await integrator.recover(pending={"run/b": request})
        assert not (repo / ".git" / "index.lock").exists()
        assert git(repo, "status", "--porcelain") == ""
        assert (repo / "src" / "util.py").read_text() == "VALUE = 3\n"
        assert git(repo, "rev-parse", "HEAD") == behind
        again = mesh.parse_worker_result(await integrator(request))
        assert (again.artifact_ref, again.proof_evidence.key_line[:18]) == (
            behind,
            "already delivered ",
        )
        fresh = delivered(repo, {"src/fresh.py": "x = 1\n"}, "run/c")
        result = mesh.parse_worker_result(await integrator(fresh))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        await integrator.recover()  # nothing to put right is fine

    async def test_recover_after_a_kill_while_files_were_written(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Files already at the new version are fine; a file nobody wrote is never overwritten."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        first = delivered(repo, {"src/util.py": "VALUE = 3\n"}, "run/b")
        await killed_after_the_branch_moved(workspaces, tmp_path, first)
        (repo / "src" / "util.py").write_text("VALUE = 3\n")  # written before the kill
        await integrator.recover(pending={"run/b": first})
        assert git(repo, "status", "--porcelain") == ""
        second = delivered(repo, {"src/util.py": "VALUE = 4\n"}, "run/c")
        await killed_after_the_branch_moved(workspaces, tmp_path, second)
        (repo / "src" / "util.py").write_text("the user's own edit\n")
        with pytest.raises(mesh.MeshError, match="neither the version before nor after"):
            await integrator.recover(pending={"run/c": second})
        assert (repo / "src" / "util.py").read_text() == "the user's own edit\n"

    async def test_a_checkout_with_its_own_changes_is_not_touched(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Recovery leaves a checkout alone unless it is exactly one mesh commit behind."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        (repo / "README.md").write_text("staged by the user\n")
        git(repo, "add", "README.md")
        await integrator.recover()
        assert git(repo, "status", "--porcelain") == "M  README.md"
        git(repo, "commit", "-qm", "the user's own commit")
        git(repo, "update-ref", "refs/heads/main", git(repo, "rev-parse", "HEAD~1"))
        await integrator.recover()  # behind by a commit that is not mesh's: left alone
        assert git(repo, "status", "--porcelain") == "M  README.md"


CODER = (
    'mkdir -p "$(dirname "$MESH_WRITE_SCOPE")" && '
    'printf "%s\\n" "$MESH_OBJECTIVE" > "$MESH_WRITE_SCOPE"'
)


def step(name: str, *deps: str, risk: str = "low") -> dict[str, object]:
    return {
        "id": name,
        "step": f"write {name}",
        "deps": list(deps),
        "write_scope": [f"src/{name}.txt"],
        "proof_command": " && ".join(f"test -s src/{n}.txt" for n in (name, *deps)),
        "risk_tier": risk,
    }


PLAN = {
    "plan": [
        step("a"),
        step("b", "a"),
        step("c", "a", risk="high"),
        step("d", risk="med"),
        step("e", "b", "c", "d"),
        step("f", "e"),
        step("g"),
        step("h", "g"),
    ]
}


def start_run(repo: Path, out: Path, plan: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh",
            "run",
            str(plan),
            "--repo",
            str(repo),
            "--out",
            str(out),
            "--delivery",
            "commit_first",
            "--coder-command",
            CODER,
            "--max-threads",
            "3",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def events_written(ledger: Path) -> int:
    """How far a run got: its JSON-lines ledger is written (and flushed) one event at a time."""
    try:
        return ledger.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def history(repo: Path) -> tuple[str, list[str], list[str]]:
    """The final tree, the sorted patch ids of the commits, and every delivery key in the log."""
    ids = subprocess.run(
        ["git", "patch-id", "--stable"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        input=git(repo, "log", "-p", "--format=commit %H"),
    ).stdout
    keys = [
        line
        for line in git(repo, "log", "--format=%b").splitlines()
        if line.startswith("Mesh-Unit:")
    ]
    return (
        git(repo, "rev-parse", "HEAD^{tree}"),
        sorted(line.split()[0] for line in ids.splitlines()),
        keys,
    )


def crash_and_resume(template: Path, work: Path, plan: Path, target: int) -> int | None:
    """Run, kill -9 once ``target`` events happened, resume; the kill point (None: never killed)."""
    repo = work / "repo"
    shutil.copytree(template, repo, symlinks=True)
    ledger = work / "out" / "ledger.jsonl"
    process = start_run(repo, work / "out", plan)
    point = None
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if events_written(ledger) >= target:
            process.kill()  # SIGKILL: no cleanup of any kind
            process.wait()
            point = events_written(ledger)
            break
        time.sleep(0.0005)
    process.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "mesh", "resume", str(work / "out")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if resumed.returncode != 0:
        pytest.fail(f"killed at {point} (target {target}): {resumed.stderr}{unfinished(work)}")
    return point


def unfinished(work: Path) -> str:
    """Why the units of a run that did not complete ended as they did, from its ledger."""
    events = [json.loads(line) for line in (work / "out" / "ledger.jsonl").read_text().splitlines()]
    return "\n".join(
        json.dumps(e)
        for e in events
        if e["event"] in {"unit_finished", "rework", "run_resumed", "adapter_call"}
        and (e["event"] != "unit_finished" or e["data"].get("state") != "completed")
        and (e["event"] != "adapter_call" or e["data"].get("outcome") != "ok")
    )


class TestPendingDeliveries:
    def test_only_whole_records_make_a_request(self) -> None:
        """A delivery under way with an incomplete record has no request: its commit is foreign."""
        plan = {"units": [{"id": u, "objective": u, "write_scope": [u]} for u in "abc"]}
        point = mesh.ResumePoint(
            checkpoints={
                "a": mesh.UnitCheckpoint(unit_id="a"),  # reworked after its delivery started
                "b": mesh.UnitCheckpoint(unit_id="b", accepted="b-c9"),  # no such candidate
                "gone": mesh.UnitCheckpoint(unit_id="gone", accepted="gone-c1"),
            }
        )
        started = {"a": "r/a", "b": "r/b", "c": "r/c", "gone": "r/gone"}
        assert _pending_requests(plan, point, started) == {}


# The long soak: MESH_CRASH_KILLS=300 (kills drawn again once every event is used).
KILLS = int(os.environ.get("MESH_CRASH_KILLS", "40"))


class TestCrashHarness:
    @pytest.mark.timeout(max(900, KILLS * 15))
    def test_kill_9_at_thirty_points_then_resume(self, tmp_path: Path) -> None:
        """
        Killed at 30+ distinct points and resumed: all units complete, none twice.

        The repository's history matches an uninterrupted run's.
        """
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps(PLAN))
        template = make_repo(tmp_path / "template", {"src/keep": "x\n"})
        reference_repo = tmp_path / "reference" / "repo"
        shutil.copytree(template, reference_repo, symlinks=True)
        start_run(reference_repo, tmp_path / "reference" / "out", plan).wait(timeout=120)
        reference = history(reference_repo)
        reference_plan = (tmp_path / "reference" / "out" / "plan.json").read_text()
        assert len(reference[2]) == len(PLAN["plan"])
        total = events_written(tmp_path / "reference" / "out" / "ledger.jsonl")
        draw = random.Random(20261125)
        targets = sorted(
            draw.sample(range(1, total), KILLS)
            if total > KILLS
            else draw.choices(range(1, total), k=KILLS)
        )
        kill_points: set[int] = set()
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [
                (
                    index,
                    pool.submit(
                        crash_and_resume, template, tmp_path / f"crash-{index}", plan, target
                    ),
                )
                for index, target in enumerate(targets)
            ]
            for index, future in futures:
                point = future.result()
                work = tmp_path / f"crash-{index}"
                final = history(work / "repo")
                assert final[0] == reference[0], f"crash {index} at {point}: different tree"
                assert final[1] == reference[1], f"crash {index} at {point}: different commits"
                assert sorted(final[2]) == sorted(reference[2]), f"crash {index} at {point}: twice"
                status = mesh.commands.status(run=work / "out")
                assert status["by_state"] == {"completed": len(PLAN["plan"])}, status
                events = [
                    json.loads(line)
                    for line in (work / "out" / "ledger.jsonl").read_text().splitlines()
                ]
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                # The plan state after a resume is what one run writes: nothing forgotten.
                assert (work / "out" / "plan.json").read_text() == reference_plan, point
                if point is not None:
                    kill_points.add(point)
                shutil.rmtree(work)
        sys.stderr.write(f"{len(targets)} kills at {len(kill_points)} distinct points, recovered\n")
        assert len(kill_points) >= min(30, KILLS * 3 // 4), sorted(kill_points)


class TestDamagedConfigurations:
    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({}, "its configuration has no plan"),
            ({"plan": {"plan": "not steps"}}, "is damaged: its plan: "),
        ],
    )
    def test_status(self, tmp_path: Path, config: dict[str, object], message: str) -> None:
        """A store whose plan is gone or unreadable: one StoreError, never a KeyError."""
        mesh.RunStore.create(tmp_path / "run.sqlite", run_id="r1", config=config).close()
        with pytest.raises(mesh.StoreError, match=message):
            mesh.commands.status(run=tmp_path)

    @pytest.mark.parametrize(
        ("damage", "message"),
        [
            ({"repo": None}, "'repo' is unreadable"),
            ({"repo": 5}, "'repo' is unreadable"),
            ({"pool_size": True}, "'pool_size' is unreadable"),
            ({"plan": None}, "its configuration has no plan"),
            ({"estimates": {"unit-001": -1}}, "'estimates' is unreadable"),
            ({"estimates": ["unit-001"]}, "'estimates' is unreadable"),
        ],
    )
    async def test_resume(self, tmp_path: Path, damage: dict[str, object], message: str) -> None:
        """A resume reads the stored options first: a damaged one stops it before any work."""
        config = {
            "plan": PLAN,
            "repo": str(tmp_path),
            "pool_size": 4,
            "proof_timeout": 600.0,
            "call_timeout": None,
        }
        out = tmp_path / "out"
        stored = {key: value for key, value in (config | damage).items() if value is not None}
        mesh.RunStore.create(out / "run.sqlite", run_id="r1", config=stored).close()
        with pytest.raises(mesh.StoreError, match=message):
            await mesh.resume_async(out, roles=mesh.Roles(coder=mesh.ScriptedCoder(tmp_path, {})))
        assert sorted(path.name for path in out.iterdir()) == ["run.owner", "run.sqlite"]

    @pytest.mark.parametrize(
        ("name", "data", "message"),
        [
            ("unit_finished", {"state": "failed", "failure_code": "bogus"}, "unknown failure code"),
            ("unit_finished", {"state": "completed", "delivery": "bogus"}, "unknown delivery"),
            ("candidates_recorded", {"candidates": 5}, "candidates_recorded without a"),
        ],
    )
    async def test_resume_refuses_unreadable_events(
        self, tmp_path: Path, name: str, data: dict[str, object], message: str
    ) -> None:
        """An outcome or record a resume cannot carry on: one StoreError naming the event."""
        config = {"plan": PLAN, "repo": str(tmp_path), "pool_size": 4, "proof_timeout": 600.0}
        out = tmp_path / "out"
        with mesh.RunStore.create(out / "run.sqlite", run_id="r1", config=config) as store:
            store.emit(
                mesh.LedgerEvent(event=name, run_id="r1", seq=1, at=0.0, unit_id="u", data=data)
            )
        with pytest.raises(mesh.StoreError, match=f"run.sqlite is damaged: event 1: {message}"):
            await mesh.resume_async(out, roles=mesh.Roles(coder=mesh.ScriptedCoder(tmp_path, {})))


class TestEstimatesFromAPastRun:
    def test_durations_follow_their_step_text(
        self, tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A past run's durations become the estimates of the steps with the same text."""
        monkeypatch.chdir(tmp_path)
        first = tmp_path / "first.json"
        first.write_text(json.dumps({"plan": [step("a"), step("b")]}))
        past = mesh.commands.run(plan=first, repo=repo, coder_command=CODER, out="past")
        assert past.exit_code == 0
        # A step inserted before the others: unit ids shift, step texts do not.
        second = tmp_path / "second.json"
        second.write_text(json.dumps({"plan": [step("new"), step("a"), step("b")]}))
        report = mesh.commands.run(
            plan=second, repo=repo, coder_command=CODER, out="next", estimates_from="past"
        )
        assert report.exit_code == 0
        with mesh.RunStore.open(tmp_path / "past" / "run.sqlite") as store:
            durations = mesh.unit_durations(store.events())
        with mesh.RunStore.open(tmp_path / "next" / "run.sqlite") as store:
            assert store.config["estimates"] == {
                "unit-002": durations["unit-001"],
                "unit-003": durations["unit-002"],
            }

    def test_a_missing_past_run_is_an_error_before_anything(
        self, tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A past run that is not there is one error line, and no run folder is made."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "plan.json").write_text(json.dumps({"plan": [step("a")]}))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mesh",
                "run",
                "plan.json",
                "--repo",
                str(repo),
                "--coder-command",
                "true",
                "--estimates-from",
                "nowhere",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.startswith("error: InputError: no run nowhere")
        assert not (tmp_path / "mesh-runs").exists()


class TestStoredRunCommands:
    def test_status_ledger_and_resume_errors(
        self, tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Status and ledger read a stored run by folder, file or id; resume refuses others."""
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"plan": [step("a")]}))
        monkeypatch.chdir(tmp_path)
        report = mesh.commands.run(plan=plan, repo=repo, coder_command=CODER)
        run_id = report.run.result.run_id
        by_id = mesh.commands.status(run=run_id)
        assert by_id == mesh.commands.status(run=report.run.store_path)
        assert (by_id["finished"], by_id["by_state"]) == (True, {"completed": 1})
        text = mesh.commands.ledger(run=run_id)
        assert isinstance(text, str)
        assert text.startswith("Orchestration Ledger\nSkills used:")
        with pytest.raises(mesh.InputError, match="no run nope"):
            mesh.commands.status(run="nope")
        with pytest.raises(mesh.OptionError, match="give a RUN or --input-json"):
            mesh.commands.ledger()
        resumed = mesh.commands.resume(run=run_id)  # a finished run: nothing left to do
        assert resumed.exit_code == 0

        async def api_run() -> mesh.RepositoryRun:
            return await mesh.run_async(
                {"plan": [{"step": "x", "write_scope": ["src"], "proof_command": "true"}]},
                repo=repo,
                out=tmp_path / "api",
                roles=mesh.Roles(coder=mesh.CommandCoder(repo, "touch src/x")),
            )

        anyio.run(api_run)
        with pytest.raises(mesh.InputError, match="was not started by `mesh run`"):
            mesh.commands.resume(run=tmp_path / "api")

    def test_cli(self, tmp_path: Path, repo: Path, run_mesh: object) -> None:
        """`mesh status RUN` prints JSON, `mesh ledger RUN` prose."""
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"plan": [step("a")]}))
        run = run_mesh(
            "run",
            str(plan),
            "--repo",
            str(repo),
            "--coder-command",
            CODER,  # type: ignore[operator]
            "--out",
            str(tmp_path / "out"),
        )
        assert run.returncode == 0, run.stderr
        status = run_mesh("status", str(tmp_path / "out"))  # type: ignore[operator]
        assert json.loads(status.stdout)["by_state"] == {"completed": 1}
        ledger = run_mesh("ledger", str(tmp_path / "out"))  # type: ignore[operator]
        assert ledger.stdout.startswith("Orchestration Ledger\n")


class TestStoredPlans:
    @pytest.mark.parametrize("form", ["record", "units"])
    async def test_records_are_kept_as_json_and_resumed(
        self, repo: Path, tmp_path: Path, form: str
    ) -> None:
        """A Plan record or Unit records are stored as JSON a resume can read back."""
        document = {
            "explanation": "why",
            "plan": [
                {
                    "id": "a",
                    "step": "write a",
                    "write_scope": ["src/a.txt"],
                    "deps": [],
                    "proof_command": "test -s src/a.txt",
                    "status": "pending",
                },
            ],
        }
        record = mesh.parse_plan(document)
        plan: object = record if form == "record" else list(mesh.slice_plan(record).units)
        roles = mesh.Roles(coder=mesh.CommandCoder(repo, CODER))
        first = await mesh.run_async(plan, repo=repo, out=tmp_path / "out", roles=roles)
        with mesh.RunStore.open(first.store_path) as store:
            kept = store.config["plan"]
        assert ("explanation" in kept) == (form == "record")
        again = await mesh.resume_async(tmp_path / "out", roles=roles)
        assert [o.state for o in again.result.outcomes] == ["completed"]
        assert git(repo, "log", "--format=%s") == "initial"  # patch_first: nothing committed
