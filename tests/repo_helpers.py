"""Real git repositories in temp folders, for the workspace and adapter tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import anyio

import mesh

FILES = {
    "src/app.py": "def main():\n    return 1\n",
    "src/util.py": "VALUE = 1\n",
    "docs/guide.md": "# Guide\n",
    "README.md": "# project\n",
}


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    process = subprocess.run(
        ["git", *args], cwd=repo, input=stdin, capture_output=True, text=True, check=True
    )
    return process.stdout.strip()


def make_repo(folder: Path, files: Mapping[str, str] = FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "--quiet", "--initial-branch=main")
    git(folder, "config", "user.name", "Test")
    git(folder, "config", "user.email", "test@example.invalid")
    commit_files(folder, files, "initial")
    return folder


def commit_files(repo: Path, files: Mapping[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def diff_of(repo: Path, files: Mapping[str, str | None]) -> str:
    """The patch that would make these changes in ``repo`` (the repository is left as it was)."""
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "--all")
    patch = git(repo, "diff", "--cached", "--binary") + "\n"
    git(repo, "reset", "--quiet", "--hard")
    git(repo, "clean", "-fdq")
    return patch


def unit(
    unit_id: str = "u1",
    *,
    scope: tuple[str, ...] = ("src",),
    proof: str = "true",
    mode: str = "patch_first",
    deps: tuple[str, ...] = (),
    risk: str = "low",
    allow: tuple[str, ...] = (),
) -> mesh.Unit:
    return mesh.Unit(
        id=unit_id,
        objective=f"change {unit_id}",
        write_scope=scope,
        proof_command=proof,
        delivery_mode=mesh.DeliveryMode(mode),
        deps=deps,
        risk_tier=mesh.RiskTier(risk),
        allow_special=tuple(mesh.SpecialPath(kind) for kind in allow),
    )


def candidate(
    the_unit: mesh.Unit, patch: str, base: str = "HEAD", index: int = 1
) -> mesh.WorkerResult:
    """A valid author answer carrying ``patch``, as the engine would hand it on."""
    from mesh.testing import answer  # noqa: PLC0415 - keeps this helper module light to import

    lane = mesh.Lane.CODER if index < 3 else mesh.Lane.REDUCER
    request = mesh.AuthorRequest(
        unit=the_unit,
        lane=lane,
        candidate_id=f"{the_unit.id}-c{index}",
        triplet_index=index,
        attempt=1,
    )
    return mesh.parse_worker_result(answer(request, patch=patch, base_sha=base))


def delivery(
    the_unit: mesh.Unit,
    found: mesh.WorkerResult,
    key: str = "",
    *,
    proof_evidence: Mapping[str, object] | None = None,
) -> mesh.DeliveryRequest:
    """Ask to deliver ``found`` (with a passing proof, of this evidence) under ``key``."""
    from mesh.testing import answer  # noqa: PLC0415

    evidence = {"proof_evidence": dict(proof_evidence)} if proof_evidence else {}
    proof = mesh.parse_worker_result(
        answer(
            mesh.ProofRequest(
                unit=the_unit,
                candidate_id=found.candidate_id,
                candidate=found,
                applied=found,
                proof_attempt=1,
                attempt=1,
            ),
            **evidence,
        )
    )
    state = {"plan": [{"id": the_unit.id, "step": the_unit.objective, "status": "completed"}]}
    return mesh.DeliveryRequest(
        unit=the_unit,
        candidate_id=found.candidate_id,
        candidate=found,
        proof=proof,
        approvals=1,
        plan_state=state,
        attempt=1,
        idempotency_key=key,
    )


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, exited but not yet collected, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def survivors(marker: str) -> list[int]:
    """
    Live processes (zombies aside) whose command line holds ``marker``.

    A command run contained may be in a pid namespace of its own, where the
    pids it sees (``$!``) mean nothing here: tests find its processes by a
    marker in their command line instead.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def wait_gone(marker: str, within: float = 5.0) -> bool:
    """Whether every process carrying ``marker`` is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not survivors(marker):
            return True
        await anyio.sleep(0.02)
    return False


async def killed_after_the_branch_moved(
    workspaces: mesh.WorkspaceManager, tmp_path: Path, request: mesh.DeliveryRequest
) -> str:
    """
    ``request`` delivered by mesh, then the checkout put back one commit, files included.

    That is where a process killed between moving the branch and the checkout leaves it.
    """
    integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "killed")
    result = mesh.parse_worker_result(await integrator(request))
    assert result.decision is mesh.Decision.INTEGRATED_COMMIT, result.proof_evidence.key_line
    git(workspaces.repo, "read-tree", "--reset", "-u", "HEAD~1")
    return result.artifact_ref or ""
