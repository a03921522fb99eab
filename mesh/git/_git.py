"""
Running git the way mesh trusts it: its own settings, no hooks, no user or system config.

mesh runs git on repositories whose contents it does not trust: a candidate's
workspace was written by an agent, and even the user's repository may have
been reached by one. Nothing git would *execute* on mesh's behalf may come
from there. Every git command mesh runs therefore gets:

- an environment without the caller's ``GIT_*`` variables (a host's
  ``GIT_DIR`` or ``GIT_INDEX_FILE`` would redirect mesh's commands), with
  system and global config off and replace objects ignored;
- command-line settings (which win over every config file) that switch off
  hooks, the fsmonitor, pagers, editors, signing, automatic gc and the
  user's attributes file, and that fix how diffs are written (``a/``/``b/``
  prefixes, never relative to a subfolder); diffs are always asked for with
  ``--no-ext-diff``.

What remains is the repository's own config file. mesh's private
repositories (workspace shadows) have one mesh wrote; for the user's
repository it is the user's, and the integrator checks it did not change
during a run before each delivery.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio
import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import MeshError
from ..host._owner import owner_environment
from ..host._process import key_line

__all__ = ["Git", "GitError", "GitResult", "git", "safe_git_environment"]

GIT_TIMEOUT: Final = 300.0
_KEPT_GIT_VARIABLES: Final = frozenset({"GIT_EXEC_PATH"})
_ENVIRONMENT: Final = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
    # Reading commands (status, diff) must not rewrite an index they only look at.
    "GIT_OPTIONAL_LOCKS": "0",
    "LC_ALL": "C",
}
_SETTINGS: Final = (
    f"core.hooksPath={os.devnull}",
    "core.fsmonitor=false",
    f"core.attributesFile={os.devnull}",
    "core.pager=cat",
    "core.editor=true",
    "core.protectNTFS=true",
    "core.protectHFS=true",
    "color.ui=false",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "diff.relative=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "log.showSignature=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "apply.whitespace=nowarn",
    "am.threeWay=false",
    "am.keepCR=false",
    "am.messageId=false",
    "mailinfo.scissors=false",
    "i18n.commitEncoding=UTF-8",
    "i18n.logOutputEncoding=UTF-8",
    "advice.detachedHead=false",
    # A checkout updated by mesh never reaches into a submodule (nor runs anything there).
    "submodule.recurse=false",
)


class GitError(MeshError):
    """
    A git command failed; the message quotes git's key line.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE

    def __init__(self, command: str, output: str, exit_code: int | None) -> None:
        reason = key_line(output) or f"exit code {exit_code}"
        super().__init__(f"{command}: {reason}")
        self.output = output
        self.exit_code = exit_code


@attrs.frozen(kw_only=True)
class GitResult:
    """What one git command did: exit code and its two output streams, as bytes."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        """Standard output as text (undecodable bytes replaced)."""
        return self.stdout.decode(errors="replace")

    @property
    def errors(self) -> str:
        """Standard error, then standard output, as text: what explains a failure."""
        return (self.stderr + self.stdout).decode(errors="replace")


def safe_git_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment with the caller's git variables replaced by mesh's."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GIT_") or name in _KEPT_GIT_VARIABLES
    }
    return {**kept, **_ENVIRONMENT, **owner_environment(), **(extra or {})}


@attrs.frozen(kw_only=True)
class Git:
    """
    git on one repository, as mesh runs it (see the module docstring).

    ``git_dir``/``work_tree``/``index_file`` point git at a private git
    directory, a folder of files and an index of mesh's choosing.
    """

    cwd: Path
    git_dir: Path | None = None
    work_tree: Path | None = None
    index_file: Path | None = None
    environment: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    """Extra variables (an identity for commits)."""

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = ["git"]
        for setting in _SETTINGS:
            argv += ["-c", setting]
        if self.git_dir is not None:
            argv.append(f"--git-dir={self.git_dir}")
        if self.work_tree is not None:
            argv.append(f"--work-tree={self.work_tree}")
        return [*argv, *args]

    def _environment(self) -> dict[str, str]:
        extra = dict(self.environment)
        if self.index_file is not None:
            extra["GIT_INDEX_FILE"] = str(self.index_file)
        return safe_git_environment(extra)

    async def run(self, *args: str, stdin: bytes | None = None) -> GitResult:
        """Run git and return what it did, without judging it."""
        argv = self._argv(args)
        try:
            with anyio.fail_after(GIT_TIMEOUT):
                process = await anyio.run_process(
                    argv,
                    input=stdin,
                    cwd=self.cwd,
                    env=self._environment(),
                    check=False,
                    stdin=None if stdin is not None else subprocess.DEVNULL,
                )
        except TimeoutError:
            return GitResult(exit_code=-1, stdout=b"", stderr=b"timed out after 300s")
        except OSError as exc:
            return GitResult(exit_code=-1, stdout=b"", stderr=f"cannot run git: {exc}".encode())
        return GitResult(exit_code=process.returncode, stdout=process.stdout, stderr=process.stderr)

    async def raw(self, *args: str, stdin: bytes | None = None) -> bytes:
        """Run git; its standard output as bytes. Raises `GitError` on failure."""
        result = await self.run(*args, stdin=stdin)
        if result.exit_code != 0:
            raise GitError(f"git {' '.join(args[:2])} in {self.cwd.name}", result.errors, None)
        return result.stdout

    async def __call__(self, *args: str, stdin: bytes | None = None) -> str:
        """Run git; its output as text without the final newline. Raises `GitError`."""
        return (await self.raw(*args, stdin=stdin)).decode(errors="replace").removesuffix("\n")


async def git(
    *args: str,
    cwd: str | os.PathLike[str],
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run git and return its output without the final newline; raise `GitError` on failure."""
    return await Git(cwd=Path(cwd), environment=env or {})(*args, stdin=stdin)
