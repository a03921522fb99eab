"""Adapter mistakes surface at once and are explained fully: evidence, lanes, strict runs."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

import mesh
from mesh.contracts._errors import AdapterMistake
from mesh.engine._executors import BoundCall, ExecutorInfo, LocalExecutor
from mesh.engine._lifecycle import joined_evidence
from mesh.engine._mistakes import (
    Mistakes,
    adapter_name,
    default_strict,
    stopped_by,
    strict_by_default,
)
from mesh.testing import FakeAdapter, Hang, ManualClock, Raise, answer, capture_ledger, fake_roles

from engine_helpers import execute
from engine_helpers import unit as _unit
from repo_helpers import unit as repo_unit

pytestmark = pytest.mark.anyio

# Low risk: one fixer, so these tests read the fewest calls.
unit = functools.partial(_unit, risk="low")


def calls(events: Sequence[mesh.LedgerEvent], lane: mesh.Lane) -> list[mesh.LedgerEvent]:
    return [e for e in events if e.event == "adapter_call" and e.lane is lane]


def finished(events: Sequence[mesh.LedgerEvent]) -> mesh.LedgerEvent:
    (event,) = [e for e in events if e.event == "unit_finished"]
    return event


def without_record(request: mesh.AuthorRequest) -> dict[str, object]:
    return answer(request, reduce_record=None)


@pytest.mark.mesh_strict(strict=False)
class TestFixerSelection:
    async def test_selecting_what_was_not_proposed_is_an_invalid_answer(self) -> None:
        """A fixer accepting an unknown candidate is invalid_output_schema, not ``ok``."""
        fixer = FakeAdapter(lambda r: answer(r, selected_candidate="a-coder-9"))
        with capture_ledger() as events:
            result = await execute([unit("a")], fake_roles(fixer=fixer), max_attempts=1)
        (call,) = calls(events, mesh.Lane.FIXER)
        assert call.data["outcome"] == "invalid_output_schema"
        problems = call.data["problems"]
        assert problems == [
            (
                "$.selected_candidate: 'a-coder-9' is not one of the proven candidates "
                "it was shown (a-coder-1, a-coder-2, a-reducer-3)"
            )
        ]
        outcome = result.outcome("a")
        assert (
            outcome.state,
            outcome.failure_code,
        ) == ("failed", mesh.FailureCode.INVALID_OUTPUT_SCHEMA)
        assert outcome.evidence == f"fixer: {problems[0]}"
        assert result.metrics.invalid_outputs == 1
        assert any(
            e.event == "concurrency_changed" and e.data["reason"] == "backpressure" for e in events
        )

    async def test_selecting_an_unproven_candidate_is_an_invalid_answer_too(self) -> None:
        """A candidate the fixer was shown as rejected cannot be selected either."""

        def prove(request: mesh.ProofRequest) -> dict[str, object]:
            if request.candidate_id == "a-coder-1":
                return answer(request, decision="fail", proof_status="fail")
            return answer(request)

        fixer = FakeAdapter(lambda r: answer(r, selected_candidate="a-coder-1"))
        with capture_ledger() as events:
            result = await execute(
                [unit("a")], fake_roles(prover=FakeAdapter(prove), fixer=fixer), max_attempts=1
            )
        (call,) = calls(events, mesh.Lane.FIXER)
        assert call.data["outcome"] == "invalid_output_schema"
        assert result.outcome("a").failure_code == mesh.FailureCode.INVALID_OUTPUT_SCHEMA
        assert result.outcome("a").evidence.startswith(
            "fixer: $.selected_candidate: 'a-coder-1' is not one of the proven candidates "
            "it was shown (a-coder-2, a-reducer-3)"
        )


@pytest.mark.mesh_strict(strict=False)
class TestReducerLane:
    async def test_a_reducer_error_is_the_reducers(self) -> None:
        """An exception from the reducer is labelled ``reducer:``, in events and evidence."""
        reducer = FakeAdapter(script=[Raise(RuntimeError("no model"))])
        with capture_ledger() as events:
            result = await execute([unit("a")], fake_roles(reducer=reducer))
        (call,) = calls(events, mesh.Lane.REDUCER)
        assert (call.data["outcome"], call.candidate_id) == ("error", "a-reducer-3")
        assert result.outcome("a").evidence == "reducer: RuntimeError: no model"

    async def test_an_invalid_reducer_answer_is_the_reducers(self) -> None:
        """An invalid answer of the reducer (even one naming the coder lane) says ``reducer:``."""
        reducer = FakeAdapter(lambda r: answer(r, lane="coder"))
        result = await execute([unit("a")], fake_roles(reducer=reducer))
        assert result.outcome("a").evidence == "reducer: $.lane: expected 'reducer', got 'coder'"

    async def test_a_failing_reducer_command_is_the_reducers(
        self, workspaces: mesh.WorkspaceManager
    ) -> None:
        """`CommandCoder` playing the reducer names the reducer's command when it fails."""
        reducer = mesh.CommandCoder(workspaces, "echo 'Error: model overloaded'; exit 4")
        request = mesh.AuthorRequest(
            unit=repo_unit(),
            lane=mesh.Lane.REDUCER,
            candidate_id="u1-reducer-3",
            triplet_index=3,
            attempt=1,
        )
        result = mesh.parse_worker_result(await reducer(request))
        assert (result.decision, result.notes) == (
            mesh.Decision.REJECT,
            "reducer command exit code 4: Error: model overloaded",
        )


@pytest.mark.mesh_strict(strict=False)
class TestReducerRecord:
    async def test_a_reducer_candidate_without_a_record_is_visible(self) -> None:
        """The unit still completes on the coders' candidates, but says what went wrong."""
        with capture_ledger() as events:
            result = await execute([unit("a")], fake_roles(reducer=FakeAdapter(without_record)))
        outcome = result.outcome("a")
        expected = "reducer: $.reduce_record: a reducer's candidate needs a reduce_record"
        assert ("completed", expected) == (outcome.state, outcome.evidence)
        assert expected == finished(events).data["evidence"]

    async def test_a_record_file_a_reducer_command_botched_is_visible(
        self, workspaces: mesh.WorkspaceManager
    ) -> None:
        """A reducer command's unusable record is its reject, and the unit's evidence says so."""
        reducer = mesh.CommandCoder(
            workspaces, "echo change > src/new.py; echo '{{oops' > \"$MESH_REDUCE_RECORD\""
        )
        result = await execute([repo_unit()], fake_roles(reducer=reducer))
        outcome = result.outcome("u1")
        assert outcome.state == "completed"
        assert outcome.evidence.startswith("reducer: reject: MESH_REDUCE_RECORD is not JSON: ")

    async def test_a_record_the_contract_rejects_lists_every_problem(self) -> None:
        """Every problem of a malformed record is in the evidence, by its path."""
        reducer = FakeAdapter(lambda r: answer(r, reduce_record={"target_abstraction": 3}))
        result = await execute([unit("a")], fake_roles(reducer=reducer))
        evidence = result.outcome("a").evidence
        assert evidence.startswith(
            "reducer: $.reduce_record.target_abstraction: expected string, got number; "
        )
        assert "$.reduce_record.rollback_plan: required key missing" in evidence

    async def test_a_typed_reducer_result_without_a_record(self) -> None:
        """A `WorkerResult` answer is held to the same rule as a document."""

        def typed(request: mesh.AuthorRequest) -> mesh.WorkerResult:
            return attrs.evolve(mesh.parse_worker_result(answer(request)), reduce_record=None)

        result = await execute([unit("a")], fake_roles(reducer=FakeAdapter(typed)))
        assert result.outcome("a").evidence.startswith("reducer: $.reduce_record: ")


@pytest.mark.mesh_strict(strict=False)
class TestEvidence:
    async def test_every_problem_first_one_first(self) -> None:
        """Evidence lists every distinct problem the unit met; the failure's own comes first."""

        def coder(request: mesh.AuthorRequest) -> dict[str, object]:
            raise RuntimeError("first" if request.triplet_index == 1 else "second")

        with capture_ledger() as events:
            result = await execute(
                [unit("a")],
                fake_roles(coder=FakeAdapter(coder), reducer=FakeAdapter(without_record)),
                max_attempts=1,
            )
        outcome = result.outcome("a")
        assert outcome.failure_code == mesh.FailureCode.TOOLING_UNAVAILABLE
        assert outcome.evidence == (
            "coder: RuntimeError: first | coder: RuntimeError: second | "
            "reducer: $.reduce_record: a reducer's candidate needs a reduce_record"
        )
        assert outcome.evidence == finished(events).data["evidence"]

    async def test_a_completed_unit_keeps_what_went_wrong_on_the_way(self) -> None:
        """Rejects and failed proofs a unit got past are in its evidence too."""

        def prove(request: mesh.ProofRequest) -> dict[str, object]:
            if request.candidate_id == "a-coder-2":
                return answer(
                    request,
                    decision="fail",
                    proof_status="fail",
                    proof_evidence={"command": "pytest", "key_line": "1 failed", "exit_code": 1},
                )
            return answer(request)

        reducer = FakeAdapter(lambda r: answer(r, decision="reject", patch=None, notes="unclear"))
        result = await execute([unit("a")], fake_roles(reducer=reducer, prover=FakeAdapter(prove)))
        outcome = result.outcome("a")
        assert (
            outcome.state,
            outcome.evidence,
        ) == ("completed", "reducer: reject: unclear | pytest: 1 failed")

    def test_evidence_is_bounded(self) -> None:
        """Each problem is cut at 500 characters; past the tenth, the rest are counted."""
        problems = ["x" * 600, *(f"problem {i}" for i in range(11)), "problem 0"]
        evidence = joined_evidence(problems)
        shown = evidence.split(" | ")
        assert len(shown[0]) == 500
        assert shown[0].endswith("…")
        assert [shown[1], shown[9], shown[10]] == ["problem 0", "problem 8", "and 2 more"]


class LeakCheck:
    """An executor that runs calls here and says whether it was stopped."""

    def __init__(self) -> None:
        self.local = LocalExecutor()
        self.stopped = False

    async def start(self) -> ExecutorInfo:
        return await self.local.start()

    def bind(self, lane: mesh.Lane, adapter: Any) -> BoundCall:
        return self.local.bind(lane, adapter)

    async def stop(self) -> None:
        self.stopped = True


class TestStrict:
    async def test_an_invalid_answer_stops_the_run_explained(self) -> None:
        """The first invalid answer raises AdapterMistake with every fact and problem."""
        with capture_ledger() as events, pytest.raises(AdapterMistake) as caught:
            await execute([unit("a")], fake_roles(reducer=FakeAdapter(without_record)), strict=True)
        mistake = caught.value
        problem = "$.reduce_record: a reducer's candidate needs a reduce_record"
        assert (
            "a",
            mesh.Lane.REDUCER,
            "a-reducer-3",
            1,
            1,
            f"FakeAdapter(handler={__name__}.without_record)",
            "AuthorRequest",
            (problem,),
            None,
            mesh.FailureCode.INVALID_OUTPUT_SCHEMA,
        ) == (
            mistake.unit_id,
            mistake.lane,
            mistake.candidate_id,
            mistake.attempt,
            mistake.call,
            mistake.adapter,
            mistake.request_kind,
            mistake.problems,
            mistake.error,
            mistake.code,
        )
        assert (
            f"the reducer adapter FakeAdapter(handler={__name__}.without_record) "
            "answered invalidly (1 problem)\n"
            "  unit a, candidate a-reducer-3, attempt 1, call 1, asked with AuthorRequest\n"
            f"  {problem}"
        ) == str(mistake)
        assert mistake.__cause__ is None
        assert mistake.__suppress_context__
        assert isinstance(mistake, mesh.MeshError)
        (call,) = calls(events, mesh.Lane.REDUCER)
        assert call.data["outcome"] == "invalid_output_schema"
        last = events[-1]
        assert (
            last.event,
            last.unit_id,
            last.candidate_id,
            last.lane,
        ) == ("run_failed", "a", "a-reducer-3", mesh.Lane.REDUCER)
        assert {
            "failure_code": "invalid_output_schema",
            "call": 1,
            "adapter": mistake.adapter,
            "request_kind": "AuthorRequest",
            "problems": [problem],
            "error": None,
        } == dict(last.data)
        assert not [e for e in events if e.event == "run_finished"]

    async def test_an_exception_is_chained(self) -> None:
        """An adapter that raises stops the run with its exception as the cause."""
        error = ConnectionError("agent gone")

        async def integrator(request: mesh.DeliveryRequest) -> dict[str, object]:
            raise error

        with pytest.raises(AdapterMistake) as caught:
            await execute([unit("a")], fake_roles(integrator=integrator), strict=True)
        mistake = caught.value
        assert (
            mistake.code,
            mistake.error,
            mistake.problems,
        ) == (mesh.FailureCode.TOOLING_UNAVAILABLE, "ConnectionError: agent gone", ())
        assert error is mistake.__cause__
        assert mistake.adapter.endswith("test_an_exception_is_chained.<locals>.integrator")
        assert str(mistake).startswith(
            f"the integrator adapter {mistake.adapter} raised ConnectionError: agent gone\n"
            "  unit a, candidate a-coder-1, attempt 1, call 1, asked with DeliveryRequest"
        )
        assert mistake.__notes__ == [
            (
                "hint: a strict run stops at an adapter's first mistake; pass strict=False "
                "to record it and go on"
            )
        ]

    async def test_the_run_stops_cleanly(self) -> None:
        """Other units are cancelled, every lease goes back and the executor is stopped."""
        clock = ManualClock()
        table = mesh.LeaseTable()
        executor = LeakCheck()
        ended: list[str] = []

        async def slow_prover(request: mesh.ProofRequest) -> dict[str, object]:
            if request.unit.id == "a":
                return answer(request)
            try:
                await clock.sleep(3600)
            finally:
                ended.append(request.candidate_id)
            return answer(request)  # pragma: no cover - cancelled first

        def fixer(request: mesh.AdjudicationRequest) -> dict[str, object]:
            return answer(request, selected_candidate="a-coder-9")

        roles = attrs.evolve(
            fake_roles(prover=FakeAdapter(slow_prover), fixer=FakeAdapter(fixer)),
            locksmith=table,
        )
        # Inside the clock's block: a task group wraps what leaves it in an exception group.
        async with clock.autojumping():
            with capture_ledger() as events, pytest.raises(AdapterMistake) as caught:
                await execute(
                    [unit("a"), unit("b")],
                    roles,
                    strict=True,
                    clock=clock,
                    executor=executor,
                )
        assert (
            caught.value.unit_id,
            caught.value.lane,
            caught.value.candidate_id,
        ) == ("a", mesh.Lane.FIXER, "a-fixer-1")
        assert table.active == ()
        assert executor.stopped
        assert sorted(ended) == ["b-coder-1", "b-coder-2", "b-reducer-3"]
        releases = [e for e in events if e.data.get("action") == "release"]
        assert {"a", "b"} == {e.unit_id for e in releases}
        assert events[-1].event == "run_failed"

    async def test_the_replacement_is_named(self) -> None:
        """A mistake on the third call names the replacement adapter, not the lane's own."""
        clock = ManualClock()
        replacement = FakeAdapter(lambda r: {"nonsense": True})
        roles = attrs.evolve(
            fake_roles(integrator=FakeAdapter(script=[Hang(), Hang()])),
            replacements={mesh.Lane.INTEGRATOR: replacement},
        )
        async with clock.autojumping():
            with pytest.raises(AdapterMistake) as caught:
                await execute([unit("a")], roles, strict=True, clock=clock, call_timeout=5)
        assert (3, repr(replacement)) == (caught.value.call, caught.value.adapter)
        assert "$.id: required key missing" in caught.value.problems

    async def test_what_is_not_a_mistake(self) -> None:
        """Timeouts, rejects, failed proofs and rework requests do not stop a strict run."""
        clock = ManualClock()

        def prove(request: mesh.ProofRequest) -> dict[str, object]:
            passed = request.proof_attempt == 2
            return answer(
                request,
                decision="pass" if passed else "fail",
                proof_status="pass" if passed else "fail",
            )

        fixer = FakeAdapter(
            script=[
                lambda r: answer(
                    r,
                    decision="rework_required",
                    selected_candidate=None,
                    proof_status="not_applicable",
                    failure_code="proof_missing",
                    notes="try again",
                )
            ]
        )
        roles = fake_roles(
            coder=FakeAdapter(script=[Hang()]),
            reducer=FakeAdapter(lambda r: answer(r, decision="reject", patch=None, notes="no")),
            prover=FakeAdapter(prove),
            fixer=fixer,
        )
        async with clock.autojumping():
            result = await execute([unit("a")], roles, strict=True, clock=clock, call_timeout=30)
        outcome = result.outcome("a")
        assert (outcome.state, outcome.attempts) == ("completed", 2)
        assert "try again" in outcome.evidence


class TestStrictByDefault:
    async def test_runs_in_tests_are_strict(self) -> None:
        """Inside a test, a run built without strict= stops at the first mistake."""
        assert default_strict()
        with pytest.raises(AdapterMistake):
            await execute([unit("a")], fake_roles(reducer=FakeAdapter(without_record)))

    async def test_strict_false_wins(self) -> None:
        """A run told strict=False records the mistake and goes on, even in a test."""
        result = await execute(
            [unit("a")], fake_roles(reducer=FakeAdapter(without_record)), strict=False
        )
        assert result.outcome("a").state == "completed"

    @pytest.mark.mesh_strict(strict=False)
    async def test_a_marker_opts_out(self) -> None:
        """``@pytest.mark.mesh_strict(False)`` makes the test's runs lenient."""
        assert not default_strict()
        result = await execute([unit("a")], fake_roles(reducer=FakeAdapter(without_record)))
        assert result.outcome("a").state == "completed"

    @pytest.mark.mesh_strict
    def test_a_bare_marker_is_strict(self) -> None:
        """``@pytest.mark.mesh_strict`` without an argument means strict."""
        assert default_strict()

    @pytest.mark.mesh_strict(strict=False)
    def test_the_marker_takes_a_keyword(self) -> None:
        """``mesh_strict(strict=False)`` reads as it says."""
        assert not default_strict()

    def test_the_setting_is_true_or_false(self) -> None:
        """Anything but True or False is refused, where it is given."""
        with pytest.raises(mesh.InputError, match="strict must be True or False, got 'yes'"):
            mesh.Orchestrator(roles=fake_roles(), strict="yes")  # type: ignore[arg-type]
        with (
            pytest.raises(mesh.InputError, match="got 1"),
            strict_by_default(strict=1),  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover - refused on entry
        with strict_by_default(strict=False):
            assert not default_strict()
        assert default_strict()

    def test_outside_tests_and_with_the_setting_off(self, tmp_path: Path) -> None:
        """Outside pytest runs are lenient; ``mesh_strict = false`` turns the default off."""
        lenient = subprocess.run(
            [
                sys.executable,
                "-c",
                "from mesh.engine import _mistakes as m; print(m.default_strict())",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert lenient.stdout == "False\n"
        (tmp_path / "test_setting.py").write_text(
            textwrap.dedent(
                """
                import pytest
                from mesh.engine._mistakes import default_strict

                def test_off():
                    assert not default_strict()

                @pytest.mark.mesh_strict
                def test_marked():
                    assert default_strict()
                """
            )
        )
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "mesh_strict=false",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
            timeout=120,
        )
        assert process.returncode == 0, process.stdout + process.stderr
        assert "2 passed" in process.stdout


class TestNames:
    def test_adapters_are_named_by_what_they_are(self) -> None:
        """Functions and methods by qualified name, objects by their repr, else their class."""

        class Plain:
            def __call__(self, request: object) -> object:
                return request

        class Shown:
            def __repr__(self) -> str:
                return "Shown()"

        class Long:
            def __repr__(self) -> str:
                return "L" * 300

        class Broken:
            def __repr__(self) -> str:
                raise RuntimeError

        prefix = f"{__name__}.TestNames.test_adapters_are_named_by_what_they_are.<locals>"
        assert f"{prefix}.Plain instance" == adapter_name(Plain())
        assert f"{prefix}.Plain.__call__" == adapter_name(Plain().__call__)
        assert adapter_name(Shown()) == "Shown()"
        assert len(adapter_name(Long())) == 200
        assert f"{prefix}.Broken instance" == adapter_name(Broken())
        assert adapter_name(without_record) == f"{__name__}.without_record"
        assert (
            repr(FakeAdapter(script=[Hang()]))
            == "FakeAdapter(handler=mesh.testing._fakes.answer, 1 scripted step left)"
        )
        assert "2 scripted steps left" in repr(FakeAdapter(script=[Hang(), Hang()]))

    def test_only_mistakes_are_raised_as_one(self) -> None:
        """A run stopped by anything but mistakes raises what stopped it."""
        mistakes = Mistakes(fake_roles())
        assert stopped_by(mistakes, ExceptionGroup("x", [ValueError()])) is None
        assert stopped_by(None, ExceptionGroup("x", [ValueError()])) is None
        first = mistakes.found(
            lane=mesh.Lane.CODER,
            request=object(),
            unit_id="a",
            candidate_id="a-coder-1",
            attempt=1,
            call=1,
            replacement=False,
            error="ValueError: x",
        )
        second = mistakes.found(
            lane=mesh.Lane.CODER,
            request=object(),
            unit_id="a",
            candidate_id="a-coder-2",
            attempt=1,
            call=1,
            replacement=False,
            error="ValueError: y",
        )
        assert first is stopped_by(mistakes, ExceptionGroup("x", [second, first]))
        assert stopped_by(mistakes, ExceptionGroup("x", [first, ValueError()])) is None
        assert stopped_by(mistakes, KeyboardInterrupt()) is None
