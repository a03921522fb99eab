"""
Text written by untrusted authors: what it may contain, and how to print it. Pure: no I/O.

Plan text, coder output and proof output come from LLM agents. Two things
must never get through: characters that forge or hide lines where mesh
prints or writes (control characters, Unicode line separators, bidi
overrides), and lone surrogates, which are not Unicode and cannot be written
as UTF-8. `text_problem` finds them where text is read; `one_line` escapes
them where text is printed.
"""

from __future__ import annotations

import enum
import re
from typing import Final

__all__ = ["TextLevel", "first_surrogate", "one_line", "text_problem"]


class TextLevel(enum.Enum):
    """
    How strict a text field is.

    .. versionadded:: 0.1.0
    """

    STRICT = "strict"
    """Identifiers, paths, objectives, commands: one line, no control character at all."""
    PROSE = "prose"
    """Constraints, invariants, explanations: tab and newline allowed, nothing else."""


# C0 controls, DEL and C1 controls (U+0085 among them), the Unicode line and
# paragraph separators, the bidi embedding/override (U+202A-U+202E) and isolate
# (U+2066-U+2069) controls, and every surrogate: in a str a surrogate is always
# lone, since a valid pair decodes to one code point.
_FORBIDDEN: Final = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_PATTERNS: Final = {
    TextLevel.STRICT: re.compile(f"[{_FORBIDDEN}]"),
    TextLevel.PROSE: re.compile(f"(?![\t\n])[{_FORBIDDEN}]"),
}
# What one_line rewrites: the forbidden characters, and the backslash itself so
# that text can never spell an escape one_line would have written.
_ESCAPED: Final = re.compile(f"[{_FORBIDDEN}\\\\]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SHORT_ESCAPES: Final = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ELLIPSIS: Final = "…"
_LATIN1_END: Final = 0x100


def _kind(code: int) -> str:
    if 0xD800 <= code <= 0xDFFF:  # noqa: PLR2004 - the surrogate block
        return "lone surrogate"
    if code == 0x2028:  # noqa: PLR2004 - LINE SEPARATOR
        return "line separator"
    if code == 0x2029:  # noqa: PLR2004 - PARAGRAPH SEPARATOR
        return "paragraph separator"
    if code >= 0x202A:  # noqa: PLR2004 - the bidi embedding, override and isolate controls
        return "bidi control"
    return "control character"


_STRICT_PATTERN: Final = _PATTERNS[TextLevel.STRICT]


def text_problem(text: str, level: TextLevel = TextLevel.STRICT) -> str | None:
    r"""
    Describe the first character ``text`` may not contain at ``level``, or None.

    >>> text_problem("fix\nthe bug")
    'contains control character U+000A at offset 3'
    >>> text_problem("fix\nthe bug", TextLevel.PROSE) is None
    True
    >>> text_problem("a\u202eb", TextLevel.PROSE)
    'contains bidi control U+202E at offset 1'

    .. versionadded:: 0.1.0
    """
    # By identity: an enum member's hash is a Python call, and plans hold many texts.
    found = (_STRICT_PATTERN if level is TextLevel.STRICT else _PATTERNS[level]).search(text)
    if found is None:
        return None
    code = ord(found.group())
    return f"contains {_kind(code)} U+{code:04X} at offset {found.start()}"


def first_surrogate(text: str) -> tuple[int, int] | None:
    """
    ``(offset, code point)`` of the first lone surrogate in ``text``, or None.

    ASCII text (the common case) is answered without a scan.

    .. versionadded:: 0.1.0
    """
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return None if found is None else (found.start(), ord(found.group()))


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < _LATIN1_END else f"\\u{code:04x}"


def one_line(text: str, limit: int | None = None) -> str:
    r"""
    ``text`` made safe to print on one line of a report, a log or a terminal.

    Control characters (line breaks, ESC...), Unicode line separators, bidi
    controls and lone surrogates become visible escapes (``\n``, ``\x1b``,
    ``\u2028``, ``\ud800``), and a backslash is doubled, so the result is one
    line that no text can make look like another. Text with none of these
    comes back unchanged.

    Args:
        text: Untrusted text.
        limit: When given (>= 1), at most this many characters come back, the
            last being an ellipsis when text was cut; an escape is never cut
            in half.

    >>> print(one_line("ok\nunit-009 completed"))
    ok\nunit-009 completed
    >>> one_line("a fairly long line", limit=8)
    'a fairl…'

    .. versionadded:: 0.1.0
    """
    escaped = text if _ESCAPED.search(text) is None else _ESCAPED.sub(_escape, text)
    if limit is None or len(escaped) <= limit:
        return escaped
    return _cut(text, max(limit - 1, 0)) + _ELLIPSIS


def _cut(text: str, room: int) -> str:
    """The escaped text's first ``room`` characters at most, never half an escape."""
    pieces: list[str] = []
    start = 0
    for found in _ESCAPED.finditer(text):
        plain, escape = text[start : found.start()], _escape(found)
        if len(plain) >= room:
            return "".join(pieces) + plain[:room]
        room -= len(plain)
        if len(escape) > room:
            return "".join(pieces) + plain
        pieces += (plain, escape)
        room -= len(escape)
        start = found.end()
    return "".join(pieces) + text[start:][:room]
