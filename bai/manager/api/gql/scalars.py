"""The spec's custom scalars: ``DateTime``, ``UUID``, ``JSONString`` and ``BigInt``.

* ``DateTime`` -- an ISO-8601 string with its UTC offset
  (``2024-01-02T03:04:05.123456+00:00``).  Input without an offset is read
  as UTC.
* ``UUID`` -- the hyphenated lower-case form; input may be any form Python's
  :class:`uuid.UUID` reads.
* ``JSONString`` -- a JSON document encoded as a string, which clients parse
  again.  Resource slots encode as their decimal-string form
  (``{"cpu": "2", "mem": "4294967296"}``).  As input it takes such a string,
  or (from variables or literals) the JSON value itself.
* ``BigInt`` -- an integer within +-(2**53 - 1), the range JavaScript
  clients can compare exactly; as input also a string of digits.

Every input problem raises :class:`~graphql.GraphQLError` with a message
that names the offending value, which graphql-core reports against the
variable or argument.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from graphql import (
    GraphQLError,
    GraphQLScalarType,
    IntValueNode,
    StringValueNode,
    ValueNode,
    value_from_ast_untyped,
)

from bai.common.errors import describe_value
from bai.common.slots import ResourceSlot

__all__ = ["MAX_BIGINT", "BigInt", "DateTime", "JSONString", "UUIDType"]

#: The largest magnitude a ``BigInt`` holds: 2**53 - 1.
MAX_BIGINT: Final = 2**53 - 1


def _serialize_datetime(value: Any) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise GraphQLError(f"DateTime cannot represent {describe_value(value)}")
    return value.astimezone(UTC).isoformat()


def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise GraphQLError(f"DateTime must be an ISO-8601 string, not {describe_value(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise GraphQLError(
            f"DateTime must be an ISO-8601 string, not {describe_value(value)}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _literal_string(node: ValueNode, what: str) -> str:
    if not isinstance(node, StringValueNode):
        raise GraphQLError(f"{what} must be given as a string")
    return node.value


def _parse_datetime_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> datetime:
    return _parse_datetime(_literal_string(node, "DateTime"))


DateTime: Final = GraphQLScalarType(
    "DateTime",
    description="An ISO-8601 date and time with its UTC offset.",
    serialize=_serialize_datetime,
    parse_value=_parse_datetime,
    parse_literal=_parse_datetime_literal,
)


def _serialize_uuid(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(_parse_uuid(value))


def _parse_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise GraphQLError(f"UUID cannot represent {describe_value(value)}")


def _parse_uuid_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> uuid.UUID:
    return _parse_uuid(_literal_string(node, "UUID"))


UUIDType: Final = GraphQLScalarType(
    "UUID",
    description="A UUID in its hyphenated hexadecimal form.",
    serialize=_serialize_uuid,
    parse_value=_parse_uuid,
    parse_literal=_parse_uuid_literal,
)


def _json_default(value: Any) -> Any:
    if isinstance(value, ResourceSlot):
        return value.to_json()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _serialize_json(value: Any) -> str:
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):
        raise GraphQLError(f"JSONString cannot represent {describe_value(value)}") from None


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise GraphQLError(f"JSONString is not valid JSON: {describe_value(value)}") from None
    return value


def _parse_json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    if isinstance(node, StringValueNode):
        return _parse_json(node.value)
    return value_from_ast_untyped(node, variables)


JSONString: Final = GraphQLScalarType(
    "JSONString",
    description="A JSON document encoded as a string.",
    serialize=_serialize_json,
    parse_value=_parse_json,
    parse_literal=_parse_json_literal,
)


def _bigint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphQLError(f"BigInt cannot represent {describe_value(value)}")
    if not -MAX_BIGINT <= value <= MAX_BIGINT:
        raise GraphQLError(f"BigInt cannot represent {value}: beyond +-(2**53 - 1)")
    return value


def _parse_bigint(value: Any) -> int:
    if isinstance(value, str) and value.lstrip("-").isdigit() and value.isascii():
        return _bigint(int(value))
    return _bigint(value)


def _parse_bigint_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> int:
    if isinstance(node, IntValueNode | StringValueNode):
        return _parse_bigint(node.value if isinstance(node, StringValueNode) else int(node.value))
    raise GraphQLError("BigInt must be given as an integer")


BigInt: Final = GraphQLScalarType(
    "BigInt",
    description="An integer within +-(2**53 - 1).",
    serialize=_bigint,
    parse_value=_parse_bigint,
    parse_literal=_parse_bigint_literal,
)
