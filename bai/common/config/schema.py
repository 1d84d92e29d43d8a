"""The daemons' config structs: one frozen msgspec struct per TOML table, with defaults."""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal
from urllib.parse import quote

import msgspec

from bai.common.config.errors import DurationParseError
from bai.common.config.values import (
    Duration,
    HostPort,
    LogLevel,
    Name,
    NngAddress,
    NonNegativeInt,
    Port,
    parse_duration,
)
from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize
from bai.common.validation import NO_VALUE

__all__ = [
    "DAEMON_CONFIGS",
    "AgentConfig",
    "AgentDebugConfig",
    "AgentLogFileConfig",
    "AgentLoggingConfig",
    "AgentSection",
    "ApiConfig",
    "AppProxyConfig",
    "AppProxyLogFileConfig",
    "AppProxyLoggingConfig",
    "AppProxySection",
    "ClientApiConfig",
    "ContainerConfig",
    "DaemonConfig",
    "DbConfig",
    "DebugConfig",
    "LogConsoleConfig",
    "LogFileConfig",
    "LoggingConfig",
    "ManagerApiConfig",
    "ManagerConfig",
    "ManagerLogFileConfig",
    "ManagerLoggingConfig",
    "ManagerSection",
    "Problem",
    "RedisConfig",
    "ResourceConfig",
    "Section",
    "StorageProxyConfig",
    "StorageProxyLogFileConfig",
    "StorageProxyLoggingConfig",
    "StorageProxySection",
    "VolumeConfig",
    "WatcherConfig",
    "WebserverApiSection",
    "WebserverConfig",
    "WebserverLogFileConfig",
    "WebserverLoggingConfig",
    "WebserverSection",
    "WebserverSessionSection",
    "dec_hook",
]


def _default_node_id() -> str:
    return f"i-{socket.gethostname()}"


def _random_secret() -> str:
    return secrets.token_urlsafe(32)


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
        yield "ssl-cert", "is required when ssl-enabled is true", NO_VALUE
    if enabled and key is None:
        yield "ssl-privkey", "is required when ssl-enabled is true", NO_VALUE


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


class AppProxyLogFileConfig(LogFileConfig, frozen=True):
    """``[logging.file]`` of the app proxy (default file ``app-proxy.log``)."""

    filename: Name = "app-proxy.log"


class AppProxyLoggingConfig(LoggingConfig, frozen=True):
    """``[logging]`` of the app proxy."""

    file: AppProxyLogFileConfig = msgspec.field(default_factory=AppProxyLogFileConfig)


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
    lost_agent_grace: Duration = Duration(120.0)
    rpc_timeout: Duration = Duration(30.0)
    kernel_creation_timeout: Duration = Duration(300.0)
    kernel_termination_timeout: Duration = Duration(60.0)
    execute_flush_timeout: Duration = Duration(2.0)
    scheduler_interval: Duration = Duration(3.0)
    max_proxied_connections: Annotated[int, msgspec.Meta(ge=1)] = 256
    # Accounts (``/auth``): self-service sign-up is off unless asked for; after
    # ``login_allowed_fail_count`` failed password logins in a row an account's password
    # login is blocked for ``login_block_time``; a password older than
    # ``max_password_age`` (unset: never) must be changed through
    # ``/auth/update-password-no-auth`` before the normal login works again.
    allow_signup: bool = False
    login_block_time: Duration = Duration(1200.0)
    login_allowed_fail_count: Annotated[int, msgspec.Meta(ge=1)] = 10
    max_password_age: Duration | None = None

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
    #: Where to serve ``GET /metrics`` (Prometheus text); None serves none.
    metrics_addr: HostPort | None = None


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
    """``[watcher]``: the optional agent watcher service (``bai watcher``)."""

    service_addr: HostPort = HostPort("127.0.0.1", 6009)
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None
    #: ``process``: the watcher runs ``bai agent`` itself; ``systemd``: it drives
    #: ``target_service`` with ``systemctl``.
    control: Literal["process", "systemd"] = "process"
    target_service: Name = "bai-agent.service"
    soft_reset_available: bool = False
    #: What managers present in ``X-BackendAI-Watcher-Token`` (the shared config's
    #: ``config/watcher/token``); the watcher refuses to start without one.
    token: Name | None = None

    def problems(self) -> Iterator[Problem]:
        yield from _tls_problems(self.ssl_enabled, self.ssl_cert, self.ssl_privkey)


class StorageProxySection(Section, frozen=True):
    """``[storage-proxy]``: identity and limits of one storage proxy."""

    node_id: Name = msgspec.field(default_factory=_default_node_id)
    pid_file: Path | None = None
    scandir_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    max_upload_size: BinarySize = BinarySize(100 * 1024**3)
    secret: Name = msgspec.field(default_factory=_random_secret)
    session_expire: Duration = Duration(86400.0)
    usage_scan_interval: Duration = Duration(300.0)
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


_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})


class AppProxySection(Section, frozen=True):
    """``[appproxy]``: the app proxy's API, its mode and its app listeners.

    In ``port`` mode every app gets a port of ``port-range`` on
    ``bind-host``; in ``wildcard`` mode every app gets a host name under
    ``wildcard-domain``, all served by one listener on
    ``bind-host:wildcard-port``.
    """

    service_addr: HostPort = HostPort("127.0.0.1", 10200)
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None
    secret: Name = msgspec.field(default_factory=_random_secret)
    mode: Literal["port", "wildcard"] = "port"
    bind_host: Name = "127.0.0.1"
    advertised_host: Name | None = None
    advertised_scheme: Literal["http", "https"] = "http"
    port_range: tuple[Port, Port] = (10205, 10300)
    wildcard_domain: Name | None = None
    wildcard_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 10201
    advertised_port: Port | None = None
    idle_timeout: Duration = Duration(3600.0)
    max_connections_per_route: Annotated[int, msgspec.Meta(ge=1)] = 256
    pid_file: Path | None = None

    def problems(self) -> Iterator[Problem]:
        yield from _tls_problems(self.ssl_enabled, self.ssl_cert, self.ssl_privkey)
        low, high = self.port_range
        if low > high:
            yield "port-range", "the first port must not exceed the second", list(self.port_range)
        if self.mode == "wildcard":
            domain = self.wildcard_domain
            if domain is None:
                yield "wildcard-domain", 'is required when mode is "wildcard"', NO_VALUE
            elif len(domain) > 200 or not all(
                _DNS_LABEL_RE.fullmatch(label) for label in domain.split(".")
            ):
                yield (
                    "wildcard-domain",
                    "must be a lowercase DNS name (letters, digits and '-' between dots)",
                    domain,
                )
        elif self.advertised_host is None and self.bind_host in _WILDCARD_HOSTS:
            yield (
                "advertised-host",
                "is required when bind-host listens on every address: "
                "browsers need a name or address to reach the apps at",
                NO_VALUE,
            )


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


class AppProxyConfig(DaemonConfig, frozen=True):
    """``app-proxy.toml``."""

    FILE_NAME: ClassVar[str] = "app-proxy.toml"

    appproxy: AppProxySection = msgspec.field(default_factory=AppProxySection)
    logging: AppProxyLoggingConfig = msgspec.field(default_factory=AppProxyLoggingConfig)
    debug: DebugConfig = msgspec.field(default_factory=DebugConfig)


class WebserverLogFileConfig(LogFileConfig, frozen=True):
    """``[logging.file]`` of the webserver (default file ``webserver.log``)."""

    filename: Name = "webserver.log"


class WebserverLoggingConfig(LoggingConfig, frozen=True):
    """``[logging]`` of the webserver."""

    file: WebserverLogFileConfig = msgspec.field(default_factory=WebserverLogFileConfig)


class WebserverSection(Section, frozen=True):
    """``[webserver]``: where the console server listens."""

    service_addr: HostPort = HostPort("127.0.0.1", 8080)
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None
    pid_file: Path | None = None

    def problems(self) -> Iterator[Problem]:
        yield from _tls_problems(self.ssl_enabled, self.ssl_cert, self.ssl_privkey)


_HTTP_URL_RE: Final = re.compile(r"https?://[^/\s?#]+/?", re.ASCII)


class WebserverApiSection(Section, frozen=True):
    """``[api]``: the manager API the webserver relays to, and the users' domain."""

    endpoint: str = "http://127.0.0.1:8081"
    domain: Name = "default"
    ssl_verify: bool = True
    connect_timeout: Duration = Duration(10.0)

    def problems(self) -> Iterator[Problem]:
        if not _HTTP_URL_RE.fullmatch(self.endpoint):
            yield "endpoint", "must be an http:// or https:// URL without a path", self.endpoint


class WebserverSessionSection(Section, frozen=True):
    """``[session]``: login sessions (kept where ``[redis]`` says) and login blocking.

    A session ends ``max-age`` after the login; a user name that failed
    ``login-allowed-fail-count`` logins in a row, each within
    ``login-block-time`` of the one before, is refused until that time passed.
    """

    max_age: Duration = Duration(604800.0)
    login_block_time: Duration = Duration(1200.0)
    login_allowed_fail_count: Annotated[int, msgspec.Meta(ge=1)] = 10
    flush_on_startup: bool = False
    cookie_secure: bool = False


class WebserverConfig(DaemonConfig, frozen=True):
    """``webserver.toml``: the console server (session mode)."""

    FILE_NAME: ClassVar[str] = "webserver.toml"

    webserver: WebserverSection = msgspec.field(default_factory=WebserverSection)
    api: WebserverApiSection = msgspec.field(default_factory=WebserverApiSection)
    session: WebserverSessionSection = msgspec.field(default_factory=WebserverSessionSection)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    logging: WebserverLoggingConfig = msgspec.field(default_factory=WebserverLoggingConfig)
    debug: DebugConfig = msgspec.field(default_factory=DebugConfig)


#: Every daemon's config class.
DAEMON_CONFIGS: Final[tuple[type[DaemonConfig], ...]] = (
    ManagerConfig,
    AgentConfig,
    StorageProxyConfig,
    AppProxyConfig,
    WebserverConfig,
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


def dec_hook(kind: type, value: object) -> object:
    """msgspec's ``dec_hook``: parse a TOML value into a config value type."""
    parser = _CUSTOM_PARSERS.get(kind)
    if parser is None:
        raise NotImplementedError(kind)
    return parser(value)
