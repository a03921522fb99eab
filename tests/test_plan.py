"""Plan parsing, dependency validation, plan_sync and slicing."""

from __future__ import annotations

import json

import pytest

import mesh


def step(text: str, status: str = "pending", **extra: object) -> dict[str, object]:
    return {"step": text, "status": status, **extra}


class TestParsePlan:
    @pytest.mark.parametrize(
        "payload",
        [
            [step("a")],
            {"plan": [step("a")]},
            {"plan": [step("a")], "explanation": "why"},
            {"steps": [step("a")]},
        ],
    )
    def test_accepted_shapes(self, payload: object) -> None:
        """An array, an update_plan object, and a {steps: [...]} object are all plans."""
        assert tuple(s.step for s in mesh.parse_plan(payload).steps) == ("a",)

    def test_non_object_entries_are_skipped(self) -> None:
        """Strings, numbers and nulls in the step list are skipped, not errors."""
        plan = mesh.parse_plan([1, "x", None, step("a"), [], step("b")])
        assert [s.step for s in plan.steps] == ["a", "b"]

    def test_every_problem_is_reported_with_its_path(self) -> None:
        """Wrong types and unknown keys are all listed, each with its JSON path."""
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.parse_plan(
                {
                    "plan": [
                        step("ok"),
                        {"step": 5, "deps": "a", "colour": "red"},
                        {"risk_tier": "x"},
                    ]
                }
            )
        assert list(caught.value.problems) == [
            "$.plan[1].step: expected string, got number",
            "$.plan[1].deps: expected array, got string",
            "$.plan[1]: unknown key 'colour'",
            "$.plan[2].risk_tier: expected one of low, med, high; got 'x'",
        ]
        assert caught.value.code == mesh.FailureCode.REQUIRES_CLARIFICATION

    @pytest.mark.parametrize(
        ("payload", "problem"),
        [
            ("text", "$: expected an array of steps or an object, got string"),
            ({"other": []}, "$: unknown key 'other'"),
            ({"explanation": "x"}, "$: expected key 'plan' (or 'steps') holding an array of steps"),
            ({"plan": {}}, "$.plan: expected array, got object"),
            ({"plan": [], "steps": []}, "$: give either 'plan' or 'steps', not both"),
            ({"plan": [], "explanation": 3}, "$.explanation: expected string, got number"),
        ],
    )
    def test_wrong_shapes(self, payload: object, problem: str) -> None:
        """A document that is not a plan names what is wrong."""
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.parse_plan(payload)
        assert problem in caught.value.problems

    def test_write_scope_string_is_split(self) -> None:
        """A write scope may be one ';'-separated string."""
        plan = mesh.parse_plan([step("a", write_scope="src/a; src/b")])
        assert plan.steps[0].write_scope == ("src/a", "src/b")

    def test_unknown_dependency(self) -> None:
        """A dependency on an id no step has is a plan error naming both."""
        with pytest.raises(mesh.PlanError, match=r"\$\[1\]: depends on unknown id 'ghost'"):
            mesh.parse_plan([step("a", id="a"), step("b", id="b", deps=["ghost"])])

    def test_duplicate_ids(self) -> None:
        """Two steps with one id are a plan error."""
        with pytest.raises(mesh.PlanError, match="duplicate id 'a'"):
            mesh.parse_plan([step("a", id="a"), step("b", id="a")])

    def test_cycle(self) -> None:
        """A dependency cycle is a plan error that names the cycle."""
        with pytest.raises(mesh.PlanError, match="dependency cycle") as caught:
            mesh.parse_plan(
                [
                    step("a", id="a", deps=["c"]),
                    step("b", id="b", deps=["a"]),
                    step("c", id="c", deps=["b"]),
                ]
            )
        assert {"a", "b", "c"} == set(caught.value.cycle)

    def test_self_dependency_is_a_cycle(self) -> None:
        """A step depending on itself is a cycle."""
        with pytest.raises(mesh.PlanError, match="cycle"):
            mesh.parse_plan([step("a", id="a", deps=["a"])])


class TestPlanSync:
    def test_counts(self) -> None:
        """Absent status is pending; unknown statuses count as other."""
        summary = mesh.plan_sync(
            [
                {"step": "a"},
                step("b", "in_progress"),
                step("c", "completed"),
                step("d", "blocked"),
                7,
            ]
        )
        assert summary.to_document() == {
            "command": "plan_sync",
            "total_steps": 4,
            "pending": 1,
            "in_progress": 1,
            "completed": 1,
            "other": 1,
        }


class TestSlice:
    def test_units_from_pending_and_in_progress_steps(self) -> None:
        """One unit per pending/in-progress step, in order, numbered unit-001..."""
        result = mesh.slice_plan(
            [step("done", "completed"), step("first", "in_progress"), {"title": "second"}, {}]
        )
        assert [u.id for u in result.units] == ["unit-001", "unit-002", "unit-003"]
        assert [u.objective for u in result.units] == ["first", "second", "untitled-step"]
        assert result.unit_count == 3

    def test_defaults_match_the_contract(self) -> None:
        """A bare step gets every documented default."""
        (unit,) = mesh.slice_plan([step("a")]).units
        assert unit.to_document() == {
            "id": "unit-001",
            "objective": "a",
            "unit_scope": "unknown",
            "write_scope": "unknown",
            "constraints": "",
            "invariants": "",
            "proof_command": "",
            "risk_tier": "med",
            "deps": [],
            "base_sha": "HEAD",
            "delivery_mode": "patch_first",
            "attempt": "1",
            "variant": "baseline",
            "budget_tier": "unknown",
        }

    def test_step_fields_are_carried(self) -> None:
        """Scopes, proof, risk and delivery given on a step reach the unit."""
        (unit,) = mesh.slice_plan(
            [
                step(
                    "a",
                    unit_scope="api",
                    write_scope=["src/api/**"],
                    proof_command="pytest -q",
                    risk_tier="high",
                    delivery_mode="commit_first",
                    base_sha="abc123",
                )
            ]
        ).units
        assert (
            unit.unit_scope,
            unit.write_scope,
            unit.proof_command,
        ) == ("api", ("src/api/**",), "pytest -q")
        assert (
            unit.risk_tier,
            unit.delivery_mode,
            unit.base_sha,
        ) == (mesh.RiskTier.HIGH, mesh.DeliveryMode.COMMIT_FIRST, "abc123")

    def test_dependencies_become_unit_ids(self) -> None:
        """Deps on completed steps are dropped; deps on sliced steps name their units."""
        result = mesh.slice_plan(
            [
                step("setup", "completed", id="setup"),
                step("core", id="core", deps=["setup"]),
                step("blocked", "blocked", id="held"),
                step("api", id="api", deps=["core", "setup", "held"]),
            ]
        )
        assert [u.deps for u in result.units] == [(), ("unit-001", "held")]

    def test_max_slices(self) -> None:
        """Only the first N units are kept; their deps on cut units stay."""
        result = mesh.slice_plan([step("a", id="a", deps=["b"]), step("b", id="b")], max_slices=1)
        assert [u.deps for u in result.units] == [("unit-002",)]
        assert mesh.slice_plan([step("a")], max_slices=0).units == ()

    def test_negative_max_slices(self) -> None:
        """A negative limit is an input error."""
        with pytest.raises(mesh.InputError):
            mesh.slice_plan([step("a")], max_slices=-1)

    def test_text_stays_exact(self) -> None:
        """Quotes, backslashes, any Unicode, and tabs and newlines in prose stay exact in JSON."""
        tricky = 'say "hi"\\ é 😀 \u200f'
        prose = 'line "one"\\\n\tline two'
        (unit,) = mesh.slice_plan([step(tricky, constraints=prose)]).units
        text = json.dumps(mesh.slice_plan([step(tricky, constraints=prose)]).to_document())
        assert (tricky, prose) == (unit.objective, unit.constraints)
        document = json.loads(text)["units"][0]
        assert (tricky, prose) == (document["objective"], document["constraints"])

    def test_control_characters_in_a_step_are_refused(self) -> None:
        """A step with control characters is a plan error, not text copied into units."""
        with pytest.raises(mesh.ValidationError, match="contains control character U\\+000A"):
            mesh.slice_plan([step('say "hi"\\ \n\t\x00 é 😀')])


class TestParseUnits:
    def test_round_trip_of_slice_output(self) -> None:
        """What slice writes, parse_units reads back to the same units."""
        sliced = mesh.slice_plan(
            [step("a", id="a", write_scope=["x", "y"]), step("b", id="b", deps=["a"])]
        )
        assert sliced.units == mesh.parse_units(sliced.to_document())

    def test_entries_without_string_id_are_skipped(self) -> None:
        """Entries that are not objects or lack a string id are skipped (contract)."""
        units = mesh.parse_units({"units": [1, {"objective": "x"}, {"id": 3}, {"id": "u"}]})
        assert [(u.id, u.objective) for u in units] == [("u", "untitled-step")]

    @pytest.mark.parametrize(
        ("payload", "problem"),
        [
            ([], "$: expected object, got array"),
            ({"units": {}}, "$.units: expected array, got object"),
            (
                {"units": [{"id": "u", "attempt": "zero"}]},
                "$.units[0].attempt: expected a whole number >= 1, got 'zero'",
            ),
            (
                {"units": [{"id": "u", "attempt": 0}]},
                "$.units[0].attempt: expected a whole number >= 1, got 0",
            ),
            ({"units": [{"id": "u", "extra": 1}]}, "$.units[0]: unknown key 'extra'"),
            ({"units": [], "more": 1}, "$: unknown key 'more'"),
        ],
    )
    def test_problems(self, payload: object, problem: str) -> None:
        """Malformed unit documents name each problem with its path."""
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.parse_units(payload)
        assert problem in caught.value.problems


class TestEstimateSeconds:
    def test_carried_from_step_to_unit_and_document(self) -> None:
        """A step's estimate reaches its unit, the slice document and back."""
        sliced = mesh.slice_plan([step("a", estimate_seconds=90), step("b", estimate_seconds=0.5)])
        assert [u.estimate_seconds for u in sliced.units] == [90.0, 0.5]
        documents = sliced.to_document()["units"]
        assert isinstance(documents, list)
        assert [d["estimate_seconds"] for d in documents] == [90.0, 0.5]
        assert mesh.parse_units(sliced.to_document()) == sliced.units

    def test_absent_estimate_leaves_the_document_as_it_was(self) -> None:
        """Without an estimate the slice output is byte for byte the contract's."""
        plan = [step("a", id="a"), step("b", deps=["a"], write_scope=["src"])]
        text = json.dumps(mesh.slice_plan(plan).to_document())
        assert "estimate_seconds" not in text
        assert mesh.slice_plan([step("a", estimate_seconds=None)]).units[0].estimate_seconds is None
        with_estimate = mesh.slice_plan([*plan, step("c", estimate_seconds=3)]).to_document()
        assert json.dumps(with_estimate).startswith(text[: text.index('], "unit_count"')])

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (0, "expected a positive, finite number of seconds, got 0"),
            (-2.5, "expected a positive, finite number of seconds, got -2.5"),
            (float("inf"), "expected a positive, finite number of seconds, got inf"),
            (float("nan"), "expected a positive, finite number of seconds, got nan"),
            (10**400, "expected a positive, finite number of seconds, got a number out of range"),
            ("60", "expected number, got string"),
            (True, "expected number, got boolean"),
            ([1], "expected number, got array"),
        ],
    )
    def test_bad_estimates_in_a_plan(self, value: object, problem: str) -> None:
        """Each bad estimate is a problem at its JSON path, beside the entry's other problems."""
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.parse_plan({"plan": [step("ok"), step("a", estimate_seconds=value, deps="x")]})
        assert f"$.plan[1].estimate_seconds: {problem}" in caught.value.problems
        assert "$.plan[1].deps: expected array, got string" in caught.value.problems

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (-1, "expected a positive, finite number of seconds, got -1"),
            ("1", "expected number, got string"),
        ],
    )
    def test_bad_estimates_in_a_units_document(self, value: object, problem: str) -> None:
        """A units document's estimate is checked as strictly as a plan's."""
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.parse_units({"units": [{"id": "u", "estimate_seconds": value}]})
        assert list(caught.value.problems) == [f"$.units[0].estimate_seconds: {problem}"]

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (0, "got 0"),
            (float("nan"), "got nan"),
            (10**400, "got a number out of range"),
            ("5", "expected a number of seconds, got str"),
            (False, "expected a number of seconds, got bool"),
        ],
    )
    def test_records_built_in_python_are_checked(self, value: object, message: str) -> None:
        """Unit and PlanStep refuse a bad estimate when built, as they refuse attempt 0."""
        with pytest.raises(ValueError, match=f"estimate_seconds: .*{message}"):
            mesh.Unit(id="u", objective="x", estimate_seconds=value)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"estimate_seconds: .*{message}"):
            mesh.PlanStep(step="x", estimate_seconds=value)  # type: ignore[arg-type]
        assert mesh.Unit(id="u", objective="x", estimate_seconds=7).estimate_seconds == 7
