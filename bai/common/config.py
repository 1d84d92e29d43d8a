"""Typed TOML configuration for the manager, the agent and the storage proxy.

Each daemon has one config class (:class:`ManagerConfig`, :class:`AgentConfig`,
:class:`StorageProxyConfig`) made of frozen :mod:`msgspec` structs.  TOML keys
are kebab-case as in the Backend.AI samples (``heartbeat-interval``); the
Python attributes are the same names in snake_case (``heartbeat_interval``).

Guarantees of :func:`load_config`:

* Every key has a default (only ``path`` of a declared ``[volume.NAME]`` table
  is required), so a missing or empty file gives a usable config for the
  embedded mode (SQLite, in-process event bus, local kernels).
* The file is found in ``./``, ``~/.config/bai/`` and ``/etc/bai/``, in that
  order, unless an explicit path is given; the result says which file was used.
* ``BAI_<SECTION>__<KEY>`` environment variables override the file and go
  through the same validation (see ``docs/configuration.md``).
* Anything wrong (TOML syntax, non-UTF-8 bytes, a file over
  :data:`MAX_CONFIG_BYTES`, an unknown key, a wrong type, a bad size or
  duration, a missing required key) raises exactly one :class:`ConfigError`
  naming the file or environment variable, the dotted key and the problem.
  No other exception escapes the loader.

Durations are plain ``float`` seconds (:class:`Duration`), ready for
``trio.sleep`` and ``trio.fail_after``; sizes are
:class:`~bai.common.slots.BinarySize` byte counts.

Loading is synchronous file I/O meant for daemon start-up; inside a running
Trio program call it through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import math
import os
import re
import secrets
import socket
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, TypeVar
from urllib.parse import quote

import msgspec
import msgspec.inspect as mi

from bai.common.errors import InvalidValue, describe_value
from bai.common.slots import BinarySize

__all__ = [
    "ENV_PREFIX",
    "MAX_CONFIG_BYTES",
    "AddressParseError",
    "AgentConfig",
    "ConfigError",
    "DaemonConfig",
    "Duration",
    "DurationParseError",
    "HostPort",
    "LoadedConfig",
    "ManagerConfig",
    "NngAddress",
    "StorageProxyConfig",
    "find_config_file",
    "load_config",
    "parse_config",
    "parse_duration",
    "search_paths",
]

#: Larger config files are rejected unread; real ones are a few KiB.
MAX_CONFIG_BYTES: Final = 1024 * 1024
#: Environment variables ``BAI_<SECTION>__<KEY>`` override config keys.
ENV_PREFIX: Final = "BAI_"
#: A duration's text is rejected before parsing when longer than this.
MAX_DURATION_TEXT: Final = 64
#: Longer durations are certainly typos (100 years, in seconds).
MAX_DURATION_SECONDS: Final = 100 * 365 * 86400


# --------------------------------------------------------------------- errors


class _NoValue:
    """Marks a :class:`ConfigError` that has no offending value to show."""

    def __repr__(self) -> str:
        return "<no value>"


_NO_VALUE: Final = _NoValue()


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
        value: Any = _NO_VALUE,
        line: int | None = None,
    ) -> None:
        super().__init__(problem, value=None if value is _NO_VALUE else value, field=key)
        self.source = source
        self.line = line
        where = source if line is None else f"{source}, line {line}"
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        if value is not _NO_VALUE:
            text += f" (got {describe_value(value)})"
        self.args = (text,)


class DurationParseError(InvalidValue):
    """A duration could not be parsed; the message names the offending value."""


class AddressParseError(InvalidValue):
    """A ``host:port`` address or an NNG URL could not be parsed."""


# ---------------------------------------------------------------- value types


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


def _default_node_id() -> str:
    return f"i-{socket.gethostname()}"


def _random_secret() -> str:
    return secrets.token_urlsafe(32)


# ------------------------------------------------------------------- sections

#: (relative dotted key, problem, offending value) found by a cross-field check.
Problem = tuple[str, str, Any]


class Section(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"
):
    """Base of every config table: immutable, kebab-case keys, unknown keys rejected."""

    def problems(self) -> Iterator[Problem]:
        """Yield the problems no single key's type can express (overridden where needed)."""
        return iter(())


def _tls_problems(enabled: bool, cert: Path | None, key: Path | None) -> Iterator[Problem]:
    if enabled and cert is None:
        yield "ssl-cert", "is required when ssl-enabled is true", _NO_VALUE
    if enabled and key is None:
        yield "ssl-privkey", "is required when ssl-enabled is true", _NO_VALUE


class LogConsoleConfig(Section, frozen=True):
    """``[logging.console]``."""

    colored: bool = True
    format: Literal["simple", "verbose"] = "verbose"


class LogFileConfig(Section, frozen=True):
    """``[logging.file]``: a rotating log file."""

    path: Path = Path("./logs")
    filename: Name = "bai.log"
    backup_count: NonNegativeInt = 10
    rotation_size: BinarySize = BinarySize(10 * 1024 * 1024)

    def problems(self) -> Iterator[Problem]:
        if "/" in self.filename or self.filename in (".", ".."):
            yield (
                "filename",
                "must be a file name, not a path (put the folder in path)",
                (self.filename),
            )
        if self.rotation_size == 0:
            yield "rotation-size", "must be greater than zero", self.rotation_size


class LoggingConfig(Section, frozen=True):
    """``[logging]``: level, drivers and per-logger levels."""

    level: LogLevel = "INFO"
    drivers: tuple[Literal["console", "file"], ...] = ("console",)
    pkg_ns: dict[str, LogLevel] = msgspec.field(
        default_factory=lambda: {"": "WARNING", "bai": "INFO"}
    )
    console: LogConsoleConfig = msgspec.field(default_factory=LogConsoleConfig)
    file: LogFileConfig = msgspec.field(default_factory=LogFileConfig)

    def problems(self) -> Iterator[Problem]:
        for index, driver in enumerate(self.drivers):
            if driver in self.drivers[:index]:
                yield "drivers", f"lists {driver!r} twice", list(self.drivers)


class ManagerLogFileConfig(LogFileConfig, frozen=True):
    """``[logging.file]`` of the manager (default file ``manager.log``)."""

    filename: Name = "manager.log"


class ManagerLoggingConfig(LoggingConfig, frozen=True):
    """``[logging]`` of the manager."""

    file: ManagerLogFileConfig = msgspec.field(default_factory=ManagerLogFileConfig)


class AgentLogFileConfig(LogFileConfig, frozen=True):
    """``[logging.file]`` of the agent (default file ``agent.log``)."""

    filename: Name = "agent.log"


class AgentLoggingConfig(LoggingConfig, frozen=True):
    """``[logging]`` of the agent."""

    file: AgentLogFileConfig = msgspec.field(default_factory=AgentLogFileConfig)


class StorageProxyLogFileConfig(LogFileConfig, frozen=True):
    """``[logging.file]`` of the storage proxy (default file ``storage-proxy.log``)."""

    filename: Name = "storage-proxy.log"


class StorageProxyLoggingConfig(LoggingConfig, frozen=True):
    """``[logging]`` of the storage proxy."""

    file: StorageProxyLogFileConfig = msgspec.field(default_factory=StorageProxyLogFileConfig)


class DebugConfig(Section, frozen=True):
    """``[debug]``."""

    enabled: bool = False
    log_events: bool = False


class AgentDebugConfig(DebugConfig, frozen=True):
    """``[debug]`` of the agent, with its extra logging switches."""

    skip_container_deletion: bool = False
    log_kernel_config: bool = False
    log_alloc_map: bool = False
    log_stats: bool = False
    log_heartbeats: bool = False
    log_docker_events: bool = False


class DbConfig(Section, frozen=True):
    """``[db]``: the manager database (SQLite file or PostgreSQL server)."""

    type: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path = Path("./bai.sqlite3")
    addr: HostPort = HostPort("127.0.0.1", 5432)
    name: Name = "bai"
    user: str = "postgres"
    password: str = ""
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 8
    connect_timeout: Duration = Duration(10.0)


class RedisConfig(Section, frozen=True):
    """``[redis]``: the event bus (in-process channels or Redis Streams)."""

    type: Literal["inproc", "redis"] = "inproc"
    addr: HostPort = HostPort("127.0.0.1", 6379)
    password: str = ""
    db: NonNegativeInt = 0
    connect_timeout: Duration = Duration(10.0)

    @property
    def url(self) -> str:
        """The ``redis://[:password@]host:port/db`` URL of this section."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.addr}/{self.db}"


class ManagerSection(Section, frozen=True):
    """``[manager]``: the API server and the manager's deadlines."""

    id: Name = msgspec.field(default_factory=_default_node_id)
    service_addr: HostPort = HostPort("127.0.0.1", 8081)
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None
    pid_file: Path | None = None
    hide_agents: bool = True
    heartbeat_timeout: Duration = Duration(60.0)
    rpc_timeout: Duration = Duration(30.0)
    kernel_creation_timeout: Duration = Duration(300.0)
    kernel_termination_timeout: Duration = Duration(60.0)
    execute_flush_timeout: Duration = Duration(2.0)
    scheduler_interval: Duration = Duration(3.0)

    def problems(self) -> Iterator[Problem]:
        yield from _tls_problems(self.ssl_enabled, self.ssl_cert, self.ssl_privkey)


class AgentSection(Section, frozen=True):
    """``[agent]``: identity, RPC address and heartbeats of one agent."""

    id: Name = msgspec.field(default_factory=_default_node_id)
    backend: Literal["local", "docker"] = "local"
    rpc_listen_addr: NngAddress = NngAddress("tcp://127.0.0.1:6011")
    rpc_advertise_addr: NngAddress | None = None
    region: Name = "local"
    scaling_group: Name = "default"
    heartbeat_interval: Duration = Duration(20.0)
    pid_file: Path | None = None
    var_base_path: Path = Path("./var/agent")
    ipc_base_path: Path = Path("/tmp/bai/ipc")
    image_catalog: Path | None = None
    allow_compute_plugins: tuple[Name, ...] | None = None


class ContainerConfig(Section, frozen=True):
    """``[container]``: how kernels are started, isolated and measured."""

    port_range: tuple[Port, Port] = (30000, 31000)
    kernel_uid: NonNegativeInt | None = None
    kernel_gid: NonNegativeInt | None = None
    bind_host: Name = "127.0.0.1"
    advertised_host: Name | None = None
    stats_type: Literal["cgroup", "docker"] = "cgroup"
    scratch_type: Literal["hostdir", "memory"] = "hostdir"
    scratch_root: Path = Path("./scratches")
    scratch_size: BinarySize = BinarySize(0)
    kernel_network: Literal["private", "outbound"] = "private"
    docker_socket: Path = Path("/var/run/docker.sock")

    def problems(self) -> Iterator[Problem]:
        low, high = self.port_range
        if low > high:
            yield "port-range", "the first port must not exceed the second", list(self.port_range)


class ResourceConfig(Section, frozen=True):
    """``[resource]``: host capacity kept back from kernels."""

    reserved_cpu: NonNegativeInt = 1
    reserved_mem: BinarySize = BinarySize(1024**3)
    reserved_disk: BinarySize = BinarySize(8 * 1024**3)


class WatcherConfig(Section, frozen=True):
    """``[watcher]``: the optional agent watcher service."""

    service_addr: HostPort = HostPort("127.0.0.1", 6009)
    ssl_enabled: bool = False
    target_service: Name = "bai-agent.service"
    soft_reset_available: bool = False


class StorageProxySection(Section, frozen=True):
    """``[storage-proxy]``: identity and limits of one storage proxy."""

    node_id: Name = msgspec.field(default_factory=_default_node_id)
    pid_file: Path | None = None
    scandir_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    max_upload_size: BinarySize = BinarySize(100 * 1024**3)
    secret: Name = msgspec.field(default_factory=_random_secret)
    session_expire: Duration = Duration(86400.0)
    user: NonNegativeInt | None = None
    group: NonNegativeInt | None = None


class ClientApiConfig(Section, frozen=True):
    """``[api.client]``: the client-facing upload/download API."""

    service_addr: HostPort = HostPort("127.0.0.1", 6021)
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None

    def problems(self) -> Iterator[Problem]:
        yield from _tls_problems(self.ssl_enabled, self.ssl_cert, self.ssl_privkey)


class ManagerApiConfig(Section, frozen=True):
    """``[api.manager]``: the manager-facing API, guarded by a shared secret."""

    service_addr: HostPort = HostPort("127.0.0.1", 6022)
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None
    secret: Name = msgspec.field(default_factory=_random_secret)

    def problems(self) -> Iterator[Problem]:
        yield from _tls_problems(self.ssl_enabled, self.ssl_cert, self.ssl_privkey)


class ApiConfig(Section, frozen=True):
    """``[api]``: the storage proxy's two HTTP APIs."""

    client: ClientApiConfig = msgspec.field(default_factory=ClientApiConfig)
    manager: ManagerApiConfig = msgspec.field(default_factory=ManagerApiConfig)


class VolumeConfig(Section, frozen=True):
    """``[volume.NAME]``: one storage volume."""

    path: Path
    backend: Literal["vfs"] = "vfs"


_VOLUME_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def _default_volumes() -> dict[str, VolumeConfig]:
    return {"local": VolumeConfig(path=Path("./vfroot/local"))}


class DaemonConfig(Section, frozen=True):
    """Base of the three top-level configs; ``FILE_NAME`` is what the search looks for."""

    FILE_NAME: ClassVar[str]


class ManagerConfig(DaemonConfig, frozen=True):
    """``manager.toml``."""

    FILE_NAME: ClassVar[str] = "manager.toml"

    db: DbConfig = msgspec.field(default_factory=DbConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    manager: ManagerSection = msgspec.field(default_factory=ManagerSection)
    logging: ManagerLoggingConfig = msgspec.field(default_factory=ManagerLoggingConfig)
    debug: DebugConfig = msgspec.field(default_factory=DebugConfig)


class AgentConfig(DaemonConfig, frozen=True):
    """``agent.toml``."""

    FILE_NAME: ClassVar[str] = "agent.toml"

    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    container: ContainerConfig = msgspec.field(default_factory=ContainerConfig)
    resource: ResourceConfig = msgspec.field(default_factory=ResourceConfig)
    watcher: WatcherConfig = msgspec.field(default_factory=WatcherConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    logging: AgentLoggingConfig = msgspec.field(default_factory=AgentLoggingConfig)
    debug: AgentDebugConfig = msgspec.field(default_factory=AgentDebugConfig)


class StorageProxyConfig(DaemonConfig, frozen=True):
    """``storage-proxy.toml``."""

    FILE_NAME: ClassVar[str] = "storage-proxy.toml"

    storage_proxy: StorageProxySection = msgspec.field(default_factory=StorageProxySection)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    volume: dict[str, VolumeConfig] = msgspec.field(default_factory=_default_volumes)
    logging: StorageProxyLoggingConfig = msgspec.field(default_factory=StorageProxyLoggingConfig)
    debug: DebugConfig = msgspec.field(default_factory=DebugConfig)

    def problems(self) -> Iterator[Problem]:
        for name in self.volume:
            if not _VOLUME_NAME_RE.fullmatch(name):
                yield (
                    f"volume.{name}",
                    "a volume name is 1-64 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit",
                    name,
                )


_DAEMON_CONFIGS: Final[tuple[type[DaemonConfig], ...]] = (
    ManagerConfig,
    AgentConfig,
    StorageProxyConfig,
)


def _parse_path(value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise InvalidValue("a path must be a non-empty string", value=value)
    return Path(value).expanduser()


def _parse_config_duration(value: object) -> Duration:
    # Every duration in a config is a timeout or an interval, where zero is a mistake.
    duration = parse_duration(value)
    if not duration:
        raise DurationParseError("must be greater than zero", value=value)
    return duration


_CUSTOM_PARSERS: Final[dict[type, Callable[[object], object]]] = {
    Duration: _parse_config_duration,
    BinarySize: BinarySize.parse,
    HostPort: HostPort.parse,
    NngAddress: NngAddress.parse,
    Path: _parse_path,
}


def _dec_hook(kind: type, value: object) -> object:
    parser = _CUSTOM_PARSERS.get(kind)
    if parser is None:
        raise NotImplementedError(kind)
    return parser(value)


# -------------------------------------------------------------------- loading

T = TypeVar("T", bound=DaemonConfig)


@dataclass(frozen=True, slots=True)
class LoadedConfig(Generic[T]):
    """A validated config and where it came from.

    ``path`` is the file used, or ``None`` when no file was found and the
    defaults apply; ``env_overrides`` lists the environment variables applied.
    """

    config: T
    path: Path | None
    env_overrides: tuple[str, ...]

    def describe(self) -> str:
        """One line for the start-up log: which file, which overrides."""
        name = type(self.config).FILE_NAME
        text = f"{name}: {self.path}" if self.path else f"{name}: not found, using defaults"
        if self.env_overrides:
            text += f" (overridden by {', '.join(self.env_overrides)})"
        return text


def search_paths() -> tuple[Path, ...]:
    """The folders searched for config files, in order: ``./``, ``~/.config/bai/``, ``/etc/bai/``.

    Computed on every call, so a changed working directory or ``HOME`` is honoured.
    A working directory that no longer exists, or a user without a home, is
    left out rather than failing the search.
    """
    folders: list[Path] = []
    with contextlib.suppress(OSError):
        folders.append(Path.cwd())
    with contextlib.suppress(RuntimeError):
        folders.append(Path.home() / ".config" / "bai")
    folders.append(Path("/etc/bai"))
    return tuple(folders)


def find_config_file(file_name: str, folders: Sequence[Path] | None = None) -> Path | None:
    """Return the first ``folder/file_name`` that exists, or ``None``.

    *folders* defaults to :func:`search_paths`.  A path that exists but cannot
    be read is still returned, so the loader reports it instead of silently
    falling through to a less specific file.
    """
    for folder in search_paths() if folders is None else folders:
        candidate = folder / file_name
        if candidate.exists():
            return candidate
    return None


def load_config(
    kind: type[T],
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    folders: Sequence[Path] | None = None,
) -> LoadedConfig[T]:
    """Load *kind* from *path* (or the first file found in *folders*) plus *env*.

    *env* defaults to ``os.environ``; *folders* to :func:`search_paths`.  An
    explicit *path* that does not exist is an error; a search that finds
    nothing gives the defaults.  Raises :class:`ConfigError` for every problem.
    """
    file_path = Path(path) if path is not None else find_config_file(kind.FILE_NAME, folders)
    data = b"" if file_path is None else _read_limited(file_path)
    source = str(file_path) if file_path is not None else f"default {kind.FILE_NAME}"
    config, applied = _build(kind, data, source=source, env=os.environ if env is None else env)
    return LoadedConfig(config=config, path=file_path, env_overrides=applied)


def parse_config(
    kind: type[T],
    data: str | bytes,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
) -> T:
    """Validate TOML *data* as *kind*; *env* (default: none) overrides keys.

    Raises :class:`ConfigError` naming *source*.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", source=source)
    config, _ = _build(kind, raw, source=source, env=env or {})
    return config


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror or exc}", source=str(path)
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", source=str(path))
    return data


def _build(
    kind: type[T], data: bytes, *, source: str, env: Mapping[str, str]
) -> tuple[T, tuple[str, ...]]:
    raw = _parse_toml(data, source)
    overrides = _apply_env(kind, raw, env, source)
    blame = _Blame(source, overrides)
    try:
        config = msgspec.convert(raw, type=kind, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _translate(kind, raw, exc, blame) from None
    first = next(_walk_problems(config, ""), None)
    if first is not None:
        key, problem, value = first
        raise ConfigError(problem, source=blame.source_of(key), key=key, value=value)
    return config, tuple(overrides)


def _parse_toml(data: bytes, source: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", source=source, line=line
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        if found is None:
            raise ConfigError(f"TOML syntax error: {message}", source=source) from None
        line = int(found[1])
        lines = text.splitlines()
        offending = lines[line - 1] if line <= len(lines) else ""
        raise ConfigError(
            f"TOML syntax error: {message}", source=source, line=line, value=offending
        ) from None
    except RecursionError:
        raise ConfigError("TOML values are nested too deeply", source=source) from None


# ----------------------------------------------------------- error reporting


class _Blame:
    """Decides whether a bad key came from the file or from an environment variable."""

    def __init__(self, source: str, overrides: dict[str, str]) -> None:
        self.source = source
        self.overrides = overrides

    def source_of(self, key: str) -> str:
        for name, env_key in self.overrides.items():
            if key == env_key or key.startswith((env_key + ".", env_key + "[")):
                return f"environment variable {name}"
            if env_key.startswith(key + "."):
                return f"environment variable {name}"
        if self.overrides:
            return f"{self.source} (with {', '.join(self.overrides)})"
        return self.source


_PATH_TOKEN_RE: Final = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_MSGSPEC_ERROR_RE: Final = re.compile(r"(?s)(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?")
_UNKNOWN_RE: Final = re.compile(r"(?s)Object contains unknown field `(?P<name>.*)`")
_MISSING_RE: Final = re.compile(r"(?s)Object missing required field `(?P<name>.*)`")

#: Keys of the Backend.AI samples that bai deliberately does not have.
_RETIRED_KEYS: Final = {
    "etcd": "bai has no etcd: the shared configuration lives in the manager database",
    "agent.mode": "the kernel backend is chosen with agent.backend ('local' or 'docker')",
    "event-loop": "bai daemons always run on Trio",
    "num-proc": "each bai daemon is one Trio process",
    "enhanced-aiomonitor-task-info": "bai does not use aiomonitor",
    "asyncio": "bai daemons always run on Trio",
}


def _translate(
    kind: type[DaemonConfig], raw: dict[str, Any], exc: msgspec.ValidationError, blame: _Blame
) -> ConfigError:
    match = _MSGSPEC_ERROR_RE.fullmatch(str(exc))
    assert match is not None  # the pattern matches any text
    tokens: list[str | int] = []
    for name, index in _PATH_TOKEN_RE.findall(match["path"] or ""):
        tokens.append(name if name else ("..." if index == "..." else int(index)))
    path = _resolve_dict_keys(kind, raw, tokens)
    problem = match["problem"]
    value: Any = _NO_VALUE
    unknown = _UNKNOWN_RE.fullmatch(problem)
    missing = _MISSING_RE.fullmatch(problem)
    if unknown:
        path.append(unknown["name"])
        problem = _unknown_key_problem(kind, path)
    elif missing:
        path.append(missing["name"])
        problem = "is required but missing"
    else:
        cause = exc.__cause__
        if isinstance(cause, InvalidValue):
            problem = cause.problem
        else:
            problem = _rephrase(problem, _type_at(kind, path))
        value = _lookup(raw, path)
    key = _format_key(path)
    return ConfigError(problem, source=blame.source_of(key), key=key or None, value=value)


def _format_key(path: Sequence[str | int]) -> str:
    key = ""
    for token in path:
        if isinstance(token, int):
            key += f"[{token}]"
        else:
            key += f".{token}" if key else token
    return key


def _lookup(raw: Any, path: Sequence[str | int]) -> Any:
    for token in path:
        in_table = isinstance(raw, dict) and isinstance(token, str) and token in raw
        in_array = isinstance(raw, list) and isinstance(token, int) and token < len(raw)
        if not (in_table or in_array):
            return _NO_VALUE
        raw = raw[token]
    return raw


def _resolve_dict_keys(
    kind: type[DaemonConfig], raw: dict[str, Any], tokens: list[str | int]
) -> list[str | int]:
    """Replace msgspec's ``[...]`` (an unnamed dict key) with the key that fails.

    Each entry of the table is converted alone; the first one that reproduces
    an error inside the table is the culprit.
    """
    resolved: list[str | int] = []
    for token in tokens:
        table = _lookup(raw, resolved)
        in_tables = all(isinstance(step, str) for step in resolved)
        if token == "..." and in_tables and isinstance(table, dict):
            prefix = _format_key(resolved)
            for name, value in table.items():
                trial = _replace_at(raw, resolved, {name: value})
                try:
                    msgspec.convert(trial, type=kind, dec_hook=_dec_hook)
                except msgspec.ValidationError as exc:
                    match = _MSGSPEC_ERROR_RE.fullmatch(str(exc))
                    if match and (match["path"] or "").startswith(f".{prefix}[...]"):
                        token = name
                        break
        resolved.append(token)
    return resolved


def _replace_at(raw: dict[str, Any], path: Sequence[str | int], value: Any) -> dict[str, Any]:
    if not path:
        return value  # type: ignore[no-any-return]
    head = path[0]
    copied = dict(raw)
    copied[str(head)] = _replace_at(raw[str(head)], path[1:], value)
    return copied


def _unknown_key_problem(kind: type[DaemonConfig], path: Sequence[str | int]) -> str:
    key = _format_key(path)
    name = str(path[-1])
    hint = _RETIRED_KEYS.get(key) or _RETIRED_KEYS.get(name)
    if hint:
        return f"unknown key ({hint})"
    known = _struct_fields_at(kind, path[:-1])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return "unknown key"


def _struct_fields_at(kind: type[DaemonConfig], path: Sequence[str | int]) -> list[str]:
    spec = _type_at(kind, path)
    return [f.encode_name for f in spec.fields] if isinstance(spec, mi.StructType) else []


def _type_at(kind: type[DaemonConfig], path: Sequence[str | int]) -> mi.Type | None:
    """The schema type at a resolved *path*, or ``None`` where the path leaves the schema."""
    spec: mi.Type | None = mi.type_info(kind)
    for token in path:
        spec = _unwrap_optional(spec) if spec is not None else None
        if isinstance(spec, mi.StructType):
            spec = next((f.type for f in spec.fields if f.encode_name == token), None)
        elif isinstance(spec, mi.DictType):
            spec = spec.value_type
        elif isinstance(spec, mi.VarTupleType | mi.ListType):
            spec = spec.item_type
        elif isinstance(spec, mi.TupleType) and isinstance(token, int):
            spec = spec.item_types[token] if token < len(spec.item_types) else None
        else:
            return None
    return _unwrap_optional(spec) if spec is not None else None


def _rephrase(problem: str, spec: mi.Type | None) -> str:
    """Turn msgspec's wording into the words of a TOML file."""
    if isinstance(spec, mi.LiteralType) and problem.startswith("Invalid enum value"):
        return "must be one of " + ", ".join(repr(v) for v in spec.values)
    problem = problem.replace("`", "").replace("object", "table")
    return problem[:1].lower() + problem[1:]


def _unwrap_optional(spec: mi.Type) -> mi.Type:
    if isinstance(spec, mi.UnionType):
        members = [t for t in spec.types if not isinstance(t, mi.NoneType)]
        if len(members) == 1:
            return members[0]
    return spec


def _walk_problems(node: msgspec.Struct, prefix: str) -> Iterator[Problem]:
    join: Callable[[str], str] = lambda key: f"{prefix}.{key}" if prefix else key  # noqa: E731
    if isinstance(node, Section):
        for key, problem, value in node.problems():
            yield join(key), problem, value
    for field in msgspec.structs.fields(node):
        child = getattr(node, field.name)
        if isinstance(child, msgspec.Struct):
            yield from _walk_problems(child, join(field.encode_name))
        elif isinstance(child, dict):
            for name, item in child.items():
                if isinstance(item, msgspec.Struct):
                    yield from _walk_problems(item, join(f"{field.encode_name}.{name}"))


# --------------------------------------------------------- environment overrides

_ENV_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")


def _all_sections() -> frozenset[str]:
    return frozenset(
        field.encode_name for kind in _DAEMON_CONFIGS for field in msgspec.structs.fields(kind)
    )


_ALL_SECTIONS: Final = _all_sections()


def _normalize(segment: str) -> str:
    return segment.lower().replace("_", "-")


def _apply_env(
    kind: type[DaemonConfig], raw: dict[str, Any], env: Mapping[str, str], source: str
) -> dict[str, str]:
    """Write every ``BAI_<SECTION>__<KEY>`` variable meant for *kind* into *raw*.

    Returns ``{variable: dotted key}`` of the variables applied.  A variable
    naming a section of another daemon (``BAI_DB__ADDR`` seen by the agent) is
    skipped; one naming no daemon's section, or an unknown key, is an error.
    """
    applied: dict[str, str] = {}
    own = {field.encode_name for field in msgspec.structs.fields(kind)}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        where = f"environment variable {name}"
        segments = name[len(ENV_PREFIX) :].split("__")
        if not all(_ENV_SEGMENT_RE.fullmatch(segment) for segment in segments):
            raise ConfigError(
                "malformed override name (expected BAI_<SECTION>__<KEY>)", source=where
            )
        section = _normalize(segments[0])
        if section not in own:
            if section in _ALL_SECTIONS:
                continue
            raise ConfigError(
                f"unknown section (known: {', '.join(sorted(_ALL_SECTIONS))})",
                source=where,
                key=section,
            )
        key = _set_override(kind, raw, segments, env[name], where, source)
        applied[name] = key
    return applied


def _set_override(
    kind: type[DaemonConfig],
    raw: dict[str, Any],
    segments: Sequence[str],
    text: str,
    where: str,
    source: str,
) -> str:
    spec: mi.Type = mi.type_info(kind)
    node = raw
    path: list[str] = []
    for position, segment in enumerate(segments):
        spec = _unwrap_optional(spec)
        if isinstance(spec, mi.StructType):
            wanted = _normalize(segment)
            field = next((f for f in spec.fields if f.encode_name == wanted), None)
            if field is None:
                path.append(wanted)
                raise ConfigError(
                    _unknown_key_problem(kind, path), source=where, key=_format_key(path)
                )
            key, spec = field.encode_name, field.type
            if key not in node and isinstance(_unwrap_optional(spec), mi.DictType):
                # Overriding one entry keeps the default entries beside it.
                node[key] = _default_as_toml(field)
        elif isinstance(spec, mi.DictType):
            key = _match_dict_key(node, segment)
            spec = spec.value_type
        else:
            raise ConfigError("this key has no sub-keys", source=where, key=_format_key(path))
        path.append(key)
        if position == len(segments) - 1:
            node[key] = _env_value(spec, text, where, _format_key(path))
            return _format_key(path)
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError("must be a table", source=source, key=_format_key(path), value=child)
        node = child
    raise AssertionError("unreachable: segments is never empty")


def _default_as_toml(field: mi.Field) -> Any:
    default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    return msgspec.to_builtins(default, enc_hook=str)


def _match_dict_key(table: dict[str, Any], segment: str) -> str:
    # Environment names cannot hold '-' or lower case, so match existing keys loosely.
    wanted = _normalize(segment)
    for key in table:
        if _normalize(key) == wanted:
            return key
    return wanted


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _env_value(spec: mi.Type, text: str, where: str, key: str) -> Any:
    spec = _unwrap_optional(spec)
    if isinstance(spec, mi.BoolType):
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError("expected true or false", source=where, key=key, value=text)
    if isinstance(spec, mi.IntType):
        if re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", text):
            return int(text)
        raise ConfigError("expected an integer", source=where, key=key, value=text)
    if isinstance(spec, mi.FloatType):
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
        raise ConfigError("expected a finite number", source=where, key=key, value=text)
    if isinstance(spec, mi.ListType | mi.VarTupleType | mi.TupleType):
        if text.lstrip().startswith("["):
            return _toml_value(text, where, key)
        items = [item.strip() for item in text.split(",")] if text.strip() else []
        if isinstance(spec, mi.TupleType):
            if len(items) != len(spec.item_types):
                raise ConfigError(
                    f"expected {len(spec.item_types)} comma-separated values",
                    source=where,
                    key=key,
                    value=text,
                )
            return [
                _env_value(item_type, item, where, key)
                for item_type, item in zip(spec.item_types, items, strict=True)
            ]
        return [_env_value(spec.item_type, item, where, key) for item in items]
    if isinstance(spec, mi.DictType | mi.StructType):
        return _toml_value(text, where, key)
    return text


def _toml_value(text: str, where: str, key: str) -> Any:
    try:
        parsed = tomllib.loads(f"value = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        parsed = {}
    if set(parsed) != {"value"}:
        raise ConfigError(
            'expected a TOML value (e.g. ["a", "b"] or { key = 1 })',
            source=where,
            key=key,
            value=text,
        )
    return parsed["value"]
