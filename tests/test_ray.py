"""The Ray executor on a real local Ray instance: real plans, real worktrees, real cancellation."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from ray_helpers import (
    CrashingCoder,
    FailingCoder,
    HangingFixer,
    PidCoder,
    RecordingProver,
    SleepingFixer,
    StubbornFixer,
    TracedCoder,
    marker_paths,
)

import mesh
from mesh.engine._ray import CancelBoard, run_on_worker
from mesh.testing import answer, capture_ledger, fake_roles

from engine_helpers import first_coder_request, unit
from repo_helpers import git, wait_gone

pytestmark = pytest.mark.anyio

# CI installs mesh[ray] and requires these tests; elsewhere they are skipped without Ray.
if importlib.util.find_spec("ray") is None:
    if os.environ.get("MESH_REQUIRE_RAY") == "1":
        pytest.fail("MESH_REQUIRE_RAY=1 but Ray is not installed", pytrace=False)
    pytest.skip("Ray is not installed: pip install 'mesh[ray]'", allow_module_level=True)

import ray  # noqa: E402 - after the skip above
from opentelemetry import propagate, trace  # noqa: E402 - a test of tracing on Ray
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

TESTS = Path(__file__).parent
# A local instance: two CPUs, a "prover" resource label, a small object store, and
# workers that can import this folder's helpers.
RAY_OPTIONS: dict[str, Any] = {
    "num_cpus": 2,
    "resources": {"prover": 2},
    "object_store_memory": 80 * 1024 * 1024,
    "include_dashboard": False,
    "log_to_driver": False,
    "configure_logging": False,
    "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}},
}


@pytest.fixture(scope="module", autouse=True)
def _local_ray() -> Iterator[None]:
    if not ray.is_initialized():
        ray.init(**RAY_OPTIONS)
    yield
    ray.shutdown()


def two_units() -> dict[str, Any]:
    return {
        "plan": [
            {
                "id": "a",
                "step": "first",
                "status": "pending",
                "write_scope": ["src/a.txt"],
                "proof_command": "test -s src/a.txt",
            },
            {
                "id": "b",
                "step": "second",
                "status": "pending",
                "deps": ["a"],
                "write_scope": ["src/b.txt"],
                "proof_command": "test -s src/a.txt && test -s src/b.txt",
            },
        ]
    }


SCRIPT = {"unit-001": {"src/a.txt": "A\n"}, "unit-002": {"src/b.txt": "B\n"}}


def ledger(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class TestRealPlanOnRay:
    async def test_commits_land_and_every_remote_call_ran_on_a_worker(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """Coders, appliers, provers and fixers run as Ray tasks; the integrator commits here."""
        executor = mesh.RayExecutor(
            task_options={mesh.Lane.PROVER: {"resources": {"prover": 1}, "num_cpus": 0}},
            base_slots=1,
        )
        finished = await mesh.run_async(
            two_units(),
            repo=repo,
            out=tmp_path / "out",
            roles=mesh.Roles(coder=mesh.ScriptedCoder(repo, SCRIPT)),
            delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
            executor=executor,
        )
        finished.result.check()
        assert git(repo, "log", "--format=%s").splitlines() == ["second", "first", "initial"]
        events = ledger(finished.ledger_path)
        started = next(e for e in events if e["event"] == "executor_started")
        assert started["data"]["executor"] == "ray"
        assert started["data"]["remote_lanes"] == ["applier", "coder", "fixer", "prover", "reducer"]
        assert (started["data"]["base_slots"], started["data"]["max_slots"]) == (1, 2)
        calls = [e for e in events if e["event"] == "adapter_call"]
        remote = {"coder", "applier", "prover", "fixer"}
        off_ray = [e for e in calls if e["lane"] in remote and "where" not in e["data"]]
        assert not off_ray, [(e["lane"], e["data"]) for e in off_ray]  # why a remote call failed
        assert {e["lane"] for e in calls if "where" in e["data"]} == remote
        assert all(e["data"]["where"].startswith("ray:") for e in calls if e["lane"] in remote)
        assert not any("where" in e["data"] for e in calls if e["lane"] not in remote)
        # The unit's two candidates at once need two slots: the gate opened the second.
        slots = [e["data"] for e in events if e["event"] == "executor_slots"]
        assert slots[0] == {
            "slots": 2,
            "base_slots": 1,
            "max_slots": 2,
            "scaleout_allowed": True,
            "saturated": True,
            "reason": "saturated",
        }
        assert "CAS instances: 1 worker instance in use (ray executor, slots 1 → 2)." in (
            finished.result.ledger()
        )
        # Nothing of the workers' worktrees is left in the repository.
        assert git(repo, "worktree", "list").count("\n") == 0

    async def test_proofs_go_to_nodes_with_the_resource_label(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """Each proof ran in a worktree made on its worker, holding one "prover" resource."""
        executor = mesh.RayExecutor(
            lanes=[mesh.Lane.PROVER],
            task_options={"prover": {"resources": {"prover": 1}, "num_cpus": 0}},
        )
        async with mesh.WorkspaceManager(repo) as workspaces:
            roles = mesh.git_roles(
                workspaces,
                coder=mesh.ScriptedCoder(workspaces, SCRIPT),
                integrator=mesh.GitIntegrator(workspaces, artifacts=tmp_path / "patches"),
                portable=True,
            )
            roles = mesh.Roles(
                coder=roles.coder,
                locksmith=roles.locksmith,
                applier=roles.applier,
                prover=RecordingProver(roles.prover),  # type: ignore[arg-type]
                fixer=roles.fixer,
                integrator=roles.integrator,
            )
            sink = mesh.MemorySink()
            async with mesh.Orchestrator(
                roles=roles, executor=executor, sinks=[sink]
            ) as orchestrator:
                result = await orchestrator.execute(
                    two_units(), delivery_mode=mesh.DeliveryMode.COMMIT_FIRST
                )
        result.check()
        proofs = [
            e.data for e in sink.events if e.event == "adapter_call" and e.lane is mesh.Lane.PROVER
        ]
        assert len(proofs) == 4
        assert all(str(data["where"]).startswith("ray:") for data in proofs)
        assert {data["evidence"] for data in proofs} == {"resources={'prover': 1.0}"}
        # Only the prover lane went to Ray.
        others = [
            e for e in sink.events if e.event == "adapter_call" and e.lane is not mesh.Lane.PROVER
        ]
        assert others
        assert not any("where" in e.data for e in others)


class TestSameEngineBehaviour:
    @pytest.mark.mesh_strict(strict=False)
    async def test_an_adapter_error_reads_as_in_a_local_run(self) -> None:
        """The adapter's own exception comes back (not Ray's wrapper): same evidence, same code."""
        roles = fake_roles(coder=FailingCoder())
        results = {}
        for name, executor in (
            ("local", mesh.LocalExecutor()),
            ("ray", mesh.RayExecutor(lanes=["coder"])),
        ):
            async with mesh.Orchestrator(roles=roles, executor=executor) as orchestrator:
                results[name] = (await orchestrator.execute([unit("a")])).outcome("a")
        assert results["ray"].failure_code is results["local"].failure_code
        assert results["ray"].evidence == results["local"].evidence
        assert "RuntimeError: no model for a" in results["ray"].evidence

    @pytest.mark.mesh_strict(strict=False)
    async def test_a_dead_worker_is_tooling_unavailable(self) -> None:
        """A worker that dies under a call fails the unit with Ray's reason, not a traceback."""
        async with mesh.Orchestrator(
            roles=fake_roles(coder=CrashingCoder()), executor=mesh.RayExecutor(lanes=["coder"])
        ) as orchestrator:
            outcome = (await orchestrator.execute([unit("a")])).outcome("a")
        assert outcome.failure_code is mesh.FailureCode.TOOLING_UNAVAILABLE
        assert outcome.evidence.startswith("coder: ExecutorError: ray: ")

    async def test_one_adapter_in_two_lanes_is_shipped_once(self) -> None:
        executor = mesh.RayExecutor()
        await executor.start()
        try:
            coder = PidCoder()
            executor.bind(mesh.Lane.CODER, coder)
            executor.bind(mesh.Lane.REDUCER, coder)
            assert len(executor._shipped) == 1
            with pytest.raises(mesh.ExecutorError, match="make one per run"):
                await executor.start()
        finally:
            await executor.stop()
        assert ray.is_initialized()  # joined, not started: left running

    async def test_a_timeout_cancels_the_remote_call_and_its_process_group(
        self, tmp_path: Path, marker: str
    ) -> None:
        """Timed out twice, then replaced: each cancelled call unwound on its worker."""
        roles = fake_roles(fixer=HangingFixer(str(tmp_path / "fixer"), marker))
        sink = mesh.MemorySink()
        executor = mesh.RayExecutor(lanes=["fixer"], cancel_poll=0.05)
        async with mesh.Orchestrator(
            roles=roles, executor=executor, call_timeout=2.0, sinks=[sink]
        ) as orchestrator:
            result = await orchestrator.execute([unit("a", risk="low")])
        outcome = result.outcome("a")
        assert outcome.failure_code is mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED
        outcomes = [
            e.data["outcome"]
            for e in sink.events
            if e.event == "adapter_call" and e.lane is mesh.Lane.FIXER
        ]
        assert outcomes.count("timeout") >= 3
        started = [
            path for path in marker_paths(tmp_path, "fixer") if not path.name.endswith(".unwound")
        ]
        assert started
        assert await wait_gone(marker, within=10)
        assert len(list(tmp_path.glob("fixer.*.unwound"))) == len(started)

    @pytest.mark.parametrize(
        "fixer", [SleepingFixer(), StubbornFixer()], ids=["sleeps", "stubborn"]
    )
    async def test_a_blocked_sync_adapter_is_interrupted_or_killed(self, fixer: object) -> None:
        """Interrupted in time.sleep; a call that ignores the interrupt loses its worker."""
        roles = fake_roles(fixer=fixer)
        executor = mesh.RayExecutor(lanes=["fixer"], cancel_grace=1)
        with anyio.fail_after(45):
            async with mesh.Orchestrator(
                roles=roles, executor=executor, call_timeout=1.0
            ) as orchestrator:
                result = await orchestrator.execute([unit("a", risk="low")])
        assert result.outcome("a").failure_code is mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED


class TestExecutorLifecycle:
    async def test_an_unpicklable_adapter_is_refused_before_any_unit_runs(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """An open WorkspaceManager cannot travel: the error says what to pass instead."""
        sink = mesh.MemorySink()
        async with mesh.WorkspaceManager(repo) as workspaces:
            roles = fake_roles(coder=mesh.ScriptedCoder(workspaces, SCRIPT))
            async with mesh.Orchestrator(
                roles=roles, executor=mesh.RayExecutor(), sinks=[sink]
            ) as orchestrator:
                with pytest.raises(mesh.InputError, match="repository path instead"):
                    await orchestrator.execute([unit("a")])
        assert sink.events == []

    async def test_bad_task_options_are_refused_at_bind(self) -> None:
        executor = mesh.RayExecutor(lanes=["coder"], task_options={"coder": {"no_such": 1}})
        async with mesh.Orchestrator(roles=fake_roles(), executor=executor) as orchestrator:
            with pytest.raises(mesh.InputError, match="task_options for coder"):
                await orchestrator.execute([unit("a")])

    async def test_the_executor_starts_and_stops_its_own_ray(self) -> None:
        """Without a Ray in this process, the executor starts one and shuts it down after."""
        ray.shutdown()
        try:
            options = {
                k: v
                for k, v in RAY_OPTIONS.items()
                if k not in {"log_to_driver", "configure_logging", "include_dashboard"}
            }
            executor = mesh.RayExecutor(lanes=["coder"], init_options=options)
            roles = fake_roles(coder=PidCoder())
            async with mesh.Orchestrator(roles=roles, executor=executor) as orchestrator:
                run = await orchestrator.execute([unit("a")])
            assert run.outcome("a").state == "failed"  # no_diff twice: too few candidates
            assert not ray.is_initialized()
        finally:
            if not ray.is_initialized():
                ray.init(**RAY_OPTIONS)

    async def test_a_cluster_that_cannot_be_joined_is_an_executor_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ray.init's failure (an address nobody answers, a bad option) is one ExecutorError."""

        def refuse(**options: object) -> None:
            raise ConnectionError(f"could not reach {options['address']}")

        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", refuse)
        executor = mesh.RayExecutor(address="ray://nowhere:10001")
        async with mesh.Orchestrator(roles=fake_roles(), executor=executor) as orchestrator:
            with pytest.raises(mesh.ExecutorError, match="could not reach ray://nowhere"):
                await orchestrator.execute([unit("a")])


class TestCommandLine:
    def test_mesh_run_and_resume_on_a_local_ray(
        self, run_mesh: Any, repo: Path, tmp_path: Path
    ) -> None:
        """`mesh run --ray local` commits through Ray workers; `mesh resume` goes back there."""
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps(two_units()))
        coder = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
            "import os, pathlib; "
            "name = 'a' if os.environ['MESH_UNIT_ID'] == 'unit-001' else 'b'; "
            "pathlib.Path('src', name + '.txt').write_text(name)"
        )
        out = tmp_path / "out"
        process = run_mesh(
            "run",
            str(plan),
            "--repo",
            str(repo),
            "--coder-command",
            coder,
            "--delivery",
            "commit_first",
            "--out",
            str(out),
            "--ray",
            "local",
        )
        assert process.returncode == 0, process.stdout + process.stderr
        assert "CAS instances: 1 worker instance in use (ray executor" in process.stdout
        assert git(repo, "log", "--format=%s").splitlines() == ["second", "first", "initial"]
        resumed = run_mesh("resume", str(out))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        started = [e for e in ledger(out / "ledger.jsonl") if e["event"] == "executor_started"]
        assert [e["data"]["address"] for e in started] == ["local", "local"]
        assert git(repo, "log", "--format=%s").splitlines() == ["second", "first", "initial"]


class TestOnTheWorker:
    def test_run_on_worker_answers_with_the_node(self) -> None:
        """The task body, run here: sync, async, and a sync adapter returning a coroutine."""
        board = ray.remote(num_cpus=0)(CancelBoard).remote()
        try:
            request = first_coder_request(unit("a"))
            node, result = run_on_worker(PidCoder(), request, 1, board, 0.05)
            assert node == ray.get_runtime_context().get_node_id()
            assert isinstance(result, dict)
            assert result["decision"] == "no_diff"

            async def async_coder(req: mesh.AuthorRequest) -> dict[str, object]:
                await anyio.sleep(0.2)  # the watcher asks the board at least once
                return answer(req)

            _, result = run_on_worker(async_coder, request, 2, board, 0.05)
            assert isinstance(result, dict)
            assert result["candidate_id"] == "a-coder-1"

            def returns_coroutine(req: mesh.AuthorRequest) -> object:
                return async_coder(req)

            _, result = run_on_worker(returns_coroutine, request, 3, None, 0.05)
            assert isinstance(result, dict)
        finally:
            ray.kill(board)  # type: ignore[arg-type]

    def test_run_on_worker_makes_the_calls_span_current(self) -> None:
        """The task body, run here with a carrier: sync and async adapters see the call's span."""
        provider = TracerProvider(shutdown_on_exit=False)
        with provider.get_tracer("test").start_as_current_span("mesh.call") as call:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        seen: list[int] = []

        def sync_coder(req: mesh.AuthorRequest) -> dict[str, object]:
            seen.append(trace.get_current_span().get_span_context().span_id)
            return answer(req)

        async def async_coder(req: mesh.AuthorRequest) -> dict[str, object]:
            return sync_coder(req)

        request = first_coder_request(unit("a"))
        for coder in (sync_coder, async_coder):
            run_on_worker(coder, request, 1, None, 0.05, carrier)
        assert [call.get_span_context().span_id] * 2 == seen
        assert not trace.get_current_span().get_span_context().is_valid


class TestTracingOnRay:
    async def test_an_adapters_span_on_a_worker_is_a_child_of_its_call(self) -> None:
        """The call's trace context goes with the Ray task: the adapter's span nests under it."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with capture_ledger() as events:
            async with mesh.Orchestrator(
                roles=fake_roles(coder=TracedCoder()),
                executor=mesh.RayExecutor(lanes=["coder"]),
                tracer_provider=provider,
            ) as orchestrator:
                (await orchestrator.execute([unit("a")])).check()
        calls = [
            span
            for span in exporter.get_finished_spans()
            if span.name == "mesh.call" and (span.attributes or {})["mesh.lane"] == "coder"
        ]
        assert all(str((c.attributes or {})["mesh.where"]).startswith("ray:") for c in calls)
        (recorded,) = [e for e in events if e.event == "candidates_recorded"]
        candidates: list[dict[str, Any]] = recorded.data["candidates"]  # type: ignore[assignment]
        parents = {c["notes"] for c in candidates if c["lane"] == "coder"}
        assert {
            f"{c.context.trace_id:032x}/{c.context.span_id:016x}" for c in calls if c.context
        } == parents
        assert len(parents) == 2
