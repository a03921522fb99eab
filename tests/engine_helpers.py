"""Builders shared by the engine's test modules (on sys.path through pytest's ``pythonpath``)."""

from __future__ import annotations

from typing import Any

import mesh
from mesh.testing import answer


def unit(unit_id: str, *deps: str, scope: str | None = None, risk: str = "med") -> mesh.Unit:
    return mesh.Unit(
        id=unit_id,
        objective=f"do {unit_id}",
        write_scope=(scope or f"src/{unit_id}",),
        deps=deps,
        risk_tier=mesh.RiskTier(risk),
    )


def first_coder_request(the_unit: mesh.Unit) -> mesh.AuthorRequest:
    """What the engine asks the first coder of ``the_unit`` on its first attempt."""
    return mesh.AuthorRequest(
        unit=the_unit,
        lane=mesh.Lane.CODER,
        candidate_id=f"{the_unit.id}-coder-1",
        triplet_index=1,
        attempt=1,
    )


async def execute(plan: object, roles: mesh.Roles, **options: Any) -> mesh.RunResult:
    async with mesh.Orchestrator(roles=roles, **options) as orchestrator:
        return await orchestrator.execute(plan)


def lease_request(holder: str, scope: str, *, ttl_ms: int = 60_000) -> mesh.LeaseRequest:
    """An acquire request of ``holder``'s first candidate for one scope root."""
    return mesh.LeaseRequest(
        unit=unit(holder, scope=scope),
        candidate_id=f"{holder}-coder-1",
        action="acquire",
        holder=holder,
        write_scope=(scope,),
        ttl_ms=ttl_ms,
    )


def new_file_answer(
    request: mesh.AuthorRequest, name: str | None = None, text: str | None = None
) -> dict[str, object]:
    """
    A coder's answer adding one file (what an LLM coder returns: a patch, no worktree).

    Default: the unit's first scope root, holding the unit's id.
    """
    name = name or request.unit.write_scope[0]
    patch = (
        f"diff --git a/{name} b/{name}\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/{name}\n@@ -0,0 +1 @@\n+{text or request.unit.id}\n"
    )
    return answer(request, patch=patch)


def two_steps() -> dict[str, object]:
    """A plan of two steps, b after a, each writing its own file and proved by `true`."""
    return {
        "plan": [
            {"id": "a", "step": "write a", "write_scope": ["src/a.txt"], "proof_command": "true"},
            {
                "id": "b",
                "step": "write b",
                "deps": ["a"],
                "write_scope": ["src/b.txt"],
                "proof_command": "true",
            },
        ]
    }
