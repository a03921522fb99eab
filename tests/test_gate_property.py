"""
The scope gate reads every patch exactly as git does: a property test with patches made by git.

Random changes (adds, deletes, renames, copies, mode changes, symlinks,
binary files, odd names) are made in a real repository; git writes the patch
(with rename and copy detection); the gate's reading of that patch must be
exactly the set of paths, modes and contents git itself says changed, and
the text filter must name every one of those paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mesh
from mesh.contracts import _gate
from mesh.contracts._gate import describe_path, parse_raw_diff
from mesh.contracts._text import text_problem

from repo_helpers import git, make_repo

NAMES = [
    "src/a.py",
    "src/b.py",
    "src/deep/c.txt",
    "with space.txt",
    'quo"te.md',
    "tab\there.txt",
    "\u00fc\u00f1\u00ef.txt",
    "new\nline.txt",
    "bin/data.bin",
    "run.sh",
    "link",
]
BASE = {
    "src/a.py": "print('a')\n" * 20,
    "src/b.py": "print('b')\n" * 20,
    "src/deep/c.txt": "c\n",
    "with space.txt": "space\n",
    "run.sh": "#!/bin/sh\necho hi\n",
}
CONTENTS = st.one_of(
    st.text(alphabet="abc \n", max_size=40),
    st.binary(max_size=64).map(lambda data: data + b"\0"),
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from(NAMES), CONTENTS),
        st.tuples(st.just("delete"), st.sampled_from(NAMES), st.none()),
        st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.tuples(st.just("copy"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.tuples(st.just("chmod"), st.sampled_from(NAMES), st.none()),
        st.tuples(st.just("symlink"), st.sampled_from(NAMES), st.sampled_from(["a.py", "../x"])),
    ),
    min_size=1,
    max_size=6,
)


@pytest.fixture(name="base_repo", scope="module")
def _base_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("gate") / "repo", BASE)
    (repo / "run.sh").chmod(0o755)
    (repo / "bin").mkdir()
    (repo / "bin" / "data.bin").write_bytes(bytes(range(256)))
    (repo / "link").symlink_to("src/a.py")
    git(repo, "add", "--all")
    git(repo, "commit", "-qm", "more kinds")
    return repo


def _change(root: Path, operation: tuple[str, str, object]) -> None:
    kind, name, argument = operation
    path = root / name
    if kind in {"rename", "copy"} and isinstance(argument, str):
        source, path = path, root / argument
        if not (source.is_file() and not source.is_symlink()) or source == path:
            return
        data = source.read_bytes()
        if kind == "rename":
            source.unlink()
        kind, argument = "write", data
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    if kind == "delete":
        return
    _make_parents(root, path)
    if kind == "symlink":
        path.symlink_to(str(argument))
    elif kind == "chmod":
        path.write_text("x\n")
        path.chmod(0o755)
    else:
        path.write_bytes(argument if isinstance(argument, bytes) else str(argument).encode())


def _make_parents(root: Path, path: Path) -> None:
    for parent in reversed(path.relative_to(root).parents):
        folder = root / parent
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)


def _truth(work: Path) -> set[tuple[str, str, str, str]]:
    raw = subprocess.run(
        ["git", "diff", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev", "HEAD"],
        cwd=work,
        capture_output=True,
        check=True,
    ).stdout
    return {(c.path, c.old_mode, c.new_mode, c.new_object) for c in parse_raw_diff(raw)}


@settings(
    max_examples=int(os.environ.get("MESH_GATE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
def test_the_gate_reads_what_git_changed(
    base_repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
    operations: list[tuple[str, str, object]],
) -> None:
    """For any change git can write as a patch, the gate sees exactly the paths git changed."""
    work = tmp_path_factory.mktemp("work") / "clone"
    git(base_repo, "worktree", "add", "--quiet", "--detach", str(work), "HEAD")
    try:
        for operation in operations:
            _change(work, operation)
        git(work, "add", "--all")
        truth = _truth(work)
        patch = subprocess.run(
            ["git", "diff", "--cached", "--binary", "--full-index", "-M", "-C", "-C", "HEAD"],
            cwd=work,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")
        base = git(base_repo, "rev-parse", "HEAD")

        async def read() -> mesh.ChangeReading:
            async with mesh.WorkspaceManager(base_repo, pool_size=0) as workspaces:
                return await workspaces.read_patch(base, patch)

        if not truth:
            assert patch == ""
            return
        reading = anyio.run(read)
        assert reading.applies, reading.evidence
        seen = {(c.path, c.old_mode, c.new_mode, c.new_object) for c in reading.changes}
        assert seen == truth
        named = {
            path
            for change in mesh.patch_changes(patch)
            for path in (change.old_path, change.new_path)
            if path is not None
        }
        assert {path for path, *_ in truth} <= named
        # The verdict is path-exact: a scope of exactly these paths leaves none outside it,
        # and taking one path out of the scope reports that path and no other.
        paths = sorted({path for path, *_ in truth})
        everything = tuple(mesh.SpecialPath)

        def outside(scope: list[str]) -> list[str]:
            problems = mesh.gate_problems(
                reading.changes, write_scope=scope, allow_special=everything, links=reading.links
            )
            return [problem for problem in problems if "outside write_scope" in problem]

        assert outside(paths) == []
        plain = [path for path in paths if path.isprintable() and "\\" not in path]
        if plain:
            left_out = plain[0]
            reported = outside([path for path in paths if path != left_out])
            assert len(reported) == 1
            assert reported[0].startswith(f"touches {describe_path(left_out)} (")
    finally:
        git(base_repo, "worktree", "remove", "--force", str(work))


def _reference_path_problem(path: str) -> str | None:
    """The gate's path rules as first written: each a plain reading, none taking a shortcut."""
    parts = set(path.replace("\\", "/").split("/"))

    def git_dir(component: str) -> bool:
        folded = "".join(
            c for c in unicodedata.normalize("NFC", component) if c not in _gate._IGNORABLE
        )
        return folded.casefold().rstrip(". ") in {".git", "git~1"}

    rules = (
        (not path, "is empty"),
        (any(ord(c) in _gate._ESCAPED_BYTES for c in path), "is not UTF-8"),
        (text_problem(path) is not None, "contains a control character"),
        (_gate._absolute(path), "is an absolute path"),
        (".." in parts, "climbs out with '..'"),
        (bool({".", ""} & parts), "is not a plain relative path"),
        (
            any(git_dir(part) for part in path.replace("\\", "/").split("/")),
            "writes into git's own files",
        ),
    )
    return next((problem for broken, problem in rules if broken), None)


PATH_PIECES = st.sampled_from(
    [
        "src",
        "a.py",
        ".git",
        ".GIT",
        "Git~1",
        ".git.",
        "git",
        "..",
        ".",
        "",
        "x\\y",
        "/abs",
        "C:",
        "\u200d.git",
        ".gi\u0307t",
        "\u0130",
        "\udc80",
        "\x01",
        "ä",
        "ǅ",
        " .git ",
    ]
) | st.text(max_size=6)


@given(st.lists(PATH_PIECES, max_size=5).map("/".join))
def test_path_rules_read_every_path_as_the_plain_rules_do(path: str) -> None:
    """The gate's quicker reading of a path (ASCII shortcuts) names the same problem."""
    assert _gate.path_problem(path) == _reference_path_problem(path)
