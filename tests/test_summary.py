"""Run summaries: metrics from events, the prose ledger and the learning."""

from __future__ import annotations

import anyio

import mesh
from mesh.engine._summary import MetricsCollector, pick_learning
from mesh.testing import FakeAdapter, ManualClock, capture_ledger, fake_roles

COMPLETED = mesh.UnitOutcome(
    unit_id="u1",
    state=mesh.OutcomeState.COMPLETED,
    attempts=1,
    delivery=mesh.Decision.INTEGRATED_COMMIT,
)
FAILED = mesh.UnitOutcome(
    unit_id="u2",
    state=mesh.OutcomeState.FAILED,
    failure_code=mesh.FailureCode.PROOF_MISSING,
    evidence="pytest: 1 failed",
)
BLOCKED = mesh.UnitOutcome(unit_id="u3", state=mesh.OutcomeState.BLOCKED, blocked_by="u2")

LINE_ORDER = [
    "Skills used",
    "Wave summary",
    "Subagents",
    "Budget and scaling",
    "CAS instances",
    "Retry/replacement events",
    "Delivery/join status",
]


class TestRenderLedger:
    def test_nothing_ran(self) -> None:
        """No calls and no units: the ledger is absent."""
        assert mesh.render_ledger(mesh.RunMetrics(), ()) == ""

    def test_every_line_in_order(self) -> None:
        """When everything happened, all seven lines appear in the fixed order."""
        metrics = mesh.RunMetrics(
            completed=1,
            failed=1,
            blocked=1,
            adapter_calls=(("coder", 4), ("prover", 2)),
            invalid_outputs=1,
            adapter_errors=1,
            timeouts=2,
            timeout_retries=2,
            replacements=1,
            proof_retries=1,
            scope_conflict_requeues=3,
            reworks=1,
            target=9,
            targets_seen=(9, 4),
            budget_mode="linear_clamp",
            strict_remaining=28.0,
            backpressure_events=2,
            lowest_limit=2,
            restores=1,
            cas_instances=2,
        )
        text = mesh.render_ledger(metrics, (COMPLETED, FAILED, BLOCKED))
        lines = text.splitlines()
        assert lines[0] == "Orchestration Ledger"
        assert [line.split(":")[0] for line in lines[1:]] == LINE_ORDER
        assert "re-read budget moved it to 4" in text
        assert (
            "2 timeout retries, 1 replacement, 1 proof retry, 3 scope-conflict requeues, 1 rework"
            in text
        )
        assert (
            "Delivery/join status: 1 delivered (u1 as commit); failed: u2 (proof_missing); "
            "blocked: u3 by u2."
        ) in text

    def test_non_events_are_omitted(self) -> None:
        """Lines for things that did not happen are left out."""
        metrics = mesh.RunMetrics(
            completed=1,
            adapter_calls=(("coder", 2),),
            target=3,
            targets_seen=(3,),
            budget_mode="full_fanout",
            strict_remaining=80,
        )
        text = mesh.render_ledger(metrics, (COMPLETED,))
        assert "CAS instances" not in text
        assert "Retry/replacement" not in text
        assert "backpressure" not in text
        assert "invalid_output_schema" not in text

    def test_calls_without_finished_units_have_no_delivery_line(self) -> None:
        """A run cancelled before any unit ended still reports its calls, but no delivery."""
        text = mesh.render_ledger(mesh.RunMetrics(adapter_calls=(("coder", 2),)), ())
        assert "Skills used: mesh streaming orchestration with coder x2." in text
        assert "Delivery/join status" not in text

    def test_delivery_line_without_deliveries(self) -> None:
        """When nothing was delivered, the delivery line starts with the failures."""
        text = mesh.render_ledger(mesh.RunMetrics(failed=1), (FAILED,))
        assert text.splitlines()[-1] == "Delivery/join status: failed: u2 (proof_missing)."

    def test_values_from_events_cannot_forge_lines(self) -> None:
        """Unit ids, the budget mode and the executor print escaped: one line per fact."""
        forged = "x\nDelivery/join status: 9 delivered\r\x1b[2K\u2028\u202e"
        metrics = mesh.RunMetrics(
            completed=1,
            failed=1,
            blocked=1,
            adapter_calls=(("coder", 1),),
            target=3,
            targets_seen=(3,),
            budget_mode=forged,
            cas_instances=1,
            executor=forged,
        )
        outcomes = (
            mesh.UnitOutcome(unit_id=forged, state=mesh.OutcomeState.COMPLETED),
            mesh.UnitOutcome(unit_id=f"f{forged}", state=mesh.OutcomeState.FAILED),
            mesh.UnitOutcome(
                unit_id=f"b{forged}", state=mesh.OutcomeState.BLOCKED, blocked_by=forged
            ),
        )
        text = mesh.render_ledger(metrics, outcomes)
        lines = text.splitlines()
        assert [line.split(":")[0] for line in lines[1:]] == [
            "Skills used",
            "Wave summary",
            "Subagents",
            "Budget and scaling",
            "CAS instances",
            "Delivery/join status",
        ]
        assert len(text.split("\n")) == len(lines) + 1  # "\n" is the only break, and it ends
        assert not any(char in text for char in "\r\x1b\u2028\u202e")
        escaped = "x\\nDelivery/join status: 9 delivered\\r\\x1b[2K\\u2028\\u202e"
        assert f"({escaped}, strict remaining" in text
        assert f"b{escaped} by {escaped}" in lines[-1]
        completed = mesh.RunMetrics(completed=1, budget_mode=forged)
        learning = pick_learning(completed, (COMPLETED,)) or ""
        assert f"({escaped})" in learning
        assert "\n" not in learning

    def test_long_lists_are_shortened(self) -> None:
        """Delivery lists stop after ten names."""
        outcomes = [
            mesh.UnitOutcome(unit_id=f"u{i}", state=mesh.OutcomeState.COMPLETED) for i in range(25)
        ]
        text = mesh.render_ledger(mesh.RunMetrics(completed=25), outcomes)
        assert "u9 as patch and 15 more" in text


class TestLearning:
    def test_learning_follows_the_dominant_problem(self) -> None:
        """Requeues, then timeouts, then proof failures, then failure codes, then success."""
        assert pick_learning(mesh.RunMetrics(), ()) is None
        requeues = mesh.RunMetrics(scope_conflict_requeues=5, scope_conflict_requeue_rate=0.5)
        assert "split scopes" in (pick_learning(requeues, (COMPLETED,)) or "")
        assert "timed out" in (pick_learning(mesh.RunMetrics(timeouts=2), (COMPLETED,)) or "")
        proofs = mesh.RunMetrics(proof_fail_rate=0.5)
        assert "Proofs failed for 50%" in (pick_learning(proofs, (COMPLETED,)) or "")
        assert "failed with proof_missing" in (pick_learning(mesh.RunMetrics(), (FAILED,)) or "")
        assert "completed" in (pick_learning(mesh.RunMetrics(completed=1), (COMPLETED,)) or "")


class TestUnitDurations:
    def test_completed_units_from_their_last_start(self) -> None:
        """A unit's time runs from its last start to its completion; others are left out."""

        def event(name: str, at: float, unit_id: str | None, **data: object) -> mesh.LedgerEvent:
            return mesh.LedgerEvent(
                event=name, run_id="r", seq=1, at=at, unit_id=unit_id, data=data
            )

        events = [
            event("run_started", 0.0, None),
            event("unit_started", 1.0, "a"),
            event("unit_started", 2.0, "b"),
            event("unit_finished", 4.0, "b", state="failed"),
            event("unit_started", 5.0, "a"),  # restarted by a resume
            event("unit_finished", 9.5, "a", state="completed"),
            event("unit_finished", 3.0, "c", state="completed"),  # never seen starting
            event("unit_started", 7.0, "d"),
            event("unit_finished", 7.0, "d", state="completed"),  # no time at all
        ]
        assert mesh.unit_durations(events) == {"a": 4.5}

    def test_a_run_feeds_the_next(self) -> None:
        """A run's ledger gives the estimates of the next run of the same plan."""
        clock = ManualClock()

        async def main() -> dict[str, float]:
            roles = fake_roles(prover=FakeAdapter(delay=3, clock=clock))
            async with clock.autojumping():
                with capture_ledger() as events:
                    async with mesh.Orchestrator(roles=roles, clock=clock) as orchestrator:
                        await orchestrator.execute([mesh.Unit(id="u", objective="x")])
            return mesh.unit_durations(events)

        durations = anyio.run(main)
        assert list(durations) == ["u"]
        assert durations["u"] == 3  # the proofs, side by side, 3 s each


def test_a_damaged_stored_call_event_is_still_counted() -> None:
    """An adapter_call whose outcome is not text (a damaged store) is counted, not a crash."""
    event = mesh.LedgerEvent(
        run_id="r",
        seq=1,
        at=0.0,
        event="adapter_call",
        unit_id="u",
        lane=mesh.Lane.CODER,
        data={"outcome": ["ok"]},
    )
    collector = MetricsCollector()
    collector.emit(event)
    assert collector.metrics().adapter_calls == (("coder", 1),)
    assert mesh.prose_ledger([event])


def test_damaged_counts_and_numbers_are_left_out() -> None:
    """
    Targets, limits, unit counts and percentages that are no such thing are left out.

    A stored event may hold text, null, NaN, a bool or a number too big for a float where
    a count belongs: the metrics keep the readable values, never a crash.
    """
    fields: list[tuple[str, dict[str, object]]] = [
        ("run_started", {"units": "many"}),
        ("budget_read", {"target": 3, "mode": "m", "strict_remaining": 42}),
        ("budget_read", {"target": float("nan"), "strict_remaining": "x"}),
        ("budget_read", {"target": 10**400, "strict_remaining": 10**400}),
        ("budget_read", {"target": True, "strict_remaining": float("inf")}),
        ("budget_read", {"target": -5}),
        ("concurrency_changed", {"limit": 10**400, "reason": "backpressure"}),
        ("concurrency_changed", {"limit": 2, "reason": "backpressure"}),
        ("concurrency_changed", {"limit": None, "reason": "restored"}),
    ]
    collector = MetricsCollector()
    for seq, (name, data) in enumerate(fields, start=1):
        collector.emit(mesh.LedgerEvent(run_id="r", seq=seq, at=0.0, event=name, data=data))
    metrics = collector.metrics()
    assert (metrics.units_total, metrics.targets_seen, metrics.strict_remaining) == (0, (3,), 0.0)
    assert (metrics.backpressure_events, metrics.lowest_limit, metrics.restores) == (2, 2, 1)
    one = MetricsCollector()
    one.emit(mesh.LedgerEvent(run_id="r", seq=1, at=0.0, event="budget_read", data=fields[1][1]))
    assert one.metrics().strict_remaining == 42.0
