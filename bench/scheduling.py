"""
Scheduling quality: mesh's makespan on a virtual clock against simulated schedulers.

Every DAG is run by mesh on asyncio and on trio (a `ManualClock` autojumping,
so only the order of events matters, not the machine), and the same DAG,
plan order and durations are handed to small simulations: a wave barrier, a
FIFO list scheduler (what mesh's streaming admission is meant to be) and a
list scheduler admitting by longest remaining path. Everything is divided by
a lower bound no schedule can beat.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Mapping, Sequence
from typing import Final

import anyio
import attrs

import mesh
from mesh.planning._priority import admission_ranks, remaining_paths
from mesh.testing import ManualClock

from ._report import table
from .engine import _answer, noop_roles

CONCURRENCY: Final = 8
BACKENDS: Final = ("asyncio", "trio")
SHARED_SCOPES: Final = 6
"""Scopes shared by a third of the units in the conflict variant of each DAG."""


def random_dag(rng: random.Random, count: int) -> tuple[list[mesh.Unit], dict[str, float]]:
    """Units with up to three earlier dependencies each, and durations from 1 to 60 (skewed)."""
    units, durations = [], {}
    for i in range(count):
        deps = tuple(f"t{j}" for j in rng.sample(range(i), min(i, rng.randint(0, 3))))
        unit_id = f"t{i}"
        units.append(
            mesh.Unit(
                id=unit_id,
                objective="work",
                write_scope=(f"w/{i}",),
                deps=deps,
                risk_tier=mesh.RiskTier.LOW,
            )
        )
        durations[unit_id] = round(rng.paretovariate(1.5) * 2, 2) if rng.random() < 0.9 else 60.0
    return units, durations


def share_scopes(rng: random.Random, units: Sequence[mesh.Unit]) -> list[mesh.Unit]:
    """The same units, a third of them writing one of `SHARED_SCOPES` shared folders."""
    return [
        attrs.evolve(unit, write_scope=(f"shared/{rng.randrange(SHARED_SCOPES)}",))
        if rng.random() < 1 / 3
        else unit
        for unit in units
    ]


def with_estimates(units: Sequence[mesh.Unit], durations: Mapping[str, float]) -> list[mesh.Unit]:
    """
    PRIORITY HOOK: the units carrying their true durations as ``estimate_seconds``.

    The scheduler admits ready units by `admission_ranks` when units carry
    estimates, so mesh's makespan on these should match the "LRP list"
    simulation (without that admission it equals the run without estimates).
    """
    return [attrs.evolve(unit, estimate_seconds=durations[unit.id]) for unit in units]


def lower_bound(units: Sequence[mesh.Unit], durations: Mapping[str, float]) -> float:
    """max(critical path, total work / concurrency, work of the busiest shared scope)."""
    critical = max(remaining_paths(units, durations).values())
    per_scope: dict[tuple[str, ...], float] = {}
    for unit in units:
        per_scope[unit.write_scope] = per_scope.get(unit.write_scope, 0.0) + durations[unit.id]
    return max(critical, sum(durations.values()) / CONCURRENCY, max(per_scope.values()))


def wave_makespan(units: Sequence[mesh.Unit], durations: Mapping[str, float]) -> float:
    """A wave-barrier scheduler: every ready unit, CONCURRENCY at a time, then wait for all."""
    done: set[str] = set()
    total = 0.0
    while len(done) < len(units):
        ready = [u for u in units if u.id not in done and all(d in done for d in u.deps)]
        while ready:
            # Units sharing a scope never run in one batch (the wave command's rule too).
            batch: dict[tuple[str, ...], mesh.Unit] = {}
            for unit in ready:
                if len(batch) < CONCURRENCY:
                    batch.setdefault(unit.write_scope, unit)
            total += max(durations[u.id] for u in batch.values())
            done.update(u.id for u in batch.values())
            ready = [u for u in ready if u.id not in done]
    return total


def _admit(
    ready: list[tuple[int, str]],
    running: list[tuple[float, str]],
    *,
    held: set[tuple[str, ...]],
    scope: Mapping[str, tuple[str, ...]],
    durations: Mapping[str, float],
    now: float,
) -> None:
    """Start ready units by rank while slots are free, passing over those whose scope is held."""
    passed: list[tuple[int, str]] = []
    while ready and len(running) < CONCURRENCY:
        entry = heapq.heappop(ready)
        if scope[entry[1]] in held:
            passed.append(entry)
            continue
        held.add(scope[entry[1]])
        heapq.heappush(running, (now + durations[entry[1]], entry[1]))
    for entry in passed:
        heapq.heappush(ready, entry)


def list_makespan(
    units: Sequence[mesh.Unit], durations: Mapping[str, float], ranks: Mapping[str, int]
) -> float:
    """
    Event-driven list scheduling: CONCURRENCY slots, ready units by rank.

    A unit whose write scope a running unit holds is passed over (it takes no
    slot) until that unit ends.
    """
    dependants: dict[str, list[str]] = {u.id: [] for u in units}
    waiting = {u.id: len(u.deps) for u in units}
    scope = {u.id: u.write_scope for u in units}
    for unit in units:
        for dep in unit.deps:
            dependants[dep].append(unit.id)
    ready = [(ranks[u.id], u.id) for u in units if not u.deps]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    held: set[tuple[str, ...]] = set()
    now = 0.0
    while ready or running:
        _admit(ready, running, held=held, scope=scope, durations=durations, now=now)
        now, finished = heapq.heappop(running)
        ended = [finished]
        while running and running[0][0] == now:
            ended.append(heapq.heappop(running)[1])
        for unit_id in ended:
            held.discard(scope[unit_id])
            for dependant in dependants[unit_id]:
                waiting[dependant] -= 1
                if waiting[dependant] == 0:
                    heapq.heappush(ready, (ranks[dependant], dependant))
    return now


def fifo_makespan(units: Sequence[mesh.Unit], durations: Mapping[str, float]) -> float:
    """List scheduling in plan order: what mesh's streaming admission does today."""
    return list_makespan(units, durations, {u.id: i for i, u in enumerate(units)})


def lrp_makespan(units: Sequence[mesh.Unit], durations: Mapping[str, float]) -> float:
    """List scheduling by longest remaining path, the true durations as estimates."""
    return list_makespan(units, durations, admission_ranks(units, durations))


def mesh_makespan(
    units: Sequence[mesh.Unit], durations: Mapping[str, float], *, backend: str = "asyncio"
) -> float:
    """The streaming scheduler on a virtual clock; each unit's proofs take its duration."""
    return _timed_mesh(units, durations, backend)[0]


def _timed_mesh(
    units: Sequence[mesh.Unit], durations: Mapping[str, float], backend: str
) -> tuple[float, float]:
    """The makespan of a mesh run and the real seconds it took."""
    clock = ManualClock()

    async def prove(request: mesh.ProofRequest) -> dict[str, object]:
        # The work happens under the unit's write-scope lease, so shared scopes wait.
        await clock.sleep(durations[request.unit.id])
        return _answer(
            request, "prover", "pass", proof_status="pass", proof_attempts=request.proof_attempt
        )

    roles = attrs.evolve(noop_roles(), prover=prove)

    async def main() -> float:
        orchestrator = mesh.Orchestrator(
            roles=roles, max_threads=CONCURRENCY, clock=clock, call_timeout=None
        )
        async with clock.autojumping(), orchestrator as run:
            result = await run.execute(list(units))
        assert result.metrics.completed == len(units), result.metrics
        return clock.current_time()

    started = time.perf_counter()
    makespan = anyio.run(main, backend=backend)
    return makespan, time.perf_counter() - started


_COLUMNS: Final = (
    "waves",
    "FIFO list",
    "LRP list",
    *(f"mesh {backend}" for backend in BACKENDS),
    *(f"mesh+est {backend}" for backend in BACKENDS),
)


def _ratios(
    units: Sequence[mesh.Unit], durations: Mapping[str, float], walls: dict[str, list[float]]
) -> tuple[float, list[float]]:
    """The lower bound, and every schedule's makespan divided by it (`_COLUMNS` order)."""
    bound = lower_bound(units, durations)
    makespans = [
        wave_makespan(units, durations),
        fifo_makespan(units, durations),
        lrp_makespan(units, durations),
    ]
    for variant in (units, with_estimates(units, durations)):
        for backend in BACKENDS:
            makespan, wall = _timed_mesh(variant, durations, backend)
            makespans.append(makespan)
            walls[backend].append(wall)
    return bound, [makespan / bound for makespan in makespans]


def _mean(rows: Sequence[Sequence[float]]) -> list[float]:
    return [sum(column) / len(column) for column in zip(*rows, strict=True)]


def run(dags: int, size: int) -> str:
    """The scheduling section of the report."""
    rng = random.Random(7)
    walls: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    rows: list[list[object]] = []
    plain: list[list[float]] = []
    shared: list[list[float]] = []
    for index in range(dags):
        units, durations = random_dag(rng, size)
        bound, ratios = _ratios(units, durations, walls)
        plain.append(ratios)
        rows.append([index + 1, bound, *ratios])
        shared.append(_ratios(share_scopes(rng, units), durations, walls)[1])
    rows.append(["mean", "", *_mean(plain)])
    rows.append(["mean, shared scopes", "", *_mean(shared)])
    quality = table(
        f"Scheduling quality: {dags} random DAGs of {size} units, concurrency {CONCURRENCY}, "
        "virtual clock (makespan / lower bound)",
        ["dag", "lower bound", *_COLUMNS],
        rows,
    )
    wall_rows: list[list[object]] = [
        [backend, len(times), sum(times), sum(times) / len(times)]
        for backend, times in walls.items()
    ]
    real = table(
        "Real time of the mesh runs above",
        ["backend", "runs", "wall s", "wall s per run"],
        wall_rows,
    )
    return f"{quality}\n{real}"
