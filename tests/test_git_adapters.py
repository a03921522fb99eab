"""The built-in applier, prover, fixer and integrator, on real repositories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import attrs
import pytest

import mesh
from mesh.testing import answer

from repo_helpers import candidate, commit_files, delivery, diff_of, git, survivors, unit

pytestmark = pytest.mark.anyio


def apply_request(the_unit: mesh.Unit, found: mesh.WorkerResult) -> mesh.ApplyRequest:
    return mesh.ApplyRequest(
        unit=the_unit,
        candidate_id=found.candidate_id,
        candidate=found,
        lease_id="lease-1",
        attempt=1,
    )


async def applied(
    workspaces: mesh.WorkspaceManager, the_unit: mesh.Unit, found: mesh.WorkerResult
) -> mesh.WorkerResult:
    return mesh.parse_worker_result(
        await mesh.GitApplier(workspaces)(apply_request(the_unit, found))
    )


def proof_request(
    the_unit: mesh.Unit, found: mesh.WorkerResult, where: mesh.WorkerResult, attempt: int = 1
) -> mesh.ProofRequest:
    return mesh.ProofRequest(
        unit=the_unit,
        candidate_id=found.candidate_id,
        candidate=found,
        applied=where,
        proof_attempt=attempt,
        attempt=1,
    )


class TestGitApplier:
    async def test_applies_in_its_own_worktree(
        self, repo: Path, workspaces: mesh.WorkspaceManager
    ) -> None:
        """An in-scope patch is applied in a worktree at its base; the repository is untouched."""
        the_unit = unit()
        found = candidate(
            the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), git(repo, "rev-parse", "HEAD")
        )
        result = await applied(workspaces, the_unit, found)
        assert result.decision is mesh.Decision.APPLIED
        worktree = Path(result.worktree_path or "")
        assert (worktree / "src" / "util.py").read_text() == "VALUE = 2\n"
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"
        assert workspaces.in_use == 1

    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({"docs/guide.md": "# moved\n"}, "touches docs/guide.md, outside write_scope"),
            ({"README.md": None}, "touches README.md, outside write_scope"),
        ],
    )
    async def test_out_of_scope_is_refused_before_any_worktree(
        self,
        repo: Path,
        workspaces: mesh.WorkspaceManager,
        changes: dict[str, str | None],
        problem: str,
    ) -> None:
        """An out-of-scope patch is refused with evidence; no worktree is even created."""
        the_unit = unit()
        found = candidate(
            the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n", **changes}), "HEAD"
        )
        result = await applied(workspaces, the_unit, found)
        assert result.decision is mesh.Decision.APPLY_FAILED
        assert problem in result.proof_evidence.key_line
        assert result.apply_evidence == result.proof_evidence
        assert workspaces.created == 0

    @pytest.mark.parametrize(
        "patch",
        [
            "--- a/../escape.py\n+++ b/../escape.py\n@@ -0,0 +1 @@\n+x\n",
            "--- /dev/null\n+++ b//tmp/abs.py\n@@ -0,0 +1 @@\n+x\n",
            (
                "diff --git a/src/link b/src/link\nnew file mode 120000\n"
                "--- /dev/null\n+++ b/src/link\n"
                "@@ -0,0 +1 @@\n+../../../etc/passwd\n\\ No newline at end of file\n"
            ),
            (
                "diff --git a/src/app.py b/elsewhere/app.py\nsimilarity index 100%\n"
                "rename from src/app.py\nrename to elsewhere/app.py\n"
            ),
        ],
        ids=["dotdot", "absolute", "symlink-out", "rename-out"],
    )
    async def test_escapes_are_refused(self, workspaces: mesh.WorkspaceManager, patch: str) -> None:
        """'..', absolute paths, symlinks pointing out and renames out of scope never reach git."""
        result = await applied(workspaces, unit(), candidate(unit(), patch, "HEAD"))
        assert result.decision is mesh.Decision.APPLY_FAILED
        assert result.proof_evidence.key_line.startswith("rejected: ")
        assert workspaces.created == 0

    async def test_conflict_is_apply_failed_with_gits_words(
        self, repo: Path, workspaces: mesh.WorkspaceManager
    ) -> None:
        """A patch that does not apply fails with git's evidence; the worktree goes back."""
        stale = diff_of(repo, {"src/util.py": "VALUE = 2\n"})
        commit_files(repo, {"src/util.py": "OTHER = 5\n"}, "moved on")
        result = await applied(workspaces, unit(), candidate(unit(), stale, "HEAD"))
        assert result.decision is mesh.Decision.APPLY_FAILED
        assert result.proof_evidence.command == "git apply --check"
        assert "patch does not apply" in result.proof_evidence.key_line
        assert workspaces.in_use == 0

    async def test_no_patch(self, workspaces: mesh.WorkspaceManager) -> None:
        """A candidate without a patch cannot be applied."""
        request = mesh.AuthorRequest(
            unit=unit(), lane=mesh.Lane.CODER, candidate_id="u1-c1", triplet_index=1, attempt=1
        )
        empty = mesh.parse_worker_result(
            answer(request, decision="no_diff", patch=None, notes="none")
        )
        result = await applied(workspaces, unit(), empty)
        assert result.proof_evidence.key_line == "the candidate carries no patch"


class TestCommandProver:
    async def test_pass_and_fail_with_key_lines(
        self, repo: Path, workspaces: mesh.WorkspaceManager
    ) -> None:
        """The proof runs in the candidate's worktree; its key line is the evidence."""
        passing = unit(proof="grep -q 'VALUE = 2' src/util.py && echo '1 passed'")
        found = candidate(passing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        where = await applied(workspaces, passing, found)
        prover = mesh.CommandProver(workspaces)
        result = mesh.parse_worker_result(await prover(proof_request(passing, found, where)))
        assert (result.decision, result.proof_status, result.proof_attempts) == (
            mesh.Decision.PASS,
            mesh.ProofStatus.PASS,
            1,
        )
        assert result.proof_evidence.key_line == "1 passed"
        assert workspaces.in_use == 0  # a pass is final: the worktree went back

        failing = unit(proof="echo 'AssertionError: VALUE is 2'; exit 1")
        found = candidate(failing, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        where = await applied(workspaces, failing, found)
        first = mesh.parse_worker_result(
            await prover(proof_request(failing, found, where, attempt=1))
        )
        assert (first.proof_status, first.proof_evidence.exit_code) == (mesh.ProofStatus.FAIL, 1)
        assert first.proof_evidence.key_line == "AssertionError: VALUE is 2"
        assert workspaces.in_use == 1  # kept for the retry
        await prover(proof_request(failing, found, where, attempt=2))
        assert workspaces.in_use == 0

    async def test_hung_proof_and_its_grandchild_are_killed(
        self, repo: Path, workspaces: mesh.WorkspaceManager, marker: str
    ) -> None:
        """A proof that hangs is stopped at its timeout, grandchildren included."""
        hung = unit(proof=f"sleep {marker} & wait")
        found = candidate(hung, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        where = await applied(workspaces, hung, found)
        prover = mesh.CommandProver(workspaces, timeout=0.5)
        result = mesh.parse_worker_result(
            await prover(proof_request(hung, found, where, attempt=2))
        )
        assert result.proof_status is mesh.ProofStatus.FAIL
        assert result.proof_evidence.key_line == "timed out after 0.5s"
        assert result.proof_evidence.exit_code == -1
        assert survivors(marker) == []

    async def test_missing_command_or_worktree(self, workspaces: mesh.WorkspaceManager) -> None:
        """Without a proof command or a worktree there is no proof, never a fabricated pass."""
        prover = mesh.CommandProver(workspaces)
        no_proof = unit(proof="")
        found = candidate(no_proof, "--- a/src/x\n+++ b/src/x\n@@ -1 +1 @@\n-a\n+b\n", "HEAD")
        applier_answer = mesh.parse_worker_result(
            answer(apply_request(no_proof, found), worktree_path="/nonexistent")
        )
        result = mesh.parse_worker_result(
            await prover(proof_request(no_proof, found, applier_answer))
        )
        assert result.proof_evidence.key_line == "the unit has no proof_command"
        nowhere = attrs.evolve(applier_answer, worktree_path=None)
        result = mesh.parse_worker_result(await prover(proof_request(unit(), found, nowhere)))
        assert result.proof_evidence.key_line == "the applier reported no worktree"


class TestMechanicalFixer:
    def adjudication(
        self, the_unit: mesh.Unit, proven: list[tuple[str, str]]
    ) -> mesh.AdjudicationRequest:
        pairs = []
        for index, (patch, status) in enumerate(proven, start=1):
            found = candidate(the_unit, patch, "HEAD", index)
            proof = mesh.parse_worker_result(
                answer(
                    proof_request(the_unit, found, found),
                    decision=status,
                    proof_status=status,
                    proof_attempts=1,
                )
            )
            pairs.append((found, proof))
        return mesh.AdjudicationRequest(
            unit=the_unit,
            candidate_id=f"{the_unit.id}-fixer-1",
            proven=tuple(pairs),
            rejected=(),
            fixer_index=1,
            quorum_target=1,
            attempt=1,
        )

    async def test_smallest_passing_patch_wins(self) -> None:
        """Among passing candidates the smallest patch is chosen; failing ones never are."""
        request = self.adjudication(
            unit(), [("x" * 50, "pass"), ("x" * 10, "fail"), ("x" * 20, "pass")]
        )
        result = mesh.parse_worker_result(await mesh.MechanicalFixer()(request))
        assert (result.decision, result.selected_candidate) == (mesh.Decision.ACCEPTED, "u1-c3")

    async def test_nothing_proven_means_rework(self) -> None:
        """With no passing candidate the fixer asks for rework."""
        result = mesh.parse_worker_result(
            await mesh.MechanicalFixer()(self.adjudication(unit(), []))
        )
        assert (result.decision, result.failure_code) == (
            mesh.Decision.REWORK_REQUIRED,
            mesh.FailureCode.PROOF_MISSING,
        )


class TestGitIntegrator:
    async def test_patch_first_writes_artifact_then_plan_state(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """patch_first: a git-am-ready artifact, then plan state; the repository is untouched."""
        the_unit = unit()
        found = candidate(the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        integrator = mesh.GitIntegrator(
            workspaces, artifacts=tmp_path / "out", plan_path=tmp_path / "plan.json"
        )
        result = mesh.parse_worker_result(await integrator(delivery(the_unit, found)))
        assert result.decision is mesh.Decision.INTEGRATED_PATCH
        artifact = Path(result.artifact_ref or "")
        assert artifact == tmp_path / "out" / "u1" / "u1-c1.patch"
        assert "Subject: change u1\n" in artifact.read_text()
        assert json.loads((tmp_path / "plan.json").read_text())["plan"][0]["status"] == "completed"
        assert git(repo, "log", "--format=%s") == "initial"

    async def test_commit_first_makes_a_real_commit(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """commit_first: git am commits the patch on the checked-out branch, with trailers."""
        the_unit = unit(mode="commit_first")
        found = candidate(the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = mesh.parse_worker_result(await integrator(delivery(the_unit, found)))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        assert result.artifact_ref == git(repo, "rev-parse", "HEAD")
        assert git(repo, "log", "-1", "--format=%s%n%b").splitlines()[0] == "change u1"
        assert "Mesh-Unit: u1" in git(repo, "log", "-1", "--format=%b")
        assert (repo / "src" / "util.py").read_text() == "VALUE = 2\n"
        assert git(repo, "status", "--porcelain") == ""

    async def test_conflict_is_blocked_delivery_and_aborted(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A patch that no longer applies is blocked_delivery; git am is aborted cleanly."""
        the_unit = unit(mode="commit_first")
        stale = candidate(the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        commit_files(repo, {"src/util.py": "VALUE = 3\n"}, "someone else")
        integrator = mesh.GitIntegrator(
            workspaces, artifacts=tmp_path / "out", plan_path=tmp_path / "plan.json"
        )
        result = mesh.parse_worker_result(await integrator(delivery(the_unit, stale)))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line.startswith("git am on main: ")
        assert git(repo, "log", "-1", "--format=%s") == "someone else"
        assert git(repo, "status", "--porcelain") == ""
        assert not (tmp_path / "plan.json").exists()  # plan state only after delivery

    async def test_out_of_scope_is_blocked(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """The integrator re-checks the scope: it never delivers what the applier should refuse."""
        the_unit = unit(mode="commit_first")
        found = candidate(the_unit, diff_of(repo, {"docs/guide.md": "x\n"}), "HEAD")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        result = mesh.parse_worker_result(await integrator(delivery(the_unit, found)))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert git(repo, "log", "--format=%s") == "initial"

    async def test_a_branch_not_checked_out_moves_alone(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A branch checked out nowhere gets the commit; the checkout of another is untouched."""
        git(repo, "branch", "side")
        the_unit = unit(mode="commit_first")
        found = candidate(the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="side")
        result = mesh.parse_worker_result(await integrator(delivery(the_unit, found)))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT
        assert git(repo, "rev-parse", "side") == result.artifact_ref
        assert git(repo, "log", "-1", "--format=%s", "main") == "initial"
        assert (repo / "src" / "util.py").read_text() == "VALUE = 1\n"

    async def test_a_missing_branch_is_blocked(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A target branch that does not exist is a blocked delivery that says so."""
        the_unit = unit(mode="commit_first")
        found = candidate(the_unit, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="nope")
        result = mesh.parse_worker_result(await integrator(delivery(the_unit, found)))
        assert result.decision is mesh.Decision.BLOCKED_DELIVERY
        assert result.proof_evidence.key_line == "branch nope has no commit to deliver onto"


class TestTargetBranch:
    async def test_a_detached_head_delivers_patches_but_not_commits(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """With HEAD detached and no branch named, patches are written and commits refused."""
        git(repo, "checkout", "--quiet", "--detach")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.prepare()
        patching = unit()
        found = candidate(patching, diff_of(repo, {"src/util.py": "VALUE = 2\n"}), "HEAD")
        written = mesh.parse_worker_result(await integrator(delivery(patching, found)))
        assert written.decision is mesh.Decision.INTEGRATED_PATCH
        committing = unit(mode="commit_first")
        refused = mesh.parse_worker_result(
            await integrator(delivery(committing, candidate(committing, found.patch or "")))
        )
        assert refused.decision is mesh.Decision.BLOCKED_DELIVERY
        assert refused.proof_evidence.key_line.startswith("HEAD is detached")

    async def test_a_bad_branch_name_is_refused_at_once(
        self, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """A branch name git would not accept stops the integrator before any delivery."""
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out", branch="a..b")
        with pytest.raises(mesh.MeshError, match=r"'a\.\.b' is not a branch name"):
            await integrator.prepare()

    async def test_a_copied_checkout_is_clean(self, repo: Path, tmp_path: Path) -> None:
        """Stale stat data (a copied repository) is not mistaken for uncommitted changes."""
        copy = tmp_path / "copy"
        shutil.copytree(repo, copy, symlinks=True)
        async with mesh.WorkspaceManager(copy) as workspaces:
            committing = unit(mode="commit_first")
            found = candidate(committing, diff_of(copy, {"src/util.py": "VALUE = 2\n"}), "HEAD")
            for path in copy.rglob("*.py"):
                path.touch()
            integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
            result = mesh.parse_worker_result(await integrator(delivery(committing, found)))
        assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence
