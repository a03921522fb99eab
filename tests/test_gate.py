"""The scope gate's pure rules: paths, modes, special kinds, symlink resolution."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import mesh
from mesh.contracts._gate import describe_path, parse_raw_diff, resolve_link

from repo_helpers import git

ZERO, ONE = "0" * 40, "1" * 40


def change(
    path: str, old: str = "000000", new: str = "100644", status: str = "A"
) -> mesh.PathChange:
    return mesh.PathChange(
        path=path, old_mode=old, new_mode=new, old_object=ZERO, new_object=ONE, status=status
    )


class TestPaths:
    @pytest.mark.parametrize(
        ("path", "shown"),
        [
            ("src/a.py", "src/a.py"),
            ('q"x', '"q\\"x"'),
            ("a\\b", '"a\\\\b"'),
            (" lead", '" lead"'),
            ("new\nline", '"new\\nline"'),
            ("bad\udcffbyte", '"bad\\377byte"'),
            ("tab\there", '"tab\\there"'),
        ],
    )
    def test_describe_path(self, path: str, shown: str) -> None:
        """Unusual names are quoted as git quotes them: escapes, octal bytes, never raw."""
        assert describe_path(path) == shown

    def test_raw_diff_names_that_are_not_utf8(self) -> None:
        """A name git reports in bytes that are not UTF-8 keeps them, and is refused."""
        raw = f":000000 100644 {ZERO} {ONE} A\0".encode() + b"bad\xffname\0"
        (read,) = parse_raw_diff(raw)
        problems = mesh.gate_problems([read], write_scope=["unknown"])
        assert problems == ['"bad\\377name" is not UTF-8']

    def test_an_unknown_mode(self) -> None:
        """A mode other than a file, an executable, a symlink or a gitlink is refused."""
        problems = mesh.gate_problems([change("src/a", new="100664")], write_scope=["src"])
        assert problems == ["src/a has mode 100664, which mesh does not write"]

    def test_deleted_paths_are_judged(self) -> None:
        """Deleting a file outside the scope is a write outside it."""
        gone = change("docs/x.md", old="100644", new="000000", status="D")
        assert mesh.gate_problems([gone], write_scope=["src"]) == [
            "touches docs/x.md (deleted), outside write_scope ['src']"
        ]


class TestLinks:
    @pytest.mark.parametrize(
        ("path", "target", "links", "resolved"),
        [
            ("a/l", "./x//y", {}, "a/x/y"),
            ("a/l", "../b", {}, "b"),
            ("a/l", "../.git/config", {}, None),
            ("a/l", "../B/x", {"B": "c"}, "c/x"),
            ("a/l", "loop", {"a/loop": "loop"}, None),
            ("a/l", "x", {"a/x": "/etc"}, None),
            ("a/l", "", {}, None),
            ("l", "..", {}, None),
        ],
    )
    def test_resolve(
        self, path: str, target: str, links: dict[str, str], resolved: str | None
    ) -> None:
        """Links resolve as the kernel would, through the tree's other links; out is None."""
        assert resolve_link(path, target, links) == resolved

    def test_a_link_to_a_link_inside(self) -> None:
        """With permission, a symlink resolving inside the worktree is accepted."""
        link = change("src/l", new="120000")
        problems = mesh.gate_problems(
            [link],
            write_scope=["src"],
            allow_special=[mesh.SpecialPath.SYMLINK],
            links={"src/l": "../docs", "docs": "guide"},
        )
        assert problems == []
        assert mesh.gate_problems(
            [link], write_scope=["src"], allow_special=[mesh.SpecialPath.SYMLINK]
        ) == ["src/l is a symlink out of the worktree ()"]


class TestRecords:
    def test_allow_special_travels_in_unit_documents(self) -> None:
        """A unit's allow_special is in its document (only when set) and read back."""
        units = mesh.slice_plan(
            {"plan": [{"step": "a", "allow_special": ["symlink"]}, {"step": "b"}]}
        ).units
        documents = [u.to_document() for u in units]
        assert documents[0]["allow_special"] == ["symlink"]
        assert "allow_special" not in documents[1]
        assert mesh.parse_units({"units": documents}) == units

    def test_a_run_id_with_control_characters(self, repo: Path, tmp_path: Path) -> None:
        """A run id is written into trailers and file names: control characters are refused."""

        async def start() -> None:
            await mesh.run_async(
                {"plan": [{"step": "x"}]},
                repo=repo,
                out=tmp_path / "out",
                roles=mesh.Roles(coder=mesh.ScriptedCoder(repo, {})),
                run_id="run\nMesh-Delivery: x",
            )

        with pytest.raises(mesh.InputError, match=r"run_id 'run\\\\nMesh-Delivery: x'"):
            anyio.run(start)
        assert not (tmp_path / "out").exists()
        assert git(repo, "status", "--porcelain") == ""
