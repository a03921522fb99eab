"""Reading inputs strictly and writing outputs atomically."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import mesh
from mesh.contracts import _files

if TYPE_CHECKING:
    from pathlib import Path


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
