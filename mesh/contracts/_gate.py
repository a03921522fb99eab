"""
The scope gate: may a change, as git reads it, reach a unit's target? Pure: no I/O.

The gate never reads a patch's text. It judges what git itself reports a
change does (``git diff --raw -z --no-renames`` between the base tree and the
tree git built by applying the patch, or between a commit and its parent):
every path with its old and new mode. A path must be a plain, relative path
inside the unit's write scope; modes beyond regular and executable files
(symlinks, gitlinks) and git's own control files (``.gitattributes``,
``.gitmodules``) need the unit's explicit permission (``allow_special``); and
a symlink must resolve inside the worktree, following the other symlinks of
the resulting tree, never into ``.git``.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from typing import Final

import attrs

from ._enums import SpecialPath
from ._scopes import in_scope
from ._text import text_problem

__all__ = [
    "FILE_MODES",
    "GITLINK_MODE",
    "SYMLINK_MODE",
    "PathChange",
    "describe_path",
    "gate_problems",
    "parse_raw_diff",
    "path_problem",
    "resolve_link",
]

SYMLINK_MODE: Final = "120000"
GITLINK_MODE: Final = "160000"
ABSENT_MODE: Final = "000000"
FILE_MODES: Final = frozenset({"100644", "100755"})
_CONTROL_FILES: Final = {
    ".gitattributes": SpecialPath.GITATTRIBUTES,
    ".gitmodules": SpecialPath.GITMODULES,
}
_ESCAPED_BYTES: Final = range(0xDC80, 0xDD00)
"""Where a name's bytes that were not UTF-8 land when decoded with ``surrogateescape``."""
_MAX_LINK_HOPS: Final = 40  # as the kernel's own limit on symlinks in one lookup
# Characters HFS+ ignores in names, so ".g\u200cit" is ".git" there (git's own list).
_IGNORABLE: Final = frozenset(
    "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"
)


@attrs.frozen(kw_only=True)
class PathChange:
    """
    One path a change touches, as git reports it.

    Modes are git's octal strings; ``000000`` means the path is absent on
    that side (created or deleted).
    """

    path: str
    old_mode: str
    new_mode: str
    old_object: str
    new_object: str
    status: str
    """``A`` added, ``D`` deleted, ``M`` modified, ``T`` type changed."""


def parse_raw_diff(output: bytes) -> tuple[PathChange, ...]:
    r"""
    Read ``git diff --raw -z --no-renames`` output.

    Names are git's bytes; one that is not UTF-8 keeps its bytes as
    surrogate escapes, which the gate refuses.

    >>> parse_raw_diff(b":000000 100644 " + b"0" * 40 + b" " + b"1" * 40 + b" A\0a.py\0")[0].path
    'a.py'
    """
    fields = output.split(b"\0")
    changes: list[PathChange] = []
    # The output ends in a NUL: the last, empty field has no name to pair with.
    for header, name in zip(fields[0::2], fields[1::2], strict=False):
        old_mode, new_mode, old_object, new_object, status = header[1:].decode().split(" ")
        changes.append(
            PathChange(
                path=name.decode("utf-8", "surrogateescape"),
                old_mode=old_mode,
                new_mode=new_mode,
                old_object=old_object,
                new_object=new_object,
                status=status[:1],
            )
        )
    return tuple(changes)


def describe_path(path: str) -> str:
    """A path as it may be printed: quoted as git quotes it when it holds anything unusual."""
    if path.isprintable() and '"' not in path and "\\" not in path and path.strip() == path:
        return path
    escaped = []
    for char in path:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) in _ESCAPED_BYTES:
            escaped.append(f"\\{ord(char) - 0xDC00:03o}")
        elif char.isprintable():
            escaped.append(char)
        else:
            escaped.append(char.encode("unicode_escape", "backslashreplace").decode())
    return '"' + "".join(escaped) + '"'


def _is_git_dir_name(component: str) -> bool:
    if component.isascii():
        # No ignorable or composed characters in ASCII, and casefold is lower there.
        return component.lower().rstrip(". ") in _GIT_DIR_NAMES
    folded = "".join(c for c in unicodedata.normalize("NFC", component) if c not in _IGNORABLE)
    return folded.casefold().rstrip(". ") in _GIT_DIR_NAMES


_GIT_DIR_NAMES: Final = frozenset({".git", "git~1"})


def _absolute(path: str) -> bool:
    return path.startswith("/") or (len(path) > 1 and path[1] == ":" and path[0].isalpha())


def path_problem(path: str) -> str | None:  # noqa: PLR0911 - one answer per rule, first rule first
    """Why ``path`` can never be written by a candidate (None: it is a plain relative path)."""
    if not path:
        return "is empty"
    # Escaped bytes are lone surrogates, which ASCII text (most paths) cannot hold.
    if not path.isascii() and any(ord(c) in _ESCAPED_BYTES for c in path):
        return "is not UTF-8"
    if text_problem(path) is not None:
        return "contains a control character"
    if _absolute(path):
        return "is an absolute path"
    parts = path.replace("\\", "/").split("/")
    if ".." in parts:
        return "climbs out with '..'"
    if "." in parts or "" in parts:
        return "is not a plain relative path"
    if any(_is_git_dir_name(part) for part in parts):
        return "writes into git's own files"
    return None


def resolve_link(path: str, target: str, links: Mapping[str, str]) -> str | None:
    """
    Where the symlink at ``path`` pointing at ``target`` leads, inside the worktree.

    Other symlinks of the tree (``links``: path → target) are followed as the
    kernel would. None when the link leaves the worktree, is absolute,
    loops, or passes through ``.git``.

    >>> resolve_link("docs/current", "v2", {})
    'docs/v2'
    >>> resolve_link("docs/up", "../../etc", {}) is None
    True
    >>> resolve_link("a/link", "../b/x", {"b": "../.."}) is None
    True
    """
    if not target or target.startswith("/") or "\0" in target:
        return None
    pending = [*reversed(target.split("/"))]
    resolved = [part for part in posixpath.dirname(path).split("/") if part]
    hops = 0
    while pending:
        part = pending.pop()
        if part in {"", "."}:
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        if _is_git_dir_name(part):
            return None
        resolved.append(part)
        here = "/".join(resolved)
        if here in links:
            hops += 1
            inner = links[here]
            if hops > _MAX_LINK_HOPS or not inner or inner.startswith("/"):
                return None
            resolved.pop()
            pending.extend(reversed(inner.split("/")))
    return "/".join(resolved)


def _special(change: PathChange) -> set[SpecialPath]:
    needed: set[SpecialPath] = set()
    if change.new_mode == SYMLINK_MODE:
        needed.add(SpecialPath.SYMLINK)
    if GITLINK_MODE in {change.old_mode, change.new_mode}:
        needed.add(SpecialPath.GITLINK)
    name = posixpath.basename(change.path).casefold()
    if name in _CONTROL_FILES:
        needed.add(_CONTROL_FILES[name])
    return needed


def gate_problems(
    changes: Iterable[PathChange],
    *,
    write_scope: Collection[str],
    allow_special: Collection[SpecialPath] = (),
    links: Mapping[str, str] | None = None,
    base_links: Mapping[str, str] | None = None,
) -> list[str]:
    """
    Why a change may not reach the target; empty when it may.

    Args:
        changes: Every path the change touches, as git reports it.
        write_scope: The unit's write scope.
        allow_special: The special kinds the unit may write.
        links: Every symlink of the tree the change produces (path → target);
            needed to judge the change's own symlinks.
        base_links: Every symlink of the tree the change starts from: a link
            the change does not touch, but whose way it changes (by adding or
            retargeting a link it passes through), must still resolve inside
            when it did before.

    >>> change = PathChange(path="docs/x.md", old_mode="000000", new_mode="100644",
    ...     old_object="0" * 40, new_object="1" * 40, status="A")
    >>> gate_problems([change], write_scope=["src"])
    ["touches docs/x.md (a file), outside write_scope ['src']"]

    .. versionadded:: 0.1.0
    """
    problems: list[str] = []
    scope = list(write_scope)
    allowed = set(allow_special)
    all_links = links or {}
    changes_seen: set[str] = set()
    for change in changes:
        changes_seen.add(change.path)
        shown = describe_path(change.path)
        if problem := path_problem(change.path):
            problems.append(f"{shown} {problem}")
            continue
        kind = _kind(change)
        if not in_scope(change.path, scope):
            problems.append(f"touches {shown} ({kind}), outside write_scope {scope}")
        problems.extend(
            f"{shown} is {needed.article}; allow_special does not list {needed.value!r}"
            for needed in sorted(_special(change) - allowed)
        )
        modes = {change.old_mode, change.new_mode} - {ABSENT_MODE, SYMLINK_MODE, GITLINK_MODE}
        if unknown := sorted(modes - FILE_MODES):
            problems.append(f"{shown} has mode {unknown[0]}, which mesh does not write")
        if change.new_mode == SYMLINK_MODE:
            target = all_links.get(change.path)
            if target is None or resolve_link(change.path, target, all_links) is None:
                problems.append(
                    f"{shown} is a symlink out of the worktree ({describe_path(target or '')})"
                )
    problems.extend(_redirected(changes_seen, all_links, base_links or {}))
    return problems


def _redirected(
    changed: set[str], links: Mapping[str, str], base_links: Mapping[str, str]
) -> list[str]:
    """Links the change left alone that resolved inside before it and lead out after."""
    return [
        f"{describe_path(path)} is a symlink this change makes lead out of the worktree"
        for path, target in sorted(links.items())
        if path not in changed
        and base_links.get(path) == target
        and resolve_link(path, target, base_links) is not None
        and resolve_link(path, target, links) is None
    ]


def _kind(change: PathChange) -> str:
    if change.status == "D":
        return "deleted"
    if change.new_mode == SYMLINK_MODE:
        return "a symlink"
    if change.new_mode == GITLINK_MODE:
        return "a gitlink"
    return "a file"
