"""
Quick start: from an update_plan to a validated batch, then a whole run.

Run it from anywhere: ``python examples/quickstart.py``. It reads the example
plan next to this file, prints what each planning stage decided, then runs the
plan through the engine with mesh's scripted adapters (no model, no
repository) and prints the Orchestration Ledger.
"""

from __future__ import annotations

import json
from pathlib import Path

import mesh
import mesh.batch
from mesh.testing import fake_roles

HERE = Path(__file__).parent


def main() -> None:
    """Walk the example plan through budget, slicing, a wave and batch preparation."""
    plan = mesh.parse_plan(json.loads((HERE / "plan.json").read_text()))
    summary = mesh.plan_sync(plan)
    print(
        f"plan: {summary.total_steps} steps, {summary.pending} pending, "
        f"{summary.in_progress} in progress, {summary.completed} completed"
    )

    # One concurrency authority for the whole run, from the remaining budget.
    budget = mesh.budget_policy(remaining_five_hour=40, remaining_weekly=28, max_threads=12)
    print(f"budget: {budget.to_text()}")

    units = mesh.slice_plan(plan).units
    for unit in units:
        waits = f" (waits for {', '.join(unit.deps)})" if unit.deps else ""
        print(f"unit {unit.id}: {unit.objective} [{unit.risk_tier}]{waits}")

    wave = mesh.select_wave(
        units, max_active=budget.max_active_units, triplet_width=budget.triplet_width
    )
    print(
        f"wave: {wave.units_selected} of {wave.units_in} units ready, {len(wave.rows)} coder rows"
    )

    batch_csv = mesh.batch.format_csv(mesh.batch.BATCH_COLUMNS, (row.cells() for row in wave.rows))
    prepared = mesh.batch.prepare_batch(batch_csv, max_concurrency=budget.max_active_units)
    print(
        f"batch: {len(prepared.output_rows)} candidates queued, "
        f"floor gate {prepared.floor_result} (peak {prepared.effective_peak})"
    )

    # Worker results are parsed strictly: a typo is an error listing every problem.
    try:
        mesh.parse_worker_result({"id": "unit-001", "lane": "coder", "decision": "acept"})
    except mesh.InvalidOutputSchema as error:
        print(
            f"rejected worker result ({error.code}): {len(error.problems)} problems, "
            f"first: {error.problems[0]}"
        )

    # The engine: every unit streams through candidates, proofs, quorum and delivery.
    result = mesh.run(plan, roles=fake_roles(), budget=budget)
    for outcome in result.outcomes:
        print(f"{outcome.unit_id}: {outcome.state} via {outcome.accepted_candidate}")
    print(result.ledger(), end="")


if __name__ == "__main__":
    main()
