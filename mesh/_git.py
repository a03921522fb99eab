"""Running git: one helper that turns failures into mesh errors with git's own words."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ._enums import FailureCode
from ._errors import MeshError
from ._process import key_line, run_command

__all__ = ["GitError", "git", "git_result"]

GIT_TIMEOUT: Final = 300.0
# Deterministic, non-interactive git: no pager, no editor, no prompts, no user config surprises.
_GIT_ENV: Final = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
    "LC_ALL": "C",
}


class GitError(MeshError):
    """
    A git command failed; the message quotes git's key line.

    .. versionadded:: 0.1.0
    """

    code = FailureCode.TOOLING_UNAVAILABLE

    def __init__(self, command: str, output: str, exit_code: int | None) -> None:
        reason = key_line(output) or f"exit code {exit_code}"
        super().__init__(f"{command}: {reason}")
        self.output = output
        self.exit_code = exit_code


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **_GIT_ENV, **(extra or {})}


async def git_result(
    *args: str,
    cwd: str | os.PathLike[str],
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int | None, str]:
    """Run git; return its exit code and output without judging them."""
    result = await run_command(
        ["git", *args],
        cwd=cwd,
        timeout=GIT_TIMEOUT,
        env=_environment(env),
        stdin=stdin,
        merge_stderr=False,
    )
    return (
        result.exit_code,
        result.output if result.exit_code == 0 else result.errors + result.output,
    )


async def git(
    *args: str,
    cwd: str | os.PathLike[str],
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run git and return its output without the final newline; raise `GitError` on failure."""
    exit_code, output = await git_result(*args, cwd=cwd, stdin=stdin, env=env)
    if exit_code != 0:
        raise GitError(f"git {' '.join(args[:2])} in {Path(cwd).name}", output, exit_code)
    return output.removesuffix("\n")
