"""The delivery's checks one by one: every way the target, the mailbox or the commit can differ."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

import mesh
from mesh.git import _adapters, _git, _integrator, _target
from mesh.host import _process

from repo_helpers import (
    candidate,
    commit_files,
    delivery,
    diff_of,
    git,
    killed_after_the_branch_moved,
    unit,
    wait_gone,
)

pytestmark = pytest.mark.anyio


def request_for(
    repo: Path, changes: dict[str, str | None], key: str = "run/u1", mode: str = "commit_first"
) -> mesh.DeliveryRequest:
    the_unit = unit(mode=mode)
    found = candidate(the_unit, diff_of(repo, changes), git(repo, "rev-parse", "HEAD"))
    return delivery(the_unit, found, key)


async def deliver(
    integrator: mesh.GitIntegrator, request: mesh.DeliveryRequest
) -> mesh.WorkerResult:
    return mesh.parse_worker_result(await integrator(request))


class TestTheBranch:
    async def test_deleted_during_the_run(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A branch deleted after the run started blocks the delivery and says so."""
        git(repo, "branch", "side")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="side")
        await integrator.prepare()
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"})
        git(repo, "branch", "-D", "side")
        result = await deliver(integrator, request)
        assert result.proof_evidence.key_line == "branch side no longer exists"

    async def test_created_outside_mesh(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A branch that did not exist when the run started is not mesh's to deliver to."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="new")
        await integrator.prepare()
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"})
        git(repo, "branch", "new")
        result = await deliver(integrator, request)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line == "branch new has no commit to deliver onto"

    async def test_moved_between_the_checks_and_the_swap(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A branch that moves after the checks is caught by the compare-and-swap itself."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="side")
        git(repo, "branch", "side")
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"})
        copy = integrator._copy_objects

        async def racing(commit: str, tip: str) -> None:
            await copy(commit, tip)
            git(repo, "branch", "-f", "side", git(repo, "commit-tree", "-m", "x", "HEAD^{tree}"))

        monkeypatch.setattr(integrator, "_copy_objects", racing)
        result = await deliver(integrator, request)
        assert result.proof_evidence.key_line.startswith("branch side moved while delivering: ")

    async def test_a_branch_name_is_checked(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A key without a branch to look in is simply not delivered yet."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="missing")
        request = request_for(workspaces.repo, {"src/util.py": "VALUE = 2\n"})
        result = await deliver(integrator, request)
        assert result.proof_evidence.key_line == "branch missing has no commit to deliver onto"


def main_checked_out_elsewhere(repo: Path, tmp_path: Path, branch: str) -> Path:
    """The repository switched to a new ``branch``, ``main`` checked out in a linked worktree."""
    git(repo, "checkout", "-q", "-b", branch)
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", str(linked), "main")
    return linked


class TestTheCheckouts:
    async def test_a_checkout_that_cannot_be_read(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A checkout of the branch whose git link is broken blocks the delivery."""
        linked = main_checked_out_elsewhere(repo, tmp_path, "main2")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="main")
        await integrator.prepare()
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"})
        (linked / ".git").write_text("gitdir: /nowhere\n")
        result = await deliver(integrator, request)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        line = result.proof_evidence.key_line
        assert "git settings changed" in line or "cannot be read" in line

    async def test_a_linked_checkout_is_brought_forward(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """The branch checked out in a linked worktree is brought forward there."""
        linked = main_checked_out_elsewhere(repo, tmp_path, "other")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="main")
        result = await deliver(integrator, request_for(repo, {"src/util.py": "VALUE = 2\n"}))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        assert (linked / "src" / "util.py").read_text() == "VALUE = 2\n"
        assert git(linked, "status", "--porcelain") == ""
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"

    async def test_a_checkout_left_behind_is_reported(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """When bringing a checkout forward fails after the branch moved, the answer says so."""
        real = _git.Git.run

        async def failing(self: _git.Git, *args: str, stdin: bytes | None = None) -> _git.GitResult:
            if args[:3] == ("read-tree", "-m", "-u") and "-n" not in args:
                return _git.GitResult(exit_code=128, stdout=b"", stderr=b"error: disk full")
            return await real(self, *args, stdin=stdin)

        monkeypatch.setattr(_git.Git, "run", failing)
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = await deliver(integrator, request_for(repo, {"src/util.py": "VALUE = 2\n"}))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        assert (result.notes or "").startswith("checkout not brought forward: ")
        assert "disk full" in (result.notes or "")


class TestTheSettings:
    async def test_a_configured_hooks_folder_is_watched(self, repo: Path, tmp_path: Path) -> None:
        """With core.hooksPath set, a hook planted in that folder blocks the delivery."""
        hooks = tmp_path / "my-hooks"
        (hooks / "sub").mkdir(parents=True)
        git(repo, "config", "core.hooksPath", str(hooks))
        async with mesh.WorkspaceManager(repo) as workspaces:
            integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
            await integrator.prepare()
            request = request_for(repo, {"src/util.py": "VALUE = 2\n"})
            (hooks / "post-commit").write_text("#!/bin/sh\n")
            result = await deliver(integrator, request)
        assert result.proof_evidence.key_line.endswith("changed during the run: core.hooksPath")

    def test_submodule_git_directories_are_all_found(self, tmp_path: Path) -> None:
        """Nested ones, ones named with a slash; never through a link, never a stray file."""
        modules = tmp_path / "modules"
        for module in ("a", "a/modules/inner", "deep/named"):
            (modules / module).mkdir(parents=True)
            (modules / module / "HEAD").write_text("ref: refs/heads/main\n")
        (modules / "stray").write_text("")
        (modules / "linked").symlink_to(modules / "a")
        assert _target._module_dirs(modules) == [
            modules / "a",
            modules / "a" / "modules" / "inner",
            modules / "deep" / "named",
        ]
        assert _target._module_dirs(tmp_path / "none") == []
        (tmp_path / "elsewhere").symlink_to(modules)
        assert _target._module_dirs(tmp_path / "elsewhere") == []

    def test_folders_are_digested_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Links by target and content, other entries by type, beyond a depth as one change."""
        hooks = tmp_path / "hooks"
        deep = hooks.joinpath(*["d"] * 20)
        deep.mkdir(parents=True)
        (tmp_path / "script").write_text("one\n")
        (hooks / "linked").symlink_to(tmp_path / "script")
        (hooks / "to-a-folder").symlink_to(tmp_path)
        os.mkfifo(hooks / "pipe")
        first = _target._digest(hooks)
        (tmp_path / "script").write_text("two\n")  # git runs a linked hook's target
        second = _target._digest(hooks)
        (deep / "beyond").write_text("")
        assert len({first, second, _target._digest(hooks)}) == 2  # too deep: not seen
        assert _target._digest(hooks / "pipe") == ""

        def unreadable(path: Path) -> str:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(_target, "_digest", unreadable)
        assert _target._digests({"hooks": hooks}) == {"hooks": "unreadable: Permission denied"}

    def test_where_a_submodule_git_directory_is(self, tmp_path: Path) -> None:
        """A folder, a gitdir link; not a link to one, a missing one, nor another file."""
        sub = tmp_path / "sub"
        (sub / ".git").mkdir(parents=True)
        assert _target._git_dir_of(sub) == sub / ".git"
        (sub / ".git").rmdir()
        assert _target._git_dir_of(sub) is None  # not checked out
        (tmp_path / "gd").mkdir()
        (sub / ".git").write_text("gitdir: ../gd\n")
        assert _target._git_dir_of(sub) == sub / "../gd"
        (sub / ".git").write_text("something else\n")
        assert _target._git_dir_of(sub) is None
        (sub / ".git").unlink()
        (sub / ".git").symlink_to(tmp_path / "gd")
        assert _target._git_dir_of(sub) is None


class TestTheMailbox:
    @pytest.mark.parametrize(
        "case",
        [
            (
                lambda box: box.replace("Subject: change u1", "Subject: another"),
                "git reads a different subject from the mailbox",
            ),
            (
                lambda box: box.replace("Approvals: 1", "Approvals: 9"),
                "git reads a different message from the mailbox",
            ),
            (
                lambda box: box.replace("+VALUE = 2", "+VALUE = 3"),
                "git reads a different patch from the mailbox",
            ),
        ],
        ids=["subject", "message", "patch"],
    )
    async def test_what_git_reads_must_be_what_mesh_wrote(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        case: tuple[Callable[[str], str], str],
    ) -> None:
        """A mailbox git would read differently from what mesh meant is never written."""
        change, problem = case
        written = _integrator.mailbox
        monkeypatch.setattr(
            _integrator,
            "mailbox",
            lambda *a, **k: change(written(*a, **k)),
        )
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"}, mode="patch_first")
        result = await deliver(integrator, request)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line == problem
        assert not (tmp_path / "out").exists()

    async def test_a_mailbox_git_cannot_read(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A mailbox mailinfo refuses is a blocked delivery with git's words."""
        monkeypatch.setattr(_integrator, "mailbox", lambda *a, **k: "Subject: =?x?\n\n" + "\0")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"}, mode="patch_first")
        result = await deliver(integrator, request)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.startswith("git ")

    async def test_a_patch_first_patch_that_does_not_apply(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """An artifact is only written for a patch git applies to its base."""
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"}, mode="patch_first")
        broken = attrs.evolve(
            request,
            candidate=attrs.evolve(
                request.candidate, patch=(request.candidate.patch or "").replace("-VALUE", "-NOPE")
            ),
        )
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = await deliver(integrator, broken)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.startswith("the patch does not apply: ")


class TestTheCommit:
    async def test_a_patch_that_changes_nothing_on_the_tip(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A change the branch already has (under another key) makes no empty commit."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        first = request_for(repo, {"src/util.py": "VALUE = 2\n"}, "run/a")
        assert (await deliver(integrator, first)).decision is mesh.Decision.INTEGRATED_COMMIT
        again = await deliver(integrator, attrs.evolve(first, idempotency_key="run/b"))
        assert again.decision is mesh.Decision.BLOCKED_DELIVERY
        line = again.proof_evidence.key_line
        assert line == "the patch changes nothing on main" or line.startswith("git am on main: ")

    @pytest.mark.parametrize("flaw", ["parents", "message", "scope"])
    async def test_the_commit_git_made_is_judged(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        flaw: str,
    ) -> None:
        """A commit with other parents, another message or an out-of-scope change never lands."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        request = request_for(repo, {"src/util.py": "VALUE = 2\n"})
        head = git(repo, "rev-parse", "HEAD")
        tree = git(repo, "rev-parse", "HEAD^{tree}")
        if flaw == "parents":
            made = git(repo, "commit-tree", "-m", "x", tree)
        elif flaw == "message":
            made = git(repo, "commit-tree", "-p", head, "-m", "not mesh's", tree)
        else:
            made = commit_files(repo, {"README.md": "out of scope\n"}, "x")
            git(repo, "reset", "-q", "--hard", head)
            monkeypatch.setattr(_integrator, "commit_message", lambda _: "x\n")

        async def forged(message: str, tip: str) -> str:
            return made

        monkeypatch.setattr(integrator, "_commit", forged)
        result = await deliver(integrator, request)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        expected = {
            "parents": "git am made 0 parents, not one on",
            "message": "the commit's message is not the one mesh wrote",
            "scope": "scope: touches README.md",
        }[flaw]
        assert result.proof_evidence.key_line.startswith(expected)
        assert git(repo, "rev-parse", "HEAD") == head


class TestRecovery:
    async def test_a_file_gone_or_replaced_while_bringing_forward(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A deleted file may be absent; a file replaced by a folder is never overwritten."""
        wide = unit(mode="commit_first", scope=("src", "docs"))
        change = {"docs/guide.md": None, "src/util.py": "VALUE = 3\n"}
        request = delivery(wide, candidate(wide, diff_of(repo, change)), "run/u1")
        await killed_after_the_branch_moved(workspaces, tmp_path, request)
        # Killed half way: the deleted file is gone already, util.py not yet written.
        (repo / "docs" / "guide.md").unlink()
        (repo / "src" / "util.py").write_text("VALUE = 1\n")
        os.utime(repo / "src" / "util.py", (0, 0))
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.recover(pending={"run/u1": request})
        assert git(repo, "status", "--porcelain") == ""
        assert (repo / "src" / "util.py").read_text() == "VALUE = 3\n"

    async def test_a_folder_where_a_file_was(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A path mesh would write that is now a folder stops the recovery, untouched."""
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 4\n"}))
        request = delivery(committing, found, "run/y")
        await killed_after_the_branch_moved(workspaces, tmp_path, request)
        (repo / "src" / "util.py").unlink()
        (repo / "src" / "util.py").mkdir()
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        with pytest.raises(mesh.MeshError, match=r"src/util\.py is neither"):
            await integrator.recover(pending={"run/y": request})
        assert (repo / "src" / "util.py").is_dir()


class TestGitItself:
    async def test_git_that_cannot_start_or_hangs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A missing folder or a hung git is a result with the reason, never an exception."""
        missing = await _git.Git(cwd=tmp_path / "missing").run("status")
        assert (missing.exit_code, missing.errors.startswith("cannot run git: ")) == (-1, True)
        monkeypatch.setattr(_git, "GIT_TIMEOUT", 0.000001)
        hung = await _git.Git(cwd=tmp_path).run("version")
        assert (hung.exit_code, hung.errors) == (-1, "timed out after 300s")

    async def test_the_caller_s_git_variables_are_ignored(
        self, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A host's GIT_DIR or GIT_INDEX_FILE never redirects mesh's own git commands."""
        monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
        monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "index"))
        monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.hooksPath'='/tmp'")
        top = await _git.Git(cwd=repo)("rev-parse", "--show-toplevel")
        assert Path(top) == repo


class TestAdapterEdges:
    async def test_a_patch_that_changes_nothing(self, workspaces: mesh.WorkspaceManager) -> None:
        """A patch git applies without changing any path is refused as changing nothing."""
        patch = (
            "diff --git a/src/util.py b/src/util.py\n--- a/src/util.py\n+++ b/src/util.py\n"
            "@@ -1 +1 @@\n-VALUE = 1\n+VALUE = 1\n"
        )
        the_unit = unit()
        found = candidate(the_unit, patch, await workspaces.resolve("HEAD"))
        verdict = await _adapters.judge_patch(workspaces, the_unit, found.base_sha, patch)
        assert verdict.problems == ("the patch changes nothing",)

    async def test_applying_in_the_workspace_fails_after_the_gate(
        self, repo: Path, workspaces: mesh.WorkspaceManager, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Git refusing the files after the gate passed gives the workspace back."""

        async def refused(workspace: mesh.Workspace, patch: str) -> tuple[int, str]:
            return 1, "error: patch failed: src/util.py:1"

        monkeypatch.setattr(_adapters, "_apply_patch", refused)
        the_unit = unit()
        found = candidate(the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        request = mesh.ApplyRequest(
            unit=the_unit, candidate_id=found.candidate_id, candidate=found, lease_id="l", attempt=1
        )
        result = mesh.parse_worker_result(await mesh.GitApplier(workspaces)(request))
        assert result.decision is mesh.Decision.APPLY_FAILED
        assert result.proof_evidence.key_line == "error: patch failed: src/util.py:1"
        assert workspaces.in_use == 0
        prover = mesh.CommandProver(str(repo))
        proof = mesh.parse_worker_result(
            await prover(
                mesh.ProofRequest(
                    unit=the_unit,
                    candidate_id=found.candidate_id,
                    candidate=found,
                    applied=found,
                    proof_attempt=1,
                    attempt=1,
                )
            )
        )
        assert proof.proof_status is mesh.ProofStatus.FAIL
        assert proof.proof_evidence.command == "git apply --check"


class TestWithoutBubblewrap:
    async def test_the_reaper_alone_still_sweeps(
        self, tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without bubblewrap the reaper alone ends a command's setsid'd children."""
        monkeypatch.setattr(_process, "find_sandbox", lambda: None)
        result = await _process.run_command(
            f"setsid sleep {marker} & echo started", cwd=tmp_path, timeout=30
        )
        assert (result.ok, result.output) == (True, "started\n")
        assert await wait_gone(marker)


class TestRecoveryEdges:
    async def test_checkouts_that_cannot_be_read_or_a_missing_branch(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Recovery skips a broken checkout's lock and a branch that does not exist yet."""
        linked = main_checked_out_elsewhere(repo, tmp_path, "other")
        (linked / ".git").write_text("gitdir: /nowhere\n")
        await mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="main").recover()
        await mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="none").recover()
        assert git(repo, "status", "--porcelain") == ""

    async def test_a_detached_head(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """No branch to deliver to: no branch lock to look at, nothing to bring forward."""
        git(repo, "checkout", "-q", "--detach")
        (repo / ".git" / "HEAD.lock").write_text("")  # a dead writer's
        await mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out").recover()
        assert not (repo / ".git" / "HEAD.lock").exists()

    async def test_a_branch_not_born_yet(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A checkout on a branch with no commit yet has nothing to bring forward."""
        git(repo, "checkout", "-q", "--orphan", "fresh")
        await mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out").recover()
        assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/fresh"

    async def test_a_checkout_behind_with_changes_of_its_own(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Behind by a mesh commit but with other staged changes too: left alone."""
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 5\n"}))
        request = delivery(committing, found, "run/x")
        await killed_after_the_branch_moved(workspaces, tmp_path, request)
        (repo / "README.md").write_text("the user's\n")
        git(repo, "add", "README.md")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.recover(pending={"run/x": request})
        assert "M  README.md" in git(repo, "status", "--porcelain").splitlines()
        assert (repo / "README.md").read_text() == "the user's\n"
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"


class TestCommitter:
    async def test_an_unusable_configured_identity_falls_back_to_the_author(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A configured name with a control character is not used; the author commits."""
        git(repo, "config", "user.name", "bad\tname")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = await deliver(integrator, request_for(repo, {"src/util.py": "VALUE = 2\n"}))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        assert git(repo, "log", "-1", "--format=%cn <%ce>") == "mesh <test@example.invalid>"
