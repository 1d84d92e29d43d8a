"""Typed TOML configuration for the manager, the agent, the storage proxy and the app proxy.

Each daemon has one config class (:class:`ManagerConfig`, :class:`AgentConfig`,
:class:`StorageProxyConfig`, :class:`AppProxyConfig`) made of frozen
:mod:`msgspec` structs.  TOML keys are kebab-case as in the Backend.AI samples
(``heartbeat-interval``); the Python attributes are the same names in
snake_case (``heartbeat_interval``).

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

The package's modules, each imported only by the ones after it: ``errors``
(the exceptions), ``values`` (durations, addresses), ``schema`` (the structs),
``blame`` (error reporting), ``env`` (``BAI_*`` overrides), ``loader``.
"""

from __future__ import annotations

from bai.common.config.env import ENV_PREFIX
from bai.common.config.errors import AddressParseError, ConfigError, DurationParseError
from bai.common.config.loader import (
    MAX_CONFIG_BYTES,
    LoadedConfig,
    find_config_file,
    load_config,
    parse_config,
    search_paths,
)
from bai.common.config.schema import (
    AgentConfig,
    AgentDebugConfig,
    AgentLogFileConfig,
    AgentLoggingConfig,
    AgentSection,
    ApiConfig,
    AppProxyConfig,
    AppProxyLogFileConfig,
    AppProxyLoggingConfig,
    AppProxySection,
    ClientApiConfig,
    ContainerConfig,
    DaemonConfig,
    DbConfig,
    DebugConfig,
    LogConsoleConfig,
    LogFileConfig,
    LoggingConfig,
    ManagerApiConfig,
    ManagerConfig,
    ManagerLogFileConfig,
    ManagerLoggingConfig,
    ManagerSection,
    Problem,
    RedisConfig,
    ResourceConfig,
    Section,
    StorageProxyConfig,
    StorageProxyLogFileConfig,
    StorageProxyLoggingConfig,
    StorageProxySection,
    VolumeConfig,
    WatcherConfig,
    WebserverConfig,
)
from bai.common.config.values import (
    MAX_DURATION_SECONDS,
    MAX_DURATION_TEXT,
    Duration,
    HostPort,
    LogLevel,
    Name,
    NngAddress,
    NonNegativeInt,
    Port,
    parse_duration,
)

__all__ = [
    "ENV_PREFIX",
    "MAX_CONFIG_BYTES",
    "MAX_DURATION_SECONDS",
    "MAX_DURATION_TEXT",
    "AddressParseError",
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
    "ConfigError",
    "ContainerConfig",
    "DaemonConfig",
    "DbConfig",
    "DebugConfig",
    "Duration",
    "DurationParseError",
    "HostPort",
    "LoadedConfig",
    "LogConsoleConfig",
    "LogFileConfig",
    "LogLevel",
    "LoggingConfig",
    "ManagerApiConfig",
    "ManagerConfig",
    "ManagerLogFileConfig",
    "ManagerLoggingConfig",
    "ManagerSection",
    "Name",
    "NngAddress",
    "NonNegativeInt",
    "Port",
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
    "WebserverConfig",
    "find_config_file",
    "load_config",
    "parse_config",
    "parse_duration",
    "search_paths",
]
