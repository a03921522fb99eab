"""
Output contract v2: every role adapter's result is parsed strictly.

Narrative text is never trusted: a result is a typed `WorkerResult` or an
`InvalidOutputSchema` error listing every problem found, types and lane rules
together. Pure: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import operator
import threading
import typing
from collections.abc import Iterable, Mapping
from typing import Final, TypeGuard, TypeVar

import attrs

from ._convert import converter, fast_conforms, fast_structure, loads_json, structure, type_name
from ._enums import LANE_DECISIONS, QUORUM_BY_RISK, Decision, Lane, ProofStatus, RiskTier
from ._errors import InvalidOutputSchema, ValidationError
from ._records import ProofEvidence, WorkerResult
from ._text import first_surrogate, one_line

__all__ = [
    "MAX_PROOF_ATTEMPTS",
    "checked_result_document",
    "is_checked",
    "parse_worker_result",
    "recheck_worker_result",
    "take_checked",
    "trusted",
    "worker_result_document",
]

MAX_PROOF_ATTEMPTS: Final = 2
"""A proof runs at most twice: once, and one retry."""

E = TypeVar("E", bound=enum.StrEnum)

_AUTHOR_LANES: Final = frozenset({Lane.CODER, Lane.REDUCER})

# Typed results checked here (or built checked by mesh's answer builders), by
# identity, until the engine takes them: a record passed on as it was checked
# costs no second check. Identity, not equality: an equal record built some
# other way was never checked. Each entry holds its record, so no other live
# object can have its id while it is here; the engine takes an entry out as it
# uses it, and the oldest go when there are too many (a record dropped is only
# checked again). Runs on other threads (other event loops, sync adapters
# building answers) share it: each entry goes in and out in one dict operation,
# atomic in CPython; only trimming, several operations, takes the lock.
_CHECKED: Final[dict[int, WorkerResult]] = {}
_MAX_CHECKED: Final = 256
_TRIM_LOCK: Final = threading.Lock()


def trusted(result: WorkerResult) -> WorkerResult:
    """
    Register ``result`` as checked: what the check here and mesh's answer builders do.

    A builder takes every field its request knows from the request and checks
    the rest itself, so what it builds is valid by construction.
    """
    if len(_CHECKED) >= _MAX_CHECKED:
        with _TRIM_LOCK:
            # list() copies the keys in one operation, even while other threads add some.
            for key in list(_CHECKED)[: _MAX_CHECKED // 2]:
                _CHECKED.pop(key, None)
    _CHECKED[id(result)] = result
    return result


def is_checked(answer: object) -> TypeGuard[WorkerResult]:
    """Whether ``answer`` is a `WorkerResult` checked here and not yet taken (the very object)."""
    return _CHECKED.get(id(answer)) is answer


def take_checked(answer: object) -> TypeGuard[WorkerResult]:
    """`is_checked`, and the record leaves the register: what the engine does with an answer."""
    # The entry under this id, if any, is this very object: it is alive, so its id is its own.
    return _CHECKED.pop(id(answer), None) is answer


def parse_worker_result(payload: object) -> WorkerResult:
    """
    Parse a worker result under output contract v2.

    Args:
        payload: A decoded JSON object, or JSON text.

    Returns:
        The typed result.

    Raises:
        InvalidOutputSchema: Listing every missing, mistyped or semantically
            invalid field, each with its JSON path (code ``invalid_output_schema``).

    .. versionadded:: 0.1.0
    """
    if isinstance(payload, str | bytes):
        try:
            text = payload.decode() if isinstance(payload, bytes) else payload
            payload = loads_json(text, subject="worker result")
        except (ValidationError, UnicodeDecodeError) as exc:
            problem = exc.problems if isinstance(exc, ValidationError) else ("not UTF-8 text",)
            raise InvalidOutputSchema(problem) from None
    if not isinstance(payload, Mapping):
        raise InvalidOutputSchema([f"$: expected object, got {type_name(payload)}"])
    fast = fast_structure(payload, WorkerResult)
    if fast is not None:
        semantic = _semantic_problems(payload) + _unicode_problems(payload, "$")
        if not semantic:
            return fast
        raise InvalidOutputSchema(semantic)
    problems: list[str] = []
    try:
        result: WorkerResult | None = structure(payload, WorkerResult, subject="worker result")
    except ValidationError as exc:
        problems.extend(exc.problems)
        result = None
    problems.extend(_semantic_problems(payload))
    problems.extend(_unicode_problems(payload, "$"))
    if problems or result is None:
        raise InvalidOutputSchema(list(dict.fromkeys(problems)))
    return result


_RESULT_FIELDS: Final = tuple(field.name for field in attrs.fields(WorkerResult))


def recheck_worker_result(result: WorkerResult) -> WorkerResult:
    """
    Check a typed result as strictly as a document (attrs does not check types).

    Raises:
        InvalidOutputSchema: As `parse_worker_result` would for its document.
    """
    # A field-by-field view is enough when every value has its exact type; the
    # whole document is written out only to explain what is wrong.
    if is_checked(result):
        return result
    view = {name: getattr(result, name) for name in _RESULT_FIELDS}
    if fast_conforms(result, WorkerResult):
        if not _semantic_problems(view) and not _unicode_problems(view, "$"):
            return trusted(result)
    else:
        checked = fast_structure(view, WorkerResult)
        if (
            checked is not None
            and not _semantic_problems(view)
            and not _unicode_problems(view, "$")
        ):
            return trusted(checked)
    return parse_worker_result(worker_result_document(result))


def _unicode_problems(value: object, path: str) -> list[str]:
    # Answers almost never hold one: a walk without paths says so cheaply.
    return _surrogate_paths(value, path) if _any_surrogate(value) else []


def _any_surrogate(value: object) -> bool:  # noqa: C901, PLR0912 - one loop, cheapest checks first
    """Whether any string under ``value`` holds a lone surrogate (no paths built)."""
    pending = [value]
    push = pending.append
    while pending:
        item = pending.pop()
        kind = type(item)
        # Exact types first (JSON gives only these); the ABC check comes last. The
        # strings of a mapping, most of any answer, are checked where they stand.
        if kind is dict:
            for key, field in typing.cast("dict[object, object]", item).items():
                if type(key) is str:
                    if first_surrogate(key) is not None:
                        return True
                else:
                    push(key)
                if type(field) is str:
                    if first_surrogate(field) is not None:
                        return True
                elif field is not None and type(field) is not int:
                    push(field)
        elif kind is str or (kind is not int and isinstance(item, str)):
            if first_surrogate(typing.cast("str", item)) is not None:
                return True
        elif kind is list or kind is tuple:
            pending.extend(typing.cast("list[object]", item))
        elif kind is int or item is None:
            continue
        elif (fields := getattr(kind, "__attrs_attrs__", None)) is not None:
            pending.extend(getattr(item, field.name) for field in fields)
        elif isinstance(item, list | tuple):  # subclasses (a YAML library's sequences)
            pending.extend(typing.cast("list[object]", item))
        elif isinstance(item, Mapping):
            pending.extend(typing.cast("Mapping[object, object]", item).items())
    return False


def _surrogate_paths(value: object, path: str) -> list[str]:
    """
    Every string under ``value`` holding a lone surrogate, by JSON path.

    Such a string is not Unicode: it cannot be written to the ledger, the run
    store or a patch file as UTF-8, so the answer carrying it is refused here
    rather than breaking the run later. ASCII strings, most of any answer,
    cost one ``isascii`` call.
    """
    if isinstance(value, str):
        found = first_surrogate(value)
        if found is None:
            return []
        offset, code = found
        return [f"{path}: not valid Unicode (lone surrogate U+{code:04X} at offset {offset})"]
    if isinstance(value, Mapping):
        items: Iterable[tuple[object, object]] = value.items()
    elif attrs.has(type(value)):  # a nested record of a typed result (the fast path's view)
        record = typing.cast("attrs.AttrsInstance", value)
        items = ((field.name, getattr(record, field.name)) for field in attrs.fields(type(record)))
    elif isinstance(value, list | tuple):
        return [
            problem
            for index, item in enumerate(value)
            for problem in _surrogate_paths(item, f"{path}[{index}]")
        ]
    else:
        return []
    return [
        problem
        for key, item in items
        for problem in _surrogate_paths(item, f"{path}.{one_line(str(key))}")
    ]


def _field(payload: Mapping[str, object], key: str, kind: type[E]) -> E | None:
    """The field as its enum member, or None when absent or mistyped (reported elsewhere)."""
    value = payload.get(key)
    if not isinstance(value, str):
        return None
    member = kind._value2member_map_.get(value)
    return member if isinstance(member, kind) else None


def _int(payload: Mapping[str, object], key: str) -> int | None:
    value = payload.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(payload: Mapping[str, object], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _semantic_problems(payload: Mapping[str, object]) -> list[str]:  # noqa: C901, PLR0912, PLR0915 - one flat list of contract rules reads best
    """Rules beyond types. Each rule only looks at fields whose type is already right."""
    problems: list[str] = []
    lane = _field(payload, "lane", Lane)
    decision = _field(payload, "decision", Decision)
    proof_status = _field(payload, "proof_status", ProofStatus)
    risk = _field(payload, "risk_tier", RiskTier)
    attempts = _int(payload, "proof_attempts")

    index = _int(payload, "triplet_index")
    if index is not None and index < 1:
        problems.append(f"$.triplet_index: must be >= 1, got {index}")
    if attempts is not None and not 0 <= attempts <= MAX_PROOF_ATTEMPTS:
        problems.append(f"$.proof_attempts: must be 0, 1 or 2, got {attempts}")
    scope = payload.get("write_scope")
    if isinstance(scope, list | tuple) and not scope:
        problems.append("$.write_scope: must list at least one path")
    if isinstance(scope, list | tuple) and any(
        isinstance(root, str) and not root.strip() for root in scope
    ):
        problems.append("$.write_scope: paths must not be blank")
    for key in ("id", "candidate_id", "base_sha"):
        text = _text(payload, key)
        if text is not None and not text.strip():
            problems.append(f"$.{key}: must not be blank")

    if lane is not None and decision is not None and decision not in LANE_DECISIONS[lane]:
        allowed = ", ".join(sorted(LANE_DECISIONS[lane]))
        problems.append(f"$.decision: {lane.value} may decide {allowed}; got {decision.value!r}")

    if lane is Lane.PROVER:
        if attempts is not None and attempts not in {1, 2}:
            problems.append(f"$.proof_attempts: a prover result needs 1 or 2, got {attempts}")
        if proof_status not in {None, ProofStatus.PASS, ProofStatus.FAIL}:
            problems.append("$.proof_status: a prover result is pass or fail")
        if (
            decision in {Decision.PASS, Decision.FAIL}
            and proof_status
            in {
                ProofStatus.PASS,
                ProofStatus.FAIL,
            }
            and decision.value != proof_status.value
        ):
            problems.append("$.proof_status: must match the prover's decision")
    if lane in _AUTHOR_LANES and decision is Decision.ACCEPT:
        patch = _text(payload, "patch")
        if patch is None or not patch.strip():
            problems.append("$.patch: an accepted candidate needs a non-empty patch")
    if lane in _AUTHOR_LANES and decision is Decision.NO_DIFF:
        notes = _text(payload, "notes")
        if notes is None or not notes.strip():
            problems.append("$.notes: a no_diff result needs the reason in notes")
    if (
        lane is Lane.REDUCER
        and decision is Decision.ACCEPT
        and payload.get("reduce_record") is None
    ):
        problems.append("$.reduce_record: a reducer's candidate needs a reduce_record")
    if lane is Lane.LOCKSMITH and decision is Decision.GRANT:
        if not _text(payload, "lease_id"):
            problems.append("$.lease_id: a granted lease needs a lease_id")
        ttl = _int(payload, "ttl_ms")
        if ttl is None or ttl <= 0:
            problems.append("$.ttl_ms: a granted lease needs ttl_ms > 0")
    if lane is Lane.FIXER and decision is Decision.ACCEPTED:
        if not _text(payload, "selected_candidate"):
            problems.append("$.selected_candidate: an accepted adjudication names its candidate")
        if proof_status not in {None, ProofStatus.PASS}:
            problems.append("$.proof_status: only a candidate whose proof passed may be accepted")
        target, observed = _int(payload, "quorum_target"), _int(payload, "quorum_observed")
        if risk is not None and target is not None and target != QUORUM_BY_RISK[risk]:
            problems.append(
                f"$.quorum_target: {risk.value} risk needs {QUORUM_BY_RISK[risk]}, got {target}"
            )
        if target is not None and observed is not None and observed < target:
            problems.append(f"$.quorum_observed: {observed} is below the quorum target {target}")
    if (
        lane is Lane.INTEGRATOR
        and decision
        in {
            Decision.INTEGRATED_PATCH,
            Decision.INTEGRATED_COMMIT,
        }
        and not _text(payload, "artifact_ref")
    ):
        problems.append("$.artifact_ref: a delivery needs an artifact_ref")

    patch, digest = _text(payload, "patch"), _text(payload, "patch_sha256")
    if patch is not None and digest is not None:
        actual = hashlib.sha256(patch.encode("utf-8", "surrogatepass")).hexdigest()
        if digest.lower() != actual:
            problems.append("$.patch_sha256: does not match the sha256 of patch")
    return problems


def worker_result_document(result: WorkerResult) -> dict[str, object]:
    """
    The contract JSON object of a worker result (absent optional fields left out).

    ``parse_worker_result(worker_result_document(r)) == r`` for every valid ``r``.

    .. versionadded:: 0.1.0
    """
    document: dict[str, object] = converter.unstructure(result)
    return {key: value for key, value in document.items() if value is not None}


def _evidence_document(evidence: ProofEvidence) -> dict[str, object]:
    return {
        "command": evidence.command,
        "key_line": evidence.key_line,
        "exit_code": evidence.exit_code,
    }


# How each optional field of a checked result is written, in field order (None: as it is).
_OPTIONAL_WRITERS: Final[tuple[tuple[str, typing.Callable[[typing.Any], object] | None], ...]] = (
    ("failure_code", lambda code: code._value_),
    ("notes", None),
    ("patch", None),
    ("patch_sha256", None),
    ("challenge_findings", list),
    ("reduce_record", converter.unstructure),
    ("lease_id", None),
    ("ttl_ms", None),
    ("worktree_path", None),
    ("apply_evidence", _evidence_document),
    ("selected_candidate", None),
    ("quorum_target", None),
    ("quorum_observed", None),
    ("artifact_ref", None),
    ("scope_assertion", None),
)
_read_optional: Final = operator.attrgetter(*(name for name, _ in _OPTIONAL_WRITERS))


def checked_result_document(result: WorkerResult) -> dict[str, object]:
    """
    `worker_result_document` of a checked result, written without the converter.

    Every value of a checked result has its exact type, so each field is written
    directly; the engine records every candidate and proof this way.
    """
    document: dict[str, object] = {
        "id": result.id,
        "candidate_id": result.candidate_id,
        "triplet_index": result.triplet_index,
        "lane": result.lane._value_,
        "decision": result.decision._value_,
        "proof_status": result.proof_status._value_,
        "write_scope": list(result.write_scope),
        "risk_tier": result.risk_tier._value_,
        "base_sha": result.base_sha,
        "proof_attempts": result.proof_attempts,
        "proof_evidence": _evidence_document(result.proof_evidence),
    }
    for (name, write), value in zip(_OPTIONAL_WRITERS, _read_optional(result), strict=True):
        if value is not None:
            document[name] = value if write is None else write(value)
    return document
