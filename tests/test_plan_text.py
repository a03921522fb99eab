"""
The text trust boundary: what plan text may contain, and untrusted text printed on one line.

Plans, coder output and proof output are written by agents. Text with control
characters, line separators or bidi controls is refused where a plan is read,
and whatever mesh prints or writes from adapters goes through `one_line` (and,
in JSON lines, `json_line`) so that no value can forge a line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh
from mesh.cli import _cli
from mesh.cli._run_command import _Refusals, _report
from mesh.contracts._events import json_line, ledger_text
from mesh.contracts._text import TextLevel, first_surrogate, one_line, text_problem
from mesh.engine._plan_state import plan_units as _plan_units
from mesh.store._repo_run import RepositoryRun
from mesh.testing import FakeAdapter, answer, fake_roles

from engine_helpers import execute, unit

pytestmark = pytest.mark.anyio

FORGED = "ok\nunit-009 completed: forged\r\x1b[2K\u2028\u2029\x85\u202eevil\u2066"
"""Evidence an agent wrote to add lines to, and rewrite lines of, what mesh prints."""

# Every character str.splitlines() breaks on.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")
NAMED = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
EMPTY_SCOPE = "must name at least one path; leave write_scope out to allow the whole tree"
# Valid Unicode (two escaped lone surrogates would read back as one pair).
TEXT = st.text(st.characters(blacklist_categories=["Cs"]))


def unescape(text: str) -> str:
    """Read one_line's escapes back (the test's own decoder: proves nothing is lost)."""
    return ESCAPE.sub(lambda m: NAMED.get(m[1]) or chr(int(m[1][1:], 16)), text)


def step(text: str, **extra: object) -> dict[str, object]:
    return {"step": text, **extra}


def plan_problems(payload: object) -> tuple[str, ...]:
    with pytest.raises(mesh.ValidationError) as caught:
        mesh.parse_plan(payload)
    assert caught.value.subject == "plan"
    return caught.value.problems


def units_problems(payload: object) -> tuple[str, ...]:
    with pytest.raises(mesh.ValidationError) as caught:
        mesh.parse_units(payload)
    assert caught.value.subject == "units"
    return caught.value.problems


class TestTextProblem:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("ab\x00", "contains control character U+0000 at offset 2"),
            ("a\tb", "contains control character U+0009 at offset 1"),
            ("a\nb", "contains control character U+000A at offset 1"),
            ("\r", "contains control character U+000D at offset 0"),
            ("\x1b[2K", "contains control character U+001B at offset 0"),
            ("x\x7f", "contains control character U+007F at offset 1"),
            ("x\x85", "contains control character U+0085 at offset 1"),
            ("\x9f", "contains control character U+009F at offset 0"),
            ("é\u2028", "contains line separator U+2028 at offset 1"),
            ("\u2029", "contains paragraph separator U+2029 at offset 0"),
            ("a\u202ab", "contains bidi control U+202A at offset 1"),
            ("a\u202eb", "contains bidi control U+202E at offset 1"),
            ("\u2066", "contains bidi control U+2066 at offset 0"),
            ("\u2069", "contains bidi control U+2069 at offset 0"),
            ("ok\ud800", "contains lone surrogate U+D800 at offset 2"),
            ("\udfff", "contains lone surrogate U+DFFF at offset 0"),
        ],
    )
    def test_strict_refuses_every_class(self, text: str, problem: str) -> None:
        """Strict text has no control character, separator, bidi control or lone surrogate."""
        assert problem == text_problem(text)
        assert problem == text_problem(text, TextLevel.STRICT)

    def test_prose_allows_tab_and_newline_only(self) -> None:
        """Prose may hold tabs and newlines; a carriage return or ESC is still refused."""
        assert text_problem("one\n\ttwo\n", TextLevel.PROSE) is None
        assert (
            text_problem("one\r\n", TextLevel.PROSE)
            == "contains control character U+000D at offset 3"
        )
        assert text_problem("\u2067", TextLevel.PROSE) == "contains bidi control U+2067 at offset 0"

    @pytest.mark.parametrize("text", ["", 'say "hi" \\ é 😀', "\u200f mark", "a\u3000b"])
    def test_ordinary_text_passes(self, text: str) -> None:
        """Quotes, backslashes, accents, emoji and other marks are ordinary text."""
        assert text_problem(text) is None

    def test_first_surrogate(self) -> None:
        """The offset and code point of the first lone surrogate, or None."""
        assert first_surrogate("plain ascii") is None
        assert first_surrogate("é 😀") is None
        assert first_surrogate("é \udc80\ud800") == (2, 0xDC80)


class TestOneLine:
    def test_forged_lines_become_visible_escapes(self) -> None:
        """Line breaks, ESC, separators and bidi controls print as escapes, on one line."""
        assert (
            one_line(FORGED)
            == "ok\\nunit-009 completed: forged\\r\\x1b[2K\\u2028\\u2029\\x85\\u202eevil\\u2066"
        )

    def test_backslashes_are_doubled(self) -> None:
        """Text that spells an escape cannot print the same as the character it names."""
        assert one_line("a\\nb") == "a\\\\nb"
        assert one_line("a\\nb") != one_line("a\nb")
        assert one_line("\ud800 \t") == "\\ud800 \\t"

    def test_safe_text_is_returned_unchanged(self) -> None:
        """Text with nothing to escape is the same object back."""
        text = 'say "hi" é 😀'
        assert one_line(text) is text

    @pytest.mark.parametrize(
        ("text", "limit", "expected"),
        [
            ("a fairly long line", 8, "a fairl…"),
            ("short", 5, "short"),
            ("short", 10, "short"),
            ("ab\ncdef", 5, "ab\\n…"),
            ("ab\ncdef", 4, "ab…"),
            ("a\u2028bcdefgh", 6, "a…"),
            ("a\u2028bcdefgh", 8, "a\\u2028…"),
            ("x\\y" * 3, 4, "x\\\\…"),
            ("\n\n\n", 5, "\\n\\n…"),
            ("abc", 1, "…"),
        ],
    )
    def test_limit_never_cuts_an_escape(self, text: str, limit: int, expected: str) -> None:
        """A cut keeps at most ``limit`` characters, the last an ellipsis; escapes stay whole."""
        assert expected == one_line(text, limit=limit)
        assert len(one_line(text, limit=limit)) <= limit

    @given(st.text())
    def test_never_a_line_break_or_forbidden_character(self, text: str) -> None:
        """Whatever the text, the result is one line of strictly safe characters."""
        printed = one_line(text)
        assert not any(char in LINE_BREAKS for char in printed)
        assert len(printed.splitlines()) <= 1
        assert text_problem(printed) is None

    @given(st.text())
    def test_nothing_is_lost(self, text: str) -> None:
        """The escapes read back to the text: two different texts never print the same."""
        assert text == unescape(one_line(text))

    @given(st.text(), st.text())
    def test_different_texts_print_differently(self, first: str, second: str) -> None:
        """one_line is injective."""
        assert (first == second) == (one_line(first) == one_line(second))

    @given(st.text(st.characters(blacklist_characters="\\", blacklist_categories=["Cc", "Cs"])))
    def test_idempotent_on_safe_text(self, text: str) -> None:
        """Text that passes the strict check and has no backslash comes back unchanged."""
        if text_problem(text) is None:
            assert text == one_line(text) == one_line(one_line(text))

    @given(st.text(), st.integers(1, 40))
    def test_limit_is_a_prefix(self, text: str, limit: int) -> None:
        """A cut result is a prefix of the full one, plus the ellipsis."""
        full, cut = one_line(text), one_line(text, limit=limit)
        assert len(cut) <= limit
        assert cut == full or (cut.endswith("…") and full.startswith(cut[:-1]))


class TestPlanText:
    def test_every_problem_is_listed_with_its_path(self) -> None:
        """Forbidden characters in any field are all reported, with type problems."""
        problems = plan_problems(
            {
                "explanation": "fine\n\tprose\x1b",
                "plan": [
                    step("ok"),
                    {
                        "step": "fix\x00",
                        "id": "a\tb",
                        "deps": ["fine", "x\ny"],
                        "write_scope": ["src", "docs\u202e"],
                        "unit_scope": "\u2028",
                        "constraints": "line one\nline two\r",
                        "invariants": "keep\tthis\n",
                        "proof_command": "pytest\n",
                        "base_sha": "HEAD\x85",
                        "variant": "v\x7f",
                        "budget_tier": "\u2066",
                        "title": "t\u2029",
                        "status": "pending\n",
                        "risk_tier": "x",
                    },
                    {"step": 5, "write_scope": "src\t;lib"},
                ],
            }
        )
        assert list(problems) == [
            "$.explanation: contains control character U+001B at offset 11",
            "$.plan[1].risk_tier: expected one of low, med, high; got 'x'",
            "$.plan[1].step: contains control character U+0000 at offset 3",
            "$.plan[1].id: contains control character U+0009 at offset 1",
            "$.plan[1].deps[1]: contains control character U+000A at offset 1",
            "$.plan[1].write_scope[1]: contains bidi control U+202E at offset 4",
            "$.plan[1].unit_scope: contains line separator U+2028 at offset 0",
            "$.plan[1].constraints: contains control character U+000D at offset 17",
            "$.plan[1].proof_command: contains control character U+000A at offset 6",
            "$.plan[1].base_sha: contains control character U+0085 at offset 4",
            "$.plan[1].variant: contains control character U+007F at offset 1",
            "$.plan[1].budget_tier: contains bidi control U+2066 at offset 0",
            "$.plan[1].title: contains paragraph separator U+2029 at offset 1",
            "$.plan[1].status: contains control character U+000A at offset 7",
            "$.plan[2].step: expected string, got number",
            "$.plan[2].write_scope: contains control character U+0009 at offset 3",
        ]

    def test_prose_fields_keep_tabs_and_newlines(self) -> None:
        """Constraints, invariants and the explanation may span lines; they stay exact."""
        plan = mesh.parse_plan(
            {
                "explanation": "why:\n\tbecause",
                "plan": [step("a", constraints="one\n\ttwo", invariants="x\ny")],
            }
        )
        (the_unit,) = mesh.slice_plan(plan).units
        assert (plan.explanation, the_unit.constraints, the_unit.invariants) == (
            "why:\n\tbecause",
            "one\n\ttwo",
            "x\ny",
        )

    @pytest.mark.parametrize("scope", [[], "", [""], ["  "], ";", " ; ", ["", " "]])
    def test_an_explicitly_empty_write_scope_is_refused(self, scope: object) -> None:
        """An empty scope is not the whole tree by default: the author is told how to write it."""
        expected = f"$[0].write_scope: {EMPTY_SCOPE}"
        assert (expected,) == plan_problems([step("a", write_scope=scope)])
        assert (expected.replace("$[0]", "$.units[0]"),) == units_problems(
            {"units": [{"id": "u1", "write_scope": scope}]}
        )

    def test_a_blank_root_among_real_ones_is_refused(self) -> None:
        """A blank root would mean the whole tree: it is refused, not dropped."""
        assert plan_problems([step("a", write_scope=["src", " "])]) == (
            "$[0].write_scope[1]: must not be blank; name a path or remove the entry",
        )

    @pytest.mark.parametrize("payload", [[step("a")], [step("a", write_scope=None)]])
    def test_a_missing_write_scope_is_the_whole_tree(self, payload: object) -> None:
        """Leaving write_scope out (or null) keeps the contract default "unknown"."""
        assert mesh.slice_plan(payload).units[0].write_scope == ("unknown",)

    def test_slice_output_is_unchanged_for_valid_plans(self, tmp_path: Path) -> None:
        """The slice document of a valid plan is byte for byte what it always was."""
        plan = tmp_path / "plan.json"
        plan.write_text(
            json.dumps(
                {
                    "explanation": "why:\n\tbecause",
                    "plan": [
                        {
                            "id": "a",
                            "step": 'say "hi" \\ é 😀',
                            "write_scope": "src/a; src/b",
                            "constraints": "line 1\n\tline 2",
                            "invariants": "x\ny",
                        },
                        {"id": "b", "title": "t", "deps": ["a"], "write_scope": ["docs/**/*.md"]},
                        {"step": "done", "status": "completed"},
                        {"step": "rest"},
                    ],
                }
            )
        )
        rest = (
            '"proof_command": "", "risk_tier": "med", "deps": %s, "base_sha": "HEAD", '
            '"delivery_mode": "patch_first", "attempt": "1", "variant": "baseline", '
            '"budget_tier": "unknown"}'
        )
        expected = (
            '{"command": "slice", "units": ['
            '{"id": "unit-001", "objective": "say \\"hi\\" \\\\ é 😀", "unit_scope": "unknown", '
            '"write_scope": "src/a;src/b", "constraints": "line 1\\n\\tline 2", '
            f'"invariants": "x\\ny", {rest % "[]"}, '
            '{"id": "unit-002", "objective": "t", "unit_scope": "unknown", '
            '"write_scope": "docs/**/*.md", "constraints": "", "invariants": "", '
            f"{rest % json.dumps(['unit-001'])}, "
            '{"id": "unit-003", "objective": "rest", "unit_scope": "unknown", '
            '"write_scope": "unknown", "constraints": "", "invariants": "", '
            f'{rest % "[]"}], "unit_count": 3}}\n'
        )
        assert (0, expected, "") == _cli.run(["slice", "--input-json", str(plan)])

    def test_the_command_line_names_the_problem_on_one_line(self, tmp_path: Path) -> None:
        """`mesh slice` on plan text with a NUL fails with one line naming path and offset."""
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps([step("fix\x00it\nnow")]))
        code, out, err = _cli.run(["slice", "--input-json", str(plan)])
        assert (code, out) == (1, "")
        assert err == (
            "error: ValidationError: invalid plan (1 problem): "
            "$[0].step: contains control character U+0000 at offset 3\n"
        )

    def test_units_documents_are_checked_too(self) -> None:
        """A units document (what slice writes, what wave reads) gets the same checks."""
        assert units_problems(
            {
                "units": [
                    {"id": "u1", "objective": "do\nthis", "constraints": "\x1b", "attempt": "0"},
                    {"id": "u2", "deps": ["u\u202e1"], "invariants": "multi\nline"},
                ]
            }
        ) == (
            "$.units[0].objective: contains control character U+000A at offset 2",
            "$.units[0].constraints: contains control character U+001B at offset 0",
            "$.units[0].attempt: expected a whole number >= 1, got 0",
            "$.units[1].deps[0]: contains bidi control U+202E at offset 1",
        )

    def test_wave_refuses_an_empty_scope_in_a_units_document(self) -> None:
        """`wave` reads units through parse_units, so an empty scope is refused there as well."""
        with pytest.raises(mesh.ValidationError, match=r"\$\.units\[0\]\.write_scope: must name"):
            mesh.select_wave({"units": [{"id": "u1", "write_scope": ""}]})


class TestScopeRoots:
    @pytest.mark.parametrize(
        ("scope", "problem"),
        [
            (["../x"], "$.plan[0].write_scope[0]: '../x' climbs out with '..'"),
            (["/etc"], "$.plan[0].write_scope[0]: '/etc' is an absolute path"),
            (["src", "C:/w"], "$.plan[0].write_scope[1]: 'C:/w' is an absolute path"),
            (
                ["src/.git/hooks"],
                "$.plan[0].write_scope[0]: 'src/.git/hooks' writes into git's own files",
            ),
            (["src/.GIT"], "$.plan[0].write_scope[0]: 'src/.GIT' writes into git's own files"),
            ("src;../x", "$.plan[0].write_scope: '../x' climbs out with '..'"),
            (["/"], "$.plan[0].write_scope[0]: '/' is an absolute path"),
            (["/."], "$.plan[0].write_scope[0]: '/.' is an absolute path"),
            (["\\"], "$.plan[0].write_scope[0]: '\\\\' is an absolute path"),
        ],
    )
    def test_roots_no_candidate_may_write(self, scope: object, problem: str) -> None:
        """A root outside the worktree or inside .git can never be written: a plan error."""
        with pytest.raises(mesh.ValidationError) as caught:
            mesh.parse_plan({"plan": [{"step": "x", "write_scope": scope}]})
        assert caught.value.problems == (problem,)

    @pytest.mark.parametrize("scope", [["./src/"], ["src/*.py"], ["unknown"], ["**"], ["a b/c"]])
    def test_ordinary_roots(self, scope: list[str]) -> None:
        """Relative roots, globs and the whole-tree spellings stay valid."""
        assert mesh.parse_plan({"plan": [{"step": "x", "write_scope": scope}]}).steps


class _Text(str):
    """Text of a subclass of str, as some libraries hand out."""

    __slots__ = ()


class TestEngineEntry:
    @pytest.mark.parametrize(
        ("the_unit", "problem"),
        [
            (
                mesh.Unit(id="u1", objective="do\nthis"),
                "unit u1.objective: contains control character U+000A at offset 2",
            ),
            (
                mesh.Unit(id="u\n1", objective="x"),
                "unit u\\n1.id: contains control character U+000A at offset 1",
            ),
            (
                mesh.Unit(id="u1", objective="x", write_scope=("src", "\u202e")),
                "unit u1.write_scope[1]: contains bidi control U+202E at offset 0",
            ),
            (
                mesh.Unit(id="u1", objective="x", constraints="a\rb"),
                "unit u1.constraints: contains control character U+000D at offset 1",
            ),
            (
                mesh.Unit(id="u1", objective="x", write_scope=()),
                f"unit u1.write_scope: {EMPTY_SCOPE}",
            ),
            (
                mesh.Unit(id="u1", objective="x", write_scope=("",)),
                f"unit u1.write_scope: {EMPTY_SCOPE}",
            ),
            # attrs checks no types: a list, or a str subclass, gets the same reading.
            (
                mesh.Unit(id="u1", objective="x", write_scope=["src", "a\x1bb"]),  # type: ignore[arg-type]
                "unit u1.write_scope[1]: contains control character U+001B at offset 1",
            ),
            (
                mesh.Unit(id="u1", objective=_Text("do\u2028this")),
                "unit u1.objective: contains line separator U+2028 at offset 2",
            ),
        ],
    )
    def test_unit_records_are_checked_like_documents(
        self, the_unit: mesh.Unit, problem: str
    ) -> None:
        """Units built in Python get the same problems, addressed by unit id."""
        with pytest.raises(mesh.ValidationError) as caught:
            _plan_units([the_unit])
        assert ("units", (problem,)) == (caught.value.subject, caught.value.problems)

    def test_plan_records_are_checked_like_documents(self) -> None:
        """A Plan built in Python: text problems by step index, and its dependencies."""
        bad = mesh.Plan(
            steps=(mesh.PlanStep(step="a\x1b"), mesh.PlanStep(step="b", write_scope=())),
            explanation="\u2028",
        )
        with pytest.raises(mesh.ValidationError) as caught:
            _plan_units(bad)
        assert caught.value.problems == (
            "plan.explanation: contains line separator U+2028 at offset 0",
            "plan.steps[0].step: contains control character U+001B at offset 1",
            f"plan.steps[1].write_scope: {EMPTY_SCOPE}",
        )
        ghost = mesh.Plan(steps=(mesh.PlanStep(step="a", deps=("ghost",)),))
        with pytest.raises(mesh.PlanError, match=r"plan\.steps\[0\]: depends on unknown id"):
            _plan_units(ghost)
        good = mesh.parse_plan([step("a", id="a"), step("b", deps=["a"])])
        assert [u.id for u in _plan_units(good)[0]] == ["unit-001", "unit-002"]
        document = mesh.slice_plan(good).to_document()
        assert _plan_units(document) == (mesh.slice_plan(good).units, None)

    async def test_nothing_runs_before_the_check(self) -> None:
        """A hostile unit stops the run before any adapter is called."""
        coder = FakeAdapter()
        roles = fake_roles(coder=coder)
        with pytest.raises(mesh.ValidationError, match=r"unit u2\.objective"):
            await execute([unit("u1"), mesh.Unit(id="u2", objective="x\u2029y")], roles)
        assert coder.calls == []

    async def test_a_good_unit_list_still_runs(self) -> None:
        """Checked units with dependencies run as before."""
        result = await execute([unit("u1"), unit("u2", "u1")], fake_roles())
        assert [o.state for o in result.outcomes] == ["completed", "completed"]


def failing_proof(request: mesh.ProofRequest) -> dict[str, object]:
    return answer(
        request,
        decision="fail",
        proof_status="fail",
        proof_evidence={"command": "pytest", "key_line": FORGED, "exit_code": 1},
    )


def refused_apply(request: mesh.ApplyRequest) -> dict[str, object]:
    if request.candidate_id.startswith("u1-coder-2"):
        return answer(
            request,
            decision="apply_failed",
            proof_evidence={"command": "git apply", "key_line": FORGED, "exit_code": 1},
        )
    return answer(request)


class TestRunReport:
    async def test_forged_evidence_cannot_add_or_rewrite_lines(self) -> None:
        """Evidence with line breaks, ESC and bidi controls stays on the line of its candidate."""
        refusals = _Refusals()
        roles = fake_roles(prover=FakeAdapter(failing_proof), applier=FakeAdapter(refused_apply))
        result = await execute(
            [unit("u1")], roles, sinks=[mesh.CallbackSink(refusals.on_event)], run_id="r1"
        )
        folder = Path("out")
        finished = RepositoryRun(
            result=result,
            out=folder,
            ledger_path=folder / "ledger.jsonl",
            plan_path=folder / "plan.json",
            patches=folder / "patches",
            store_path=folder / "run.sqlite",
            workspaces_created=0,
            workspaces_reused=0,
        )
        text = _report(finished, refusals).text
        lines = text.split("\n")
        assert len(text.splitlines()) == len(lines)  # no break but "\n" anywhere
        assert not any(char in text for char in "\r\x1b\x85\u2028\u2029\u202e\u2066")
        assert not any(line.startswith("unit-009") for line in lines)
        refused = lines[lines.index("Candidates refused:") + 1 :][: len(refusals.reasons)]
        assert len(refusals.reasons) == len(refused) >= 2
        escaped = one_line(FORGED)
        assert "  u1-coder-2: not applied: " + escaped in refused
        assert "  u1-coder-1: proof failed: " + escaped in refused
        # The unit's evidence: every problem it met, each escaped on its one line.
        problems = f"pytest: {escaped} | u1-coder-2: {escaped} | u1-coder-2-a2: {escaped}"
        assert f"u1 failed: proof_missing ({problems})" == lines[-1]


class TestJsonLines:
    def event(self, text: str) -> mesh.LedgerEvent:
        return mesh.LedgerEvent(
            event="adapter_call",
            run_id="r1",
            seq=1,
            at=1.0,
            unit_id="u1",
            data={"evidence": text, "nested": [{"why": text}]},
        )

    def test_every_event_is_one_line_for_any_reader(self, tmp_path: Path) -> None:
        """U+2028, U+2029 and NEL are escaped: str.splitlines() sees one line per event."""
        path = tmp_path / "ledger.jsonl"
        events = [self.event(FORGED), self.event("plain é"), self.event("\ud800 lone")]
        with mesh.JsonLinesSink(path) as sink:
            for event in events:
                sink.emit(event)
        text = path.read_text(encoding="utf-8")
        assert len(events) == len(text.splitlines())
        assert "\\u2028\\u2029\\u0085" in text
        assert [json.loads(line) for line in text.splitlines()] == [e.to_document() for e in events]
        assert text == ledger_text(events)

    def test_everything_else_is_byte_identical(self) -> None:
        """Without those characters, a line is exactly json.dumps(ensure_ascii=False)."""
        document = self.event('quotes " tab \t é 😀 \x1b').to_document()
        assert json.dumps(document, ensure_ascii=False) + "\n" == json_line(document)

    @given(st.dictionaries(TEXT, TEXT | st.lists(TEXT, max_size=3), max_size=4))
    def test_any_document_is_one_line_and_reads_back(self, document: dict[str, object]) -> None:
        """Whatever the strings, the line is one line of UTF-8 that decodes to the document."""
        line = json_line(document)
        assert line.endswith("\n")
        assert len(line.splitlines()) == 1
        line.encode("utf-8")
        assert document == json.loads(line)
