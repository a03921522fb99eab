"""Tests of the "bring your own agent" adapters, with mesh's testing kit (``pytest examples``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bring_your_own_agent import PLAN, LlmCoder, make_repository, roles, voting_fixer

import mesh
from mesh.testing import FakeAdapter, answer, capture_ledger, fake_roles


@pytest.fixture(name="repo")
def _repo() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield make_repository(Path(folder))


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_coder_answers_with_a_diff_of_the_unit_file(repo: Path, backend: str) -> None:
    """In memory: mesh's fakes play every other role; the coder reads the repository."""
    coder = LlmCoder(repo)
    with capture_ledger() as events:
        result = mesh.run(PLAN, roles=fake_roles(coder=coder, reducer=None), backend=backend)
    result.check()
    patches = [e.data for e in events if e.event == "candidates_recorded"]
    first = patches[0]["candidates"][0]["patch"]
    assert first.startswith("--- a/calc.py\n+++ b/calc.py\n")
    assert "+def add(a, b):" in first


def test_a_model_that_changes_nothing(repo: Path, backend: str) -> None:
    async def idle(_prompt: str, current: str) -> str:
        return current

    result = mesh.run(
        PLAN, roles=fake_roles(coder=LlmCoder(repo, idle), reducer=None), backend=backend
    )
    outcome = result.outcomes[0]
    assert outcome.state == "failed"
    assert outcome.failure_code is mesh.FailureCode.REQUIRES_CLARIFICATION


def test_the_fixer_votes_for_the_smallest_candidate(backend: str) -> None:
    def sized(request: mesh.AuthorRequest) -> dict[str, object]:
        lines = "".join(f"+line {n}\n" for n in range(request.triplet_index))
        patch = f"--- a/x\n+++ b/x\n@@ -0,0 +1,{request.triplet_index} @@\n{lines}"
        return answer(request, patch=patch)

    authors = FakeAdapter(sized)
    plan = [mesh.Unit(id="a", objective="x", write_scope=("x",), risk_tier=mesh.RiskTier.MED)]
    result = mesh.run(
        plan, roles=fake_roles(coder=authors, reducer=authors, fixer=voting_fixer), backend=backend
    )
    assert result.outcomes[0].accepted_candidate == "a-coder-1"


def test_on_the_repository_a_failing_test_fails_the_unit(repo: Path, tmp_path: Path) -> None:
    """The real prover: pytest in the worktree mesh applied the candidate to."""

    async def wrong(_prompt: str, current: str) -> str:
        return current + "\n\ndef add(a, b):\n    return a - b\n"

    finished = mesh.run(
        PLAN, repo=repo, out=tmp_path / "out", roles=roles(repo, wrong), max_attempts=1
    )
    outcome = finished.result.outcomes[0]
    assert outcome.failure_code is mesh.FailureCode.PROOF_MISSING
    assert "1 failed" in outcome.evidence
    assert finished.result.outcomes[1].state == "blocked"
