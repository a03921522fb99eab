"""
A custom role adapter: a prover that judges candidates in Python, not with a command.

Run it from anywhere: ``python examples/custom_adapter.py``. Its unit test is
``examples/test_custom_adapter.py`` (``pytest examples``).
"""

from __future__ import annotations

import mesh
from mesh.testing import answer, fake_roles

MAX_ADDED_LINES = 50


def added_lines(patch: str) -> int:
    """Lines a unified diff adds."""
    return sum(
        1 for line in patch.splitlines() if line.startswith("+") and not line.startswith("+++")
    )


def size_prover(request: mesh.ProofRequest) -> dict[str, object]:
    """Pass candidates that add at most MAX_ADDED_LINES lines; the count is the evidence."""
    added = added_lines(request.candidate.patch or "")
    passed = added <= MAX_ADDED_LINES
    return answer(
        request,
        decision="pass" if passed else "fail",
        proof_status="pass" if passed else "fail",
        proof_evidence={
            "command": "count added lines",
            "key_line": f"{added} lines added (limit {MAX_ADDED_LINES})",
            "exit_code": 0 if passed else 1,
        },
    )


def main() -> None:
    """Run a two-unit plan with the custom prover and mesh's scripted other roles."""
    plan = {
        "plan": [
            {"id": "parser", "step": "Add the parser", "write_scope": ["src/parser.py"]},
            {
                "id": "cli",
                "step": "Wire the CLI",
                "deps": ["parser"],
                "write_scope": ["src/cli.py"],
            },
        ]
    }
    result = mesh.run(plan, roles=fake_roles(prover=size_prover))
    for outcome in result.outcomes:
        print(f"{outcome.unit_id}: {outcome.state}")
    print(result.ledger())


if __name__ == "__main__":
    main()
