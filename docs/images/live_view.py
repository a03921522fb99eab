"""
Draw ``live-view.png``: the live view of `mesh run`, mid-run, for the docs.

The state is a real one: the demo's plan runs (with two steps more, which fail),
and its ledger is folded up to the moment with the most stages under way. rich
draws that state (as an SVG) and headless Chromium turns it into a PNG::

    python docs/images/live_view.py [OUT.png]   # needs chromium (or chromium-browser)

The test suite draws the SVG on every run, so this script keeps working.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
from rich.console import Console

import mesh.commands
from mesh.cli._demo import create_demo_repository, demo_coder_command
from mesh.cli._live_state import LiveState
from mesh.cli._live_view import render
from mesh.cli._run_command import _objectives
from mesh.contracts._enums import Lane
from mesh.contracts._events import LedgerEvent

WIDTH = 100
HERE = Path(__file__).parent


# Two steps more than the demo: the demo's coder has no script for them, so the
# first fails and the second, which needs it, is blocked: failures to show.
_EXTRA_STEPS = (
    {
        "id": "bye",
        "step": "Add bye(name)",
        "status": "pending",
        "write_scope": ["greet/bye.py"],
        "proof_command": "test -f greet/bye.py",
    },
    {
        "id": "wave",
        "step": "Add wave(name) built on bye",
        "status": "pending",
        "deps": ["bye"],
        "write_scope": ["greet/wave.py"],
        "proof_command": "test -f greet/wave.py",
    },
)


def demo_events(folder: Path) -> tuple[list[LedgerEvent], dict[str, str]]:
    """The ledger events of a real run of the demo (and two failing steps), and its objectives."""
    repo, plan, script = anyio.run(create_demo_repository, folder)
    document = json.loads(plan.read_text())
    document["plan"] += _EXTRA_STEPS
    plan.write_text(json.dumps(document))
    mesh.commands.run(
        plan=plan,
        repo=repo,
        coder_command=demo_coder_command(script),
        delivery="commit_first",
        out=folder / "out",
        view="quiet",
    )
    events = []
    for line in (folder / "out" / "ledger.jsonl").read_text().splitlines():
        fields = json.loads(line)
        if "lane" in fields:
            fields["lane"] = Lane(fields["lane"])
        events.append(LedgerEvent(**fields))
    return events, _objectives(document)


def busiest(events: list[LedgerEvent], objectives: dict[str, str]) -> tuple[LiveState, float]:
    """
    The state, along the run, with failures and the most stages in flight.

    With the time of the event that made it (the latest such state).
    """
    state = LiveState.of_plan(objectives)
    best = state.snapshot()
    at = 0.0

    def rank(state: LiveState) -> tuple[bool, int, int]:
        stages = len({unit.stage for unit in state.in_flight.values()})
        return bool(stages and state.failures), stages, len(state.failures)

    for event in events:
        state = state.apply(event)
        if rank(state) >= rank(best):
            best, at = state.snapshot(), event.at
    return best, at


def svg(state: LiveState, at: float) -> str:
    """The live view of ``state``, a little after ``at``, as rich draws it."""
    console = Console(
        record=True, width=WIDTH, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(render(state, at + 0.8))
    return console.export_svg(title="mesh run")


def main(arguments: list[str]) -> int:
    out = Path(arguments[0]) if arguments else HERE / "live-view.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("needs chromium on PATH", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        events, objectives = demo_events(Path(folder) / "demo")
        page = Path(folder) / "live-view.svg"
        page.write_text(svg(*busiest(events, objectives)))
        size = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', page.read_text())
        if size is None:
            print("rich's SVG has no viewBox: its size is unknown", file=sys.stderr)
            return 1
        width, height = (round(float(n)) for n in size.groups())
        subprocess.run(  # noqa: S603 - the browser found on PATH, our arguments
            [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             f"--screenshot={out.resolve()}", f"--window-size={width},{height}", page.as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
