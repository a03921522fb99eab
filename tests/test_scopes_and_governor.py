"""Write-scope overlap and the backpressure governor (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import mesh
from mesh.contracts._scopes import ScopeIndex
from mesh.engine._governor import Backpressure


class TestScopesOverlap:
    @pytest.mark.parametrize(
        ("first", "second", "expected"),
        [
            (["src/api"], ["src/api"], True),
            (["src/api"], ["src/api/routes.py"], True),
            (["./src/api/"], ["src/api"], True),
            (["src/api"], ["src/apiary"], False),
            (["docs/**/*.md"], ["src/app.py"], False),
            (["docs/**/*.md"], ["docs/index.md"], True),
            # Without tracked files a glob is judged by its literal base: still overlapping,
            # although src/*.py itself never covers src/pkg/mod.py (see test_patch.TestScopes).
            (["src/*.py"], ["src/pkg/mod.py"], True),
            (["unknown"], ["anything"], True),
            (["**"], ["a/b"], True),
            (["a", "b"], ["c", "b/x"], True),
            ([], ["a"], False),
        ],
    )
    def test_cases(self, first: list[str], second: list[str], expected: bool) -> None:  # noqa: FBT001
        """Same roots, nested roots and glob bases overlap; siblings do not."""
        assert mesh.scopes_overlap(first, second) is expected

    @given(
        st.lists(st.sampled_from(["a", "b", "a/x", "b/*", "**", "c/d/e"]), max_size=3),
        st.lists(st.sampled_from(["a", "b", "a/x", "b/*", "**", "c/d/e"]), max_size=3),
    )
    def test_symmetric(self, first: list[str], second: list[str]) -> None:
        """Overlap does not depend on argument order."""
        assert mesh.scopes_overlap(first, second) == mesh.scopes_overlap(second, first)


FOLDER_GLOBS = ["a/*", "a/*.py", "a/*/y.py", "*/x", "b/*", "{a,b}/*.py"]
"""Globs that cannot cross a folder (no ``**``)."""
SCOPE_ROOTS = st.sampled_from(
    [*FOLDER_GLOBS, "a", "a/x", "a/x/y.py", "a/**", "a/**/*.py", "b/**/*.py", "c/d", "unknown"]
)
SCOPE_PATHS = st.sampled_from(
    ["a", "a/x", "a/x/y", "a/x/y.py", "a/b.py", "a/b.py/c", "b/z.py", "b/q/z.py", "c/d/e"]
)


class TestCoveredPaths:
    @given(SCOPE_ROOTS, SCOPE_ROOTS, SCOPE_PATHS, st.lists(SCOPE_PATHS, max_size=3))
    @example("a", "a/*.py", "a/b.py", [])  # a new file both may write: not tracked yet
    @example("a/x", "a/**/*.py", "a/x/y.py", ["c/d/e"])
    def test_a_shared_path_is_always_an_overlap(
        self, first: str, second: str, path: str, tracked: list[str]
    ) -> None:
        """
        Two scopes that cover one path overlap: conservative, tracked files or not.

        Two globs are judged by the tracked files (by design), so there the path is tracked.
        """
        if not (mesh.in_scope(path, [first]) and mesh.in_scope(path, [second])):
            return
        both_globs = all(any(c in root for c in "*?[{") for root in (first, second))
        files = [*tracked, path] if both_globs else tracked
        assert mesh.scopes_overlap([first], [second])
        assert mesh.scopes_overlap([first], [second], tracked_files=files)

    @given(st.sampled_from(FOLDER_GLOBS), SCOPE_PATHS)
    def test_a_glob_match_is_not_a_folder_of_the_scope(self, root: str, path: str) -> None:
        """What lies inside a path a glob matches is outside the scope (src/x.py/run.sh)."""
        if mesh.in_scope(path, [root]):
            assert not mesh.in_scope(f"{path}/payload.sh", [root])
            assert not mesh.in_scope(f"{path}/deep/payload.sh", [root])


ROOTS = st.sampled_from(["a", "b", "a/x", "a/x/y", "./a/", "b/*", "a/*/z", "**", "unknown", "c/d"])


class TestScopeIndex:
    @given(
        st.lists(st.lists(ROOTS, max_size=3), max_size=6),
        st.lists(ROOTS, max_size=3),
        st.sets(st.integers(0, 5)),
    )
    def test_candidates_cover_every_overlap(
        self, scopes: list[list[str]], request: list[str], removed: set[int]
    ) -> None:
        """No overlapping scope is missed; removed keys are never returned."""
        index: ScopeIndex[int] = ScopeIndex()
        for key, scope in enumerate(scopes):
            index.add(key, scope)
        for key in removed:
            index.discard(key)
        live = [key for key in range(len(scopes)) if key not in removed]
        overlapping = {key for key in live if mesh.scopes_overlap(scopes[key], request)}
        candidates = index.candidates(request)
        assert overlapping <= candidates <= set(live)

    def test_readding_a_key_replaces_its_scope(self) -> None:
        """A key indexed again is found by its new scope only."""
        index: ScopeIndex[str] = ScopeIndex()
        index.add("k", ["a/x"])
        index.add("k", ["b"])
        assert index.candidates(["a/x"]) == set()
        assert index.candidates(["b/y"]) == {"k"}
        index.discard("k")
        assert (index._at, index._under) == ({}, {})  # nothing left behind by a long run


class TestBackpressure:
    def test_signal_halves_and_clean_stretch_restores(self) -> None:
        """Signals halve the limit (min 1) and serialize; a clean stretch restores the target."""
        governor = Backpressure(target=8, clean_stretch=2)
        assert (governor.limit, governor.pressured) == (8, False)
        assert governor.clean() is False
        assert governor.signal() is True
        assert (governor.limit, governor.serialize_overlaps) == (4, True)
        governor.signal()
        governor.signal()
        governor.signal()
        assert governor.signal() is False
        assert governor.limit == 1
        assert governor.clean() is False
        assert governor.clean() is True
        assert (governor.limit, governor.pressured, governor.restores) == (8, False, 1)

    def test_retarget(self) -> None:
        """A new budget target moves the limit, capped while under backpressure."""
        governor = Backpressure(target=4)
        assert governor.retarget(6) is True
        assert governor.limit == 6
        governor.signal()
        assert governor.retarget(10) is False
        assert (governor.limit, governor.target) == (3, 10)
        assert governor.retarget(0) is True
        assert governor.limit == 1

    @given(
        target=st.integers(1, 64),
        events=st.lists(st.sampled_from(["signal", "clean"]), max_size=40),
    )
    def test_limit_stays_within_bounds(self, target: int, events: list[str]) -> None:
        """Whatever happens, 1 <= limit <= target."""
        governor = Backpressure(target=target)
        for event in events:
            getattr(governor, event)()
            assert 1 <= governor.limit <= governor.target
