"""
The ``mesh`` command line on argparse, held to mesh's contract.

argparse reads arguments a little differently from the contract, and reports
by printing and exiting. So:

- `argparse_form` first joins every flag to its value (``--flag=value``): the
  contract takes the next token as the value unless it starts with ``--``, so
  ``-1``, ``-x`` and the empty string are values, where argparse would take
  ``-x`` for an option, ``--`` for the end of options and ``-oFILE`` for
  ``-o FILE``. Short spellings (``-o``) are expanded there rather than
  registered with argparse, and the command's argument goes last, after
  ``--``, so it may start with a dash too. Problems with the shape of the
  command line (an unknown or repeated flag, a missing value, a switch given a
  value, an argument too many) are found there.
- Abbreviations (``--remaining-w``) and ``@file`` arguments are off.
- Each flag's action parses its value with the flag's own parser (`_Flag`).
- `MeshArgumentParser` raises `OptionError` where argparse would print and
  exit, so nothing else ever reaches stderr.
"""

from __future__ import annotations

import argparse
import difflib
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ..contracts._errors import OptionError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from ._options import Command, Flag

__all__ = [
    "MeshArgumentParser",
    "argparse_form",
    "build_parser",
    "did_you_mean",
    "parse_options",
    "unknown_option",
]


class MeshArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises `OptionError` instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise what argparse would print: one line, never a usage dump or an exit."""
        raise OptionError("UsageError", f"{self.prog}: {' '.join(message.split())}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Raise instead of exiting (argparse's own help and version actions are not used)."""
        self.error(message or f"stopped with status {status}")


class _Flag(argparse.Action):
    """A flag or the argument, its value parsed by its own parser (`OptionError` if unusable)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, *, flag: Flag, nargs: str | None = None
    ) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0 if flag.is_switch else nargs,
            default=argparse.SUPPRESS,
            help=flag.help,
            metavar=None if flag.is_switch else flag.metavar,
        )
        self.flag = flag
        # Messages name a flag by its name, the argument by its metavar (RUN).
        self.label = flag.name if option_strings else flag.metavar

    def __call__(
        self,
        parser: argparse.ArgumentParser,  # noqa: ARG002 - argparse's signature
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,  # noqa: ARG002
    ) -> None:
        # A value always arrives as one string: argparse_form spelt it --flag=value.
        value = True if self.flag.is_switch else self.flag.parse(self.label, cast("str", values))
        setattr(namespace, self.dest, value)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the candidate closest to ``word``, or nothing."""
    # Compared without their dashes: every flag starting with "--" would look alike.
    # Of spellings with one stem (--help, help), the first given is suggested.
    by_stem: dict[str, str] = {}
    for candidate in candidates:
        by_stem.setdefault(candidate.lstrip("-"), candidate)
    close = difflib.get_close_matches(word.lstrip("-"), list(by_stem), n=1)
    return f" (did you mean {by_stem[close[0]]}?)" if close else ""


def unknown_option(command: Command, name: str) -> OptionError:
    """The error for a flag ``command`` does not have, suggesting the closest one."""
    names = [flag.name for flag in command.flags]
    suggestion = did_you_mean(name, [*names, "--help"])
    return OptionError(
        "UnknownOption", f"{name} is not an option of `mesh {command.name}`{suggestion}"
    )


def argparse_form(
    command: Command, arguments: Sequence[str]
) -> tuple[list[str], OptionError | None]:
    """
    ``arguments`` as argparse cannot misread them, up to the first problem with their shape.

    That is: ``--flag=value`` and ``--switch`` tokens, then ``--`` and the
    command's argument, if given. Short spellings (``-o``) become the flag's
    name first, so ``--runs -o`` is a flag without a value, as in the original
    CLI. The problem (an unknown or repeated flag, a flag without a value, a
    switch given a value, an argument too many) is returned rather than raised,
    so that the values before it are judged first: errors come in argument
    order.
    """
    by_name = {flag.name: flag for flag in command.flags}
    shorts = {flag.short: flag.name for flag in command.flags if flag.short}
    tokens = [shorts.get(token, token) for token in arguments]
    joined: list[str] = []
    argument: list[str] = []
    seen: set[str] = set()
    problem: OptionError | None = None
    position = 0
    while position < len(tokens) and problem is None:
        token = tokens[position]
        position += 1
        name, has_value, _ = token.partition("=")
        flag = by_name.get(name)
        if not token.startswith("--"):
            if argument or command.positional is None:
                problem = OptionError("UnexpectedArgument", f"unexpected argument {token!r}")
            else:
                argument.append(token)
        elif flag is None:
            problem = unknown_option(command, name)
        elif name in seen:
            # argparse would keep the last value silently.
            problem = OptionError("DuplicateOption", f"{name} is given more than once")
        elif flag.is_switch and has_value:
            problem = OptionError("UnexpectedOptionValue", f"{name} takes no value")
        elif flag.is_switch or has_value:
            joined.append(token)
        elif position == len(tokens) or tokens[position].startswith("--"):
            problem = OptionError("MissingOptionValue", f"{name} needs a value")
        else:
            joined.append(f"{name}={tokens[position]}")
            position += 1
        seen.add(name)
    return [*joined, "--", *argument] if argument else joined, problem


def build_parser(commands: Mapping[str, Command], aliases: Mapping[str, str]) -> MeshArgumentParser:
    """The ``mesh`` parser: a subparser per command (with its aliases), an action per flag."""
    options: dict[str, Any] = {"add_help": False, "allow_abbrev": False}
    parser = MeshArgumentParser(prog="mesh", **options)
    # An explicit prog spares argparse formatting a usage line to derive one.
    subparsers = parser.add_subparsers(prog="mesh")
    for command in commands.values():
        subparser = subparsers.add_parser(
            command.name,
            aliases=[alias for alias, name in aliases.items() if name == command.name],
            help=command.summary,
            **options,
        )
        for flag in command.flags:
            subparser.add_argument(flag.name, dest=flag.name, action=_Flag, flag=flag)
        if command.positional is not None:
            positional = command.positional
            subparser.add_argument(positional.name, nargs="?", action=_Flag, flag=positional)
    return parser


def parse_options(
    parser: argparse.ArgumentParser, command: Command, arguments: Sequence[str]
) -> dict[str, object]:
    """
    Parse a command's arguments into keyword arguments for its `mesh.commands` function.

    When several things are wrong, the first in argument order is reported
    (the argument's own value is judged after the flags'), then conflicting
    flags, then what is missing.

    Raises:
        OptionError: On an unknown, repeated, conflicting, valueless or missing flag,
            a stray argument, or an unusable value.
    """
    tokens, problem = argparse_form(command, arguments)
    namespace = parser.parse_args([command.name, *tokens])
    if problem is not None:
        raise problem
    given: dict[str, object] = vars(namespace)
    for first, second in command.conflicts:
        if first in given and second in given:
            raise OptionError("ConflictingOptions", f"give {first} or {second}, not both")
    positional = command.positional
    if positional is not None and positional.required and positional.name not in given:
        raise OptionError("MissingArgument", f"{positional.metavar} is required")
    missing = [flag.name for flag in command.flags if flag.required and flag.name not in given]
    if missing:
        raise OptionError("MissingRequiredOption", f"{', '.join(missing)} is required")
    keywords = {flag.name: flag.keyword for flag in command.flags}
    return {keywords.get(name, name): value for name, value in given.items()}
