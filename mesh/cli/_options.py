"""
The command line as data: commands, their flags, and how each value is parsed.

One table (`mesh.cli._cli.COMMANDS`) feeds the argparse parser, the help texts
and the completion scripts, so none of them can disagree with another. This
module needs the standard library only (and attrs): ``mesh --help`` loads no
more.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final

import attrs

from ..contracts._errors import OptionError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from ._run_command import RunReport

    CommandResult: TypeAlias = dict[str, object] | str | RunReport | None
    """What a command's function returns: a JSON document, text, a whole run, or nothing."""

__all__ = [
    "Choice",
    "Command",
    "Flag",
    "boolean",
    "choice",
    "finite",
    "seconds",
    "text",
    "whole",
]

_INT: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT: Final = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLS: Final = {"true": True, "1": True, "false": False, "0": False}


def _invalid(flag: str, expected: str, raw: str) -> OptionError:
    return OptionError("InvalidOptionValue", f"{flag} expects {expected}, got {raw!r}")


def whole(minimum: int | None = None, maximum: int | None = None) -> Callable[[str, str], int]:
    """A parser for whole numbers within an optional range."""
    if minimum is not None and maximum is not None:
        expected = f"a whole number from {minimum} to {maximum}"
    elif minimum is not None:
        expected = f"a whole number >= {minimum}"
    else:
        expected = "a whole number"

    def parse(flag: str, raw: str) -> int:
        if not _INT.fullmatch(raw.strip()):
            raise _invalid(flag, expected, raw)
        value = int(raw)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _invalid(flag, expected, raw)
        return value

    return parse


def finite(flag: str, raw: str) -> float:
    """Parse a finite decimal number (``nan``, ``inf`` and friends are errors)."""
    if not _FLOAT.fullmatch(raw.strip()):
        raise _invalid(flag, "a finite number", raw)
    value = float(raw)
    if not math.isfinite(value):
        raise _invalid(flag, "a finite number", raw)
    return value


def boolean(flag: str, raw: str) -> bool:
    """Parse true/false/1/0."""
    try:
        return _BOOLS[raw.strip().lower()]
    except KeyError:
        raise _invalid(flag, "true, false, 1 or 0", raw) from None


@attrs.frozen
class Choice:
    """A parser accepting one of ``allowed``, which shell completion offers."""

    allowed: tuple[str, ...]

    def __call__(self, flag: str, raw: str) -> str:
        if raw not in self.allowed:
            raise _invalid(flag, f"one of {', '.join(self.allowed)}", raw)
        return raw


def choice(*allowed: str) -> Choice:
    """A parser accepting one of ``allowed``."""
    return Choice(allowed)


def seconds(flag: str, raw: str) -> float:
    """A positive, finite number of seconds."""
    value = finite(flag, raw)
    if value <= 0:
        raise _invalid(flag, "a positive number of seconds", raw)
    return value


def text(flag: str, raw: str) -> str:
    """Any non-empty text (paths)."""
    if not raw:
        raise _invalid(flag, "a non-empty value", raw)
    return raw


@attrs.frozen(kw_only=True)
class Flag:
    """One command-line flag: its name, how to parse it, and where it goes."""

    name: str
    help: str
    parse: Callable[[str, str], object] = text
    required: bool = False
    metavar: str = "VALUE"
    is_switch: bool = False
    dest: str = ""
    short: str = ""
    """A one-letter spelling, such as ``-o``."""

    @property
    def keyword(self) -> str:
        """The keyword argument of the `mesh.commands` function."""
        return self.dest or self.name.removeprefix("--").replace("-", "_")

    @property
    def spellings(self) -> tuple[str, ...]:
        """The flag's name, then its short spelling if it has one."""
        return (self.name, self.short) if self.short else (self.name,)


@attrs.frozen(kw_only=True)
class Command:
    """One command: its flags and the function running it."""

    name: str
    summary: str
    flags: tuple[Flag, ...]
    run: Callable[..., CommandResult]
    example: str
    conflicts: tuple[tuple[str, str], ...] = ()
    positional: Flag | None = None
    """One argument given without a flag name (its ``name`` is the keyword)."""
