"""
The one private cattrs converter, and strict JSON text handling.

cattrs coerces by default (``"5"`` becomes ``5``, ``"ab"`` becomes
``("a", "b")``, ``1`` becomes ``"1"``). Contracts that agents fill in must not
be guessed at, so every scalar and sequence hook here checks the wire type
exactly, and every problem is reported with its JSON path.
"""

from __future__ import annotations

import enum
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from ._errors import ValidationError

__all__ = ["converter", "dumps_json", "fast_structure", "loads_json", "structure", "type_name"]

T = TypeVar("T")


class WireTypeError(TypeError):
    """A value has the wrong JSON type; its message is shown to users as it is."""


class WireValueError(ValueError):
    """A value has the right JSON type but is not allowed; shown to users as it is."""


def type_name(value: object) -> str:
    """Name a JSON value's type the way a JSON author would."""
    names: dict[type, str] = {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        tuple: "array",
        dict: "object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise WireTypeError(f"expected string, got {type_name(value)}")
    return value


def _strict_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireTypeError(f"expected integer, got {type_name(value)}")
    return value


def _strict_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireTypeError(f"expected number, got {type_name(value)}")
    if not math.isfinite(value):
        raise WireValueError("expected a finite number")
    return float(value)


def _strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise WireTypeError(f"expected boolean, got {type_name(value)}")
    return value


def _strict_enum(value: object, cls: type[enum.StrEnum]) -> enum.StrEnum:
    if not isinstance(value, str):
        raise WireTypeError(f"expected string, got {type_name(value)}")
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(member.value for member in cls)
        raise WireValueError(f"expected one of {allowed}; got {value!r}") from None


def _is_homogeneous_tuple(cls: Any) -> bool:  # noqa: ANN401 - cattrs predicates take any type form
    args = typing.get_args(cls)
    return typing.get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis  # noqa: PLR2004 - tuple[X, ...]


def _tuple_hook_factory(cls: Any) -> Callable[[object, type], tuple[object, ...]]:  # noqa: ANN401
    item_type = typing.get_args(cls)[0]
    structure_item = converter.get_structure_hook(item_type)

    def structure_tuple(value: object, _: type) -> tuple[object, ...]:
        if not isinstance(value, list | tuple):
            raise WireTypeError(f"expected array, got {type_name(value)}")
        items: list[object] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item, item_type))
            except Exception as exc:  # noqa: BLE001 - collected and re-raised as a group
                exc.add_note(IterableValidationNote(f"@ index {index}", index, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError("array items are invalid", errors, cls)
        return tuple(items)

    return structure_tuple


def _is_optional(cls: Any) -> bool:  # noqa: ANN401 - cattrs predicates take any type form
    args = typing.get_args(cls)
    is_union = typing.get_origin(cls) in {typing.Union, types.UnionType}
    return is_union and len(args) == 2 and type(None) in args  # noqa: PLR2004 - X | None


def _optional_hook_factory(cls: Any) -> Callable[[object, type], object]:  # noqa: ANN401
    # cattrs would pass `StrEnum | None` values through as plain strings; delegate
    # to the strict hook of the non-None member instead.
    inner_type = next(arg for arg in typing.get_args(cls) if arg is not type(None))
    structure_inner = converter.get_structure_hook(inner_type)

    def structure_optional(value: object, _: type) -> object:
        return None if value is None else structure_inner(value, inner_type)

    return structure_optional


converter: Final = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
"""mesh's private converter; never the global one (the host may configure that)."""

# Singledispatch picks the most specific class, so StrEnum (more specific than
# str in its MRO) gets the enum check and bool is kept apart from int.
converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(bool, _strict_bool)
converter.register_structure_hook(enum.StrEnum, _strict_enum)
converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook_factory)
converter.register_structure_hook_factory(_is_optional, _optional_hook_factory)


def _describe(exc: BaseException, _: type | None) -> str:
    if isinstance(exc, WireTypeError | WireValueError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(repr(key) for key in sorted(exc.extra_fields))
        return f"unknown key{'s' if len(exc.extra_fields) > 1 else ''} {names}"
    if isinstance(exc, TypeError | AttributeError):
        # A class was handed a non-object (cattrs fails on mapping access).
        return "expected object"
    return str(exc) or type(exc).__name__


def _path_first(message: str) -> str:
    # cattrs says "problem @ $.a.b"; people scan for the path first.
    problem, _, path = message.rpartition(" @ ")
    return f"{path}: {problem}" if problem else message


def structure(payload: object, cls: type[T], *, subject: str, path: str = "$") -> T:
    """
    Structure a JSON value into ``cls``, or raise `ValidationError` listing every problem.

    Args:
        payload: A value decoded from JSON.
        cls: The attrs class to build.
        subject: What the payload is, for the error message.
        path: JSON path of ``payload`` inside its document.

    Raises:
        ValidationError: Listing every wrong type, unknown key and missing key.
    """
    if not isinstance(payload, Mapping):
        raise ValidationError(subject, [f"{path}: expected object, got {type_name(payload)}"])
    try:
        return converter.structure(payload, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        problems = [_path_first(m) for m in cattrs.transform_error(exc, path, _describe)]
        raise ValidationError(subject, problems) from None


class _Miss:
    """What the fast path returns for anything it does not accept as it is."""


_MISS: Final = _Miss()


@attrs.frozen
class _StrTuple:
    """The ``tuple[str, ...]`` field kind."""


_STR_TUPLE: Final = _StrTuple()
_FieldKind = type | _StrTuple


@attrs.frozen
class _FastBuilder:
    """
    Builds an attrs class from a dict whose values all have their exact types.

    One loop over the payload with a type comparison per value: several times
    cheaper than the converter, which it must agree with on what it accepts.
    """

    cls: type
    kinds: Mapping[str, _FieldKind]
    optional: frozenset[str]
    required: frozenset[str]
    members: Mapping[type, Mapping[object, object]]
    records: Mapping[type, _FastBuilder]

    def build(self, payload: object) -> object:
        if type(payload) is self.cls:  # a typed record is checked like its document
            payload = {name: getattr(payload, name) for name in self.kinds}
        if type(payload) is not dict:
            return _MISS
        values: dict[str, object] = {}
        for key, value in payload.items():
            kind = self.kinds.get(key)
            if kind is None or (value is None and key not in self.optional):
                return _MISS  # an unknown key, or None where it is not allowed
            if value is None:
                continue
            if kind is str or kind is int:  # most fields: checked here, without a call
                if type(value) is not kind:
                    return _MISS
                values[key] = value
            else:
                converted = self._convert(kind, value)
                if converted is _MISS:
                    return _MISS
                values[key] = converted
        if not self.required <= values.keys():
            return _MISS
        return self.cls(**values)

    def conforms(self, record: object) -> bool:
        """Whether ``record`` is this class with every field of its exact type, as it is."""
        return type(record) is self.cls and all(
            self._conforming(name, kind, getattr(record, name)) for name, kind in self.kinds.items()
        )

    def _conforming(self, name: str, kind: _FieldKind, value: object) -> bool:
        if value is None:
            return name in self.optional
        if kind is str or kind is int or kind in self.members:
            return type(value) is kind
        if isinstance(kind, _StrTuple):
            items = typing.cast("tuple[object, ...]", value)
            return type(value) is tuple and all(type(item) is str for item in items)
        return self.records[kind].conforms(value)

    def _convert(self, kind: _FieldKind, value: object) -> object:
        if isinstance(kind, _StrTuple):
            if type(value) is not list and type(value) is not tuple:
                return _MISS
            items = typing.cast("list[object] | tuple[object, ...]", value)
            return tuple(items) if all(type(item) is str for item in items) else _MISS
        members = self.members.get(kind)
        if members is not None:
            if type(value) is not str and type(value) is not kind:
                return _MISS
            return members.get(value, _MISS)
        return self.records[kind].build(value)


def _field_kind(cls: Any) -> tuple[_FieldKind | None, bool]:  # noqa: ANN401 - any type form
    """The fast path's kind of a field type and whether None is allowed (kind None: unknown)."""
    optional = _is_optional(cls)
    if optional:
        cls = next(arg for arg in typing.get_args(cls) if arg is not type(None))
    if cls is str or cls is int:
        return cls, optional
    if _is_homogeneous_tuple(cls) and typing.get_args(cls)[0] is str:
        return _STR_TUPLE, optional
    if isinstance(cls, type) and (issubclass(cls, enum.StrEnum) or attrs.has(cls)):
        return cls, optional
    return None, optional


_BUILDERS: Final[dict[type, _FastBuilder | None]] = {}


def _fast_builder(cls: type) -> _FastBuilder | None:
    if cls not in _BUILDERS:
        _BUILDERS[cls] = _new_fast_builder(cls)
    return _BUILDERS[cls]


def _new_fast_builder(cls: type) -> _FastBuilder | None:
    hints = typing.get_type_hints(cls)
    kinds: dict[str, _FieldKind] = {}
    optional: set[str] = set()
    members: dict[type, Mapping[object, object]] = {}
    records: dict[type, _FastBuilder] = {}
    for field in attrs.fields(cls):
        kind, allows_none = _field_kind(hints[field.name])
        if kind is None:
            return None
        kinds[field.name] = kind
        if allows_none:
            optional.add(field.name)
        if isinstance(kind, type) and issubclass(kind, enum.StrEnum):
            members[kind] = kind._value2member_map_
        elif isinstance(kind, type) and attrs.has(kind):
            nested = _fast_builder(kind)
            if nested is None:
                return None
            records[kind] = nested
    return _FastBuilder(
        cls=cls,
        kinds=kinds,
        optional=frozenset(optional),
        required=frozenset(f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING),
        members=members,
        records=records,
    )


def fast_structure(payload: object, cls: type[T]) -> T | None:
    """
    ``cls`` from a payload whose every value already has its exact type, else None.

    The common case (a valid answer) skips the converter; anything unusual
    returns None, and `structure` then gives the verdict with its messages.
    """
    builder = _fast_builder(cls)
    if builder is None:
        return None
    result = builder.build(payload)
    return None if result is _MISS else typing.cast("T", result)


def fast_conforms(record: object, cls: type) -> bool:
    """
    Whether ``record`` is a ``cls`` whose every field already has its exact type.

    Checks a typed record in place, as `fast_structure` would accept its fields,
    without building a copy; False says only "not on the fast path".
    """
    builder = _fast_builder(cls)
    return builder is not None and builder.conforms(record)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document


def _has_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _check_text(value: object, path: str) -> None:
    # Lone surrogates (from "\ud800" escapes) cannot be written back as UTF-8.
    if isinstance(value, str):
        if _has_lone_surrogate(value):
            raise ValueError(f"{path}: string contains an unpaired surrogate")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _has_lone_surrogate(key):
                raise ValueError(f"{path}: key contains an unpaired surrogate")
            _check_text(item, f"{path}.{key}")


def loads_json(text: str, *, subject: str) -> object:
    """
    Decode one JSON document strictly: no NaN/Infinity, no duplicate keys, valid Unicode.

    Raises:
        ValidationError: When ``text`` is not such a document.
    """
    try:
        document: object = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
        _check_text(document, "$")
    except RecursionError:
        raise ValidationError(subject, ["$: nested too deeply"]) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ValidationError(subject, [f"not JSON: {exc.msg} at {where}"]) from None
    except ValueError as exc:
        raise ValidationError(subject, [f"not JSON: {exc}"]) from None
    return document


# JSON escapes the C0 controls only. A document printed on a terminal (a command's
# result) may hold text from a damaged store or an agent: C1 controls (U+009B opens a
# terminal escape), line separators, bidi controls and marks that reorder what is read,
# and lone surrogates are written as \uXXXX escapes, which are the same JSON string.
_UNSAFE_IN_JSON: Final = re.compile(
    "[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _json_escape(found: re.Match[str]) -> str:
    return f"\\u{ord(found.group()):04x}"


def dumps_json(document: object) -> str:
    """
    Encode a document as one line of valid JSON (never NaN, text kept exact).

    Characters that could rewrite what a terminal shows (C1 controls, line
    separators, bidi controls and marks) and lone surrogates are escaped.
    """
    text = json.dumps(document, ensure_ascii=False, allow_nan=False)
    return text if text.isascii() else _UNSAFE_IN_JSON.sub(_json_escape, text)
