"""Reading inputs strictly and writing outputs atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mesh
from mesh.contracts import _files
from mesh.contracts._files import force_remove, walk_tree


class TestReadText:
    def test_byte_order_mark_is_dropped(self, tmp_path: Path) -> None:
        """A UTF-8 BOM (as spreadsheet exports write) is not part of the text."""
        path = tmp_path / "a.csv"
        path.write_bytes(b"\xef\xbb\xbfid\n")
        assert _files.read_text(path, what="batch CSV") == "id\n"

    def test_not_a_directory(self, tmp_path: Path) -> None:
        """A path through a regular file is a file access error."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(mesh.FileAccessError, match="cannot read plan"):
            _files.read_text(tmp_path / "file" / "child", what="plan")


class TestAtomicWrite:
    def test_missing_folder(self, tmp_path: Path) -> None:
        """Without create_parents, a missing folder is an error and nothing is created."""
        with pytest.raises(mesh.FileAccessError, match="cannot write output CSV"):
            _files.atomic_write_text(tmp_path / "no" / "out.csv", "x", what="output CSV")
        assert list(tmp_path.iterdir()) == []

    def test_outputs_follow_the_umask(self, tmp_path: Path) -> None:
        """An output is readable as any new file would be, not private like a temp file."""
        previous = os.umask(0o027)
        try:
            _files.atomic_write_text(tmp_path / "run.html", "x", what="report")
            assert _files._umask(tmp_path / "no-such-status") == 0o027  # the portable way
            (tmp_path / "status").write_text("Name:\tpython\n")  # a kernel that does not say
            assert _files._umask(tmp_path / "status") == 0o027
        finally:
            os.umask(previous)
        assert (tmp_path / "run.html").stat().st_mode & 0o777 == 0o640

    def test_failed_write_keeps_old_content_and_leaves_no_temp_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the write fails midway, the old file is intact and the temp file is gone."""
        target = tmp_path / "out.csv"
        target.write_text("old\n")

        def failing_fsync(_: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(mesh.FileAccessError, match="No space left on device"):
            _files.atomic_write_text(target, "new\n", what="output CSV")
        assert target.read_text() == "old\n"
        assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]

    def test_only_a_regular_file_is_replaced(self, tmp_path: Path) -> None:
        """
        A FIFO, a folder, or a link to either is refused: renaming over it would replace it.

        (`mesh report RUN -o /dev/full` as root replaced the device with the page.) A link
        to a regular file, or to nothing, is replaced by the output, as before.
        """
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        (tmp_path / "to-fifo").symlink_to(fifo)
        (tmp_path / "folder").mkdir()
        (tmp_path / "to-folder").symlink_to(tmp_path / "folder")
        for name in ("fifo", "to-fifo", "folder", "to-folder"):
            with pytest.raises(mesh.FileAccessError, match=f"{name}: not a regular file"):
                _files.atomic_write_text(tmp_path / name, "page", what="report")
        assert fifo.is_fifo()
        assert (tmp_path / "to-fifo").is_symlink()
        (tmp_path / "nowhere").symlink_to(tmp_path / "missing")
        (tmp_path / "old").write_text("old")
        (tmp_path / "to-old").symlink_to(tmp_path / "old")
        for name in ("nowhere", "to-old"):
            _files.atomic_write_text(tmp_path / name, "page", what="report")
            assert (tmp_path / name).read_text() == "page"
        assert (tmp_path / "old").read_text() == "old"

    def test_output_may_not_be_a_directory(self, tmp_path: Path) -> None:
        """An output path naming a directory is refused before anything is written."""
        (tmp_path / "in.json").write_text("{}")
        with pytest.raises(mesh.PathCollisionError, match="is a directory"):
            _files.ensure_distinct(
                tmp_path,
                tmp_path / "in.json",
                output_flag="--csv-path",
                input_flags=("--units-json",),
            )

    def test_symlink_to_input_is_a_collision(self, tmp_path: Path) -> None:
        """An output that is a symlink to the input resolves to the same file."""
        source = tmp_path / "in.csv"
        source.write_text("x")
        (tmp_path / "link.csv").symlink_to(source)
        with pytest.raises(mesh.PathCollisionError):
            _files.ensure_distinct(
                tmp_path / "link.csv", source, output_flag="--out", input_flags=("--in",)
            )


def deep_chain(top: Path, depth: int, name: str = "a" * 50) -> None:
    """``depth`` nested folders under ``top``, made by name from each parent (past PATH_MAX)."""
    top.mkdir()
    current = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=current)
        nested = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=current)
        os.close(current)
        current = nested
    leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=current)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(current)


class TestForceRemove:
    def test_a_tree_deeper_than_recursion_and_longer_than_path_max(self, tmp_path: Path) -> None:
        """An agent can nest folders past both limits: the tree still goes, with no error."""
        top = tmp_path / "deep"
        deep_chain(top, 2000)  # 2000 levels of 51 characters: far past PATH_MAX (4096)
        force_remove(top)
        assert not top.exists()

    def test_locked_folders_and_links_out(self, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep.txt").write_text("mine")
        top = tmp_path / "tree"
        (top / "a" / "b").mkdir(parents=True)
        (top / "a" / "b" / "f.txt").write_text("x")
        (top / "link").symlink_to(outside)
        (top / "a" / "file-link").symlink_to(outside / "keep.txt")
        (top / "a" / "b").chmod(0)
        (top / "a").chmod(0o500)
        top.chmod(0o500)
        force_remove(top)
        assert not top.exists()
        assert (outside / "keep.txt").read_text() == "mine"

    def test_a_file_a_link_and_nothing(self, tmp_path: Path) -> None:
        (tmp_path / "f").write_text("x")
        (tmp_path / "l").symlink_to(tmp_path / "f")
        force_remove(tmp_path / "l")
        force_remove(tmp_path / "missing")
        assert (tmp_path / "f").exists()
        force_remove(tmp_path / "f")
        assert not (tmp_path / "f").exists()

    def test_what_cannot_be_removed_is_left_silently(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        top = tmp_path / "tree"
        (top / "a" / "b").mkdir(parents=True)
        (top / "c").mkdir()
        real_open, real_rmdir = os.open, os.rmdir

        def no_entering_b(path: object, flags: int, *args: object, **kwargs: object) -> int:
            if path == "b":
                raise PermissionError("refused")
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        def no_removing_c(path: object, *args: object, **kwargs: object) -> None:
            if path == "c":
                raise PermissionError("refused")
            real_rmdir(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", no_entering_b)
        monkeypatch.setattr(os, "rmdir", no_removing_c)
        force_remove(top)
        monkeypatch.undo()
        assert sorted(p.name for p in top.rglob("*")) == ["a", "b", "c"]

    def test_a_top_that_cannot_be_opened(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        top = tmp_path / "tree"
        top.mkdir()

        def refused(*_: object, **__: object) -> int:
            raise PermissionError("refused")

        monkeypatch.setattr(os, "open", refused)
        force_remove(top)
        monkeypatch.undo()
        assert top.is_dir()


class TestWalkTree:
    def test_deep_and_pruned(self, tmp_path: Path) -> None:
        top = tmp_path / "deep"
        deep_chain(top, 1500, name="d")
        (top / "skip").mkdir()
        (top / "skip" / "hidden.txt").write_text("x")
        seen = []
        for _, folders, files in walk_tree(top):
            folders[:] = [name for name in folders if name != "skip"]
            seen.extend(files)
        force_remove(top)  # pytest's own clean-up of old temporary folders recurses
        assert seen == ["leaf.txt"]

    def test_an_unreadable_folder(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "a").mkdir()
        real_scandir = os.scandir

        def refused(path: object) -> object:
            if Path(str(path)).name == "a":
                raise PermissionError("refused")
            return real_scandir(path)  # type: ignore[call-overload]

        monkeypatch.setattr(os, "scandir", refused)
        assert [f.name for f, _, _ in walk_tree(tmp_path, skip_unreadable=True)] == [tmp_path.name]
        with pytest.raises(PermissionError):
            list(walk_tree(tmp_path))
