"""
Write-scope overlap, decided on path roots and glob prefixes. Pure: no I/O.

The rule is conservative: when in doubt, two scopes overlap, so two units that
might touch the same file are never leased at once. A glob is compared by its
literal leading directories; ``unknown``, ``.``, ``*`` and ``**`` mean the
whole tree. (Workspaces refine globs against the repository's tracked files.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["scopes_overlap"]

_GLOB_CHARS: Final = frozenset("*?[{")
_WHOLE_TREE: Final = frozenset({"", ".", "*", "**", "unknown"})


def _parts(root: str) -> tuple[tuple[str, ...], bool]:
    """Literal leading path components, and whether anything after them is a glob."""
    text = root.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    if text in _WHOLE_TREE:
        return (), True
    components = [part for part in text.split("/") if part not in {"", "."}]
    literal: list[str] = []
    for component in components:
        if any(char in _GLOB_CHARS for char in component):
            return tuple(literal), True
        literal.append(component)
    return tuple(literal), False


def _roots_overlap(first: str, second: str) -> bool:
    a, _ = _parts(first)
    b, _ = _parts(second)
    shorter = min(len(a), len(b))
    # Same root, one inside the other, or a glob whose literal base contains the other.
    return a[:shorter] == b[:shorter]


def scopes_overlap(first: Iterable[str], second: Iterable[str]) -> bool:
    """
    Whether two write scopes (lists of roots or globs) may touch a common path.

    >>> scopes_overlap(["src/api"], ["src/api/routes.py"])
    True
    >>> scopes_overlap(["docs/**/*.md"], ["src/app.py"])
    False

    .. versionadded:: 0.1.0
    """
    second_roots = list(second)
    return any(_roots_overlap(a, b) for a in first for b in second_roots)
