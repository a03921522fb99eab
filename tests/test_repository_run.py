"""Whole runs on real repositories: the engine with built-in adapters, `mesh run`, `mesh demo`."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mesh
import mesh.commands

from repo_helpers import git

pytestmark = pytest.mark.anyio

# A coder that appends its candidate id to a file named after the unit (inside the unit's scope).
CODER = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
    "import os, pathlib; p = pathlib.Path('src', os.environ['MESH_UNIT_ID'] + '.txt'); "
    "p.parent.mkdir(exist_ok=True); "
    "p.write_text(os.environ['MESH_OBJECTIVE'] + '\\n' "
    "+ 'x' * int(os.environ['MESH_TRIPLET_INDEX']))"
)


def plan(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "plan": [{"status": "pending", "proof_command": "test -s src/*.txt", **s} for s in steps]
    }


ONE_OF = "give one of --coder-command TEMPLATE and --agent AGENT"


class TestRunInRepository:
    async def test_commit_first_builds_on_earlier_units(self, repo: Path, tmp_path: Path) -> None:
        """Each unit becomes a commit; a dependent unit's coders see its dependency's commit."""
        steps = plan(
            {"id": "a", "step": "first", "write_scope": ["src/unit-001.txt"]},
            {
                "id": "b",
                "step": "second",
                "deps": ["a"],
                "write_scope": ["src/unit-002.txt"],
                "proof_command": "test -f src/unit-001.txt && test -f src/unit-002.txt",
            },
        )
        finished = await mesh.run_async(
            steps,
            repo=repo,
            out=tmp_path / "out",
            roles=mesh.Roles(
                coder=mesh.CommandCoder(repo, CODER), reducer=mesh.CommandCoder(repo, CODER)
            ),
            delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
        )
        finished.result.check()
        assert git(repo, "log", "--format=%s").splitlines() == ["second", "first", "initial"]
        # The fixer picks the smallest passing patch: candidate 1 writes the fewest bytes.
        assert (repo / "src" / "unit-001.txt").read_text() == "first\nx"
        state = json.loads(finished.plan_path.read_text())
        assert [s["status"] for s in state["plan"]] == ["completed", "completed"]
        events = [json.loads(line) for line in finished.ledger_path.read_text().splitlines()]
        assert events[-1]["event"] == "run_finished"
        assert git(repo, "worktree", "list").count("\n") == 0  # only the main worktree is left
        assert finished.workspaces_reused > 0

    async def test_estimates_are_kept_for_a_resume(self, repo: Path, tmp_path: Path) -> None:
        """A past run's durations order the next run; the store keeps them; bad ones stop it."""
        steps = plan({"id": "a", "step": "first", "write_scope": ["src"]})
        first = await mesh.run_async(
            steps,
            repo=repo,
            out=tmp_path / "first",
            roles=mesh.Roles(coder=mesh.CommandCoder(repo, CODER)),
            default_proof_command="true",
        )
        with mesh.RunStore.open(first.store_path) as past:
            durations = mesh.unit_durations(past.events())
        assert list(durations) == ["unit-001"]
        second = await mesh.run_async(
            steps,
            repo=repo,
            out=tmp_path / "second",
            roles=mesh.Roles(coder=mesh.CommandCoder(repo, CODER)),
            default_proof_command="true",
            estimates=durations,
        )
        second.result.check()
        with mesh.RunStore.open(second.store_path) as store:
            assert store.config["estimates"] == durations
        with pytest.raises(mesh.InputError, match=r"estimates\['unit-001'\]"):
            await mesh.run_async(
                steps,
                repo=repo,
                out=tmp_path / "third",
                roles=mesh.Roles(coder=mesh.CommandCoder(repo, CODER)),
                estimates={"unit-001": float("nan")},
            )
        assert not (tmp_path / "third").exists()

    async def test_patch_first_and_scope_escapes(self, repo: Path, tmp_path: Path) -> None:
        """patch_first leaves the repository alone; a coder writing out of scope is refused."""
        escaping = f"{CODER} && echo oops > README.md"
        finished = await mesh.run_async(
            plan({"id": "a", "step": "first", "write_scope": ["src"]}),
            repo=repo,
            out=tmp_path / "out",
            roles=mesh.Roles(
                coder=mesh.CommandCoder(repo, escaping), reducer=mesh.CommandCoder(repo, CODER)
            ),
            default_proof_command="true",
        )
        outcome = finished.result.outcome("unit-001")
        assert (outcome.state, outcome.accepted_candidate) == ("completed", "unit-001-reducer-3")
        assert Path(outcome.artifact_ref or "").is_file()
        assert git(repo, "log", "--format=%s") == "initial"
        refused = [
            json.loads(line)
            for line in finished.ledger_path.read_text().splitlines()
            if '"apply_failed"' in line
        ]
        assert len(refused) == 2
        assert "README.md, outside write_scope" in refused[0]["data"]["evidence"]

    async def test_overlapping_scopes_are_never_applied_together(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """Units whose scopes overlap hold their leases one at a time, through apply and proof."""
        log = tmp_path / "proofs.log"
        proof = f"echo start $MESH_UNIT_ID >> {log}; sleep 0.2; echo end $MESH_UNIT_ID >> {log}"
        steps = plan(
            *(
                {"id": f"s{i}", "step": f"step {i}", "write_scope": ["src"], "proof_command": proof}
                for i in range(3)
            )
        )
        finished = await mesh.run_async(
            steps,
            repo=repo,
            out=tmp_path / "out",
            roles=mesh.Roles(coder=mesh.CommandCoder(repo, CODER)),
        )
        assert len(finished.result.completed) == 3
        lines = log.read_text().split("\n")[:-1]
        owners = [line.split()[1] for line in lines]
        # Starts and ends of different units never interleave: one unit's proofs at a time.
        runs = [owners[0]]
        for owner in owners[1:]:
            if owner != runs[-1]:
                runs.append(owner)
        assert len(runs) == 3


class TestCommandLine:
    def test_mesh_run(self, repo: Path, tmp_path: Path) -> None:
        """`mesh run PLAN --repo R --coder-command C` prints the ledger and where files are."""
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps(plan({"id": "a", "step": "first", "write_scope": ["src"]})))
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "mesh",
                "run",
                str(plan_file),
                "--repo",
                str(repo),
                "--coder-command",
                CODER,
                "--delivery",
                "commit_first",
                "--out",
                str(tmp_path / "out"),
                "--remaining-five-hour",
                "50",
                "--max-threads",
                "2",
                "--proof-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert process.returncode == 0, process.stderr
        assert process.stdout.startswith("Orchestration Ledger\n")
        assert f"ledger {tmp_path / 'out' / 'ledger.jsonl'}" in process.stdout
        assert git(repo, "log", "-1", "--format=%s") == "first"

    def test_incomplete_run_exits_1(
        self, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When units fail, the report says why and the exit code is 1."""
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(
            json.dumps(
                plan(
                    {"id": "a", "step": "first", "write_scope": ["src"], "proof_command": "exit 1"}
                )
            )
        )
        monkeypatch.chdir(tmp_path)
        code, out, err = mesh_cli(
            ["run", str(plan_file), "--repo", str(repo), "--coder-command", CODER]
        )
        assert code == 1
        assert "unit-001 failed: proof_missing" in out
        assert "Candidates refused:\n  unit-001-coder-1: proof failed: " in out
        assert err == "error: RunIncomplete: 1 of 1 units did not complete\n"
        assert len(list((tmp_path / "mesh-runs").iterdir())) == 1

    def test_nothing_to_run(self, repo: Path, tmp_path: Path) -> None:
        """A plan whose steps are all done runs nothing and says so."""
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps({"plan": [{"step": "done", "status": "completed"}]}))
        report = mesh.commands.run(
            plan=plan_file, repo=repo, coder_command="true", out=tmp_path / "o"
        )
        assert (report.exit_code, report.text.splitlines()[0]) == (
            0,
            "Nothing to run: every step is completed.",
        )

    def test_nothing_runnable_is_not_success(self, repo: Path, tmp_path: Path) -> None:
        """Steps with a status other than pending/in_progress/completed are said, exit 1."""
        plan_file = tmp_path / "plan.json"
        steps = [{"step": "a", "status": "completed"}, {"step": "b", "status": "Pending"}]
        plan_file.write_text(json.dumps({"plan": [*steps, {"step": "c", "status": "todo"}]}))
        report = mesh.commands.run(
            plan=plan_file, repo=repo, coder_command="true", out=tmp_path / "o"
        )
        assert (report.exit_code, report.text.splitlines()[0]) == (
            1,
            (
                "Nothing to run: no step is pending or in_progress "
                "(1 completed; 1 'Pending', 1 'todo')."
            ),
        )

    @pytest.mark.parametrize(
        ("arguments", "error"),
        [
            (
                ["run", "plan.json"],
                f"error: MissingRequiredOption: {ONE_OF}\n",
            ),
            (
                ["run", "plan.json", "--coder-command", "x", "--agent", "codex"],
                f"error: InvalidOptionValue: {ONE_OF}\n",
            ),
            (
                ["run", "plan.json", "--agent", "gpt"],
                "error: InvalidOptionValue: --agent expects one of codex, claude, aider",
            ),
            (
                ["run", "plan.json", "--agent", "codex", "--reducer-command", "x"],
                "error: InvalidOptionValue: --reducer-command goes with --coder-command\n",
            ),
            (
                ["run", "plan.json", "--coder-command", "x", "--agent-model", "m"],
                "error: InvalidOptionValue: --agent-model needs --agent or --fixer-agent\n",
            ),
            (
                ["run", "plan.json", "--agent", "codex", "--agent-model=--yolo"],
                "error: InvalidOptionValue: --agent-model expects a model name, got '--yolo'\n",
            ),
            (
                ["run", "plan.json", "--agent", "codex", "--agent-model", "a\nb"],
                "error: InvalidOptionValue: --agent-model expects a model name, got 'a\\nb'\n",
            ),
            (
                ["run", "plan.json", "--coder-command", "x", "--budget-from-agent"],
                "error: InvalidOptionValue: --budget-from-agent needs --agent\n",
            ),
            (
                ["run", "plan.json", "--agent", "claude", "--budget-from-agent"],
                "error: InvalidOptionValue: claude does not report its 5-hour and weekly limits",
            ),
            (["run", "--coder-command", "x"], "error: MissingArgument: PLAN is required\n"),
            (
                ["run", "plan.json", "--coder-command", "{prompt}"],
                "error: InvalidOptionValue: command template '{prompt}': unknown placeholder",
            ),
            (
                ["run", "missing.json", "--coder-command", "x"],
                "error: FileAccessError: plan not found",
            ),
            (
                ["run", "plan.json", "--coder-command", "x", "--repo", "nowhere"],
                "error: InputError: --repo nowhere: not a folder\n",
            ),
            (
                ["run", "plan.json", "--coder-command", "x", "--proof-timeout", "0"],
                "error: InvalidOptionValue: --proof-timeout expects a positive number",
            ),
            (
                ["run", "plan.json", "extra.json", "--coder-command", "x"],
                "error: UnexpectedArgument: unexpected argument 'extra.json'\n",
            ),
            (["demo", "--folder", "plan.json"], "error: InputError: --folder"),
            (
                ["run", "plan.json", "--coder-command", "x", "--out", "."],
                (
                    "error: PathCollisionError: --out . holds PLAN plan.json: the run writes "
                    "there; keep the plan elsewhere\n"
                ),
            ),
            (
                ["run", "plan.json", "--coder-command", "x", "--no-network"],
                "error: InvalidOptionValue: --no-network needs --sandbox\n",
            ),
        ],
    )
    def test_bad_input_is_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], error: str
    ) -> None:
        """Every mistake is a one-line error and exit 1, never a traceback."""
        (tmp_path / "plan.json").write_text(json.dumps(plan({"step": "x"})))
        monkeypatch.chdir(tmp_path)
        code, out, err = mesh_cli(arguments)
        assert (code, out) == (1, "")
        assert err.startswith(error)
        assert err.count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]  # nothing written
        assert json.loads((tmp_path / "plan.json").read_text()) == plan({"step": "x"})

    def test_help_shows_the_argument(self) -> None:
        """`mesh run --help` shows PLAN."""
        code, out, _ = mesh_cli(["run", "--help"])
        assert (code, out.splitlines()[0]) == (0, "usage: mesh run PLAN [OPTIONS]")


def mesh_cli(arguments: list[str]) -> tuple[int, str, str]:
    from mesh.cli import _cli  # noqa: PLC0415 - the in-process runner, for speed

    return _cli.run(arguments)


class TestDemo:
    def test_demo_end_to_end(self, run_mesh: Any, tmp_path: Path) -> None:
        """`mesh demo` builds a repository and runs four units for real, refusing two candidates."""
        process = run_mesh("demo", "--folder", str(tmp_path / "demo"))
        assert process.returncode == 0, process.stderr
        out = process.stdout
        assert "4 completed, 0 failed, 0 blocked" in out
        assert "unit-001-coder-2: proof failed: 1 failed" in out
        assert "unit-004-coder-2: not applied: rejected: touches greet/__init__.py" in out
        repo = tmp_path / "demo" / "repo"
        assert len(git(repo, "log", "--format=%s").splitlines()) == 5
        assert git(repo, "status", "--porcelain") == ""
        greeting = subprocess.run(
            [sys.executable, "-m", "greet", "Ada"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        assert greeting.stdout == "Hello, Ada!\n"

    def test_demo_in_a_temporary_folder(self) -> None:
        """Without --folder the demo cleans up after itself."""
        report = mesh.commands.demo()
        assert report.exit_code == 0
        assert not report.run.out.exists()
        assert report.text.endswith(
            "(The demo folder was temporary; pass --folder PATH to keep it.)"
        )

    def test_demo_needs_pytest(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without pytest the demo says how to get it."""
        import importlib.util  # noqa: PLC0415

        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
        with pytest.raises(mesh.InputError, match=r"pip install 'mesh\[demo\]'"):
            mesh.commands.demo()


def test_demo_folder_must_be_empty(tmp_path: Path) -> None:
    """An existing, non-empty folder is never written into."""
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(mesh.InputError, match="not empty"):
        mesh.commands.demo(folder=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"remaining_five_hour": "abc"}, "remaining_five_hour is not a percentage"),
        ({"max_threads": 1e400}, "max_threads is not a count"),
        ({"max_threads": "12; rm"}, "max_threads is not a count"),
        ({"call_timeout": "soon"}, "call_timeout is not a number of seconds"),
        ({"call_timeout": -5}, "call_timeout is not a number of seconds"),
        ({"sandbox": "no"}, "sandbox is not true or false"),
        ({"agent_model": 5}, "agent_model is not text"),
    ],
)
def test_a_tampered_store_is_damaged_not_a_crash(
    repo: Path, tmp_path: Path, changes: dict[str, object], problem: str
) -> None:
    """Command-line options edited in a run store are one `StoreError` line, never a bug."""
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan({"id": "a", "step": "first", "write_scope": ["src"]})))
    out = tmp_path / "out"
    mesh.commands.run(plan=plan_file, repo=repo, coder_command=CODER, out=out)
    with sqlite3.connect(out / "run.sqlite") as database:
        (config,) = database.execute("SELECT config FROM run").fetchone()
        stored = json.loads(config)
        stored["cli"].update(changes)
        database.execute("UPDATE run SET config = ?", (json.dumps(stored),))
    code, _, errors = mesh_cli(["resume", str(out)])
    assert code == 1
    assert errors.startswith(f"error: StoreError: {out / 'run.sqlite'} is damaged: its command")
    assert problem in errors
