"""
Workspaces and the scope gate: what isolation and git's own reading of patches cost.

Time per candidate workspace, pooled and not, against bare ``git worktree``;
and the scope gate per patch, against the text filter and ``git apply --check``.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import anyio

import mesh

from ._report import table


def make_repository(folder: Path, files: int) -> Path:
    """A repository of ``files`` small files in 50 folders, one commit."""
    folder.mkdir(parents=True)
    for i in range(files):
        path = folder / f"pkg{i % 50}" / f"module{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"VALUE = {i}\n")
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start"],
    ):
        subprocess.run(["git", *command], cwd=folder, check=True)
    return folder


def bare_git(repo: Path, rounds: int) -> float:
    """The floor: ``git worktree add --detach`` then ``git worktree remove``, nothing else."""
    started = time.perf_counter()
    for i in range(rounds):
        path = repo.parent / f"bare-{i}"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(path)], cwd=repo, check=True
        )
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=repo, check=True)
    return (time.perf_counter() - started) / rounds


def managed(repo: Path, rounds: int, pool_size: int) -> float:
    """Seconds per acquire + release with mesh's manager (pool_size 0: add and remove each time)."""

    async def main() -> float:
        async with mesh.WorkspaceManager(repo, pool_size=pool_size) as workspaces:
            async with workspaces.checkout():
                pass  # warm the pool when there is one
            started = time.perf_counter()
            for _ in range(rounds):
                async with workspaces.checkout() as workspace:
                    (workspace.path / "scratch.txt").write_text("x")
            return (time.perf_counter() - started) / rounds

    return anyio.run(main)


def patch_of(repo: Path) -> str:
    """A one-file change of ``repo``, as git writes it."""
    target = next(repo.glob("pkg0/*.py"))
    original = target.read_text()
    target.write_text(original + "EXTRA = 1\n")
    patch = subprocess.run(
        ["git", "diff", "--full-index"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    target.write_text(original)
    return patch


def gate_costs(repo: Path, rounds: int) -> tuple[float, float, float]:
    """Seconds per patch: bare ``git apply --check``, the text filter, the whole scope gate."""
    patch = patch_of(repo)
    started = time.perf_counter()
    for _ in range(rounds):
        subprocess.run(
            ["git", "apply", "--check", "-"], cwd=repo, input=patch, text=True, check=True
        )
    bare = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    for _ in range(rounds):
        assert not mesh.scope_problems(patch, ("pkg0",))
    text = (time.perf_counter() - started) / rounds

    async def main() -> float:
        async with mesh.WorkspaceManager(repo, pool_size=0) as workspaces:
            begun = time.perf_counter()
            for _ in range(rounds):
                reading = await workspaces.read_patch("HEAD", patch)
                assert not mesh.gate_problems(reading.changes, write_scope=("pkg0",))
            return (time.perf_counter() - begun) / rounds

    return bare, text, anyio.run(main)


def run(sizes: tuple[int, ...], rounds: int) -> str:
    """The workspaces section of the report."""
    rows = []
    gates: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        for files in sizes:
            repo = make_repository(Path(scratch) / f"repo-{files}", files)
            floor = bare_git(repo, rounds)
            fresh = managed(repo, rounds, pool_size=0)
            pooled = managed(repo, rounds, pool_size=2)
            rows.append(
                [files, floor * 1000, fresh * 1000, pooled * 1000, fresh / floor, pooled / floor]
            )
            bare, text, gate = gate_costs(repo, rounds)
            gates.append([files, bare * 1000, text * 1000, gate * 1000, gate / bare])
    return "\n\n".join(
        (
            table(
                f"Workspaces: ms per candidate workspace (acquire + release), {rounds} rounds",
                [
                    "files",
                    "bare git worktree add/remove",
                    "mesh new",
                    "mesh pool",
                    "new / bare",
                    "pool / bare",
                ],
                rows,
            ),
            table(
                f"Scope gate: ms per one-file patch, {rounds} rounds",
                [
                    "files",
                    "bare git apply --check",
                    "text filter",
                    "whole gate (git's reading)",
                    "gate / bare",
                ],
                gates,
            ),
        )
    )
