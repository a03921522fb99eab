"""Executors without a cluster: the scale-out gate, custom executors, portable git adapters."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest

import mesh
import mesh.commands
from mesh.engine._executors import BoundCall, remote_lane_set
from mesh.engine._ray import CancelBoard, _watched
from mesh.testing import fake_roles

from engine_helpers import first_coder_request, unit
from repo_helpers import candidate, diff_of, git

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("allowed", "saturated", "expected"),
    [(True, True, 8), (True, False, 2), (False, True, 2), (False, False, 2)],
)
def test_the_gate_opens_only_when_saturated_and_allowed(
    allowed: bool,  # noqa: FBT001 - a parametrized flag
    saturated: bool,  # noqa: FBT001
    expected: int,
) -> None:
    slots = mesh.executor_slots(
        base_slots=2, max_slots=8, scaleout_allowed=allowed, saturated=saturated
    )
    assert slots == expected


def test_the_gate_never_goes_below_one_or_above_the_maximum() -> None:
    assert (
        mesh.executor_slots(base_slots=0, max_slots=3, scaleout_allowed=False, saturated=True) == 1
    )
    assert (
        mesh.executor_slots(base_slots=9, max_slots=3, scaleout_allowed=False, saturated=True) == 3
    )


class ThreadPoolExecutor:
    """A custom executor: runs here, but claims the fixer lane as remote, with slots."""

    def __init__(self, *, base_slots: int, max_slots: int) -> None:
        self.base_slots = base_slots
        self.max_slots = max_slots
        self.running = 0
        self.peak = 0
        self.stopped = 0

    async def start(self) -> mesh.ExecutorInfo:
        return mesh.ExecutorInfo(
            name="pool",
            remote_lanes=frozenset({mesh.Lane.FIXER}),
            base_slots=self.base_slots,
            max_slots=self.max_slots,
            detail={"workers": self.max_slots, "slots": "not the executor's to say"},
        )

    def bind(self, lane: mesh.Lane, adapter: Any) -> BoundCall:
        local = mesh.LocalExecutor().bind(lane, adapter)
        if lane is not mesh.Lane.FIXER:
            return local

        async def call(request: object) -> object:
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await anyio.sleep(0.02)
                return mesh.Placed(await local(request), f"pool:{self.running}")
            finally:
                self.running -= 1

        return call

    async def stop(self) -> None:
        self.stopped += 1


def budget(remaining: float) -> mesh.BudgetDecision:
    return mesh.budget_policy(remaining_five_hour=remaining, remaining_weekly=100, max_threads=8)


async def run_high_risk_units(
    executor: ThreadPoolExecutor, decision: Any, count: int = 3
) -> tuple[mesh.RunResult, list[mesh.LedgerEvent]]:
    sink = mesh.MemorySink()
    async with mesh.Orchestrator(
        roles=fake_roles(), executor=executor, budget=decision, sinks=[sink]
    ) as orchestrator:
        result = await orchestrator.execute([unit(f"u{i}", risk="high") for i in range(count)])
    return result, sink.events


class TestSlots:
    async def test_saturation_with_budget_scales_out(self) -> None:
        """Three fixers per unit saturate one slot; the budget allows scale-out: four slots."""
        executor = ThreadPoolExecutor(base_slots=1, max_slots=4)
        result, events = await run_high_risk_units(executor, budget(100))
        result.check()
        slots = [e.data for e in events if e.event == "executor_slots"]
        assert [(s["slots"], s["reason"]) for s in slots] == [(4, "saturated")]
        assert 1 < executor.peak <= 4
        started = next(e for e in events if e.event == "executor_started")
        assert started.data == {
            "executor": "pool",
            "remote_lanes": ["fixer"],
            "base_slots": 1,
            "max_slots": 4,
            "slots": 1,
            "workers": 4,
        }
        fixer_calls = [e for e in events if e.event == "adapter_call" and e.lane is mesh.Lane.FIXER]
        assert all(str(e.data["where"]).startswith("pool:") for e in fixer_calls)
        assert "(pool executor, slots 1 → 4)" in result.ledger()
        assert executor.stopped == 1

    async def test_without_scaleout_budget_one_instance_is_all(self) -> None:
        """At 20 % remaining the gate stays shut: never more than the base slots at once."""
        executor = ThreadPoolExecutor(base_slots=1, max_slots=4)
        result, events = await run_high_risk_units(executor, budget(20))
        result.check()
        assert executor.peak == 1
        assert not [e for e in events if e.event == "executor_slots"]

    async def test_a_re_read_budget_closes_the_gate_again(self) -> None:
        """Scale-out, then the budget drops below the threshold: back to the base slots."""
        executor = ThreadPoolExecutor(base_slots=1, max_slots=4)

        def provider() -> mesh.BudgetDecision:
            # Read again whenever a unit finishes: once calls ran side by side (the gate
            # opened), the budget drops. Keyed on what happened, not on how often it is read.
            return budget(20 if executor.peak > 1 else 100)

        result, events = await run_high_risk_units(executor, provider, count=6)
        result.check()
        reasons = [
            (e.data["slots"], e.data["reason"]) for e in events if e.event == "executor_slots"
        ]
        assert reasons[:2] == [(4, "saturated"), (1, "budget")]

    async def test_an_executor_without_a_slot_count_is_not_gated(self) -> None:
        """Remote lanes but no max_slots: calls are not held back, nothing is announced twice."""

        class Unbounded(ThreadPoolExecutor):
            async def start(self) -> mesh.ExecutorInfo:
                return mesh.ExecutorInfo(name="open", remote_lanes=frozenset({mesh.Lane.FIXER}))

        executor = Unbounded(base_slots=1, max_slots=1)
        result, events = await run_high_risk_units(executor, budget(100))
        result.check()
        assert executor.peak == 9  # three units, three fixers each, all at once
        started = next(e for e in events if e.event == "executor_started")
        assert started.data["slots"] is None
        assert not [e for e in events if e.event == "executor_slots"]


class TestCustomExecutors:
    async def test_something_that_is_not_an_executor_is_refused(self) -> None:
        with pytest.raises(mesh.InputError, match="start, bind and stop"):
            mesh.Orchestrator(roles=fake_roles(), executor=object())  # type: ignore[arg-type]

    async def test_start_must_return_executor_info(self) -> None:
        class Wrong(ThreadPoolExecutor):
            async def start(self) -> mesh.ExecutorInfo:
                return {"name": "wrong"}  # type: ignore[return-value]

        executor = Wrong(base_slots=1, max_slots=1)
        async with mesh.Orchestrator(roles=fake_roles(), executor=executor) as orchestrator:
            with pytest.raises(mesh.InputError, match="not ExecutorInfo"):
                await orchestrator.execute([unit("a")])
        assert executor.stopped == 1

    async def test_a_bind_failure_stops_the_executor_before_any_unit(self) -> None:
        class Refusing(ThreadPoolExecutor):
            def bind(self, lane: mesh.Lane, adapter: Any) -> BoundCall:
                raise mesh.InputError(f"cannot run {lane.value} here")

        executor = Refusing(base_slots=1, max_slots=1)
        sink = mesh.MemorySink()
        async with mesh.Orchestrator(
            roles=fake_roles(), executor=executor, sinks=[sink]
        ) as orchestrator:
            with pytest.raises(mesh.InputError, match="cannot run coder here"):
                await orchestrator.execute([unit("a")])
        assert executor.stopped == 1
        assert sink.events == []

    async def test_the_local_executor_is_the_default_and_says_nothing(self) -> None:
        sink = mesh.MemorySink()
        async with mesh.Orchestrator(
            roles=fake_roles(), executor=mesh.LocalExecutor(), sinks=[sink]
        ) as orchestrator:
            (await orchestrator.execute([unit("a")])).check()
        assert not [e for e in sink.events if e.event.startswith("executor_")]
        assert not [e for e in sink.events if "where" in e.data]


class TestRayExecutorOptions:
    """Checked when built: no Ray needed."""

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"lanes": ["integrator"]}, "integrator must run with the engine"),
            ({"lanes": ["locksmith", "coder"]}, "locksmith must run with the engine"),
            ({"lanes": ["painter"]}, "unknown lane 'painter'"),
            ({"base_slots": 0}, "base_slots must be >= 1"),
            ({"max_slots": -1}, "max_slots must be >= 1"),
            ({"cancel_grace": 0}, "cancel_grace must be > 0"),
            ({"cancel_poll": -1.0}, "cancel_poll must be > 0"),
            ({"lanes": ["coder"], "task_options": {"prover": {}}}, "prover does not run on Ray"),
        ],
    )
    def test_bad_options_are_input_errors(self, options: dict[str, Any], message: str) -> None:
        with pytest.raises(mesh.InputError, match=message):
            mesh.RayExecutor(**options)

    def test_defaults_and_repr(self) -> None:
        executor = mesh.RayExecutor(task_options={mesh.Lane.PROVER: {"num_gpus": 1}})
        assert executor.lanes == {"coder", "reducer", "applier", "prover", "fixer"}
        assert executor.task_options[mesh.Lane.PROVER] == {"num_gpus": 1}
        assert repr(executor).startswith("RayExecutor(address=None, lanes=[")
        assert remote_lane_set(["fixer", mesh.Lane.CODER]) == {mesh.Lane.FIXER, mesh.Lane.CODER}

    async def test_without_ray_installed_the_error_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = importlib.import_module

        def no_ray(name: str, *args: Any) -> object:
            if name == "ray":
                raise ModuleNotFoundError("No module named 'ray'")
            return real(name, *args)

        monkeypatch.setattr(importlib, "import_module", no_ray)
        executor = mesh.RayExecutor()
        with pytest.raises(mesh.ExecutorError, match=r"pip install 'mesh\[ray\]'") as caught:
            await executor.start()
        assert caught.value.code is mesh.FailureCode.TOOLING_UNAVAILABLE
        await executor.stop()  # never started: nothing to give back

    def test_bind_before_start_is_an_executor_error(self) -> None:
        with pytest.raises(mesh.ExecutorError, match="before start"):
            mesh.RayExecutor().bind(mesh.Lane.CODER, lambda request: request)

    def test_engine_lanes_bind_locally(self) -> None:
        executor = mesh.RayExecutor()
        assert callable(executor.bind(mesh.Lane.INTEGRATOR, lambda request: request))


def test_mesh_run_refuses_an_empty_ray_address(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"plan": []}')
    with pytest.raises(mesh.OptionError, match="--ray needs an address") as caught:
        mesh.commands.run(plan=plan, coder_command="true", ray=" ")
    assert caught.value.kind == "InvalidOptionValue"


class TestCancelledOnTheWorker:
    async def test_the_call_is_cancelled_once_the_board_says_so(self) -> None:
        board = CancelBoard()
        unwound: list[bool] = []

        async def hangs() -> object:
            try:
                await anyio.sleep(60)
            finally:
                unwound.append(True)
            return "never"  # pragma: no cover

        async def cancel_soon() -> None:
            await anyio.sleep(0.05)
            board.cancel(7)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(cancel_soon)
                outcome = await _watched(hangs, lambda: board.cancelled(7), 0.01)
        assert outcome == "cancelled"
        assert unwound == [True]
        board.forget(7)
        assert not board.cancelled(7)

    async def test_an_adapter_error_comes_out_as_itself(self) -> None:
        """Not wrapped in the watcher's task group: the engine reports it as a local run would."""

        async def fails() -> object:
            raise RuntimeError("no model")

        with pytest.raises(RuntimeError, match="no model"):
            await _watched(fails, lambda: False, 0.01)

    async def test_a_finished_call_returns_its_answer(self) -> None:
        async def quick() -> object:
            return {"ok": True}

        assert await _watched(quick, lambda: False, 0.01) == {"ok": True}


def unit_at_head(repo: Path, scope: str, *, proof: str = "") -> mesh.Unit:
    return mesh.Unit(
        id="u",
        objective="o",
        write_scope=(scope,),
        base_sha=git(repo, "rev-parse", "HEAD"),
        proof_command=proof,
    )


class TestPortableGitAdapters:
    """Given the repository's path, the git adapters make their own worktrees, per call."""

    async def test_applier_checks_and_keeps_no_worktree(self, repo: Path) -> None:
        the_unit = unit_at_head(repo, "src/app.py")
        good = candidate(the_unit, diff_of(repo, {"src/app.py": "def main():\n    return 2\n"}))
        applier = mesh.GitApplier(str(repo))
        request = mesh.ApplyRequest(
            unit=the_unit, candidate_id=good.candidate_id, candidate=good, lease_id="l", attempt=1
        )
        applied = mesh.parse_worker_result(await applier(request))
        assert applied.decision is mesh.Decision.APPLIED
        assert applied.worktree_path is None
        conflicting = candidate(
            the_unit, diff_of(repo, {"src/app.py": "x\n"}).replace("return 1", "return 9")
        )
        request = mesh.ApplyRequest(
            unit=the_unit,
            candidate_id=conflicting.candidate_id,
            candidate=conflicting,
            lease_id="l",
            attempt=1,
        )
        failed = mesh.parse_worker_result(await applier(request))
        assert failed.decision is mesh.Decision.APPLY_FAILED
        assert git(repo, "worktree", "list").count("\n") == 0

    async def test_prover_applies_and_proves_in_its_own_worktree(self, repo: Path) -> None:
        the_unit = unit_at_head(repo, "src/app.py", proof="grep -q 'return 2' src/app.py")
        prover = mesh.CommandProver(str(repo))

        async def prove(patch: str) -> mesh.WorkerResult:
            found = candidate(the_unit, patch)
            request = mesh.ProofRequest(
                unit=the_unit,
                candidate_id=found.candidate_id,
                candidate=found,
                applied=found,  # a portable prover applies the candidate itself
                proof_attempt=1,
                attempt=1,
            )
            return mesh.parse_worker_result(await prover(request))

        passing = await prove(diff_of(repo, {"src/app.py": "def main():\n    return 2\n"}))
        assert passing.proof_status is mesh.ProofStatus.PASS
        failing = await prove(diff_of(repo, {"src/app.py": "def main():\n    return 3\n"}))
        assert failing.proof_status is mesh.ProofStatus.FAIL
        broken = await prove(diff_of(repo, {"src/app.py": "x\n"}).replace("return 1", "return 9"))
        assert broken.proof_status is mesh.ProofStatus.FAIL
        assert broken.proof_evidence.command == "git apply --cached"
        assert git(repo, "worktree", "list").count("\n") == 0

    async def test_coders_write_in_a_worktree_of_their_own(self, repo: Path) -> None:
        request = first_coder_request(unit_at_head(repo, "src/new.txt"))
        scripted = mesh.ScriptedCoder(str(repo), {"u": {"src/new.txt": "new\n"}})
        assert "src/new.txt" in str(mesh.parse_worker_result(await scripted(request)).patch)
        command = mesh.CommandCoder(str(repo), "echo cmd > src/new.txt")
        assert "+cmd" in str(mesh.parse_worker_result(await command(request)).patch)
        assert git(repo, "worktree", "list").count("\n") == 0

    def test_an_open_manager_cannot_be_pickled(self, repo: Path) -> None:
        import pickle  # noqa: PLC0415

        with pytest.raises(TypeError, match="repository's path instead"):
            pickle.dumps(mesh.WorkspaceManager(repo))

    async def test_another_machines_worktrees_are_left_alone(self, repo: Path) -> None:
        """On a shared folder, a folder owned by another host is never judged dead here."""
        base = repo / ".git" / "mesh-worktrees"
        theirs = base / "1-0000abcd"
        theirs.mkdir(parents=True)
        (theirs / "owner.pid").write_text(f"{2**22 + 1} not-{socket.gethostname()}")
        ours_dead = base / "2-0000abcd"
        ours_dead.mkdir()
        (ours_dead / "owner.pid").write_text(f"{2**22 + 1} {socket.gethostname()}")
        async with mesh.WorkspaceManager(repo):
            pass
        assert theirs.exists()
        assert not ours_dead.exists()
