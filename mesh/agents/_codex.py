"""
OpenAI Codex CLI (``codex exec``) as a coder or fixer.

Tested with ``@openai/codex`` 0.171.0. mesh runs, in the candidate's worktree::

    codex exec --json --skip-git-repo-check --cd WORKTREE --sandbox workspace-write
        -c approval_policy="never"
        -c sandbox_workspace_write.exclude_slash_tmp=true
        -c sandbox_workspace_write.exclude_tmpdir_env_var=true
        [--model M] [--profile P] [-c KEY=VALUE ...] -

with the prompt on standard input (``-``), and ``--sandbox read-only`` for a fixer.
Codex's own sandbox (bubblewrap and seccomp on Linux) then lets the commands the
model runs write the worktree only. ``--json`` prints one event per line
(``thread.started``, ``turn.started``, ``item.completed``, ``turn.completed`` with
the thread's token usage, ``turn.failed``, ``error``), which `CodexCLI.read_output`
reads defensively. Session files stay on (no ``--ephemeral``): their
``token_count`` events carry the account's rate-limit windows, which
`codex_budget` reads.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from ..contracts._errors import OptionError
from ..host._process import CommandResult
from ._cli import AgentCLI, AgentReport
from ._codex_budget import codex_budget, codex_home

__all__ = ["CODEX_VERSION", "CodexCLI", "codex_budget"]

CODEX_VERSION: Final = "0.171.0"
"""The ``@openai/codex`` version mesh's tests run."""

# The provider id `base_url` defines (a `-c model_providers.<id>` table).
_PROVIDER: Final = "mesh"
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
# Items that are something the agent did (a step), as opposed to reasoning or notices.
_STEPS: Final = frozenset(
    {"agent_message", "command_execution", "file_change", "mcp_tool_call", "web_search"}
)

ConfigValue = str | int | float | bool | Sequence["ConfigValue"] | Mapping[str, "ConfigValue"]


class CodexCLI(AgentCLI):
    """
    OpenAI Codex CLI, run as ``codex exec`` with JSON events, no approvals, its own sandbox.

    Args:
        executable: The ``codex`` program (default: looked for on PATH).
        model: The model (``--model``); default: Codex's configured one.
        home: Codex's folder (``CODEX_HOME``: its config, login and session
            files); default: the user's (``$CODEX_HOME`` or ``~/.codex``).
        profile: A profile to layer on the config (``--profile``).
        config: Config overrides, each passed as ``-c KEY=VALUE`` with the value
            written as TOML (``{"model_reasoning_effort": "low"}``).
        base_url: A Responses API server to use instead of the configured
            provider: mesh defines a provider ``mesh`` with this base URL
            (``.../v1``) and selects it.
        api_key_env: With ``base_url``, the environment variable holding the
            server's API key (none is sent without it).
        writable_tmp: Let the agent's commands write ``/tmp`` and ``$TMPDIR``
            too, as Codex's workspace-write mode does by default; without it
            they write the worktree only.
        own_sandbox: Codex's own sandbox for the commands the model runs
            (``--sandbox workspace-write``, or ``read-only`` for a fixer). False
            passes ``--sandbox danger-full-access``, for where Codex's sandbox
            cannot run: then run it in mesh's (``AgentCoder(..., sandbox=...)``).

    .. versionadded:: 0.1.0
    """

    name = "codex"
    program = "codex"
    install = f"npm install -g @openai/codex@{CODEX_VERSION}"

    def __init__(
        self,
        *,
        executable: str | os.PathLike[str] | None = None,
        model: str | None = None,
        home: str | os.PathLike[str] | None = None,
        profile: str | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        writable_tmp: bool = False,
        own_sandbox: bool = True,
    ) -> None:
        super().__init__(executable=executable)
        self.model = model
        self.home = None if home is None else Path(home)
        self.profile = profile
        self.config = dict(config or {})
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.writable_tmp = writable_tmp
        self.own_sandbox = own_sandbox
        # Rendered now, so that a value TOML cannot hold fails here, not mid-run.
        self._overrides = self._config_overrides()

    def _config_overrides(self) -> list[str]:
        overrides: dict[str, ConfigValue] = {"approval_policy": "never"}
        if not self.writable_tmp:
            overrides["sandbox_workspace_write.exclude_slash_tmp"] = True
            overrides["sandbox_workspace_write.exclude_tmpdir_env_var"] = True
        if self.base_url is not None:
            provider: dict[str, ConfigValue] = {
                "name": _PROVIDER,
                "base_url": self.base_url,
                "wire_api": "responses",
            }
            if self.api_key_env is not None:
                provider["env_key"] = self.api_key_env
            overrides[f"model_providers.{_PROVIDER}"] = provider
            overrides["model_provider"] = _PROVIDER
        overrides.update(self.config)
        return [f"{key}={_toml(value, key)}" for key, value in overrides.items()]

    def command(self, program: str, *, worktree: Path, read_only: bool) -> list[str]:
        """``codex exec`` in ``worktree``: read-only, or writing the worktree only."""
        argv = [
            program,
            "exec",
            "--json",
            # mesh's worktree is a git checkout, but Codex need not insist on one.
            "--skip-git-repo-check",
            "--cd",
            str(worktree),
            "--sandbox",
            _sandbox_mode(own=self.own_sandbox, read_only=read_only),
        ]
        if self.model is not None:
            argv += ["--model", self.model]
        if self.profile is not None:
            argv += ["--profile", self.profile]
        for override in self._overrides:
            argv += ["-c", override]
        argv.append("-")
        return argv

    def environment(self, base: Mapping[str, str], *, read_only: bool) -> dict[str, str]:  # noqa: ARG002 - the same either way
        """The environment with ``CODEX_HOME`` set (and ``TMPDIR`` moved off it, if needed)."""
        env = dict(base)
        if self.home is not None:
            env["CODEX_HOME"] = str(self.home)
        home = codex_home(env).absolute()
        temp = Path(env.get("TMPDIR") or "/tmp").absolute()  # noqa: S108 - what Codex reads
        if home.is_relative_to(temp):
            # Codex refuses to create its helper programs (the sandbox launcher among
            # them) under the temporary folder, and then every command the model runs
            # fails; a private TMPDIR inside its home makes the home not "temporary".
            private = home / "mesh-tmp"
            private.mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(private)
        return env

    def writable(self) -> Sequence[str | os.PathLike[str]]:
        """Codex's home: it writes its session files and state there."""
        return [self.home if self.home is not None else codex_home(os.environ)]

    def read_output(self, result: CommandResult) -> AgentReport:
        """Codex's JSON events (see `read_events`)."""
        return read_events(result.output, finished=result.exit_code == 0 and not result.timed_out)


def read_events(output: str, *, finished: bool = True) -> AgentReport:
    """
    What ``codex exec --json`` reported, from its standard output.

    Lines that are not JSON objects of a known shape are skipped. The thread id
    is the session; the last agent message is the final message; the last
    ``turn.completed`` gives the thread's tokens; turns count the agent's steps
    (messages, commands, patches, tool calls). The error is a ``turn.failed``
    message, else (no turn completed) the last ``error`` event; when Codex exited
    cleanly (``finished``), a stream with no completed turn is an error too.

    .. versionadded:: 0.1.0
    """
    events = _Events()
    for line in output.splitlines():
        event = _json_object(line)
        if event is not None and isinstance(event.get("type"), str):
            events.read(event)
    return events.report(finished=finished)


@attrs.define
class _Events:
    """What the events read so far said."""

    count: int = 0
    session: str | None = None
    final: str | None = None
    steps: int = 0
    tokens: tuple[int | None, int | None] = (None, None)
    completed: bool = False
    failed: bool = False
    error: str | None = None

    def read(self, event: dict[str, object]) -> None:
        self.count += 1
        kind = event["type"]
        if kind == "thread.started":
            self.session = _text(event.get("thread_id")) or self.session
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") in _STEPS:
                self.steps += 1
                if item["type"] == "agent_message":
                    self.final = _text(item.get("text")) or self.final
        elif kind == "turn.completed":
            self.completed = True
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.tokens = (
                    _count(usage.get("input_tokens")),
                    _count(usage.get("output_tokens")),
                )
        elif kind == "turn.failed":
            self.failed = True
            detail = event.get("error")
            message = _text(detail.get("message")) if isinstance(detail, dict) else None
            self.error = message or "the turn failed"
        elif kind == "error" and not self.failed:
            # Codex also reports errors it then recovers from (a retried stream).
            self.error = _text(event.get("message")) or "error"

    def report(self, *, finished: bool) -> AgentReport:
        error = self.error
        if self.completed and not self.failed:
            error = None
        elif error is None and finished:
            error = (
                "printed no JSON events (is this codex exec --json?)"
                if self.count == 0
                else "its event stream ended before the turn finished"
            )
        return AgentReport(
            final_message=self.final,
            turns=self.steps if self.count else None,
            input_tokens=self.tokens[0],
            output_tokens=self.tokens[1],
            session=self.session,
            error=error,
        )


def _sandbox_mode(*, own: bool, read_only: bool) -> str:
    if not own:
        # Codex's name for "no sandbox of mine": meant for a sandbox around it.
        return "danger-full-access"
    return "read-only" if read_only else "workspace-write"


def _json_object(line: str) -> dict[str, object] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _toml(value: ConfigValue, key: str) -> str:
    """``value`` as a TOML value, as ``codex -c KEY=VALUE`` parses it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OptionError("InvalidOptionValue", f"codex config {key}: {value!r} is not finite")
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once non-ASCII stays as it is (TOML has
        # no surrogate escapes) and DEL, which TOML wants escaped, is.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Mapping):
        pairs = [f"{_toml_key(name)} = {_toml(item, key)}" for name, item in value.items()]
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(item, key) for item in value) + "]"
    raise OptionError(
        "InvalidOptionValue",
        f"codex config {key}: {type(value).__name__} is not a TOML value",
    )


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml(name, name)
