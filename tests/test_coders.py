"""Coders: an agent CLI, a Python callable and a script, each diffed in a scratch worktree."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path

import anyio
import pytest

import mesh
from mesh.git._coders import render_command

from repo_helpers import git, unit

pytestmark = pytest.mark.anyio


def author(
    the_unit: mesh.Unit, lane: mesh.Lane = mesh.Lane.CODER, index: int = 1
) -> mesh.AuthorRequest:
    return mesh.AuthorRequest(
        unit=the_unit,
        lane=lane,
        candidate_id=f"{the_unit.id}-{lane}-{index}",
        triplet_index=index,
        attempt=1,
    )


def parsed(document: dict[str, object]) -> mesh.WorkerResult:
    return mesh.parse_worker_result(document)


class TestCommandCoder:
    async def test_diff_of_what_the_command_changed(
        self, repo: Path, workspaces: mesh.WorkspaceManager
    ) -> None:
        """The command edits its worktree; the candidate is the diff at the base commit."""
        coder = mesh.CommandCoder(workspaces, "printf 'VALUE = 2\\n' > src/util.py && echo edited")
        result = parsed(await coder(author(unit())))
        assert (result.decision, result.notes) == (mesh.Decision.ACCEPT, "edited")
        assert result.base_sha == git(repo, "rev-parse", "HEAD")
        assert "+VALUE = 2" in (result.patch or "")
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"
        assert workspaces.in_use == 0

    async def test_placeholders_are_shell_quoted(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Unit fields reach the command as single arguments, never as shell code."""
        record = tmp_path / "args.json"
        script = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
        command = (
            f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {record} "
            "{objective} {write_scope} {candidate_id} {lane}"
        )
        the_unit = mesh.Unit(
            id="u1", objective='say "hi" $(touch pwned) `id`; rm -rf /', write_scope=("src", "docs")
        )
        result = parsed(await mesh.CommandCoder(workspaces, command)(author(the_unit)))
        assert json.loads(record.read_text())[1:] == [
            the_unit.objective,
            "src docs",
            "u1-coder-1",
            "coder",
        ]
        assert (result.decision, result.notes) == (mesh.Decision.NO_DIFF, "no change")
        assert not (tmp_path / "pwned").exists()

    async def test_environment_and_reduce_record_file(
        self, workspaces: mesh.WorkspaceManager
    ) -> None:
        """The unit is in MESH_* variables; a reducer may write its own reduce record."""
        record = {
            "target_abstraction": "util",
            "replacement_primitive": "constant",
            "complexity_delta": "-3",
            "invariants_preserved": ["VALUE"],
            "rollback_plan": "revert",
        }
        command = (
            f'echo "$MESH_OBJECTIVE" > src/objective.txt && '
            f'echo {shlex.quote(json.dumps(record))} > "$MESH_REDUCE_RECORD"'
        )
        command = command.replace("{", "{{").replace("}", "}}")
        coder = mesh.CommandCoder(workspaces, command, env={"EXTRA": "1"})
        result = parsed(await coder(author(unit(), mesh.Lane.REDUCER, 3)))
        assert "+change u1" in (result.patch or "")
        assert result.reduce_record is not None
        assert result.reduce_record.complexity_delta == "-3"

    async def test_measured_reduce_record(self, workspaces: mesh.WorkspaceManager) -> None:
        """Without a record from the command, a reducer's candidate gets one of measured facts."""
        coder = mesh.CommandCoder(workspaces, "printf 'a\\nb\\n' > src/new.py")
        result = parsed(await coder(author(unit(), mesh.Lane.REDUCER, 3)))
        assert result.reduce_record is not None
        assert result.reduce_record.complexity_delta == "+2/-0 lines"

    @pytest.mark.parametrize(
        ("command", "reason"),
        [
            (
                "echo 'Error: model overloaded'; exit 4",
                "reducer command exit code 4: Error: model overloaded",  # named by its lane
            ),
            ("echo '[1,2]' > \"$MESH_REDUCE_RECORD\"", "MESH_REDUCE_RECORD is not a JSON object"),
            ("echo '{{oops' > \"$MESH_REDUCE_RECORD\"", "MESH_REDUCE_RECORD is not JSON: "),
            ("printf '\\377' > \"$MESH_REDUCE_RECORD\"", "MESH_REDUCE_RECORD is not UTF-8 text"),
            ('mkfifo "$MESH_REDUCE_RECORD"', "MESH_REDUCE_RECORD is not a regular file"),
            ('ln -s /etc/passwd "$MESH_REDUCE_RECORD"', "MESH_REDUCE_RECORD cannot be read: "),
            (
                'head -c 1048577 /dev/zero > "$MESH_REDUCE_RECORD"',
                "MESH_REDUCE_RECORD is larger than 1048576 bytes",
            ),
        ],
        ids=["exit", "not-an-object", "not-json", "not-utf8", "fifo", "symlink", "too-large"],
    )
    async def test_failures_are_rejects(
        self, workspaces: mesh.WorkspaceManager, command: str, reason: str
    ) -> None:
        """A failing command, or an unusable reduce record, is a reject with the reason."""
        result = parsed(
            await mesh.CommandCoder(workspaces, command)(author(unit(), mesh.Lane.REDUCER, 3))
        )
        assert result.decision is mesh.Decision.REJECT
        assert (result.notes or "").startswith(reason)

    async def test_timeout_is_a_reject(self, workspaces: mesh.WorkspaceManager) -> None:
        """A coder command that runs over its timeout is stopped and rejected."""
        coder = mesh.CommandCoder(workspaces, "sleep 30", timeout=0.3)
        result = parsed(await coder(author(unit())))
        assert (result.decision, (result.notes or "")[:24]) == (
            mesh.Decision.REJECT,
            "coder command timed out:",
        )

    def test_bad_templates(self) -> None:
        """Unknown placeholders and broken braces are caught when the coder is made."""
        with pytest.raises(mesh.OptionError, match="unknown placeholder 'prompt'"):
            mesh.check_command_template("agent {prompt}")
        with pytest.raises(mesh.OptionError, match=r"command template 'agent \{'"):
            mesh.check_command_template("agent {")
        mesh.check_command_template("agent {objective} --scope {write_scope}")

    async def test_glued_placeholders_stay_one_argument(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Placeholders glued to words, or to quoted text, pass hostile values as they are."""
        record = tmp_path / "args.json"
        script = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
        command = (
            f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {record} "
            '--prompt={objective} x{unit_id}y "fix: "{objective} \\"{lane}\\" {{literal}}'
        )
        hostile = 'say "hi" $(touch pwned) `id` \'; rm -rf / #'
        the_unit = mesh.Unit(id="u1", objective=hostile)
        await mesh.CommandCoder(workspaces, command)(author(the_unit))
        assert json.loads(record.read_text())[1:] == [
            f"--prompt={hostile}",
            "xu1y",
            f"fix: {hostile}",
            '"coder"',
            "{literal}",
        ]
        assert not (tmp_path / "pwned").exists()

    @pytest.mark.parametrize(
        ("template", "problem"),
        [
            (
                'agent "{objective}"',
                "{objective} is inside double quotes: write the placeholder bare",
            ),
            (
                "agent '{objective}'",
                "{objective} is inside single quotes: write the placeholder bare",
            ),
            ('agent --prompt="fix: {objective}"', "{objective} is inside double quotes"),
            ("agent $'{objective}'", "{objective} is inside $'...' quotes"),
            ('agent $"{objective}"', "{objective} is inside double quotes"),
            ('agent "a\\"{objective}"', "{objective} is inside double quotes"),
            ("agent `echo {objective}`", "{objective} is inside a command substitution"),
            ("agent $(echo {objective})", "{objective} is inside a command substitution"),
            ('agent "$(cat {worktree})"', "{worktree} is inside a command substitution"),
            ("agent $(( {attempt} + 1 ))", "{attempt} is inside a command substitution"),
            ("diff <(cat {worktree}) x", "{worktree} is inside a command substitution"),
            ("agent # {objective}", "{objective} is inside a # comment"),
            ("cat <<EOF\n{objective}\nEOF", "{objective} comes after a here-document (<<)"),
            ("agent \\{objective}", "a backslash right before {objective} undoes mesh's quoting"),
            ("agent ${objective}", "a $ right before {objective} makes the shell expand the value"),
            (
                "agent {objective!r}",
                "{objective!r}: conversions are not allowed; write {objective}",
            ),
            ("agent {objective:>10}", "{objective:>10}: format specs are not allowed"),
            ("agent {objective.upper}", "{objective.upper}: attribute and index access"),
            ("agent {objective[0]}", "{objective[0]}: attribute and index access"),
            ("agent {}", "{} is not a placeholder: name one (placeholders: {unit_id}"),
            ("agent {0}", "{0} is not a placeholder"),
        ],
    )
    def test_unsafe_placeholders_are_refused(self, template: str, problem: str) -> None:
        """A field the shell would not read as one quoted word is refused, saying what to write."""
        with pytest.raises(mesh.OptionError) as caught:
            mesh.check_command_template(template)
        message = str(caught.value)
        assert caught.value.kind == "InvalidOptionValue"
        assert message.startswith(f"command template {template!r}: {problem}")
        assert len(message.splitlines()) == 1

    def test_quoting_advice_names_the_fix(self) -> None:
        """The quotes message says why and how: bare placeholders, quoted text beside them."""
        with pytest.raises(mesh.OptionError) as caught:
            mesh.check_command_template('agent "{objective}"')
        assert str(caught.value) == (
            "command template 'agent \"{objective}\"': {objective} is inside double quotes: "
            "write the placeholder bare, as in agent {objective}, because mesh shell-quotes "
            'every value (to add text around it, quote only the text: --prompt="fix: "{objective})'
        )

    @pytest.mark.parametrize(
        "template",
        [
            "agent {objective}",
            "agent --prompt={objective}",
            "x{unit_id}y",
            'agent \\"{objective}\\"',
            "agent \\'{objective}\\'",
            "echo '{{oops' > \"$MESH_REDUCE_RECORD\" && agent {objective}",
            "agent 'it''s' \"a\\\"b\" $'c\\'d' {objective}",
            "agent $(true) `true` {objective}",
            "( cd src && agent {objective} )",
            "agent # it's fine\nagent {objective}",
            "a#b {objective}",
            "echo $# {objective}",
            "cat <<< {objective}",
            'agent "$" "--x=$HOME" {objective}',
            "agent '\\' {objective}",
        ],
    )
    def test_safe_placeholders_are_accepted(self, template: str) -> None:
        """Bare and glued placeholders, literal braces and escaped quotes are fine."""
        mesh.check_command_template(template)

    def test_render_checks_the_template_and_needs_every_value(self) -> None:
        """Rendering refuses what the check refuses, and a missing value is named."""
        assert render_command("agent {objective}", {"objective": "a b"}) == "agent 'a b'"
        with pytest.raises(mesh.OptionError, match="inside double quotes"):
            render_command('agent "{objective}"', {"objective": "x"})
        with pytest.raises(mesh.OptionError, match="no value for placeholder 'objective'"):
            render_command("agent {objective}", {})


class TestCallableCoder:
    async def test_sync_async_and_failing_editors(self, workspaces: mesh.WorkspaceManager) -> None:
        """Sync editors run in a thread, async ones in the task; an exception is a reject."""

        def sync_edit(request: mesh.AuthorRequest, worktree: Path) -> None:
            (worktree / "src" / "sync.py").write_text(request.unit.objective + "\n")

        async def async_edit(request: mesh.AuthorRequest, worktree: Path) -> None:
            await anyio.Path(worktree / "src" / "async.py").write_text("1\n")

        def broken(request: mesh.AuthorRequest, worktree: Path) -> None:
            raise RuntimeError("no tokens left")

        async def later(request: mesh.AuthorRequest, worktree: Path) -> None:
            await anyio.Path(worktree / "src" / "later.py").write_text("2\n")

        results = [
            parsed(await mesh.CallableCoder(workspaces, edit)(author(unit())))
            for edit in (sync_edit, async_edit, broken, functools.partial(later))
        ]
        assert "+change u1" in (results[0].patch or "")
        assert "src/async.py" in (results[1].patch or "")
        assert (results[2].decision, results[2].notes) == (
            mesh.Decision.REJECT,
            "RuntimeError: no tokens left",
        )
        assert "src/later.py" in (results[3].patch or "")


class TestScriptedCoder:
    async def test_mapping_callable_and_deletion(self, workspaces: mesh.WorkspaceManager) -> None:
        """Scripts give files per unit (or per request); None deletes; a unit missing is no_diff."""
        scripted = mesh.ScriptedCoder(
            workspaces,
            {"u1": {"src/new.py": "x = 1\n", "src/util.py": None, "src/never-there.py": None}},
        )
        result = parsed(await scripted(author(unit())))
        assert "+x = 1" in (result.patch or "")
        assert "deleted file mode" in (result.patch or "")
        missing = parsed(await scripted(author(unit("u2"))))
        assert missing.decision is mesh.Decision.NO_DIFF
        by_lane = mesh.ScriptedCoder(workspaces, lambda r: {"src/lane.txt": f"{r.lane}\n"})
        result = parsed(await by_lane(author(unit(), mesh.Lane.REDUCER, 3)))
        assert "+reducer" in (result.patch or "")
        assert result.reduce_record is not None
