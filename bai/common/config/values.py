"""Value types of config keys: durations, TCP addresses, NNG URLs and constrained scalars."""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal
from typing import Annotated, ClassVar, Final, Literal

import msgspec

from bai.common.config.errors import AddressParseError, DurationParseError

__all__ = [
    "MAX_DURATION_SECONDS",
    "MAX_DURATION_TEXT",
    "Duration",
    "HostPort",
    "LogLevel",
    "Name",
    "NngAddress",
    "NonNegativeInt",
    "Port",
    "parse_duration",
]

#: A duration's text is rejected before parsing when longer than this.
MAX_DURATION_TEXT: Final = 64
#: Longer durations are certainly typos (100 years, in seconds).
MAX_DURATION_SECONDS: Final = 100 * 365 * 86400


class Duration(float):
    """A non-negative, finite number of seconds parsed from ``"1h30m"``-style text."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


_DURATION_UNITS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER: Final = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_SECONDS_RE: Final = re.compile(_NUMBER, re.ASCII)
_DURATION_RE: Final = re.compile(rf"(?:\s*{_NUMBER}\s*(?:ms|w|d|h|m|s))+\s*", re.ASCII)
_DURATION_PART_RE: Final = re.compile(rf"({_NUMBER})\s*(ms|w|d|h|m|s)", re.ASCII)
_UNIT_ORDER: Final = ("w", "d", "h", "m", "s", "ms")


def parse_duration(value: object) -> Duration:
    """Parse a duration into seconds.

    Accepts a non-negative int or finite float (seconds), a numeric string
    (``"30"``, ``"1.5"``), or unit components in decreasing order: ``w``, ``d``,
    ``h``, ``m``, ``s``, ``ms`` (``"10m"``, ``"1d"``, ``"1h30m"``, ``"500ms"``).
    Units are lower-case (``M`` could mean months).  Signs, exponents, ``inf``,
    ``nan`` and anything longer than 100 years are rejected with
    :class:`DurationParseError` naming the value.
    """
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool):
        raise DurationParseError("a duration must be a number or a string", value=value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise DurationParseError("a duration must be finite", value=value)
        seconds = Decimal(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise DurationParseError("a duration must be a number or a string", value=value)
    if seconds < 0:
        raise DurationParseError("a duration cannot be negative", value=value)
    if seconds > MAX_DURATION_SECONDS:
        raise DurationParseError("a duration cannot exceed 100 years", value=value)
    return Duration(seconds)


def _parse_duration_text(text: str) -> Decimal:
    if len(text) > MAX_DURATION_TEXT:
        raise DurationParseError(
            f"a duration is at most {MAX_DURATION_TEXT} characters long", value=text
        )
    stripped = text.strip()
    if stripped.startswith("-"):
        raise DurationParseError("a duration cannot be negative", value=text)
    if _PLAIN_SECONDS_RE.fullmatch(stripped):
        return Decimal(stripped)
    if not _DURATION_RE.fullmatch(stripped):
        raise DurationParseError(
            "not a duration (expected e.g. '30', '500ms', '10m', '1h30m', '1d')", value=text
        )
    total = Decimal(0)
    last_rank = -1
    for number, unit in _DURATION_PART_RE.findall(stripped):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise DurationParseError(
                "duration units must appear once each, largest first (e.g. '1h30m')",
                value=text,
            )
        last_rank = rank
        amount = Decimal(number)
        total += amount / 1000 if unit == "ms" else amount * _DURATION_UNITS[unit]
    return total


class HostPort:
    """A TCP address: TOML ``{ host = "h", port = 1 }`` or the string ``"h:1"``.

    IPv6 hosts are written in brackets in the string form (``"[::1]:8081"``).
    Port 0 asks the OS for a free port when the address is listened on.
    """

    __slots__ = ("host", "port")
    host: str
    port: int

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @classmethod
    def parse(cls, value: object) -> HostPort:
        """Parse a table or ``host:port`` string; raises :class:`AddressParseError`."""
        if isinstance(value, HostPort):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"host", "port"})
            if unknown:
                raise AddressParseError(
                    f"unknown key {unknown[0]!r} in an address table (expected host and port)",
                    value=value,
                )
            if "host" not in value or "port" not in value:
                raise AddressParseError("an address table needs both host and port", value=value)
            return cls(_check_host(value["host"], value), _check_port(value["port"], value))
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if not sep or not port.isascii() or not port.isdigit():
                raise AddressParseError(
                    "not a host:port address (e.g. '0.0.0.0:8081')", value=value
                )
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            elif ":" in host:
                raise AddressParseError(
                    "write an IPv6 host in brackets ('[::1]:8081')", value=value
                )
            return cls(_check_host(host, value), _check_port(int(port), value))
        raise AddressParseError("an address must be a 'host:port' string or a table", value=value)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"HostPort({self.host!r}, {self.port!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostPort):
            return NotImplemented
        return (self.host, self.port) == (other.host, other.port)

    def __hash__(self) -> int:
        return hash((self.host, self.port))


def _check_host(host: object, whole: object) -> str:
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise AddressParseError("the host must be a non-empty name without spaces", value=whole)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressParseError("not a valid IPv6 host", value=whole) from None
    return host


def _check_port(port: object, whole: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise AddressParseError("the port must be an integer from 0 to 65535", value=whole)
    return port


class NngAddress(str):
    """An NNG URL such as ``tcp://10.0.0.5:6011``, ``ipc:///run/bai/agent.sock`` or ``inproc://agent``.

    A TOML table ``{ host = "h", port = 6011 }`` (the Backend.AI sample form)
    is accepted and becomes ``tcp://h:6011``.
    """

    __slots__ = ()
    SCHEMES: ClassVar = ("tcp", "tcp4", "tcp6", "tls+tcp", "ipc", "inproc")

    @classmethod
    def parse(cls, value: object) -> NngAddress:
        """Parse and check an NNG URL; raises :class:`AddressParseError`."""
        if isinstance(value, NngAddress):
            return value
        if isinstance(value, dict):
            return cls(f"tcp://{HostPort.parse(value)}")
        if not isinstance(value, str):
            raise AddressParseError("an NNG address must be a URL string or a table", value=value)
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in cls.SCHEMES:
            raise AddressParseError(
                f"not an NNG URL (scheme must be one of {', '.join(cls.SCHEMES)})", value=value
            )
        if not rest or any(c.isspace() for c in rest):
            raise AddressParseError("the NNG URL has an empty or blank location", value=value)
        if scheme not in ("ipc", "inproc"):
            try:
                HostPort.parse(rest)
            except AddressParseError as exc:
                raise AddressParseError(f"bad TCP location: {exc.problem}", value=value) from None
        return cls(value)


LogLevel = Literal["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1)]
