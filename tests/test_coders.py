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
                "coder command exit code 4: Error: model overloaded",
            ),
            ("echo '[1,2]' > \"$MESH_REDUCE_RECORD\"", "MESH_REDUCE_RECORD is not a JSON object"),
            ("echo '{{oops' > \"$MESH_REDUCE_RECORD\"", "MESH_REDUCE_RECORD is not JSON: "),
        ],
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
            workspaces, {"u1": {"src/new.py": "x = 1\n", "src/util.py": None}}
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
