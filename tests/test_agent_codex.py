"""
OpenAI Codex CLI as a coder, fixer and budget source, driven for real and offline.

The real ``codex`` program (the pinned ``@openai/codex``, see agent_helpers) runs
against a scripted OpenAI Responses server on loopback: the script's tool calls
make Codex edit files in its worktree through its own sandbox, and mesh turns the
edits into candidates, proves and delivers them. The event-stream and
session-file readers are also tested on their own, on junk.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from agent_helpers import find_agent, marked

import mesh
from mesh.agents import AgentCoder, AgentFixer
from mesh.agents._codex import CODEX_VERSION, CodexCLI, read_events
from mesh.agents._codex_budget import (
    CodexLimits,
    CodexWindow,
    codex_budget,
    codex_limits,
    parse_limits,
)
from mesh.host._process import CommandResult
from mesh.testing._model_server import ModelRequest, ScriptedModelServer
from mesh.testing.openai_responses import (
    Hang,
    Malformed,
    Message,
    OpenAIResponses,
    RateLimits,
    Shell,
    ToolCall,
    Window,
)

from repo_helpers import git

pytestmark = pytest.mark.anyio


def patch_adding(files: dict[str, str]) -> str:
    """A Codex ``apply_patch`` shell command that adds ``files``."""
    body = "".join(
        f"*** Add File: {name}\n" + "".join(f"+{line}\n" for line in text.splitlines())
        for name, text in files.items()
    )
    return f"apply_patch <<'EOF'\n*** Begin Patch\n{body}*** End Patch\nEOF\n"


HELLO = patch_adding({"src/hello.py": "GREETING = 'hi'"})
SELECT = '{"verdict": "select", "candidate": "a-coder-1", "reasons": ["smallest"]}'


@pytest.fixture(name="codex", scope="module")
def _codex() -> str:
    return find_agent("codex")


def codex_cli(codex: str, server: ScriptedModelServer, home: Path, **options: object) -> CodexCLI:
    """Codex pointed at ``server``, its state in ``home``, with no retries (tests want failures)."""
    return CodexCLI(
        executable=codex,
        home=home,
        base_url=f"{server.url}/v1",
        config={
            "model_providers.mesh.stream_max_retries": 0,
            "model_providers.mesh.request_max_retries": 0,
        },
        **options,  # type: ignore[arg-type]
    )


def plan(scope: str = "src/") -> list[mesh.Unit]:
    return [
        mesh.Unit(
            id="a",
            objective="add a greeting module",
            write_scope=(scope,),
            invariants="main() still returns 1",
            proof_command="test -f src/hello.py",
        )
    ]


def request() -> mesh.AuthorRequest:
    return mesh.AuthorRequest(
        unit=plan()[0], lane=mesh.Lane.CODER, candidate_id="a-coder-1", triplet_index=1, attempt=1
    )


def ledger(finished: mesh.RepositoryRun) -> list[dict[str, Any]]:
    return [json.loads(line) for line in finished.ledger_path.read_text().splitlines()]


def calls(events: list[dict[str, Any]], lane: str) -> list[dict[str, Any]]:
    return [
        event["data"]
        for event in events
        if event["event"] == "adapter_call" and event["lane"] == lane
    ]


class TestRealCodex:
    async def test_a_commit_a_verdict_and_the_budget_from_a_real_codex_run(
        self, anyio_backend: str, codex: str, repo: Path, tmp_path: Path
    ) -> None:
        soon = int(time.time()) + 3600
        limits = RateLimits(
            primary=Window(used_percent=75.0, window_minutes=300, resets_at=soon),
            secondary=Window(used_percent=50.0, window_minutes=10080, resets_at=soon + 86400),
        )
        author = OpenAIResponses([Shell(HELLO), Message("added src/hello.py")], rate_limits=limits)
        # The reviewer tries to write anyway: Codex's read-only sandbox refuses it.
        reviewer = OpenAIResponses(
            [Shell("echo sneaky > src/sneaky.py"), Message(f"Both pass; the first.\n{SELECT}")]
        )
        home = tmp_path / "codex-home"
        with ScriptedModelServer(author) as coding, ScriptedModelServer(reviewer) as reviewing:
            finished = await mesh.run_async(
                plan(),
                repo=repo,
                out=tmp_path / "out",
                roles=mesh.Roles(
                    coder=AgentCoder(repo, codex_cli(codex, coding, home), timeout=120),
                    fixer=AgentFixer(repo, codex_cli(codex, reviewing, home), timeout=120),
                ),
                delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
                budget=codex_budget(home, max_threads=4),
            )
        finished.result.check()
        # A real commit, with what the model's patch added.
        assert git(repo, "log", "--format=%s").count("\n") == 1
        assert git(repo, "show", "HEAD:src/hello.py") == "GREETING = 'hi'"
        assert not (repo / "src" / "sneaky.py").exists()
        # Codex was told the unit, and ran the model's patch itself.
        told = json.dumps(coding.requests[0].body)
        assert "add a greeting module" in told
        assert "main() still returns 1" in told
        events = ledger(finished)
        facts = [call["facts"] for call in calls(events, "coder")]
        assert facts
        assert facts[0]["agent"] == "codex"
        assert facts[0]["final_message"] == "added src/hello.py"
        assert facts[0]["input_tokens"] == 200  # two model answers of 100
        assert facts[0]["output_tokens"] == 40
        assert facts[0]["turns"] == 2  # the patch and the message
        assert facts[0]["exit_code"] == 0
        assert str(facts[0]["session"])
        # The fixer's verdict was read, and its write was refused by Codex's sandbox.
        verdicts = calls(events, "fixer")
        assert verdicts
        assert all(v["decision"] == "accepted" for v in verdicts)
        assert str(verdicts[0]["facts"]["final_message"]).endswith(SELECT)
        outputs = json.dumps(list(reviewing.bodies("/responses")))
        assert "Read-only file system" in outputs
        # The budget: first read with nothing recorded (all left: 4 units), then again
        # after Codex recorded the server's windows (25% of 5 hours left: 2 units).
        reads = [event["data"] for event in events if event["event"] == "budget_read"]
        assert reads[0]["target"] == 4
        assert reads[-1]["target"] == 2
        assert reads[-1]["strict_remaining"] == 25.0
        recorded = codex_limits(home)
        assert recorded is not None
        assert recorded.primary == CodexWindow(
            used_percent=75.0, window_minutes=300, resets_at=soon
        )

    async def test_a_write_outside_the_scope_is_refused(
        self, anyio_backend: str, codex: str, repo: Path, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside.txt"  # under /tmp, which Codex's sandbox would allow
        script: list[ToolCall | Message] = [
            Shell(patch_adding({"src/hello.py": "X = 1", "docs/evil.md": "pwned"})),
            Shell(f"echo escaped > {outside}"),
            Message("done"),
        ]
        with ScriptedModelServer(OpenAIResponses(script)) as server:
            coder = AgentCoder(repo, codex_cli(codex, server, tmp_path / "home"), timeout=120)
            finished = await mesh.run_async(
                plan(), repo=repo, out=tmp_path / "out", roles=mesh.Roles(coder=coder)
            )
        outcome = finished.result.outcomes[0]
        assert outcome.state != "completed"
        assert "docs/evil.md" in outcome.evidence
        assert not (repo / "docs" / "evil.md").exists()
        assert git(repo, "log", "--format=%s") == "initial"
        # Codex's own sandbox kept the agent's commands in the worktree.
        assert not outside.exists()
        assert "Read-only file system" in json.dumps(list(server.bodies("/responses")))

    async def test_a_hanging_model_times_out_and_nothing_of_codex_is_left(
        self, anyio_backend: str, codex: str, repo: Path, tmp_path: Path
    ) -> None:
        model = OpenAIResponses([Hang()])
        marker = f"mesh-codex-{secrets.token_hex(8)}"
        with ScriptedModelServer(model) as server:
            coder = AgentCoder(
                repo,
                codex_cli(codex, server, tmp_path / "home"),
                timeout=3.0,
                env={"MESH_TEST_MARKER": marker},
            )
            result = await coder(request())
            assert str(result["notes"]).startswith("codex timed out after")
            assert result["decision"] == "reject"
            # The server saw Codex hang up: it is gone, with everything it started.
            assert await anyio.to_thread.run_sync(model.wait_quiet, 10.0)
            assert marked(marker) == []
            assert len(server.requests) >= 1
            model.close()

    async def test_a_malformed_reply_is_that_candidates_failure(
        self, anyio_backend: str, codex: str, repo: Path, tmp_path: Path
    ) -> None:
        with ScriptedModelServer(OpenAIResponses([Malformed()])) as server:
            coder = AgentCoder(repo, codex_cli(codex, server, tmp_path / "home"), timeout=120)
            result = await coder(request())
        assert result["decision"] == "reject"
        assert str(result["notes"]).startswith("codex: stream disconnected before completion")
        assert len(server.requests) == 1  # the -c overrides of the provider took: no retries

    async def test_without_its_own_sandbox_inside_meshs(
        self, anyio_backend: str, codex: str, repo: Path, tmp_path: Path
    ) -> None:
        sandbox = mesh.Sandbox.detect()
        if sandbox is None:
            pytest.skip("bubblewrap cannot run here")
        outside = tmp_path / "outside.txt"
        model = OpenAIResponses([Shell(HELLO), Shell(f"echo escaped > {outside}"), Message("ok")])
        with ScriptedModelServer(model) as server:
            agent = codex_cli(codex, server, tmp_path / "home", own_sandbox=False)
            coder = AgentCoder(repo, agent, timeout=120, sandbox=sandbox)
            result = await coder(request())
        assert result["decision"] == "accept"
        assert "+GREETING = 'hi'" in str(result["patch"])
        assert not outside.exists()
        assert "Read-only file system" in json.dumps(list(server.bodies("/responses")))


class TestCommand:
    def test_the_argv(self, tmp_path: Path) -> None:
        agent = CodexCLI(
            model="gpt-5-codex", profile="ci", config={"model_reasoning_effort": "low"}
        )
        argv = agent.command("codex", worktree=tmp_path, read_only=False)
        assert argv == [
            "codex", "exec", "--json", "--skip-git-repo-check", "--cd", str(tmp_path),
            "--sandbox", "workspace-write", "--model", "gpt-5-codex", "--profile", "ci",
            "-c", 'approval_policy="never"',
            "-c", "sandbox_workspace_write.exclude_slash_tmp=true",
            "-c", "sandbox_workspace_write.exclude_tmpdir_env_var=true",
            "-c", 'model_reasoning_effort="low"',
            "-",
        ]  # fmt: skip
        reviewer = CodexCLI(writable_tmp=True).command("codex", worktree=tmp_path, read_only=True)
        assert reviewer[reviewer.index("--sandbox") + 1] == "read-only"
        assert "sandbox_workspace_write.exclude_slash_tmp=true" not in reviewer
        assert CodexCLI.install == f"npm install -g @openai/codex@{CODEX_VERSION}"
        bare = CodexCLI(own_sandbox=False)
        for read_only in (False, True):
            argv = bare.command("codex", worktree=tmp_path, read_only=read_only)
            assert argv[argv.index("--sandbox") + 1] == "danger-full-access"

    def test_a_base_url_defines_a_provider(self, tmp_path: Path) -> None:
        agent = CodexCLI(base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY")
        argv = agent.command("codex", worktree=tmp_path, read_only=False)
        assert (
            'model_providers.mesh={name = "mesh", base_url = "http://127.0.0.1:9/v1", '
            'wire_api = "responses", env_key = "MY_KEY"}'
        ) in argv
        assert 'model_provider="mesh"' in argv

    def test_config_values_are_written_as_toml(self, tmp_path: Path) -> None:
        agent = CodexCLI(
            config={
                "a": 1.5,
                "b": False,
                "c": ['say "hi"', "ünï\x7f\n"],
                "d": {"plain-key": 2, "odd key": {}},
            }
        )
        argv = agent.command("codex", worktree=tmp_path, read_only=False)
        assert argv[-8:-1:2] == [
            "a=1.5", "b=false", 'c=["say \\"hi\\"", "ünï\\u007f\\n"]',
            'd={plain-key = 2, "odd key" = {}}',
        ]  # fmt: skip
        with pytest.raises(mesh.OptionError, match="codex config a: inf is not finite"):
            CodexCLI(config={"a": float("inf")})
        with pytest.raises(mesh.OptionError, match="codex config b: NoneType is not a TOML value"):
            CodexCLI(config={"b": None})  # type: ignore[dict-item]

    def test_the_environment_and_state(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        base = {"PATH": "/bin", "TMPDIR": str(tmp_path / "elsewhere")}
        env = CodexCLI(home=home).environment(base, read_only=False)
        assert env == {**base, "CODEX_HOME": str(home)}
        # A home under the temporary folder gets a TMPDIR of its own (see environment).
        inside = CodexCLI(home=home).environment({"TMPDIR": str(tmp_path)}, read_only=True)
        assert inside["TMPDIR"] == str(home / "mesh-tmp")
        assert (home / "mesh-tmp").is_dir()
        assert CodexCLI(home=home).writable() == [home]
        # Codex's default temporary folder is /tmp.
        assert CodexCLI().environment({"CODEX_HOME": "/srv/codex"}, read_only=False) == {
            "CODEX_HOME": "/srv/codex"
        }

    def test_the_users_home_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CODEX_HOME", raising=False)
        assert CodexCLI().writable() == [Path.home() / ".codex"]
        monkeypatch.setenv("CODEX_HOME", "/somewhere/codex")
        assert CodexCLI().writable() == [Path("/somewhere/codex")]

    def test_missing_codex_names_its_package(self, tmp_path: Path) -> None:
        with pytest.raises(mesh.agents.AgentUnavailable) as caught:
            CodexCLI(executable=tmp_path / "codex").find()
        assert caught.value.hint == f"install it: npm install -g @openai/codex@{CODEX_VERSION}"


def stream(*events: object) -> str:
    return "\n".join(e if isinstance(e, str) else json.dumps(e) for e in events) + "\n"


STARTED = {"type": "thread.started", "thread_id": "thread-1"}
MESSAGE = {"type": "item.completed", "item": {"id": "i", "type": "agent_message", "text": "done"}}
DONE = {
    "type": "turn.completed",
    "usage": {"input_tokens": 120, "cached_input_tokens": 100, "output_tokens": 30},
}


class TestEvents:
    def test_a_clean_run(self) -> None:
        notice = {"type": "item.completed", "item": {"type": "error", "message": "no metadata"}}
        command = {"type": "item.completed", "item": {"type": "command_execution"}}
        report = read_events(
            stream(STARTED, notice, {"type": "turn.started"}, command, MESSAGE, DONE)
        )
        assert report == mesh.agents.AgentReport(
            final_message="done", turns=2, input_tokens=120, output_tokens=30, session="thread-1"
        )

    def test_junk_is_skipped(self) -> None:
        junk = stream(
            "WARNING: not json",
            "{broken",
            "[1, 2]",
            '"text"',
            {"no": "type"},
            {"type": 7},
            {"type": "thread.started", "thread_id": 5},
            STARTED,
            {"type": "item.completed", "item": "not an item"},
            {"type": "item.completed", "item": {"type": "agent_message", "text": ["x"]}},
            {"type": "item.completed", "item": {"type": "agent_message", "text": "  "}},
            MESSAGE,
            {"type": "turn.completed", "usage": "lots"},
            {"type": "turn.completed", "usage": {"input_tokens": -1, "output_tokens": True}},
            {"type": "something.new", "payload": {}},
            "x" * 100_000,
        )
        report = read_events(junk)
        assert report.final_message == "done"
        assert report.session == "thread-1"
        assert (report.input_tokens, report.output_tokens) == (None, None)
        assert report.error is None

    def test_failures(self) -> None:
        failed = {"type": "turn.failed", "error": {"message": "stream disconnected"}}
        error = {"type": "error", "message": "Reconnecting... 1/5"}
        assert read_events(stream(STARTED, error, failed)).error == "stream disconnected"
        # An error after a failed turn does not replace it.
        assert read_events(stream(failed, error)).error == "stream disconnected"
        assert read_events(stream({"type": "turn.failed", "error": "x"})).error == "the turn failed"
        assert read_events(stream(STARTED, error)).error == "Reconnecting... 1/5"
        assert read_events(stream({"type": "error"})).error == "error"
        # An error it recovered from is no failure.
        assert read_events(stream(STARTED, error, MESSAGE, DONE)).error is None

    def test_a_malformed_stream(self) -> None:
        empty = read_events("")
        assert empty.error == "printed no JSON events (is this codex exec --json?)"
        assert empty.turns is None
        cut = read_events(stream(STARTED, MESSAGE))
        assert cut.error == "its event stream ended before the turn finished"
        # When Codex failed or was stopped, its exit code or timeout tells instead.
        assert read_events("", finished=False).error is None
        stopped = CommandResult(command="codex", exit_code=None, output="", timed_out=True)
        assert CodexCLI().read_output(stopped).error is None


def token_count(rate_limits: object, timestamp: object = "2026-01-01T00:00:00Z") -> str:
    return json.dumps(
        {
            "timestamp": timestamp,
            "type": "event_msg",
            "payload": {"type": "token_count", "info": None, "rate_limits": rate_limits},
        }
    )


T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class TestBudgetParsing:
    def test_the_last_recorded_windows(self) -> None:
        lines = [
            token_count({"primary": {"used_percent": 10.0}}),
            token_count(
                {
                    "primary": {"used_percent": 40.0, "window_minutes": 300, "resets_at": T0 + 60},
                    "secondary": {
                        "used_percent": 70,
                        "window_minutes": 10080,
                        "resets_in_seconds": 600,
                    },
                }
            ),
        ]
        limits = parse_limits(lines)
        assert limits == CodexLimits(
            primary=CodexWindow(used_percent=40.0, window_minutes=300, resets_at=T0 + 60),
            secondary=CodexWindow(used_percent=70.0, window_minutes=10080, resets_at=T0 + 600),
            seen_at=T0,
        )
        assert limits.remaining(now=T0) == (60.0, 30.0)
        # A window whose reset time has passed is whole again.
        assert limits.remaining(now=T0 + 120) == (100.0, 30.0)

    def test_junk_is_skipped(self) -> None:
        good = token_count({"primary": {"used_percent": 20.0}})
        lines = [
            good,
            "not json",
            "[]",
            json.dumps({"payload": "x"}),
            json.dumps({"payload": {"type": "agent_message"}}),
            token_count(None),
            token_count({"primary": "x", "secondary": {"used_percent": "lots"}}),
            token_count({"primary": {"used_percent": float("nan")}}),
            token_count({"primary": {"used_percent": True}}),
        ]
        assert parse_limits(lines) == parse_limits([good])
        assert parse_limits(["junk"]) is None

    def test_odd_fields(self) -> None:
        limits = parse_limits(
            [
                token_count(
                    {
                        "primary": {
                            "used_percent": 150,
                            "window_minutes": True,
                            "resets_in_seconds": 5,
                        },
                        "secondary": {"used_percent": 20, "window_minutes": 60},
                    },
                    timestamp="yesterday",
                )
            ]
        )
        assert limits == CodexLimits(
            primary=CodexWindow(used_percent=150.0),
            secondary=CodexWindow(used_percent=20.0, window_minutes=60),
        )
        assert limits.remaining(now=T0) == (0.0, 80.0)
        assert parse_limits([token_count({"secondary": {"used_percent": 5}}, timestamp=3)]) == (
            CodexLimits(secondary=CodexWindow(used_percent=5.0))
        )

    def test_a_window_with_no_reset_time_lasts_its_length(self) -> None:
        window = CodexWindow(used_percent=90.0, window_minutes=300)
        assert window.remaining(now=T0 + 299 * 60, seen_at=T0) == 10.0
        assert window.remaining(now=T0 + 300 * 60, seen_at=T0) == 100.0
        assert CodexLimits().remaining(now=T0) == (100.0, 100.0)


def write_session(home: Path, day: str, name: str, *lines: str, mtime: float) -> Path:
    path = home / "sessions" / day / f"rollout-{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    os.utime(path, (mtime, mtime))
    return path


class TestBudgetFiles:
    def test_the_newest_session_with_limits(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        assert codex_limits(home) is None  # no folder at all
        older = token_count({"primary": {"used_percent": 10.0}})
        newer = token_count({"primary": {"used_percent": 60.0}})
        write_session(home, "2026/01/01", "a", older, mtime=T0)
        write_session(home, "2026/01/02", "b", newer, "{junk", mtime=T0 + 10)
        write_session(home, "2026/01/02", "c", "no limits here", mtime=T0 + 20)
        day = home / "sessions" / "2026" / "01" / "02"
        (day / "rollout-d.jsonl").mkdir()  # unreadable
        (day / "rollout-e.jsonl").symlink_to(day / "gone")  # as if removed meanwhile
        assert codex_limits(home) == parse_limits([newer])

    def test_a_session_dated_in_the_future_is_passed_over(self, tmp_path: Path) -> None:
        """A forged file dated ahead (so as to stay newest for good) is not Codex's record."""
        home = tmp_path / "home"
        real = token_count({"primary": {"used_percent": 95.0}})
        forged = token_count({"primary": {"used_percent": 0.0}})
        write_session(home, "2026/01/01", "real", real, mtime=T0)
        write_session(home, "2099/01/01", "forged", forged, mtime=T0 + 10 * 365 * 86400)
        assert codex_limits(home, now=T0 + 60) == parse_limits([real])
        assert codex_limits(home, now=T0 + 11 * 365 * 86400) == parse_limits([forged])

    def test_only_the_tail_of_a_long_session_is_read(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        early = token_count({"primary": {"used_percent": 10.0}})
        late = token_count({"primary": {"used_percent": 30.0}})
        write_session(home, "2026/01/01", "long", early, "x" * (1024 * 1024), late, mtime=T0)
        assert codex_limits(home) == parse_limits([late])

    def test_the_default_home(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write_session(
            tmp_path, "2026/01/01", "a", token_count({"primary": {"used_percent": 1}}), mtime=T0
        )
        monkeypatch.setenv("CODEX_HOME", str(tmp_path))
        assert codex_limits() == parse_limits([token_count({"primary": {"used_percent": 1}})])

    async def test_the_provider(self, anyio_backend: str, tmp_path: Path) -> None:
        nothing = await codex_budget(tmp_path / "none", max_threads=6)()  # type: ignore[misc]
        assert nothing.max_active_units == 6
        write_session(
            tmp_path,
            "2026/01/01",
            "a",
            token_count({"primary": {"used_percent": 95.0, "resets_at": T0 + 60}}),
            mtime=T0,
        )
        low = codex_budget(tmp_path, max_threads=6, clock=lambda: T0)
        decision = await low()  # type: ignore[misc]
        assert decision.remaining_five_hour == 5.0
        assert decision.mode is mesh.BudgetMode.SINGLE_AGENT
        reset = await codex_budget(tmp_path, max_threads=6, clock=lambda: T0 + 61)()  # type: ignore[misc]
        assert reset.max_active_units == 6


def post(body: object, path: str = "/v1/responses") -> ModelRequest:
    return ModelRequest(method="POST", path=path, headers={}, body=body)


class TestResponder:
    def test_steps_follow_the_conversation(self) -> None:
        model = OpenAIResponses(
            [ToolCall(name="view_image", arguments={"path": "a.png"}), Message("done")],
            rate_limits=RateLimits(secondary=Window(used_percent=5)),
            input_tokens=7,
            output_tokens=3,
        )
        first = model(post({"input": [{"type": "message"}]}))
        assert first.headers == {"x-codex-secondary-used-percent": "5.0"}
        text = b"".join(first.chunks or ()).decode()
        assert '"name": "view_image"' in text
        assert '"arguments": "{\\"path\\": \\"a.png\\"}"' in text
        assert '"total_tokens": 10' in text
        second = model(post({"input": [{"type": "function_call"}, "junk"]}))
        assert b'"text": "done"' in b"".join(second.chunks or ())
        assert model(post({"input": [{"type": "function_call"}] * 2})).status == 400
        assert model(post("junk")).chunks is not None  # read as the conversation's start
        assert model(post({"input": "junk"})).chunks is not None
        assert model(post({}, path="/v1/models")).status == 404
        assert (
            model(ModelRequest(method="GET", path="/v1/responses", headers={}, body=None)).status
            == 404
        )

    def test_a_shell_step(self) -> None:
        assert Shell("ls", workdir="/w") == ToolCall(
            name="exec_command", arguments={"cmd": "ls", "workdir": "/w"}
        )

    def test_malformed_replies(self) -> None:
        model = OpenAIResponses([Malformed(status=429, body={"error": {"message": "slow down"}})])
        assert model(post({})).status == 429
        cut = OpenAIResponses([Malformed()])(post({}))
        assert b"response.completed" not in b"".join(cut.chunks or ())

    def test_a_hang_ends_when_closed_or_after_its_limit(self) -> None:
        model = OpenAIResponses([Hang(limit=0.3)])
        chunks: Iterator[bytes] = iter(model(post({})).chunks or ())
        assert b"response.created" in next(chunks)
        assert not model.wait_quiet(0.01)
        rest = list(chunks)  # the limit passed
        assert rest
        assert all(chunk.startswith(b":") for chunk in rest)
        assert model.wait_quiet(0.01)
        closing = OpenAIResponses([Hang()])
        stalled: Iterator[bytes] = iter(closing(post({})).chunks or ())
        next(stalled)
        closing.close()
        assert list(stalled) == []
        assert closing.wait_quiet(0.01)

    def test_headers_of_every_window(self) -> None:
        limits = RateLimits(
            primary=Window(used_percent=12.5, window_minutes=300, resets_at=1700000000),
            secondary=None,
        )
        assert limits.headers() == {
            "x-codex-primary-used-percent": "12.5",
            "x-codex-primary-window-minutes": "300",
            "x-codex-primary-reset-at": "1700000000",
        }

    def test_over_http(self) -> None:
        def ask(url: str, data: bytes | None = None) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(url, data=data, timeout=10) as answer:  # noqa: S310
                    return answer.status, answer.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        model = OpenAIResponses([Message("hi")])
        with ScriptedModelServer(model) as server:
            status, body = ask(f"{server.url}/v1/responses", b"not json")
            assert (status, b'"text": "hi"' in body) == (200, True)
            assert ask(f"{server.url}/v1/models")[0] == 404
            server.respond = lambda request: 1 / 0  # type: ignore[assignment,return-value]
            status, body = ask(f"{server.url}/v1/responses", b"{}")
        assert (status, json.loads(body)) == (
            500,
            {"error": {"message": "ZeroDivisionError('division by zero')"}},
        )
        assert [request.body for request in server.requests] == ["not json", None, {}]
        assert list(server.bodies("/models")) == [None]
