"""Plan states written out only when read are the states a copy per delivery would give."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mesh.engine._plan_state import CompletedStep, with_completed

BASE = {
    "explanation": "x",
    "plan": [{"id": f"s{i}", "step": f"do {i}", "status": "pending"} for i in range(6)],
}


@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=12),
    st.lists(st.integers(0, 11), max_size=12),
)
def test_each_state_is_its_steps_completed_whenever_it_is_read(
    deliveries: list[tuple[int, bool]], read_late: list[int]
) -> None:
    """States read at once, later, out of order or never equal the eagerly copied ones."""
    state: object = BASE
    eager: dict[str, object] = BASE
    chain: list[tuple[CompletedStep, dict[str, object]]] = []
    for step, read_now in deliveries:
        lazy = CompletedStep(state, step)  # type: ignore[arg-type]
        eager = with_completed(eager, [step])
        if read_now:
            assert lazy.document() == eager
        chain.append((lazy, eager))
        state = lazy
    for index in read_late:
        if index < len(chain):
            lazy, expected = chain[index]
            assert lazy == expected
            assert json.loads(json.dumps(lazy.document())) == expected
    for lazy, expected in chain:
        assert lazy.document() is lazy.document()
        assert dict(lazy) == expected
        assert len(lazy) == len(expected)
        assert repr(lazy) == repr(expected)
    assert BASE["plan"][0]["status"] == "pending"  # the base is never changed
