"""``mesh run --watch-plan``: saved changes of the plan file change the run."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

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
