"""
An optional bubblewrap sandbox for the commands mesh runs.

With a `Sandbox`, `run_command` starts a command inside ``bwrap``: the whole system is
visible read-only (``/tmp`` included), and only the command's working folder, the
paths named writable and a private temporary folder (its ``TMPDIR``, removed after
the command) can be written. The command gets its own pid namespace (nothing it
starts outlives it) and, on request, no network but loopback. The environment is
kept, with ``TMPDIR`` pointing at the private folder.

Nothing in mesh sandboxes a command unless asked; `require_sandbox` says, in one line,
what to install or allow when bubblewrap cannot run here.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Self

import attrs

from ._enums import FailureCode
from ._errors import MeshError

__all__ = ["Sandbox", "SandboxUnavailable", "find_sandbox", "pid_namespace", "require_sandbox"]

_MISSING: Final = (
    "bubblewrap (bwrap) is not on PATH: install it (Debian/Ubuntu: apt-get install bubblewrap)"
)
# The smallest sandbox that needs what every real one needs: mount and pid namespaces.
_PROBE: Final = (
    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
    "--unshare-pid", "--die-with-parent", "true",
)  # fmt: skip
_PROBE_TIMEOUT: Final = 30.0


class SandboxUnavailable(MeshError, RuntimeError):
    """
    A command was to run in a bubblewrap sandbox, and bubblewrap cannot run here.

    The message says what to install, or bubblewrap's own complaint and what to allow.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


@attrs.frozen(kw_only=True)
class Sandbox:
    """
    How to sandbox a command with bubblewrap (``bwrap``).

    Pass one to `run_command` as ``sandbox=``. The command sees the whole system
    read-only; it may write only in its working folder, in the ``writable`` paths
    and in a private temporary folder (``TMPDIR``), and runs in its own pid namespace.

    .. versionadded:: 0.1.0
    """

    network: bool = True
    """Whether the command may use the network; False leaves it only a loopback interface."""
    writable: tuple[str, ...] = ()
    """Paths, besides the working folder, the command may write (relative ones from there)."""

    @classmethod
    def detect(cls, *, network: bool = True, writable: tuple[str, ...] = ()) -> Self | None:
        """A sandbox if bubblewrap works here, else None (`require_sandbox` says why)."""
        return cls(network=network, writable=writable) if find_sandbox() else None

    def prefix(
        self,
        cwd: str | os.PathLike[str],
        *,
        writable: Sequence[str | os.PathLike[str]] = (),
        bwrap: str = "bwrap",
        tmp: str | os.PathLike[str] | None = None,
    ) -> list[str]:
        """
        The ``bwrap`` argv that runs the command appended to it in this sandbox.

        Args:
            cwd: The command's working folder: writable, and where it starts.
            writable: More paths to make writable, besides ``self.writable``.
            bwrap: The bubblewrap executable (`require_sandbox` finds it).
            tmp: A private, empty folder for temporary files: writable, and the
                command's ``TMPDIR`` (`run_command` makes one per command).
        """
        here = Path(cwd).absolute()
        binds = [str(here / path) for path in (".", *self.writable, *writable)]
        if tmp is not None:
            binds.append(os.fspath(tmp))
        # The host's /tmp stays visible (read-only, like everything else): projects,
        # virtual environments and scripts live there too.
        argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path in binds:
            argv += ["--bind", path, path]
        argv += ["--chdir", binds[0]]
        if tmp is not None:
            argv += ["--setenv", "TMPDIR", os.fspath(tmp)]
        # Run as root, bubblewrap would keep every capability: enough to remount "/"
        # writable or to join the host's network again. None are kept.
        argv += ["--cap-drop", "ALL", "--unshare-pid", "--die-with-parent", "--new-session"]
        if not self.network:
            argv.append("--unshare-net")
        argv.append("--")
        return argv


def pid_namespace(bwrap: str) -> list[str]:
    """
    The ``bwrap`` argv that runs a command in its own pid namespace, and nothing else.

    The file system, network and devices stay as they are. From inside, no
    process outside the namespace can be named, so a command cannot kill the
    reaper that watches it; and when the namespace's first process ends, the
    kernel ends every process in it.
    """
    return [
        bwrap, "--dev-bind", "/", "/", "--proc", "/proc",
        "--unshare-pid", "--die-with-parent", "--",
    ]  # fmt: skip


def find_sandbox() -> str | None:
    """
    The path of a ``bwrap`` on PATH that can make a sandbox here, else None.

    .. versionadded:: 0.1.0
    """
    path = shutil.which("bwrap")
    return path if path is not None and not _problem(path) else None


def require_sandbox() -> str:
    """
    The path of a ``bwrap`` on PATH that can make a sandbox here.

    Raises:
        SandboxUnavailable: bubblewrap is missing, or cannot create namespaces here.

    .. versionadded:: 0.1.0
    """
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(_MISSING)
    problem = _problem(path)
    if problem:
        raise SandboxUnavailable(problem)
    return path


@functools.cache
def _problem(bwrap: str) -> str:
    """Why ``bwrap`` cannot make a sandbox here, or "" when it can; tried once per process."""
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argv for the bwrap found on PATH
            [bwrap, *_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        detail = str(exc)
    else:
        if done.returncode == 0:
            return ""
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {done.returncode}"
    return (
        f"bubblewrap ({bwrap}) cannot create a sandbox here: {detail}; unprivileged user"
        " namespaces must be allowed (sysctl kernel.unprivileged_userns_clone=1, and on"
        " Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)"
    )
