"""Bounded JSON decoding of what another party sent: a size limit, a nesting limit, one error type.

Every path where untrusted JSON enters goes through `decode`: MQTT messages at the hub,
HTTP bodies, query cursors, the node's commands and its local endpoint. It imports
nothing from the rest of the hub, so the node may use it.

Cost rule (meter frames arrive at 10 Hz from up to 1,000 nodes): no pass over the bytes
in Python. The size is `len()`. A schema without free-form values (`Any`, `object`,
`dict[str, object]`, ...) is bounded in depth by its own shape, and what msgspec skips
(unknown fields) is bounded by its recursion guard, whose `RecursionError` is caught
here. Only free-form values are walked in Python, and never deeper than the limit.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal, TypeVar, overload

import msgspec
import msgspec.inspect as mi

T = TypeVar("T")

MAX_BYTES = 256 * 1024  # a telemetry message or command; HTTP routes pass their own body limit
MAX_DEPTH = 32  # objects and arrays inside one another; the top-level value is depth 1

Reason = Literal["too_large", "too_deep", "invalid_json", "invalid_payload"]


class PayloadError(ValueError):
    """A payload refused before use; `reason` names why (also a metrics label)."""

    def __init__(self, reason: Reason, message: str, validation: msgspec.ValidationError | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.validation = validation  # msgspec's own error when the JSON did not match the schema


@overload
def decode(payload: bytes | str, schema: type[T], *, max_bytes: int = ..., max_depth: int = ...) -> T: ...
@overload
def decode(payload: bytes | str, schema: Any = ..., *, max_bytes: int = ..., max_depth: int = ...) -> Any: ...
def decode(payload: bytes | str, schema: Any = Any, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """`payload` decoded into `schema`, or `PayloadError` when it is too large, too deep, not JSON or not the schema."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"larger than {max_bytes} bytes")
    try:
        value = _decode_typed(payload, schema)
    except RecursionError:
        raise PayloadError("too_deep", f"nested deeper than {max_depth} levels") from None
    except msgspec.ValidationError as err:
        raise PayloadError("invalid_payload", str(err), err) from err
    except msgspec.DecodeError as err:
        raise PayloadError("invalid_json", str(err)) from err
    if _plan(schema) is not None:
        check_depth(value, schema, max_depth)
    return value


def _decode_typed(payload: bytes | str, schema: Any) -> Any:
    """msgspec's strict decoding, except that an integer field takes a JSON number with no fractional part (`5.0`)."""
    try:
        return msgspec.json.decode(payload, type=schema)
    except msgspec.ValidationError as err:
        if not _INT_GOT_FLOAT.match(str(err)):
            raise
    # msgspec's lax mode would take `5.0`, but also strings for numbers and booleans; so only this
    # rare case pays a second pass: whole floats become integers, then the value is checked strictly.
    # (Inside free-form values such a body then keeps `5` for `5.0`: the same JSON number.)
    return msgspec.convert(_WHOLE_FLOATS_AS_INTEGERS.decode(payload), type=schema, strict=True)


def _whole_float(text: str) -> float | int:
    number = float(text)
    return int(number) if number.is_integer() and abs(number) < 2**63 else number


_INT_GOT_FLOAT = re.compile(r"Expected `[^`]*\bint\b[^`]*`, got `float`")
_WHOLE_FLOATS_AS_INTEGERS = msgspec.json.Decoder(float_hook=_whole_float)


def check_depth(value: Any, schema: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise `PayloadError` when a free-form part of `value` (decoded as `schema`) nests deeper than `max_depth`."""
    plan = _plan(schema)
    if plan is None:
        return
    if plan == ():
        _walk(value, 1, max_depth)
        return
    for name in plan:
        _walk(getattr(value, name), 2, max_depth)


def bounded(value: T, max_depth: int = MAX_DEPTH) -> T:
    """`value` (plain JSON-like data) itself, once checked to nest at most `max_depth` levels."""
    _walk(value, 1, max_depth)
    return value


def _walk(value: Any, depth: int, max_depth: int) -> None:
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list | tuple | set | frozenset):
        children = value
    elif isinstance(value, msgspec.Struct):
        children = [getattr(value, name) for name in value.__struct_fields__]
    else:
        return
    if depth > max_depth:
        raise PayloadError("too_deep", f"nested deeper than {max_depth} levels")
    for child in children:
        _walk(child, depth + 1, max_depth)


@functools.cache
def _plan(schema: Any) -> tuple[str, ...] | None:
    """What to walk after decoding: None (nothing), () (the whole value) or the struct fields holding free-form values."""
    info = mi.type_info(schema)
    if isinstance(info, mi.StructType | mi.DataclassType):
        fields = tuple(f.name for f in info.fields if _free_form(f.type, set()))
        return fields or None
    return () if _free_form(info, set()) else None


def _free_form(info: mi.Type, seen: set[int]) -> bool:
    """Whether values of this type may hold JSON whose depth the type does not bound."""
    if isinstance(info, mi.AnyType):
        return True
    if isinstance(info, mi.CustomType):
        return info.cls is object
    if isinstance(info, mi.Metadata):
        return _free_form(info.type, seen)
    if isinstance(info, mi.UnionType):
        return any(_free_form(t, seen) for t in info.types)
    if isinstance(info, mi.DictType):
        return _free_form(info.key_type, seen) or _free_form(info.value_type, seen)
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _free_form(info.item_type, seen)
    if isinstance(info, mi.TupleType):
        return any(_free_form(t, seen) for t in info.item_types)
    if isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType | mi.NamedTupleType):
        if id(info) in seen:
            return True  # a type that contains itself: its depth is unbounded
        seen.add(id(info))
        found = any(_free_form(f.type, seen) for f in info.fields)
        seen.discard(id(info))
        return found
    return False
