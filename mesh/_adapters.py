"""
Built-in role adapters that do the real work on a git repository.

`GitApplier` applies a candidate in its own worktree after the scope gate,
`CommandProver` runs the unit's proof command there, `MechanicalFixer`
adjudicates without a model, and `GitIntegrator` delivers the accepted patch
(an artifact, or a commit made with ``git am``) and then writes plan state.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Final

import anyio

from ._contract import MAX_PROOF_ATTEMPTS
from ._enums import Decision, DeliveryMode, Lane, ProofStatus
from ._files import atomic_write_text
from ._git import GitError, git, git_result
from ._patch import scope_problems
from ._process import key_line, run_command
from ._roles import (
    AdjudicationRequest,
    ApplyRequest,
    DeliveryRequest,
    ProofRequest,
    result_document,
)
from ._workspaces import WorkspaceManager, WorkspaceSource, checkout_at, opened

__all__ = ["CommandProver", "GitApplier", "GitIntegrator", "MechanicalFixer", "mailbox"]

_NO_PATCH: Final = "the candidate carries no patch"


def _evidence(command: str, line: str, exit_code: int | None) -> dict[str, object]:
    return {
        "command": command,
        "key_line": line,
        "exit_code": -1 if exit_code is None else exit_code,
    }


class GitApplier:
    """
    Applies each candidate in its own worktree at the candidate's base commit.

    The patch is checked against the unit's write scope before anything is
    touched (paths outside it, ``..``, absolute paths, ``.git``, symlinks
    pointing out, renames out of scope), then ``git apply --check``, then
    applied. The worktree stays for the prover, which gives it back.

    Given a repository path instead of an open `WorkspaceManager`, the applier
    can run on another machine (a Ray worker, in its clone of the repository):
    it checks that the patch applies in a worktree of its own, removes it, and
    answers ``applied`` without a worktree; a `CommandProver` given a path then
    applies the patch again where the proof runs.

    .. versionadded:: 0.1.0
    """

    def __init__(self, workspaces: WorkspaceSource) -> None:
        self.workspaces = workspaces

    async def __call__(self, request: ApplyRequest) -> dict[str, object]:
        """Apply one candidate: ``applied`` with its worktree, or ``apply_failed`` with evidence."""
        unit = request.unit
        candidate = request.candidate
        patch = candidate.patch or ""

        def answer(
            decision: Decision, evidence: dict[str, object], **fields: object
        ) -> dict[str, object]:
            return result_document(
                unit,
                candidate_id=request.candidate_id,
                lane=Lane.APPLIER,
                decision=decision,
                triplet_index=candidate.triplet_index,
                base_sha=candidate.base_sha,
                proof_evidence=evidence,
                apply_evidence=evidence,
                **fields,
            )

        if not patch:
            return answer(
                Decision.APPLY_FAILED, _evidence("scope check", _NO_PATCH, 1), notes=_NO_PATCH
            )
        problems = scope_problems(patch, unit.write_scope)
        if problems:
            return answer(
                Decision.APPLY_FAILED,
                _evidence("scope check", f"rejected: {problems[0]}", 1),
                notes="; ".join(problems),
            )
        if not isinstance(self.workspaces, WorkspaceManager):
            async with checkout_at(self.workspaces, candidate.base_sha) as (_, workspace):
                exit_code, output = await _apply_patch(workspace.path, patch)
            if exit_code != 0:
                return answer(
                    Decision.APPLY_FAILED,
                    _apply_evidence(exit_code, output),
                    notes=output.strip(),
                )
            return answer(
                Decision.APPLIED,
                _evidence("git apply --check", f"applies at {workspace.sha[:12]}", 0),
                notes="checked in a worktree of its own; the prover applies it where it runs",
            )
        workspace = await self.workspaces.acquire(candidate.base_sha)
        exit_code = 1
        try:
            exit_code, output = await _apply_patch(workspace.path, patch)
        finally:
            # Kept for the prover only when applied; given back on failure or cancellation.
            if exit_code != 0:
                with anyio.CancelScope(shield=True):
                    await self.workspaces.release(workspace)
        if exit_code != 0:
            return answer(
                Decision.APPLY_FAILED, _apply_evidence(exit_code, output), notes=output.strip()
            )
        return answer(
            Decision.APPLIED,
            _evidence("git apply", f"applied at {workspace.sha[:12]}", 0),
            worktree_path=str(workspace.path),
        )


async def _apply_patch(worktree: Path, patch: str) -> tuple[int | None, str]:
    """``git apply --check``, then apply: the check's exit code and output."""
    data = patch.encode()
    exit_code, output = await git_result(
        "apply", "--check", "--whitespace=nowarn", "-", cwd=worktree, stdin=data
    )
    if exit_code == 0:
        await git("apply", "--whitespace=nowarn", "-", cwd=worktree, stdin=data)
    return exit_code, output


def _apply_evidence(exit_code: int | None, output: str) -> dict[str, object]:
    return _evidence("git apply --check", key_line(output) or "git apply --check failed", exit_code)


class CommandProver:
    """
    Runs the unit's ``proof_command`` in the candidate's worktree.

    The command runs in a shell, in its own process group, under ``timeout``
    seconds (the whole group is killed when it runs over), with its output
    capped at ``output_limit`` bytes; the key line (a test summary, else an
    error, else the last line) is the evidence. The engine retries a failed
    proof once; after the last attempt the worktree goes back to the pool.

    Given a repository path instead of an open `WorkspaceManager`, the prover
    makes its own worktree where it runs (a Ray worker, in its clone of the
    repository): it checks out the candidate's base commit, applies the patch,
    runs the proof and removes the worktree, for each attempt.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        workspaces: WorkspaceSource,
        *,
        timeout: float = 600.0,
        output_limit: int = 256 * 1024,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.timeout = timeout
        self.output_limit = output_limit
        self.env = env

    async def __call__(self, request: ProofRequest) -> dict[str, object]:
        """Run the proof once: ``pass`` or ``fail`` with the command's evidence."""
        if isinstance(self.workspaces, WorkspaceManager):
            return await self._prove(request, self.workspaces, request.applied.worktree_path)
        async with opened(self.workspaces) as workspaces:
            workspace = await workspaces.acquire(request.candidate.base_sha)
            exit_code, output = await _apply_patch(workspace.path, request.candidate.patch or "")
            if exit_code != 0:
                return self._answer(
                    request, passed=False, evidence=_apply_evidence(exit_code, output)
                )
            return await self._prove(request, workspaces, str(workspace.path))

    async def _prove(
        self, request: ProofRequest, workspaces: WorkspaceManager, worktree: str | None
    ) -> dict[str, object]:
        unit = request.unit
        command = unit.proof_command.strip()
        exit_code: int | None
        if not worktree:
            line, exit_code, passed = "the applier reported no worktree", 1, False
        elif not command:
            line, exit_code, passed = "the unit has no proof_command", 1, False
        else:
            environment = {**os.environ, **(self.env or {}), "MESH_UNIT_ID": unit.id}
            try:
                result = await run_command(
                    command,
                    cwd=worktree,
                    timeout=self.timeout,
                    env=environment,
                    output_limit=self.output_limit,
                )
            finally:
                if request.proof_attempt >= MAX_PROOF_ATTEMPTS:
                    await workspaces.release(worktree)
            exit_code = result.exit_code
            passed = result.ok
            line = (
                f"timed out after {self.timeout:g}s; {key_line(result.output)}".rstrip("; ")
                if result.timed_out
                else key_line(result.output) or f"exit code {exit_code}"
            )
        if passed and request.proof_attempt < MAX_PROOF_ATTEMPTS and worktree:
            await workspaces.release(worktree)
        return self._answer(
            request, passed=passed, evidence=_evidence(command or "(none)", line, exit_code)
        )

    def _answer(
        self, request: ProofRequest, *, passed: bool, evidence: dict[str, object]
    ) -> dict[str, object]:
        status = ProofStatus.PASS if passed else ProofStatus.FAIL
        return result_document(
            request.unit,
            candidate_id=request.candidate_id,
            lane=Lane.PROVER,
            decision=status.value,
            triplet_index=request.candidate.triplet_index,
            base_sha=request.candidate.base_sha,
            proof_status=status.value,
            proof_attempts=request.proof_attempt,
            proof_evidence=evidence,
        )


class MechanicalFixer:
    """
    A fixer without a model: accepts the passing candidate with the smallest patch.

    Deterministic, so every fixer of a quorum agrees; ties go to the lowest
    candidate id. With no passing candidate it asks for rework.

    .. versionadded:: 0.1.0
    """

    async def __call__(self, request: AdjudicationRequest) -> dict[str, object]:
        """Pick the smallest proven candidate."""
        proven = sorted(
            (len(candidate.patch or ""), candidate.candidate_id)
            for candidate, proof in request.proven
            if proof.proof_status is ProofStatus.PASS
        )
        common = {
            "triplet_index": request.fixer_index,
            "quorum_target": request.quorum_target,
            "quorum_observed": request.quorum_target,
        }
        if not proven:
            return result_document(
                request.unit,
                candidate_id=request.candidate_id,
                lane=Lane.FIXER,
                decision=Decision.REWORK_REQUIRED,
                failure_code="proof_missing",
                notes="no candidate passed its proof",
                **common,
            )
        size, selected = proven[0]
        return result_document(
            request.unit,
            candidate_id=request.candidate_id,
            lane=Lane.FIXER,
            decision=Decision.ACCEPTED,
            proof_status="pass",
            selected_candidate=selected,
            notes=f"smallest passing patch ({size} bytes)",
            **common,
        )


def mailbox(request: DeliveryRequest, *, author: str, when: datetime | None = None) -> str:
    """
    The accepted candidate as one ``git am`` message, trailers naming unit and candidate.

    .. versionadded:: 0.1.0
    """
    unit = request.unit
    proof = request.proof.proof_evidence
    subject = " ".join(unit.objective.split()) or unit.id
    moment = format_datetime(when or datetime.now(UTC))
    body = (
        f"Proof: {proof.command} -> {proof.key_line}\n"
        f"Approvals: {request.approvals}\n\n"
        f"Mesh-Unit: {unit.id}\nMesh-Candidate: {request.candidate_id}\n"
        + (f"Mesh-Delivery: {request.idempotency_key}\n" if request.idempotency_key else "")
    )
    patch = request.candidate.patch or ""
    return (
        f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {author}\nDate: {moment}\nSubject: [PATCH] {subject}\n\n{body}---\n{patch}"
        + ("" if patch.endswith("\n") else "\n")
    )


class GitIntegrator:
    """
    The only writer: delivers the accepted candidate, then writes plan state.

    ``patch_first`` units: the patch is written as a ``git am``-ready artifact
    under ``artifacts``. ``commit_first`` units: the patch becomes a commit on
    ``branch`` (default: the branch checked out in the repository) with
    ``git am -3``, in the worktree where that branch is checked out. A patch
    that does not apply is aborted cleanly and reported as ``blocked_delivery``.
    Only after delivery succeeded is ``plan_state`` written to ``plan_path``.

    Delivery is idempotent: each commit carries a ``Mesh-Delivery`` trailer
    with the request's idempotency key, and a key already on the branch is
    answered with that commit instead of a second one.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        workspaces: WorkspaceManager,
        *,
        artifacts: str | os.PathLike[str],
        plan_path: str | os.PathLike[str] | None = None,
        branch: str | None = None,
        author: str = "mesh <mesh@localhost>",
    ) -> None:
        self.workspaces = workspaces
        self.artifacts = Path(artifacts)
        self.plan_path = Path(plan_path) if plan_path is not None else None
        self.branch = branch
        self.author = author

    async def _branch_worktree(self) -> tuple[str, Path]:
        """The target branch, and the worktree where it is checked out."""
        repo = self.workspaces.repo
        branch = self.branch or await git("symbolic-ref", "--short", "HEAD", cwd=repo)
        for path, checked_out in (await self.workspaces.worktrees()).items():
            if checked_out == branch:
                return branch, path
        raise GitError(
            f"deliver to {branch}", f"branch {branch} is not checked out in any worktree", 1
        )

    async def recover(self) -> None:
        """
        Clean up after a process that died while delivering: its index lock and its ``git am``.

        Only call this when resuming that process's run: the lock and the
        half-done ``git am`` are taken to be its own.
        """
        _, worktree = await self._branch_worktree()
        for name in ("index.lock", "rebase-apply"):
            path = Path(await git("rev-parse", "--git-path", name, cwd=worktree))
            path = path if path.is_absolute() else worktree / path
            if name == "index.lock":
                path.unlink(missing_ok=True)
            elif path.exists():
                await git("am", "--abort", cwd=worktree)

    async def _delivered(self, key: str, branch: str, worktree: Path) -> str | None:
        """The commit on ``branch`` that carries this delivery key, if any."""
        if not key:
            return None
        # --grep narrows the walk; the trailer values decide, because a key can
        # be a prefix of another one (``run/a`` of ``run/ab``).
        found = await git(
            "log",
            "--format=%x1e%H%x1f%(trailers:key=Mesh-Delivery,valueonly)",
            "--fixed-strings",
            f"--grep=Mesh-Delivery: {key}",
            branch,
            cwd=worktree,
        )
        for record in found.split("\x1e")[1:]:
            sha, _, values = record.partition("\x1f")
            if key in values.splitlines():
                return sha
        return None

    async def __call__(self, request: DeliveryRequest) -> dict[str, object]:
        """Deliver as the unit's delivery mode says; write plan state after success."""
        unit = request.unit
        candidate = request.candidate
        message = mailbox(request, author=self.author)

        def answer(decision: Decision, line: str, **fields: object) -> dict[str, object]:
            return result_document(
                unit,
                candidate_id=request.candidate_id,
                lane=Lane.INTEGRATOR,
                decision=decision,
                triplet_index=candidate.triplet_index,
                base_sha=candidate.base_sha,
                proof_status="pass",
                proof_attempts=request.proof.proof_attempts,
                proof_evidence=_evidence(
                    "deliver", line, 0 if decision is not Decision.BLOCKED_DELIVERY else 1
                ),
                **fields,
            )

        problems = scope_problems(candidate.patch or "", unit.write_scope)
        if problems:
            return answer(
                Decision.BLOCKED_DELIVERY, f"scope: {problems[0]}", notes="; ".join(problems)
            )
        artifact = self.artifacts / unit.id / f"{request.candidate_id}.patch"
        await _write(artifact, message)
        if unit.delivery_mode is DeliveryMode.COMMIT_FIRST:
            branch, worktree = await self._branch_worktree()
            earlier = await self._delivered(request.idempotency_key, branch, worktree)
            if earlier is not None:
                if self.plan_path is not None:
                    await _write(self.plan_path, json.dumps(request.plan_state, indent=2) + "\n")
                return answer(
                    Decision.INTEGRATED_COMMIT,
                    f"already delivered as {earlier[:12]} on {branch}",
                    artifact_ref=earlier,
                    scope_assertion=f"within write_scope {list(unit.write_scope)}",
                )
            exit_code, output = await git_result(
                "am", "-3", "--keep-cr", cwd=worktree, stdin=message.encode()
            )
            if exit_code != 0:
                await git_result("am", "--abort", cwd=worktree)
                return answer(
                    Decision.BLOCKED_DELIVERY,
                    f"git am on {branch}: {key_line(output)}",
                    notes=output.strip(),
                    artifact_ref=str(artifact),
                )
            sha = await git("rev-parse", "HEAD", cwd=worktree)
            decision, reference, line = (
                Decision.INTEGRATED_COMMIT,
                sha,
                f"committed {sha[:12]} on {branch}",
            )
        else:
            decision, reference, line = (
                Decision.INTEGRATED_PATCH,
                str(artifact),
                f"patch at {artifact}",
            )
        if self.plan_path is not None:
            await _write(self.plan_path, json.dumps(request.plan_state, indent=2) + "\n")
        digest = hashlib.sha256((candidate.patch or "").encode()).hexdigest()
        return answer(
            decision,
            line,
            artifact_ref=reference,
            scope_assertion=f"within write_scope {list(unit.write_scope)}",
            patch_sha256=digest,
        )


async def _write(path: Path, text: str) -> None:
    await anyio.to_thread.run_sync(
        lambda: atomic_write_text(path, text, what="delivery output", create_parents=True)
    )
