"""The agents mesh knows by name: ``mesh run --agent NAME`` and `agent_cli`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..contracts._errors import OptionError
from ._aider import AiderCLI
from ._claude import ClaudeCodeCLI
from ._codex import CodexCLI
from ._codex_budget import codex_budget

if TYPE_CHECKING:
    from ..engine._scheduler import BudgetProvider
    from ._cli import AgentCLI

__all__ = ["AGENTS", "agent_budget", "agent_cli"]

AGENTS: Final = ("codex", "claude", "aider")


def _unknown(name: str) -> OptionError:
    known = ", ".join(AGENTS)
    return OptionError("InvalidOptionValue", f"unknown agent {name!r}: expected one of {known}")


def agent_cli(name: str, *, model: str | None = None) -> AgentCLI:
    """
    The agent called ``name`` (``codex``, ``claude`` or ``aider``), with its default settings.

    Its program is looked for on PATH when it runs (`AgentCLI.find`).

    Raises:
        mesh.OptionError: No agent has that name.

    .. versionadded:: 0.1.0
    """
    if name == "codex":
        return CodexCLI(model=model)
    if name == "claude":
        return ClaudeCodeCLI(model=model)
    if name == "aider":
        return AiderCLI(model=model)
    raise _unknown(name)


def agent_budget(name: str, *, max_threads: int) -> BudgetProvider:
    """
    A budget provider reading ``name``'s own 5-hour and weekly limits, re-read during a run.

    Only Codex records them where mesh can read them (see the Agents pages).

    Raises:
        mesh.OptionError: The agent keeps no such account, or no agent has that name.

    .. versionadded:: 0.1.0
    """
    if name == "codex":
        return codex_budget(max_threads=max_threads)
    if name in AGENTS:
        raise OptionError(
            "InvalidOptionValue",
            f"{name} does not report its 5-hour and weekly limits in a form mesh can read: "
            "give --remaining-five-hour and --remaining-weekly instead",
        )
    raise _unknown(name)
