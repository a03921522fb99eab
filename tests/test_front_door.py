"""The front door: `mesh.run`, `run_async`, `resume`, `resume_async`, with any roles."""

from __future__ import annotations

import functools
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import mesh
from mesh.store._front import ctrl_c
from mesh.testing import FakeAdapter, answer, fake_roles

from engine_helpers import two_steps
from repo_helpers import git, make_repo

pytestmark = pytest.mark.anyio

SHA = re.compile(r"[0-9a-f]{40}")


class Killed(BaseException):
    """Not an Exception: nothing in mesh catches it, as nothing outlives a kill -9."""


def new_file(name: str, text: str) -> str:
    """A patch adding ``name`` (what an LLM coder returns: text, not a worktree)."""
    return (
        f"diff --git a/{name} b/{name}\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/{name}\n@@ -0,0 +1 @@\n+{text}\n"
    )


class LlmCoder:
    """An async coder that writes a diff without touching any worktree."""

    def __init__(self, *, stop_at: str | None = None) -> None:
        self.requests: list[mesh.AuthorRequest] = []
        self.stop_at = stop_at

    async def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
        self.requests.append(request)
        if self.stop_at == "ctrl-c":
            raise KeyboardInterrupt
        if request.unit.id == self.stop_at:
            raise Killed
        await anyio.lowlevel.checkpoint()
        target = request.unit.write_scope[0]
        return answer(request, patch=new_file(target, f"{request.unit.id} {request.candidate_id}"))


class PytestLikeProver:
    """Proves by reading the file the candidate wrote in its worktree."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: mesh.ProofRequest) -> dict[str, object]:
        self.calls += 1
        tree = Path(request.applied.worktree_path or "")
        written = (tree / request.unit.write_scope[0]).read_text()
        passed = written.startswith(request.unit.id)
        return answer(
            request,
            decision="pass" if passed else "fail",
            proof_status="pass" if passed else "fail",
        )


def voting_fixer(request: mesh.AdjudicationRequest) -> dict[str, object]:
    """Votes for the proven candidate with the shortest patch."""
    best = min(request.proven, key=lambda pair: len(pair[0].patch or ""))[0]
    return answer(request, selected_candidate=best.candidate_id)


def custom_roles(coder: LlmCoder, prover: PytestLikeProver | None = None) -> mesh.Roles:
    return mesh.Roles(coder=coder, prover=prover or PytestLikeProver(), fixer=voting_fixer)


async def killed_at_the_first_unit(repo: Path, out: Path) -> None:
    """A repository run with custom roles, stopped as by kill -9 in its first unit's coder."""
    with pytest.raises(BaseExceptionGroup):
        await mesh.run_async(
            two_steps(), repo=repo, out=out, roles=custom_roles(LlmCoder(stop_at="unit-001"))
        )


class TestInMemory:
    def test_run_with_fakes(self) -> None:
        result = mesh.run(two_steps(), roles=fake_roles())
        assert [o.state for o in result.outcomes] == ["completed", "completed"]

    async def test_run_async_twin(self, anyio_backend: str) -> None:
        events: list[mesh.LedgerEvent] = []
        result = await mesh.run_async(two_steps(), roles=fake_roles(), on_event=events.append)
        result.check()
        assert events[-1].event == "run_finished"

    def test_none_is_the_default(self) -> None:
        result = mesh.run(
            two_steps(), roles=fake_roles(), executor=None, clock=None, budget=None, run_id=None
        )
        result.check()

    def test_misspelt_and_mistyped_options_all_at_once(self) -> None:
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.run(
                two_steps(),
                roles=fake_roles(),
                max_attempt=3,  # type: ignore[call-overload]
                call_timeout="10",
                strict=1,
                branch="main",
                colour="red",
            )
        assert caught.value.problems == (
            "max_attempt: unknown option; did you mean 'max_attempts'?",
            "call_timeout: expected a number of seconds, got '10'",
            "strict: expected True or False, got 1",
            "branch: unknown option (a run in memory does not take it)",
            "colour: unknown option",
        )

    @pytest.mark.parametrize(
        ("options", "problem"),
        [
            ({"max_threads": True}, "max_threads: expected an integer, got True"),
            ({"run_id": 7}, "run_id: expected text, got 7"),
            ({"delivery_mode": "patch_first"}, "delivery_mode: expected a mesh.DeliveryMode"),
            ({"on_event": "print"}, "on_event: expected a callable, got str"),
            ({"lease_ttl": None}, "lease_ttl: has no None; leave it out for the default"),
            ({"lease_ttl": float("nan")}, "lease_ttl: must be > 0 seconds, got nan"),
            ({"call_timeout": float("inf")}, "call_timeout: must be at most 1,000,000,000 seconds"),
            ({"lease_ttl": 10**400}, "lease_ttl: must be at most 1,000,000,000 seconds"),
            ({"call_timeout": -1}, "call_timeout: must be > 0 seconds, got -1"),
            ({"max_attempts": 0}, "max_attempts: must be >= 1, got 0"),
            ({"sinks": 5}, "sinks: expected a list of ledger sinks (objects with emit()), got 5"),
            ({"sinks": ["abc"]}, "sinks: expected a list of ledger sinks"),
            ({"clock": 5}, "clock: expected a mesh.Clock, got 5"),
            ({"budget": 5}, "budget: expected a mesh.BudgetDecision or a callable"),
            ({"executor": 5}, "executor: expected a mesh.Executor, got 5"),
            ({"estimates": {"a": -1}}, "estimates: estimates['a']: "),
            ({"ledger_path": 5}, "ledger_path: expected a path, got 5"),
        ],
    )
    def test_each_option_type(self, options: dict[str, Any], problem: str) -> None:
        with pytest.raises(mesh.ValidationError, match=re.escape(problem)):
            mesh.run(two_steps(), roles=fake_roles(), **options)

    def test_no_limit_is_a_valid_call_timeout(self) -> None:
        mesh.run(two_steps(), roles=fake_roles(), call_timeout=None).check()

    @pytest.mark.parametrize("given", ["repo", "out"])
    def test_repo_and_out_go_together(self, tmp_path: Path, given: str) -> None:
        with pytest.raises(mesh.OptionError, match=f"{given} needs"):
            mesh.run(two_steps(), roles=fake_roles(), **{given: tmp_path})  # type: ignore[call-overload]

    def test_a_bad_backend(self) -> None:
        with pytest.raises(mesh.OptionError, match="backend must be 'asyncio' or 'trio', got 'uv'"):
            mesh.run(two_steps(), roles=fake_roles(), backend="uv")  # type: ignore[call-overload]

    def test_trio_backend(self) -> None:
        mesh.run(two_steps(), roles=fake_roles(), backend="trio").check()

    def test_trio_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(__import__("sys").modules, "trio", None)
        with pytest.raises(mesh.MeshError, match="needs trio") as caught:
            mesh.run(two_steps(), roles=fake_roles(), backend="trio")
        assert caught.value.hint == "pip install trio"

    async def test_inside_a_running_loop(self, anyio_backend: str) -> None:
        """A notebook's cell runs inside a loop: the hint says what to write there."""
        with pytest.raises(mesh.MeshError, match=f"{anyio_backend} is already running") as caught:
            mesh.run(two_steps(), roles=fake_roles())
        assert (
            caught.value.hint == "use `await mesh.run_async(...)` instead, with the same arguments"
        )
        assert "hint: use `await mesh.run_async(...)`" in caught.value.__notes__[0]
        with pytest.raises(mesh.MeshError, match=r"mesh\.resume_async"):
            mesh.resume("nowhere", roles=fake_roles())

    def test_trio_imported_but_not_running(self) -> None:
        import trio  # noqa: F401, PLC0415 - in sys.modules, with no loop running

        mesh.run(two_steps(), roles=fake_roles()).check()


class TestRolesCheckedFirst:
    def test_every_missing_role_at_once(self) -> None:
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.run(two_steps(), roles=mesh.Roles(coder=FakeAdapter()))
        assert caught.value.problems == tuple(
            f"roles.{lane}: missing (no adapter plays this role)"
            for lane in ("applier", "prover", "fixer", "integrator")
        )

    def test_adapters_of_the_wrong_shape(self) -> None:
        def two(request: object, extra: object) -> None: ...

        roles = fake_roles(
            prover=FakeAdapter,  # a class, not an instance
            fixer=two,
            integrator="deliver",
            replacements={"coder": FakeAdapter(), mesh.Lane.PROVER: len},
        )
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.run(two_steps(), roles=roles)
        assert caught.value.problems == (
            "roles.prover: FakeAdapter is a class: pass an instance of it",
            (
                "roles.fixer: TestRolesCheckedFirst.test_adapters_of_the_wrong_shape.<locals>.two"
                "(request: 'object', extra: 'object') -> 'None' cannot be called with one request"
            ),
            "roles.integrator: expected a callable taking one request, got str",
            "roles.replacements: keys are mesh.Lane members, got 'coder'",
        )

    def test_not_roles(self) -> None:
        with pytest.raises(mesh.ValidationError, match=r"expected mesh\.Roles, got dict"):
            mesh.run(two_steps(), roles={"coder": FakeAdapter()})  # type: ignore[call-overload]

    async def test_preflight_before_the_first_unit(self, anyio_backend: str) -> None:
        coder = FakeAdapter()

        class NeedsAKey(FakeAdapter):
            async def preflight(self) -> list[str]:
                return ["OPENAI_API_KEY is not set"]

        class Confused(FakeAdapter):
            def preflight(self) -> str:
                return "no"

        roles = fake_roles(coder=coder, fixer=NeedsAKey(), prover=Confused())
        with pytest.raises(mesh.ValidationError) as caught:
            await mesh.run_async(two_steps(), roles=roles)
        assert caught.value.problems == (
            "roles.prover: preflight() returned str, not a list of str",
            "roles.fixer: OPENAI_API_KEY is not set",
        )
        assert coder.calls == []

    async def test_an_unopened_workspace_manager(self, anyio_backend: str, repo: Path) -> None:
        """It used to fail at delivery, after every proof had run."""
        workspaces = mesh.WorkspaceManager(repo)
        coder = FakeAdapter()
        roles = fake_roles(coder=coder, applier=mesh.GitApplier(workspaces))
        with pytest.raises(
            mesh.ValidationError, match=r"roles\.applier: its WorkspaceManager is not"
        ):
            await mesh.run_async(two_steps(), roles=roles)
        assert coder.calls == []
        async with workspaces:
            assert mesh.GitApplier(workspaces).preflight() == []


class TestOnARepository:
    async def test_custom_roles_durably(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        """An LLM-style coder, a pytest-like prover and a voting fixer, with mesh's integrator."""
        coder, prover = LlmCoder(), PytestLikeProver()
        finished = await mesh.run_async(
            two_steps(),
            repo=repo,
            out=tmp_path / "out",
            roles=custom_roles(coder, prover),
            delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
        )
        finished.result.check()
        assert git(repo, "log", "--format=%s") == "write b\nwrite a\ninitial"
        assert (repo / "src" / "b.txt").read_text() == "unit-002 unit-002-coder-1\n"
        assert prover.calls == 4
        # The coders were told the commit each unit starts from, not "HEAD".
        bases = {request.unit.id: request.unit.base_sha for request in coder.requests}
        assert all(SHA.fullmatch(base) for base in bases.values())
        assert bases["unit-002"] == git(repo, "rev-parse", "HEAD~1")
        with mesh.RunStore.open(finished.store_path) as store:
            assert store.config["roles"]["coder"] == f"{__name__}:LlmCoder"
            assert store.config["roles"]["applier"] == "builtin"

    async def test_killed_and_resumed(self, anyio_backend: str, repo: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        with pytest.raises(BaseExceptionGroup):
            await mesh.run_async(
                two_steps(),
                repo=repo,
                out=out,
                roles=custom_roles(LlmCoder(stop_at="unit-002")),
                delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
            )
        assert git(repo, "log", "--format=%s") == "write a\ninitial"
        resumed = await mesh.resume_async(out, roles=custom_roles(LlmCoder()))
        assert [o.state for o in resumed.result.outcomes] == ["completed", "completed"]
        assert git(repo, "log", "--format=%s") == "write b\nwrite a\ninitial"

    async def test_a_resume_with_other_roles(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        await killed_at_the_first_unit(repo, out)
        with pytest.raises(mesh.ValidationError) as caught:
            await mesh.resume_async(out, roles=mesh.Roles(coder=LlmCoder()))
        assert caught.value.problems == (
            f"roles.prover: the run was started with {__name__}:PytestLikeProver, not builtin",
            f"roles.fixer: the run was started with {__name__}:voting_fixer, not builtin",
        )
        assert caught.value.__notes__ == [f"hint: resume {out} with the roles it was started with"]

    async def test_built_in_adapters_take_the_path(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        coder = mesh.CommandCoder(repo, "printf 'x\\n' > src/a.txt")
        finished = await mesh.run_async(
            {"plan": [{"id": "a", "step": "x", "write_scope": ["src"]}]},
            repo=repo,
            out=tmp_path / "out",
            roles=mesh.Roles(coder=coder, prover=mesh.CommandProver(repo, timeout=30)),
            default_proof_command="test -f src/a.txt",
        )
        finished.result.check()
        assert coder.workspaces == repo  # the caller's adapter is left as it was

    async def test_built_in_adapters_elsewhere(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        other = make_repo(tmp_path / "other")
        async with mesh.WorkspaceManager(repo) as workspaces:
            roles = mesh.Roles(
                coder=mesh.ScriptedCoder(other, {}),
                applier=mesh.GitApplier(workspaces),
                integrator=mesh.GitIntegrator(workspaces, artifacts=tmp_path / "patches"),
            )
            with pytest.raises(mesh.ValidationError) as caught:
                await mesh.run_async(two_steps(), repo=repo, out=tmp_path / "out", roles=roles)
        assert caught.value.problems == (
            (
                f"roles.coder: the ScriptedCoder works on {other}, but the run's repository "
                f"is {repo.resolve()}"
            ),
            (
                "roles.applier: give the GitApplier the repository's path, not a "
                "WorkspaceManager: the run opens its own workspaces"
            ),
            (
                "roles.integrator: leave it unset on a repository: the run delivers with its own "
                "GitIntegrator, kept in step with the run store"
            ),
        )
        assert not (tmp_path / "out").exists()

    def test_ctrl_c_says_how_to_continue(self, repo: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        with pytest.raises(KeyboardInterrupt) as caught:
            mesh.run(
                two_steps(), repo=repo, out=out, roles=custom_roles(LlmCoder(stop_at="ctrl-c"))
            )
        assert caught.value.__notes__ == [
            (
                f"The run stopped; its state is kept in {out}. Continue it with "
                f"mesh.resume({str(out)!r}, roles=...), with the same roles."
            )
        ]
        resumed = mesh.resume(out, roles=custom_roles(LlmCoder()), backend="trio")
        assert [o.state for o in resumed.result.outcomes] == ["completed", "completed"]

    def test_ctrl_c_in_memory(self) -> None:
        def interrupted(request: mesh.AuthorRequest) -> object:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt) as caught:
            mesh.run(two_steps(), roles=fake_roles(coder=interrupted))
        assert not hasattr(caught.value, "__notes__")


class TestNotSafeToRerun:
    async def test_an_interrupted_call_is_not_made_again(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        """A prover that opens a ticket must not open a second one after a crash."""
        calls: list[str] = []

        @mesh.not_rerun_safe
        async def ticketing_prover(request: mesh.ProofRequest) -> dict[str, object]:
            calls.append(request.candidate_id)
            if request.unit.id == "unit-002":
                raise Killed
            return answer(request)

        out = tmp_path / "out"
        roles = mesh.Roles(coder=LlmCoder(), prover=ticketing_prover)
        with pytest.raises(BaseExceptionGroup):
            await mesh.run_async(two_steps(), repo=repo, out=out, roles=roles)
        started = [c for c in calls if c.startswith("unit-002")]
        assert started
        resumed = await mesh.resume_async(out, roles=roles)
        outcome = resumed.result.outcome("unit-002")
        assert outcome.failure_code is mesh.FailureCode.REQUIRES_CLARIFICATION
        assert "not safe to re-run" in outcome.evidence
        assert outcome.evidence.startswith("the prover call for unit-002-")
        assert [c for c in calls if c.startswith("unit-002")] == started  # not called again
        with sqlite3.connect(out / "run.sqlite") as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM events WHERE event = 'call_started'"
            ).fetchone()
        assert count == len(calls)

    async def test_a_custom_integrator_must_declare_it(self, anyio_backend: str) -> None:
        """An integrator is taken as unsafe to re-run: an interrupted delivery is not redone."""
        delivered: list[str] = []

        async def integrator(request: mesh.DeliveryRequest) -> dict[str, object]:
            delivered.append(request.idempotency_key)
            return answer(request)

        sink = mesh.MemorySink()
        roles = fake_roles(integrator=integrator)
        await mesh.run_async(two_steps(), roles=roles, sinks=[sink], run_id="r")
        events = [
            e for e in sink.events if not (e.event == "unit_finished" and e.unit_id == "unit-002")
        ]
        point = mesh.resume_point(events)
        async with mesh.Orchestrator(roles=roles, run_id="r") as orchestrator:
            result = await orchestrator.execute(two_steps(), resume=point)
        assert result.outcome("unit-002").evidence.startswith("the delivery of unit-002-")
        assert delivered == ["r/unit-001", "r/unit-002"]

        async with mesh.Orchestrator(
            roles=fake_roles(integrator=mesh.rerun_safe(integrator)), run_id="r"
        ) as orchestrator:
            result = await orchestrator.execute(two_steps(), resume=point)
        assert result.outcome("unit-002").state == "completed"
        assert delivered == ["r/unit-001", "r/unit-002", "r/unit-002"]

    def test_declaring_on_what_cannot_carry_it(self) -> None:
        with pytest.raises(mesh.InputError, match="cannot declare a method's re-run safety"):
            mesh.rerun_safe(FakeAdapter().__call__)
        assert mesh.not_rerun_safe(FakeAdapter()).rerun_safe is False


class TestCommandLine:
    def test_ctrl_c_prints_the_resume_command(self, repo: Path, tmp_path: Path) -> None:
        """`mesh run` stopped by Ctrl-C says, on its last line, the command that continues it."""
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps(two_steps()))
        out = tmp_path / "the out"
        command = [sys.executable, "-m", "mesh", "run", str(plan), "--repo", str(repo)]
        process = subprocess.Popen(
            [*command, "--coder-command", "sleep 60", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ledger = out / "ledger.jsonl"
        deadline = time.monotonic() + 60
        while not (ledger.is_file() and "unit_started" in ledger.read_text()):
            assert time.monotonic() < deadline, process.stderr
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130
        assert err.splitlines()[-2:] == [
            "error: Interrupted: stopped by the user",
            f"hint: continue the run with: mesh resume '{out}'",
        ]

    def test_a_hint_on_its_own_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from mesh.cli import _cli  # noqa: PLC0415 - the command line's own printer

        def hinted(**_: object) -> str:
            raise mesh.MeshError("it went wrong", hint="do this")

        command = attrs.evolve(_cli.COMMANDS["budget"], run=hinted)
        monkeypatch.setitem(_cli.COMMANDS, "budget", command)
        arguments = ["budget", "--remaining-five-hour", "50", "--remaining-weekly", "50"]
        assert _cli.run(arguments) == (1, "", "error: MeshError: it went wrong\nhint: do this\n")


def test_mesh_adapters_are_named_alike_before_and_after_re_export() -> None:
    """The command line imports CommandCoder privately; a library resume sees `mesh.`."""
    from mesh.git._coders import CommandCoder  # noqa: PLC0415 - as the command line does
    from mesh.store._repo_run import role_kinds  # noqa: PLC0415 - what the store keeps

    kinds = role_kinds(mesh.Roles(coder=CommandCoder(".", "true"), fixer=FakeAdapter()))
    assert kinds["coder"] == "mesh:CommandCoder"
    assert kinds["fixer"] == "mesh:FakeAdapter"
    assert kinds["prover"] == "builtin"
    assert kinds["reducer"] == "none"


class TestNothingMadeForARunThatCannotStart:
    """Every refusal comes before the run's folder, store or workspaces exist."""

    @pytest.mark.parametrize(
        ("options", "problem"),
        [
            ({"pool_size": -3}, "pool_size: must be >= 0, got -3"),
            ({"proof_timeout": float("nan")}, "proof_timeout: must be > 0 seconds, got nan"),
            ({"sandbox": 5}, "sandbox: expected a mesh.Sandbox, got 5"),
            ({"workspaces": 5}, "workspaces: expected a path, got 5"),
            ({"workspaces": " "}, "workspaces: expected a folder, got ' '"),
            ({"extra_config": {"workspaces": "/x"}}, "extra_config: 'workspaces': mesh's own"),
            ({"extra_config": 5}, "extra_config: expected a mapping of text keys"),
            ({"extra_config": {"repo": "/elsewhere"}}, "extra_config: 'repo': mesh's own keys"),
            ({"extra_config": {"plan": [], "max_attempts": "x"}}, "'max_attempts', 'plan'"),
            ({"extra_config": {"when": object()}}, "extra_config: not JSON: "),
            ({"extra_config": {"x": float("nan")}}, "extra_config: not JSON: "),
            ({"max_threads": 2}, "max_threads: unknown option (a repository run does not"),
        ],
    )
    def test_bad_options(
        self, repo: Path, tmp_path: Path, options: dict[str, Any], problem: str
    ) -> None:
        with pytest.raises(mesh.ValidationError, match=re.escape(problem)):
            mesh.run(
                two_steps(),
                repo=repo,
                out=tmp_path / "out",
                roles=custom_roles(LlmCoder()),
                **options,
            )
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize(
        ("where", "problem"),
        [
            ("repo", "is inside the repository"),
            ("repo/.git", "is inside the repository"),
            ("repo/src/app.py", "is inside the repository"),
            ("a-file", "is not a folder"),
        ],
    )
    def test_workspaces_where_checkouts_cannot_go(
        self, repo: Path, tmp_path: Path, where: str, problem: str
    ) -> None:
        """Workspaces never go where they would be files of the repository (or over a file)."""
        (tmp_path / "a-file").write_text("mine")
        before = git(repo, "status", "--porcelain", "--ignored")
        with pytest.raises(mesh.InputError, match=re.escape(problem)):
            mesh.run(
                two_steps(),
                repo=repo,
                out=tmp_path / "out",
                roles=custom_roles(LlmCoder()),
                workspaces=tmp_path / where,
            )
        assert not (tmp_path / "out").exists()
        assert (tmp_path / "a-file").read_text() == "mine"
        assert git(repo, "status", "--porcelain", "--ignored") == before

    @pytest.mark.parametrize("name", ["plan.json", "ledger.jsonl", "patches"])
    def test_an_out_holding_what_a_run_writes(self, repo: Path, tmp_path: Path, name: str) -> None:
        """Someone else's plan.json or ledger.jsonl is never overwritten or appended to."""
        notes = tmp_path / "notes"
        notes.mkdir()
        (notes / name).write_text("mine")
        with pytest.raises(mesh.InputError, match=f"already holds {name}, which a run writes"):
            mesh.run(two_steps(), repo=repo, out=notes, roles=custom_roles(LlmCoder()))
        assert sorted(p.name for p in notes.iterdir()) == [name]
        assert (notes / name).read_text() == "mine"

    def test_a_folder_of_workspaces_keeps_what_is_not_meshs(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """Only folders mesh named itself are ever removed from a folder of workspaces."""
        shared = tmp_path / "shared"
        (shared / "notes").mkdir(parents=True)
        (shared / "notes" / "todo.txt").write_text("mine")
        (shared / "12345").mkdir()
        (shared / "readme.txt").write_text("mine")
        mesh.run(
            two_steps(),
            repo=repo,
            out=tmp_path / "out",
            roles=custom_roles(LlmCoder()),
            workspaces=shared,
        ).result.check()
        assert sorted(p.name for p in shared.iterdir()) == [
            "12345", "mesh-worktrees.lock", "notes", "readme.txt",
        ]  # fmt: skip
        with mesh.RunStore.open(tmp_path / "out" / mesh.STORE_FILE) as store:
            assert store.config["workspaces"] == str(shared)

    def test_paths_of_the_wrong_type(self, tmp_path: Path) -> None:
        with pytest.raises(mesh.ValidationError, match="repo: expected a path, got 5"):
            mesh.run(two_steps(), repo=5, out=tmp_path, roles=fake_roles())  # type: ignore[call-overload]

    async def test_a_failing_preflight(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        class Raises(LlmCoder):
            def preflight(self) -> list[str]:
                raise RuntimeError("no network")

        class Garbled(PytestLikeProver):
            async def preflight(self) -> list[str]:
                return ["key\x1b[31m missing\nunit-009 completed"]

        roles = mesh.Roles(coder=Raises(), prover=Garbled())
        with pytest.raises(mesh.ValidationError) as caught:
            await mesh.run_async(two_steps(), repo=repo, out=tmp_path / "out", roles=roles)
        assert caught.value.problems == (
            "roles.coder: preflight() raised RuntimeError: no network",
            "roles.prover: key\\x1b[31m missing\\nunit-009 completed",
        )
        assert not (tmp_path / "out").exists()
        (tmp_path / "stopped").mkdir()
        (tmp_path / "stopped" / "run.sqlite").write_bytes(b"SQLite format 3\0")
        with pytest.raises(mesh.ValidationError):
            await mesh.resume_async(tmp_path / "stopped", roles=roles)
        assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["run.sqlite"]

    async def test_a_run_already_there(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        await killed_at_the_first_unit(repo, out)
        with pytest.raises(mesh.StoreError, match="a run store is already there") as caught:
            await mesh.run_async(two_steps(), repo=repo, out=out, roles=custom_roles(LlmCoder()))
        assert caught.value.hint == (
            f"continue that run with mesh.resume({str(out)!r}, roles=...), "
            "or give another out folder"
        )


class TestResumeRoleKinds:
    async def test_a_script_resumed_from_an_import(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        """A class started as `__main__.Coder` is the same class imported by its module's name."""
        out = tmp_path / "out"
        await killed_at_the_first_unit(repo, out)
        with sqlite3.connect(out / "run.sqlite") as connection:
            (text,) = connection.execute("SELECT config FROM run").fetchone()
            config = json.loads(text)
            config["roles"]["coder"] = "__main__:LlmCoder"
            connection.execute("UPDATE run SET config = ?", (json.dumps(config),))
        resumed = await mesh.resume_async(out, roles=custom_roles(LlmCoder()))
        assert [o.state for o in resumed.result.outcomes] == ["completed", "completed"]

    async def test_a_replacement_added_on_resume(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        await killed_at_the_first_unit(repo, out)
        roles = attrs.evolve(
            custom_roles(LlmCoder()), replacements={mesh.Lane.CODER: LlmCoder()}, reducer=LlmCoder()
        )
        with pytest.raises(mesh.ValidationError) as caught:
            await mesh.resume_async(out, roles=roles)
        assert caught.value.problems == (
            f"roles.reducer: the run was started with none, not {__name__}:LlmCoder",
            "roles.replacements[coder]: the run was started without it",
        )


class TestNeverTwice:
    async def test_a_timed_out_unsafe_call_is_not_retried(self, anyio_backend: str) -> None:
        """A sync integrator's timed-out call may still be at work: it is not called again."""
        calls: list[int] = []

        def slow_integrator(request: mesh.DeliveryRequest) -> dict[str, object]:
            calls.append(request.call)
            time.sleep(0.5)
            return answer(request)

        result = await mesh.run_async(
            two_steps(),
            roles=fake_roles(
                integrator=slow_integrator, replacements={mesh.Lane.INTEGRATOR: FakeAdapter()}
            ),
            call_timeout=0.2,
            strict=False,
        )
        outcome = result.outcomes[0]
        assert outcome.failure_code is mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED
        assert "was not called again: its adapter is not safe to re-run" in outcome.evidence
        assert calls == [1]

    async def test_a_finished_call_whose_stage_was_not_recorded(self, anyio_backend: str) -> None:
        """A resume would make the call again: the unit fails instead, even though it ended."""
        calls: list[str] = []

        @mesh.not_rerun_safe
        def fixer(request: mesh.AdjudicationRequest) -> dict[str, object]:
            calls.append(request.candidate_id)
            return answer(request)

        sink = mesh.MemorySink()
        roles = fake_roles(fixer=fixer)
        await mesh.run_async(two_steps(), roles=roles, sinks=[sink], run_id="r")
        assert [e.event for e in sink.events].count("call_started") == 4  # med risk: 2 fixers
        # Stopped after unit-002's fixer answered, before its delivery started.
        cut = next(
            i
            for i, e in enumerate(sink.events)
            if e.event == "delivery_started" and e.unit_id == "unit-002"
        )
        point = mesh.resume_point(sink.events[:cut])
        assert sorted(point.checkpoints["unit-002"].interrupted) == [
            f"the fixer call for unit-002-fixer-{n} (attempt 1, call 1)" for n in (1, 2)
        ]
        assert point.checkpoints["unit-001"].interrupted == ()  # settled by its delivery
        async with mesh.Orchestrator(roles=roles, run_id="r") as orchestrator:
            result = await orchestrator.execute(two_steps(), resume=point)
        assert result.outcome("unit-002").failure_code is mesh.FailureCode.REQUIRES_CLARIFICATION
        assert sorted(calls) == [f"unit-00{u}-fixer-{n}" for u in (1, 2) for n in (1, 2)]

    def test_ctrl_c_on_trio_is_a_keyboard_interrupt(self, repo: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        with pytest.raises(KeyboardInterrupt) as caught:
            mesh.run(
                two_steps(),
                repo=repo,
                out=out,
                roles=custom_roles(LlmCoder(stop_at="ctrl-c")),
                backend="trio",
            )
        assert caught.value.__notes__[0].startswith("The run stopped; its state is kept in")

    def test_other_groups_pass_through(self) -> None:
        group = BaseExceptionGroup("two", [KeyboardInterrupt(), Killed()])
        assert ctrl_c(group) is None
        assert ctrl_c(Killed()) is None


class TestSecondReview:
    """What a second attack review found, each held by a test."""

    async def test_a_rework_is_committed_at_once(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        """An unsafe fixer's rework settles its call; a kill in the next attempt keeps it so."""
        calls: list[str] = []

        @mesh.not_rerun_safe
        def fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
            calls.append(request.candidate_id)
            if request.attempt == 1:
                return mesh.answers.rework(request, reason="try again")
            return mesh.answers.verdict(request, select=request.proven[0][0].candidate_id)

        class Coder(LlmCoder):
            async def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
                if request.attempt == 2 and self.stop_at:
                    raise Killed
                return await super().__call__(request)

        plan = {"plan": [two_steps()["plan"][0] | {"risk_tier": "low"}]}  # type: ignore[index]
        out = tmp_path / "out"
        with pytest.raises(BaseExceptionGroup):
            await mesh.run_async(
                plan, repo=repo, out=out, roles=mesh.Roles(coder=Coder(stop_at="x"), fixer=fixer)
            )
        with sqlite3.connect(out / "run.sqlite") as connection:
            events = [e for (e,) in connection.execute("SELECT event FROM events ORDER BY seq")]
        assert "rework" in events  # committed though no later barrier came
        resumed = await mesh.resume_async(out, roles=mesh.Roles(coder=Coder(), fixer=fixer))
        assert [o.state for o in resumed.result.outcomes] == ["completed"]
        assert calls == ["unit-001-fixer-1", "unit-001-fixer-1-a2"]

    def test_out_is_the_repository_itself(self, repo: Path) -> None:
        with pytest.raises(mesh.InputError, match="is the repository's top folder"):
            mesh.run(two_steps(), repo=repo, out=repo, roles=custom_roles(LlmCoder()))
        assert not (repo / "run.owner").exists()

    @pytest.mark.parametrize("out", ["", "  ", "a\0b"])
    def test_out_that_names_no_folder(self, repo: Path, out: str) -> None:
        with pytest.raises(mesh.ValidationError, match="out: "):
            mesh.run(two_steps(), repo=repo, out=out, roles=custom_roles(LlmCoder()))
        with pytest.raises(mesh.ValidationError, match="out: "):
            mesh.resume(out, roles=custom_roles(LlmCoder()))

    def test_a_bad_branch_leaves_nothing(self, repo: Path, tmp_path: Path) -> None:
        with pytest.raises(mesh.MeshError, match="is not a branch name"):
            mesh.run(two_steps(), repo=repo, out=tmp_path / "out", roles=fake_roles(), branch="-x")
        assert not (tmp_path / "out").exists()

    def test_resuming_what_is_not_a_store(self, tmp_path: Path) -> None:
        notes = tmp_path / "notes.db"
        notes.write_text("not sqlite")
        with pytest.raises(mesh.StoreError, match="not a run store"):
            mesh.resume(notes, roles=custom_roles(LlmCoder()))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]

    async def test_preflights_that_misbehave(self, anyio_backend: str) -> None:
        class Unprintable(Exception):
            def __str__(self) -> str:
                raise RuntimeError

        class BadStr(FakeAdapter):
            def preflight(self) -> list[str]:
                raise Unprintable

        class BadProperty(FakeAdapter):
            @property
            def preflight(self) -> object:
                raise LookupError("no")

        class Flood(FakeAdapter):
            def preflight(self) -> list[str]:
                return [f"problem {n}" for n in range(1000)]

        roles = fake_roles(coder=BadStr(), prover=BadProperty(), fixer=Flood())
        with pytest.raises(mesh.ValidationError) as caught:
            await mesh.run_async(two_steps(), roles=roles)
        problems = caught.value.problems
        assert problems[:2] == (
            "roles.coder: preflight() raised Unprintable",
            "roles.prover: preflight() raised LookupError: no",
        )
        assert problems[2:] == (
            *(f"roles.fixer: problem {n}" for n in range(20)),
            "roles.fixer: and 980 more problems",
        )

    def test_a_locksmith_cannot_be_unsafe(self) -> None:
        locksmith = mesh.not_rerun_safe(mesh.LeaseTable())
        with pytest.raises(mesh.ValidationError, match=r"roles\.locksmith: a locksmith is asked"):
            mesh.run(two_steps(), roles=fake_roles(locksmith=locksmith))

    def test_partials_are_named_by_what_they_wrap(self) -> None:
        from mesh.store._repo_run import role_kinds  # noqa: PLC0415 - what the store keeps

        kinds = role_kinds(mesh.Roles(coder=functools.partial(functools.partial(voting_fixer))))
        assert kinds["coder"] == f"{__name__}:voting_fixer"

    async def test_a_strict_stop_says_how_to_continue(
        self, anyio_backend: str, repo: Path, tmp_path: Path
    ) -> None:
        def broken(request: mesh.AdjudicationRequest) -> dict[str, object]:
            return {"not": "an answer"}

        out = tmp_path / "out"
        roles = mesh.Roles(coder=LlmCoder(), fixer=broken)
        with pytest.raises(mesh.AdapterMistake) as caught:
            await mesh.run_async(two_steps(), repo=repo, out=out, roles=roles, strict=True)
        assert caught.value.__notes__[-1] == (
            f"hint: the run's state is kept in {out}: fix the adapter, then continue "
            f"with mesh.resume({str(out)!r}, roles=...)"
        )

    @pytest.mark.parametrize(
        ("name", "command"),
        [
            ("out dir", "mesh resume 'out dir'"),
            ("--help", "mesh resume ./--help"),
            ("a\nb", "mesh resume RUN (RUN: the run's folder)"),
        ],
    )
    def test_the_pasted_resume_command(self, name: str, command: str) -> None:
        from mesh.cli._run_command import _resume_command  # noqa: PLC0415 - the CLI's own

        assert _resume_command(Path(name)) == command

    def test_ctrl_c_before_the_run_has_a_store(self, repo: Path, tmp_path: Path) -> None:
        class Interrupted(FakeAdapter):
            def preflight(self) -> list[str]:
                raise KeyboardInterrupt

        out = tmp_path / "out"
        with pytest.raises(KeyboardInterrupt) as caught:
            mesh.run(two_steps(), repo=repo, out=out, roles=mesh.Roles(coder=Interrupted()))
        assert not hasattr(caught.value, "__notes__")  # nothing to resume: no note saying so
        assert not out.exists()


async def test_a_base_that_is_no_commit(anyio_backend: str, repo: Path, tmp_path: Path) -> None:
    """A plan's base that names no commit fails its unit with why, before any coder runs."""
    coder = LlmCoder()
    plan = {"plan": [two_steps()["plan"][0] | {"base_sha": "no-such-ref"}]}  # type: ignore[index]
    finished = await mesh.run_async(
        plan, repo=repo, out=tmp_path / "out", roles=custom_roles(coder), max_attempts=1
    )
    outcome = finished.result.outcomes[0]
    assert outcome.failure_code is mesh.FailureCode.TOOLING_UNAVAILABLE
    assert outcome.evidence.startswith("base 'no-such-ref': ")
    assert coder.requests == []


def test_builtins_without_a_signature_are_trusted() -> None:
    """`inspect` cannot read `vars`' signature: the shape check lets it through to the run."""
    roles = fake_roles(replacements={mesh.Lane.FIXER: vars})
    mesh.run(two_steps(), roles=roles).check()


def test_no_trio_loaded_no_trio_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "trio")
    mesh.run(two_steps(), roles=fake_roles()).check()


async def test_roles_of_the_wrong_type_on_a_repository(
    anyio_backend: str, repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(mesh.ValidationError, match=r"roles: expected mesh\.Roles, got dict"):
        await mesh.run_async(
            two_steps(),
            repo=repo,
            out=tmp_path / "out",
            roles={"coder": LlmCoder()},  # type: ignore[call-overload]
        )
    assert not (tmp_path / "out").exists()


async def test_a_sync_preflight_returning_a_coroutine(anyio_backend: str) -> None:
    class Confused(FakeAdapter):
        def preflight(self) -> object:
            return anyio.lowlevel.checkpoint()

    # asyncio hands the coroutine back (closed, reported); trio refuses it in the thread.
    said = r"roles\.fixer: preflight\(\) (returned coroutine|raised TypeError: Trio expected)"
    with pytest.raises(mesh.ValidationError, match=said):
        await mesh.run_async(two_steps(), roles=fake_roles(fixer=Confused()))


class TestCommandLineInterrupts:
    """`mesh run`/`mesh resume`'s own handling of what stopped a run (`_watched`)."""

    @staticmethod
    def watched(stop: BaseException, folder: Path) -> BaseException:
        from mesh.cli._run_command import _watched  # noqa: PLC0415 - the command line's own

        async def main(_: object) -> mesh.RepositoryRun:
            raise stop

        with pytest.raises(BaseException) as caught:  # noqa: PT011 - each test says which
            _watched(None, main, folder)
        return caught.value

    def test_ctrl_c_on_trio_before_a_store(self, tmp_path: Path) -> None:
        stopped = self.watched(BaseExceptionGroup("run", [KeyboardInterrupt()]), tmp_path)
        assert type(stopped) is KeyboardInterrupt
        assert not hasattr(stopped, "resume_command")  # nothing to resume yet

    def test_anything_else_passes_through(self, tmp_path: Path) -> None:
        (tmp_path / "run.sqlite").write_bytes(b"")
        error = RuntimeError("boom")
        assert self.watched(error, tmp_path) is error


def test_every_built_in_adapter_checks_its_workspaces(repo: Path, tmp_path: Path) -> None:
    closed = mesh.WorkspaceManager(repo)
    adapters: list[Any] = [
        mesh.GitApplier(closed),
        mesh.CommandProver(closed),
        mesh.CommandCoder(closed, "true"),
        mesh.CallableCoder(closed, lambda request, tree: None),
        mesh.ScriptedCoder(closed, {}),
        mesh.GitIntegrator(closed, artifacts=tmp_path / "patches"),
    ]
    for adapter in adapters:
        assert adapter.preflight()[0].startswith("its WorkspaceManager is not open")
    assert mesh.CommandProver(repo).preflight() == []  # a path: opened where it runs


@pytest.mark.parametrize("cache", ["relcache", "~/.cache", ""])
def test_the_cache_folder_for_workspaces_is_absolute(
    cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative XDG_CACHE_HOME is ignored, as the XDG specification says."""
    from mesh.store._repo_run import _workspaces_root  # noqa: PLC0415 - the choice itself

    class OutsideGit(FakeAdapter):
        workspaces_outside_git = True

    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    monkeypatch.setenv("HOME", str(tmp_path))
    chosen = _workspaces_root(None, mesh.Roles(coder=OutsideGit()), Path("/work/repo"))
    assert chosen is not None
    assert Path(chosen).parent == tmp_path / ".cache" / "mesh" / "workspaces"
    assert Path(chosen).name.startswith("repo-")
    assert _workspaces_root(None, mesh.Roles(coder=FakeAdapter()), Path("/work/repo")) is None
