"""
Bring your own agent: your coder, prover and fixer, run durably on a real repository.

- ``LlmCoder``: an async coder that asks a model for a file's new text and answers
  with a diff (it never touches a worktree: mesh applies the diff itself).
- ``pytest_prover``: runs pytest in the worktree where mesh applied the candidate.
- ``voting_fixer``: each fixer votes for the smallest proven candidate.

mesh plays the other roles (workspaces, leases, the scope gate, delivery by
``git am``). The run is killed with SIGKILL halfway through and resumed: the
unit delivered before the kill is not delivered again.

Run it from anywhere: ``python examples/bring_your_own_agent.py``. Its unit
tests are ``examples/test_bring_your_own_agent.py`` (``pytest examples``).
"""

from __future__ import annotations

import difflib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

import mesh
import mesh.answers

Model = Callable[[str, str], Awaitable[str]]
"""A model call: (prompt, the file's current text) -> the file's new text."""

PLAN = {
    "plan": [
        {
            "id": "add",
            "step": "Write add(a, b) in calc.py",
            "write_scope": ["calc.py"],
            "proof_command": "pytest",
        },
        {
            "id": "mul",
            "step": "Write mul(a, b) in calc.py",
            "deps": ["add"],
            "write_scope": ["calc.py"],
            "proof_command": "pytest",
        },
    ]
}
TESTS = """\
import calc


def test_add():
    if hasattr(calc, "add"):
        assert calc.add(2, 3) == 5


def test_mul():
    if hasattr(calc, "mul"):
        assert calc.mul(2, 3) == 6
"""


async def scripted_model(prompt: str, current: str) -> str:
    """Stands in for an LLM: knows how to write add and mul."""
    await anyio.sleep(0.01)  # a network round trip
    if "mul(" in prompt:
        return current + "\n\ndef mul(a, b):\n    return a * b\n"
    return current + "\n\ndef add(a, b):\n    return a + b\n"


class LlmCoder:
    """An async coder: the model's new text for the unit's file, as a diff."""

    def __init__(self, repo: Path, model: Model = scripted_model) -> None:
        self.repo = repo
        self.model = model

    async def __call__(self, request: mesh.AuthorRequest) -> mesh.WorkerResult:
        unit = request.unit
        path = unit.write_scope[0]
        # On a repository, mesh hands coders the commit the unit starts from.
        current = await self.read(unit.base_sha, path)
        prompt = f"{unit.objective}\nConstraints: {unit.constraints}\nFile: {path}"
        new = await self.model(prompt, current)
        if new == current:
            return mesh.answers.no_diff(request, reason="the model changed nothing")
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"a/{path}",
                tofile=f"b/{path}",
            )
        )
        return mesh.answers.candidate(request, patch=diff, notes=f"{len(new)} characters")

    async def read(self, commit: str, path: str) -> str:
        shown = await anyio.run_process(["git", "show", f"{commit}:{path}"], cwd=self.repo)
        return shown.stdout.decode()


async def pytest_prover(request: mesh.ProofRequest) -> mesh.WorkerResult:
    """Run pytest where mesh applied the candidate; its last line is the evidence."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    # The project's tests alone: no plugins the host happens to have installed.
    environment = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with anyio.fail_after(120):
        ran = await anyio.run_process(
            command,
            cwd=request.applied.worktree_path,
            env=environment,
            check=False,
            stderr=subprocess.STDOUT,
        )
    lines = ran.stdout.decode(errors="replace").strip().splitlines()
    return mesh.answers.proof(
        request,
        passed=ran.returncode == 0,
        evidence=lines[-1] if lines else "",
        command="pytest -q",
        exit_code=ran.returncode,
    )


def voting_fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
    """Vote for the proven candidate with the smallest patch."""
    smallest = min(request.proven, key=lambda pair: len(pair[0].patch or ""))[0]
    return mesh.answers.verdict(request, select=smallest.candidate_id, notes="smallest patch")


def roles(repo: Path, model: Model = scripted_model) -> mesh.Roles:
    """The adapters of this example; mesh plays every role left out."""
    return mesh.Roles(coder=LlmCoder(repo, model), prover=pytest_prover, fixer=voting_fixer)


def make_repository(folder: Path) -> Path:
    repo = folder / "repo"
    repo.mkdir(parents=True)
    (repo / "calc.py").write_text('"""A calculator."""\n')
    (repo / "test_calc.py").write_text(TESTS)
    for command in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "Example"],
        ["config", "user.email", "example@example.invalid"],
        ["add", "."],
        ["commit", "-qm", "start"],
    ):
        subprocess.run(["git", *command], cwd=repo, check=True)
    return repo


async def hanging_model(prompt: str, current: str) -> str:
    """The model the first process uses: it stops answering on the second unit."""
    if "mul(" in prompt:
        await anyio.sleep_forever()
    return await scripted_model(prompt, current)


def first_process(repo: Path, out: Path) -> None:
    """The run that gets killed: it delivers ``add``, then hangs in ``mul``'s coder."""
    mesh.run(
        PLAN,
        repo=repo,
        out=out,
        roles=roles(repo, hanging_model),
        delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
    )


def history(repo: Path) -> list[str]:
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True
    )
    return log.stdout.splitlines()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        repo = make_repository(Path(folder))
        out = Path(folder) / "out"
        child = subprocess.Popen(
            [sys.executable, __file__, "--first-process", str(repo), str(out)],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while history(repo) != ["Write add(a, b) in calc.py", "start"]:
            if time.monotonic() > deadline:
                child.kill()
                raise SystemExit("the first process never delivered `add`")
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)  # no clean-up, no last words
        child.wait()
        print("killed after:", history(repo)[0])

        resumed = mesh.resume(out, roles=roles(repo))
        resumed.result.check()
        print("after the resume:", ", ".join(history(repo)))
        print(resumed.result.ledger())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--first-process"]:
        first_process(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
