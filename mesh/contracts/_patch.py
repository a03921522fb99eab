r"""
What a patch's text says it touches: a fast first filter, never the authority. Pure: no I/O.

The scope gate that decides (`mesh.gate_problems`) judges what git itself
reports after applying a patch to an index. This reading of the text only
refuses early what git would refuse anyway or what the gate would refuse,
so that an obviously out-of-scope patch costs no git process. It reads as
``git apply`` does: lines end at ``\n`` only, and one leading path component
is stripped from every ``diff --git``, ``---`` and ``+++`` name, whatever it
is (``-p1``), so a patch written without ``a/``/``b/`` prefixes is judged
where git would put it.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from ._gate import describe_path, path_problem, resolve_link
from ._scopes import in_scope

__all__ = ["FileChange", "patch_changes", "scope_problems"]

_SYMLINK_MODE: Final = "120000"
_DIFF_GIT: Final = re.compile(r"^diff --git (?P<rest>.+)$")
_HUNK: Final = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+\d+(?:,(?P<new>\d+))? @@")
_QUOTED: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_QUOTED_LAST: Final = re.compile(r' ("(?:[^"\\]|\\.)*")$')
_OCTAL: Final = re.compile(r"[0-7]{1,3}")
_ESCAPES: Final = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r"}


@attrs.frozen(kw_only=True)
class FileChange:
    """One file a patch touches; ``None`` stands for ``/dev/null`` (created or deleted)."""

    old_path: str | None
    new_path: str | None
    new_mode: str | None = None
    symlink_target: str | None = None
    """For a symlink the patch creates or retargets: where it points."""
    kind: str = "modify"
    """``modify``, ``create``, ``delete``, ``rename`` or ``copy``."""


def _unquote(text: str) -> str:
    r"""Git's C-style quoting of unusual paths: ``"a/t\\303\\244b"``."""
    if not (len(text) >= 2 and text[0] == text[-1] == '"'):  # noqa: PLR2004 - two quotes
        return text
    body = text[1:-1]
    raw = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            raw.extend(char.encode())
            index += 1
            continue
        following = body[index + 1 : index + 2]
        if octal := _OCTAL.match(body, index + 1):
            raw.append(int(octal[0], 8) & 0xFF)
            index = octal.end()
        else:
            raw.extend(_ESCAPES.get(following, following).encode())
            index += 2
    return raw.decode(errors="replace")


def _strip_prefix(path: str) -> str | None:
    """A header's name as ``git apply -p1`` reads it: the first component dropped."""
    path = _unquote(path.split("\t", maxsplit=1)[0].rstrip())
    if path == "/dev/null":
        return None
    return path.split("/", 1)[1] if "/" in path else path


def _header_paths(rest: str) -> tuple[str | None, str | None]:
    """The two paths of a ``diff --git`` line (quoted or not; spaces allowed when unquoted)."""
    if first := _QUOTED.match(rest):
        return _strip_prefix(first[0]), _strip_prefix(rest[first.end() :].strip())
    if last := _QUOTED_LAST.search(rest):
        return _strip_prefix(rest[: last.start()]), _strip_prefix(last[1])
    # Unquoted: "a/X b/X" with the same X on both sides unless renamed (then rename lines say).
    middle = len(rest) // 2
    return _strip_prefix(rest[:middle]), _strip_prefix(rest[middle + 1 :])


class _Section:
    def __init__(self, old: str | None, new: str | None) -> None:
        self.old = old
        self.new = new
        self.mode: str | None = None
        self.kind = "modify"
        self.hunks = False
        self.added: list[str] = []

    def set_old(self, path: str | None) -> None:
        self.old = path
        if path is None:
            self.kind = "create"

    def change(self) -> FileChange:
        target = "".join(self.added) if self.mode == _SYMLINK_MODE else None
        return FileChange(
            old_path=None if self.kind == "create" else self.old,
            new_path=None if self.kind == "delete" else self.new,
            new_mode=self.mode,
            symlink_target=target,
            kind=self.kind,
        )


def patch_changes(patch: str) -> tuple[FileChange, ...]:  # noqa: C901, PLR0912 - one branch per header line kind
    r"""
    Every file a unified diff (git or plain) touches, in order.

    Examples:
        >>> [c.new_path for c in patch_changes("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n")]
        ['x.py']

    .. versionadded:: 0.1.0
    """
    sections: list[_Section] = []
    current: _Section | None = None
    # Lines left in the current hunk (old side, new side), so that content such
    # as "--- x" inside a hunk is never read as a header.
    old_left = new_left = 0
    # git ends lines at "\n" only: a CR, form feed or U+2028 is part of the line.
    for line in patch.split("\n"):
        if (old_left or new_left) and current is not None:
            marker = line[:1]
            if marker == "+":
                current.added.append(line[1:])
                new_left -= 1
            elif marker == "-":
                old_left -= 1
            elif marker != "\\":
                old_left, new_left = old_left - 1, new_left - 1
            continue
        if match := _DIFF_GIT.match(line):
            old, new = _header_paths(match["rest"])
            current = _Section(old, new)
            sections.append(current)
        elif line.startswith("--- ") and (current is None or current.hunks):
            current = _Section(None, None)
            sections.append(current)
            current.set_old(_strip_prefix(line[4:]))
        elif line.startswith("--- ") and current is not None:
            current.set_old(_strip_prefix(line[4:]))
        elif line.startswith("+++ ") and current is not None:
            current.new = _strip_prefix(line[4:])
            if current.new is None:
                current.kind = "delete"
        elif current is None:
            continue
        elif line.startswith(("new file mode ", "new mode ")):
            current.mode = line.rsplit(" ", 1)[1]
            current.kind = "create" if line.startswith("new file") else current.kind
        elif line.startswith("deleted file mode "):
            current.kind = "delete"
        elif line.startswith(("rename from ", "copy from ")):
            current.old = _unquote(line.split(" from ", 1)[1])
            current.kind = "rename" if line.startswith("rename") else "copy"
        elif line.startswith(("rename to ", "copy to ")):
            current.new = _unquote(line.split(" to ", 1)[1])
        elif line.startswith("index ") and line.count(" ") == 2:  # noqa: PLR2004 - "index a..b mode"
            current.mode = current.mode or line.rsplit(" ", 1)[1]
        elif hunk := _HUNK.match(line):
            old_left = int(hunk["old"] or 1)
            new_left = int(hunk["new"] or 1)
            current.hunks = True
    return tuple(section.change() for section in sections)


def scope_problems(patch: str, write_scope: tuple[str, ...]) -> list[str]:
    """
    Why a patch may not be applied for a unit with ``write_scope``; empty when it may.

    Every path the patch's text names as written (and the source of a rename,
    which it deletes) must be a plain relative path inside the scope, and a
    symlink must not point out of the worktree. This is a first filter on
    the text: `mesh.gate_problems` on what git reports decides.

    .. versionadded:: 0.1.0
    """
    changes = patch_changes(patch)
    if not changes:
        return ["the patch touches no file"]
    problems: list[str] = []
    for change in changes:
        written = {
            "rename": [change.old_path, change.new_path],
            "delete": [change.old_path],
        }.get(change.kind, [change.new_path])
        for path in filter(None, written):
            shown = describe_path(path)
            if problem := path_problem(path):
                problems.append(f"{shown} {problem}")
            elif not in_scope(path, write_scope):
                verb = "renames" if change.kind == "rename" else "touches"
                problems.append(f"{verb} {shown}, outside write_scope {list(write_scope)}")
        problems.extend(_symlink_problems(change))
    return problems


def _symlink_problems(change: FileChange) -> list[str]:
    if change.symlink_target is None or change.new_path is None:
        return []
    if resolve_link(change.new_path, change.symlink_target, {}) is None:
        target = describe_path(change.symlink_target)
        return [f"{describe_path(change.new_path)} is a symlink out of the worktree ({target})"]
    return []
