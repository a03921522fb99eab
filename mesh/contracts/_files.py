"""
File access for the commands: strict reads and atomic writes.

An output is written to a temporary file beside it and renamed into place, so a
failure never leaves a half-written file and never touches an existing one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ._errors import FileAccessError, InputError, PathCollisionError

__all__ = ["atomic_write_text", "ensure_distinct", "force_remove", "read_text", "walk_tree"]

StrPath = str | os.PathLike[str]


def read_text(path: StrPath, *, what: str) -> str:
    """
    Read a UTF-8 text file (a leading byte-order mark is dropped).

    Raises:
        FileAccessError: When the file is missing, a directory or unreadable.
        InputError: When it is not UTF-8 text.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileAccessError(f"{what} not found: {os.fspath(path)}") from None
    except IsADirectoryError:
        raise FileAccessError(f"{what} is a directory: {os.fspath(path)}") from None
    except OSError as exc:
        raise FileAccessError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {os.fspath(path)} is not UTF-8 text (byte {exc.start})") from None


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.samefile(second)
    except OSError:
        return first.resolve() == second.resolve()


def ensure_distinct(
    output: StrPath, *inputs: StrPath, output_flag: str, input_flags: tuple[str, ...]
) -> None:
    """
    Refuse an output path that resolves to one of the inputs (or is a directory).

    Raises:
        PathCollisionError: Naming both flags.
    """
    out = Path(output)
    for given, flag in zip(inputs, input_flags, strict=True):
        if _same_file(out, Path(given)):
            raise PathCollisionError(
                f"{output_flag} {os.fspath(output)} is the same file as {flag} {os.fspath(given)}"
            )
    if out.is_dir():
        raise PathCollisionError(f"{output_flag} {os.fspath(output)} is a directory")


def _umask(status: Path = Path("/proc/self/status")) -> int:
    try:  # Linux says it without changing it
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere reading the umask means setting it; set it straight back.
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_text(path: StrPath, text: str, *, what: str, create_parents: bool = False) -> None:
    """
    Write ``text`` to ``path`` all at once: either the new content or nothing.

    Raises:
        FileAccessError: When the folder is missing (and not created) or unwritable,
            or ``path`` is something other than a regular file (a device, a FIFO, a
            folder, or a link to one), which renaming the output over would replace.
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except OSError:
        mode = None  # nothing there (or a dangling link): the output takes its place
    if mode is not None and not stat.S_ISREG(mode):
        raise FileAccessError(f"cannot write {what} {os.fspath(path)}: not a regular file")
    try:
        if create_parents:
            target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise FileAccessError(f"cannot write {what} {os.fspath(path)}: {exc.strerror}") from None
    try:
        # mkstemp makes the file private (0600); outputs get the usual umask instead.
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).replace(target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise FileAccessError(f"cannot write {what} {os.fspath(path)}: {exc.strerror}") from None


def force_remove(path: Path) -> None:
    """
    Remove a file or folder, even one an agent made hard to remove.

    Read-only and unreadable folders are opened up first. The walk keeps no
    recursion and no long paths (each folder is entered by name from its
    parent's descriptor), so a tree deeper than Python's recursion limit or
    longer than ``PATH_MAX`` goes too; what cannot be removed is left, silently.
    It is called once whoever made the tree has stopped.
    """
    # Looked at first rather than unlinked "missing_ok": a FileNotFoundError raised and
    # caught in a worker thread stops coverage measuring the awaiting task.
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    with contextlib.suppress(OSError):
        path.chmod(stat.S_IRWXU)
    try:
        top = os.open(path, _FOLDER_FLAGS)
    except OSError:
        return
    _empty_folder(top)
    with contextlib.suppress(OSError):
        path.rmdir()


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _empty_folder(descriptor: int) -> None:
    """Remove what the folder open as ``descriptor`` holds, depth first; closes it."""
    names: list[str] = []  # the folders entered, by name, below the top
    stuck: set[tuple[int, int]] = set()  # folders that could not be entered or removed
    current = descriptor
    while True:
        child = _next_folder(current, stuck)
        if child is not None:
            with contextlib.suppress(OSError):
                os.chmod(child, stat.S_IRWXU, dir_fd=current)
            try:
                entered = os.open(child, _FOLDER_FLAGS, dir_fd=current)
            except OSError:
                stuck.add(_identity(child, current))
                continue
            os.close(current)
            current = entered
            names.append(child)
            continue
        if not names:
            os.close(current)
            return
        parent = os.open("..", _FOLDER_FLAGS, dir_fd=current)
        os.close(current)
        current = parent
        name = names.pop()
        try:
            os.rmdir(name, dir_fd=current)
        except OSError:
            stuck.add(_identity(name, current))


def _identity(name: str, folder: int) -> tuple[int, int]:
    found = os.stat(name, dir_fd=folder, follow_symlinks=False)
    return found.st_dev, found.st_ino


def _next_folder(folder: int, stuck: set[tuple[int, int]]) -> str | None:
    """Unlink the files in ``folder``; the name of a subfolder left to empty, if any."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                found = entry.stat(follow_symlinks=False)
                if (found.st_dev, found.st_ino) not in stuck:
                    return entry.name
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=folder)
    return None


def walk_tree(
    top: Path, *, skip_unreadable: bool = False
) -> Iterator[tuple[Path, list[str], list[str]]]:
    """
    ``os.walk(top)`` (top-down, symlinks not followed) without recursion.

    Python 3.11's ``os.walk`` recurses once per level, so a tree deeper than the
    recursion limit (which an agent can make) would stop it with RecursionError.
    As with ``os.walk``, the caller may prune the folder names it is given. A
    folder that cannot be listed raises its OSError, or is passed over with
    ``skip_unreadable``.
    """
    pending = [top]
    while pending:
        folder = pending.pop()
        folders: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    (folders if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
        except OSError:
            if not skip_unreadable:
                raise
            continue
        yield folder, folders, files
        pending.extend(folder / name for name in reversed(folders))
