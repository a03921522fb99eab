"""
`mesh run --agent codex`: the one documented command, with the real Codex CLI, offline.

Codex reads its own configuration (``$CODEX_HOME/config.toml``), as it does on a
user's machine; here that configuration points it at a scripted OpenAI Responses
server on loopback, which also reports rate limits the way the provider does.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from agent_helpers import find_agent

import mesh
from mesh.cli import _cli
from mesh.testing._model_server import ScriptedModelServer
from mesh.testing.anthropic_messages import AnthropicMessages, Say, ToolUse
from mesh.testing.openai_responses import (
    Message,
    OpenAIResponses,
    RateLimits,
    Shell,
    Window,
)

from repo_helpers import git

pytestmark = pytest.mark.real_agent

SELECT = '{"verdict": "select", "candidate": "unit-001-coder-1", "reasons": ["it works"]}'
HELLO = (
    "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: src/hello.py\n"
    "+GREETING = 'hi'\n*** End Patch\nEOF\n"
)


def configure_codex(home: Path, url: str) -> None:
    """A Codex configuration as a user writes it, naming the scripted server as the provider."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        'model = "mesh-test"\nmodel_provider = "scripted"\n\n'
        "[model_providers.scripted]\n"
        f'name = "scripted"\nbase_url = "{url}/v1"\nwire_api = "responses"\n'
        "stream_max_retries = 0\nrequest_max_retries = 0\n"
    )


@pytest.fixture(name="codex_on_path")
def _codex_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = str(Path(find_agent("codex")).parent)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def write_plan(folder: Path) -> Path:
    plan = folder / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "plan": [
                    {
                        "step": "add a greeting module",
                        "status": "pending",
                        "write_scope": ["src/"],
                        "proof_command": "test -f src/hello.py",
                    }
                ]
            }
        )
    )
    return plan


@pytest.mark.usefixtures("codex_on_path")
def test_mesh_run_agent_codex_with_its_budget(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mesh run PLAN --repo R --agent codex --budget-from-agent`: a commit, and the real budget."""
    soon = int(time.time()) + 3600
    limits = RateLimits(
        primary=Window(used_percent=80.0, window_minutes=300, resets_at=soon),
        secondary=Window(used_percent=10.0, window_minutes=10080, resets_at=soon + 86400),
    )
    model = OpenAIResponses([Shell(HELLO), Message("added src/hello.py")], rate_limits=limits)
    home = tmp_path / "codex-home"
    out = tmp_path / "out"
    with ScriptedModelServer(model) as server:
        configure_codex(home, server.url)
        monkeypatch.setenv("CODEX_HOME", str(home))
        code, printed, errors = _cli.run(
            [
                "run", str(write_plan(tmp_path)), "--repo", str(repo), "--agent", "codex",
                "--budget-from-agent", "--max-threads", "4", "--delivery", "commit_first",
                "--out", str(out), "--call-timeout", "300",
            ]
        )  # fmt: skip
    assert (code, errors) == (0, ""), printed
    assert git(repo, "show", "HEAD:src/hello.py") == "GREETING = 'hi'"
    events = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    coders = [e["data"] for e in events if e["event"] == "adapter_call" and e["lane"] == "coder"]
    assert coders[0]["facts"]["agent"] == "codex"
    assert coders[0]["facts"]["final_message"] == "added src/hello.py"
    reads = [e["data"] for e in events if e["event"] == "budget_read"]
    assert reads[0]["target"] == 4  # nothing recorded yet: all of it left
    assert reads[-1]["strict_remaining"] == 20.0  # then what Codex recorded: 20% of 5 hours
    # The run can be resumed from its store: the agent and its options were kept.
    code, printed, errors = _cli.run(["resume", str(out)])
    assert (code, errors) == (0, ""), printed


@pytest.mark.usefixtures("codex_on_path")
def test_a_codex_fixer_with_a_command_coder(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--fixer-agent codex` judges what a command wrote: its verdict is in the ledger."""
    model = OpenAIResponses([Message(f"It adds the module.\n{SELECT}")] * 2)
    home = tmp_path / "codex-home"
    out = tmp_path / "out"
    with ScriptedModelServer(model) as server:
        configure_codex(home, server.url)
        monkeypatch.setenv("CODEX_HOME", str(home))
        code, printed, errors = _cli.run(
            [
                "run", str(write_plan(tmp_path)), "--repo", str(repo),
                "--coder-command", "echo \"GREETING = 'hi'\" > src/hello.py",
                "--fixer-agent", "codex", "--agent-model", "mesh-test", "--out", str(out),
            ]
        )  # fmt: skip
    assert (code, errors) == (0, ""), printed
    events = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    fixers = [e["data"] for e in events if e["event"] == "adapter_call" and e["lane"] == "fixer"]
    assert [fixer["decision"] for fixer in fixers] == ["accepted", "accepted"]
    assert fixers[0]["facts"]["agent"] == "codex"


def test_mesh_run_agent_claude_outside_dot_git(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    `mesh run PLAN --agent claude`: real candidates, from workspaces outside .git.

    Claude Code edits nothing under a .git folder, so the run's workspaces go to the
    user's cache instead.
    """
    folder = str(Path(find_agent("claude")).parent)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-scripted")
    write = ToolUse(name="Write", input={"file_path": "src/hello.py", "content": "GREETING = 1\n"})
    model = AnthropicMessages([write, Say(text="Added src/hello.py.")])
    out = tmp_path / "out"
    with ScriptedModelServer(model) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        code, printed, errors = _cli.run(
            [
                "run", str(write_plan(tmp_path)), "--repo", str(repo), "--agent", "claude",
                "--delivery", "commit_first", "--out", str(out), "--call-timeout", "300",
            ]
        )  # fmt: skip
    assert (code, errors) == (0, ""), printed + errors
    assert git(repo, "show", "HEAD:src/hello.py") == "GREETING = 1"
    workspaces = list((cache / "mesh" / "workspaces").iterdir())
    assert [path.name.startswith(f"{repo.name}-") for path in workspaces] == [True]
    with mesh.RunStore.open(out / mesh.STORE_FILE) as store:
        assert store.config["workspaces"] == str(workspaces[0])
