"""
A hostile coder meets the trust boundary: nothing it does outside its scope lands.

Run it from anywhere: ``python examples/hostile_coder.py``. It makes a small
git repository in a temporary folder and runs a one-unit plan whose coder
misbehaves the way a confused or malicious agent would: it writes the file it
was asked for, but also a file outside its write scope, a symlink out of the
repository, and it uses git in its workspace to plant a hook, change config
and move a branch. mesh's scope gate (git's own reading of the patch) refuses
the candidate, the agent's git stays in its own workspace, and the unit
fails with ``scope_violation``. An honest second candidate is then accepted.

When bubblewrap is installed the coder and the proofs also run in a sandbox
(``mesh.Sandbox``): the system read-only, only the workspace writable.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import mesh

# Candidate 1 is hostile; candidate 2 does only what it was asked.
AGENT = r"""
import os, pathlib, subprocess, sys
index = os.environ["MESH_TRIPLET_INDEX"]
pathlib.Path("hello.py").write_text("def greeting():\n    return 'hello, world'\n")
if index == "1":
    pathlib.Path("setup.cfg").write_text("[tool:pytest]\naddopts = -p evil\n")
    os.symlink("/etc/passwd", "passwords")
    for command in (
        ["config", "core.hooksPath", "/tmp/evil-hooks"],
        ["update-ref", "refs/heads/main", "HEAD"],
    ):
        subprocess.run(["git", *command], check=False)
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def make_repository(folder: Path) -> Path:
    repo = folder / "repo"
    repo.mkdir()
    for command in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "Example"],
        ["config", "user.email", "example@example.invalid"],
    ):
        git(repo, *command)
    (repo / "hello.py").write_text("def greeting():\n    return ''\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "start")
    return repo


def main() -> None:
    """Run a plan whose first candidate is hostile, and show what reached the repository."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        repo = make_repository(folder)
        config_before = (repo / ".git" / "config").read_text()
        # The agent's program, inline: in a sandbox only its workspace can be written.
        agent_command = f"{shlex.quote(sys.executable)} -c {shlex.quote(AGENT)}"
        sandbox = mesh.Sandbox.detect(network=False)
        plan = {
            "plan": [
                {
                    "id": "greet",
                    "step": "Say hello, world",
                    "write_scope": ["hello.py"],
                    "proof_command": f"{sys.executable} -c "
                    "'import hello; assert hello.greeting() == \"hello, world\"'",
                    "risk_tier": "low",
                }
            ]
        }

        finished = mesh.run(
            plan,
            repo=repo,
            out=folder / "out",
            roles=mesh.Roles(coder=mesh.CommandCoder(repo, agent_command, sandbox=sandbox)),
            delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
            sandbox=sandbox,
        )
        finished.result.check()
        refused = [
            event.data.get("evidence")
            for event in mesh.RunStore.open(finished.store_path).events()
            if event.event == "adapter_call" and event.data.get("decision") == "apply_failed"
        ]
        print("sandbox:", "bubblewrap" if sandbox else "none (bubblewrap not installed)")
        print("refused:", *refused, sep="\n  ")
        print("delivered files:", git(repo, "show", "--name-only", "--format=", "HEAD").strip())
        print(
            "repository config unchanged:", (repo / ".git" / "config").read_text() == config_before
        )
        print("branches:", git(repo, "branch", "--format=%(refname:short)").split())


if __name__ == "__main__":
    main()
