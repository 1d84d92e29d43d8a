"""The errors the config loader and the value parsers raise."""

from __future__ import annotations

from typing import Any

from bai.common.errors import InvalidValue, describe_value
from bai.common.validation import NO_VALUE

__all__ = ["AddressParseError", "ConfigError", "DurationParseError"]


class ConfigError(InvalidValue):
    """A configuration file or environment override was rejected.

    ``source`` is the file path (or ``environment variable BAI_...``),
    ``field`` the dotted key (``agent.heartbeat-interval``) when one applies,
    ``line`` the 1-based line for syntax and encoding errors.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str,
        key: str | None = None,
        value: Any = NO_VALUE,
        line: int | None = None,
    ) -> None:
        super().__init__(problem, value=None if value is NO_VALUE else value, field=key)
        self.source = source
        self.line = line
        where = source if line is None else f"{source}, line {line}"
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        if value is not NO_VALUE:
            text += f" (got {describe_value(value)})"
        self.args = (text,)


class DurationParseError(InvalidValue):
    """A duration could not be parsed; the message names the offending value."""


class AddressParseError(InvalidValue):
    """A ``host:port`` address or an NNG URL could not be parsed."""
