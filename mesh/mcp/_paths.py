"""
Paths an MCP client names, confined to the server's root folder.

The arguments of a tool call are chosen by a model, which may have read
anything (a README, an issue, a web page) telling it where to read or
write. So every path is resolved here before mesh touches it: relative paths
against the server's root (its working directory unless ``--root`` says
otherwise), symbolic links followed, and the result must lie inside the root.
A path that does not is refused with the path and the root named; nothing is
read, written or created first.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ..contracts._errors import InputError, OptionError
from ..store._store import STORE_FILE

__all__ = ["Root"]


def _resolved(folder: str | os.PathLike[str]) -> Path:
    return Path(folder).resolve()


@attrs.frozen
class Root:
    """
    The folder every path of a tool call must resolve into.

    .. versionadded:: 0.1.0
    """

    folder: Path = attrs.field(converter=_resolved)

    def path(self, value: str, *, name: str) -> Path:
        """
        ``value`` (the argument ``name``) resolved inside the root.

        Raises:
            OptionError: The value is empty or not a path (a NUL character).
            InputError: It resolves outside the root, or cannot be resolved.
        """
        if not value.strip():
            raise OptionError("InvalidOptionValue", f"{name} expects a path, got {value!r}")
        if "\0" in value:
            raise OptionError("InvalidOptionValue", f"{name}: a path has no NUL character")
        try:
            # An absolute value replaces the root; `resolve` follows every link, so a
            # link inside the root pointing out of it is seen for what it is.
            resolved = (self.folder / value).resolve()
        except (OSError, RuntimeError) as error:
            # A symbolic link loop (RuntimeError before Python 3.13), a name too long.
            raise InputError(f"{name} {value!r} cannot be resolved: {error}") from None
        if not resolved.is_relative_to(self.folder):
            raise InputError(
                f"{name} {value!r} is outside the server's root {self.folder}",
                hint="start the server with `mesh mcp --root DIR` for a root that holds it",
            )
        # A repository's own git data is never a tool's to read or write.
        if any(part.casefold() == ".git" for part in resolved.relative_to(self.folder).parts):
            raise InputError(f"{name} {value!r} is inside a .git folder")
        # A FIFO, socket or device would hang a read or swallow a write.
        if resolved.exists() and not (resolved.is_file() or resolved.is_dir()):
            raise InputError(f"{name} {value!r} is not a file or a folder")
        return resolved

    def output(self, value: str, *, name: str) -> Path:
        """
        ``value`` as a file a tool writes: inside the root, and not in a run's own folder.

        Raises:
            OptionError: As `path`.
            InputError: As `path`, or the folder holds a run store (its ledger, plan
                state and patches are the run's).
        """
        resolved = self.path(value, name=name)
        if (resolved.parent / STORE_FILE).exists():
            raise InputError(
                f"{name} {value!r} is in the folder of a run ({resolved.parent}): its files "
                "are the run's; write elsewhere"
            )
        return resolved
