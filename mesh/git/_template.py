"""
Command templates: ``{placeholder}`` fields checked against the shell's quoting. Pure: no I/O.

mesh fills each placeholder with a shell-quoted value (``shlex.quote``), which
is one safe word only where the shell reads it as code. Anywhere else the
quoting breaks: inside double quotes ``'$(rm -rf ~)'`` runs, inside single
quotes the value's own quotes close them, after a backslash or a ``$`` the
shell reads the quote as something else, in a comment or a here-document a
line break in the value starts a command. `template_problem` finds the first
such field by following the template's quoting as the shell would.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Collection
from typing import Final

__all__ = ["template_problem"]


class _Context(enum.Enum):
    CODE = "code"
    """Shell code: the top level or a ``( ... )`` subshell."""
    SUBSTITUTION = "substitution"
    """``$( ... )``, ``<( ... )`` or ``>( ... )``: code whose output becomes text."""
    BACKTICKS = "backticks"
    SINGLE = "single quotes"
    DOUBLE = "double quotes"
    ANSI = "$'...' quotes"
    COMMENT = "comment"


_QUOTES: Final = frozenset({_Context.SINGLE, _Context.DOUBLE, _Context.ANSI})
_CLOSERS: Final = {_Context.ANSI: "'", _Context.BACKTICKS: "`"}
"""Contexts where only their closing character (or a backslash) matters."""
# Where a ``#`` starts a comment: at the start of a word.
_WORD_BREAKS: Final = frozenset(" \t\n;&|()<>")
_ACCESS: Final = re.compile(r"[.\[]")


class _Shell:
    """The shell's reading state after the template's literal text seen so far."""

    def __init__(self) -> None:
        self.stack = [_Context.CODE]
        self.escaped = False
        """The last character was an unconsumed backslash."""
        self.dollar = False
        """The last character was a ``$`` that would start an expansion."""
        self.word_start = True
        """The next character starts a word (where a ``#`` starts a comment)."""
        self.heredoc = False
        """A ``<<`` was seen: what follows may be a here-document's body."""

    @property
    def top(self) -> _Context:
        return self.stack[-1]

    def feed(self, text: str) -> None:
        """Read literal template text (``{{`` already read as ``{``)."""
        index = 0
        while index < len(text):
            index = self._step(text, index)

    def after_field(self) -> None:
        """A placeholder's value is one word: the next character does not start one."""
        self.escaped = self.dollar = self.word_start = False

    def _step(self, text: str, index: int) -> int:  # noqa: C901, PLR0911 - one branch per shell rule
        """Read the character at ``index``; return where to read next."""
        char = text[index]
        following = text[index + 1 : index + 2]
        top = self.top
        self.dollar = False
        if self.escaped:
            self.escaped = self.word_start = False
            return index + 1
        if top is _Context.COMMENT:
            if char == "\n":
                self.stack.pop()
                self.word_start = True
            return index + 1
        if top is _Context.SINGLE:
            if char == "'":
                self.stack.pop()
            return index + 1
        if char == "\\":
            # Single quotes keep a backslash (above); everywhere else it escapes the
            # next character, which may be the first one of a placeholder's value.
            self.escaped = True
            return index + 1
        if top in _CLOSERS:
            # In backquotes the first unescaped ` ends them, whatever quotes are inside.
            if char == _CLOSERS[top]:
                self.stack.pop()
            return index + 1
        if top is _Context.DOUBLE and char == '"':
            self.stack.pop()
            return index + 1
        if char in "`$":
            self.word_start = False  # inside a word now: a "#" starts no comment
            return self._expansion(char, following, top, index)
        if top is _Context.DOUBLE:
            return index + 1
        return self._code(char, following, text, index)

    def _expansion(self, char: str, following: str, top: _Context, index: int) -> int:
        """A backquote or a ``$``, in code or in double quotes."""
        if char == "`":
            self.stack.append(_Context.BACKTICKS)
        elif following == "(":
            self.stack.append(_Context.SUBSTITUTION)
            return index + 2
        elif top is not _Context.DOUBLE and following in {"'", '"'}:
            self.stack.append(_Context.ANSI if following == "'" else _Context.DOUBLE)
            return index + 2
        else:
            self.dollar = True
        return index + 1

    def _code(self, char: str, following: str, text: str, index: int) -> int:
        """A character read as shell code (not quoted, not in backticks)."""
        word_start, self.word_start = self.word_start, char in _WORD_BREAKS
        if char == "'":
            self.stack.append(_Context.SINGLE)
        elif char == '"':
            self.stack.append(_Context.DOUBLE)
        elif char == "#" and word_start:
            self.stack.append(_Context.COMMENT)
        elif char in "<>" and following == "(":
            self.stack.append(_Context.SUBSTITUTION)
            return index + 2
        elif char == "(":
            self.stack.append(_Context.CODE)
        elif char == ")" and len(self.stack) > 1:
            self.stack.pop()
        elif char == "<" and following == "<":
            # "<<<" is a here-string (one word, safe); "<<" starts a here-document.
            if text[index + 2 : index + 3] != "<":
                self.heredoc = True
            return index + 2 + (text[index + 2 : index + 3] == "<")
        return index + 1

    def problem(self, field: str) -> str | None:  # noqa: PLR0911 - one return per rule
        """Why a placeholder cannot stand here, or None."""
        name = field[1:-1]
        environment = f"$MESH_{name.upper()}"
        top = self.top
        if top in _QUOTES:
            return (
                f"{field} is inside {top.value}: write the placeholder bare, as in "
                f"agent {field}, because mesh shell-quotes every value (to add text "
                f'around it, quote only the text: --prompt="fix: "{field})'
            )
        if _Context.BACKTICKS in self.stack or _Context.SUBSTITUTION in self.stack:
            return (
                f"{field} is inside a command substitution ($(...), `...`, <(...)): "
                f"pass it to the command as a bare argument, or read {environment} there"
            )
        if top is _Context.COMMENT:
            return f"{field} is inside a # comment: a line break in its value would end the comment"
        if self.heredoc:
            return (
                f"{field} comes after a here-document (<<), whose body the shell expands: "
                f"pass it as a bare argument, or read {environment}"
            )
        if self.escaped:
            return f"a backslash right before {field} undoes mesh's quoting: remove it"
        if self.dollar:
            return (
                f"a $ right before {field} makes the shell expand the value: "
                "remove it, or put another character between them"
            )
        return None


def _field_text(name: str, spec: str, conversion: str | None) -> str:
    return (
        "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    )


def _field_problem(
    name: str, spec: str, conversion: str | None, placeholders: Collection[str]
) -> str | None:
    """Why a field is not a plain known placeholder, or None."""
    written = _field_text(name, spec, conversion)
    base = _ACCESS.split(name, maxsplit=1)[0]
    if not base or base.isdigit():
        return f"{written} is not a placeholder: name one ({_listing(placeholders)})"
    if base not in placeholders:
        return f"unknown placeholder {base!r} ({_listing(placeholders)})"
    if base != name:
        return f"{written}: attribute and index access are not allowed; write {{{base}}}"
    if conversion:
        return f"{written}: conversions are not allowed; write {{{base}}}"
    if spec:
        return f"{written}: format specs are not allowed; write {{{base}}}"
    return None


def _listing(placeholders: Collection[str]) -> str:
    return "placeholders: " + ", ".join(f"{{{name}}}" for name in placeholders)


def template_problem(template: str, placeholders: Collection[str]) -> str | None:
    """
    What is wrong with a command template, or None when every field is safe.

    A field must be a bare known placeholder (no conversion, format spec,
    attribute or index) that the shell reads as code: not inside quotes,
    backticks, ``$(...)``, a comment or after a here-document, and not right
    after a backslash or a ``$``. ``{{`` and ``}}`` are literal braces.

    >>> template_problem("agent --prompt={objective}", ["objective"]) is None
    True
    >>> template_problem('agent "{objective}"', ["objective"])
    '{objective} is inside double quotes: write the placeholder bare, ...'

    .. versionadded:: 0.1.0
    """
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"{exc} ({_listing(placeholders)})"
    shell = _Shell()
    for literal, name, spec, conversion in fields:
        shell.feed(literal)
        if name is None:
            continue
        problem = _field_problem(name, spec or "", conversion, placeholders)
        problem = problem or shell.problem("{" + name + "}")
        if problem is not None:
            return problem
        shell.after_field()
    return None
