"""Strict JSON decoding and the private converter."""

from __future__ import annotations

import json

import pytest

import mesh
from mesh.contracts._convert import dumps_json, loads_json, structure


class TestLoadsJson:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ('{"a": NaN}', "not JSON: NaN is not valid JSON"),
            ("[Infinity]", "not JSON: Infinity is not valid JSON"),
            ("[1e400]", "not JSON: number 1e400 is out of range"),
            ('{"a": 1, "a": 2}', "not JSON: duplicate key 'a'"),
            ('["\\ud800"]', "not JSON: $[0]: string contains an unpaired surrogate"),
            ('{"\\udfff": 1}', "not JSON: $: key contains an unpaired surrogate"),
            ("[1,]", "not JSON: Expecting value at line 1 column 4"),
            ("[" * 100_000, "$: nested too deeply"),
        ],
    )
    def test_rejections(self, text: str, problem: str) -> None:
        """Non-standard numbers, duplicate keys, lone surrogates and syntax errors are rejected."""
        with pytest.raises(mesh.ValidationError) as caught:
            loads_json(text, subject="doc")
        assert (problem,) == caught.value.problems

    def test_paired_surrogates_are_fine(self) -> None:
        """An escaped surrogate pair is one valid character."""
        assert loads_json('["\\ud83d\\ude00"]', subject="doc") == ["😀"]

    def test_dumps_keeps_text_exact(self) -> None:
        """Output is valid JSON that keeps non-ASCII text as it is."""
        assert dumps_json({"a": 'é"\n'}) == '{"a": "é\\"\\n"}'

    def test_dumps_escapes_what_rewrites_a_terminal(self) -> None:
        """C1 controls, line separators, bidi controls and marks, lone surrogates: escaped."""
        forged = "ab\x9b2J\x85\x7f\u2028\u2029\u202e\u2066\u200f\u061c\ud800é😀"
        text = dumps_json({"run_id": forged})
        assert text == (
            '{"run_id": "ab\\u009b2J\\u0085\\u007f\\u2028\\u2029\\u202e\\u2066'
            '\\u200f\\u061c\\ud800é😀"}'
        )
        assert {"run_id": forged} == json.loads(text)


class TestStructure:
    def test_no_coercion(self) -> None:
        """Numbers are not strings, strings are not arrays, booleans are not integers."""
        with pytest.raises(mesh.ValidationError) as caught:
            structure(
                {"command": 1, "key_line": ["x"], "exit_code": True},
                mesh.ProofEvidence,
                subject="e",
            )
        assert caught.value.problems == (
            "$.command: expected string, got number",
            "$.key_line: expected string, got array",
            "$.exit_code: expected integer, got boolean",
        )

    def test_non_object(self) -> None:
        """A record must come from an object."""
        with pytest.raises(mesh.ValidationError, match=r"\$: expected object, got null"):
            structure(None, mesh.ProofEvidence, subject="e")

    def test_nested_non_object(self) -> None:
        """A nested record given as a non-object is reported at its path."""
        payload = {
            "target_abstraction": "a",
            "replacement_primitive": "b",
            "complexity_delta": "c",
            "invariants_preserved": "not-a-list",
            "rollback_plan": "d",
        }
        with pytest.raises(mesh.ValidationError) as caught:
            structure(payload, mesh.ReduceRecord, subject="r")
        assert caught.value.problems == ("$.invariants_preserved: expected array, got string",)


class TestScalarHooks:
    def test_numbers_and_booleans_are_strict(self) -> None:
        """Floats must be finite numbers (not booleans or text); booleans must be booleans."""
        document = mesh.budget_policy(remaining_five_hour=40, remaining_weekly=28).to_document()
        del document["command"]
        document |= {
            "remaining_five_hour": "40",
            "remaining_weekly": float("nan"),
            "remaining_strict": True,
            "cas_scaleout_allowed": 1,
        }
        with pytest.raises(mesh.ValidationError) as caught:
            structure(document, mesh.BudgetDecision, subject="budget")
        assert caught.value.problems == (
            "$.remaining_five_hour: expected number, got string",
            "$.remaining_weekly: expected a finite number",
            "$.remaining_strict: expected number, got boolean",
            "$.cas_scaleout_allowed: expected boolean, got number",
        )

    def test_nested_record_given_a_scalar(self) -> None:
        """A nested record given as text is reported as needing an object."""
        payload = {"command": "c", "key_line": "k", "exit_code": 0}
        with pytest.raises(mesh.ValidationError) as caught:
            structure(
                {"id": "u", "objective": "o", "proof_evidence": "x"} | {"evidence": payload},
                mesh.WorkerResult,
                subject="w",
            )
        assert "$.proof_evidence: expected object" in caught.value.problems


def test_fast_path_leaves_odd_payloads_to_the_converter() -> None:
    """Not an object, a nested record that is not an object, a required key missing: None."""
    from mesh.contracts._convert import fast_structure  # noqa: PLC0415

    evidence = {"command": "c", "key_line": "k", "exit_code": 0}
    assert fast_structure(evidence, mesh.ProofEvidence) == mesh.ProofEvidence(
        command="c", key_line="k", exit_code=0
    )
    assert fast_structure([evidence], mesh.ProofEvidence) is None
    assert fast_structure({"command": "c", "key_line": "k"}, mesh.ProofEvidence) is None


def test_fast_path_leaves_a_scalar_where_a_list_belongs_to_the_converter() -> None:
    """A string where the contract wants an array of strings is the converter's to explain."""
    from mesh.contracts._convert import fast_structure  # noqa: PLC0415

    document = {
        "id": "u",
        "candidate_id": "c",
        "triplet_index": 1,
        "lane": "coder",
        "decision": "reject",
        "proof_status": "not_applicable",
        "write_scope": "src",
        "risk_tier": "low",
        "base_sha": "HEAD",
        "proof_attempts": 0,
        "proof_evidence": {"command": "", "key_line": "", "exit_code": 0},
    }
    assert fast_structure(document, mesh.WorkerResult) is None
    with pytest.raises(mesh.InvalidOutputSchema, match=r"\$\.write_scope: expected array"):
        mesh.parse_worker_result(document)
