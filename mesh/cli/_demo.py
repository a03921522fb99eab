"""
``mesh demo``: a real run on a small repository, with deterministic scripted coders.

The demo repository is a tiny Python package with pytest tests. Its plan has
four units; the coders are a script run through `CommandCoder` (so the demo
exercises the same path as an agent CLI). The script is deterministic and
shows what mesh guards against: one candidate has a bug (its proof fails, is
retried, and it is never accepted), one writes outside its unit's scope (the
applier rejects it before touching a worktree), and the reducer writes the
smallest passing patch, which the fixer prefers.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Final

from ..git._git import git

__all__ = ["DEMO_PLAN", "create_demo_repository", "demo_coder_command"]

_STEPS: Final[tuple[dict[str, object], ...]] = (
    {
        "id": "core",
        "step": "Add greet(name) returning 'Hello, <name>!'",
        "status": "pending",
        "write_scope": ["greet/core.py", "tests/test_core.py"],
        "risk_tier": "low",
    },
    {
        "id": "shout",
        "step": "Add shout(name): the greeting in capitals",
        "status": "pending",
        "deps": ["core"],
        "write_scope": ["greet/shout.py", "tests/test_shout.py"],
        "risk_tier": "med",
    },
    {
        "id": "cli",
        "step": "Add a command line: python -m greet NAME",
        "status": "pending",
        "deps": ["core"],
        "write_scope": ["greet/__main__.py", "tests/test_cli.py"],
        "risk_tier": "high",
    },
    {
        "id": "docs",
        "step": "Document the package in the README",
        "status": "pending",
        "write_scope": ["README.md", "tests/test_package.py"],
        "risk_tier": "low",
    },
)
DEMO_PLAN: Final = {
    "explanation": "Grow a greeting package, one proven unit at a time.",
    "plan": list(_STEPS),
}

_FILES: Final = {
    "greet/__init__.py": '"""Greetings."""\n',
    "tests/test_package.py": (
        "import greet\n\n\ndef test_package_imports():\n    assert greet.__doc__\n"
    ),
    "pyproject.toml": '[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n',
    "README.md": "# greet\n",
    ".gitignore": "__pycache__/\n",
}

# The coder script: deterministic candidates per unit, lane and index.
_CODER: Final = r'''
import os, pathlib, sys

unit = os.environ["MESH_UNIT_ID"]
lane = os.environ["MESH_LANE"]
index = os.environ["MESH_TRIPLET_INDEX"]

def write(path, text):
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)

CORE_TEST = ("from greet.core import greet\n\n\ndef test_greet():\n"
             "    assert greet('Ada') == 'Hello, Ada!'\n")
if unit == "unit-001":
    punctuation = "." if index == "2" else "!"  # candidate 2 has a bug its proof will catch
    if lane == "reducer":
        write("greet/core.py", "def greet(name):\n    return f'Hello, {name}!'\n")
    else:
        write("greet/core.py", '"""The greeting."""\n\n\ndef greet(name: str) -> str:\n'
              '    """Greet someone by name."""\n'
              f'    return "Hello, " + name + "{punctuation}"\n')
    write("tests/test_core.py", CORE_TEST)
elif unit == "unit-002":
    write("greet/shout.py", "from greet.core import greet\n\n\ndef shout(name):\n"
          "    return greet(name).upper()\n")
    write("tests/test_shout.py", "from greet.shout import shout\n\n\ndef test_shout():\n"
          "    assert shout('Ada') == 'HELLO, ADA!'\n")
elif unit == "unit-003":
    write("greet/__main__.py", "import sys\n\nfrom greet.core import greet\n\n"
          "print(greet(' '.join(sys.argv[1:]) or 'world'))\n")
    write("tests/test_cli.py", "import subprocess, sys\n\n\ndef test_cli():\n"
          "    out = subprocess.run([sys.executable, '-m', 'greet', 'Ada'],\n"
          "                         capture_output=True, text=True)\n"
          "    assert out.stdout == 'Hello, Ada!\\n'\n")
elif unit == "unit-004":
    write("README.md", "# greet\n\n`python -m greet Ada` prints `Hello, Ada!`.\n")
    write("tests/test_package.py", "import pathlib\n\nimport greet\n\n\n"
          "def test_package_imports():\n"
          "    assert greet.__doc__\n\n\ndef test_readme_shows_usage():\n"
          "    assert 'python -m greet' in pathlib.Path('README.md').read_text()\n")
    if index == "2":
        write("greet/__init__.py", '"""Greetings, documented."""\n')  # outside the unit's scope
else:
    sys.exit(f"no script for {unit}")
'''


def demo_coder_command(script: Path) -> str:
    """The `CommandCoder` template that runs the demo's coder script."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


_PROOF_TARGETS: Final = {
    "core": "tests/test_core.py",
    "shout": "tests/test_shout.py",
    "cli": "tests/test_cli.py",
    "docs": "tests/test_package.py",
}


def demo_proof_command(step_id: str) -> str:
    """A demo unit's proof: its own pytest tests, with this Python and no third-party plugins."""
    return (
        f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {shlex.quote(sys.executable)} -m pytest -q "
        f"{_PROOF_TARGETS[step_id]}"
    )


async def create_demo_repository(folder: Path) -> tuple[Path, Path, Path]:
    """Create the demo repository, its plan file and its coder script under ``folder``."""
    repo = folder / "repo"
    repo.mkdir(parents=True)
    for name, text in _FILES.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    await git("init", "--quiet", "--initial-branch=main", cwd=repo)
    await git("config", "user.name", "mesh demo", cwd=repo)
    await git("config", "user.email", "demo@mesh.invalid", cwd=repo)
    await git("add", "--all", cwd=repo)
    await git("commit", "--quiet", "-m", "Start the greet package", cwd=repo)
    plan = folder / "plan.json"
    document = {
        **DEMO_PLAN,
        "plan": [{**step, "proof_command": demo_proof_command(str(step["id"]))} for step in _STEPS],
    }
    plan.write_text(json.dumps(document, indent=2) + "\n")
    script = folder / "coder.py"
    script.write_text(_CODER)
    return repo, plan, script
