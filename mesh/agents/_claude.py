"""
Claude Code (``claude -p``) as a coder and a fixer.

Flags and output are those of ``@anthropic-ai/claude-code`` 2.1.337 (the version the
tests pin). The worktree is untrusted: a repository can carry ``.claude/settings.json``
(hooks, ``apiKeyHelper``, permission rules), ``.mcp.json`` servers, skills and a
``CLAUDE.md``, any of which Claude Code would otherwise load and run. So mesh starts it
in ``--restricted`` mode (no settings files, file tools confined to the worktree, no
tool that runs commands unless named), with only the user setting source and only the
MCP servers given on the command line (none), no skills, and no permission prompts
(what would ask is refused). A coder gets the file tools with edits accepted; a fixer
gets only the reading tools. The run reports in ``stream-json``: its ``result`` event
carries the final message, turns, usage, cost and session id, or the error.

Claude Code refuses every edit under a ``.git`` folder, mesh's default place for
worktrees: a run on a repository with a Claude Code coder puts its workspaces in the
user's cache instead (``edits_under_git``), and a `WorkspaceManager` given by hand needs
a ``root`` elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Final

from ..contracts._errors import InputError
from ..engine._call_facts import note_call
from ..host._process import CommandResult
from ._cli import AgentCLI, AgentFailed, AgentReport

__all__ = ["CLAUDE_CODE_VERSION", "ClaudeCodeCLI", "read_stream_json"]

CLAUDE_CODE_VERSION: Final = "2.1.337"
"""The Claude Code release mesh's flags and parser are tested against."""

_READ_TOOLS: Final = ("Read", "Glob", "Grep")
_EDIT_TOOLS: Final = ("Edit", "Write")
# Claude Code's state when it runs inside another Claude Code session: a run mesh
# starts is a session of its own, not a child of whatever started mesh.
_SESSION_VARIABLES: Final = (
    "CLAUDECODE",
    "CLAUDE_CODE_CHILD_SESSION",
    "CLAUDE_CODE_SESSION_ID",
    "CLAUDE_CODE_SESSION_ATTENDED",
    "CLAUDE_CODE_LAUNCHED_BY_SESSION_IDS",
)
# Offline and quiet: no update check, telemetry, error reports or other side traffic;
# only the model API is called.
_QUIET: Final = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
# The refused calls kept as evidence, at most: a ledger line stays a line.
_DENIED_LIMIT: Final = 20
_TOOL_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class ClaudeCodeCLI(AgentCLI):
    """
    Claude Code, run non-interactively as ``claude -p`` with its prompt on standard input.

    As a coder it may read and edit files in the worktree only (``Read``,
    ``Glob``, ``Grep``, ``Edit``, ``Write``, edits accepted); as a fixer it
    may only read them. Nothing from the repository it works on is loaded
    (settings, hooks, MCP servers, skills, ``CLAUDE.md``): see the Claude Code
    agent page for each flag.

    Args:
        executable: The ``claude`` program (default: found on PATH).
        model: The model (an alias such as ``sonnet`` or a full name); default: Claude Code's.
        base_url: The Messages API address (``ANTHROPIC_BASE_URL``), for a gateway or a
            local server.
        api_key: The API key (``ANTHROPIC_API_KEY``); default: the environment's, or the
            login kept in the configuration folder.
        config_dir: Claude Code's configuration folder (``CLAUDE_CONFIG_DIR``: login,
            user settings); default: its own (``~/.claude``).
        max_turns: Stop after this many model turns (an error: the candidate is rejected).
        max_budget_usd: Stop once the run has cost this much (an error, likewise).
        tools: More tools a coder may use, as Claude Code permission rules: ``"Bash"``,
            ``"Bash(pytest *)"``. A fixer never gets them.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "claude"
    program: ClassVar[str] = "claude"
    install: ClassVar[str] = f"npm install -g @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
    edits_under_git: ClassVar[bool] = False

    def __init__(
        self,
        *,
        executable: str | os.PathLike[str] | None = None,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        config_dir: str | os.PathLike[str] | None = None,
        max_turns: int | None = None,
        max_budget_usd: float | None = None,
        tools: Sequence[str] = (),
    ) -> None:
        super().__init__(executable=executable)
        if isinstance(tools, str):
            raise InputError("tools is a sequence of tool names, not one string")
        names = [_TOOL_NAME.match(rule) for rule in tools]
        if None in names:
            raise InputError(f"not Claude Code tool rules: {list(tools)!r}")
        if max_turns is not None and max_turns < 1:
            raise InputError(f"max_turns must be at least 1, got {max_turns}")
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.config_dir = None if config_dir is None else Path(config_dir)
        self.max_turns = max_turns
        self.max_budget_usd = max_budget_usd
        self.tools = tuple(tools)
        # --tools takes tool names; --allowedTools the rules (``Bash(pytest *)``).
        self._tool_names = tuple(match.group() for match in names if match is not None)

    def command(self, program: str, *, worktree: Path, read_only: bool) -> list[str]:
        """
        The ``claude -p`` argv; the prompt arrives on standard input.

        Raises:
            AgentFailed: A coder's worktree is inside a ``.git`` folder (mesh's default
                place for worktrees), where Claude Code refuses every edit.
        """
        if not read_only and ".git" in Path(worktree).absolute().parts:
            # Claude Code treats every path under a .git folder as sensitive and denies
            # the edit whatever the permission rules say: the run would end with no diff.
            raise AgentFailed(
                f"claude does not edit files under a .git folder, and the worktree {worktree} "
                "is in one: run with mesh.run(..., repo=...), which puts workspaces elsewhere "
                "for it, or give the coder a WorkspaceManager(repo, root=...) outside .git"
            )
        if read_only:
            names: tuple[str, ...] = _READ_TOOLS
            allowed: tuple[str, ...] = _READ_TOOLS
            mode = "dontAsk"
        else:
            names = (*_READ_TOOLS, *_EDIT_TOOLS, *self._tool_names)
            allowed = (*_READ_TOOLS, *_EDIT_TOOLS, *self.tools)
            mode = "acceptEdits"
        argv = [
            program,
            "--print",
            "--output-format", "stream-json",
            "--verbose",  # stream-json in print mode requires it
            "--restricted",
            "--setting-sources", "user",
            "--strict-mcp-config",
            "--disable-slash-commands",
            "--no-session-persistence",
            "--permission-prompts", "none",
            "--permission-mode", mode,
            "--tools", ",".join(dict.fromkeys(names)),
            "--allowedTools", ",".join(dict.fromkeys(allowed)),
        ]  # fmt: skip
        if self.model is not None:
            argv += ["--model", self.model]
        if self.max_turns is not None:
            argv += ["--max-turns", str(self.max_turns)]
        if self.max_budget_usd is not None:
            argv += ["--max-budget-usd", str(self.max_budget_usd)]
        return argv

    def environment(self, base: Mapping[str, str], *, read_only: bool) -> dict[str, str]:  # noqa: ARG002 - the same for both roles
        """Mesh's environment, quiet and offline, pointed at the given API, key and state."""
        env = {name: value for name, value in base.items() if name not in _SESSION_VARIABLES}
        env.update(_QUIET)
        if self.base_url is not None:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        if self.api_key is not None:
            env["ANTHROPIC_API_KEY"] = self.api_key
        if self.config_dir is not None:
            env["CLAUDE_CONFIG_DIR"] = os.fspath(self.config_dir)
        return env

    def writable(self) -> Sequence[str | os.PathLike[str]]:
        """
        Claude Code's configuration folder (and, by default, ``~/.claude.json``), as present.

        A ``config_dir`` given is created first: in a sandbox, Claude Code could
        not create it itself.
        """
        if self.config_dir is not None:
            self.config_dir.mkdir(parents=True, exist_ok=True)
            return [self.config_dir]
        if os.environ.get("CLAUDE_CONFIG_DIR"):
            paths = [Path(os.environ["CLAUDE_CONFIG_DIR"])]
        else:
            home = Path.home()
            paths = [home / ".claude", home / ".claude.json"]
        return [path for path in paths if path.exists()]

    def read_output(self, result: CommandResult) -> AgentReport:
        """
        The run's report, from its ``stream-json`` output (see `read_stream_json`).

        The tool calls Claude Code refused (a write outside the worktree, a
        command it was not allowed) go to the call's ledger facts as ``denied``,
        each as ``Tool target``, separated by ``; ``.
        """
        report, denied = _read(result.output)
        if denied:
            note_call(denied="; ".join(denied[:_DENIED_LIMIT]))
        return report


def _count(value: object) -> int | None:
    """A non-negative integer from the output, or None (a bool is not a count)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _money(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number >= 0:
            return number
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _events(output: str) -> list[dict[str, object]]:
    """The JSON objects of ``output``, one a line; anything else (junk, a cut line) is skipped."""
    events = []
    for line in output.splitlines():
        line = line.strip()  # noqa: PLW2901 - the line, trimmed
        if not line.startswith("{"):
            continue
        try:
            # JSON text that starts with "{" and parses is an object.
            events.append(json.loads(line))
        except (ValueError, RecursionError):
            continue
    return events


def _assistant_text(event: Mapping[str, object]) -> str | None:
    """The text an ``assistant`` event says, or None."""
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return None
    parts = [
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return "\n".join(parts) if parts else None


def _usage(result: Mapping[str, object]) -> tuple[int | None, int | None]:
    """Input tokens (cache writes and reads included) and output tokens of a result event."""
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return None, None
    fresh = _count(usage.get("input_tokens"))
    cached = [
        _count(usage.get("cache_creation_input_tokens")),
        _count(usage.get("cache_read_input_tokens")),
    ]
    read = None if fresh is None else fresh + sum(n for n in cached if n is not None)
    return read, _count(usage.get("output_tokens"))


def _error(result: Mapping[str, object]) -> str | None:
    """The failure a result event reports, or None for a clean finish."""
    subtype = _text(result.get("subtype")) or "unknown"
    if result.get("is_error") is not True and subtype == "success":
        return None
    errors = result.get("errors")
    said = (
        [e for e in errors if isinstance(e, str) and e.strip()] if isinstance(errors, list) else []
    )
    detail = "; ".join(said) or _text(result.get("result")) or "no detail given"
    return detail if subtype == "success" else f"{subtype}: {detail}"


def _denied(result: Mapping[str, object]) -> list[str]:
    """The refused tool calls of a result event, each as ``Tool target``."""
    denials = result.get("permission_denials")
    if not isinstance(denials, list):
        return []
    said = []
    for denial in denials:
        if not isinstance(denial, dict):
            continue
        tool = _text(denial.get("tool_name")) or "?"
        given = denial.get("tool_input")
        given = given if isinstance(given, dict) else {}
        target = _text(given.get("file_path")) or _text(given.get("command")) or ""
        said.append(f"{tool} {target}".strip())
    return said


def read_stream_json(output: str) -> AgentReport:
    """
    What a ``claude -p --output-format stream-json`` run reported.

    The last ``result`` event gives the final message, turns (``num_turns``),
    tokens (``usage``; input counts cache writes and reads too), cost
    (``total_cost_usd``) and the session id; ``is_error`` or an ``error_*``
    subtype (``error_max_turns``, ``error_during_execution``, ...) becomes the
    report's error. Lines that are not JSON objects are skipped, fields of the
    wrong type are left out, and output without a ``result`` event (cut short,
    or not Claude Code's) is an error: a run is never taken as finished on its
    own word unless it says so in the form it documents.

    .. versionadded:: 0.1.0
    """
    return _read(output)[0]


def _read(output: str) -> tuple[AgentReport, list[str]]:
    """The report, and the tool calls Claude Code refused."""
    events = _events(output)
    session = None
    said = None
    result: dict[str, object] | None = None
    for event in events:
        session = _text(event.get("session_id")) or session
        kind = event.get("type")
        if kind == "assistant":
            said = _assistant_text(event) or said
        elif kind == "result":
            result = event
    if result is None:
        cut = AgentReport(
            final_message=said, session=session, error="its output ended without a result event"
        )
        return cut, []
    input_tokens, output_tokens = _usage(result)
    report = AgentReport(
        final_message=_text(result.get("result")) or said,
        turns=_count(result.get("num_turns")),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=_money(result.get("total_cost_usd")),
        session=session,
        error=_error(result),
    )
    return report, _denied(result)
