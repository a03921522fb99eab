"""
The trust boundary, attacked for real: what a coder writes reaches the target only in scope.

Each attack is built on a real repository and goes through the real applier
and integrator: patch texts that mean one thing to a text parser and another
to git, symlinks, gitlinks and git's control files, forged messages, and
coders that use git (or the file system) against the user's repository.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest

import mesh
import mesh.commands
import mesh.typing
from mesh.git import _target
from mesh.git._integrator import commit_message
from mesh.git._target import TargetState, open_target
from mesh.host._process import run_command

from repo_helpers import (
    candidate,
    commit_files,
    delivery,
    diff_of,
    git,
    killed_after_the_branch_moved,
    make_repo,
    unit,
    wait_gone,
)

pytestmark = pytest.mark.anyio

REQUIRE_SANDBOX = os.environ.get("MESH_REQUIRE_SANDBOX") == "1"


async def apply(
    workspaces: mesh.WorkspaceManager, the_unit: mesh.Unit, patch: str
) -> mesh.WorkerResult:
    found = candidate(the_unit, patch, await workspaces.resolve("HEAD"))
    request = mesh.ApplyRequest(
        unit=the_unit, candidate_id=found.candidate_id, candidate=found, lease_id="l", attempt=1
    )
    return mesh.parse_worker_result(await mesh.GitApplier(workspaces)(request))


async def deliver(
    workspaces: mesh.WorkspaceManager, the_unit: mesh.Unit, patch: str, out: Path
) -> mesh.WorkerResult:
    committing = attrs.evolve(the_unit, delivery_mode=mesh.DeliveryMode.COMMIT_FIRST)
    found = candidate(committing, patch, await workspaces.resolve("HEAD"))
    integrator = mesh.GitIntegrator(workspaces, artifacts=out)
    return mesh.parse_worker_result(await integrator(delivery(committing, found, "run/u1")))


async def assert_refused(
    repo: Path, workspaces: mesh.WorkspaceManager, the_unit: mesh.Unit, patch: str, tmp: Path
) -> str:
    """The applier and the integrator both refuse for scope, and nothing reaches the branch."""
    head = git(repo, "rev-parse", "HEAD")
    applied = await apply(workspaces, the_unit, patch)
    assert applied.decision is mesh.Decision.APPLY_FAILED
    assert applied.failure_code is mesh.FailureCode.SCOPE_VIOLATION
    assert workspaces.in_use == 0
    delivered = await deliver(workspaces, the_unit, patch, tmp / "out")
    assert delivered.decision is mesh.Decision.BLOCKED_DELIVERY
    assert delivered.failure_code is mesh.FailureCode.SCOPE_VIOLATION
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""
    return applied.proof_evidence.key_line


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def binary_literal(data: bytes) -> str:
    """Git's ``literal`` binary hunk for ``data``: deflated, base85, 52 bytes a line."""
    packed = zlib.compress(data)
    lines = []
    for start in range(0, len(packed), 52):
        chunk = packed[start : start + 52]
        size = (
            chr(ord("A") + len(chunk) - 1) if len(chunk) <= 26 else chr(ord("a") + len(chunk) - 27)
        )
        padded = chunk + b"\0" * (-len(chunk) % 4)
        lines.append(size + base64.b85encode(padded).decode())
    return f"literal {len(data)}\n" + "\n".join(lines) + "\n"


class TestTextThatGitReadsDifferently:
    @pytest.mark.parametrize("separator", ["\r", "\x0c", "\x0b", "\x1c", "\x85", "\u2028"])
    async def test_a_line_split_only_by_a_parser(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path, separator: str
    ) -> None:
        """A character that splits lines for str.splitlines (never for git) hides nothing."""
        patch = (
            "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
            f"@@ -1 +1,3 @@\n # project\n+a{separator}+b\n+++ b/src/ok.py\n"
        )
        assert git(repo, "apply", "--check", stdin=patch) == ""  # git reads README.md
        line = await assert_refused(repo, workspaces, unit(scope=("src",)), patch, tmp_path)
        assert "README.md" in line

    @pytest.mark.parametrize(
        "header",
        [
            "diff --git src/app.py src/app.py\n--- src/app.py\n+++ src/app.py\n",
            "--- src/app.py\n+++ src/app.py\n",
        ],
        ids=["noprefix", "plain-diff-u"],
    )
    async def test_names_are_read_as_git_apply_reads_them(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path, header: str
    ) -> None:
        """Without a/ b/ prefixes git strips the first component: app.py, outside src/app.py."""
        (repo / "app.py").write_text("def main():\n    return 1\n")
        git(repo, "add", "app.py")
        git(repo, "commit", "-qm", "a root app.py")
        patch = header + "@@ -1,2 +1,2 @@\n def main():\n-    return 1\n+    return 2\n"
        assert "app.py" in git(repo, "apply", "--numstat", stdin=patch).split()
        line = await assert_refused(repo, workspaces, unit(scope=("src/app.py",)), patch, tmp_path)
        assert "touches app.py" in line

    async def test_any_prefix_is_one_component(
        self, repo: Path, workspaces: mesh.WorkspaceManager
    ) -> None:
        """``x/src/app.py`` is src/app.py to git (``-p1``), so it is judged as src/app.py."""
        patch = (
            "diff --git x/src/app.py y/src/app.py\n--- x/src/app.py\n+++ y/src/app.py\n"
            "@@ -1,2 +1,2 @@\n def main():\n-    return 1\n+    return 2\n"
        )
        applied = await apply(workspaces, unit(scope=("src/app.py",)), patch)
        assert applied.decision is mesh.Decision.APPLIED
        written = Path(applied.worktree_path or "") / "src" / "app.py"
        assert written.read_text() == "def main():\n    return 2\n"

    async def test_case_and_ignorable_spellings_of_git(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """``.GIT`` and ``.g\u200cit`` are git's own folder on some file systems: refused."""
        for name in ("src/.GIT/config", "src/.g\u200cit/config", "src/GIT~1/config"):
            patch = f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+x\n"
            applied = await apply(workspaces, unit(scope=("src",)), patch)
            assert applied.failure_code is mesh.FailureCode.SCOPE_VIOLATION, name
            assert "git's own files" in applied.proof_evidence.key_line


class TestModesAreScope:
    async def test_a_symlink_needs_permission(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A symlink inside the scope, pointing inside it, is still refused unless allowed."""
        (repo / "src" / "link").symlink_to("util.py")
        patch = diff_of(repo, {})
        line = await assert_refused(repo, workspaces, unit(scope=("src",)), patch, tmp_path)
        assert "is a symlink; allow_special does not list 'symlink'" in line
        allowed = await apply(workspaces, unit(scope=("src",), allow=("symlink",)), patch)
        assert allowed.decision is mesh.Decision.APPLIED

    async def test_a_binary_symlink(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A symlink written as a binary patch (no + lines to read) is judged by its mode."""
        target = b"../../../../etc/passwd"
        patch = (
            "diff --git a/src/link b/src/link\nnew file mode 120000\n"
            f"index {'0' * 40}..{git_blob_id(target)}\nGIT binary patch\n"
            f"{binary_literal(target)}\nliteral 0\nHcmV?d00001\n\n"
        )
        assert git(repo, "apply", "--check", stdin=patch) == ""
        await assert_refused(repo, workspaces, unit(scope=("src",)), patch, tmp_path)
        anyway = await apply(workspaces, unit(scope=("src",), allow=("symlink",)), patch)
        assert anyway.failure_code is mesh.FailureCode.SCOPE_VIOLATION
        assert "symlink out of the worktree" in anyway.proof_evidence.key_line

    async def test_a_symlink_retargeted_without_a_mode_line(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Changing an existing symlink's content (no mode line at all) retargets it: refused."""
        (repo / "src" / "link").symlink_to("util.py")
        commit_files(repo, {}, "a link")
        old, new = git_blob_id(b"util.py"), git_blob_id(b"../../../etc/passwd")
        patch = (
            f"diff --git a/src/link b/src/link\nindex {old}..{new}\n--- a/src/link\n"
            "+++ b/src/link\n@@ -1 +1 @@\n-util.py\n\\ No newline at end of file\n"
            "+../../../etc/passwd\n\\ No newline at end of file\n"
        )
        assert git(repo, "apply", "--check", stdin=patch) == ""
        await assert_refused(repo, workspaces, unit(scope=("src",)), patch, tmp_path)

    async def test_a_symlink_chain_out(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """``src/deep -> up/..`` reads as inside; through the link ``src/up -> ..`` it is out."""
        (repo / "src" / "up").symlink_to("..")
        (repo / "src" / "deep").symlink_to("up/..")
        patch = diff_of(repo, {})
        allowing = unit(scope=("src",), allow=("symlink",))
        applied = await apply(workspaces, allowing, patch)
        assert applied.failure_code is mesh.FailureCode.SCOPE_VIOLATION
        assert (
            applied.proof_evidence.key_line
            == "rejected: src/deep is a symlink out of the worktree (up/..)"
        )

    async def test_gitlinks_and_git_control_files(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A submodule entry, .gitattributes and .gitmodules need the unit's explicit permission."""
        sha = git(repo, "rev-parse", "HEAD")
        gitlink = (
            "diff --git a/src/sub b/src/sub\nnew file mode 160000\n"
            f"index 0000000..{sha}\n--- /dev/null\n+++ b/src/sub\n@@ -0,0 +1 @@\n"
            f"+Subproject commit {sha}\n"
        )
        attributes = diff_of(repo, {"src/.gitattributes": "* filter=evil\n"})
        modules = diff_of(repo, {".gitmodules": '[submodule "x"]\n\tpath = src/sub\n'})
        cases = [
            (gitlink, ("src",), "gitlink"),
            (attributes, ("src",), "gitattributes"),
            (modules, (".gitmodules",), "gitmodules"),
        ]
        for patch, scope, kind in cases:
            line = await assert_refused(repo, workspaces, unit(scope=scope), patch, tmp_path)
            assert f"allow_special does not list {kind!r}" in line
            allowed = await apply(workspaces, unit(scope=scope, allow=(kind,)), patch)
            assert allowed.decision is mesh.Decision.APPLIED, (kind, allowed.proof_evidence)
            await workspaces.release(allowed.worktree_path or "")

    async def test_a_glob_never_matches_a_folder(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """``src/*.py`` covers src/x.py, never a folder named src/x.py/ and what is in it."""
        patch = diff_of(repo, {"src/x.py/payload.sh": "rm -rf ~\n"})
        await assert_refused(repo, workspaces, unit(scope=("src/*.py",)), patch, tmp_path)
        fine = await apply(
            workspaces, unit(scope=("src/*.py",)), diff_of(repo, {"src/x.py": "1\n"})
        )
        assert fine.decision is mesh.Decision.APPLIED


class TestDeliveryChecksTheTarget:
    @staticmethod
    def request(repo: Path, changes: Mapping[str, str | None], key: str) -> mesh.DeliveryRequest:
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, changes), git(repo, "rev-parse", "HEAD"))
        return delivery(committing, found, key)

    async def blocked_by(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path, tamper: object
    ) -> str:
        repo = workspaces.repo
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.prepare()
        request = self.request(repo, {"src/util.py": "VALUE = 2\n"}, "run/u1")
        tamper(repo)  # type: ignore[operator]
        head = git(repo, "rev-parse", "main")
        result = mesh.parse_worker_result(await integrator(request))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.failure_code is mesh.FailureCode.DELIVERY_BLOCKED
        assert git(repo, "rev-parse", "main") == head
        return result.proof_evidence.key_line

    async def test_a_foreign_commit(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A commit mesh did not make on the branch blocks the delivery, named in the evidence."""
        line = await self.blocked_by(
            workspaces,
            tmp_path,
            lambda repo: commit_files(repo, {"docs/guide.md": "theirs\n"}, "someone else's"),
        )
        assert line.startswith("branch main moved outside mesh from ")
        assert "someone else's" in line

    async def test_a_dirty_checkout(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Uncommitted or staged changes in a checkout of the branch block the delivery."""
        line = await self.blocked_by(
            workspaces, tmp_path, lambda repo: (repo / "README.md").write_text("edited\n")
        )
        assert line.endswith("has uncommitted changes")

    async def test_an_operation_under_way(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A merge, rebase or am in progress in the checkout blocks the delivery."""
        line = await self.blocked_by(
            workspaces,
            tmp_path,
            lambda repo: (repo / ".git" / "MERGE_HEAD").write_text(
                git(repo, "rev-parse", "HEAD") + "\n"
            ),
        )
        assert "a git operation is under way" in line
        assert "MERGE_HEAD" in line

    @pytest.mark.parametrize(
        ("where", "named"),
        [
            ("hooks/post-applypatch", "hooks"),
            ("config", "config"),
            ("info/attributes", "info/attributes"),
            ("objects/info/alternates", "objects/info/alternates"),
        ],
    )
    async def test_changed_git_settings(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path, where: str, named: str
    ) -> None:
        """A hook planted, config or attributes changed during the run: blocked, never run."""
        marker = tmp_path / "pwned"

        def plant(repo: Path) -> None:
            target = repo / ".git" / where
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a") as stream:
                stream.write(f"#!/bin/sh\n# touch {marker}\n")
            target.chmod(0o755)

        line = await self.blocked_by(workspaces, tmp_path, plant)
        assert line.startswith("the repository's git settings changed during the run: ")
        assert named in line
        assert not marker.exists()

    async def test_edits_hidden_from_git_status(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """An edit hidden by assume-unchanged, or a new untracked file, blocks the delivery."""

        def hide(repo: Path) -> None:
            git(repo, "update-index", "--assume-unchanged", "docs/guide.md")
            (repo / "docs" / "guide.md").write_text("planted\n")

        line = await self.blocked_by(workspaces, tmp_path, hide)
        assert "marked assume-unchanged or skip-worktree" in line

    async def test_a_new_untracked_file(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A file planted in the checkout (a conftest.py pytest would load) blocks the delivery."""
        line = await self.blocked_by(
            workspaces, tmp_path, lambda repo: (repo / "conftest.py").write_text("import os\n")
        )
        assert line.endswith(": conftest.py")
        assert line.startswith("new untracked files in the checkout ")

    def test_the_runs_own_files_inside_the_repository_are_fine(
        self, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`mesh run` in the repository writes its run folder there: that is not a new file."""
        monkeypatch.chdir(repo)
        plan = tmp_path / "plan.json"
        plan.write_text(
            json.dumps(
                {"plan": [
                    {"id": n, "step": f"write {n}", "write_scope": [f"src/{n}.txt"],
                     "proof_command": f"test -s src/{n}.txt", "risk_tier": "low"}
                    for n in ("a", "b")
                ]}
            )
        )  # fmt: skip
        report = mesh.commands.run(
            plan=plan,
            repo=repo,
            coder_command='echo "$MESH_OBJECTIVE" > "$MESH_WRITE_SCOPE"',
            delivery="commit_first",
        )
        assert report.exit_code == 0, report.text
        assert sorted(git(repo, "log", "--format=%s").splitlines()) == [
            "initial",
            "write a",
            "write b",
        ]

    async def test_an_untracked_file_in_the_way(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A file the delivery would overwrite blocks it before the branch moves."""
        repo = workspaces.repo
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        request = self.request(repo, {"src/new.py": "mine = 1\n"}, "run/u1")
        (repo / "src" / "new.py").write_text("the user's own file\n")
        result = mesh.parse_worker_result(await integrator(request))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert "is in the way" in result.proof_evidence.key_line
        assert (repo / "src" / "new.py").read_text() == "the user's own file\n"
        assert git(repo, "log", "--format=%s") == "initial"

    async def test_hooks_and_filters_never_run(self, repo: Path, tmp_path: Path) -> None:
        """The user's hooks and the repository's fsmonitor do not run during a delivery."""
        request = self.request(repo, {"src/util.py": "VALUE = 2\n"}, "run/u1")
        marker = tmp_path / "ran"
        hooks = repo / ".git" / "hooks"
        for hook in (
            "applypatch-msg",
            "pre-applypatch",
            "post-applypatch",
            "reference-transaction",
            "post-index-change",
            "post-checkout",
            "post-commit",
            "pre-commit",
        ):
            (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
            (hooks / hook).chmod(0o755)
        git(repo, "config", "core.fsmonitor", f"echo fsmonitor >> {marker}; false")
        async with mesh.WorkspaceManager(repo) as workspaces:
            integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
            result = mesh.parse_worker_result(await integrator(request))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        assert not marker.exists()


class TestSubmodulesAndOtherLayouts:
    @staticmethod
    def with_submodule(tmp_path: Path) -> Path:
        """A repository whose ``lib`` is a submodule (from a local repository)."""
        library = make_repo(tmp_path / "library", {"lib.py": "X = 1\n"})
        repo = make_repo(tmp_path / "repo")
        git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "lib")
        git(repo, "commit", "-qm", "add lib")
        return repo

    @staticmethod
    async def deliver_with(repo: Path, tmp_path: Path, during: object) -> mesh.WorkerResult:
        async with mesh.WorkspaceManager(repo) as workspaces:
            integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
            await integrator.prepare()
            change = {"src/util.py": "VALUE = 2\n"}
            request = TestDeliveryChecksTheTarget.request(repo, change, "r/u")
            during(repo)  # type: ignore[operator]
            return mesh.parse_worker_result(await integrator(request))

    async def test_work_in_a_submodule_does_not_block(self, tmp_path: Path) -> None:
        """New and edited files inside a submodule's work tree are the submodule's business."""
        repo = self.with_submodule(tmp_path)

        def work_in_lib(repo: Path) -> None:
            (repo / "lib" / "scratch.txt").write_text("notes\n")
            (repo / "lib" / "lib.py").write_text("X = 2\n")

        result = await self.deliver_with(repo, tmp_path, work_in_lib)
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence.key_line
        assert (repo / "src" / "util.py").read_text() == "VALUE = 2\n"
        assert (repo / "lib" / "lib.py").read_text() == "X = 2\n"

    async def test_a_submodule_moved_to_another_commit_blocks(self, tmp_path: Path) -> None:
        """The submodule's commit is part of the checkout: moving it is an uncommitted change."""
        repo = self.with_submodule(tmp_path)

        def commit_in_lib(repo: Path) -> None:
            commit_files(repo / "lib", {"lib.py": "X = 3\n"}, "moved")

        result = await self.deliver_with(repo, tmp_path, commit_in_lib)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.endswith("has uncommitted changes")

    @pytest.mark.parametrize("planted", ["a filter in its config", "a hook"])
    async def test_what_runs_in_a_submodule_is_never_run(
        self, tmp_path: Path, planted: str
    ) -> None:
        """
        A filter or hook planted in a submodule's git directory blocks the delivery.

        mesh never runs it: it does not look into the submodule's work tree at all.
        """
        repo = self.with_submodule(tmp_path)
        marker = tmp_path / "ran"
        module = repo / ".git" / "modules" / "lib"

        def plant(repo: Path) -> None:
            if planted == "a hook":
                hook = module / "hooks" / "post-checkout"
                hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
                hook.chmod(0o755)
            else:
                with (module / "config").open("a") as config:
                    config.write(f'[filter "x"]\n\tclean = touch {marker}; cat\n')
                (repo / "lib" / ".gitattributes").write_text("* filter=x\n")
            (repo / "lib" / "lib.py").write_text("X = 9\n")  # what status would hash

        result = await self.deliver_with(repo, tmp_path, plant)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.startswith(
            "the repository's git settings changed during the run: modules/lib: "
        )
        assert not marker.exists()

    @staticmethod
    def nested(tmp_path: Path) -> Path:
        """``lib`` a submodule with its own submodule ``lib/inner``, checked out."""
        inner = make_repo(tmp_path / "inner", {"inner.py": "Y = 1\n"})
        library = make_repo(tmp_path / "library", {"lib.py": "X = 1\n"})
        allow = ("-c", "protocol.file.allow=always")
        git(library, *allow, "submodule", "add", "-q", str(inner), "inner")
        git(library, "commit", "-qm", "add inner")
        repo = make_repo(tmp_path / "repo")
        git(repo, *allow, "submodule", "add", "-q", str(library), "lib")
        git(repo, *allow, "submodule", "update", "-q", "--init", "--recursive")
        git(repo, "commit", "-qm", "add lib")
        return repo

    @staticmethod
    def embedded(tmp_path: Path) -> Path:
        """``lib`` a submodule whose git folder is its own ``lib/.git`` (an existing clone)."""
        library = make_repo(tmp_path / "library", {"lib.py": "X = 1\n"})
        repo = make_repo(tmp_path / "repo")
        git(tmp_path, "clone", "-q", str(library), str(repo / "lib"))
        git(repo, "submodule", "add", "-q", str(library), "lib")
        git(repo, "commit", "-qm", "add lib")
        assert (repo / "lib" / ".git").is_dir()
        return repo

    @pytest.mark.parametrize(
        "change",
        [
            "a commondir in its git directory",
            "its .git link rewritten",
            "its own git folder's config",
            "a large hook rewritten",
            "a hook in a hooks subfolder",
            "a nested submodule's .git link rewritten",
            "a nested submodule's config",
        ],
    )
    async def test_submodule_git_settings_changed(self, tmp_path: Path, change: str) -> None:
        """
        Whatever leads a submodule's git to other settings blocks the delivery.

        Each change would run the payload at the user's next ``git status`` or
        ``git commit`` (an fsmonitor, a hook); mesh runs none of it.
        """
        marker = tmp_path / "ran"
        payload = f'[core]\n\tfsmonitor = "touch {marker}; false"\n'
        repo = (
            self.nested(tmp_path)
            if "nested" in change
            else self.embedded(tmp_path)
            if "own git folder" in change
            else self.with_submodule(tmp_path)
        )
        module = repo / ".git" / "modules" / "lib"
        hooks = module / "hooks"
        hooks.mkdir(parents=True, exist_ok=True)  # an embedded submodule has none there
        big = hooks / "post-commit"
        big.write_text("#!/bin/sh\n" + "#" * (2 << 20) + "\n")
        (hooks / "post-commit.d").mkdir()

        def evil_copy(source: Path) -> Path:
            copy = tmp_path / "evil-git-dir"
            shutil.copytree(source, copy)
            with (copy / "config").open("a") as config:
                config.write(payload)
            return copy

        def tamper(repo: Path) -> None:
            if change == "a commondir in its git directory":
                (module / "commondir").write_text(f"{evil_copy(module)}\n")
            elif change == "its .git link rewritten":
                (repo / "lib" / ".git").write_text(f"gitdir: {evil_copy(module)}\n")
            elif change == "its own git folder's config":
                with (repo / "lib" / ".git" / "config").open("a") as config:
                    config.write(payload)
            elif change == "a large hook rewritten":
                big.write_text("#!/bin/sh\n" + "#" * ((2 << 20) - 11) + f"\ntouch {marker}\n")
            elif change == "a hook in a hooks subfolder":
                (hooks / "post-commit.d" / "evil").write_text(f"#!/bin/sh\ntouch {marker}\n")
            elif change == "a nested submodule's .git link rewritten":
                inner = module / "modules" / "inner"
                (repo / "lib" / "inner" / ".git").write_text(f"gitdir: {evil_copy(inner)}\n")
            else:
                with (module / "modules" / "inner" / "config").open("a") as config:
                    config.write(payload)

        result = await self.deliver_with(repo, tmp_path, tamper)
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY, change
        assert result.proof_evidence.key_line.startswith(
            "the repository's git settings changed during the run: "
        )
        assert not marker.exists()

    async def test_uninitialised_and_too_deep_submodules(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A submodule not checked out has no git directory; nesting stops at the limit."""
        monkeypatch.setattr(_target, "_NESTING_LIMIT", 0)
        repo = self.nested(tmp_path)
        git(repo, "submodule", "deinit", "-q", "-f", "lib")
        result = await self.deliver_with(repo, tmp_path, lambda repo: None)
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence
        again = self.nested(tmp_path / "again")
        result = await self.deliver_with(again, tmp_path / "again", lambda repo: None)
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence

    async def test_submodules_as_they_were_do_not_block(self, tmp_path: Path) -> None:
        """The control: nested, embedded and large-hooked submodules left alone deliver."""
        for layout in (self.nested, self.embedded):
            folder = tmp_path / layout.__name__
            folder.mkdir()
            repo = layout(folder)
            hook = repo / ".git" / "modules" / "lib" / "hooks" / "post-commit"
            if hook.parent.is_dir():
                hook.write_text("#!/bin/sh\n" + "#" * (2 << 20) + "\n")
            result = await self.deliver_with(repo, folder, lambda repo: None)
            assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence
            assert (repo / "src" / "util.py").read_text() == "VALUE = 2\n"

    async def test_a_checkout_switched_to_the_branch(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A checkout of the branch that appeared during the run blocks the delivery."""
        repo = workspaces.repo
        git(repo, "branch", "release")
        git(repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "elsewhere"))
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="release")
        await integrator.prepare()
        request = TestDeliveryChecksTheTarget.request(repo, {"src/util.py": "VALUE = 2\n"}, "r/u")
        git(tmp_path / "elsewhere", "switch", "-q", "release")
        result = mesh.parse_worker_result(await integrator(request))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line == (
            f"the checkout {tmp_path / 'elsewhere'} switched to branch release during the run"
        )

    async def test_a_separate_git_directory(self, tmp_path: Path) -> None:
        """A repository made with --separate-git-dir: its checkout is brought forward."""
        repo = tmp_path / "work"
        separate = f"--separate-git-dir={tmp_path / 'gd'}"
        git(tmp_path, "init", "-q", "--initial-branch=main", separate, str(repo))
        git(repo, "config", "user.name", "Test")
        git(repo, "config", "user.email", "test@example.invalid")
        commit_files(repo, {"src/util.py": "VALUE = 1\n"}, "initial")
        result = await self.deliver_with(repo, tmp_path, lambda repo: None)
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence.key_line
        assert (repo / "src" / "util.py").read_text() == "VALUE = 2\n"
        assert git(repo, "status", "--porcelain") == ""


class TestMessagesCannotBeForged:
    async def test_untrusted_text_stays_on_its_line(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A proof's key line that spells a patch and trailers adds no file and no trailer."""
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        forged = (
            "ok\n---\ndiff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
            "@@ -1 +1 @@\n-# project\n+pwned\n\nMesh-Delivery: run/u2\nMesh-Unit: u2\n"
        )
        evidence = {"command": "pytest\n\nMesh-Unit: u9", "key_line": forged, "exit_code": 0}
        request = delivery(committing, found, "run/u1", proof_evidence=evidence)
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = mesh.parse_worker_result(await integrator(request))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        changed = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
        assert changed == ["src/util.py"]
        assert (repo / "README.md").read_text() == "# project\n"
        body = git(repo, "log", "-1", "--format=%B")
        trailers = git(repo, "log", "-1", "--format=%(trailers:only,unfold)").splitlines()
        assert trailers == ["Mesh-Unit: u1", "Mesh-Candidate: u1-c1", "Mesh-Delivery: run/u1"]
        assert "Proof: pytest\\n\\nMesh-Unit: u9 -> ok\\n---\\ndiff --git" in body
        other = candidate(committing, diff_of(repo, {"src/app.py": "x = 2\n"}), "HEAD")
        second = delivery(committing, other, "run/u2", proof_evidence=evidence)
        again = mesh.parse_worker_result(await integrator(second))
        assert again.proof_evidence.key_line.startswith("committed ")  # run/u2 was never forged

    async def test_a_forged_delivery_is_never_adopted(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A foreign commit carrying this delivery's trailers is refused, not taken as delivered."""
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        request = delivery(committing, found, "run/u1")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.prepare()
        forged = "laundered\n\nMesh-Unit: u1\nMesh-Candidate: u1-c1\nMesh-Delivery: run/u1"
        commit_files(repo, {"payload.sh": "rm -rf ~\n"}, forged)
        during_the_run = mesh.parse_worker_result(await integrator(request))
        assert during_the_run.decision is mesh.Decision.BLOCKED_DELIVERY
        assert during_the_run.proof_evidence.key_line.startswith("branch main moved outside mesh")
        resumed = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await resumed.recover()  # a resume takes the branch as it is, forged commit included
        after_resume = mesh.parse_worker_result(await resumed(request))
        assert after_resume.decision is mesh.Decision.BLOCKED_DELIVERY
        assert "not the commit mesh would have made" in after_resume.proof_evidence.key_line
        exact = commit_message(request).removesuffix("\n")
        git(repo, "commit", "--quiet", "--amend", "-m", exact)  # even with mesh's exact message
        again = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await again.recover()
        judged = mesh.parse_worker_result(await again(request))
        assert judged.decision is mesh.Decision.BLOCKED_DELIVERY
        assert judged.failure_code is mesh.FailureCode.SCOPE_VIOLATION
        assert "payload.sh" in judged.proof_evidence.key_line

    async def test_a_patch_that_starts_a_second_message(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A 'From ' line would split the mailbox into two commits: the candidate is refused."""
        patch = diff_of(repo, {"src/util.py": "VALUE = 2\n"}) + (
            "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            "From: x <x@y>\nSubject: [PATCH] second\n\n---\n"
        )
        line = await assert_refused(repo, workspaces, unit(scope=("src",)), patch, tmp_path)
        assert line == "rejected: a line starts with 'From '"

    @pytest.mark.parametrize(
        "objective",
        [
            "Fix the \u00e4 bug",
            "[WIP] =?utf-8?q?x?= ok",
            "a" * 300,
            "tab\tinside",
            "caf\u00e9 " * 40,
        ],
    )
    async def test_the_subject_git_reads_is_the_objective(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path, objective: str
    ) -> None:
        """Non-ASCII, encoded-word look-alikes, long and odd subjects come out as written."""
        committing = mesh.Unit(
            id="u1",
            objective=objective.replace("\t", " "),
            write_scope=("src",),
            proof_command="true",
            delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
            risk_tier=mesh.RiskTier.LOW,
        )
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = mesh.parse_worker_result(await integrator(delivery(committing, found, "run/u1")))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence
        subject = git(repo, "log", "-1", "--format=%s")
        assert subject == " ".join(committing.objective.split())[:200].rstrip() or subject


# -- coders against the user's repository -----------------------------------------------------

AGENT = r"""
set -u
# Everything a confused or hostile agent can do with git from its workspace.
git config core.hooksPath "$PWD/hooks" || true
git config diff.noprefix true || true
git config filter.evil.clean "touch $MARKER; cat" || true
mkdir -p hooks "$(git rev-parse --git-path hooks)"
printf '#!/bin/sh\ntouch %s\n' "$MARKER" > "$(git rev-parse --git-path hooks)/post-applypatch"
printf '#!/bin/sh\ntouch %s\n' "$MARKER" > hooks/post-applypatch
chmod +x hooks/post-applypatch "$(git rev-parse --git-path hooks)/post-applypatch"
echo '* filter=evil' > "$(git rev-parse --git-path info)/attributes" 2>/dev/null || true
git update-ref refs/heads/main HEAD~0 2>/dev/null || true
git -c user.name=a -c user.email=b commit --allow-empty -qm agent || true
git update-ref refs/heads/main HEAD || true
git update-ref refs/heads/planted HEAD || true
printf 'gitdir: %s\n' "$(cat .git/objects/info/alternates | sed 's|/objects$||')" > .git-pointer
rm -rf .git hooks && mv .git-pointer .git
echo 'VALUE = 2' > src/util.py
"""


def run_plan(
    repo: Path, tmp_path: Path, coder: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "plan": [
                    {
                        "id": "a",
                        "step": "change util",
                        "write_scope": ["src/util.py"],
                        "proof_command": "grep -q 'VALUE = 2' src/util.py",
                        "risk_tier": "low",
                    }
                ]
            }
        )
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "run",
            str(plan),
            "--repo",
            str(repo),
            "--out",
            str(tmp_path / "out"),
            "--delivery",
            "commit_first",
            "--coder-command",
            coder,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "MARKER": str(tmp_path / "pwned")},
    )


def repository_state(repo: Path) -> dict[str, object]:
    dot_git = repo / ".git"
    return {
        "config": (dot_git / "config").read_text(),
        "hooks": sorted(p.name for p in (dot_git / "hooks").iterdir()),
        "info": sorted(p.name for p in (dot_git / "info").iterdir()),
        "refs": git(repo, "for-each-ref", "--format=%(refname)", "refs/heads"),
        "staged": git(repo, "diff", "--cached", "--name-only"),
    }


class TestCodersCannotReachTheTarget:
    def test_git_from_the_workspace_stays_there(self, repo: Path, tmp_path: Path) -> None:
        """Hooks, config, attributes, refs, a rewritten .git: none reach the user's repository."""
        before = repository_state(repo)
        done = run_plan(repo, tmp_path, AGENT)
        assert done.returncode == 0, done.stdout + done.stderr
        assert repository_state(repo) == before
        assert git(repo, "log", "--format=%s") == "change util\ninitial"
        assert git(repo, "show", "--name-only", "--format=", "HEAD") == "src/util.py"
        assert not (tmp_path / "pwned").exists()

    def test_a_hook_planted_by_path_is_caught(self, repo: Path, tmp_path: Path) -> None:
        """Without a sandbox a coder can write the repository by path: delivery is blocked."""
        planting = (
            'T=$(sed "s|/objects$||" .git/objects/info/alternates); '
            'printf "#!/bin/sh\\ntouch $MARKER\\n" > "$T/hooks/post-commit"; '
            'chmod +x "$T/hooks/post-commit"; echo "VALUE = 2" > src/util.py'
        )
        done = run_plan(repo, tmp_path, planting)
        assert done.returncode == 1
        assert "delivery_blocked" in done.stdout
        assert "git settings changed during the run: hooks" in done.stdout
        assert git(repo, "log", "--format=%s") == "initial"
        assert not (tmp_path / "pwned").exists()

    def test_meshs_own_shadow_repository_is_checked(self, repo: Path, tmp_path: Path) -> None:
        """A filter planted in mesh's shadow repository by path is refused before git runs it."""
        planting = (
            "printf '[filter \"pwn\"]\\n\\tclean = touch $MARKER; cat\\n' >> ../shadow.git/config; "
            "mkdir -p ../shadow.git/info; echo '* filter=pwn' > ../shadow.git/info/attributes; "
            'echo "VALUE = 2" > src/util.py'
        )
        done = run_plan(repo, tmp_path, planting)
        assert done.returncode == 1
        assert "shadow repository" in done.stdout
        assert "was changed by another process" in done.stdout
        assert not (tmp_path / "pwned").exists()
        assert git(repo, "log", "--format=%s") == "initial"

    @pytest.mark.skipif(
        shutil.which("bwrap") is None and not REQUIRE_SANDBOX, reason="bubblewrap is not installed"
    )
    def test_in_the_sandbox_the_repository_cannot_be_written(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """With --sandbox the same coder cannot write the repository; its in-scope change lands."""
        planting = (
            'T=$(sed "s|/objects$||" .git/objects/info/alternates); '
            'printf "#!/bin/sh\\ntouch $MARKER\\n" > "$T/hooks/post-commit" || true; '
            'touch "$HOME/mesh-sandbox-probe" || true; echo "VALUE = 2" > src/util.py'
        )
        before = repository_state(repo)
        done = run_plan(repo, tmp_path, planting, "--sandbox")
        assert done.returncode == 0, done.stdout + done.stderr
        assert repository_state(repo) == before
        assert git(repo, "log", "--format=%s") == "change util\ninitial"
        assert not (Path.home() / "mesh-sandbox-probe").exists()


FREE_THE_CHILDREN = r"""
setsid sleep {marker} &
# Walk up the parents and kill the reaper that would sweep the orphans.
p=$PPID
while [ "$p" -gt 1 ]; do
    grep -q _reaper /proc/$p/cmdline 2>/dev/null && kill -9 "$p"
    p=$(awk '{{print $4}}' /proc/$p/stat)
done
echo done
"""


class TestProcessesEnd:
    @pytest.mark.skipif(
        shutil.which("bwrap") is None and not REQUIRE_SANDBOX, reason="bubblewrap is not installed"
    )
    async def test_a_command_cannot_kill_its_reaper(self, tmp_path: Path, marker: str) -> None:
        """Even unsandboxed, a command cannot reach its reaper to free its setsid'd children."""
        result = await run_command(
            FREE_THE_CHILDREN.format(marker=marker), cwd=tmp_path, timeout=30
        )
        assert (result.ok, result.output) == (True, "done\n")
        assert await wait_gone(marker)

    async def test_a_proof_that_passed_is_never_a_timeout(
        self, tmp_path: Path, marker: str
    ) -> None:
        """A proof exits 0 while an escaped child holds its output open: it passed, promptly."""
        result = await run_command(
            f"setsid sleep {marker} & echo '1 passed'", cwd=tmp_path, timeout=60
        )
        assert (result.ok, result.timed_out, result.exit_code) == (True, False, 0)
        assert result.seconds < 30
        assert await wait_gone(marker)


class TestTheShadowCannotLie:
    async def test_a_forged_object_in_the_shadow_repository(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """An object planted under a base tree's name (git never hashes it again) lands nothing."""
        commit_files(repo, {"src/auth.py": "def check(user):\n    return False\n"}, "auth")
        real = git(repo, "rev-parse", "HEAD:src")
        # The same folder without auth.py: what the attacker wants the shadow to believe.
        listing = git(repo, "ls-tree", "HEAD:src").splitlines()
        forged_listing = "\n".join(line for line in listing if not line.endswith("\tauth.py"))
        scratch = make_repo(tmp_path / "scratch", {"x": "x\n"})
        forged = git(scratch, "mktree", "--missing", stdin=forged_listing + "\n")
        body = subprocess.run(
            ["git", "cat-file", "tree", forged], cwd=scratch, capture_output=True, check=True
        ).stdout
        loose = workspaces.folder / "shadow.git" / "objects" / real[:2] / real[2:]
        loose.parent.mkdir(parents=True, exist_ok=True)
        loose.write_bytes(zlib.compress(b"tree %d\0" % len(body) + body))
        committing = unit(scope=("src/util.py",), mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = mesh.parse_worker_result(await integrator(delivery(committing, found, "run/u1")))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.failure_code is mesh.FailureCode.SCOPE_VIOLATION
        assert result.proof_evidence.key_line == (
            "scope: touches src/auth.py (deleted), outside write_scope ['src/util.py']"
        )
        assert git(repo, "log", "-1", "--format=%s") == "auth"
        assert (repo / "src" / "auth.py").exists()


class TestLinksThatOthersPassThrough:
    async def test_a_new_link_redirects_an_old_one(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """``B -> .`` resolves inside, but makes the existing ``s/A -> ../B/..`` lead out."""
        (repo / "s").mkdir()
        (repo / "s" / "A").symlink_to("../B/..")
        commit_files(repo, {}, "a link that stays inside")
        (repo / "B").symlink_to(".")
        patch = diff_of(repo, {})
        allowing = unit(scope=("B",), allow=("symlink",))
        applied = await apply(workspaces, allowing, patch)
        assert applied.failure_code is mesh.FailureCode.SCOPE_VIOLATION
        assert applied.proof_evidence.key_line == (
            "rejected: s/A is a symlink this change makes lead out of the worktree"
        )


class Killed(BaseException):
    """Not an Exception: nothing in mesh catches it, as nothing outlives a kill -9."""


class TestWhatHappensWhileNoOneRuns:
    @staticmethod
    async def stopped_run(repo: Path, out: Path) -> None:
        """Unit a delivered; the process stops (as if killed) while unit b is written."""
        plan = {
            "plan": [
                {
                    "id": "a",
                    "step": "write a",
                    "write_scope": ["src/a.txt"],
                    "proof_command": "true",
                },
                {
                    "id": "b",
                    "step": "write b",
                    "deps": ["a"],
                    "write_scope": ["src/b.txt"],
                    "proof_command": "true",
                },
            ]
        }

        def coder(ws: mesh.typing.WorkspaceSource) -> mesh.CallableCoder:
            def edit(request: mesh.AuthorRequest, tree: Path) -> None:
                if request.unit.id == "unit-002":
                    raise Killed  # stands in for a kill: the run stops here
                (tree / "src" / "a.txt").write_text("a\n")

            return mesh.CallableCoder(ws, edit)

        with pytest.raises(BaseExceptionGroup):
            await mesh.run_async(
                plan,
                repo=repo,
                out=out,
                roles=mesh.Roles(coder=coder(repo)),
                delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
                run_id="run",
            )
        assert git(repo, "log", "-1", "--format=%s") == "write a"

    @staticmethod
    async def resume(out: Path, repo: Path) -> mesh.RepositoryRun:
        def coder(ws: mesh.typing.WorkspaceSource) -> mesh.CallableCoder:
            return mesh.CallableCoder(
                ws, lambda request, tree: (tree / "src" / "b.txt").write_text("b\n")
            )

        return await mesh.resume_async(out, roles=mesh.Roles(coder=coder(repo)))

    async def test_a_foreign_commit_made_while_stopped(self, repo: Path, tmp_path: Path) -> None:
        """A commit that appeared while no process ran is foreign after the resume too."""
        await self.stopped_run(repo, tmp_path / "out")
        commit_files(repo, {"setup.py": "import os\n"}, "while no one was looking")
        resumed = await self.resume(tmp_path / "out", repo)
        outcome = resumed.result.outcome("unit-002")
        assert outcome.failure_code is mesh.FailureCode.DELIVERY_BLOCKED
        assert "moved outside mesh" in (outcome.evidence or "")
        assert "while no one was looking" in (outcome.evidence or "")
        assert git(repo, "log", "-1", "--format=%s") == "while no one was looking"

    async def test_settings_changed_while_stopped(self, repo: Path, tmp_path: Path) -> None:
        """A hook planted while no process ran blocks the resumed run's deliveries."""
        await self.stopped_run(repo, tmp_path / "out")
        (repo / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\n")
        resumed = await self.resume(tmp_path / "out", repo)
        evidence = resumed.result.outcome("unit-002").evidence or ""
        assert evidence.startswith("the repository's git settings changed during the run: hooks")

    async def test_nothing_changed_while_stopped(self, repo: Path, tmp_path: Path) -> None:
        """Resumed with nothing foreign in between, the run finishes as it would have."""
        await self.stopped_run(repo, tmp_path / "out")
        resumed = await self.resume(tmp_path / "out", repo)
        assert [o.state for o in resumed.result.outcomes] == ["completed", "completed"]
        assert git(repo, "log", "--format=%s").splitlines() == ["write b", "write a", "initial"]


def forge_commit(
    repo: Path,
    parent: str,
    files: dict[str, str],
    message: str,
    *,
    author: str = "mesh <mesh@localhost>",
    committer: str = "Test <test@example.invalid>",
    extra: str = "",
    second_parent: str | None = None,
) -> str:
    """A commit written byte by byte: any tree, headers and identity, on ``parent``."""
    index = repo.parent / "forged-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "read-tree", parent], cwd=repo, env=env, check=True)
    for name, text in files.items():
        blob = subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repo, input=text, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        subprocess.run(
            ["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}"],
            cwd=repo, env=env, check=True,
        )  # fmt: skip
    tree = subprocess.run(
        ["git", "write-tree"], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    index.unlink()
    raw = (
        f"tree {tree}\nparent {parent}\n"
        + (f"parent {second_parent}\n" if second_parent else "")
        + f"author {author} 1700000000 +0000\n"
        f"committer {committer} 1700000000 +0000\n{extra}\n{message}"
    )
    return subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin"],
        cwd=repo, input=raw, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


class TestCommitsADeadProcessLeft:
    """
    A resumed run takes only commits exactly as mesh makes them for pending deliveries.

    They must sit on the tip its last recorded delivery left; only they reach a checkout.
    """

    @staticmethod
    async def baseline(repo: Path) -> TargetState:
        return await (await open_target(repo)).snapshot(None)

    @staticmethod
    def request(repo: Path, key: str, text: str) -> mesh.DeliveryRequest:
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": text}))
        return delivery(committing, found, key)

    async def test_its_own_commits_are_taken(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """Two deliveries under way, both on the branch: taken, and the checkout brought up."""
        baseline = await self.baseline(repo)
        first = self.request(repo, "run/a", "VALUE = 2\n")
        await killed_after_the_branch_moved(workspaces, tmp_path, first)
        second = self.request(repo, "run/b", "VALUE = 3\n")
        tip = await killed_after_the_branch_moved(workspaces, tmp_path, second)
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.recover(baseline, pending={"run/a": first, "run/b": second})
        assert (git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD")) == ("", tip)
        for request in (first, second):
            again = mesh.parse_worker_result(await integrator(request))
            assert again.proof_evidence.key_line.startswith("already delivered as ")
        later = mesh.parse_worker_result(await integrator(self.request(repo, "run/c", "4\n")))
        assert later.decision is mesh.Decision.INTEGRATED_COMMIT
        assert len(git(repo, "log", "--format=%H").splitlines()) == 4

    @pytest.mark.parametrize(
        "forgery",
        [
            "other content",
            "another author",
            "another committer",
            "an extra header",
            "a merge",
            "on a foreign commit",
        ],
    )
    async def test_a_forged_pending_commit(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path, forgery: str
    ) -> None:
        """
        A commit with a pending delivery's exact message, not exactly mesh's, is foreign.

        It is never written into the checkout, and deliveries stay blocked.
        """
        baseline = await self.baseline(repo)
        request = self.request(repo, "run/a", "VALUE = 2\n")
        parent = git(repo, "rev-parse", "HEAD")
        message = commit_message(request)
        content = {"src/util.py": "VALUE = 2\n"}
        forged = {
            "other content": lambda: forge_commit(
                repo, parent, {"src/util.py": "import os; os.system('evil')\n"}, message
            ),
            "another author": lambda: forge_commit(
                repo, parent, content, message, author="Someone <else@example.invalid>"
            ),
            "another committer": lambda: forge_commit(
                repo, parent, content, message, committer="mesh <mesh@localhost>"
            ),
            "an extra header": lambda: forge_commit(
                repo, parent, content, message, extra="encoding ISO-8859-1\n"
            ),
            "a merge": lambda: forge_commit(repo, parent, content, message, second_parent=parent),
            "on a foreign commit": lambda: forge_commit(
                repo,
                forge_commit(repo, parent, {"src/util.py": "VALUE = 7\n"}, "foreign\n"),
                content,
                message,
            ),
        }[forgery]()
        git(repo, "update-ref", "refs/heads/main", forged)
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.recover(baseline, pending={"run/a": request})
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"  # not brought forward
        answer = mesh.parse_worker_result(await integrator(request))
        assert answer.decision is mesh.Decision.BLOCKED_DELIVERY
        assert answer.proof_evidence.key_line.startswith("branch main moved outside mesh")
        assert git(repo, "rev-parse", "main") == forged

    @pytest.mark.parametrize(
        "change",
        [
            ("no final newline", r"\n\Z", ""),
            ("one more newline", r"\Z", "\n"),
            ("no dates", r" \d+ [+-]\d{4}\n", "\n"),
            ("an overflowing date", r"(author .*) \d+ [+-]\d{4}", r"\1 99999999999999999999 -9999"),
            ("a zone git never writes", r"(committer .* \d+) \+0000", r"\1 -0000"),
            ("a padded date", r"(author .*) (\d+)", r"\1 0\2"),
        ],
    )
    async def test_a_near_copy_of_its_own_commit(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        tmp_path: Path,
        change: tuple[str, str, str],
    ) -> None:
        """
        Mesh's own commit rewritten in one byte git tolerates (or fsck refuses) is foreign.

        Same tree, parent, identities and message: only the very object mesh makes is taken.
        """
        baseline = await self.baseline(repo)
        request = self.request(repo, "run/a", "VALUE = 2\n")
        own = await killed_after_the_branch_moved(workspaces, tmp_path, request)
        raw = subprocess.run(
            ["git", "cat-file", "commit", own], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
        name, old, new = change
        altered = re.sub(old, new, raw, count=1)
        assert altered != raw, name
        forged = subprocess.run(
            ["git", "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
            cwd=repo, input=altered, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        git(repo, "update-ref", "refs/heads/main", forged)
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.recover(baseline, pending={"run/a": request})
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"  # not brought forward
        answer = mesh.parse_worker_result(await integrator(request))
        assert answer.decision is mesh.Decision.BLOCKED_DELIVERY
        assert git(repo, "rev-parse", "main") == forged

    async def test_a_rewritten_branch(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """
        Mesh's own commit for a pending delivery is foreign on a rewritten branch.

        The last recorded delivery must be below it.
        """
        baseline = await self.baseline(repo)
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        recorded = mesh.parse_worker_result(
            await integrator(self.request(repo, "run/a", "VALUE = 2\n"))
        )
        git(repo, "reset", "--quiet", "--hard", baseline.tip or "")
        pending = self.request(repo, "run/b", "VALUE = 3\n")
        replayed = await killed_after_the_branch_moved(workspaces, tmp_path, pending)
        resumed = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await resumed.recover(
            baseline, delivered=[recorded.artifact_ref or ""], pending={"run/b": pending}
        )
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"
        answer = mesh.parse_worker_result(await resumed(pending))
        assert answer.decision is mesh.Decision.BLOCKED_DELIVERY
        assert git(repo, "rev-parse", "main") == replayed

    async def test_through_a_real_resume(
        self, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        Killed right after the branch moved: the resume takes mesh's commit, once.

        Had someone swapped it for a look-alike, the resume refuses it.
        """
        plan = {"plan": [{"id": "a", "step": "write a", "write_scope": ["src/a.txt"]}]}
        moving = mesh.GitIntegrator._move_branch

        async def killed(self: mesh.GitIntegrator, commit: str, tip: str, key: str) -> list[str]:
            await self.workspaces.target()("update-ref", "refs/heads/main", commit, tip)
            raise Killed

        def coder(ws: mesh.typing.WorkspaceSource) -> mesh.CallableCoder:
            return mesh.CallableCoder(
                ws, lambda request, tree: (tree / "src" / "a.txt").write_text("a\n")
            )

        for case in ("mesh's own", "swapped"):
            fresh = make_repo(tmp_path / case / "repo")
            out = tmp_path / case / "out"
            monkeypatch.setattr(mesh.GitIntegrator, "_move_branch", killed)
            with pytest.raises(BaseExceptionGroup):
                await mesh.run_async(
                    plan,
                    repo=fresh,
                    out=out,
                    roles=mesh.Roles(coder=coder(fresh)),
                    delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
                    default_proof_command="true",
                    run_id="run",
                )
            monkeypatch.setattr(mesh.GitIntegrator, "_move_branch", moving)
            made = git(fresh, "rev-parse", "main")
            assert not (fresh / "src" / "a.txt").exists()  # the checkout was not reached
            if case == "swapped":
                message = git(fresh, "cat-file", "commit", made).partition("\n\n")[2] + "\n"
                parent = git(fresh, "rev-parse", "main~1")
                made = forge_commit(fresh, parent, {"src/a.txt": "not a\n"}, message)
                git(fresh, "update-ref", "refs/heads/main", made)
            resumed = await mesh.resume_async(out, roles=mesh.Roles(coder=coder(fresh)))
            outcome = resumed.result.outcome("unit-001")
            assert git(fresh, "rev-parse", "main") == made
            if case == "mesh's own":
                assert (outcome.state, outcome.artifact_ref) == ("completed", made)
                assert (fresh / "src" / "a.txt").read_text() == "a\n"
                assert git(fresh, "status", "--porcelain", "--untracked-files=no") == ""
            else:
                assert outcome.failure_code is mesh.FailureCode.DELIVERY_BLOCKED
                assert not (fresh / "src" / "a.txt").exists()


def forge_index_stat(repo: Path, name: str) -> None:
    """Rewrite ``name``'s stat data in the index to match the file now: git sees no change."""
    index_path = repo / ".git" / "index"
    data = bytearray(index_path.read_bytes()[:-20])
    count = int.from_bytes(data[8:12], "big")
    offset = 12
    info = (repo / name).lstat()
    for _ in range(count):
        path_end = data.index(b"\0", offset + 62)
        path = bytes(data[offset + 62 : path_end])
        if path == name.encode():
            fields = [
                int(info.st_ctime), info.st_ctime_ns % 10**9,
                int(info.st_mtime), info.st_mtime_ns % 10**9,
                info.st_dev & 0xFFFFFFFF, info.st_ino & 0xFFFFFFFF,
            ]  # fmt: skip
            for position, value in enumerate(fields):
                data[offset + 4 * position : offset + 4 * position + 4] = value.to_bytes(4, "big")
            data[offset + 36 : offset + 40] = info.st_size.to_bytes(4, "big")
        entry = 62 + len(path)
        offset += entry + (8 - entry % 8)
    index_path.write_bytes(bytes(data) + hashlib.sha1(data, usedforsecurity=False).digest())


class TestEditsGitWouldNotSee:
    async def test_an_edit_hidden_by_forged_index_stat_data(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """An edit whose index entry was rewritten to match: git is clean, mesh is not fooled."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.prepare()
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        (repo / "docs" / "guide.md").write_text("planted\n")
        os.utime(repo / "docs" / "guide.md", (1e9, 1e9))  # long ago: not "racily clean"
        forge_index_stat(repo, "docs/guide.md")
        assert git(repo, "status", "--porcelain") == ""  # git itself sees nothing
        result = mesh.parse_worker_result(await integrator(delivery(committing, found, "run/u1")))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.endswith(
            "changed without git seeing it: docs/guide.md"
        )

    async def test_a_planted_file_hidden_by_its_own_ignore_file(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A new .gitignore that ignores itself and a conftest.py: both are seen."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.prepare()
        committing = unit(mode="commit_first")
        found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        (repo / "docs" / ".gitignore").write_text(".gitignore\nconftest.py\n")
        (repo / "docs" / "conftest.py").write_text("import os\n")
        assert git(repo, "status", "--porcelain") == ""
        result = mesh.parse_worker_result(await integrator(delivery(committing, found, "run/u1")))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.endswith(": docs/.gitignore")

    async def test_files_mesh_wrote_are_not_hidden_edits(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """After a delivery brought the checkout forward, the next delivery is not blocked."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        for index, value in enumerate(("2", "3")):
            committing = unit(mode="commit_first")
            change = {"src/util.py": f"VALUE = {value}\n"}
            found = candidate(committing, diff_of(repo, change), git(repo, "rev-parse", "HEAD"))
            done = mesh.parse_worker_result(
                await integrator(delivery(committing, found, f"run/u{index}"))
            )
            assert done.decision is mesh.Decision.INTEGRATED_COMMIT, done.proof_evidence


class TestTheKeptState:
    async def test_a_damaged_record_or_none_at_all(self, repo: Path, tmp_path: Path) -> None:
        """A run store without the target's state resumes as before; a damaged one says so."""
        await TestWhatHappensWhileNoOneRuns.stopped_run(repo, tmp_path / "out")
        store = tmp_path / "out" / "run.sqlite"
        with sqlite3.connect(store) as connection:
            (config,) = connection.execute("SELECT config FROM run").fetchone()
            document = json.loads(config)
            for damaged in ({"branch": "main"}, "not a record"):
                document["target"] = damaged
                connection.execute("UPDATE run SET config = ?", (json.dumps(document),))
                connection.commit()
                with pytest.raises(mesh.MeshError, match="record of the target is damaged"):
                    await TestWhatHappensWhileNoOneRuns.resume(tmp_path / "out", repo)
        with sqlite3.connect(store) as connection:
            del document["target"]
            connection.execute("UPDATE run SET config = ?", (json.dumps(document),))
        resumed = await TestWhatHappensWhileNoOneRuns.resume(tmp_path / "out", repo)
        assert [o.state for o in resumed.result.outcomes] == ["completed", "completed"]

    async def test_links_and_missing_files_in_the_checkout(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """A tracked symlink written again (same target) is no hidden edit; a gone file is dirty."""
        (repo / "link").symlink_to("README.md")
        commit_files(repo, {}, "a link")
        async with mesh.WorkspaceManager(repo) as workspaces:
            integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
            await integrator.prepare()
            (repo / "link").unlink()
            (repo / "link").symlink_to("README.md")
            committing = unit(mode="commit_first")
            found = candidate(committing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
            done = mesh.parse_worker_result(await integrator(delivery(committing, found, "run/u1")))
            assert done.decision is mesh.Decision.INTEGRATED_COMMIT, done.proof_evidence
            found = candidate(committing, diff_of(repo, {"src/app.py": "x = 1\n"}), "HEAD")
            (repo / "docs" / "guide.md").unlink()
            again = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
            await again.prepare()  # a tracked file already gone when the run starts
            refused = mesh.parse_worker_result(await again(delivery(committing, found, "run/u2")))
        assert refused.proof_evidence.key_line.endswith("has uncommitted changes")


DEEP_CODER = (
    "import os; os.makedirs('src', exist_ok=True); os.chdir('src')\n"
    "for _ in range(1200):\n    os.mkdir('a'); os.chdir('a')\n"
    "open('x', 'w').write('x')\n"
)


def test_a_tree_deeper_than_recursion_is_cleaned_up(repo: Path, tmp_path: Path) -> None:
    """A coder nesting folders past the recursion limit crashes neither its run nor the next."""
    script = tmp_path / "deep.py"
    script.write_text(DEEP_CODER)
    coder = mesh.CommandCoder(repo, f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    plan = [mesh.Unit(id="a", objective="nest", write_scope=("src/",), proof_command="true")]
    for attempt, pool in (("first", 0), ("second", 4)):
        finished = mesh.run(
            plan, repo=repo, out=tmp_path / attempt, roles=mesh.Roles(coder=coder), pool_size=pool
        )
        finished.result.check()
    assert not any((repo / ".git" / "mesh-worktrees").glob("*/wt-*"))
