"""Turn a :class:`msgspec.ValidationError` into an :class:`InvalidValue` naming the field.

msgspec reports where a value failed at the end of its message (``Expected
`int`, got `str` - at `$.mounts[1].name```), and names a missing or unknown
field inside it (``Object missing required field `key```).  :func:`violation_of`
splits such a message into the problem and the path; :func:`invalid_value`
builds the error from it, so every caller names the field the same way:

* :func:`dotted` writes a path as the API spec does (``mounts.1.name``,
  ``resources.*`` for a key msgspec does not name);
* :func:`bracketed` writes it as config keys and RPC arguments are written
  (``mounts[1].name``, ``resources[...]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec

from bai.common.errors import InvalidValue

__all__ = [
    "NO_VALUE",
    "InvalidField",
    "PathStep",
    "Violation",
    "bracketed",
    "dotted",
    "invalid_value",
    "value_at",
    "violation_of",
]

#: One step of a path into a document: a field or key name, a list index, or
#: ``None`` for a key of a dict that msgspec does not name (its ``[...]``).
PathStep = str | int | None

_PATH_STEP_RE: Final = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_MESSAGE_RE: Final = re.compile(r"(?s)(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?")
_UNKNOWN_RE: Final = re.compile(r"(?s)Object contains unknown field `(?P<name>.*)`")
_MISSING_RE: Final = re.compile(r"(?s)Object missing required field `(?P<name>.*)`")


class _NoValue:
    """Marks an error that has no offending value to show."""

    def __repr__(self) -> str:
        return "<no value>"


#: The offending value is not known (the message then does not echo one).
NO_VALUE: Final[Any] = _NoValue()


class InvalidField(InvalidValue):
    """An :class:`InvalidValue` whose message echoes the value only when it is known.

    ``value`` is :data:`NO_VALUE` (the default) when the value is not known,
    as for a missing field; ``self.value`` is then ``None``.
    """

    def __init__(self, problem: str, *, field: str | None = None, value: Any = NO_VALUE) -> None:
        super().__init__(problem, value=None if value is NO_VALUE else value, field=field)
        if value is NO_VALUE:
            self.args = (f"{field}: {problem}" if field else problem,)


@dataclass(frozen=True, slots=True)
class Violation:
    """What msgspec rejected, and where.

    ``problem`` is msgspec's message without its location; ``location`` the
    path msgspec gave (empty for the document itself).  For a missing or an
    unknown field, ``location`` is the object and ``missing`` or ``unknown``
    the field's name.
    """

    problem: str
    location: tuple[PathStep, ...]
    missing: str | None = None
    unknown: str | None = None

    @property
    def path(self) -> tuple[PathStep, ...]:
        """The path to the offending field, a missing or unknown one included."""
        name = self.missing if self.missing is not None else self.unknown
        return self.location if name is None else (*self.location, name)


def violation_of(exc: msgspec.ValidationError) -> Violation:
    """Split msgspec's message of *exc* into a :class:`Violation`."""
    match = _MESSAGE_RE.fullmatch(str(exc))
    assert match is not None  # the pattern matches any text
    location: list[PathStep] = []
    for name, index in _PATH_STEP_RE.findall(match["path"] or ""):
        location.append(name if name else (None if index == "..." else int(index)))
    problem = match["problem"]
    missing = _MISSING_RE.fullmatch(problem)
    unknown = _UNKNOWN_RE.fullmatch(problem)
    return Violation(
        problem,
        tuple(location),
        missing=missing["name"] if missing else None,
        unknown=unknown["name"] if unknown else None,
    )


def dotted(path: Sequence[PathStep]) -> str:
    """*path* in the API spec's notation: ``mounts.1.name``, ``resources.*``."""
    return ".".join("*" if step is None else str(step) for step in path)


def bracketed(path: Sequence[PathStep]) -> str:
    """*path* as a config key or RPC argument: ``mounts[1].name``, ``resources[...]``."""
    key = ""
    for step in path:
        if step is None:
            key += "[...]"
        elif isinstance(step, int):
            key += f"[{step}]"
        else:
            key += f".{step}" if key else step
    return key


def value_at(document: Any, path: Sequence[PathStep]) -> Any:
    """The value at *path* in *document* (decoded JSON, TOML, msgpack), or :data:`NO_VALUE`."""
    for step in path:
        in_table = isinstance(document, dict) and isinstance(step, str) and step in document
        in_array = isinstance(document, list) and isinstance(step, int) and step < len(document)
        if not (in_table or in_array):
            return NO_VALUE
        document = document[step]
    return document


E = TypeVar("E", bound=InvalidField)


def invalid_value(
    exc: msgspec.ValidationError,
    document: Any = NO_VALUE,
    *,
    where: str,
    error: type[E],
    notation: Callable[[Sequence[PathStep]], str] = dotted,
) -> E:
    """The *error* naming the field of *document* that *exc* rejected.

    ``field`` is the path in *notation*, and the message echoes the value found
    there in *document*.  A missing field "is required", an unknown one "is
    not a known field".  When msgspec names no path (the document itself is
    wrong), the message starts with *where* (``the request body``) instead.
    """
    found = violation_of(exc)
    if not found.path:
        return error(f"{where}: {found.problem}")
    if found.missing is not None:
        problem = "is required"
    elif found.unknown is not None:
        problem = "is not a known field"
    else:
        problem = found.problem
    return error(problem, field=notation(found.path), value=value_at(document, found.path))
