"""What `mesh run` and `mesh resume` show while they run: the live view, lines, or nothing."""

from __future__ import annotations

import io
import json
import os
import re
import runpy
import select
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import mesh
import mesh.commands
from mesh.cli._live_state import (
    FAILURES_KEPT,
    Failure,
    InFlight,
    LiveState,
    RunPhase,
    Stage,
    clock_text,
    event_line,
)
from mesh.cli._live_view import LineView, LiveView, QuietView, open_view, render

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
HOSTILE = "[bold]boom[/bold] [link=https://evil.example]x[/link] \x1b[31mred\x1b[0m\r\x07\n"


class Ledger:
    """Hand-made ledger events, numbered and timed as a run's."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(
        self, name: str, at: float, unit: str | None = None, **fields: object
    ) -> mesh.LedgerEvent:
        self.seq += 1
        lane = fields.pop("lane", None)
        attempt = fields.pop("attempt", None)
        return mesh.LedgerEvent(
            event=name,
            run_id="r1",
            seq=self.seq,
            at=at,
            unit_id=unit,
            lane=mesh.Lane(lane) if isinstance(lane, str) else None,
            attempt=attempt if isinstance(attempt, int) else None,
            data=fields,
        )


def folded(*events: mesh.LedgerEvent, objectives: dict[str, str] | None = None) -> LiveState:
    state = LiveState.of_plan(objectives or {})
    for event in events:
        state = state.apply(event)
    return state


def shown_text(state: LiveState, now: float, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(render(state, now))
    return console.export_text()


@pytest.fixture(name="ledger")
def _ledger() -> Ledger:
    return Ledger()


class TestLiveState:
    def test_a_run_from_start_to_finish(self, ledger: Ledger) -> None:
        """Counts, the concurrency, and each in-flight unit's stage follow the events."""
        state = folded(
            ledger("run_started", 10.0, units=4),
            ledger("budget_read", 10.0, target=3, mode="full_fanout"),
            ledger("unit_started", 10.5, "u1", attempt=1),
            ledger("unit_started", 10.6, "u2", attempt=1),
            objectives={"u1": "Add greet", "u3": "Add shout"},
        )
        assert (
            state.phase,
            state.total,
            state.limit,
            state.target,
            state.budget_mode,
        ) == (RunPhase.RUNNING, 4, 3, 3, "full_fanout")
        assert [u.stage for u in state.in_flight.values()] == [Stage.GENERATION, Stage.GENERATION]
        assert state.waiting == 2
        assert state.objective("u1") == "Add greet"
        assert state.objective("u2") == ""
        stages = []
        for event in (
            ledger("adapter_call", 11.0, "u1", lane="coder", decision="accept"),
            ledger("unit_transition", 11.1, "u1", attempt=1, to_state="candidates_ready"),
            ledger("lease_denied", 11.2, "u1", reason="held"),
            ledger(
                "adapter_call", 11.3, "u1", lane="locksmith", action="acquire", decision="grant"
            ),
            ledger("adapter_call", 11.4, "u1", lane="applier", decision="apply_failed"),
            ledger("adapter_call", 11.5, "u1", lane="applier", decision="applied"),
            ledger("adapter_call", 11.6, "u1", lane="prover", decision="pass"),
            ledger("unit_transition", 11.7, "u1", to_state="proofs_ready"),
            ledger("adapter_call", 11.8, "u1", lane="fixer", decision="accepted"),
            ledger("unit_transition", 11.9, "u1", to_state="fixer_accept"),
            ledger("delivery_started", 12.0, "u1"),
            ledger("call_started", 12.1, "u1", lane="integrator"),
            ledger("adapter_call", 12.2, "u1", lane="locksmith", action="renew", decision="grant"),
        ):
            state = state.apply(event)
            stages.append(state.in_flight["u1"].stage)
        assert stages == [
            Stage.GENERATION,
            Stage.APPLY,
            Stage.LEASE,
            Stage.APPLY,
            Stage.APPLY,
            Stage.PROOF,
            Stage.PROOF,
            Stage.ADJUDICATION,
            Stage.ADJUDICATION,
            Stage.DELIVERY,
            Stage.DELIVERY,
            Stage.DELIVERY,
            Stage.DELIVERY,
        ]
        for event in (
            ledger("unit_transition", 12.3, "u2", attempt=1, trigger="rework", to_state="planned"),
            ledger("rework", 12.3, "u2", attempt=2, reason="proof_missing"),
            ledger("unit_transition", 12.4, "u2", to_state="failed"),
            ledger("concurrency_changed", 12.5, limit=1, target=3, reason="backpressure"),
        ):
            state = state.apply(event)
        assert (
            InFlight(label="u2", attempt=2, stage=Stage.GENERATION, started_at=10.6)
            == (state.in_flight["u2"])
        )
        assert (state.limit, state.target, state.concurrency_reason) == (1, 3, "backpressure")
        state = state.apply(ledger("unit_finished", 13.0, "u1", attempt=1, state="completed"))
        state = state.apply(
            ledger(
                "unit_finished",
                13.1,
                "u2",
                attempt=2,
                state="failed",
                failure_code="proof_missing",
                evidence="1 failed",
            )
        )
        state = state.apply(ledger("unit_blocked", 13.2, "u3", blocked_by="u2"))
        assert (
            state.completed,
            state.failed,
            state.blocked,
            state.in_flight,
            state.waiting,
        ) == (1, 1, 1, {}, 1)
        assert (
            Failure(label="u2", state="failed", code="proof_missing", evidence="1 failed"),
            Failure(
                label="u3",
                state="blocked",
                code="requires_clarification",
                evidence="dependency u2 did not complete",
            ),
        ) == state.failures
        state = state.apply(ledger("run_finished", 14.0, completed=1, failed=1, blocked=2))
        assert (state.phase, state.blocked, state.waiting) == (RunPhase.FINISHED, 2, 0)

    def test_events_it_does_not_show_leave_the_state_as_it_was(self, ledger: Ledger) -> None:
        """Unknown events, and events of units not in flight, leave the state as it was."""
        state = folded(ledger("run_started", 1.0, units=2))
        for event in (
            ledger("candidates_recorded", 2.0, "u1", candidates=[]),
            ledger("adapter_call", 2.0, "u9", lane="coder"),
            ledger("lease_lost", 2.0, "u9", reason="expired"),
            ledger("adapter_call", 2.0, None),
        ):
            assert state.apply(event) is state
        assert folded(ledger("budget_read", 2.0, target="many")).target is None
        later = folded(ledger("budget_read", 1.0, target=3), ledger("budget_read", 2.0, target=5))
        assert (later.limit, later.target) == (3, 5)  # the governor moves the limit, not a read
        assert None is LiveState().waiting

    def test_a_run_with_no_counts_at_its_end_keeps_its_own(self, ledger: Ledger) -> None:
        """A run_finished without readable counts keeps the ones the state counted."""
        state = folded(
            ledger("run_resumed", 1.0, units=5, finished=3),
            ledger("unit_started", 1.0, "u4", attempt=2),
            ledger("run_finished", 2.0, completed="all"),
        )
        assert (
            state.resumed,
            state.earlier,
            len(state.in_flight),
            state.phase,
            state.waiting,
        ) == (True, 3, 0, RunPhase.FINISHED, 2)
        ended = folded(
            ledger("run_resumed", 1.0, units=5, finished=3),
            ledger("run_finished", 2.0, completed=4, failed=1, blocked=0),
        )
        assert (ended.earlier, ended.completed, ended.failed, ended.waiting) == (0, 4, 1, 0)

    def test_a_cancelled_and_a_failed_run(self, ledger: Ledger) -> None:
        """run_cancelled and run_failed end the run with why."""
        cancelled = folded(ledger("run_cancelled", 1.0, reason="SIGTERM"))
        assert (cancelled.phase, cancelled.reason) == (RunPhase.CANCELLED, "SIGTERM")
        assert folded(ledger("run_cancelled", 1.0)).reason == "cancelled"
        failed = folded(ledger("run_failed", 1.0, failure_code="invalid_output_schema", error="x"))
        assert (failed.phase, failed.reason) == (RunPhase.FAILED, "invalid_output_schema: x")
        assert folded(ledger("run_failed", 1.0)).reason == "unknown"

    def test_objectives_are_escaped_once(self, ledger: Ledger) -> None:
        """However many events change the state, an objective stays as it was escaped."""
        state = folded(
            ledger("run_started", 1.0, units=1),
            ledger("unit_started", 1.0, "u1", attempt=1),
            ledger("rework", 2.0, "u1", attempt=2),
            objectives={"u1": "a\\b\tc"},
        )
        assert state.objective("u1") == "a\\\\b\\tc"

    def test_only_the_latest_failures_are_kept(self, ledger: Ledger) -> None:
        """The state keeps the last few failures, not every one of a large run."""
        state = LiveState()
        for index in range(FAILURES_KEPT + 3):
            state = state.apply(ledger("unit_finished", 1.0, f"u{index}", state="failed"))
        assert [f"u{index}" for index in range(3, FAILURES_KEPT + 3)] == [
            failure.label for failure in state.failures
        ]
        assert {"unknown"} == {failure.code for failure in state.failures}
        assert state.failed == FAILURES_KEPT + 3

    def test_hostile_text_is_one_bounded_line(self, ledger: Ledger) -> None:
        """Markup, escapes and control characters stay text; 100 kB of evidence is cut."""
        huge = "A" * 100_000
        state = folded(
            ledger("run_started", 1.0, units=2),
            ledger("unit_started", 1.0, HOSTILE, attempt=1),
            ledger(
                "unit_finished",
                2.0,
                HOSTILE,
                state="failed",
                failure_code=HOSTILE,
                evidence=HOSTILE + huge,
            ),
            ledger("unit_blocked", 2.0, "u2", blocked_by=HOSTILE),
            objectives={HOSTILE: HOSTILE + huge},
        )
        assert state.objective(HOSTILE).startswith("[bold]boom[/bold] [link=https://evil.example]")
        texts = [state.objective(HOSTILE)]
        for failure in state.failures:
            texts += [failure.label, failure.code, failure.evidence]
        for text in texts:
            assert "\x1b" not in text
            assert "\n" not in text
            assert "\r" not in text
            assert len(text) <= 300
        assert state.failures[0].evidence.startswith("[bold]boom[/bold] [link=")
        assert state.failures[0].evidence.endswith("…")

    def test_a_snapshot_stays_as_it_was(self, ledger: Ledger) -> None:
        """Events change the state in place; a snapshot (what the live view draws) stays."""
        state = folded(
            ledger("run_started", 1.0, units=2), ledger("unit_started", 1.0, "u1", attempt=1)
        )
        seen = state.snapshot()
        assert state.apply(ledger("unit_finished", 2.0, "u1", state="completed")) is state
        assert (list(state.in_flight), state.completed) == ([], 1)
        assert (list(seen.in_flight), seen.completed) == (["u1"], 0)

    def test_the_clock(self) -> None:
        """Times read m:ss, and h:mm:ss from an hour; never negative."""
        assert [clock_text(s) for s in (-3.0, 7.9, 125.0, 3601.0)] == [
            "0:00",
            "0:07",
            "2:05",
            "1:00:01",
        ]


class TestLines:
    def test_one_line_per_event_worth_one(self, ledger: Ledger) -> None:
        """Lines say what happened, stamped with the time since the run started."""
        stream = io.StringIO()
        view = LineView(stream, {"u1": "Add [bold]greet[/bold]"})
        with view.shown():
            for event in (
                ledger("run_started", 100.0, units=3),
                ledger("budget_read", 100.0, target=4, mode="full_fanout"),
                ledger("unit_started", 100.5, "u1", attempt=1),
                ledger("adapter_call", 101.0, "u1", lane="coder", decision="accept"),
                ledger("rework", 101.5, "u1", attempt=2, reason="proof_missing"),
                ledger("concurrency_changed", 102.0, limit=2, target=4, reason="backpressure"),
                ledger("lease_lost", 103.0, "u1", reason="expired\x1b[2J"),
                ledger(
                    "unit_finished", 104.0, "u1", state="completed", delivery="integrated_commit"
                ),
                ledger("unit_started", 104.0, "u2", attempt=1),
                ledger("unit_finished", 105.0, "u2", state="completed"),
                ledger(
                    "unit_finished",
                    106.0,
                    "u3",
                    state="failed",
                    failure_code="proof_missing",
                    evidence="1 failed\nin 0.1s",
                ),
                ledger("unit_blocked", 106.0, "u4", blocked_by="u3"),
                ledger("run_finished", 125.0, completed=2, failed=1, blocked=1),
                ledger("run_cancelled", 126.0, reason="SIGINT"),
                ledger("run_failed", 3700.0, failure_code="invalid_output_schema"),
            ):
                view.on_event(event)
        assert stream.getvalue().splitlines() == [
            "[0:00] run r1 started: 3 units",
            "[0:00] concurrency: limit 4, target 4 (budget)",
            "[0:00] u1 (Add [bold]greet[/bold]) started, attempt 1",
            "[0:01] u1 (Add [bold]greet[/bold]) reworked: attempt 2, after proof_missing",
            "[0:02] concurrency: limit 2, target 4 (backpressure)",
            "[0:03] u1 (Add [bold]greet[/bold]) lost its lease: expired\\x1b[2J",
            "[0:04] u1 (Add [bold]greet[/bold]) completed (integrated_commit)",
            "[0:04] u2 started, attempt 1",
            "[0:05] u2 completed",
            "[0:06] u3 failed: proof_missing: 1 failed\\nin 0.1s",
            "[0:06] u4 blocked: requires_clarification: dependency u3 did not complete",
            "[0:25] run finished: 2 completed, 1 failed, 1 blocked",
            "[0:26] run cancelled: SIGINT",
            "[1:00:00] run failed: invalid_output_schema",
        ]

    def test_a_reader_gone_stops_the_lines_not_the_run(self, ledger: Ledger) -> None:
        """A closed pipe ends the lines; the events are still followed."""

        class Gone(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError(text)

        view = LineView(Gone(), {})
        view.on_event(ledger("run_started", 1.0, units=2))
        view.on_event(ledger("unit_started", 1.0, "u1", attempt=1))
        assert (view.stream, list(view.state.in_flight)) == (None, ["u1"])

    def test_a_resume_and_events_before_any_start(self, ledger: Ledger) -> None:
        """A resume says how many units had ended; an event before the start is at 0:00."""
        state = LiveState()
        early = ledger("unit_blocked", 5.0, None)
        assert (
            event_line(state.apply(early), early)
        ) == "[0:00] ? blocked: requires_clarification: dependency ? did not complete"
        resumed = ledger("run_resumed", 7.0, units=4, finished=1)
        assert (
            event_line(state.apply(resumed), resumed)
            == "[0:00] run r1 resumed: 4 units, 1 ended before"
        )
        quiet = ledger("adapter_call", 8.0, "u1", lane="coder")
        assert None is event_line(state.apply(quiet), quiet)


class TestLiveView:
    def test_the_picture_of_a_run(self, ledger: Ledger) -> None:
        """Units in flight with objective, stage, attempt and time; counts; latest failures."""
        state = folded(
            ledger("run_started", 10.0, units=6),
            ledger("budget_read", 10.0, target=3, mode="full_fanout"),
            ledger("concurrency_changed", 10.0, limit=2, target=3, reason="backpressure"),
            ledger("unit_started", 10.0, "u1", attempt=1),
            ledger("unit_started", 12.0, "u2", attempt=1),
            ledger("adapter_call", 13.0, "u2", lane="applier", decision="applied"),
            ledger("unit_finished", 14.0, "u3", state="failed", failure_code="proof_missing"),
            objectives={"u1": "Add greet(name)"},
        )
        text = shown_text(state, 75.0)
        lines = text.splitlines()
        assert lines[0].rstrip() == "mesh run r1  running  1:05"
        assert lines[1].rstrip() == "concurrency: limit 2 of target 3 (full_fanout, backpressure)"
        assert lines[2].startswith(
            "0 completed · 1 failed · 0 blocked · 2 in flight · 3 ready or waiting  (of 6)"
        )
        assert re.search(r"u1 +Add greet\(name\) +generation +1 +1:05", text)
        assert re.search(r"u2 +proof +1 +1:03", text)
        assert re.search(r"latest failures", text)
        assert re.search(r"u3 +failed +proof_missing", text)

    def test_before_any_event_and_after_the_end(self, ledger: Ledger) -> None:
        """Nothing known yet shows question marks; a cancelled resume says why."""
        assert shown_text(LiveState(), 0.0).splitlines()[0].rstrip() == "mesh run   starting  0:00"
        assert "concurrency: limit ? of target ?" in shown_text(LiveState(), 0.0)
        state = folded(
            ledger("run_resumed", 1.0, units=3, finished=2),
            ledger("run_cancelled", 2.0, reason="Ctrl-C"),
        )
        text = shown_text(state, 2.0)
        assert text.startswith("mesh resume r1  cancelled: Ctrl-C  0:01")
        assert "2 ended before the resume" in text

    def test_hostile_text_is_shown_inert_and_bounded(self, ledger: Ledger) -> None:
        """Markup is shown as written, escapes as escapes, and nothing runs past the width."""
        state = folded(
            ledger("run_started", 1.0, units=2),
            ledger("unit_started", 1.0, HOSTILE, attempt=1),
            ledger(
                "unit_finished",
                2.0,
                "u2",
                state="failed",
                failure_code=HOSTILE,
                evidence=HOSTILE + "A" * 100_000,
            ),
            objectives={HOSTILE: HOSTILE * 1000},
        )
        console = Console(file=io.StringIO(), width=100, force_terminal=True, record=True)
        console.print(render(state, 2.0))
        screen = console.file.getvalue()  # type: ignore[attr-defined]
        assert "\x1b[31mred" not in screen
        assert "\x07" not in screen
        assert "\x1b]8;" not in screen  # no hyperlink was made
        plain = console.export_text()
        assert "[bold]boom[/bold]" in plain
        assert "\\x1b" in plain
        assert all(len(line) <= 100 for line in plain.splitlines())
        assert len(plain) < 5000

    def test_many_units_in_flight_are_counted(self, ledger: Ledger) -> None:
        """Past a screenful of units in flight, the rest are counted, not listed."""
        state = folded(
            ledger("run_started", 1.0, units=40),
            *(ledger("unit_started", 1.0, f"u{index:02d}", attempt=1) for index in range(20)),
        )
        text = shown_text(state, 1.0)
        assert "u14" in text
        assert "u15" not in text
        assert "… and 5 more" in text

    def test_the_view_follows_the_events_and_its_clock(self, ledger: Ledger) -> None:
        """The clock moves on between events; the live display draws on the console."""
        ticks = iter([0.0, 0.0, 1.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
        console = Console(file=io.StringIO(), width=80, force_terminal=True)
        view = LiveView(console, {}, monotonic=lambda: next(ticks))
        assert "0:00" in str(view.renderable().renderables[0])
        view.on_event(ledger("run_started", 50.0, units=1))
        header = str(view.renderable().renderables[0])
        assert header.endswith("0:03")
        with view.shown():
            view.on_event(ledger("unit_started", 50.0, "u1", attempt=1))
        assert "u1" in console.file.getvalue()  # type: ignore[attr-defined]

    def test_a_run_refused_before_its_first_event_leaves_no_picture(self, ledger: Ledger) -> None:
        """The view is erased when no event came (the error alone is printed); else it stays."""

        def refused(view: LiveView, events: list[mesh.LedgerEvent]) -> None:
            with view.shown():
                for event in events:
                    view.on_event(event)
                raise mesh.InputError("refused")

        screens = []
        for events in ([], [ledger("run_started", 1.0, units=1)]):
            console = Console(file=io.StringIO(), width=60, force_terminal=True)
            view = LiveView(console, {})
            with pytest.raises(mesh.InputError):
                refused(view, events)
            screens.append(console.file.getvalue())  # type: ignore[attr-defined]
        erased, kept = screens
        assert erased.endswith("\x1b[2K")  # rich erases the lines it drew
        assert kept.endswith("(of 1)\n\x1b[?25h")  # the last picture, then the cursor back


class TestAbandoned:
    def test_the_live_view_gives_the_cursor_back(self) -> None:
        """Ending at once, the live view shows the cursor again; the others have nothing to do."""
        import pty  # noqa: PLC0415 - POSIX only

        master, slave = pty.openpty()
        with os.fdopen(slave, "w") as terminal:
            LiveView(Console(file=terminal, force_terminal=True), {}).abandon()
            assert os.read(master, 100) == b"\x1b[?25h\r\n"  # the terminal adds the carriage return
        os.close(master)
        LiveView(Console(file=io.StringIO(), force_terminal=True), {}).abandon()  # no descriptor
        LiveView(Console(file=io.StringIO(), force_terminal=False), {}).abandon()
        LineView(io.StringIO(), {}).abandon()
        QuietView().abandon()


class TestChoosingTheView:
    def test_each_mode(self) -> None:
        """auto: live on a terminal, lines elsewhere; the others as asked; nothing else."""
        terminal = Console(file=io.StringIO(), force_terminal=True)
        pipe = Console(file=io.StringIO(), force_terminal=False)
        assert isinstance(open_view("auto", terminal, {}), LiveView)
        assert isinstance(open_view("auto", pipe, {}), LineView)
        assert isinstance(open_view("lines", terminal, {}), LineView)
        assert isinstance(open_view("live", pipe, {}), LiveView)
        assert isinstance(open_view("quiet", terminal, {}), QuietView)
        assert isinstance(open_view("auto", None, {}), LineView)  # pytest's stderr is no terminal
        forced = open_view("live", None, {})
        assert isinstance(forced, LiveView)
        assert forced.console.is_terminal
        with pytest.raises(mesh.OptionError, match="--view expects one of auto, live, lines"):
            open_view("fancy", None, {})

    def test_the_flag_offers_every_view(self) -> None:
        """--view's choices (listed where the command line starts without rich) are the views."""
        from mesh.cli import _cli, _live_view  # noqa: PLC0415 - the command line's own

        assert _cli.VIEW_NAMES == _live_view.VIEWS

    def test_quiet_shows_nothing(self, ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
        """--view quiet writes nothing anywhere."""
        view = open_view("quiet", None, {})
        with view.shown():
            view.on_event(ledger("run_started", 1.0, units=1))
        assert capsys.readouterr() == ("", "")


# A coder that writes src/UNIT.txt once the file named by its argument exists.
WAITING_CODER = (
    "import os, pathlib, sys, time\n"
    "while not pathlib.Path(sys.argv[1]).exists():\n"
    "    time.sleep(0.02)\n"
    "unit = os.environ['MESH_UNIT_ID']\n"
    "pathlib.Path('src', unit + '.txt').write_text(unit + '\\n')\n"
)


def write_plan(folder: Path, *steps: dict[str, object]) -> Path:
    plan = folder / "plan.json"
    plan.write_text(json.dumps({"plan": list(steps)}))
    return plan


def step(index: int, text: str, **more: object) -> dict[str, object]:
    unit = f"unit-{index:03d}"
    return {
        "step": text,
        "status": "pending",
        "write_scope": [f"src/{unit}.txt"],
        "proof_command": f"test -s src/{unit}.txt",
        **more,
    }


# Makes its standard input its controlling terminal, then runs `python ARGUMENTS...`.
BECOME_ITS_SESSION = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class OnATerminal:
    """`python -m mesh ...` with stdout and stderr on a pseudo-terminal, read as it writes."""

    def __init__(self, arguments: list[str], cwd: Path, *, session: bool = False) -> None:
        import fcntl  # noqa: PLC0415 - POSIX only, like the pty
        import pty  # noqa: PLC0415
        import struct  # noqa: PLC0415
        import termios  # noqa: PLC0415

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
        }
        environment |= {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        command = [sys.executable, "-m", "mesh", *arguments]
        if session:  # the terminal is the session's, as a shell's is: closing it hangs it up
            command[1:1] = ["-c", BECOME_ITS_SESSION]
        self.process = subprocess.Popen(
            command,
            stdin=slave if session else subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=environment,
            start_new_session=session,
        )
        os.close(slave)
        self.screen = b""

    def read(self) -> bool:
        """Read what is there (waiting a moment for it); False once the child closed its end."""
        ready, _, _ = select.select([self.master], [], [], 0.1)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            chunk = b""
        self.screen += chunk
        return bool(chunk)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.screen.decode("utf-8", "replace")).replace("\r", "")

    def until(self, pattern: str) -> None:
        while re.search(pattern, self.text) is None:
            assert self.read(), self.text

    def finish(self) -> int:
        while self.read():
            pass
        os.close(self.master)
        return self.process.wait(timeout=60)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
class TestOnAPseudoTerminal:
    def run_waiting(
        self, repo: Path, tmp_path: Path, *, session: bool = False
    ) -> tuple[OnATerminal, Path]:
        (tmp_path / "coder.py").write_text(WAITING_CODER)
        marker = tmp_path / "go"
        plan = write_plan(tmp_path, step(1, "Write [bold]one[/bold]"), step(2, "Write two"))
        coder = f"{sys.executable} {tmp_path / 'coder.py'} {marker}"
        terminal = OnATerminal(
            [
                "run", str(plan), "--repo", str(repo), "--coder-command", coder,
                "--out", str(tmp_path / "out"), "--max-threads", "2",
            ],
            tmp_path,
            session=session,
        )  # fmt: skip
        return terminal, marker

    def test_the_live_view_shows_units_in_flight(self, repo: Path, tmp_path: Path) -> None:
        """While coders work the view lists each unit, its objective and stage, and the limit."""
        terminal, marker = self.run_waiting(repo, tmp_path)
        terminal.until(r"unit-002 +Write two +generation")
        shown = terminal.text
        assert re.search(r"unit-001 +Write \[bold\]one\[/bold\] +generation +1 +\d+:\d\d", shown)
        assert "concurrency: limit 2 of target 2" in shown
        assert "0 completed · 0 failed · 0 blocked · 2 in flight · 0 ready or waiting" in shown
        marker.touch()
        assert terminal.finish() == 0, terminal.text
        final = terminal.text
        assert re.search(r"mesh run [0-9a-f]{12}  finished", final)
        assert "2 completed · 0 failed · 0 blocked · 0 in flight" in final
        assert final.index("finished") < final.index("Orchestration Ledger")

    def test_ctrl_c_leaves_the_resume_command_under_the_view(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """After Ctrl-C the view stops first: the command that continues the run is last."""
        terminal, _ = self.run_waiting(repo, tmp_path)
        terminal.until(r"unit-002 +Write two +generation")
        terminal.process.send_signal(signal.SIGINT)
        assert terminal.finish() == 130
        lines = [line for line in terminal.text.splitlines() if line.strip()]
        assert [
            "error: Interrupted: stopped by the user",
            f"hint: continue the run with: mesh resume {shlex.quote(str(tmp_path / 'out'))}",
        ] == lines[-2:]

    def stopped_by(self, repo: Path, tmp_path: Path, number: signal.Signals) -> OnATerminal:
        terminal, _ = self.run_waiting(repo, tmp_path)
        terminal.until(r"unit-002 +Write two +generation")
        terminal.process.send_signal(number)
        return terminal

    @pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
    def test_sigterm_and_sighup_stop_it_as_ctrl_c_does(
        self, repo: Path, tmp_path: Path, number: signal.Signals
    ) -> None:
        """The run is cancelled naming the signal, the cursor is back, the resume command last."""
        terminal = self.stopped_by(repo, tmp_path, number)
        assert terminal.finish() == 128 + number
        reason = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP)"}[number]
        assert re.search(rf"mesh run [0-9a-f]{{12}}  cancelled: {re.escape(reason)}", terminal.text)
        assert terminal.screen.rindex(b"\x1b[?25h") > terminal.screen.rindex(b"\x1b[?25l")
        lines = [line for line in terminal.text.splitlines() if line.strip()]
        assert [
            f"error: Interrupted: stopped by {number.name}",
            f"hint: continue the run with: mesh resume {shlex.quote(str(tmp_path / 'out'))}",
        ] == lines[-2:]
        with mesh.RunStore.open(tmp_path / "out" / "run.sqlite") as store:
            last = list(store.events())[-1]
        assert (last.event, last.data) == ("run_cancelled", {"reason": reason})
        if number == signal.SIGTERM:
            (tmp_path / "go").touch()
            resumed = subprocess.run(
                [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out"), "--view", "quiet"],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert resumed.returncode == 0, resumed.stderr
            assert "2 delivered" in resumed.stdout

    def test_a_closed_terminal_hangs_it_up(self, repo: Path, tmp_path: Path) -> None:
        """Closing the terminal (SIGHUP, and nothing left to draw on) stops the run cleanly."""
        terminal, _ = self.run_waiting(repo, tmp_path, session=True)
        terminal.until(r"unit-002 +Write two +generation")
        os.close(terminal.master)
        assert terminal.process.wait(timeout=60) == 128 + signal.SIGHUP
        with mesh.RunStore.open(tmp_path / "out" / "run.sqlite") as store:
            last = list(store.events())[-1]
        assert (last.event, last.data) == ("run_cancelled", {"reason": "hung up (SIGHUP)"})

    def test_a_second_sigterm_ends_it_at_once(self, repo: Path, tmp_path: Path) -> None:
        """A second SIGTERM while the run stops ends the process; the cursor is back still."""
        terminal = self.stopped_by(repo, tmp_path, signal.SIGTERM)
        terminal.process.send_signal(signal.SIGTERM)
        # Ended by the signal, unless the first had already done with everything.
        assert terminal.finish() in {-signal.SIGTERM, 128 + signal.SIGTERM}
        assert terminal.screen.rindex(b"\x1b[?25h") > terminal.screen.rindex(b"\x1b[?25l")
        (tmp_path / "go").touch()
        resumed = subprocess.run(
            [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out"), "--view", "quiet"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr


class TestThroughAPipe:
    def test_lines_for_logs(self, repo: Path, tmp_path: Path) -> None:
        """Not on a terminal: one plain line per event worth one, and the report on stdout."""
        plan = write_plan(
            tmp_path,
            step(1, "first", id="1"),
            step(2, "second", id="2", proof_command="exit 1"),
            step(3, "third", id="3", deps=["2"]),
        )
        coder = "echo written > src/$MESH_UNIT_ID.txt"
        command = [sys.executable, "-m", "mesh", "run", str(plan), "--repo", str(repo)]
        process = subprocess.run(
            [*command, "--coder-command", coder, "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert process.returncode == 1, process.stderr
        assert process.stdout.startswith("Orchestration Ledger\n")
        assert "\x1b" not in process.stderr
        *lines, last = process.stderr.splitlines()
        assert last == "error: RunIncomplete: 2 of 3 units did not complete"
        assert all(re.match(r"\[\d+:\d\d\] ", line) for line in lines), lines
        said = [line.split("] ", 1)[1] for line in lines]
        assert re.match(r"run [0-9a-f]{12} started: 3 units", said[0])
        assert said[1] == "concurrency: limit 12, target 12 (budget)"
        for expected in (
            "unit-001 (first) started, attempt 1",
            "unit-001 (first) completed (integrated_patch)",
            "unit-002 (second) reworked: attempt 2, after proof_missing",
            (
                "unit-003 (third) blocked: requires_clarification: "
                "dependency unit-002 did not complete"
            ),
        ):
            assert expected in said
        assert any(line.startswith("unit-002 (second) failed: proof_missing: ") for line in said)
        assert said[-1] == "run finished: 1 completed, 1 failed, 1 blocked"

        resumed = subprocess.run(
            [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out"), "--view", "lines"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert re.search(r"\] run [0-9a-f]{12} resumed: 3 units, 3 ended before\n", resumed.stderr)
        assert "] run finished: 1 completed, 1 failed, 1 blocked\n" in resumed.stderr

        quiet = subprocess.run(
            [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out"), "--view", "quiet"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert quiet.stderr == "error: RunIncomplete: 2 of 3 units did not complete\n"


def test_objectives_of_a_bad_plan_are_none() -> None:
    """A plan the run will refuse names no objectives: the run says what is wrong with it."""
    from mesh.cli._run_command import _objectives  # noqa: PLC0415 - the command line's own

    assert _objectives({"plan": [{"step": "a\x1bb"}]}) == {}
    assert _objectives({"plan": [{"step": "Write it"}]}) == {"unit-001": "Write it"}


def test_the_docs_picture_is_drawn(ledger: Ledger) -> None:
    """docs/images/live_view.py still draws the view (the PNG itself needs Chromium)."""
    script = runpy.run_path(str(Path(__file__).parents[1] / "docs" / "images" / "live_view.py"))
    events = [
        ledger("run_started", 1.0, units=2),
        ledger("unit_started", 1.0, "unit-001", attempt=1),
        ledger("unit_started", 1.0, "unit-002", attempt=1),
        ledger("delivery_started", 2.0, "unit-002"),
        ledger("unit_finished", 3.0, "unit-002", state="completed"),
    ]
    state, at = script["busiest"](events, {"unit-001": "Add greet"})
    assert (set(state.in_flight), at) == ({"unit-001", "unit-002"}, 2.0)
    drawn = script["svg"](state, at)
    assert drawn.startswith("<svg")
    assert "Add&#160;greet" in drawn
