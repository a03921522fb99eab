"""
What a patch touches, and whether it stays inside a write scope. Pure: no I/O.

Git's own checks (``git apply`` refuses paths beyond symlinks and outside the
worktree) run later; this is the gate before the worktree changes, so that an
out-of-scope patch is rejected with evidence and never half-applied.
"""

from __future__ import annotations

import posixpath
import re
from typing import Final

import attrs

from ._scopes import in_scope, normalize_path

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
    path = _unquote(path.split("\t", maxsplit=1)[0].rstrip())
    if path == "/dev/null":
        return None
    for prefix in ("a/", "b/"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


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
    for line in patch.splitlines():
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


def _path_problem(path: str) -> str | None:
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "is an absolute path"
    parts = path.replace("\\", "/").split("/")
    if ".." in parts:
        return "climbs out with '..'"
    if ".git" in parts:
        return "writes into git's own files"
    if not normalize_path(path):
        return "is empty"
    return None


def scope_problems(patch: str, write_scope: tuple[str, ...]) -> list[str]:
    """
    Why a patch may not be applied for a unit with ``write_scope``; empty when it may.

    Every path the patch writes (and the source of a rename, which it deletes)
    must be a plain relative path inside the scope; a symlink must point at a
    path inside the scope.

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
            if problem := _path_problem(path):
                problems.append(f"{path} {problem}")
            elif not in_scope(path, write_scope):
                verb = "renames" if change.kind == "rename" else "touches"
                problems.append(f"{verb} {path}, outside write_scope {list(write_scope)}")
        problems.extend(_symlink_problems(change, write_scope))
    return problems


def _symlink_problems(change: FileChange, write_scope: tuple[str, ...]) -> list[str]:
    if change.symlink_target is None or change.new_path is None:
        return []
    target = change.symlink_target
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(change.new_path), target))
    if target.startswith("/") or resolved.split("/")[0] == "..":
        return [f"{change.new_path} is a symlink out of the repository ({target})"]
    if not in_scope(resolved, write_scope):
        return [f"{change.new_path} is a symlink out of write_scope ({target})"]
    return []
