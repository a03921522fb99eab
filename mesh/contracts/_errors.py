"""
mesh's exceptions.

Every exception mesh raises on purpose derives from `MeshError` and carries a
failure-taxonomy ``code`` (see `FailureCode`), so a host can route any mesh
failure without string matching::

    MeshError (Exception)
    ├── InputError (+ ValueError)            code: requires_clarification
    │   ├── ValidationError                  wrong types, unknown keys, wrong shape
    │   │   └── InvalidOutputSchema          code: invalid_output_schema
    │   ├── PlanError                        unknown/duplicate ids, dependency cycles
    │   ├── CsvContractError                 batch or deps CSV breaks its contract
    │   ├── OptionError                      a command-line flag is missing or unparsable
    │   ├── PathCollisionError               an output would overwrite an input
    │   └── FloorGateFailed                  --fail-on-floor with too little concurrency
    ├── FileAccessError (+ OSError)          code: tooling_unavailable
    ├── ExecutorError (+ RuntimeError)       code: tooling_unavailable (Ray missing, a worker died)
    ├── SandboxUnavailable (+ RuntimeError)  code: tooling_unavailable (no usable bubblewrap)
    ├── TransitionError (+ RuntimeError)     an illegal trigger for the unit's state
    │   └── GateNotMet                       a legal trigger whose gate is not met
    ├── AdapterMistake                       a strict run stopped: an adapter raised or answered
    │                                        invalidly (invalid_output_schema, tooling_unavailable)
    ├── UnitFailed                           one unit ended failed or blocked (its code)
    ├── RunCancelled                         a run was cancelled (its reason)
    └── RunFailed (+ ExceptionGroup)         several UnitFailed, raised by RunResult.check()

``kind`` names the condition in one word; the command line prints errors as
``error: <kind>: <message>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Self

from ._enums import FailureCode, Lane

__all__ = [
    "AdapterMistake",
    "CsvContractError",
    "ExecutorError",
    "FileAccessError",
    "FloorGateFailed",
    "GateNotMet",
    "InputError",
    "InvalidOutputSchema",
    "MeshError",
    "OptionError",
    "PathCollisionError",
    "PlanError",
    "RunCancelled",
    "RunFailed",
    "TransitionError",
    "UnitFailed",
    "ValidationError",
]


class MeshError(Exception):
    """
    Root of every exception mesh raises on purpose.

    Attributes:
        code: The failure-taxonomy code this failure maps to.
        kind: One word naming the condition (the class name unless overridden).
        hint: What to do about it, when mesh can say (also a note on the
            exception, so tracebacks show it; the command line prints it).

    .. versionadded:: 0.1.0
    """

    default_code: ClassVar[FailureCode] = FailureCode.REQUIRES_CLARIFICATION

    def __init__(
        self, message: str, *, code: FailureCode | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: FailureCode = code if code is not None else self.default_code
        self.hint = hint
        if hint is not None:
            self.add_note(f"hint: {hint}")

    @property
    def kind(self) -> str:
        """One word naming the condition, as printed by the command line."""
        return type(self).__name__


class InputError(MeshError, ValueError):
    """
    Input given to mesh cannot be used as it is.

    .. versionadded:: 0.1.0
    """


class ValidationError(InputError):
    """
    A document has wrong types, unknown keys or the wrong shape.

    Attributes:
        problems: Every problem found, each addressed by a JSON path such as
            ``$.plan[2].deps[0]: unknown step id 'x'``.
        subject: What was being parsed (``plan``, ``worker result``, ...).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        subject: str,
        problems: tuple[str, ...] | list[str],
        *,
        code: FailureCode | None = None,
    ) -> None:
        self.subject = subject
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        summary = "; ".join(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid {subject} ({count} {noun}): {summary}", code=code)


class InvalidOutputSchema(ValidationError):
    """
    A role adapter's result breaks output contract v2.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.INVALID_OUTPUT_SCHEMA

    def __init__(self, problems: tuple[str, ...] | list[str]) -> None:
        super().__init__("worker result", problems)


class PlanError(InputError):
    """
    A plan's dependencies cannot be satisfied (unknown or duplicate ids, cycles).

    Attributes:
        cycle: The ids forming a dependency cycle, when that is the problem.

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, *, cycle: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.cycle = cycle


class CsvContractError(InputError):
    """
    A batch CSV or deps CSV breaks its contract.

    .. versionadded:: 0.1.0
    """


class OptionError(InputError):
    """
    A command-line flag is missing, unknown, repeated or has an unusable value.

    .. versionadded:: 0.1.0
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self._kind = kind

    @property
    def kind(self) -> str:
        """The condition, e.g. ``MissingRequiredOption`` or ``InvalidOptionValue``."""
        return self._kind


class PathCollisionError(InputError):
    """
    An output path resolves to the same file as an input path.

    .. versionadded:: 0.1.0
    """


class FloorGateFailed(InputError):
    """
    ``fail_on_floor`` was requested and the effective peak is below the floor.

    .. versionadded:: 0.1.0
    """


class FileAccessError(MeshError, OSError):
    """
    A file could not be read or written.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


class ExecutorError(MeshError, RuntimeError):
    """
    The executor could not run a call: Ray is not installed, a worker or node died.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


class TransitionError(MeshError, RuntimeError):
    """
    A trigger is not legal from the unit's current state.

    Attributes:
        unit_id: The unit.
        state: Its state when the trigger arrived.
        trigger: The trigger that was refused.

    .. versionadded:: 0.1.0
    """

    def __init__(self, unit_id: str, state: str, trigger: str, *, detail: str = "") -> None:
        self.unit_id = unit_id
        self.state = state
        self.trigger = trigger
        reason = detail or f"{trigger!r} is not allowed from state {state!r}"
        super().__init__(f"unit {unit_id}: {reason}", code=FailureCode.REQUIRES_CLARIFICATION)


class GateNotMet(TransitionError):
    """
    A legal trigger whose gate is not met (for example, fewer than two candidates).

    Attributes:
        gate: The name of the gate that refused the move.

    .. versionadded:: 0.1.0
    """

    def __init__(self, unit_id: str, state: str, trigger: str, gate: str) -> None:
        self.gate = gate
        super().__init__(
            unit_id,
            state,
            trigger,
            detail=f"gate {gate!r} is not met for {trigger!r} from {state!r}",
        )


class AdapterMistake(MeshError):
    """
    A strict run stopped at an adapter's first mistake: it raised, or answered invalidly.

    Raised by `Orchestrator.execute` (and `mesh.run`) when the run is strict
    (``strict=True``, the default inside tests with mesh's pytest plugin). The
    call is recorded first (its ``adapter_call`` event, then ``run_failed``),
    every unit in flight is cancelled and its lease given back. When the
    adapter raised, its exception is chained as ``__cause__``.

    Attributes:
        unit_id: The unit the call was about.
        lane: The lane the adapter played.
        candidate_id: The candidate (or fixer, or lease) the call was about.
        attempt: The unit's attempt.
        call: 1 for the first call, 2 for the retry after a timeout, 3 for the replacement.
        adapter: The adapter, named by its qualified name or its ``repr``.
        request_kind: What it was asked: ``AuthorRequest``, ``ProofRequest``...
        problems: Every contract problem of an invalid answer, each with its
            ``$.path`` (empty when the adapter raised).
        error: ``Type: message`` of the exception it raised (None for an invalid answer).
        code: ``invalid_output_schema`` for an invalid answer, ``tooling_unavailable``
            for an exception.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        unit_id: str,
        lane: Lane,
        candidate_id: str,
        attempt: int,
        call: int,
        adapter: str,
        request_kind: str,
        problems: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.lane = lane
        self.candidate_id = candidate_id
        self.attempt = attempt
        self.call = call
        self.adapter = adapter
        self.request_kind = request_kind
        self.problems: tuple[str, ...] = tuple(problems)
        self.error = error
        if error is not None:
            what = f"raised {error}"
            code = FailureCode.TOOLING_UNAVAILABLE
        else:
            count = len(self.problems)
            what = f"answered invalidly ({count} {'problem' if count == 1 else 'problems'})"
            code = FailureCode.INVALID_OUTPUT_SCHEMA
        lines = [
            f"the {lane.value} adapter {adapter} {what}",
            (
                f"  unit {unit_id}, candidate {candidate_id}, attempt {attempt}, call {call}, "
                f"asked with {request_kind}"
            ),
            *(f"  {problem}" for problem in self.problems),
        ]
        super().__init__(
            "\n".join(lines),
            code=code,
            hint="a strict run stops at an adapter's first mistake; "
            "pass strict=False to record it and go on",
        )


class UnitFailed(MeshError):
    """
    A unit ended failed (or blocked by a failed dependency).

    Attributes:
        unit_id: The unit.
        evidence: Every problem the unit met, the one explaining its failure first
            (see `UnitOutcome.evidence`).

    .. versionadded:: 0.1.0
    """

    def __init__(self, unit_id: str, code: FailureCode, evidence: str) -> None:
        self.unit_id = unit_id
        self.evidence = evidence
        super().__init__(f"unit {unit_id} failed ({code.value}): {evidence}", code=code)


class RunFailed(ExceptionGroup[UnitFailed], MeshError):  # type: ignore[override]
    """
    Several units of one run failed; each is a `UnitFailed` in ``exceptions``.

    ``code`` is the first failure's code.

    .. versionadded:: 0.1.0
    """

    def __new__(cls, message: str, exceptions: Sequence[UnitFailed]) -> Self:
        return super().__new__(cls, message, exceptions)

    def __init__(self, message: str, exceptions: Sequence[UnitFailed]) -> None:
        # ExceptionGroup owns `message`; MeshError's __init__ would overwrite it.
        ExceptionGroup.__init__(self, message, exceptions)
        self.code = exceptions[0].code
        self._failures = tuple(exceptions)

    @property
    def failures(self) -> tuple[UnitFailed, ...]:
        """The failed units, in plan order; typed, unlike the inherited ``exceptions``."""
        return self._failures


class RunCancelled(MeshError):
    """
    A run was cancelled before it finished (`Orchestrator.cancel`, `RunHandle.cancel`).

    Its ledger ends with a ``run_cancelled`` event carrying the same reason; a
    repository run's state is kept, and `mesh.resume` continues it.

    Attributes:
        reason: Why, as the canceller said.

    .. versionadded:: 0.2.0
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the run was cancelled: {reason}")
