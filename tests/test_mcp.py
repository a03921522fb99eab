"""
mesh as an MCP server: tools and schemas, errors, a real run with progress, `mesh mcp` over stdio.

The client is the MCP SDK's own: in-process (`mcp.Client(server)`) for most
tests, and over a real ``mesh mcp`` subprocess speaking JSON-RPC on stdio
for the last ones. Every async test runs on asyncio and on trio (the SDK is
written on anyio and supports both, its stdio client included).
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import mesh_executable
from mcp import Client, StdioServerParameters, types
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

import mesh
import mesh.commands
import mesh.mcp
from mesh.cli import _cli, _run_command
from mesh.contracts._events import LedgerEvent
from mesh.mcp import _tools
from mesh.mcp._paths import Root

from repo_helpers import git, make_repo

EXAMPLE_PLAN = Path(__file__).parents[1] / "examples" / "plan.json"
BUDGET = {"remaining_five_hour": 50.0, "remaining_weekly": 50.0}
# A coder that writes src/<unit id>.txt with the unit's objective in its worktree.
CODER = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
    "import os, pathlib; p = pathlib.Path('src', os.environ['MESH_UNIT_ID'] + '.txt'); "
    "p.parent.mkdir(exist_ok=True); "
    "p.write_text(os.environ['MESH_OBJECTIVE'] + '\\n' "
    "+ 'x' * int(os.environ['MESH_TRIPLET_INDEX']))"
)
TOOL_NAMES = [
    "budget",
    "replay",
    "plan_sync",
    "slice",
    "wave",
    "run_csv",
    "ledger",
    "run",
    "status",
    "resume",
    "report",
]
Progress = list[tuple[float, float | None, str | None]]


def plan_steps(*steps: str) -> dict[str, object]:
    return {
        "plan": [
            {
                "step": f"write {step}",
                "status": "pending",
                "write_scope": ["src"],
                "proof_command": "true",
            }
            for step in steps
        ]
    }


def document(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    assert json.loads(block.text) == result.structured_content
    return result.structured_content


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def error(result: types.CallToolResult) -> str:
    assert result.is_error
    assert len(result.content) == 1
    message = text(result)
    assert "\n" not in message
    return message


def recorder() -> tuple[Progress, ProgressFnT]:
    seen: Progress = []

    async def record(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    return seen, record


@pytest.fixture(name="root")
def _root(tmp_path: Path) -> Path:
    """The server's root: a git repository, and the example plan beside it."""
    root = tmp_path / "root"
    make_repo(root / "repo")
    shutil.copy(EXAMPLE_PLAN, root / "plan.json")
    return root


class TestTools:
    @pytest.mark.anyio
    async def test_listed_with_strict_schemas(self, root: Path) -> None:
        """Every command is a tool; its schema is typed, strict and says what is required."""
        async with Client(mesh.mcp.server(root=root)) as client:
            listed = (await client.list_tools()).tools
        assert [tool.name for tool in listed] == TOOL_NAMES
        tools = {tool.name: tool for tool in listed}
        for tool in listed:
            assert tool.description
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema["additionalProperties"] is False
            assert tool.annotations is not None
            assert tool.annotations.open_world_hint is False
        budget = tools["budget"].input_schema
        assert budget["required"] == ["remaining_five_hour", "remaining_weekly"]
        assert budget["properties"]["max_threads"] == {
            "default": 12,
            "description": "most units active at once (0 counts as 1)",
            "title": "Max Threads",
            "type": "integer",
        }
        assert budget["properties"]["prior_wave_instability"]["type"] == "boolean"
        run = tools["run"].input_schema["properties"]
        assert run["agent"]["enum"] == ["codex", "claude", "aider", None]
        assert run["delivery"]["anyOf"][0] == {
            "enum": ["patch_first", "commit_first"],
            "type": "string",
        }
        assert tools["wave"].input_schema["properties"]["lane"]["enum"] == [
            lane.value for lane in mesh.Lane
        ]
        read_only = {name for name, tool in tools.items() if tool.annotations.read_only_hint}  # type: ignore[union-attr]
        assert read_only == {"budget", "replay", "plan_sync", "ledger", "status"}
        assert tools["run"].annotations.destructive_hint is True  # type: ignore[union-attr]
        assert tools["run"].annotations.idempotent_hint is False  # type: ignore[union-attr]

    def test_defaults_are_the_commands_defaults(self) -> None:
        """An argument left out means what the command's own default means."""
        pairs: list[tuple[type[_tools.Arguments], Callable[..., object]]] = [
            (_tools.BudgetArguments, mesh.commands.budget),
            (_tools.ReplayArguments, mesh.commands.replay),
            (_tools.SliceArguments, mesh.commands.slice),
            (_tools.WaveArguments, mesh.commands.wave),
            (_tools.RunCsvArguments, mesh.commands.run_csv),
            (_tools.LedgerArguments, mesh.commands.ledger),
            (_tools.RunArguments, _run_command.run),
            (_tools.StatusArguments, _run_command.status),
            (_tools.ResumeArguments, _run_command.resume),
            (_tools.ReportArguments, _run_command.report),
        ]
        for model, function in pairs:
            parameters = inspect.signature(function).parameters
            compared = 0
            for name, field in model.model_fields.items():
                parameter = parameters.get(name)
                if parameter is None or parameter.default is inspect.Parameter.empty:
                    continue
                assert field.default == parameter.default, (model.__name__, name)
                compared += 1
            assert compared, model.__name__

    def test_agents_are_the_registry_s(self) -> None:
        """The agent names offered are the ones `mesh run --agent` takes."""
        assert _tools._AGENT_SCHEMA["enum"] == [*_cli.AGENT_NAMES, None]

    @pytest.mark.anyio
    async def test_helpers_answer_as_the_commands(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each helper tool's document is the command's, paths taken from the root."""
        monkeypatch.chdir(root.parent)  # not the root: relative paths start at the root
        (root / "ledger.json").write_text(json.dumps({"waves": 2, "retries": 0, "cas": "none"}))
        async with Client(mesh.mcp.server(root=root)) as client:

            async def call(name: str, **arguments: object) -> dict[str, Any]:
                return document(await client.call_tool(name, arguments))

            assert await call(
                "budget", remaining_five_hour=40, remaining_weekly=28, max_threads=3
            ) == mesh.commands.budget(remaining_five_hour=40, remaining_weekly=28, max_threads=3)
            assert await call(
                "replay", remaining_five_hour=72, remaining_weekly=55, ready_units=24
            ) == mesh.commands.replay(remaining_five_hour=72, remaining_weekly=55, ready_units=24)
            plan = root / "plan.json"
            assert await call("plan_sync", input_json="plan.json") == mesh.commands.plan_sync(
                input_json=plan
            )
            units = await call("slice", input_json="plan.json", output_json="out/units.json")
            assert units == mesh.commands.slice(input_json=plan)
            assert json.loads((root / "out" / "units.json").read_text()) == units
            wave = await call("wave", units_json="out/units.json", csv_path="out/b.csv")
            batch = (root / "out" / "b.csv").read_text()
            expected = mesh.commands.wave(
                units_json=root / "out" / "units.json", csv_path=root / "out" / "b.csv"
            )
            assert (wave, (root / "out" / "b.csv").read_text()) == (expected, batch)
            output = await call("run_csv", csv_path="out/b.csv", output_csv_path="out/o.csv")
            assert output == mesh.commands.run_csv(
                csv_path=root / "out" / "b.csv", output_csv_path=root / "out" / "o.csv"
            )
            assert await call("ledger", input_json="ledger.json") == {
                "command": "ledger",
                "events": {"waves": 2},
            }


class TestErrors:
    @pytest.mark.anyio
    async def test_invalid_arguments(self, root: Path) -> None:
        """Wrong, missing, unknown or unusable arguments: one line in mesh's words, nothing done."""
        (root / "u.json").write_text(json.dumps(mesh.commands.slice(input_json=EXAMPLE_PLAN)))
        with pytest.raises(mesh.MeshError) as negative:
            mesh.commands.budget(remaining_five_hour=1, remaining_weekly=1, max_threads=-1)
        with pytest.raises(mesh.MeshError) as too_wide:
            mesh.commands.wave(units_json=root / "u.json", csv_path=root / "b.csv", triplet_width=5)
        cases: list[tuple[str, dict[str, object], str]] = [
            (
                "budget",
                {"remaining_five_hour": 1, "remaining_weekly": 1, "max_thread": 2},
                (
                    "error: ValidationError: invalid arguments of budget (1 problem): "
                    "max_thread: unknown argument (did you mean max_threads?)"
                ),
            ),
            (
                "budget",
                {"remaining_five_hour": "40"},
                (
                    "error: ValidationError: invalid arguments of budget (2 problems): "
                    "remaining_five_hour: Input should be a valid number; "
                    "remaining_weekly: required"
                ),
            ),
            (
                "budget",
                {"remaining_five_hour": 1, "remaining_weekly": 1, "prior_wave_instability": 1},
                (
                    "error: ValidationError: invalid arguments of budget (1 problem): "
                    "prior_wave_instability: Input should be a valid boolean"
                ),
            ),
            (
                "budget",
                {"remaining_five_hour": 1, "remaining_weekly": 1, "max_threads": -1},
                f"error: InputError: {negative.value.message}",
            ),
            (
                "ledger",
                {},
                "error: InvalidOptionValue: give run or input_json, one of them",
            ),
            (
                "plan_sync",
                {"input_json": "missing.json"},
                f"error: FileAccessError: plan not found: {root / 'missing.json'}",
            ),
        ]
        cases.append(
            (
                "wave",
                {"units_json": "u.json", "csv_path": "b.csv", "triplet_width": 5},
                f"error: {too_wide.value.kind}: {too_wide.value.message}",
            )
        )
        async with Client(mesh.mcp.server(root=root)) as client:
            for name, arguments, expected in cases:
                assert error(await client.call_tool(name, arguments)) == expected, arguments
        assert not (root / "b.csv").exists()

    @pytest.mark.anyio
    async def test_paths_stay_inside_the_root(self, root: Path, tmp_path: Path) -> None:
        """Absolute, climbing or linked paths out of the root are refused before any I/O."""
        (tmp_path / "outside.json").write_text(EXAMPLE_PLAN.read_text())
        (root / "link").symlink_to(tmp_path)
        hint = "(hint: start the server with `mesh mcp --root DIR` for a root that holds it)"
        async with Client(mesh.mcp.server(root=root)) as client:
            for given in [str(tmp_path / "outside.json"), "../outside.json", "link/outside.json"]:
                message = error(await client.call_tool("plan_sync", {"input_json": given}))
                assert message == (
                    f"error: InputError: input_json {given!r} is outside the server's root "
                    f"{root} {hint}"
                )
            message = error(
                await client.call_tool(
                    "slice", {"input_json": "plan.json", "output_json": "link/units.json"}
                )
            )
            assert "output_json 'link/units.json' is outside the server's root" in message
            assert not (tmp_path / "units.json").exists()
            assert error(await client.call_tool("plan_sync", {"input_json": " "})) == (
                "error: InvalidOptionValue: input_json expects a path, got ' '"
            )
            assert error(await client.call_tool("plan_sync", {"input_json": "a\0b"})) == (
                "error: InvalidOptionValue: input_json: a path has no NUL character"
            )
            message = error(await client.call_tool("status", {"run": "nothing"}))
            assert message == (
                f"error: InputError: no run 'nothing' (looked for {root / 'nothing'} "
                f"and {root / 'mesh-runs' / 'nothing'})"
            )
            message = error(await client.call_tool("status", {"run": "x", "runs": "/"}))
            assert message.startswith("error: InputError: runs '/' is outside the server's root")

    @pytest.mark.anyio
    async def test_git_data_pipes_and_run_folders_are_not_files_to_use(self, root: Path) -> None:
        """Inside the root too: no .git, no FIFO (a read that never ends), no run's own files."""
        os.mkfifo(root / "pipe.json")
        (root / "runs" / "r").mkdir(parents=True)
        (root / "runs" / "r" / "run.sqlite").write_text("")
        head = (root / "repo" / ".git" / "HEAD").read_text()
        async with Client(mesh.mcp.server(root=root)) as client:
            message = error(
                await client.call_tool(
                    "slice", {"input_json": "plan.json", "output_json": "repo/.git/HEAD"}
                )
            )
            assert (
                message == "error: InputError: output_json 'repo/.git/HEAD' is inside a .git folder"
            )
            message = error(await client.call_tool("plan_sync", {"input_json": "pipe.json"}))
            assert message == "error: InputError: input_json 'pipe.json' is not a file or a folder"
            message = error(
                await client.call_tool(
                    "slice", {"input_json": "plan.json", "output_json": "runs/r/ledger.jsonl"}
                )
            )
            assert message.startswith(
                "error: InputError: output_json 'runs/r/ledger.jsonl' is in the folder of a run"
            )
            message = error(await client.call_tool("replay", {"ready_units": 10**12, **BUDGET}))
            assert "ready_units: Input should be less than or equal to 1000000" in message
        assert (root / "repo" / ".git" / "HEAD").read_text() == head
        assert not (root / "runs" / "r" / "ledger.jsonl").exists()

    def test_unresolvable_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A path the system cannot resolve (a link loop, a name too long) is an input error."""
        root = Root(tmp_path)

        def loop(self: Path, strict: bool = False) -> Path:  # noqa: FBT001, FBT002 - Path.resolve's
            raise RuntimeError(f"Symlink loop from {str(self)!r}")

        monkeypatch.setattr(Path, "resolve", loop)
        with pytest.raises(mesh.InputError, match=r"^here 'a' cannot be resolved: Symlink loop"):
            root.path("a", name="here")

    @pytest.mark.anyio
    async def test_unknown_tool_is_a_protocol_error(self, root: Path) -> None:
        """A tool that does not exist is the request's error, with the closest name."""
        async with Client(mesh.mcp.server(root=root)) as client:
            with pytest.raises(MCPError, match=r"no tool 'budgte' \(did you mean budget\?\)"):
                await client.call_tool("budgte", {})

    @pytest.mark.anyio
    async def test_a_bug_is_one_line(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unexpected exception reaches the model as one line; its traceback goes to the log."""

        def broken(**options: object) -> dict[str, object]:
            raise RuntimeError("boom\nsecond line")

        monkeypatch.setattr(mesh.commands, "budget", broken)
        async with Client(mesh.mcp.server(root=root)) as client:
            result = await client.call_tool(
                "budget", {"remaining_five_hour": 1, "remaining_weekly": 1}
            )
        assert error(result) == "error: InternalError: RuntimeError: boom\\nsecond line"
        assert "Traceback" in caplog.text

    def test_without_the_sdk(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the MCP SDK, the server and `mesh mcp` say what to install."""
        monkeypatch.setitem(sys.modules, "mcp", None)
        with pytest.raises(mesh.MeshError, match="needs the MCP Python SDK") as raised:
            mesh.mcp.server()
        assert raised.value.hint == "pip install 'mesh[mcp]'"
        assert _cli.run(["mcp"]) == (
            1,
            "",
            (
                "error: MeshError: mesh mcp needs the MCP Python SDK (the `mcp` package), which is "
                "not installed\nhint: pip install 'mesh[mcp]'\n"
            ),
        )


class TestRuns:
    @pytest.mark.anyio
    async def test_run_status_ledger_report_resume(self, root: Path) -> None:
        """A real run on a repository, with progress; then its status, ledger, report, resume."""
        (root / "two.json").write_text(json.dumps(plan_steps("a", "b")))
        progress, record = recorder()
        async with Client(mesh.mcp.server(root=root)) as client:
            result = await client.call_tool(
                "run",
                {
                    "plan": "two.json",
                    "repo": "repo",
                    "coder_command": CODER,
                    "delivery": "commit_first",
                    "out": "runs/first",
                    "max_threads": 2,
                },
                progress_callback=record,
            )
            run = document(result)
            folder = root / "runs" / "first"
            assert run["exit_code"] == 0, run["report"]
            assert (run["command"], run["out"]) == ("run", str(folder))
            assert [(u["id"], u["state"]) for u in run["units"]] == [
                ("unit-001", "completed"),
                ("unit-002", "completed"),
            ]
            assert run["report"].startswith("Orchestration Ledger\n")
            delivered = git(root / "repo", "log", "--format=%s", "-2").splitlines()
            assert sorted(delivered) == ["write a", "write b"]
            # Units finish in either order; the count goes up one by one.
            assert [(done, total) for done, total, _ in progress] == [(0, 2), (1, 2), (2, 2)]
            assert [message for _, _, message in progress] in (
                ["run started", "unit-001 finished", "unit-002 finished"],
                ["run started", "unit-002 finished", "unit-001 finished"],
            )

            status = document(await client.call_tool("status", {"run": "runs/first"}))
            assert status == _run_command.status(run=folder)
            assert status["by_state"] == {"completed": 2}
            ledger = await client.call_tool("ledger", {"run": "first", "runs": "runs"})
            assert not ledger.is_error
            assert ledger.structured_content is None
            assert text(ledger) == _run_command.stored_ledger(run=folder)
            report = document(
                await client.call_tool("report", {"run": "runs/first", "output": "r.html"})
            )
            assert report["output"] == str(root / "r.html")
            assert (root / "r.html").read_text().startswith("<!doctype html>")

            resumed_progress, record_resumed = recorder()
            resumed = document(
                await client.call_tool(
                    "resume",
                    {"run": str(folder / "run.sqlite")},
                    progress_callback=record_resumed,
                )
            )
            assert (resumed["command"], resumed["run_id"]) == ("resume", run["run_id"])
            assert resumed_progress[0] == (2, 2, "run resumed")

    @pytest.mark.anyio
    async def test_run_refusals(self, root: Path) -> None:
        """A run that cannot start says why, before anything is created."""
        (root / "runs").mkdir()
        (root / "runs" / "plan.json").write_text(json.dumps(plan_steps("a")))
        base: dict[str, object] = {"repo": "repo", "coder_command": CODER}
        cases: list[tuple[dict[str, object], str]] = [
            (base, "error: InvalidOptionValue: give plan (a file) or plan_document, one of them"),
            (
                {**base, "plan": "plan.json", "plan_document": plan_steps("a")},
                "error: InvalidOptionValue: give plan (a file) or plan_document, one of them",
            ),
            (
                {"plan": "plan.json", "repo": "repo"},
                (
                    "error: MissingRequiredOption: give one of --coder-command TEMPLATE and "
                    "--agent AGENT"
                ),
            ),
            (
                {**base, "plan": "runs/plan.json", "out": "runs"},
                (
                    f"error: PathCollisionError: out {root / 'runs'} holds plan "
                    f"{root / 'runs' / 'plan.json'}: the run writes there; keep the plan elsewhere"
                ),
            ),
            (
                {"plan": "plan.json", "repo": "repo", "agent": "gpt"},
                (
                    "error: InvalidOptionValue: unknown agent 'gpt': "
                    "expected one of codex, claude, aider"
                ),
            ),
            (
                {**base, "plan": "plan.json", "delivery": "later"},
                (
                    "error: ValidationError: invalid arguments of run (1 problem): delivery: "
                    "Input should be 'patch_first' or 'commit_first'"
                ),
            ),
        ]
        async with Client(mesh.mcp.server(root=root)) as client:
            for arguments, expected in cases:
                assert error(await client.call_tool("run", arguments)) == expected
            # Found wrong once the run starts: not a repository.
            message = error(
                await client.call_tool(
                    "run", {**base, "repo": "runs", "plan_document": plan_steps("a")}
                )
            )
            assert message.startswith("error: "), message
        assert sorted(path.name for path in (root / "runs").iterdir()) == ["plan.json"]

    @pytest.mark.anyio
    async def test_resume_keeps_to_the_root_whatever_the_store_says(
        self, root: Path, tmp_path: Path
    ) -> None:
        """A store is a file the client chose: the folders it names must be in the root too."""
        (root / "one.json").write_text(json.dumps(plan_steps("a")))
        async with Client(mesh.mcp.server(root=root)) as client:
            first = document(
                await client.call_tool(
                    "run",
                    {"plan": "one.json", "repo": "repo", "coder_command": CODER, "out": "r1"},
                )
            )
            assert first["exit_code"] == 0, first["report"]
            victim = tmp_path / "outside"
            (victim / "thesis").mkdir(parents=True)
            for key, named in (("workspaces", "workspaces"), ("repo", "repository")):
                with sqlite3.connect(root / "r1" / "run.sqlite") as database:
                    (config,) = database.execute("SELECT config FROM run").fetchone()
                    changed = {**json.loads(config), key: str(victim)}
                    database.execute("UPDATE run SET config = ?", (json.dumps(changed),))
                message = error(await client.call_tool("resume", {"run": "r1"}))
                assert message.startswith(f"error: InputError: the stored run's {named} "), message
                assert "is outside the server's root" in message
        assert sorted(p.name for p in victim.iterdir()) == ["thesis"]

    @pytest.mark.anyio
    async def test_resume_needs_a_mesh_run(self, root: Path) -> None:
        """A run started from Python (no command-line options kept) is not resumed over MCP."""
        nothing = {"plan": [{"step": "done", "status": "completed"}]}
        await mesh.run_async(
            nothing,
            repo=root / "repo",
            out=root / "py-run",
            roles=mesh.Roles(coder=mesh.CommandCoder(root / "repo", "true")),
        )
        async with Client(mesh.mcp.server(root=root)) as client:
            message = error(await client.call_tool("resume", {"run": "py-run"}))
        assert message == (
            f"error: InputError: {root / 'py-run' / 'run.sqlite'} was not started by "
            "`mesh run`: resume it from Python"
        )

    def test_progress_steps(self) -> None:
        """Progress follows the ledger: the unit count, a resume's finished units, each end."""

        def event(name: str, **data: object) -> LedgerEvent:
            return LedgerEvent(event=name, run_id="r", seq=1, at=0.0, unit_id="u\n1", data=data)

        progress = _tools.RunProgress()
        assert progress.step(event("run_started", units="many")) == (0, None, "run started")
        assert progress.step(event("run_resumed", units=3, finished=None)) == (0, 3, "run resumed")
        assert progress.step(event("unit_started")) is None
        assert progress.step(event("unit_blocked")) == (1, 3, "u\\n1 blocked")
        assert progress.step(event("run_resumed", units=None, finished=2)) == (
            2,
            None,
            "run resumed",
        )


class TestStdio:
    @pytest.mark.anyio
    async def test_mesh_mcp_over_stdio(self, root: Path) -> None:
        """`mesh mcp` as a subprocess: tools listed, a run's progress sent as notifications."""
        progress, record = recorder()
        server = StdioServerParameters(
            command=mesh_executable()[0],
            args=["mcp", "--root", str(root)],
            # The whole environment: coverage follows the subprocess through it.
            env=dict(os.environ),
            cwd=root.parent,
        )
        async with Client(server) as client:
            assert [tool.name for tool in (await client.list_tools()).tools] == TOOL_NAMES
            result = await client.call_tool(
                "run",
                {"plan_document": plan_steps("a"), "repo": "repo", "coder_command": CODER},
                progress_callback=record,
            )
        run = document(result)
        assert run["exit_code"] == 0, run["report"]
        assert Path(run["out"]).parent == root / "mesh-runs"
        assert progress == [(0, 1, "run started"), (1, 1, "unit-001 finished")]

    def test_help(self) -> None:
        """`mesh mcp --help` names its one option."""
        code, out, err = _cli.run(["mcp", "--help"])
        assert (code, err) == (0, "")
        assert "--root DIR" in out
        assert "example: mesh mcp\n" in out
