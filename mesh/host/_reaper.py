"""
Run one command so that nothing it starts can outlive it: a standalone script.

mesh starts every untrusted command (an agent CLI, a unit's proof) as::

    python -I -S _reaper.py --grace SECONDS --parent PID -- ARGV...

so this file imports nothing from mesh and only small standard modules: it starts
once per command.

On Linux the reaper makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``):
every process of the command's subtree that loses its parent (after ``setsid``, a
double fork, a job-controlled shell's background job) is reparented to the reaper
instead of init, so it stays findable through the parent links in ``/proc`` however
it left the process group. The reaper then:

- starts ARGV as its only child, in the reaper's own process group;
- when that child exits, SIGKILLs every remaining descendant, sweeping again until
  none is left (a forking process may add some while it kills) and reaping them all,
  and exits with the child's exit status, or 128+N if it died of signal N;
- on SIGTERM, SIGINT or SIGHUP, sends SIGTERM to the whole subtree, gives it up to
  ``--grace`` seconds to end, then sweeps with SIGKILL as above; a second such signal
  cuts the grace short (mesh sends two when its caller is cancelled);
- asks the kernel for SIGUSR1 when its parent dies (``PR_SET_PDEATHSIG``) and, if the
  ``--parent`` process is then gone, stops the subtree the same way. That signal also
  comes when only the parent *thread* ends (trio starts processes from worker
  threads, which retire when idle), which is why it is not SIGTERM and why the reaper
  looks at who its parent is before acting on it.

Elsewhere (macOS and the BSDs have neither subreapers nor ``/proc``), or where the
kernel refuses to make it a subreaper, the reaper execs ARGV in its own place: the
caller's process-group kill is then all the containment there is, and a child that
calls ``setsid`` escapes it.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time

_USAGE = "usage: _reaper.py [--grace SECONDS] [--parent PID] -- ARGV..."
_GRACE = 2.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_LIFELINE = signal.SIGUSR1
# Python ignores these, and an ignored signal stays ignored across exec.
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)
# While a stopped subtree winds down, how often to look whether it is gone.
_TERM_POLL = 0.05
# Between SIGKILL sweeps: short at first (they die at once), longer if one lingers.
_FIRST_PAUSE = 0.002
_LAST_PAUSE = 0.1


def main(args: list[str]) -> int:
    """Run the command after ``--`` in ``args`` under the reaper; its exit status."""
    try:
        grace, parent, argv = _parse(args)
    except ValueError:
        sys.stderr.write(f"{_USAGE}\n")
        return 2
    return _Reaper(grace=grace, parent=parent).run(argv)


def _parse(args: list[str]) -> tuple[float, int, list[str]]:
    """``--grace``, ``--parent`` and the command; ValueError when they do not parse."""
    split = args.index("--")
    options = dict(zip(args[:split:2], args[1:split:2], strict=True))
    grace = float(options.pop("--grace", _GRACE))
    parent = int(options.pop("--parent", os.getppid()))
    argv = args[split + 1 :]
    if options or not argv:
        raise ValueError(_USAGE)
    return grace, parent, argv


def _become_subreaper() -> bool:
    """Adopt the subtree's orphans and hear of the parent's death; False where that cannot be."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:  # pragma: no cover - no prctl(2): not Linux
        return False
    return bool(
        os.path.exists("/proc/self/stat")  # noqa: PTH110 - pathlib is slow to import
        and prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        and prctl(_PR_SET_PDEATHSIG, _LIFELINE, 0, 0, 0) == 0
    )


def _exec(argv: list[str]) -> None:  # pragma: no cover - see _become_subreaper
    for number in _RESTORED:
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - running the given argv is the point
    except OSError as error:
        sys.exit(_cannot_run(argv[0], error))


def _cannot_run(program: str, error: OSError) -> int:
    """Say why ``program`` did not start; the exit status a shell would give."""
    sys.stderr.write(f"mesh: cannot run {program!r}: {error.strerror}\n")
    return 127 if isinstance(error, FileNotFoundError) else 126


def _exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N after signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _noted(number: int, frame: object) -> None:
    """Stand in as the handler: the wakeup pipe carries the news."""


def _parent(path: str) -> int:
    """The parent pid in a ``/proc/PID/stat`` file; -1 when the process is already gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            stat = os.read(fd, 1024)
        finally:
            os.close(fd)
        # The command name, in parentheses, may itself hold spaces and parentheses.
        return int(stat[stat.rindex(b")") + 2 :].split(None, 2)[1])
    except (OSError, ValueError, IndexError):
        return -1


def _descendants(root: int, proc: str = "/proc") -> list[int]:
    """Every process below ``root``, zombies included, found through the parent links."""
    children: dict[int, list[int]] = {}
    for name in os.listdir(proc):  # noqa: PTH208 - pathlib is slow to import
        if name.isdigit():
            children.setdefault(_parent(f"{proc}/{name}/stat"), []).append(int(name))
    found: list[int] = []
    below = [root]
    while below:
        kids = children.get(below.pop(), [])
        found += kids
        below += kids
    return found


def _kill(pid: int, number: int) -> bool:
    """Send signal ``number`` to ``pid``; whether it was there (and ours) to get it."""
    try:
        os.kill(pid, number)
    except OSError:
        return False
    return True


class _Reaper:
    """The command, what became of it, and how the reaper learns of signals."""

    def __init__(self, *, grace: float, parent: int) -> None:
        self.grace = grace
        self.parent = parent
        self.pid = os.getpid()
        self.child = 0
        self.running = True
        # Until the command is reaped, its status is "killed by SIGKILL".
        self.status = int(signal.SIGKILL)
        self.wakeup = -1

    def run(self, argv: list[str]) -> int:
        """Start the command, wait for it or for a stop, leave nothing behind; its status."""
        # Listening first: the parent-death signal must not find its default action (exit).
        self._listen()
        if not _become_subreaper():  # pragma: no cover - not Linux, or a kernel before 3.4
            _exec(argv)
        if os.getppid() != self.parent:
            # The parent died before the lifeline was in place: nobody wants the command now.
            sys.stderr.write("mesh: the process that asked for this command is gone\n")
            return 1
        try:
            self.child = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=_RESTORED)
        except OSError as error:
            return _cannot_run(argv[0], error)
        while self.running:
            woken = self._wait(None)
            self._reap()
            stops = self._stops(woken)
            if stops:
                self._terminate(hurry=stops > 1)
                break
        self._sweep()
        return _exit_code(self.status)

    def _listen(self) -> None:
        # Each signal writes its number into a pipe that `select` waits on: no signal can
        # slip in between looking and sleeping, and the handlers do nothing themselves.
        self.wakeup, writer = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(writer, False)
        signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
        for number in (signal.SIGCHLD, _LIFELINE, *_STOP):
            signal.signal(number, _noted)

    def _wait(self, timeout: float | None) -> bytes:
        """Sleep until signals come or ``timeout`` passes; the signal numbers that came."""
        ready, _, _ = select.select([self.wakeup], [], [], timeout)
        return os.read(self.wakeup, 256) if ready else b""

    def _stops(self, woken: bytes) -> int:
        """How many requests to stop ``woken`` holds; the lifeline counts if the parent is gone."""
        stops = sum(woken.count(number) for number in _STOP)
        if _LIFELINE in woken and os.getppid() != self.parent:
            stops += 1
        return stops

    def _reap(self) -> bool:
        """Collect every child that has ended, noting the command's own; whether any is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.child:
                self.running, self.status = False, status

    def _signal_all(self, number: int) -> bool:
        """Send signal ``number`` to every descendant; whether any was there to get it."""
        reached = [pid for pid in _descendants(self.pid) if _kill(pid, number)]
        return bool(reached)

    def _terminate(self, *, hurry: bool) -> None:
        """SIGTERM the subtree and give it the grace period to end, unless told to hurry."""
        deadline = time.monotonic() + self.grace
        self._signal_all(signal.SIGTERM)
        # A stopped process (a suspended job) acts on SIGTERM only once it runs again.
        self._signal_all(signal.SIGCONT)
        while not hurry:
            left = deadline - time.monotonic()
            # No child left means no descendant left: each one's line of parents ends in a
            # child of the reaper, the command itself or an orphan the reaper adopted.
            if not self._reap() or left <= 0:
                return
            hurry = self._stops(self._wait(min(left, _TERM_POLL))) > 0

    def _sweep(self) -> None:
        """SIGKILL every descendant, again until none is left, and reap them all."""
        pause = _FIRST_PAUSE
        # Without children the reaper has no descendants, and no reason to scan /proc.
        while self._reap() and self._signal_all(signal.SIGKILL):
            self._wait(pause)
            pause = min(2 * pause, _LAST_PAUSE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
