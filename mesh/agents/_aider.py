"""
Aider (``aider --message-file``) as a coder and a fixer.

Flags and output are those of ``aider-chat`` 0.86.2 (the version the tests pin).
The worktree is untrusted, and Aider reads its settings from it: ``.aider.conf.yml``
(any option: ``lint-cmd``, ``test-cmd``, ``auto-test``, ``load``, ``set-env``,
``upgrade``, history files anywhere), ``.env`` (any environment variable, such as
``GIT_EXTERNAL_DIFF``, or ``AIDER_*`` options), ``.aider.model.settings.yml`` and
``.aider.model.metadata.json``, from the current folder and the git root. No flag
turns that search off (``--config`` adds a file to it; command-line values win over
the files' values, but cannot unset a switch such as ``lint: true`` or an
environment variable). So mesh starts Aider's own ``main()`` with its file search
emptied (`AIDER_BOOTSTRAP`): no configuration, ``.env`` or model settings file is read,
only mesh's flags. Aider has no sandbox of its own and writes wherever an edit block
says, so the bootstrap also refuses every path out of the worktree (``..``, absolute,
through a symlink). Aider runs without git (mesh diffs and commits, Aider never
touches the repository), with the files it may edit named on the command line (the
unit's write scope), paths relative to the worktree.

Aider exits 0 even when the model's reply was unusable, so the run's account is
read from Aider's analytics log, written as JSON lines to standard error (kept
local: analytics are off): one ``message_send`` event per model reply, with exact
tokens and cost, and ``message_send_exception`` for a reply Aider could not use. No
reply at all is the run's error. The final message is Aider's printed reply.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Final

from ..contracts._files import walk_tree
from ..contracts._scopes import in_scope, is_whole_tree, normalize_path
from ..host._process import CommandResult, key_line
from ._cli import AgentCLI, AgentReport, AgentUnavailable

__all__ = ["AIDER_BOOTSTRAP", "AIDER_VERSION", "AiderCLI", "read_aider_output"]

AIDER_VERSION: Final = "0.86.2"
"""The Aider release mesh's flags and parser are tested against."""

AIDER_BOOTSTRAP: Final = f"""\
import os, sys
# The current folder is the untrusted worktree: never import from it.
sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
import aider.main, aider.utils, aider.coders.base_coder
coder = aider.coders.base_coder.Coder
for owner, name in (
    (aider.main, "get_parser"),
    (aider.main, "generate_search_path_list"),
    (aider.utils, "find_common_root"),
    (coder, "abs_root_path"),
):
    if not callable(getattr(owner, name, None)):
        sys.exit(f"mesh: {{owner.__name__}}.{{name}} is missing: use aider-chat=={AIDER_VERSION}")
parser = aider.main.get_parser
# No .aider.conf.yml (current folder, git root, home): only the command line and AIDER_*.
aider.main.get_parser = lambda config_files, git_root: parser([], git_root)
# No .env, .aider.model.settings.yml or .aider.model.metadata.json from anywhere.
aider.main.generate_search_path_list = lambda *args, **kwargs: []
# Without git, paths are relative to the worktree, as in the prompt (not to the files' folder).
aider.utils.find_common_root = lambda abs_fnames: os.getcwd()
# Every path the model names goes through abs_root_path: none may lead out of the worktree
# (to read it into a reply, or to write it), by "..", an absolute path or a symlink.
worktree = os.path.realpath(os.getcwd())
resolve = coder.abs_root_path
def inside(self, path):
    full = resolve(self, path)
    real = os.path.realpath(full)
    if real != worktree and not real.startswith(worktree + os.sep):
        raise ValueError(f"{{path}}: outside the worktree, refused by mesh")
    return full
coder.abs_root_path = inside
sys.argv[0] = "aider"
sys.exit(aider.main.main())
"""
"""
The Python program mesh runs with Aider's interpreter (``python -c AIDER_BOOTSTRAP ARGS``).

It starts Aider's ``main()`` on the arguments, after emptying Aider's search
for settings files (see the module's documentation) and confining the paths the
model names to the worktree: an edit block for ``../x``, ``/etc/x`` or a path
through a symlink out of the worktree is refused as a malformed reply, before
Aider reads or writes the file. It refuses to run an Aider that lacks the
functions it replaces, rather than run one that reads the repository's settings.
"""

# Never sent to the model: the repository's own git data, and files Aider would
# send as images (or fail to read as text).
_SKIPPED_DIRS: Final = frozenset({".git"})
_BINARY_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tiff", ".tif", ".webp", ".pdf", ".ico"}
)
_SNIFF_BYTES: Final = 8192
_SCAN_LIMIT: Final = 100_000
# Aider prints through rich, which wraps lines at the terminal's width (80 without a
# terminal): a wide one keeps the model's reply, and a JSON verdict, on its lines.
_COLUMNS: Final = "100000"
_OFFLINE: Final = {
    # LiteLLM otherwise downloads its model price list at import.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # Python 3.11+: no current-folder entry on sys.path (the bootstrap removes it too).
    "PYTHONSAFEPATH": "1",
}
_USAGE: Final = re.compile(r"^Tokens: \S+ sent, .*\breceived\.")
_BANNER: Final = re.compile(r"^(?:Repo-map: .*|Added .* to the chat(?: \(read-only\))?\.)$")
# Aider prints its failures to fetch LiteLLM's price list (offline) wherever they happen.
_PRICE_LIST: Final = "model_prices_and_context_window.json"
_EVENT_LIMIT: Final = 64 * 1024
_ERROR_WORDS: Final = re.compile(r"(?i)\b(?:error|exception)\b|litellm\.")


class AiderCLI(AgentCLI):
    """
    Aider, run non-interactively on one message, with its prompt on standard input.

    As a coder it may edit the unit's files: those under the write scope that
    exist (at most ``max_files``) are added to its chat, and it may create new
    ones; mesh's diff then decides what the candidate is. As a fixer it runs in
    ``ask`` mode with ``--dry-run``: the scope's files are read-only context and
    nothing is written. Nothing from the repository configures it, it reads
    and writes nothing outside the worktree (see `AIDER_BOOTSTRAP`), and it never runs
    git, lint or test commands.

    Args:
        executable: The ``aider`` program (default: found on PATH). Mesh runs its
            Python interpreter (the one its first line names).
        model: The model in LiteLLM's spelling (``openai/gpt-4.1``,
            ``anthropic/claude-sonnet-4-5``); default: Aider's choice from the API keys set.
        base_url: An OpenAI-compatible API address (``--openai-api-base``), for a
            gateway or a local server; use with an ``openai/...`` model.
        api_key: The OpenAI (or compatible) API key, passed in the environment
            (``OPENAI_API_KEY``), never on the command line.
        edit_format: How the model writes edits (``diff``, ``whole``, ``udiff``, ...);
            default: Aider's choice for the model.
        max_files: At most this many files of the write scope start in the chat
            (the first in path order); Aider may still create others.
        extra_args: More Aider flags, appended as given.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "aider"
    program: ClassVar[str] = "aider"
    install: ClassVar[str] = (
        f"pipx install aider-chat=={AIDER_VERSION}, or python -m pip install "
        f"aider-chat=={AIDER_VERSION} in a virtual environment of its own"
    )

    def __init__(
        self,
        *,
        executable: str | os.PathLike[str] | None = None,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        edit_format: str | None = None,
        max_files: int = 40,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(executable=executable)
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.edit_format = edit_format
        self.max_files = max_files
        self.extra_args = tuple(extra_args)

    def find(self) -> str:
        """
        The Python interpreter that runs the ``aider`` program.

        Raises:
            AgentUnavailable: Aider is not installed, or its interpreter cannot be told.
        """
        script = super().find()
        python = aider_python(script)
        if python is None:
            raise AgentUnavailable(
                f"aider: cannot tell which Python runs {script}",
                hint=f"point executable= at the aider of a virtual environment: {self.install}",
            )
        return python

    def command(self, program: str, *, worktree: Path, read_only: bool) -> list[str]:
        """``python -c AIDER_BOOTSTRAP`` and Aider's flags, without files (see `unit_command`)."""
        return self.unit_command(program, worktree=worktree, read_only=read_only, scope=())

    def unit_command(
        self, program: str, *, worktree: Path, read_only: bool, scope: Sequence[str]
    ) -> list[str]:
        """The argv for one unit: the scope's files editable (coder) or read-only (fixer)."""
        argv = [program, "-c", AIDER_BOOTSTRAP]
        if self.model is not None:
            argv += ["--model", self.model]
        if self.base_url is not None:
            argv += ["--openai-api-base", self.base_url]
        if self.edit_format is not None and not read_only:
            argv += ["--edit-format", self.edit_format]
        argv += [
            # Answer every question yes (create a file, edit one not yet in the chat);
            # running a shell command needs an explicit yes, which this does not give.
            "--yes-always",
            # No git: mesh diffs the worktree and commits; Aider neither commits nor stages.
            "--no-git",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            # Mesh runs the proof; Aider runs no lint or test command, and suggests none.
            "--no-auto-lint",
            "--no-auto-test",
            "--no-suggest-shell-commands",
            # Offline and quiet: no update check, release notes, analytics, URL fetches.
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--no-detect-urls",
            "--disable-playwright",
            "--no-show-model-warnings",
            "--no-notifications",
            # Plain text, one reply at a time, with the provider's exact token usage.
            "--no-pretty",
            "--no-fancy-input",
            "--no-stream",
            # No repository map: no scan of the tree, no tags cache written into it.
            "--map-tokens",
            "0",
            # Nothing written into the worktree but the edits.
            "--no-restore-chat-history",
            "--chat-history-file",
            os.devnull,
            "--input-history-file",
            os.devnull,
            # The run's account, as JSON lines on standard error (read by read_output).
            "--analytics-log",
            "/dev/stderr",
            "--message-file",
            "/dev/stdin",
        ]
        files = scope_files(worktree, scope, limit=self.max_files)
        if read_only:
            argv += ["--edit-format", "ask", "--dry-run"]
            for path in files:
                argv += ["--read", path]
        else:
            for path in files:
                argv += ["--file", path]
        return argv + list(self.extra_args)

    def environment(self, base: Mapping[str, str], *, read_only: bool) -> dict[str, str]:  # noqa: ARG002 - the same for both roles
        """Mesh's environment, offline, unwrapped, with the API key if one was given."""
        env = dict(base)
        env.update(_OFFLINE)
        env["COLUMNS"] = _COLUMNS
        if self.api_key is not None:
            env["OPENAI_API_KEY"] = self.api_key
        return env

    def writable(self) -> Sequence[str | os.PathLike[str]]:
        """Aider's state folder (``~/.aider``: caches, analytics id), as present."""
        state = Path.home() / ".aider"
        return [state] if state.exists() else []

    def read_output(self, result: CommandResult) -> AgentReport:
        """The run's report (see `read_aider_output`)."""
        return read_aider_output(result.output, result.errors)


def aider_python(script: str | os.PathLike[str]) -> str | None:
    """
    The Python interpreter a console script such as ``aider`` runs with, or None.

    Read from its first line (``#!/venv/bin/python``, ``#!/usr/bin/env python3``,
    or pip's ``#!/bin/sh`` form for long paths), else the ``python`` beside it
    (a virtual environment's ``bin``).

    .. versionadded:: 0.1.0
    """
    path = Path(script).resolve()
    try:
        with path.open("rb") as handle:
            head = handle.read(1024).decode(errors="replace").splitlines()
    except OSError:
        return None
    found = _from_shebang(head)
    if found is not None:
        return found
    for name in ("python3", "python"):
        beside = path.parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return None


def _from_shebang(head: list[str]) -> str | None:
    if not head or not head[0].startswith("#!"):
        return None
    words = head[0][2:].split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:
        return shutil.which(words[1])
    if Path(words[0]).name.startswith("python"):
        return words[0]
    if len(head) > 1 and head[1].startswith("'''exec'"):
        # pip's launcher for interpreters whose path a #! line cannot hold.
        parts = shlex.split(head[1][len("'''exec'") :])
        if parts and Path(parts[0]).name.startswith("python"):
            return parts[0]
    return None


def scope_files(worktree: Path, scope: Sequence[str], *, limit: int) -> list[str]:
    """
    The worktree's files under ``scope`` (regular files, not links; text, not images).

    At most ``limit``, in path order, as absolute paths. A glob scope is matched
    against the files under its literal leading folders.

    .. versionadded:: 0.1.0
    """
    roots = sorted({_walk_root(root) for root in scope})
    found: set[str] = set()
    scanned = 0
    for root in roots:
        top = worktree / root if root else worktree
        if top.is_symlink():
            continue
        if top.is_file():
            candidates = [root]
        else:
            candidates = []
            for folder, dirs, names in walk_tree(top, skip_unreadable=True):
                dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
                relative = folder.relative_to(worktree).as_posix()
                prefix = "" if relative == "." else relative + "/"
                candidates.extend(prefix + name for name in names)
                scanned += len(names)
                if scanned > _SCAN_LIMIT:
                    break
        found.update(path for path in candidates if in_scope(path, scope))
    chosen = [path for path in sorted(found) if _editable(worktree / path)]
    return [str(worktree / path) for path in chosen[: max(limit, 0)]]


def _walk_root(root: str) -> str:
    """The literal folder (or file) a scope root's files lie under ('' for the whole tree)."""
    if is_whole_tree(root):
        return ""
    literal: list[str] = []
    for part in normalize_path(root).split("/"):
        if any(char in part for char in "*?[{"):
            break
        literal.append(part)
    return "/".join(literal)


def _editable(path: Path) -> bool:
    if path.is_symlink() or not path.is_file() or path.suffix.lower() in _BINARY_SUFFIXES:
        return False
    try:
        with path.open("rb") as handle:
            return b"\0" not in handle.read(_SNIFF_BYTES)
    except OSError:
        return False


def read_aider_output(output: str, errors: str) -> AgentReport:
    """
    What an Aider run reported: its analytics events (``errors``) and printed reply (``output``).

    Each ``message_send`` event is one model reply, with its tokens and the
    session's cost so far; ``message_send_exception`` names a reply Aider could
    not use. A run without any reply is an error, named from the exception or
    the last error line Aider printed. Lines that are not events are ignored,
    whatever they hold.

    .. versionadded:: 0.1.0
    """
    turns = 0
    input_tokens = 0
    output_tokens = 0
    cost: float | None = None
    failure: str | None = None
    for name, properties in _events(errors):
        if name == "message_send":
            turns += 1
            input_tokens += _count(properties.get("prompt_tokens"))
            output_tokens += _count(properties.get("completion_tokens"))
            total = properties.get("total_cost")
            if isinstance(total, int | float) and math.isfinite(total) and total >= 0:
                cost = float(total)
        elif name == "message_send_exception":
            failure = str(properties.get("exception") or "the model's reply could not be used")
    if turns == 0 and failure is None:
        said = _error_line(output) or key_line(errors) or "it printed nothing"
        failure = f"no usable reply from the model: {said}"
    return AgentReport(
        final_message=_final_message(output),
        turns=turns or None,
        input_tokens=input_tokens if turns else None,
        output_tokens=output_tokens if turns else None,
        cost_usd=cost,
        error=None if failure is None else failure[:2000],
    )


def _events(errors: str) -> list[tuple[str, Mapping[str, object]]]:
    events: list[tuple[str, Mapping[str, object]]] = []
    for line in errors.splitlines():
        text = line.strip()
        if not text.startswith("{") or len(text) > _EVENT_LIMIT:
            continue
        try:
            event = json.loads(text)  # a line starting with "{" holds an object, if anything
        except ValueError:
            continue
        name = event.get("event")
        properties = event.get("properties")
        if isinstance(name, str) and isinstance(properties, dict):
            events.append((name, properties))
    return events


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


def _error_line(output: str) -> str | None:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_WORDS.search(line):
            return line[:500]
    return None


def _final_message(output: str) -> str | None:
    """The reply printed just before Aider's last ``Tokens: ... sent, ... received.`` line."""
    lines = output.splitlines()
    usage = [index for index, line in enumerate(lines) if _USAGE.match(line)]
    if not usage:
        return None
    end = usage[-1]
    # It starts after the start-up banner (which ends with the repository map's state
    # and the files added to the chat), or after an earlier reply's usage line.
    start = max(
        (
            index + 1
            for index in range(end)
            if _USAGE.match(lines[index]) or _BANNER.match(lines[index])
        ),
        default=0,
    )
    said = [line for line in lines[start:end] if _PRICE_LIST not in line]
    text = "\n".join(said).strip()
    return text or None
