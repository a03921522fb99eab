"""Engine overhead: CPU per unit with no-op adapters, memory per unit in flight, Dask as a peer."""

from __future__ import annotations

import gc
import json
import operator
import os
import subprocess
import sys
import time
import timeit
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, TypeVar

import anyio

import mesh
from mesh.contracts._events import Ledger
from mesh.engine import _answers as answers
from mesh.engine._fanout import concurrently_on_running_loop
from mesh.engine._lifecycle import Trigger, UnitProgress, UnitState
from mesh.engine._machine import UnitMachine
from mesh.engine._roles import check_result
from mesh.engine._summary import MetricsCollector
from mesh.testing import answer

from ._report import cpu_and_wall, table

_ANSWER_BASE: dict[str, object] = {
    "triplet_index": 1,
    "proof_status": "not_applicable",
    "write_scope": ["src"],
    "risk_tier": "low",
    "base_sha": "HEAD",
    "proof_attempts": 0,
    "proof_evidence": {"command": "", "key_line": "", "exit_code": 0},
}
_PATCH = "--- a/src/x\n+++ b/src/x\n"
_REDUCE_RECORD = mesh.ReduceRecord(
    target_abstraction="x",
    replacement_primitive="y",
    complexity_delta="0",
    invariants_preserved=("z",),
    rollback_plan="revert",
)
_REDUCE = {
    "target_abstraction": "x",
    "replacement_primitive": "y",
    "complexity_delta": "0",
    "invariants_preserved": ["z"],
    "rollback_plan": "revert",
}


def _answer(request: Any, lane: str, decision: str, **extra: object) -> dict[str, object]:  # noqa: ANN401
    return {
        **_ANSWER_BASE,
        "id": request.unit.id,
        "candidate_id": request.candidate_id,
        "risk_tier": request.unit.risk_tier.value,
        "lane": lane,
        "decision": decision,
        **extra,
    }


T = TypeVar("T")
PREFECT_TASKS = 1000
TARGET_MS_PER_UNIT = 0.5
# What one unit of the bench's DAG does (medium risk, three candidates).
ANSWERS = 14
"""3 candidates, a lease and its release, 3 applies, 3 proofs, 2 verdicts, 1 delivery."""
EVENTS = 23
"""14 adapter calls, 4 transitions, started, candidates, proofs, delivery started, finished."""
TRANSITIONS = 4
FAN_OUTS = 3
"""Authors, proofs, fixers: each a task per call (asyncio) or a nursery (trio)."""


def _or_na(value: float | None) -> float | str:
    return "n/a" if value is None else value


def noop_roles(  # noqa: C901 - one adapter per role, each in both answer styles
    wait: Callable[[mesh.AuthorRequest], Awaitable[object]] | None = None,
    *,
    built: bool = True,
) -> mesh.Roles:
    """
    Adapters that do nothing and answer validly: at once, or coders after ``wait(request)``.

    ``built``: answer with records from mesh's answer builders (checked as they are
    built, so the engine trusts them); else with JSON-like dicts, parsed by the engine.
    """

    async def coder(request: mesh.AuthorRequest) -> object:
        if wait is not None:
            await wait(request)
        reducing = request.lane is mesh.Lane.REDUCER
        if built:
            return answers.candidate(
                request, patch=_PATCH, reduce_record=_REDUCE_RECORD if reducing else None
            )
        extra: dict[str, object] = {"reduce_record": _REDUCE} if reducing else {}
        return _answer(
            request,
            request.lane.value,
            "accept",
            patch=_PATCH,
            triplet_index=request.triplet_index,
            **extra,
        )

    async def applier(request: mesh.ApplyRequest) -> object:
        if built:
            return answers.applied(request, worktree_path="/nowhere")
        return _answer(request, "applier", "applied", worktree_path="/nowhere")

    async def prover(request: mesh.ProofRequest) -> object:
        if built:
            return answers.proof(request, passed=True)
        return _answer(
            request, "prover", "pass", proof_status="pass", proof_attempts=request.proof_attempt
        )

    async def fixer(request: mesh.AdjudicationRequest) -> object:
        selected = request.proven[0][0].candidate_id
        if built:
            return answers.verdict(request, select=selected)
        return _answer(
            request,
            "fixer",
            "accepted",
            proof_status="pass",
            selected_candidate=selected,
            quorum_target=request.quorum_target,
            quorum_observed=request.quorum_target,
        )

    async def integrator(request: mesh.DeliveryRequest) -> object:
        if built:
            return answers.delivered(request, artifact_ref="memory://patch")
        return _answer(
            request,
            "integrator",
            "integrated_patch",
            proof_status="pass",
            artifact_ref="memory://patch",
        )

    return mesh.Roles(
        coder=coder,
        reducer=coder,
        applier=applier,
        prover=prover,
        fixer=fixer,
        integrator=integrator,
    )


def dag(count: int, *, chain: int = 10) -> list[mesh.Unit]:
    """Independent chains of ``chain`` units each: wide and deep enough to exercise streaming."""
    return [
        mesh.Unit(
            id=f"u{i}",
            objective="noop",
            write_scope=(f"src/{i}",),
            deps=(f"u{i - 1}",) if i % chain else (),
            risk_tier=mesh.RiskTier.MED,
        )
        for i in range(count)
    ]


def mesh_cpu_per_unit(
    count: int,
    *,
    built: bool = True,
    backend: Literal["asyncio", "trio"] = "asyncio",
    runs: int = 1,
) -> tuple[float, float]:
    """
    CPU ms per unit for the whole pipeline (3 candidates, every role), and wall seconds.

    ``built``: the adapters answer with records from mesh's answer builders; else
    with dicts the engine parses. A small run first loads what a run loads on
    first use (start-up is measured in the cli section); of ``runs`` runs, the
    one with the least CPU counts, as timeit counts: noise on a shared machine
    only ever adds time.
    """
    roles = noop_roles(built=built)
    mesh.run(dag(20), roles=roles, max_threads=64, call_timeout=None, backend=backend)
    best: tuple[float, float] | None = None
    for _ in range(runs):
        units = dag(count)
        gc.collect()
        result, cpu, wall = cpu_and_wall(
            lambda: mesh.run(
                units,  # noqa: B023 - called at once, in this iteration
                roles=roles,
                max_threads=64,
                call_timeout=None,
                backend=backend,
            )
        )
        assert result.metrics.completed == count, result.metrics
        if best is None or cpu < best[0]:
            best = (cpu, wall)
    assert best is not None
    return best[0] * 1000 / count, best[1]


def dask_cpu_per_unit(count: int) -> float | None:
    """CPU ms per unit for the same DAG of no-op tasks on Dask's local (threaded) scheduler."""
    try:
        from dask.threaded import get  # noqa: PLC0415 - a peer installed for the bench only
    except ImportError:
        return None

    def noop(*_: object) -> None:
        return None

    graph: dict[str, Any] = {unit.id: (noop, *unit.deps) for unit in dag(count)}
    gc.collect()
    _, cpu, _ = cpu_and_wall(lambda: get(graph, list(graph)))
    return cpu * 1000 / count


def langgraph_cpu_per_node(count: int) -> float | None:
    """
    CPU ms per node for the same DAG as a LangGraph graph of no-op nodes (None: no LangGraph).

    One node per unit, an edge from each dependency (chain heads start from
    START), one integer in the state added to by every node; compiling the
    graph is not counted, running it is.
    """
    try:
        from langgraph.graph import START, StateGraph  # noqa: PLC0415 - a peer for the bench only
    except ImportError:
        return None

    class Count(TypedDict):
        done: Annotated[int, operator.add]

    def noop(_: Count) -> dict[str, int]:
        return {"done": 1}

    graph: Any = StateGraph(Count)
    units = dag(count)
    for unit in units:
        graph.add_node(unit.id, noop)
        graph.add_edge(unit.deps[0] if unit.deps else START, unit.id)
    app = graph.compile()
    gc.collect()
    final, cpu, _ = cpu_and_wall(lambda: app.invoke({"done": 0}, {"recursion_limit": count + 10}))
    assert final["done"] == count, final
    return cpu * 1000 / count


def prefect_cpu_per_task(count: int, *, baseline: int = 10) -> float | None:
    """
    Marginal CPU ms per task for the same DAG as a Prefect flow (None: no Prefect).

    Prefect starts a temporary API server for a flow run; the run with
    ``baseline`` tasks is subtracted so that the start-up is not counted.
    """
    python = os.environ.get("MESH_BENCH_PREFECT_PYTHON", sys.executable)
    script = str(Path(__file__).with_name("_prefect_peer.py"))

    def cpu_seconds(tasks: int) -> float | None:
        done = subprocess.run(
            [python, script, str(tasks)], capture_output=True, text=True, check=False
        )
        lines = done.stdout.split()
        return float(lines[-1]) if done.returncode == 0 and lines else None

    small, large = cpu_seconds(baseline), cpu_seconds(count)
    if small is None or large is None:
        return None
    return max(large - small, 0.0) * 1000 / (count - baseline)


def _isolated(measure: Callable[..., T], *args: object, **options: object) -> T:
    """
    ``measure(*args, **options)`` in a fresh interpreter, its JSON result.

    Each library is measured in a process of its own: the modules another one
    loaded would otherwise be gone through by every full garbage collection,
    and the figure would depend on the order of the measurements.
    """
    script = (
        "import json, sys\n"
        "from bench import engine\n"
        "args, options = json.loads(sys.argv[2]), json.loads(sys.argv[3])\n"
        "print(json.dumps(getattr(engine, sys.argv[1])(*args, **options)))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            measure.__name__,
            json.dumps(args),
            json.dumps(options),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    value = json.loads(done.stdout.splitlines()[-1])
    return tuple(value) if isinstance(value, list) else value  # type: ignore[return-value]


def _microseconds(action: Callable[[], object], number: int = 20000) -> float:
    return timeit.timeit(action, number=number) / number * 1e6


def breakdown() -> str:
    """What one unit's fixed steps cost: each measured alone, times how often a unit does it."""
    unit = mesh.Unit(id="u1", objective="noop", write_scope=("src/1",))
    request = mesh.AuthorRequest(
        unit=unit, lane=mesh.Lane.CODER, candidate_id="u1-coder-1", triplet_index=1, attempt=1
    )
    document = answer(request)
    ledger = Ledger(run_id="r1", sinks=[MetricsCollector()], now=time.monotonic)
    machine = UnitMachine()
    progress = UnitProgress(unit=unit)

    def transition() -> None:
        progress.state = UnitState.PLANNED.value
        progress.failure_code, progress.evidence = mesh.FailureCode.PROOF_MISSING, "x"
        machine.fire(progress, Trigger.FAIL)

    async def nothing(_: int = 0) -> None:
        pass

    async def task_groups(count: int) -> None:
        for _ in range(count):
            async with anyio.create_task_group() as group:
                group.start_soon(nothing)
                group.start_soon(nothing)
                await nothing()

    async def fan_outs(count: int) -> None:
        fan_out = concurrently_on_running_loop()
        for _ in range(count):
            await fan_out(nothing, 3)

    def per_fan_out(fan: Callable[[int], Awaitable[None]]) -> Callable[[], float]:
        return lambda: _microseconds(lambda: anyio.run(fan, 1000), number=20) / 1000

    steps: list[tuple[str, int, Callable[[], float]]] = [
        ("parse and check an answer", ANSWERS, _timed(lambda: mesh.parse_worker_result(document))),
        (
            "build one with a builder, taken",
            ANSWERS,
            _timed(
                lambda: check_result(
                    answers.candidate(request, patch=_PATCH),
                    unit=unit,
                    candidate_id="u1-coder-1",
                    lane=mesh.Lane.CODER,
                )
            ),
        ),
        (
            "ledger event",
            EVENTS,
            _timed(lambda: ledger.emit("adapter_call", unit_id="u1", outcome="ok")),
        ),
        ("lifecycle transition", TRANSITIONS, _timed(transition)),
        ("fan-out of 3 (anyio task group)", FAN_OUTS, per_fan_out(task_groups)),
        ("fan-out of 3 (mesh's)", FAN_OUTS, per_fan_out(fan_outs)),
    ]
    rows: list[list[object]] = []
    costs: dict[str, float] = {}
    for name, per_unit, measure in steps:
        cost = measure()
        costs[name] = cost * per_unit / 1000
        rows.append([name, cost, per_unit, costs[name]])
    common = sum(costs.values()) - costs["parse and check an answer"]
    common -= costs["build one with a builder, taken"] + costs["fan-out of 3 (anyio task group)"]
    common -= costs["fan-out of 3 (mesh's)"]
    rows.append(
        [
            "sum (parsing each answer, task groups)",
            "",
            "",
            common + costs["parse and check an answer"] + costs["fan-out of 3 (anyio task group)"],
        ]
    )
    rows.append(
        [
            "sum (answers built checked, mesh's fan-out)",
            "",
            "",
            common + costs["build one with a builder, taken"] + costs["fan-out of 3 (mesh's)"],
        ]
    )
    return table(
        "Engine fixed costs per unit (each step measured alone)",
        ["step", "µs each", "per unit", "ms per unit"],
        rows,
    )


def _timed(action: Callable[[], object]) -> Callable[[], float]:
    return lambda: _microseconds(action)


def memory_per_unit_in_flight(count: int = 1000) -> tuple[float, int]:
    """Bytes allocated per unit while ``count`` units are in flight (waiting on their coders)."""
    units = [mesh.Unit(id=f"m{i}", objective="noop", write_scope=(f"m/{i}",)) for i in range(count)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = mesh.run(
        units, roles=noop_roles(lambda _: anyio.sleep(0.5)), max_threads=count, call_timeout=None
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - before) / result.metrics.peak_in_flight, result.metrics.peak_in_flight


def run(sizes: tuple[int, ...]) -> str:
    """The engine section of the report."""
    rows = []
    for count in sizes:
        runs = 3 if count >= 1000 else 1
        mesh_ms, wall = _isolated(mesh_cpu_per_unit, count, runs=runs)
        trio_ms, _ = _isolated(mesh_cpu_per_unit, count, backend="trio", runs=runs)
        parsed_ms, _ = _isolated(mesh_cpu_per_unit, count, built=False, runs=runs)
        dask_ms = _isolated(dask_cpu_per_unit, count)
        langgraph_ms = _isolated(langgraph_cpu_per_node, count)
        # Prefect's per-task cost is only readable above its start-up noise, and
        # 10,000 tasks would take minutes to say nothing new: one size is measured.
        prefect_ms = prefect_cpu_per_task(count) if count == PREFECT_TASKS else None
        rows.append(
            [
                count,
                mesh_ms,
                mesh_ms / TARGET_MS_PER_UNIT,
                trio_ms,
                parsed_ms,
                wall,
                _or_na(dask_ms),
                _or_na(mesh_ms / dask_ms if dask_ms else None),
                _or_na(langgraph_ms),
                _or_na(mesh_ms / langgraph_ms if langgraph_ms else None),
                _or_na(prefect_ms),
                _or_na(mesh_ms / prefect_ms if prefect_ms else None),
            ]
        )
    per_unit, in_flight = memory_per_unit_in_flight()
    text = (
        breakdown()
        + "\n"
        + table(
            "Engine overhead: no-op adapters, 3 candidates and every role per unit",
            [
                "units",
                "mesh CPU ms/unit",
                "/ target 0.5",
                "on trio",
                "with dict answers",
                "mesh wall s",
                "dask CPU ms/task",
                "mesh / dask",
                "langgraph CPU ms/node",
                "mesh / langgraph",
                "prefect CPU ms/task",
                "mesh / prefect",
            ],
            rows,
        )
    )
    return text + f"memory: {per_unit / 1024:.1f} KiB per unit in flight ({in_flight} in flight)\n"
