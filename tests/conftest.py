"""Shared test configuration: both anyio backends, Hypothesis profiles, CLI helpers."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import mesh

from repo_helpers import make_repo, survivors

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("fast", max_examples=10, deadline=None)


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(name="repo")
def _repo(tmp_path: Path) -> Path:
    """A real git repository with a few committed files (see repo_helpers.FILES)."""
    return make_repo(tmp_path / "repo")


@pytest.fixture(name="workspaces")
async def _workspaces(repo: Path) -> AsyncIterator[mesh.WorkspaceManager]:
    """An open workspace manager on ``repo``, without a pool (every release removes)."""
    async with mesh.WorkspaceManager(repo, pool_size=0) as workspaces:
        yield workspaces


@pytest.fixture(name="marker")
def _marker() -> Iterator[str]:
    """A sleep duration no other process uses; whatever still carries it afterwards is killed."""
    marker = f"{10**8 + secrets.randbelow(9 * 10**8)}.{secrets.randbelow(1000):03d}"
    yield marker
    for pid in survivors(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def mesh_executable() -> list[str]:
    """The installed `mesh` console script, next to the running interpreter when possible."""
    beside = Path(sys.executable).with_name("mesh")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mesh")
    assert found is not None, "the mesh console script is not installed"
    return [found]


@pytest.fixture(name="mesh_command")
def _mesh_command() -> list[str]:
    """The argv prefix that starts the installed `mesh` console script."""
    return mesh_executable()


@pytest.fixture(name="run_mesh")
def _run_mesh() -> object:
    """Run the real `mesh` console script; returns the completed process."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*mesh_executable(), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd,
            timeout=60,
        )

    return run


settings.register_profile(
    "stress", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


_REAL_AGENT_MODULES = frozenset(
    {
        "test_agent_codex.py",
        "test_agent_claude.py",
        "test_agent_aider.py",
        "test_agent_command_line.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """
    The real agents' test modules are `real_agent` tests: ``-m "not real_agent"`` skips them.

    A real agent's start is slow (Aider's alone takes seconds, more under load and
    coverage), so their tests get five minutes where the suite's default is one.
    """
    for item in items:
        if item.path.name in _REAL_AGENT_MODULES:
            item.add_marker(pytest.mark.real_agent)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(300))
