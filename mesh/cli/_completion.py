"""
``mesh completion bash|zsh``: shell completion scripts written from the command table.

The scripts are generated from the same `Command` table the parser is built
from, so a command or flag cannot be missing from them. They complete the
command names (aliases too), each command's flags, the values of flags with
fixed choices (``--format``, ``--lane``, ``--delivery``) and the command's
argument when it has choices (``mesh completion SHELL``); any other value is
left to the shell's file-name completion.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Final

from ._options import Choice

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from ._options import Command

__all__ = ["HELP_FLAGS", "SHELLS", "completion_script"]

HELP_FLAGS: Final = ("-h", "--help")
"""How every command is asked for its help."""


def _names(command: Command, aliases: Mapping[str, str]) -> str:
    """The command and its aliases, as a ``case`` pattern."""
    return "|".join(
        [command.name, *(alias for alias, name in aliases.items() if name == command.name)]
    )


def _arguments(command: Command) -> tuple[str, ...]:
    """The choices of the command's argument (none when it has no fixed choices)."""
    parse = command.positional.parse if command.positional else None
    return parse.allowed if isinstance(parse, Choice) else ()


def _value_cases(
    command: Command, *, choices: Callable[[tuple[str, ...]], str], files: str
) -> Iterator[str]:
    """``case`` arms for the word after a flag taking a value: its choices, else files."""
    takes_files: list[str] = []
    for flag in command.flags:
        if isinstance(flag.parse, Choice):
            yield f"({'|'.join(flag.spellings)}) {choices(flag.parse.allowed)} ;;"
        elif not flag.is_switch:
            takes_files.extend(flag.spellings)
    if takes_files:
        yield f"({'|'.join(takes_files)}) {files} ;;"


def _bash_arm(command: Command, aliases: Mapping[str, str]) -> list[str]:
    """The ``case`` arm completing the words after ``mesh COMMAND``."""
    cases = _value_cases(
        command, choices=lambda allowed: f"words={shlex.quote(' '.join(allowed))}", files="return"
    )
    words = [*(s for flag in command.flags for s in flag.spellings), *HELP_FLAGS]
    return [
        f"        {_names(command, aliases)})",
        "            case $prev in",
        *(f"            {case}" for case in cases),
        f"            *) words={shlex.quote(' '.join([*words, *_arguments(command)]))} ;;",
        "            esac",
        "            ;;",
    ]


def _bash(
    commands: Mapping[str, Command], aliases: Mapping[str, str], top: Mapping[str, str]
) -> str:
    first = shlex.quote(" ".join([*commands, *aliases, *top]))
    return "\n".join(
        [
            "# bash completion for mesh, written by `mesh completion bash`.",
            "# Load it with: source <(mesh completion bash)",
            "_mesh() {",
            "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words=",
            "    COMPREPLY=()",
            "    if ((COMP_CWORD == 1)); then",
            f"        words={first}",
            "    else",
            "        case ${COMP_WORDS[1]} in",
            *(line for command in commands.values() for line in _bash_arm(command, aliases)),
            "        esac",
            "    fi",
            "    # Nothing offered: `-o default` completes a file name instead.",
            '    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")',
            "}",
            "complete -o default -F _mesh mesh",
        ]
    )


def _described(pairs: Mapping[str, str]) -> str:
    """A zsh array of ``word:description`` items for ``_describe``."""
    return "(" + " ".join(shlex.quote(f"{word}:{about}") for word, about in pairs.items()) + ")"


def _zsh_arm(command: Command, aliases: Mapping[str, str]) -> list[str]:
    """The ``case`` arm completing the words after ``mesh COMMAND``."""
    cases = [
        f"        {case}"
        for case in _value_cases(
            command,
            choices=lambda allowed: f"compadd -- {shlex.join(allowed)}; return",
            files="_files; return",
        )
    ]
    flags = {spelling: flag.help for flag in command.flags for spelling in flag.spellings}
    lines = [f"    ({_names(command, aliases)})"]
    if cases:
        lines += ["        case $words[CURRENT-1] in", *cases, "        esac"]
    lines.append(f"        flags={_described({**flags, **dict.fromkeys(HELP_FLAGS, 'show help')})}")
    if arguments := _arguments(command):
        lines.append(f"        [[ $PREFIX == -* ]] || compadd -- {shlex.join(arguments)}")
    elif command.positional is not None:
        lines.append("        [[ $PREFIX == -* ]] || _files")
    return [*lines, "        ;;"]


def _zsh(
    commands: Mapping[str, Command], aliases: Mapping[str, str], top: Mapping[str, str]
) -> str:
    first = {
        **{name: command.summary for name, command in commands.items()},
        **{alias: f"alias of {name}" for alias, name in aliases.items()},
        **top,
    }
    return "\n".join(
        [
            "#compdef mesh",
            "# zsh completion for mesh, written by `mesh completion zsh`.",
            "# Load it with `source <(mesh completion zsh)` after compinit,",
            "# or save it as _mesh in a folder of $fpath.",
            "_mesh() {",
            "    local -a flags",
            "    if ((CURRENT == 2)); then",
            f"        flags={_described(first)}",
            "        _describe -t commands 'mesh command' flags",
            "        return",
            "    fi",
            "    case $words[2] in",
            *(line for command in commands.values() for line in _zsh_arm(command, aliases)),
            "    (*) return 1 ;;",
            "    esac",
            "    _describe -t options 'mesh option' flags",
            "}",
            "# Autoloaded from $fpath the file is the function's body; sourced, it registers.",
            'if [[ $funcstack[1] == _mesh ]]; then _mesh "$@"; else compdef _mesh mesh; fi',
        ]
    )


SHELLS: Final[
    Mapping[str, Callable[[Mapping[str, Command], Mapping[str, str], Mapping[str, str]], str]]
] = {
    "bash": _bash,
    "zsh": _zsh,
}
"""The shells ``mesh completion`` writes for, and how."""


def completion_script(
    shell: str,
    commands: Mapping[str, Command],
    aliases: Mapping[str, str],
    top_level: Mapping[str, str],
) -> str:
    """
    The completion script of ``shell`` for ``commands``.

    Args:
        shell: ``bash`` or ``zsh`` (a key of `SHELLS`).
        commands: The command table, by name.
        aliases: Other names of commands (``plan-sync``), each with its command's name.
        top_level: The words taken instead of a command (``--help``), with what they do.
    """
    return SHELLS[shell](commands, aliases, top_level)
