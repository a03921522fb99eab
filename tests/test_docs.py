"""
Every snippet in the docs runs, and every example file runs.

``console`` blocks: each ``$ command`` runs in a shell (with the installed
``mesh`` on PATH) in a scratch folder holding the example plan, and its output
must equal the lines that follow it. ``python`` blocks are executed in order in
one namespace per page, except those starting with ``# file: test_NAME.py``:
those are test modules, written to the scratch folder and run by pytest with
mesh's plugin, and every test in them must pass. Other fences (``bash``
install lines, ``text``) are shown, not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("test_"))
EXAMPLE_TESTS = sorted((ROOT / "examples").glob("test_*.py"))
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TEST_FILE = re.compile(r"\A# file: (test_\w+\.py)\n")


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in FENCE.finditer(page.read_text())]


def console_steps(body: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any command: {line!r}"
            steps[-1][1].append(line)
    return [(command, "".join(f"{out}\n" for out in output)) for command, output in steps]


@pytest.fixture(name="scratch")
def _scratch(tmp_path: Path, mesh_command: list[str]) -> tuple[Path, dict[str, str]]:
    shutil.copy(ROOT / "examples" / "plan.json", tmp_path / "plan.json")
    bin_dir = str(Path(mesh_command[0]).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return tmp_path, env


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_snippets_run(
    page: Path, scratch: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Console snippets print exactly what the page shows; Python snippets run."""
    folder, env = scratch
    monkeypatch.chdir(folder)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for language, body in blocks(page):
        if language == "console":
            for command, expected in console_steps(body):
                process = subprocess.run(
                    ["bash", "-c", command],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=folder,
                    check=False,
                    timeout=60,
                )
                assert expected == process.stdout + process.stderr, command
        elif language == "python" and (test_file := TEST_FILE.match(body)):
            (folder / test_file[1]).write_text(body)
            process = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file[1]],
                capture_output=True,
                text=True,
                cwd=folder,
                check=False,
                timeout=120,
            )
            assert process.returncode == 0, process.stdout + process.stderr
            assert " passed" in process.stdout
        elif language == "python":
            exec(compile(body, f"{page.name}:snippet", "exec"), namespace)  # noqa: S102


def test_docs_cover_every_command() -> None:
    """Each CLI command has its own docs page."""
    from mesh.cli import _cli  # noqa: PLC0415

    documented = {page.stem for page in (ROOT / "docs" / "commands").glob("*.md")}
    assert set(_cli.COMMANDS) == documented


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(example: Path, tmp_path: Path) -> None:
    """Every example file runs to completion from an unrelated folder."""
    process = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip()
    assert process.stderr == ""


@pytest.mark.parametrize("example", EXAMPLE_TESTS, ids=lambda p: p.name)
def test_example_tests_pass(example: Path) -> None:
    """The unit tests that come with the examples pass, with mesh's pytest plugin."""
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", example.name],
        capture_output=True,
        text=True,
        cwd=example.parent,
        check=False,
        timeout=120,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert " passed" in process.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_run(notebook: Path, tmp_path: Path) -> None:
    """Every example notebook runs top to bottom in a real kernel and shows its results."""
    import nbformat  # noqa: PLC0415 - the notebook tools load only for this test
    from nbclient import NotebookClient  # noqa: PLC0415

    document = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        document, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [
        output for cell in document.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [output for output in outputs if output.output_type == "error"]
    shown = "".join(str(output.get("text", "")) + str(output.get("data", {})) for output in outputs)
    assert "completed" in shown
    assert "Orchestration Ledger" in shown


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# ``mesh.__main__`` runs the command line when imported.
MODULES = sorted(
    _module_name(path) for path in (ROOT / "mesh").rglob("*.py") if path.name != "__main__.py"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    """The ``>>>`` examples in docstrings (shown in the API reference) are right."""
    import doctest  # noqa: PLC0415 - only this test needs it
    import importlib  # noqa: PLC0415

    module = importlib.import_module(name)
    # `mesh` loads its names on first use: load them all, so that doctest finds every
    # docstring in the module and every example sees every public name.
    for public in getattr(module, "__all__", ()):
        getattr(module, public)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    assert tried > 0 or name != "mesh"
