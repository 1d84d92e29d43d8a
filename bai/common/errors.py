"""The root of bai's exception tree and the typed error for bad input.

Every parser in bai (slots, sizes, durations, configs, signatures, RPC
envelopes, API bodies) raises a subclass of :class:`InvalidValue`, so the edge
of each daemon can turn it into one clear 4xx answer that names the field and
the offending value instead of a 500.
"""

from __future__ import annotations

from typing import Any

#: Offending values are echoed back to users; huge or hostile input is cut to this many characters.
MAX_ECHOED_VALUE = 80


def describe_value(value: Any) -> str:
    """Return a short, printable ``repr`` of *value* for an error message."""
    text = repr(value)
    if len(text) > MAX_ECHOED_VALUE:
        text = f"{text[:MAX_ECHOED_VALUE]}... ({len(text)} chars)"
    return text


class BaiError(Exception):
    """Base class of every exception bai raises on purpose."""


class InvalidValue(BaiError, ValueError):
    """A value from outside (user, file, wire) was rejected.

    ``field`` names where the value came from (a slot name, a config key, a JSON
    path) when known; ``value`` is the rejected value itself.  The message always
    contains a shortened ``repr`` of the value so the user can find it.
    """

    def __init__(self, problem: str, *, value: Any = None, field: str | None = None) -> None:
        self.problem = problem
        self.value = value
        self.field = field
        where = f"{field}: " if field else ""
        super().__init__(f"{where}{problem} (got {describe_value(value)})")


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups, or *exc* itself.

    Trio nurseries wrap errors in exception groups; a caller reporting one
    error wants that error, not a group of one.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
