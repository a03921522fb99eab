"""
Real coding agents as role adapters: agent programs, pydantic-ai agents, prompts, verdicts.

- `AgentCoder`, `AgentFixer`: run an agent program (an `AgentCLI`) on a unit, as a
  coder (its edits in a fresh worktree, diffed by mesh) or a read-only fixer (a
  strict JSON verdict).
- `CodexCLI`, `ClaudeCodeCLI`, `AiderCLI`: the OpenAI Codex CLI, Claude Code and
  Aider, as tested (`CODEX_VERSION`, `CLAUDE_CODE_VERSION`, `AIDER_VERSION`);
  `agent_cli(name)` picks one by name, as ``mesh run --agent NAME`` does.
- `codex_budget`, `codex_limits`: the budget from Codex's own 5-hour and weekly
  rate-limit windows; `agent_budget(name)` by name.
- `PydanticAICoder`, `PydanticAIFixer`, `VerdictOutput`, `worktree_toolset`: a
  pydantic-ai ``Agent`` as a coder with file tools confined to the worktree and
  the write scope, or as a fixer with a typed verdict (``mesh[pydantic-ai]``).
- `coder_prompt`, `fixer_prompt`, `parse_verdict`, `Verdict`, `verdict_answer`:
  what agents are told, and how a verdict is read back.

See the Agents pages of the documentation.

.. versionadded:: 0.1.0
"""

from ._aider import AIDER_VERSION, AiderCLI
from ._claude import CLAUDE_CODE_VERSION, ClaudeCodeCLI
from ._cli import AgentCLI, AgentCoder, AgentFailed, AgentFixer, AgentReport, AgentUnavailable
from ._codex import CODEX_VERSION, CodexCLI
from ._codex_budget import CodexLimits, CodexWindow, codex_budget, codex_limits
from ._prompt import Verdict, coder_prompt, fixer_prompt, parse_verdict, verdict_answer
from ._pydantic_ai import PydanticAICoder, PydanticAIFixer, VerdictOutput, worktree_toolset
from ._registry import AGENTS, agent_budget, agent_cli

__all__ = [
    "AGENTS",
    "AIDER_VERSION",
    "CLAUDE_CODE_VERSION",
    "CODEX_VERSION",
    "AgentCLI",
    "AgentCoder",
    "AgentFailed",
    "AgentFixer",
    "AgentReport",
    "AgentUnavailable",
    "AiderCLI",
    "ClaudeCodeCLI",
    "CodexCLI",
    "CodexLimits",
    "CodexWindow",
    "PydanticAICoder",
    "PydanticAIFixer",
    "Verdict",
    "VerdictOutput",
    "agent_budget",
    "agent_cli",
    "coder_prompt",
    "codex_budget",
    "codex_limits",
    "fixer_prompt",
    "parse_verdict",
    "verdict_answer",
    "worktree_toolset",
]
