"""The custom prover's unit test, with mesh's testing kit (``pytest examples``)."""

from __future__ import annotations

import mesh
from mesh.testing import FakeAdapter, answer, capture_ledger, fake_roles

from custom_adapter import MAX_ADDED_LINES, size_prover

PLAN = [mesh.Unit(id="a", objective="write a", write_scope=("src/a",))]


def patch_adding(lines: int) -> str:
    body = "".join(f"+line {i}\n" for i in range(lines))
    return f"--- a/src/a\n+++ b/src/a\n@@ -0,0 +1,{lines} @@\n{body}"


def test_small_candidates_pass() -> None:
    result = mesh.run(PLAN, roles=fake_roles(prover=size_prover))
    assert result.outcomes[0].state == "completed"


def test_big_candidates_fail_with_their_count_as_evidence() -> None:
    authors = FakeAdapter(lambda request: answer(request, patch=patch_adding(80)))
    with capture_ledger() as events:
        result = mesh.run(
            PLAN,
            roles=fake_roles(coder=authors, reducer=authors, prover=size_prover),
            max_attempts=1,
        )
    outcome = result.outcomes[0]
    assert (outcome.state, outcome.failure_code) == ("failed", mesh.FailureCode.PROOF_MISSING)
    assert f"80 lines added (limit {MAX_ADDED_LINES})" in outcome.evidence
    proofs = [e for e in events if e.event == "adapter_call" and e.lane is mesh.Lane.PROVER]
    assert proofs
    assert {e.data["decision"] for e in proofs} == {"fail"}


def test_the_limit_itself_passes(mesh_roles: mesh.Roles) -> None:
    """The pytest plugin's ``mesh_roles`` fixture gives the other roles."""
    authors = FakeAdapter(lambda request: answer(request, patch=patch_adding(MAX_ADDED_LINES)))
    roles = mesh.Roles(
        coder=authors,
        reducer=authors,
        applier=mesh_roles.applier,
        prover=size_prover,
        fixer=mesh_roles.fixer,
        integrator=mesh_roles.integrator,
    )
    assert mesh.run(PLAN, roles=roles).outcomes[0].state == "completed"
