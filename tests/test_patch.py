"""What a patch touches, and the write-scope gate the applier runs before touching a worktree."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh

from engine_helpers import lease_request
from repo_helpers import diff_of, git


def kinds(patch: str) -> list[tuple[str, str | None, str | None]]:
    return [(c.kind, c.old_path, c.new_path) for c in mesh.patch_changes(patch)]


class TestPatchChanges:
    def test_every_kind_git_writes(self, repo: Path) -> None:
        """Modify, create, delete, rename, mode change and symlink, read from a real git diff."""
        (repo / "src" / "app.py").chmod(0o755)
        (repo / "src" / "link").symlink_to("util.py")
        git(repo, "mv", "docs/guide.md", "docs/manual.md")
        patch = diff_of(
            repo, {"src/util.py": "VALUE = 2\n", "src/new.py": "x = 1\n", "README.md": None}
        )
        changes = {c.new_path or c.old_path: c for c in mesh.patch_changes(patch)}
        assert changes["src/util.py"].kind == "modify"
        assert changes["src/new.py"].kind == "create"
        assert (changes["README.md"].kind, changes["README.md"].new_path) == ("delete", None)
        assert (changes["docs/manual.md"].kind, changes["docs/manual.md"].old_path) == (
            "rename",
            "docs/guide.md",
        )
        assert changes["src/app.py"].new_mode == "100755"
        assert (changes["src/link"].new_mode, changes["src/link"].symlink_target) == (
            "120000",
            "util.py",
        )

    def test_quoted_and_spaced_paths(self, repo: Path) -> None:
        """Paths git quotes (non-ASCII, with escapes) and unquoted paths with spaces."""
        patch = diff_of(
            repo, {"src/tä b.py": "1\n", "src/with space.py": "2\n", 'src/q"uote.py': "3\n"}
        )
        assert sorted(c.new_path or "" for c in mesh.patch_changes(patch)) == [
            'src/q"uote.py',
            "src/tä b.py",
            "src/with space.py",
        ]

    def test_content_that_looks_like_headers(self) -> None:
        """Inside a hunk, lines such as '--- x' are content, not a new file."""
        patch = (
            "diff --git a/src/a.txt b/src/a.txt\n--- a/src/a.txt\n+++ b/src/a.txt\n"
            "@@ -1,2 +1,3 @@\n--- old\n+--- new\n+++ plus\n keep\n\\ No newline at end of file\n"
        )
        assert kinds(patch) == [("modify", "src/a.txt", "src/a.txt")]

    def test_plain_unified_diff(self) -> None:
        """Diffs without git headers (diff -u) are read from their ---/+++ lines."""
        patch = (
            "--- a/src/a.py\n+++ b/src/a.py\n@@ -1 +1 @@\n-a\n+b\n"
            "--- /dev/null\n+++ b/docs/new.md\n@@ -0,0 +1 @@\n+new\n"
            "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n"
        )
        assert kinds(patch) == [
            ("modify", "src/a.py", "src/a.py"),
            ("create", None, "docs/new.md"),
            ("delete", "old.txt", None),
        ]

    def test_copy(self) -> None:
        """A copy names its source and destination."""
        patch = (
            "diff --git a/src/a.py b/lib/a.py\nsimilarity index 100%\n"
            "copy from src/a.py\ncopy to lib/a.py\n"
        )
        assert kinds(patch) == [("copy", "src/a.py", "lib/a.py")]

    def test_text_before_the_first_file_is_ignored(self) -> None:
        """A mail header or commentary before the diff is not a file."""
        assert kinds(
            "Subject: a change\n\nindex 1..2\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-1\n+2\n"
        ) == [("modify", "x", "x")]


class TestScopeProblems:
    def test_inside_scope(self, repo: Path) -> None:
        """A patch that stays in scope has no problems."""
        patch = diff_of(repo, {"src/util.py": "VALUE = 3\n", "src/deep/new.py": "1\n"})
        assert mesh.scope_problems(patch, ("src",)) == []

    def test_outside_scope(self, repo: Path) -> None:
        """A touched path outside every root is named."""
        patch = diff_of(repo, {"src/util.py": "VALUE = 3\n", "docs/guide.md": "# changed\n"})
        assert mesh.scope_problems(patch, ("src",)) == [
            "touches docs/guide.md, outside write_scope ['src']"
        ]

    def test_rename_out_of_scope(self, repo: Path) -> None:
        """Moving a file out of scope, or pulling one in from outside, is refused."""
        git(repo, "mv", "src/util.py", "docs/util.py")
        out = diff_of(repo, {})
        git(repo, "mv", "docs/guide.md", "src/guide.md")
        into = diff_of(repo, {})
        assert mesh.scope_problems(out, ("src",)) == [
            "renames docs/util.py, outside write_scope ['src']"
        ]
        assert mesh.scope_problems(into, ("src",)) == [
            "renames docs/guide.md, outside write_scope ['src']"
        ]

    def test_delete_out_of_scope(self, repo: Path) -> None:
        """Deleting a file outside the scope is a change outside it."""
        patch = diff_of(repo, {"README.md": None})
        assert mesh.scope_problems(patch, ("src",)) == [
            "touches README.md, outside write_scope ['src']"
        ]

    @pytest.mark.parametrize(
        ("path", "problem"),
        [
            ("../outside.py", "../outside.py climbs out with '..'"),
            ("src/../../etc/passwd", "src/../../etc/passwd climbs out with '..'"),
            ("/etc/passwd", "/etc/passwd is an absolute path"),
            ("src/.git/hooks/pre-commit", "src/.git/hooks/pre-commit writes into git's own files"),
            ("C:/windows/system.ini", "C:/windows/system.ini is an absolute path"),
        ],
    )
    def test_escaping_paths(self, path: str, problem: str) -> None:
        """'..', absolute paths and git's own files are refused whatever the scope."""
        patch = f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n"
        assert mesh.scope_problems(patch, ("unknown",)) == [problem]

    def test_symlinks_pointing_out(self, repo: Path) -> None:
        """The text filter refuses a symlink pointing out of the worktree (the gate judges more)."""
        (repo / "src" / "out").symlink_to("../../../etc/passwd")
        (repo / "src" / "abs").symlink_to("/etc/passwd")
        (repo / "src" / "docs").symlink_to("../docs/guide.md")
        (repo / "src" / "fine").symlink_to("util.py")
        patch = diff_of(repo, {})
        assert sorted(mesh.scope_problems(patch, ("src",))) == [
            "src/abs is a symlink out of the worktree (/etc/passwd)",
            "src/out is a symlink out of the worktree (../../../etc/passwd)",
        ]

    def test_empty_patch(self) -> None:
        """A patch naming no file is refused."""
        assert mesh.scope_problems("just words\n", ("src",)) == ["the patch touches no file"]

    @given(st.text())
    def test_never_raises(self, text: str) -> None:
        """Any text gets an answer, never an exception."""
        assert isinstance(mesh.scope_problems(text, ("src",)), list)

    @given(
        st.lists(
            st.sampled_from(
                [
                    "diff --git a/x b/x",
                    '"a/\\303',
                    "--- ",
                    "+++ ",
                    "@@ -1 +1 @@",
                    "rename from ",
                    "new file mode 120000",
                    "+t",
                    "-",
                    " ",
                    "\\",
                ]
            )
        )
    )
    def test_never_raises_on_header_soup(self, lines: list[str]) -> None:
        """Scrambled header lines never crash the reader."""
        assert isinstance(mesh.patch_changes("\n".join(lines)), tuple)


class TestScopes:
    def test_in_scope(self) -> None:
        """Roots cover themselves and what is under them; globs cover the paths they match."""
        assert mesh.in_scope("src/a.py", ["src"])
        assert mesh.in_scope("./src//a.py", ["src/"])
        assert not mesh.in_scope("srcx/a.py", ["src"])
        assert mesh.in_scope("docs/a/b.md", ["docs/**/*.md"])
        assert mesh.in_scope("docs/a.md", ["docs/**/*.md"])
        assert mesh.in_scope("pkg/mod", ["pkg/*"])
        assert not mesh.in_scope("pkg/mod/deep/x.py", ["pkg/*"])
        assert mesh.in_scope("pkg/mod/deep/x.py", ["pkg/**"])
        assert not mesh.in_scope("docs/a/b.txt", ["docs/**/*.md"])
        for whole_tree in ("unknown", ".", "*", "**", ""):
            assert mesh.in_scope("any/deep/thing", [whole_tree])

    @pytest.mark.parametrize(
        "path",
        ["src/x.py/payload.sh", "src/x.py/deep/run.sh", "./src/x.py//payload.sh"],
    )
    def test_a_folder_named_like_a_glob_match_is_not_in_scope(self, path: str) -> None:
        """A glob names files: a folder that happens to match it does not open its inside."""
        assert mesh.in_scope("src/x.py", ["src/*.py"])
        assert not mesh.in_scope(path, ["src/*.py"])
        assert mesh.scope_problems(
            f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n", ("src/*.py",)
        )

    def test_globs_judged_by_tracked_files(self) -> None:
        """Given the tracked files, globs overlap only when they could touch a common file."""
        files = ["src/a.py", "src/b.txt", "docs/x.md", "src/api/routes.py"]
        assert not mesh.scopes_overlap(["src/*.py"], ["src/*.txt"], tracked_files=files)
        assert mesh.scopes_overlap(["src/**/*.py"], ["src/api"], tracked_files=files)
        assert mesh.scopes_overlap(["src/*.py"], ["src/new.py"], tracked_files=files)
        assert not mesh.scopes_overlap(["src/*.py"], ["src/new.txt"], tracked_files=files)
        assert mesh.scopes_overlap(["unknown"], ["src/*.py"], tracked_files=files)
        assert mesh.scopes_overlap(["src/a.py"], ["src"], tracked_files=files)
        assert not mesh.scopes_overlap(["docs/*"], ["src/*"], tracked_files=files)

    @pytest.mark.parametrize(
        ("glob", "literal", "expected"),
        [
            # The glob can only match inside the literal root: a new file there is shared.
            ("src/*.py", "src", True),
            ("src/api/*.py", "src", True),
            ("src/**/*.py", "src/new", True),
            ("src/{a,b}/x.py", "src/a", True),
            # Deeper than the glob reaches: it matches the root's parents only, never a file inside.
            ("src/*", "src/a/b.py", False),
            ("src/*.py", "src/pkg/mod.py", False),
            ("src/*.py", "src/x.py/payload.sh", False),
            # Deeper than the root, but a leading part that does not match it.
            ("src/a*/x.py", "src/b", False),
            ("src/a*/x.py", "src/api", True),
            ("src/*.py", "src/x.py", True),
        ],
    )
    def test_a_glob_and_a_literal_root(self, glob: str, literal: str, expected: bool) -> None:  # noqa: FBT001
        """Given tracked files, a glob overlaps a root when it may match a path under it."""
        files = ["README.md"]
        assert mesh.scopes_overlap([glob], [literal], tracked_files=files) is expected
        assert mesh.scopes_overlap([literal], [glob], tracked_files=files) is expected

    @pytest.mark.anyio
    async def test_lease_table_uses_tracked_files(self) -> None:
        """The default locksmith judges globs by the repository's files."""
        table = mesh.LeaseTable(tracked_files=["src/a.py", "src/b.txt"])
        assert table.tracked_files == ["src/a.py", "src/b.txt"]
        request = lease_request("py", "src/*.py")
        texts = lease_request("txt", "src/*.txt")
        assert (await table(request))["decision"] == "grant"
        # Same literal directory, so a candidate by prefix; no common file, so granted.
        assert (await table(texts))["decision"] == "grant"


class TestOddHeaders:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ('diff --git "a/src/t\\303\\244.py" b/src/plain.py', ("src/tä.py", "src/plain.py")),
            ('diff --git a/src/plain.py "b/src/q\\"x.py"', ("src/plain.py", 'src/q"x.py')),
            ('diff --git "a/src/unclosed b/src/x', ("src/uncl", "src/x")),
            ('diff --git "a/src/\\9\\t.py" "b/src/\\9\\t.py"', ("src/9\t.py", "src/9\t.py")),
        ],
    )
    def test_header_paths(self, header: str, expected: tuple[str, str]) -> None:
        """Quoted, half-quoted, unclosed and oddly escaped headers are read without crashing."""
        change = mesh.patch_changes(header + "\n")[0]
        assert (change.old_path, change.new_path) == expected

    def test_empty_path(self) -> None:
        """A path that is not plain (``./``) is refused."""
        patch = "--- a/./\n+++ b/./\n@@ -1 +1 @@\n-a\n+b\n"
        assert mesh.scope_problems(patch, ("unknown",)) == ["./ is not a plain relative path"]


def test_a_missing_final_newline_marker_is_not_a_line() -> None:
    """A "no newline at end of file" marker inside a hunk changes no line count."""
    patch = (
        "diff --git a/src/a.txt b/src/a.txt\n"
        "--- a/src/a.txt\n"
        "+++ b/src/a.txt\n"
        "@@ -1 +1 @@\n"
        "-old\n"
        "\\ No newline at end of file\n"
        "+new\n"
        "\\ No newline at end of file\n"
    )
    (change,) = mesh.patch_changes(patch)
    assert (change.old_path, change.new_path, change.kind) == ("src/a.txt", "src/a.txt", "modify")
