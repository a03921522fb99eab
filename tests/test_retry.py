"""Retry policies: per lane, which failures are retried, how often, after what wait."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import attrs
import pytest

import mesh
from mesh.engine._retry import checked_retry
from mesh.testing import FakeAdapter, Hang, Raise, answer, capture_ledger, fake_roles

from engine_helpers import execute, new_file_answer, unit

pytestmark = pytest.mark.anyio


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs."""


def named(events: list[mesh.LedgerEvent], name: str) -> list[mesh.LedgerEvent]:
    return [event for event in events if event.event == name]


class TestPolicy:
    def test_the_default_is_the_classic_one(self) -> None:
        policy = mesh.RetryPolicy()
        assert policy.calls == 3
        assert policy.retry_on == {mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED}
        assert policy.replacement
        assert policy.wait(1, 0.9) == 0.0

    def test_waits_grow_are_capped_and_jitter_stays_in_its_band(self) -> None:
        policy = mesh.RetryPolicy(backoff=1.0, multiplier=3.0, max_backoff=5.0, jitter=0.5)
        assert [policy.wait(retry, 0.5) for retry in (1, 2, 3)] == [1.0, 3.0, 5.0]
        assert policy.wait(2, 0.0) == 1.5
        assert policy.wait(2, 0.999999) == pytest.approx(4.5, abs=1e-4)

    @pytest.mark.parametrize(
        ("field", "value", "says"),
        [
            ("calls", 0, "calls must be a whole number from 1 to 100"),
            ("calls", True, "calls must be"),
            ("calls", 101, "calls must be"),
            ("backoff", -1, "backoff must be seconds"),
            ("backoff", float("nan"), "backoff must be seconds"),
            ("max_backoff", 1e9, "max_backoff must be seconds"),
            ("multiplier", 0.5, "multiplier must be a number from 1 to 100"),
            ("multiplier", float("inf"), "multiplier must be"),
            ("jitter", 2, "jitter must be a fraction"),
            ("jitter", "0.1", "jitter must be a fraction"),
            ("replacement", 1, "replacement must be True or False"),
            ("retry_on", "timeout_retry_exhausted", "retry_on must be a set of failure codes"),
            ("retry_on", {"nope"}, "'nope' is not a failure code"),
            ("retry_on", {"scope_violation"}, "a call never fails with scope_violation"),
        ],
    )
    def test_wrong_values_are_refused(self, field: str, value: object, says: str) -> None:
        with pytest.raises(mesh.InputError, match=says):
            mesh.RetryPolicy(**{field: value})  # type: ignore[arg-type]

    def test_documents_round_trip_and_are_strict(self) -> None:
        policy = mesh.RetryPolicy(
            calls=5, retry_on={"tooling_unavailable"}, backoff=0.5, jitter=0.2, replacement=False
        )
        document = json.loads(json.dumps(policy.to_document()))
        assert mesh.RetryPolicy.from_document(document) == policy
        with pytest.raises(mesh.InputError, match="has no 'tries'"):
            mesh.RetryPolicy.from_document({"tries": 2})
        with pytest.raises(mesh.InputError, match="is a JSON object"):
            mesh.RetryPolicy.from_document([1])

    def test_lanes_by_name_or_value_the_rest_default(self) -> None:
        policy = mesh.RetryPolicy(calls=1)
        by_lane = checked_retry({"prover": policy, mesh.Lane.FIXER: policy})
        assert by_lane[mesh.Lane.PROVER] is policy
        assert by_lane[mesh.Lane.FIXER] is policy
        assert by_lane[mesh.Lane.CODER] == mesh.RetryPolicy()
        assert set(checked_retry(policy).values()) == {policy}
        with pytest.raises(mesh.InputError, match="'tester' is not a lane"):
            checked_retry({"tester": policy})
        with pytest.raises(mesh.InputError, match=r"retry\['coder'\]: expected RetryPolicy"):
            checked_retry({"coder": 3})
        with pytest.raises(mesh.InputError, match="retry must be a RetryPolicy or a mapping"):
            checked_retry(3)


class TestEngine:
    async def test_the_default_policy_keeps_its_events(self) -> None:
        """A hanging coder: the call, a retry, the replacement; then the unit fails."""
        with capture_ledger() as ledger:
            result = await execute(
                [unit("a")],
                fake_roles(coder=FakeAdapter(script=[Hang()] * 6)),
                call_timeout=0.05,
                max_attempts=1,
            )
        assert result.outcomes[0].failure_code is mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED
        assert "timed out 3 times" in result.outcomes[0].evidence
        retries = named(ledger, "adapter_retry")
        assert {(e.data["call"], e.data["after"], e.data["wait_seconds"]) for e in retries} == {
            (2, "timeout_retry_exhausted", 0.0)
        }
        assert {e.data["call"] for e in named(ledger, "adapter_replacement")} == {3}
        assert "retry" not in named(ledger, "run_started")[0].data

    async def test_errors_retried_with_backoff_until_they_pass(self) -> None:
        """A coder that raises twice, then answers: a policy retrying errors completes the unit."""
        policy = mesh.RetryPolicy(
            calls=4, retry_on={"tooling_unavailable"}, backoff=0.01, multiplier=2
        )

        def flaky(request: mesh.AuthorRequest) -> dict[str, object]:
            if request.call < 3:
                raise OSError("flaky")
            return answer(request)

        coder = FakeAdapter(flaky)
        with capture_ledger() as ledger:
            result = await execute(
                [unit("a")],
                fake_roles(coder=coder),
                strict=False,
                retry={mesh.Lane.CODER: policy},
                max_attempts=1,
            )
        assert result.outcomes[0].state == "completed"
        retries = [e for e in named(ledger, "adapter_retry") if e.candidate_id == "a-coder-1"]
        assert [(e.data["call"], e.data["wait_seconds"]) for e in retries] == [
            (2, 0.01),
            (3, 0.02),
        ]
        assert named(ledger, "run_started")[0].data["retry"] == {"coder": policy.to_document()}
        calls = [
            int(str(e.data["call"])) for e in named(ledger, "adapter_call") if e.lane == "coder"
        ]
        assert sorted(calls) == [1, 1, 2, 2, 3, 3]

    async def test_invalid_answers_retried_then_the_replacement(self) -> None:
        """The last call goes to the lane's replacement adapter when the policy says so."""
        bad = FakeAdapter(lambda request: {"nonsense": True})
        replacement = FakeAdapter()
        roles = attrs.evolve(fake_roles(fixer=bad), replacements={mesh.Lane.FIXER: replacement})
        policy = mesh.RetryPolicy(retry_on={"invalid_output_schema"})
        result = await execute([unit("a")], roles, strict=False, retry={"fixer": policy})
        assert result.outcomes[0].state == "completed"
        assert len(bad.calls) == 4  # two fixers (med risk), two calls each
        assert [request.call for request in replacement.calls] == [3, 3]

    async def test_one_call_only_and_no_replacement(self) -> None:
        with capture_ledger() as ledger:
            result = await execute(
                [unit("a")],
                fake_roles(coder=FakeAdapter(script=[Hang()] * 6)),
                call_timeout=0.05,
                retry=mesh.RetryPolicy(calls=1),
                max_attempts=1,
            )
        assert result.outcomes[0].evidence.startswith("coder timed out (0.05s)")
        assert not named(ledger, "adapter_retry")

    async def test_without_replacement_the_last_call_is_a_retry(self) -> None:
        with capture_ledger() as ledger:
            await execute(
                [unit("a")],
                fake_roles(coder=FakeAdapter(script=[Hang()] * 6)),
                call_timeout=0.05,
                retry=mesh.RetryPolicy(replacement=False),
                max_attempts=1,
            )
        assert not named(ledger, "adapter_replacement")
        assert {e.data["call"] for e in named(ledger, "adapter_retry")} == {2, 3}

    async def test_an_adapter_not_safe_to_rerun_is_never_retried(self) -> None:
        coder = FakeAdapter(script=[Raise(OSError("once"))] * 4, rerun_safe=False)
        result = await execute(
            [unit("a")],
            fake_roles(coder=coder),
            strict=False,
            retry=mesh.RetryPolicy(retry_on={"tooling_unavailable"}),
            max_attempts=1,
        )
        assert result.outcomes[0].state == "failed"
        assert {request.call for request in coder.calls} == {1}

    async def test_waits_run_on_the_runs_clock(self) -> None:
        """With a manual clock the backoff is the clock's: no real time passes."""
        clock = mesh.testing.ManualClock()
        policy = mesh.RetryPolicy(calls=2, retry_on={"tooling_unavailable"}, backoff=600)
        coder = FakeAdapter(script=[Raise(OSError("flaky"))])
        async with clock.autojumping():
            result = await execute(
                [unit("a")],
                fake_roles(coder=coder),
                strict=False,
                retry={"coder": policy},
                clock=clock,
                call_timeout=None,
            )
        assert result.outcomes[0].state == "completed"
        assert clock.current_time() >= 60  # the wait, capped by max_backoff

    async def test_the_front_door_checks_the_option(self) -> None:
        with pytest.raises(mesh.ValidationError, match="retry: retry must be a RetryPolicy"):
            await mesh.run_async([unit("a")], roles=fake_roles(), retry="often")  # type: ignore[call-overload]


def _coder(request: mesh.AuthorRequest) -> dict[str, object]:
    return new_file_answer(request)


PLAN = {"plan": [{"id": "a", "step": "a", "write_scope": ["a.txt"], "proof_command": "true"}]}


class TestRepositoryRuns:
    async def test_the_store_keeps_the_policies_for_a_resume(
        self, repo: Path, tmp_path: Path
    ) -> None:
        policy = mesh.RetryPolicy(calls=2, retry_on={"tooling_unavailable"}, backoff=0.001)
        run = await mesh.run_async(
            PLAN,
            roles=mesh.Roles(coder=_coder),
            repo=repo,
            out=tmp_path / "out",
            retry={"prover": policy},
        )
        store = mesh.RunStore.open(run.store_path)
        assert store.config["retry"] == {"prover": policy.to_document()}
        store.close()
        started = named(list(mesh.RunStore.open(run.store_path).events()), "run_started")
        assert started[0].data["retry"] == {"prover": policy.to_document()}

    @pytest.mark.parametrize("damage", [[1], {"prover": {"calls": "x"}}, {"prover": 3}])
    async def test_a_damaged_policy_in_a_store_is_said(
        self, repo: Path, tmp_path: Path, damage: object
    ) -> None:
        out = tmp_path / "out"
        with pytest.raises(BaseExceptionGroup):
            await mesh.run_async(
                PLAN,
                roles=mesh.Roles(coder=FakeAdapter(script=[Raise(Killed())])),
                repo=repo,
                out=out,
            )
        with sqlite3.connect(out / mesh.STORE_FILE) as connection:
            (config,) = connection.execute("SELECT config FROM run").fetchone()
            stored = json.loads(config)
            stored["retry"] = damage
            connection.execute("UPDATE run SET config = ?", (json.dumps(stored),))
        with pytest.raises(mesh.StoreError, match="'retry' is unreadable"):
            await mesh.resume_async(out, roles=mesh.Roles(coder=_coder))
