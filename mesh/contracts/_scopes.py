"""
Write scopes: which paths a scope covers, and whether two scopes overlap. Pure: no I/O.

A literal root covers itself and everything under it. A glob covers the
paths it matches, and only those (wcmatch glob semantics, ``**`` crossing
directories): ``src/*.py`` covers ``src/x.py`` but nothing inside a folder
named ``src/x.py``; ``docs/**`` covers everything under ``docs``.
``unknown``, ``.``, ``*``, ``**`` and the empty root mean the whole tree.

Without more knowledge the overlap rule is conservative: when in doubt, two
scopes overlap, so two units that might touch the same file are never leased
at once. A glob is compared by its literal leading directories. Given the
repository's tracked files, two globs are judged by the files they match
instead: they overlap when they cover a common tracked file. A glob and a
literal root overlap when the glob may match the root or a path under it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Hashable, Iterable
from typing import Final, Generic, TypeVar

from wcmatch import glob

__all__ = ["ScopeIndex", "in_scope", "is_whole_tree", "normalize_path", "scopes_overlap"]

_GLOB_CHARS: Final = frozenset("*?[{")
_WHOLE_TREE: Final = frozenset({"", ".", "*", "**", "unknown"})
_GLOB_FLAGS: Final = glob.GLOBSTAR | glob.DOTGLOB | glob.BRACE


@functools.lru_cache(maxsize=65536)
def normalize_path(path: str) -> str:
    """A repository-relative path in one spelling: forward slashes, no ``./``, no trailing slash."""
    text = path.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return "/".join(part for part in text.split("/") if part not in {"", "."})


@functools.lru_cache(maxsize=65536)
def is_whole_tree(root: str) -> bool:
    """Whether a scope root means the whole tree (``unknown``, ``.``, ``*``, ``**``, empty)."""
    return root.strip() in _WHOLE_TREE or normalize_path(root) in _WHOLE_TREE


def _is_glob(root: str) -> bool:
    return any(char in _GLOB_CHARS for char in root)


# Scopes repeat across units and lease checks; parsing each spelling once keeps checks cheap.
@functools.lru_cache(maxsize=65536)
def _parts(root: str) -> tuple[str, ...]:
    """Literal leading path components (up to the first glob component)."""
    if is_whole_tree(root):
        return ()
    literal: list[str] = []
    for component in normalize_path(root).split("/"):
        if _is_glob(component):
            break
        literal.append(component)
    return tuple(literal)


def _roots_overlap(first: str, second: str) -> bool:
    a = _parts(first)
    b = _parts(second)
    shorter = min(len(a), len(b))
    # Same root, one inside the other, or a glob whose literal base contains the other.
    return a[:shorter] == b[:shorter]


def _covers(root: str, path: str) -> bool:
    """Whether one scope root covers ``path``: a literal root, itself or anything under it."""
    if is_whole_tree(root):
        return True
    pattern = normalize_path(root)
    if not _is_glob(pattern):
        return path == pattern or path.startswith(pattern + "/")
    # A glob names files. If it also covered what lies inside a folder it
    # matches, an author could reach past "src/*.py" by creating "src/x.py/run.sh".
    return glob.globmatch(path, pattern, flags=_GLOB_FLAGS)


def in_scope(path: str, write_scope: Iterable[str]) -> bool:
    """
    Whether a repository-relative path lies inside a write scope.

    >>> in_scope("src/api/routes.py", ["src/api"])
    True
    >>> in_scope("src/apiary.py", ["src/api"])
    False
    >>> in_scope("docs/guide/intro.md", ["docs/**/*.md"])
    True
    >>> in_scope("src/x.py/payload.sh", ["src/*.py"])
    False

    .. versionadded:: 0.1.0
    """
    normalized = normalize_path(path)
    return any(_covers(root, normalized) for root in write_scope)


def _reaches(pattern: str, literal: str) -> bool:
    """Whether a glob may match a literal root or a path under it (True when unsure)."""
    path = normalize_path(literal)
    if _covers(pattern, path):
        return True
    # "**" may match at any depth, and braces may hold a "/": do not try to be clever.
    if "**" in pattern or "{" in pattern:
        return True
    components = normalize_path(pattern).split("/")
    depth = path.count("/") + 1
    # Without "**" a glob matches paths of exactly its own depth: under the root
    # means deeper, so the glob must be deeper and its leading part match the root.
    if len(components) <= depth:
        return False
    return glob.globmatch(path, "/".join(components[:depth]), flags=_GLOB_FLAGS)


def _share_a_path(first: str, second: str, tracked_files: Collection[str]) -> bool:
    for literal, other in ((first, second), (second, first)):
        if not _is_glob(literal):
            # Files not tracked yet count too: a glob reaching under a literal root
            # may match a file either author creates.
            return _reaches(other, literal)
    return any(_covers(first, path) and _covers(second, path) for path in tracked_files)


def scopes_overlap(
    first: Iterable[str], second: Iterable[str], *, tracked_files: Collection[str] | None = None
) -> bool:
    """
    Whether two write scopes (lists of roots or globs) may touch a common path.

    >>> scopes_overlap(["src/api"], ["src/api/routes.py"])
    True
    >>> scopes_overlap(["docs/**/*.md"], ["src/app.py"])
    False
    >>> scopes_overlap(["src/*.py"], ["src/*.txt"])
    True
    >>> scopes_overlap(["src/*.py"], ["src/*.txt"], tracked_files=["src/a.py", "src/b.txt"])
    False

    Args:
        first: One scope's roots.
        second: The other's.
        tracked_files: The repository's files (``git ls-files``): when given,
            globs are judged by the files they match rather than their prefix.

    .. versionadded:: 0.1.0
    """
    second_roots = list(second)
    for a in first:
        for b in second_roots:
            if not _roots_overlap(a, b):
                continue
            if tracked_files is None or not (_is_glob(a) or _is_glob(b)):
                return True
            if is_whole_tree(a) or is_whole_tree(b) or _share_a_path(a, b, tracked_files):
                return True
    return False


K = TypeVar("K", bound=Hashable)


class ScopeIndex(Generic[K]):
    """
    Scopes by key, indexed by their literal leading directories.

    Two scopes can only overlap when a root of one lies on the path of a root
    of the other (see `scopes_overlap`); `candidates` finds those keys by
    walking the request's own path instead of comparing it with every scope.
    """

    def __init__(self) -> None:
        self._at: dict[tuple[str, ...], set[K]] = {}
        """Keys with a root at exactly this literal path."""
        self._under: dict[tuple[str, ...], set[K]] = {}
        """Keys with a root at this literal path or below it."""
        self._roots: dict[K, tuple[tuple[str, ...], ...]] = {}

    def add(self, key: K, scope: Iterable[str]) -> None:
        """Index ``key``'s scope (replacing what it had)."""
        self.discard(key)
        roots = tuple({_parts(root) for root in scope})
        self._roots[key] = roots
        for parts in roots:
            self._at.setdefault(parts, set()).add(key)
            for depth in range(len(parts) + 1):
                self._under.setdefault(parts[:depth], set()).add(key)

    def discard(self, key: K) -> None:
        """Forget ``key`` (nothing happens when it is not indexed)."""
        roots = self._roots.pop(key, ())
        for parts in roots:
            _discard(self._at, parts, key)
        # Roots of one key can share leading directories: each prefix once.
        for prefix in {parts[:depth] for parts in roots for depth in range(len(parts) + 1)}:
            _discard(self._under, prefix, key)

    def candidates(self, scope: Iterable[str]) -> set[K]:
        """The keys whose scope may overlap ``scope``: a superset of the real overlaps."""
        found: set[K] = set()
        for root in scope:
            parts = _parts(root)
            found.update(self._under.get(parts, ()))
            for depth in range(len(parts)):
                found.update(self._at.get(parts[:depth], ()))
        return found


def _discard(index: dict[tuple[str, ...], set[K]], parts: tuple[str, ...], key: K) -> None:
    """Remove ``key`` under ``parts``, and the entry once empty: a long run sees many paths."""
    keys = index[parts]
    keys.discard(key)
    if not keys:
        del index[parts]
