"""
An external agent CLI as the coder: every candidate is written by a command.

Run it from anywhere: ``python examples/agent_cli_coder.py``. It makes a small
git repository in a temporary folder and an "agent" (a Python script standing
in for a real agent CLI's non-interactive mode, such as ``my-agent exec``),
then runs a plan on the repository for real: each candidate is written by the
agent in its own worktree, proved there, and the accepted one is committed.
With a real agent, only ``AGENT_COMMAND`` changes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import mesh

# The agent gets the unit's fields as shell-quoted placeholders and MESH_*
# variables; it edits the worktree it runs in, and mesh turns the diff into
# the candidate. Anything it writes outside the unit's write scope is refused.
AGENT = """
import os, sys
objective, scope = sys.argv[1], os.environ["MESH_WRITE_SCOPE"]
with open(scope, "w") as handle:
    handle.write(f"def greeting():\\n    return {objective.split(': ', 1)[1]!r}\\n")
"""


def make_repository(folder: Path) -> Path:
    repo = folder / "repo"
    repo.mkdir()
    for command in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "Example"],
        ["config", "user.email", "example@example.invalid"],
    ):
        subprocess.run(["git", *command], cwd=repo, check=True)
    (repo / "hello.py").write_text("def greeting():\n    return ''\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "start"], cwd=repo, check=True)
    return repo


def main() -> None:
    """Run a one-unit plan whose candidates the agent CLI writes."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        repo = make_repository(folder)
        (folder / "agent.py").write_text(AGENT)
        agent_command = f"{sys.executable} {folder / 'agent.py'} {{objective}}"
        plan = {
            "plan": [
                {
                    "id": "greet",
                    "step": "Say: hello, world",
                    "write_scope": ["hello.py"],
                    "proof_command": f"{sys.executable} -c "
                    "'import hello; assert hello.greeting() == \"hello, world\"'",
                }
            ]
        }

        finished = mesh.run(
            plan,
            repo=repo,
            out=folder / "out",
            roles=mesh.Roles(coder=mesh.CommandCoder(repo, agent_command)),
            delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
        )
        finished.result.check()
        print((repo / "hello.py").read_text(), end="")
        log = subprocess.run(
            ["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True
        )
        print(log.stdout, end="")
        print(finished.result.ledger())


if __name__ == "__main__":
    main()
