"""Output contract v2: strict parsing of worker results."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import types
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh
from mesh.contracts._contract import (
    _CHECKED,
    _any_surrogate,
    checked_result_document,
    is_checked,
    recheck_worker_result,
    take_checked,
)
from mesh.contracts._convert import fast_structure, structure
from mesh.contracts._errors import ValidationError
from mesh.engine._roles import check_result
from mesh.testing import FakeAdapter, answer, capture_ledger, fake_roles

from engine_helpers import execute, unit

LANE_EXTRAS: dict[str, dict[str, object]] = {
    "coder": {"decision": "accept", "patch": "--- a/x\n+++ b/x\n"},
    "reducer": {
        "decision": "accept",
        "patch": "--- a/x\n+++ b/x\n",
        "reduce_record": {
            "target_abstraction": "Loader",
            "replacement_primitive": "function",
            "complexity_delta": "-12 lines",
            "invariants_preserved": ["same output"],
            "rollback_plan": "revert the commit",
        },
    },
    "locksmith": {"decision": "grant", "lease_id": "lease-1", "ttl_ms": 30000},
    "applier": {"decision": "applied", "worktree_path": "worktrees/u1-coder-1"},
    "prover": {"decision": "pass", "proof_status": "pass", "proof_attempts": 1},
    "fixer": {
        "decision": "accepted",
        "selected_candidate": "u1-coder-1",
        "quorum_target": 2,
        "quorum_observed": 2,
        "proof_status": "pass",
    },
    "integrator": {"decision": "integrated_patch", "artifact_ref": "artifacts/u1.patch"},
}


def result(lane: str = "coder", **changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "id": "u1",
        "candidate_id": "u1-coder-1",
        "triplet_index": 1,
        "lane": lane,
        "decision": "accept",
        "proof_status": "not_applicable",
        "write_scope": ["src/x.py"],
        "risk_tier": "med",
        "base_sha": "HEAD",
        "proof_attempts": 0,
        "proof_evidence": {"command": "", "key_line": "", "exit_code": 0},
    }
    document.update(LANE_EXTRAS.get(lane, {}))
    document.update(changes)
    return {k: v for k, v in document.items() if v is not ...}


def problems_of(payload: object) -> tuple[str, ...]:
    with pytest.raises(mesh.InvalidOutputSchema) as caught:
        mesh.parse_worker_result(payload)
    assert caught.value.code == mesh.FailureCode.INVALID_OUTPUT_SCHEMA
    return caught.value.problems


class TestValidResults:
    @pytest.mark.parametrize("lane", sorted(LANE_EXTRAS))
    def test_every_lane(self, lane: str) -> None:
        """A well-formed result of each lane parses to a typed record."""
        parsed = mesh.parse_worker_result(result(lane))
        assert mesh.Lane(lane) == parsed.lane
        assert isinstance(parsed.proof_evidence, mesh.ProofEvidence)

    def test_json_text_is_accepted(self) -> None:
        """JSON text (str or bytes) is parsed the same as the decoded object."""
        text = json.dumps(result())
        assert mesh.parse_worker_result(text) == mesh.parse_worker_result(text.encode())

    def test_no_diff_with_reason(self) -> None:
        """NO_DIFF with a reason in notes is valid."""
        parsed = mesh.parse_worker_result(
            result(decision="no_diff", patch=..., notes="already done")
        )
        assert parsed.decision == mesh.Decision.NO_DIFF

    def test_matching_patch_digest(self) -> None:
        """A patch_sha256 that matches the patch is accepted."""
        patch = "--- a/x\n+++ b/x\n"
        digest = hashlib.sha256(patch.encode()).hexdigest()
        assert (
            digest
            == mesh.parse_worker_result(result(patch=patch, patch_sha256=digest)).patch_sha256
        )

    @pytest.mark.parametrize("lane", sorted(LANE_EXTRAS))
    def test_document_round_trip(self, lane: str) -> None:
        """worker_result_document gives back a document that parses to the same record."""
        parsed = mesh.parse_worker_result(result(lane))
        assert parsed == mesh.parse_worker_result(mesh.worker_result_document(parsed))


class TestInvalidResults:
    def test_every_problem_is_listed(self) -> None:
        """Missing keys, wrong types and lane rules are reported together."""
        problems = problems_of(
            result(
                id=...,
                triplet_index="1",
                write_scope=[],
                decision="grant",
                proof_evidence={"command": "x", "exit_code": "0"},
                surprise=True,
            )
        )
        assert {
            "$.id: required key missing",
            "$.triplet_index: expected integer, got string",
            "$.proof_evidence.key_line: required key missing",
            "$.proof_evidence.exit_code: expected integer, got string",
            "$: unknown key 'surprise'",
            "$.write_scope: must list at least one path",
            "$.decision: coder may decide accept, no_diff, reject; got 'grant'",
        } <= set(problems)

    @pytest.mark.parametrize(
        ("payload", "problem"),
        [
            (result(triplet_index=0), "$.triplet_index: must be >= 1, got 0"),
            (result(proof_attempts=3), "$.proof_attempts: must be 0, 1 or 2, got 3"),
            (
                result(lane="prover", proof_attempts=0),
                "$.proof_attempts: a prover result needs 1 or 2, got 0",
            ),
            (
                result(lane="prover", proof_status="skipped"),
                "$.proof_status: a prover result is pass or fail",
            ),
            (
                result(lane="prover", proof_status="fail"),
                "$.proof_status: must match the prover's decision",
            ),
            (result(patch=""), "$.patch: an accepted candidate needs a non-empty patch"),
            (
                result(decision="no_diff", patch=...),
                "$.notes: a no_diff result needs the reason in notes",
            ),
            (
                result(lane="reducer", reduce_record=...),
                "$.reduce_record: a reducer's candidate needs a reduce_record",
            ),
            (
                result(lane="locksmith", lease_id=...),
                "$.lease_id: a granted lease needs a lease_id",
            ),
            (result(lane="locksmith", ttl_ms=0), "$.ttl_ms: a granted lease needs ttl_ms > 0"),
            (
                result(lane="fixer", selected_candidate=...),
                "$.selected_candidate: an accepted adjudication names its candidate",
            ),
            (
                result(lane="fixer", proof_status="fail"),
                "$.proof_status: only a candidate whose proof passed may be accepted",
            ),
            (result(lane="fixer", quorum_target=1), "$.quorum_target: med risk needs 2, got 1"),
            (
                result(lane="fixer", quorum_observed=1),
                "$.quorum_observed: 1 is below the quorum target 2",
            ),
            (
                result(lane="integrator", artifact_ref=...),
                "$.artifact_ref: a delivery needs an artifact_ref",
            ),
            (result(patch_sha256="0" * 64), "$.patch_sha256: does not match the sha256 of patch"),
            (
                result(lane="painter"),
                (
                    "$.lane: expected one of coder, reducer, locksmith, applier, prover, fixer, "
                    "integrator; got 'painter'"
                ),
            ),
            (
                result(failure_code="oops"),
                (
                    "$.failure_code: expected one of safety_regression_risk, proof_missing, "
                    "invalid_output_schema, scope_overlap_conflict, scope_violation, "
                    "timeout_retry_exhausted, delivery_blocked, requires_clarification, "
                    "tooling_unavailable; got 'oops'"
                ),
            ),
            (result(base_sha=" "), "$.base_sha: must not be blank"),
            (result(write_scope=[""]), "$.write_scope: paths must not be blank"),
        ],
    )
    def test_semantic_rules(self, payload: object, problem: str) -> None:
        """Each lane rule of the contract is enforced."""
        assert problem in problems_of(payload)

    @pytest.mark.parametrize(
        ("payload", "problem"),
        [
            ("not json", "not JSON: Expecting value at line 1 column 1"),
            (b"\xff", "not UTF-8 text"),
            ([1], "$: expected object, got array"),
            ('{"a": NaN}', "not JSON: NaN is not valid JSON"),
        ],
    )
    def test_not_an_object(self, payload: object, problem: str) -> None:
        """Text that is not a JSON object is an invalid result."""
        assert (problem,) == problems_of(payload)


@st.composite
def valid_results(draw: st.DrawFn) -> dict[str, object]:
    lane = draw(st.sampled_from(sorted(LANE_EXTRAS)))
    text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12).filter(
        str.strip
    )
    return result(
        lane,
        id=draw(text),
        candidate_id=draw(text),
        triplet_index=draw(st.integers(1, 3)),
        write_scope=draw(st.lists(text, min_size=1, max_size=3)),
        base_sha=draw(text),
        notes=draw(st.none() | text) or ...,
        challenge_findings=draw(st.none() | st.lists(text, max_size=2)) or ...,
    )


class TestProperties:
    @given(valid_results())
    def test_round_trip(self, payload: dict[str, object]) -> None:
        """Every valid result survives parse → document → parse unchanged."""
        parsed = mesh.parse_worker_result(payload)
        assert parsed == mesh.parse_worker_result(json.dumps(mesh.worker_result_document(parsed)))

    @given(valid_results(), st.booleans())
    def test_a_checked_result_is_written_as_the_converter_writes_it(
        self,
        payload: dict[str, object],
        every_field: bool,  # noqa: FBT001 - drawn by hypothesis
    ) -> None:
        """The engine's direct writer gives the converter's document, key order included."""
        if every_field:
            payload = {
                **payload,
                "failure_code": "proof_missing",
                "patch": "--- a/x\n+++ b/x\n",
                "patch_sha256": hashlib.sha256(b"--- a/x\n+++ b/x\n").hexdigest(),
                "reduce_record": LANE_EXTRAS["reducer"]["reduce_record"],
                "lease_id": "lease-1",
                "ttl_ms": 5,
                "worktree_path": "/w",
                "apply_evidence": {"command": "git apply", "key_line": "ok", "exit_code": 0},
                "artifact_ref": "a",
                "scope_assertion": "s",
            }
        parsed = mesh.parse_worker_result(payload)
        expected = mesh.worker_result_document(parsed)
        written = checked_result_document(parsed)
        assert list(written.items()) == list(expected.items())
        assert json.dumps(written) == json.dumps(expected)


ODD_VALUES: st.SearchStrategy[object] = st.sampled_from(
    [None, True, 0, 1, -1, 2.0, "", " ", "coder", "pass", "HEAD", [], ["a"], [1], ("a",), {}]
)


@st.composite
def altered_results(draw: st.DrawFn) -> dict[str, object]:
    """Valid results with some fields replaced, removed or added."""
    payload = dict(draw(valid_results()))
    for key in draw(st.lists(st.sampled_from([*sorted(payload), "lease_id", "extra"]), max_size=3)):
        if draw(st.booleans()):
            payload.pop(key, None)
        else:
            payload[key] = draw(ODD_VALUES)
    return payload


class TestFastPath:
    @given(altered_results())
    def test_fast_path_agrees_with_the_converter(self, payload: dict[str, object]) -> None:
        """The exact-type shortcut accepts only what the strict converter accepts, as it does."""
        fast = fast_structure(payload, mesh.WorkerResult)
        try:
            slow = structure(payload, mesh.WorkerResult, subject="worker result")
        except ValidationError:
            assert fast is None
        else:
            assert fast is None or fast == slow

    @given(altered_results())
    def test_typed_results_get_the_documents_verdict(self, payload: dict[str, object]) -> None:
        """A typed result is judged as its document is: same record, or same problems."""
        try:
            parsed = mesh.parse_worker_result(payload)
        except mesh.InvalidOutputSchema:
            return
        assert recheck_worker_result(parsed) == parsed

    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({"triplet_index": "1"}, "$.triplet_index: expected integer, got string"),
            ({"write_scope": ("src", 3)}, "$.write_scope[1]: expected string, got number"),
            ({"decision": "grant"}, "$.decision: coder may decide accept, no_diff, reject"),
        ],
    )
    def test_typed_results_with_wrong_values(self, changes: dict[str, Any], problem: str) -> None:
        """Attrs does not check types: a typed result built wrong is refused with its paths."""
        built = attrs.evolve(mesh.parse_worker_result(result()), **changes)
        with pytest.raises(mesh.InvalidOutputSchema) as caught:
            recheck_worker_result(built)
        assert caught.value.problems[0].startswith(problem)

    def test_plain_strings_in_a_typed_result_become_members(self) -> None:
        """A typed result given plain strings for enums comes back with the members."""
        plain: dict[str, Any] = {"lane": "coder", "write_scope": ["a"]}  # what attrs lets through
        built = attrs.evolve(mesh.parse_worker_result(result()), **plain)
        checked = recheck_worker_result(built)
        assert checked.lane is mesh.Lane.CODER
        assert checked.write_scope == ("a",)


class TestCheckedRecords:
    def test_a_checked_record_is_trusted_as_it_is(self) -> None:
        """A typed record checked once is not checked again: the same object comes back."""
        parsed = mesh.parse_worker_result(result())
        assert not is_checked(parsed)  # a parse's new record is not registered
        checked = recheck_worker_result(parsed)
        assert checked is parsed
        assert is_checked(parsed)
        assert recheck_worker_result(parsed) is parsed
        again = check_result(
            parsed, unit=unit("u1"), candidate_id="u1-coder-1", lane=mesh.Lane.CODER
        )
        assert again is parsed

    def test_an_answer_handed_in_again_is_checked_again(self) -> None:
        """The engine's check of a typed answer is for that call: changed since, it is refused."""
        answer_record = mesh.parse_worker_result(result())
        the_unit = unit("u1")
        checked = check_result(
            answer_record, unit=the_unit, candidate_id="u1-coder-1", lane=mesh.Lane.CODER
        )
        assert checked is answer_record
        assert not is_checked(answer_record)
        object.__setattr__(answer_record, "notes", "lone \ud800")  # an adapter mutating it
        with pytest.raises(mesh.InvalidOutputSchema, match="lone surrogate"):
            check_result(
                answer_record, unit=the_unit, candidate_id="u1-coder-1", lane=mesh.Lane.CODER
            )

    def test_an_equal_record_built_otherwise_is_checked(self) -> None:
        """Trust goes by identity: a copy, an evolved record or a hand-built one is checked."""
        parsed = recheck_worker_result(mesh.parse_worker_result(result()))
        copy = attrs.evolve(parsed)
        assert copy == parsed
        assert not is_checked(copy)
        assert not is_checked(mesh.WorkerResult(**attrs.asdict(parsed, recurse=False)))
        assert not is_checked(result())
        assert recheck_worker_result(copy) == parsed

    def test_a_wrong_record_is_never_trusted(self) -> None:
        """A record that fails its check is not remembered as checked."""
        wrong: dict[str, Any] = {"triplet_index": "1"}  # what attrs lets through
        built = attrs.evolve(mesh.parse_worker_result(result()), **wrong)
        with pytest.raises(mesh.InvalidOutputSchema):
            recheck_worker_result(built)
        assert not is_checked(built)

    def test_the_register_is_bounded(self) -> None:
        """Records never taken by the engine do not pile up: the oldest leave, untrusted."""
        first = recheck_worker_result(mesh.parse_worker_result(result()))
        for _ in range(300):
            recheck_worker_result(mesh.parse_worker_result(result()))
        assert len(_CHECKED) <= 256
        assert not is_checked(first)
        assert recheck_worker_result(first) is first  # checked again, and trusted again

    def test_threads_share_the_register_safely(self) -> None:
        """Records registered and taken from many threads at once never break the register."""
        errors: list[BaseException] = []

        def churn() -> None:
            try:
                for _ in range(400):
                    record = recheck_worker_result(attrs.evolve(parsed))
                    take_checked(record)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        parsed = mesh.parse_worker_result(result())
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=churn) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert errors == []
        assert len(_CHECKED) <= 256

    def test_the_engine_takes_a_record_once(self) -> None:
        """check_result takes the record out of the register: passed again, it is checked again."""
        parsed = recheck_worker_result(mesh.parse_worker_result(result()))

        def ask() -> mesh.WorkerResult:
            return check_result(
                parsed, unit=unit("u1"), candidate_id="u1-coder-1", lane=mesh.Lane.CODER
            )

        assert ask() is parsed
        assert not is_checked(parsed)
        assert ask() is parsed  # the fast check in place, then trusted


class _Sub(str):
    __slots__ = ()


class _Seq(list[object]):
    """A list subclass, as YAML libraries hand out."""


class _Tup(tuple[object, ...]):
    __slots__ = ()


class TestSurrogateScan:
    @pytest.mark.parametrize(
        "value",
        [
            {"a": "ok", 1: ["x", ("y", None, 3)], "n": None, "i": 2},
            types.MappingProxyType({"k": "v"}),
            mesh.ProofEvidence(command="c", key_line="é", exit_code=0),
            mesh.Lane.CODER,
            3.5,
        ],
    )
    def test_clean_values_pass(self, value: object) -> None:
        """Every kind of value an answer holds is walked without a false alarm."""
        assert not _any_surrogate(value)

    @pytest.mark.parametrize(
        "value",
        [
            {"\ud800": "key"},
            {"k": "value \udc00"},
            {1: {"deep": ["\udfff"]}},
            {(1, "\ud801"): "a tuple key"},
            types.MappingProxyType({"k": "\ud800"}),
            mesh.ProofEvidence(command="c", key_line="\ud800", exit_code=0),
            _Sub("\ud800"),
            {"write_scope": _Seq(["src", "\udc80"])},
            _Tup(("\ud800",)),
        ],
    )
    def test_a_lone_surrogate_is_found_anywhere(self, value: object) -> None:
        """A lone surrogate in a key, a value, a nested record or a str subclass is found."""
        assert _any_surrogate(value)


def test_a_surrogate_in_a_sequence_subclass_fails_the_answer() -> None:
    """An answer whose list is a subclass is scanned too: the surrogate is refused, not kept."""
    payload = result(write_scope=_Seq(["src/x.py", "\udc80"]))
    with pytest.raises(mesh.InvalidOutputSchema) as caught:
        mesh.parse_worker_result(payload)
    assert "not valid Unicode" in caught.value.problems[0]


NOT_UNICODE = "not valid Unicode (lone surrogate U+D800 at offset 0)"


class TestLoneSurrogates:
    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({"patch": "\ud800"}, "$.patch: not valid Unicode (lone surrogate U+D800 at offset 0)"),
            (
                {"patch": "--- a/é\n+\udc80x"},
                "$.patch: not valid Unicode (lone surrogate U+DC80 at offset 9)",
            ),
            (
                {"proof_evidence": {"command": "x", "key_line": "ok \udfff", "exit_code": 0}},
                "$.proof_evidence.key_line: not valid Unicode (lone surrogate U+DFFF at offset 3)",
            ),
            (
                {"challenge_findings": ["fine", "\ud801"]},
                "$.challenge_findings[1]: not valid Unicode (lone surrogate U+D801 at offset 0)",
            ),
            (
                {"notes": "x\udbff", "write_scope": ["src/\udc00"]},
                "$.write_scope[0]: not valid Unicode (lone surrogate U+DC00 at offset 4)",
            ),
        ],
    )
    def test_documents_and_typed_results_are_refused(
        self, changes: dict[str, Any], problem: str
    ) -> None:
        """A string that is not Unicode fails the answer with its path, typed or not."""
        assert problem in problems_of(result(**changes))
        fields: dict[str, Any] = {
            key: mesh.ProofEvidence(**value) if key == "proof_evidence" else value
            for key, value in changes.items()
        }
        typed = attrs.evolve(mesh.parse_worker_result(result()), **fields)
        with pytest.raises(mesh.InvalidOutputSchema) as caught:
            recheck_worker_result(typed)
        assert problem in caught.value.problems

    def test_every_string_is_looked_at(self) -> None:
        """Surrogates in several fields, nested records and slow-path documents are all listed."""
        problems = problems_of(
            result(
                "reducer",
                notes="\ud800",
                triplet_index="1",
                reduce_record={
                    "target_abstraction": "a",
                    "replacement_primitive": "b",
                    "complexity_delta": "c",
                    "invariants_preserved": ["ok", "\ud800"],
                    "rollback_plan": "d",
                },
            )
        )
        assert {
            "$.triplet_index: expected integer, got string",
            f"$.notes: {NOT_UNICODE}",
            f"$.reduce_record.invariants_preserved[1]: {NOT_UNICODE}",
        } <= set(problems)

    def test_valid_unicode_passes(self) -> None:
        """Accents, emoji and non-BMP characters (real surrogate pairs in JSON) are fine."""
        text = json.dumps(result(notes="é 😀 \U0001f600"))
        assert "\\ud83d\\ude00" in text
        assert mesh.parse_worker_result(text).notes == "é 😀 \U0001f600"

    @pytest.mark.anyio
    @pytest.mark.mesh_strict(strict=False)
    async def test_the_run_survives_and_only_that_candidate_fails(self, tmp_path: Path) -> None:
        """A coder patch with a lone surrogate fails its candidate; the run goes on to the end."""

        def coder(request: mesh.AuthorRequest) -> object:
            if request.triplet_index == 1:
                return attrs.evolve(
                    mesh.parse_worker_result(answer(request)), patch="+\ud800 broken\n"
                )
            return answer(request)

        with capture_ledger() as events:
            outcome = await execute(
                [unit("u1"), unit("u2")],
                fake_roles(coder=FakeAdapter(coder)),
                ledger_path=tmp_path / "ledger.jsonl",
            )
        assert [o.state for o in outcome.outcomes] == ["completed", "completed"]
        invalid = [
            e
            for e in events
            if e.event == "adapter_call" and e.data.get("outcome") == "invalid_output_schema"
        ]
        assert sorted(str(e.candidate_id) for e in invalid) == ["u1-coder-1", "u2-coder-1"]
        assert invalid[0].data["problems"] == [
            "$.patch: not valid Unicode (lone surrogate U+D800 at offset 1)"
        ]
        lines = (tmp_path / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(events)
        assert outcome.metrics.invalid_outputs == 2


class _Text(str):
    """A str subclass, as some libraries hand out."""

    __slots__ = ()


@attrs.frozen(kw_only=True)
class _Measured:
    ratio: float


@attrs.frozen(kw_only=True)
class _Holder:
    inner: _Measured


class TestFastPathLimits:
    def test_values_of_a_subclass_take_the_converters_path(self) -> None:
        """The shortcut wants exact types; a str subclass is still accepted, by the converter."""
        payload = result(id=_Text("u1"))
        assert fast_structure(payload, mesh.WorkerResult) is None
        assert mesh.parse_worker_result(payload).id == "u1"

    def test_classes_with_fields_it_does_not_know(self) -> None:
        """A class with a field kind the shortcut lacks (here float) is left to the converter."""
        assert fast_structure({"ratio": 0.5}, _Measured) is None
        assert fast_structure({"inner": {"ratio": 0.5}}, _Holder) is None
