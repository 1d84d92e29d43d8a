"""The ``filter`` and ``order`` arguments of the paginated ``*_list`` fields.

The official client passes them through from ``--filter`` and ``--order``::

    filter: status == "RUNNING" & (name ilike "%train%" | tag != null)
    order:  -created_at,+name

A filter is comparisons ``field op value`` joined with ``&`` (and), ``|``
(or), ``!`` (not) and parentheses; ``&`` binds tighter than ``|``.
Operators: ``==`` ``!=`` ``<`` ``<=`` ``>`` ``>=``, ``in`` (a ``[...]``
list), ``contains``, ``like`` and ``ilike`` (SQL patterns with ``%`` and
``_``), and ``is`` / ``isnot`` (with ``null``).  Values are double-quoted
strings (backslash escapes), integers, ``true``, ``false`` and ``null``;
``== null`` means ``is null``.

An order is comma-separated field names, each optionally prefixed with ``+``
(ascending, the default) or ``-`` (descending).

Each list declares which fields may be filtered and ordered and what kind
each is (:class:`Field`); every value is checked against its kind before it
reaches SQL (an unknown status, a malformed UUID or datetime, a string for
an integer...).  Any problem raises :class:`FilterError` naming the
offending text and the argument, never a SQL error.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue

__all__ = [
    "MAX_FILTER_LENGTH",
    "Field",
    "FilterError",
    "Kind",
    "enum_field",
    "parse_filter",
    "parse_order",
]

#: The longest filter or order expression accepted, in characters.
MAX_FILTER_LENGTH: Final = 2000
_MAX_DEPTH: Final = 32


class FilterError(InvalidValue):
    """A ``filter`` or ``order`` expression that cannot be used."""


class Kind(enum.Enum):
    """How a field's values are written and compared."""

    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    UUID = "uuid"
    DATETIME = "datetime"
    ENUM = "enum"


@dataclass(frozen=True, slots=True)
class Field:
    """A filterable, orderable field: its SQL expression, kind and (enums) values."""

    expr: sa.ColumnElement[Any]
    kind: Kind
    choices: frozenset[str] = frozenset()


def enum_field(column: sa.ColumnElement[Any], enum_class: type[enum.Enum]) -> Field:
    """An :attr:`Kind.ENUM` field whose choices are *enum_class*'s values."""
    return Field(column, Kind.ENUM, frozenset(str(m.value) for m in enum_class))


_TOKEN_RE: Final = re.compile(
    r"""
    \s*(?:
      (?P<string>"(?:\\.|[^"\\])*")
    | (?P<number>-?\d+)
    | (?P<op>==|!=|<=|>=|<|>)
    | (?P<punct>[()\[\],&|!])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )
    """,
    re.VERBOSE,
)
_ESCAPE_RE: Final = re.compile(r"\\(.)", re.DOTALL)
_WORD_OPS: Final = frozenset({"in", "contains", "like", "ilike", "is", "isnot"})
_ALLOWED: Final[Mapping[Kind, frozenset[str]]] = {
    Kind.STRING: frozenset(
        {"==", "!=", "<", "<=", ">", ">=", "in", "contains", "like", "ilike", "is", "isnot"}
    ),
    Kind.INTEGER: frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "is", "isnot"}),
    Kind.BOOLEAN: frozenset({"==", "!=", "is", "isnot"}),
    Kind.UUID: frozenset({"==", "!=", "in", "is", "isnot"}),
    Kind.DATETIME: frozenset({"==", "!=", "<", "<=", ">", ">=", "is", "isnot"}),
    Kind.ENUM: frozenset({"==", "!=", "in", "like", "ilike", "is", "isnot"}),
}
_NULL: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            raise FilterError(
                f"unexpected character at position {pos}",
                value=text[pos : pos + 20],
                field="filter",
            )
        kind = match.lastgroup or ""
        start = match.start(kind)
        tokens.append(_Token(kind, match.group(kind), start))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, Field]) -> None:
        self.text = text
        self.fields = fields
        self.tokens = _tokenize(text)
        self.index = 0

    def fail(self, problem: str, token: _Token | None = None) -> FilterError:
        where = token.text if token is not None else self.text
        return FilterError(problem, value=where, field="filter")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail("the filter ends too early")
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise self.fail(f"expected {text!r} at position {token.pos}", token)

    def parse(self) -> sa.ColumnElement[bool]:
        if not self.tokens:
            raise self.fail("the filter is empty")
        condition = self.disjunction(0)
        token = self.peek()
        if token is not None:
            raise self.fail(f"unexpected {token.text!r} at position {token.pos}", token)
        return condition

    def disjunction(self, depth: int) -> sa.ColumnElement[bool]:
        parts = [self.conjunction(depth)]
        while (token := self.peek()) is not None and token.text == "|":
            self.index += 1
            parts.append(self.conjunction(depth))
        return parts[0] if len(parts) == 1 else sa.or_(*parts)

    def conjunction(self, depth: int) -> sa.ColumnElement[bool]:
        parts = [self.unary(depth)]
        while (token := self.peek()) is not None and token.text == "&":
            self.index += 1
            parts.append(self.unary(depth))
        return parts[0] if len(parts) == 1 else sa.and_(*parts)

    def unary(self, depth: int) -> sa.ColumnElement[bool]:
        if depth > _MAX_DEPTH:
            raise self.fail(f"the filter nests deeper than {_MAX_DEPTH} levels")
        token = self.take()
        if token.text == "!":
            return sa.not_(self.unary(depth + 1))
        if token.text == "(":
            inner = self.disjunction(depth + 1)
            self.expect(")")
            return inner
        if token.kind != "word":
            raise self.fail(f"expected a field name at position {token.pos}", token)
        return self.comparison(token)

    def comparison(self, name: _Token) -> sa.ColumnElement[bool]:
        spec = self.fields.get(name.text)
        if spec is None:
            raise FilterError(
                f"is not a field you can filter on (choose from {', '.join(sorted(self.fields))})",
                value=name.text,
                field="filter",
            )
        op_token = self.take()
        op = op_token.text
        if op_token.kind not in ("op", "word") or (op_token.kind == "word" and op not in _WORD_OPS):
            raise self.fail(f"expected an operator at position {op_token.pos}", op_token)
        if op not in _ALLOWED[spec.kind]:
            raise self.fail(f"{op!r} does not apply to {name.text} ({spec.kind.value})", op_token)
        if op == "in":
            values = self.value_list(name.text, spec)
            return spec.expr.in_(values)
        value = self.value(name.text, spec)
        return _compare(name.text, spec, op, value)

    def value_list(self, name: str, spec: Field) -> list[Any]:
        self.expect("[")
        values: list[Any] = []
        while True:
            value = self.value(name, spec)
            if value is _NULL:
                raise self.fail(f"null cannot be in a list for {name}")
            values.append(value)
            token = self.take()
            if token.text == "]":
                return values
            if token.text != ",":
                raise self.fail(f"expected ',' or ']' at position {token.pos}", token)

    def value(self, name: str, spec: Field) -> Any:
        token = self.take()
        if token.kind == "word" and token.text == "null":
            return _NULL
        if token.kind == "string":
            raw: Any = _ESCAPE_RE.sub(lambda m: m.group(1), token.text[1:-1])
        elif token.kind == "number":
            raw = int(token.text)
        elif token.kind == "word" and token.text in ("true", "false"):
            raw = token.text == "true"
        else:
            raise self.fail(f"expected a value at position {token.pos}", token)
        return _coerce(name, spec, raw)


def _coerce(name: str, spec: Field, raw: Any) -> Any:
    def bad(expected: str) -> FilterError:
        return FilterError(f"{name} needs {expected}", value=raw, field="filter")

    if spec.kind is Kind.STRING:
        if not isinstance(raw, str):
            raise bad("a quoted string")
        return raw
    if spec.kind is Kind.INTEGER:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise bad("an integer")
        return raw
    if spec.kind is Kind.BOOLEAN:
        if not isinstance(raw, bool):
            raise bad("true or false")
        return raw
    if spec.kind is Kind.UUID:
        if not isinstance(raw, str):
            raise bad("a UUID string")
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise bad("a UUID string") from None
    if spec.kind is Kind.DATETIME:
        if not isinstance(raw, str):
            raise bad("an ISO-8601 datetime string")
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            raise bad("an ISO-8601 datetime string") from None
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
    if not isinstance(raw, str):
        raise bad("a quoted string")
    return raw


def _compare(name: str, spec: Field, op: str, value: Any) -> sa.ColumnElement[bool]:
    expr = spec.expr
    if value is _NULL:
        if op in ("==", "is"):
            return expr.is_(None)
        if op in ("!=", "isnot"):
            return expr.is_not(None)
        raise FilterError(f"{op!r} cannot compare {name} with null", value=op, field="filter")
    if op in ("is", "isnot"):
        raise FilterError(f"{op!r} only takes null", value=value, field="filter")
    if spec.kind is Kind.ENUM:
        if op in ("like", "ilike"):
            text = sa.cast(expr, sa.String)
            return text.like(value) if op == "like" else text.ilike(value)
        if value not in spec.choices:
            raise FilterError(
                f"is not a {name} (choose from {', '.join(sorted(spec.choices))})",
                value=value,
                field="filter",
            )
    condition: sa.ColumnElement[bool]
    if op == "==":
        condition = expr == value
    elif op == "!=":
        # SQL's <> never matches NULL; a field without a value differs from any value.
        condition = sa.or_(expr != value, expr.is_(None))
    elif op == "<":
        condition = expr < value
    elif op == "<=":
        condition = expr <= value
    elif op == ">":
        condition = expr > value
    elif op == ">=":
        condition = expr >= value
    elif op == "contains":
        condition = expr.contains(value, autoescape=True)
    else:
        condition = expr.like(value) if op == "like" else expr.ilike(value)
    return condition


def _check_length(text: str, argument: str) -> None:
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(
            f"is longer than {MAX_FILTER_LENGTH} characters", value=text, field=argument
        )


def parse_filter(text: str, fields: Mapping[str, Field]) -> sa.ColumnElement[bool]:
    """The SQL condition a ``filter`` expression over *fields* stands for."""
    _check_length(text, "filter")
    return _Parser(text, fields).parse()


_ORDER_TERM_RE: Final = re.compile(r"\s*([+-]?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*")


def parse_order(text: str, fields: Mapping[str, Field]) -> Sequence[sa.ColumnElement[Any]]:
    """The ``ORDER BY`` terms an ``order`` expression over *fields* stands for."""
    _check_length(text, "order")
    terms: list[sa.ColumnElement[Any]] = []
    for part in text.split(","):
        match = _ORDER_TERM_RE.fullmatch(part)
        if match is None:
            raise FilterError("is not [+|-]field", value=part, field="order")
        sign, name = match.groups()
        spec = fields.get(name)
        if spec is None:
            raise FilterError(
                f"is not a field you can order by (choose from {', '.join(sorted(fields))})",
                value=name,
                field="order",
            )
        terms.append(spec.expr.desc() if sign == "-" else spec.expr.asc())
    return terms
