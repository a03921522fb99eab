"""
Built-in role adapters that do the real work on a git repository.

`GitApplier` applies a candidate in its own workspace after the scope gate,
`CommandProver` runs the unit's proof command there, and `MechanicalFixer`
adjudicates without a model. `GitIntegrator` (in ``_integrator``) delivers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import anyio
import attrs

from ..contracts._contract import MAX_PROOF_ATTEMPTS
from ..contracts._enums import Decision, FailureCode, Lane, ProofStatus
from ..contracts._gate import gate_problems
from ..contracts._patch import scope_problems
from ..contracts._records import Unit
from ..engine._roles import (
    AdjudicationRequest,
    ApplyRequest,
    ProofRequest,
    result_document,
)
from ..host._process import key_line, run_command
from ..host._sandbox import Sandbox
from ._workspaces import (
    ChangeReading,
    Workspace,
    WorkspaceManager,
    WorkspaceSource,
    opened,
    source_problems,
)

__all__ = ["CommandProver", "GitApplier", "MechanicalFixer", "PatchVerdict", "judge_patch"]

_NO_PATCH: Final = "the candidate carries no patch"


def _evidence(command: str, line: str, exit_code: int | None) -> dict[str, object]:
    return {
        "command": command,
        "key_line": line,
        "exit_code": -1 if exit_code is None else exit_code,
    }


class GitApplier:
    """
    Applies each candidate in its own workspace at the candidate's base commit.

    Nothing is applied before the scope gate passed. The patch's text is
    read first as a quick filter (paths outside the scope, ``..``, absolute
    paths, ``.git``, symlinks pointing out); then git applies it to an index
    built from the base commit in mesh's shadow repository, and the gate
    (`mesh.gate_problems`) judges every path and mode git reports, against
    the unit's write scope and ``allow_special``. A refusal is
    ``apply_failed`` with failure code ``scope_violation`` and the problems
    as evidence; a patch git cannot apply is ``apply_failed`` with git's own
    words. Only then is the patch applied to a fresh workspace, which stays
    for the prover (it gives it back).

    Given a repository path instead of an open `WorkspaceManager`, the applier
    can run on another machine (a Ray worker, in its clone of the repository):
    it judges the patch there and answers ``applied`` without a workspace; a
    `CommandProver` given a path then applies the patch again where the proof runs.

    .. versionadded:: 0.1.0
    """

    def __init__(self, workspaces: WorkspaceSource) -> None:
        self.workspaces = workspaces

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: ApplyRequest) -> dict[str, object]:
        """Apply one candidate: ``applied`` with its workspace, else ``apply_failed`` and why."""
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
        async with opened(self.workspaces) as workspaces:
            verdict = await judge_patch(workspaces, unit, candidate.base_sha, patch)
            if verdict.problems:
                return answer(
                    Decision.APPLY_FAILED,
                    _evidence(verdict.command, f"rejected: {verdict.problems[0]}", 1),
                    notes="; ".join(verdict.problems),
                    failure_code=FailureCode.SCOPE_VIOLATION.value,
                )
            if verdict.reading is None or not verdict.reading.applies:
                output = verdict.reading.evidence if verdict.reading else ""
                return answer(
                    Decision.APPLY_FAILED, _apply_evidence(1, output), notes=output or None
                )
            if workspaces is not self.workspaces:
                return answer(
                    Decision.APPLIED,
                    _evidence("git apply --cached", f"applies at {candidate.base_sha[:12]}", 0),
                    notes="judged where it runs; the prover applies it where it proves",
                )
            workspace = await workspaces.acquire(candidate.base_sha)
            exit_code = 1
            try:
                exit_code, output = await _apply_patch(workspace, patch)
            finally:
                # Kept for the prover only when applied; given back on failure or cancellation.
                if exit_code != 0:
                    with anyio.CancelScope(shield=True):
                        await workspaces.release(workspace)
        if exit_code != 0:
            return answer(
                Decision.APPLY_FAILED, _apply_evidence(exit_code, output), notes=output.strip()
            )
        return answer(
            Decision.APPLIED,
            _evidence("git apply", f"applied at {workspace.sha[:12]}", 0),
            worktree_path=str(workspace.path),
        )


@attrs.frozen(kw_only=True)
class PatchVerdict:
    """The scope gate's verdict on one patch: git's reading of it, and the problems found."""

    command: str
    """What decided: ``scope check`` (the text) or ``git apply --cached`` (git's reading)."""
    problems: tuple[str, ...] = ()
    reading: ChangeReading | None = None


async def judge_patch(
    workspaces: WorkspaceManager, unit: Unit, base: str, patch: str
) -> PatchVerdict:
    """
    The scope gate on a candidate's patch: the text filter, then git's own reading.

    Git applies the patch to an index built from ``base`` in the manager's
    shadow repository; `gate_problems` then judges every path and mode git
    changed. A patch git cannot apply has no problems and ``applies=False``.
    """
    quick = scope_problems(patch, unit.write_scope)
    if quick:
        return PatchVerdict(command="scope check", problems=tuple(quick))
    if any(line.startswith("From ") for line in patch.split("\n")):
        # Never a patch line; in a mailbox it would start a second message.
        return PatchVerdict(command="scope check", problems=("a line starts with 'From '",))
    reading = await workspaces.read_patch(base, patch)
    if not reading.applies:
        return PatchVerdict(command="git apply --cached", reading=reading)
    problems = gate_problems(
        reading.changes,
        write_scope=unit.write_scope,
        allow_special=unit.allow_special,
        links=reading.links,
        base_links=reading.base_links,
    )
    if not reading.changes:
        problems.append("the patch changes nothing")
    return PatchVerdict(command="git apply --cached", problems=tuple(problems), reading=reading)


async def _apply_patch(workspace: Workspace, patch: str) -> tuple[int, str]:
    """Apply to the workspace's files, through mesh's own index: exit code and git's words."""
    result = await workspace.git().run(
        "apply", "--index", "--whitespace=nowarn", "-", stdin=patch.encode()
    )
    return result.exit_code, result.errors


def _apply_evidence(exit_code: int | None, output: str) -> dict[str, object]:
    return _evidence("git apply --check", key_line(output) or "git apply --check failed", exit_code)


class CommandProver:
    """
    Runs the unit's ``proof_command`` in the candidate's workspace.

    The command runs in a shell under ``timeout`` seconds; when it ends, or
    runs over, nothing it started survives (see `run_command`: on Linux a
    reaper kills every descendant, even ones that left the process group).
    Its output is capped at ``output_limit`` bytes; the key line (a test
    summary, else an error, else the last line) is the evidence. With a
    ``sandbox`` (`mesh.Sandbox`) it runs in bubblewrap: the system read-only,
    only the workspace writable. The engine retries a failed proof once;
    after the last attempt the workspace goes back to the pool.

    Given a repository path instead of an open `WorkspaceManager`, the prover
    makes its own workspace where it runs (a Ray worker, in its clone of the
    repository): it judges the patch with the scope gate there, checks out
    the candidate's base commit, applies the patch, runs the proof and
    removes the workspace, for each attempt.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        workspaces: WorkspaceSource,
        *,
        timeout: float = 600.0,
        output_limit: int = 256 * 1024,
        env: Mapping[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.timeout = timeout
        self.output_limit = output_limit
        self.env = env
        self.sandbox = sandbox

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: ProofRequest) -> dict[str, object]:
        """Run the proof once: ``pass`` or ``fail`` with the command's evidence."""
        if isinstance(self.workspaces, WorkspaceManager):
            return await self._prove(request, self.workspaces, request.applied.worktree_path)
        candidate = request.candidate
        async with opened(self.workspaces) as workspaces:
            # Judged again here: this machine's repository is the one the patch goes into.
            verdict = await judge_patch(
                workspaces, request.unit, candidate.base_sha, candidate.patch or ""
            )
            if verdict.problems or verdict.reading is None or not verdict.reading.applies:
                line = verdict.problems[0] if verdict.problems else "the patch does not apply"
                return self._answer(
                    request, passed=False, evidence=_evidence(verdict.command, line, 1)
                )
            workspace = await workspaces.acquire(candidate.base_sha)
            exit_code, output = await _apply_patch(workspace, candidate.patch or "")
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
                    sandbox=self.sandbox,
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
