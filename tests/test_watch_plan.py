"""``mesh run --watch-plan``: saved changes of the plan file change the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from test_live_view import WAITING_CODER, step, write_plan

import mesh
from mesh.cli._watch_plan import watching_plan
from mesh.testing import FakeAdapter, answer, fake_roles

pytestmark = pytest.mark.anyio


def steps(*ids: str) -> dict[str, object]:
    """Steps in a chain: each after the one before."""
    return {
        "plan": [
            {
                "id": step_id,
                "step": f"do {step_id}",
                "write_scope": [f"src/{step_id}"],
                "deps": [ids[index - 1]] if index else [],
            }
            for index, step_id in enumerate(ids)
        ]
    }


async def test_each_saved_change_is_applied_and_told(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(steps("a", "b")))
    said: list[str] = []
    told, heard = anyio.create_memory_object_stream[str](10)
    gate = anyio.Event()

    def say(line: str) -> None:
        said.append(line)
        told.send_nowait(line)

    async def coder(request: mesh.AuthorRequest) -> object:
        if request.unit.id == "unit-001":
            await gate.wait()  # the run waits here while the plan file changes
        return answer(request)

    async def change_the_file() -> None:
        await anyio.sleep(0.2)
        plan.write_text("{ not json")
        await heard.receive()
        plan.write_text(json.dumps(steps("a", "c")))
        await heard.receive()
        plan.write_text(json.dumps({"plan": [{"step": "no id"}]}))
        await heard.receive()
        gate.set()

    async with told, heard, anyio.create_task_group() as group:
        group.start_soon(change_the_file)
        result = await watching_plan(
            lambda: mesh.run_async(
                json.loads(plan.read_text()), roles=fake_roles(coder=FakeAdapter(coder))
            ),
            plan,
            say,
        )
    assert said[0].startswith("plan change refused: ")
    assert "JSON" in said[0]
    assert said[1] == "plan changed: added unit-003; cancelled unit-002"
    assert said[2].startswith("plan change refused: ")
    assert "needs an id" in said[2]
    assert [o.unit_id for o in result.outcomes] == ["unit-001", "unit-003"]


async def test_a_file_that_is_gone_for_a_while_is_looked_at_again(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(steps("a")))
    said: list[str] = []

    async def slow(request: object) -> object:
        await anyio.sleep(1.2)
        return answer(request)

    async def replace() -> None:
        plan.unlink()
        await anyio.sleep(0.6)
        plan.write_text(json.dumps(steps("a", "b")))

    async with anyio.create_task_group() as group:
        group.start_soon(replace)
        result = await watching_plan(
            lambda: mesh.run_async(steps("a"), roles=fake_roles(coder=FakeAdapter(slow))),
            plan,
            said.append,
        )
    assert said == ["plan changed: added unit-002"]
    assert len(result.outcomes) == 2


def test_mesh_run_watch_plan_on_a_repository(repo: Path, tmp_path: Path) -> None:
    """The command line: a step saved into the plan file while the run works is run too."""
    (tmp_path / "coder.py").write_text(WAITING_CODER)
    marker = tmp_path / "go"
    first = [step(1, "Write one", id="one")]
    plan = write_plan(tmp_path, *first)
    coder = f"{sys.executable} {tmp_path / 'coder.py'} {marker}"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mesh", "run", str(plan), "--repo", str(repo),
            "--coder-command", coder, "--out", str(tmp_path / "out"),
            "--watch-plan", "--view", "lines",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []

    def until(text: str) -> None:
        while not any(text in line for line in lines):
            line = process.stderr.readline()  # type: ignore[union-attr]
            assert line, lines
            lines.append(line)

    until("unit-001 (Write one) started")
    write_plan(tmp_path, *first, step(2, "Write two", id="two", deps=["one"]))
    until("plan changed: added unit-002")
    plan.write_text("[")
    until("plan change refused: ")
    marker.touch()
    out, rest = process.communicate(timeout=120)
    lines += rest.splitlines()
    assert process.returncode == 0, "".join(lines)
    assert any("unit-002 (Write two) completed" in line for line in lines), "".join(lines)
    assert out.startswith("Orchestration Ledger")


def test_the_views_learn_the_changed_plan() -> None:
    """New units' objectives and the new total; a cancelled unit leaves the units in flight."""
    from mesh.cli._live_state import LiveState, event_line  # noqa: PLC0415 - the view's own

    state = LiveState.of_plan({"unit-001": "Write one"})

    def event(name: str, unit_id: str | None = None, **data: object) -> mesh.LedgerEvent:
        return mesh.LedgerEvent(event=name, run_id="r", seq=1, at=0.0, unit_id=unit_id, data=data)

    state.apply(event("run_started", units=1))
    state.apply(event("unit_started", "unit-001"))
    changed = {
        "units": [
            {"id": "unit-001", "objective": "Write one"},
            "not a unit",
            {"id": 3},
            {"id": "unit-002", "objective": "Write \x1b[31mtwo"},
        ]
    }
    state.apply(event("plan_changed", units=changed))
    assert state.total == 4
    assert state.objective("unit-002") == "Write \\x1b[31mtwo"
    cancelled = event("unit_cancelled", "unit-001", reason="left out of the plan")
    state.apply(cancelled)
    assert not state.in_flight
    assert event_line(state, cancelled) == (
        "[0:00] unit-001 (Write one) cancelled: left out of the plan"
    )
    state.apply(event("plan_changed", units="damaged"))
    assert state.total == 4


def test_a_save_with_the_old_time_and_size_is_still_seen(tmp_path: Path) -> None:
    """`cp -p`, or a prepared file renamed over the plan: same size and time, another file."""
    from mesh.cli._watch_plan import _signature  # noqa: PLC0415 - what the watcher compares

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(steps("a", "b")))
    before = _signature(plan)
    prepared = tmp_path / "prepared.json"
    prepared.write_text(json.dumps(steps("a", "c")))
    stat = plan.stat()
    os.utime(prepared, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    prepared.replace(plan)
    assert plan.stat().st_size == stat.st_size
    assert _signature(plan) != before
    assert _signature(tmp_path / "gone.json") is None


def test_the_live_view_says_a_line_above_its_picture() -> None:
    from rich.console import Console  # noqa: PLC0415 - the view's own library

    from mesh.cli._live_view import LiveView  # noqa: PLC0415 - the view itself

    console = Console(record=True, width=80, force_terminal=False)
    LiveView(console, {}).say("plan changed: [bold]added[/bold] unit-002")
    assert console.export_text() == "plan changed: [bold]added[/bold] unit-002\n"
