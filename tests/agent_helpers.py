"""
Finding the real agent programs the agent tests drive.

CI installs them (see .ci/run) into ``.agents/`` at the repository's top: npm
packages under ``.agents/npm``, Aider in its own virtual environment under
``.agents/aider``. Locally, ``MESH_AGENTS_DIR`` names another such folder, and a
program on PATH is used too. A missing program skips its tests, except where
``MESH_REQUIRE_AGENTS=1`` (CI) makes it a failure: there they cannot skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def agents_dir() -> Path:
    """The folder the agent programs are installed in."""
    return Path(os.environ.get("MESH_AGENTS_DIR") or ROOT / ".agents")


def find_agent(program: str) -> str:
    """The path of ``program`` (``codex``, ``claude``, ``aider``), or skip (fail in CI)."""
    base = agents_dir()
    for folder in (base / "npm" / "node_modules" / ".bin", base / "aider" / "bin"):
        candidate = folder / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(program)
    if found is not None:
        return found
    why = f"{program} is not installed (see README: the agent tests); looked in {base} and PATH"
    if os.environ.get("MESH_REQUIRE_AGENTS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def marked(marker: str) -> list[int]:
    """Live processes (not zombies, not this one) whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found
