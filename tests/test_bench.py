"""The benchmark suite stays runnable: every section on tiny sizes (no timing is asserted)."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest

import mesh
from bench import __main__ as bench_main
from bench import cli, engine, instructions, ray_executor, scheduling, workspaces
from mesh.testing import capture_ledger


def test_engine_section() -> None:
    """No-op adapters drive every role on both backends; the memory probe sees units in flight."""
    cpu_ms, _ = engine.mesh_cpu_per_unit(20)
    assert cpu_ms > 0
    cpu_ms, _ = engine.mesh_cpu_per_unit(20, backend="trio", built=False, runs=2)
    assert cpu_ms > 0
    per_unit, in_flight = engine.memory_per_unit_in_flight(20)
    assert (per_unit > 0, in_flight) == (True, 20)


def test_each_measurement_runs_in_a_fresh_interpreter() -> None:
    """The table's figures come from processes of their own, handed back as JSON."""
    cpu_ms, wall = engine._isolated(engine.mesh_cpu_per_unit, 10, backend="trio")
    assert (cpu_ms > 0, wall > 0) == (True, True)


def test_langgraph_peer() -> None:
    """The LangGraph peer runs the same DAG where LangGraph is installed, else says n/a."""
    per_node = engine.langgraph_cpu_per_node(20)
    assert per_node is None or per_node > 0


def test_scheduling_section() -> None:
    """Streaming never beats the lower bound, and the table has a mean row."""
    rng = random.Random(1)
    units, durations = scheduling.random_dag(rng, 15)
    bound = scheduling.lower_bound(units, durations)
    assert scheduling.mesh_makespan(units, durations) >= bound
    assert scheduling.wave_makespan(units, durations) >= bound
    assert "mean" in scheduling.run(1, 8)


@pytest.mark.timeout(120)
def test_workspaces_and_cli_sections() -> None:
    """Both sections measure and print their tables."""
    assert "pool / bare" in workspaces.run((10,), 1)
    assert "run_csv 30 rows" in cli.run(10)


@pytest.mark.timeout(120)
def test_ray_section() -> None:
    """Local and Ray runs of the same plan side by side (or a note when Ray is missing)."""
    report = ray_executor.run(2, work=(0.0,))
    assert "ray / local" in report or "ray is not installed" in report


def test_unknown_section(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown section name is a usage error."""
    assert bench_main.main(["nope"]) == 2
    assert "unknown section: nope" in capsys.readouterr().err


def test_prefect_peer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Prefect peer is optional: n/a without Prefect, marginal CPU per task with it."""
    monkeypatch.setenv("MESH_BENCH_PREFECT_PYTHON", sys.executable)  # no Prefect in the tests
    assert engine.prefect_cpu_per_task(20) is None
    # A stand-in interpreter reporting 0.1 s of CPU per task, after 2 s of start-up.
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$(( 2000 + $2 * 100 ))e-3"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("MESH_BENCH_PREFECT_PYTHON", str(fake))
    assert engine.prefect_cpu_per_task(20) == pytest.approx(100.0)


def test_the_breakdown_counts_what_a_unit_of_the_bench_does() -> None:
    """Answers, events, transitions and fan-outs per unit are what a run of the DAG records."""
    with capture_ledger() as events:
        result = mesh.run(engine.dag(1), roles=engine.noop_roles(), call_timeout=None)
    assert result.metrics.completed == 1
    kinds = [event.event for event in events if event.unit_id == "u0"]
    assert kinds.count("adapter_call") == engine.ANSWERS
    assert kinds.count("unit_transition") == engine.TRANSITIONS
    assert len(kinds) == engine.EVENTS
    lanes = {event.lane for event in events if event.event == "adapter_call"}
    fanned = {mesh.Lane.CODER, mesh.Lane.PROVER, mesh.Lane.FIXER}  # several calls at once each
    assert len(fanned & lanes) == engine.FAN_OUTS


def test_engine_breakdown() -> None:
    """The fixed-cost table measures each step and sums them."""
    text = engine.breakdown()
    assert "parse and check an answer" in text
    assert "sum" in text


def test_instructions_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted under valgrind where it is installed; without it, the table says n/a."""
    if shutil.which("valgrind") is not None:
        millions = instructions.per_unit(3, "asyncio")
        assert millions is not None
        assert millions > 0
    monkeypatch.setattr(shutil, "which", lambda _: None)
    assert "n/a (valgrind not installed)" in instructions.run(3)
