"""Scheduling quality: makespan on a virtual clock against the lower bound and a wave barrier."""

from __future__ import annotations

import random

import anyio

import mesh
from mesh.testing import ManualClock

from ._report import table
from .engine import noop_roles

CONCURRENCY = 8


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


def lower_bound(units: list[mesh.Unit], durations: dict[str, float]) -> float:
    """max(critical path, total work / concurrency): no schedule can beat it."""
    finish: dict[str, float] = {}
    for unit in units:  # already in dependency order
        finish[unit.id] = durations[unit.id] + max((finish[d] for d in unit.deps), default=0.0)
    return max(max(finish.values()), sum(durations.values()) / CONCURRENCY)


def wave_makespan(units: list[mesh.Unit], durations: dict[str, float]) -> float:
    """A wave-barrier scheduler: run every ready unit (CONCURRENCY at a time), wait for all."""
    done: set[str] = set()
    total = 0.0
    while len(done) < len(units):
        ready = [u.id for u in units if u.id not in done and all(d in done for d in u.deps)]
        for start in range(0, len(ready), CONCURRENCY):
            total += max(durations[unit_id] for unit_id in ready[start : start + CONCURRENCY])
        done.update(ready)
    return total


def mesh_makespan(units: list[mesh.Unit], durations: dict[str, float]) -> float:
    """The streaming scheduler, with each unit's coders taking the unit's duration."""
    clock = ManualClock()
    roles = noop_roles(lambda request: clock.sleep(durations[request.unit.id]))

    async def main() -> float:
        orchestrator = mesh.Orchestrator(
            roles=roles, max_threads=CONCURRENCY, clock=clock, call_timeout=None
        )
        async with clock.autojumping(), orchestrator as run:
            result = await run.execute(units)
        assert result.metrics.completed == len(units), result.metrics
        return clock.current_time()

    return anyio.run(main)


def run(dags: int, size: int) -> str:
    """The scheduling section of the report."""
    rng = random.Random(7)
    rows: list[list[object]] = []
    ratios: list[tuple[float, float, float]] = []
    for index in range(dags):
        units, durations = random_dag(rng, size)
        bound = lower_bound(units, durations)
        streamed = mesh_makespan(units, durations)
        waves = wave_makespan(units, durations)
        ratios.append((streamed / bound, waves / bound, waves / streamed))
        rows.append([index + 1, bound, streamed, *ratios[-1]])
    rows.append(
        ["mean", "", "", *(sum(column) / len(column) for column in zip(*ratios, strict=True))]
    )
    return table(
        f"Scheduling quality: {dags} random DAGs of {size} units, "
        f"concurrency {CONCURRENCY}, virtual clock",
        ["dag", "lower bound", "mesh makespan", "mesh / bound", "waves / bound", "waves / mesh"],
        rows,
    )
