"""Loading, validating and overriding the daemons' TOML configs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bai.common.config import (
    MAX_CONFIG_BYTES,
    AgentConfig,
    AppProxyConfig,
    ConfigError,
    DaemonConfig,
    Duration,
    DurationParseError,
    HostPort,
    ManagerConfig,
    NngAddress,
    StorageProxyConfig,
    WebserverConfig,
    find_config_file,
    load_config,
    parse_config,
    parse_duration,
    search_paths,
)
from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs"
KINDS: list[type[DaemonConfig]] = [
    ManagerConfig,
    AgentConfig,
    StorageProxyConfig,
    AppProxyConfig,
    WebserverConfig,
]


def bad(kind: type[DaemonConfig], text: str | bytes, **env: str) -> ConfigError:
    """Parse *text* expecting a ConfigError, and return it."""
    with pytest.raises(ConfigError) as info:
        parse_config(kind, text, source="test.toml", env=env)
    return info.value


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("500ms", 0.5),
        ("5s500ms", 5.5),
        ("2w", 1209600.0),
        ("30s", 30.0),
        ("0", 0.0),
        ("30", 30.0),
        ("1.5", 1.5),
        ("1.5h", 5400.0),
        (" 20s ", 20.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_duration_accepts(text: str | int | float, seconds: float) -> None:
    parsed = parse_duration(text)
    assert isinstance(parsed, Duration)
    assert parsed == seconds


@pytest.mark.parametrize(
    "value",
    [
        "-1s",
        "-5",
        -1,
        -0.5,
        "1e999",
        1e999,
        "NaN",
        "nan",
        float("nan"),
        "inf",
        float("inf"),
        "",
        "s",
        "10x",
        "10M",
        "30m1h",
        "1m1m",
        "1.5.5s",
        "1" * 65,
        10**30,
        "200000w",
        True,
        None,
        [10],
    ],
)
def test_duration_rejects(value: object) -> None:
    with pytest.raises(DurationParseError) as info:
        parse_duration(value)
    assert isinstance(info.value, InvalidValue)
    assert repr(value)[:20] in str(info.value)


# ------------------------------------------------------------- address types


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("db.example:5432", "db.example", 5432),
        ("[::1]:8081", "::1", 8081),
        ({"host": "10.0.0.1", "port": 0}, "10.0.0.1", 0),
    ],
)
def test_host_port_forms(value: object, host: str, port: int) -> None:
    parsed = HostPort.parse(value)
    assert (parsed.host, parsed.port) == (host, port)
    assert HostPort.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "localhost",
        "host:",
        "host:65536",
        "host:-1",
        ":80",
        "::1:80",
        "[zz::1]:80",
        "a b:80",
        {"host": "x"},
        {"host": "x", "port": "80"},
        {"host": "x", "port": True},
        {"host": "x", "port": 1, "tls": True},
        8080,
    ],
)
def test_host_port_rejects(value: object) -> None:
    with pytest.raises(InvalidValue):
        HostPort.parse(value)


def test_nng_address_forms() -> None:
    assert NngAddress.parse("ipc:///tmp/bai/agent.sock") == "ipc:///tmp/bai/agent.sock"
    assert NngAddress.parse("inproc://agent") == "inproc://agent"
    assert NngAddress.parse({"host": "10.0.0.5", "port": 6001}) == "tcp://10.0.0.5:6001"
    for wrong in ("http://x:1", "tcp://nohost", "tcp://", "6011", "ipc://", "tcp://a b:1"):
        with pytest.raises(InvalidValue):
            NngAddress.parse(wrong)


# ---------------------------------------------------------- defaults, samples


def test_empty_file_gives_embedded_defaults() -> None:
    manager = parse_config(ManagerConfig, "")
    assert manager.db.type == "sqlite"
    assert manager.redis.type == "inproc"
    assert manager.manager.id.startswith("i-")
    assert manager.logging.file.filename == "manager.log"
    agent = parse_config(AgentConfig, "\n# only a comment\n")
    assert agent.agent.heartbeat_interval == 20.0
    assert agent.agent.backend == "local"
    assert agent.resource.reserved_mem == BinarySize(1024**3)
    assert agent.logging.file.filename == "agent.log"
    proxy = parse_config(StorageProxyConfig, b"")
    assert list(proxy.volume) == ["local"]
    assert proxy.volume["local"].backend == "vfs"
    assert proxy.api.manager.secret
    assert proxy.logging.file.filename == "storage-proxy.log"


def test_config_is_immutable() -> None:
    config = parse_config(AgentConfig, "")
    with pytest.raises(AttributeError):
        config.agent.id = "other"  # type: ignore[misc]


def test_sample_manager_config_loads() -> None:
    loaded = load_config(ManagerConfig, CONFIGS / "manager.toml", env={})
    config = loaded.config
    assert config.db.type == "postgresql"
    assert config.db.addr == HostPort("127.0.0.1", 5432)
    assert config.redis.type == "redis"
    assert config.redis.addr == HostPort("127.0.0.1", 6379)
    assert config.manager.service_addr == HostPort("0.0.0.0", 8081)
    assert config.manager.heartbeat_timeout == 60.0
    assert config.manager.kernel_creation_timeout == 300.0
    assert config.logging.drivers == ("console", "file")
    assert config.logging.file.rotation_size == 10 * 1024 * 1024
    assert loaded.path == CONFIGS / "manager.toml"


def test_sample_agent_config_loads() -> None:
    config = load_config(AgentConfig, CONFIGS / "agent.toml", env={}).config
    assert config.agent.rpc_listen_addr == "tcp://0.0.0.0:6011"
    assert config.agent.heartbeat_interval == 20.0
    assert config.agent.allow_compute_plugins == ("cpu", "mem", "mock", "cuda")
    assert config.container.port_range == (30000, 31000)
    assert config.container.scratch_size == 1024**3
    assert config.resource.reserved_disk == 8 * 1024**3
    assert config.watcher.service_addr.port == 6009


def test_sample_storage_proxy_config_loads() -> None:
    config = load_config(StorageProxyConfig, CONFIGS / "storage-proxy.toml", env={}).config
    assert config.storage_proxy.max_upload_size == 100 * 1024**3
    assert config.storage_proxy.session_expire == 86400.0
    assert config.api.client.service_addr.port == 6021
    assert config.api.manager.secret.startswith("change-me")
    assert config.volume["local"].path == Path("vfroot/local")


def test_spec_style_tables_are_accepted() -> None:
    config = parse_config(
        AgentConfig,
        '[agent]\nrpc-listen-addr = { host = "10.20.30.10", port = 6001 }\n'
        "[container]\nkernel-uid = 1100\n",
    )
    assert config.agent.rpc_listen_addr == "tcp://10.20.30.10:6001"
    assert config.container.kernel_uid == 1100


def test_paths_expand_the_home_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config(ManagerConfig, '[db]\npath = "~/bai.db"\n')
    assert config.db.path == tmp_path / "bai.db"


# ------------------------------------------------------------- search paths


@pytest.fixture
def cwd_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    cwd = tmp_path / "work"
    home = tmp_path / "home"
    (home / ".config" / "bai").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    return cwd, home / ".config" / "bai"


def test_search_paths_order(cwd_and_home: tuple[Path, Path]) -> None:
    cwd, home_config = cwd_and_home
    assert search_paths() == (cwd, home_config, Path("/etc/bai"))


def test_working_directory_wins_over_home(cwd_and_home: tuple[Path, Path]) -> None:
    cwd, home_config = cwd_and_home
    (cwd / "agent.toml").write_text('[agent]\nregion = "from-cwd"\n')
    (home_config / "agent.toml").write_text('[agent]\nregion = "from-home"\n')
    loaded = load_config(AgentConfig, env={})
    assert loaded.config.agent.region == "from-cwd"
    assert loaded.path == cwd / "agent.toml"
    assert str(cwd / "agent.toml") in loaded.describe()


def test_home_config_is_used_when_cwd_has_none(cwd_and_home: tuple[Path, Path]) -> None:
    _, home_config = cwd_and_home
    (home_config / "agent.toml").write_text('[agent]\nregion = "from-home"\n')
    loaded = load_config(AgentConfig, env={})
    assert loaded.config.agent.region == "from-home"
    assert loaded.path == home_config / "agent.toml"


def test_no_file_found_gives_defaults(cwd_and_home: tuple[Path, Path]) -> None:
    # /etc/bai is left out so a file installed on the test machine cannot interfere.
    loaded = load_config(ManagerConfig, env={}, folders=search_paths()[:2])
    assert loaded.path is None
    assert loaded.config.db.type == "sqlite"
    assert "not found, using defaults" in loaded.describe()


def test_explicit_path_beats_the_search(cwd_and_home: tuple[Path, Path], tmp_path: Path) -> None:
    cwd, _ = cwd_and_home
    (cwd / "manager.toml").write_text('[db]\nname = "from-cwd"\n')
    explicit = tmp_path / "elsewhere.toml"
    explicit.write_text('[db]\nname = "explicit"\n')
    loaded = load_config(ManagerConfig, str(explicit), env={})
    assert loaded.config.db.name == "explicit"
    assert loaded.path == explicit


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="file not found") as info:
        load_config(ManagerConfig, missing, env={})
    assert str(missing) in str(info.value)


def test_unreadable_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(ManagerConfig, tmp_path, env={})
    assert str(tmp_path) in str(info.value)


def test_find_config_file_reports_a_folder_in_the_way(tmp_path: Path) -> None:
    # A path that exists but is not readable must not fall through to a later folder.
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "agent.toml").mkdir(parents=True)
    second.mkdir()
    (second / "agent.toml").write_text("")
    assert find_config_file("agent.toml", [first, second]) == first / "agent.toml"
    with pytest.raises(ConfigError):
        load_config(AgentConfig, env={}, folders=[first, second])


# ------------------------------------------------------ environment overrides


def test_env_overrides_file_values(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nheartbeat-interval = "20s"\nregion = "file"\n')
    loaded = load_config(
        AgentConfig,
        path,
        env={
            "BAI_AGENT__HEARTBEAT_INTERVAL": "1s",
            "BAI_CONTAINER__PORT_RANGE": "40000, 40100",
            "BAI_RESOURCE__RESERVED_MEM": "512M",
            "BAI_DEBUG__LOG_STATS": "true",
            "BAI_AGENT__ALLOW_COMPUTE_PLUGINS": '["cpu", "mem"]',
            "BAI_REDIS__ADDR": "redis.example:6380",
        },
    )
    config = loaded.config
    assert config.agent.heartbeat_interval == 1.0
    assert config.agent.region == "file"
    assert config.container.port_range == (40000, 40100)
    assert config.resource.reserved_mem == 512 * 1024**2
    assert config.debug.log_stats is True
    assert config.agent.allow_compute_plugins == ("cpu", "mem")
    assert config.redis.addr == HostPort("redis.example", 6380)
    assert "BAI_AGENT__HEARTBEAT_INTERVAL" in loaded.env_overrides
    assert "BAI_AGENT__HEARTBEAT_INTERVAL" in loaded.describe()


def test_env_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BAI_DB__ADDR", "pg.example:5433")
    monkeypatch.setenv("BAI_DB__TYPE", "postgresql")
    loaded = load_config(ManagerConfig, CONFIGS / "manager.toml")
    assert loaded.config.db.addr == HostPort("pg.example", 5433)
    assert set(loaded.env_overrides) >= {"BAI_DB__ADDR", "BAI_DB__TYPE"}


def test_env_of_other_daemons_and_unrelated_names_is_ignored() -> None:
    config = parse_config(
        AgentConfig,
        "",
        env={
            "BAI_DB__ADDR": "not an address at all",
            "BAI_API__MANAGER__SECRET": "x",
            "BAI_REQUIRE_SERVICES": "1",
            "HOME": "/root",
        },
    )
    assert config.agent.backend == "local"


def test_env_override_of_one_table_entry_keeps_the_others() -> None:
    config = parse_config(
        StorageProxyConfig,
        "",
        env={"BAI_VOLUME__NFS__PATH": "/vfroot/nfs", "BAI_LOGGING__PKG_NS__BAI": "DEBUG"},
    )
    assert set(config.volume) == {"local", "nfs"}
    assert config.volume["nfs"].path == Path("/vfroot/nfs")
    assert config.logging.pkg_ns == {"": "WARNING", "bai": "DEBUG"}


def test_env_matches_existing_table_keys_loosely() -> None:
    config = parse_config(
        StorageProxyConfig,
        '[volume.fast-nvme]\npath = "/a"\n',
        env={"BAI_VOLUME__FAST_NVME__PATH": "/b"},
    )
    assert config.volume == {"fast-nvme": config.volume["fast-nvme"]}
    assert config.volume["fast-nvme"].path == Path("/b")


def test_env_can_set_a_whole_table() -> None:
    config = parse_config(AgentConfig, "", env={"BAI_LOGGING__CONSOLE": "{ colored = false }"})
    assert config.logging.console.colored is False


@pytest.mark.parametrize(
    ("env", "key", "problem"),
    [
        ({"BAI_AGENT__HEARTBEAT_INTERVAL": "soon"}, "agent.heartbeat-interval", "not a duration"),
        ({"BAI_AGENT__HEARTBEAT_INTERVAL": "0"}, "agent.heartbeat-interval", "greater than zero"),
        ({"BAI_AGENT__HEARTBEAT_INTERVL": "1s"}, "agent.heartbeat-intervl", "heartbeat-interval"),
        ({"BAI_AGNET__ID": "x"}, "agnet", "unknown section"),
        ({"BAI_CONTAINER__KERNEL_UID": "root"}, "container.kernel-uid", "integer"),
        ({"BAI_DEBUG__ENABLED": "maybe"}, "debug.enabled", "true or false"),
        ({"BAI_CONTAINER__PORT_RANGE": "1"}, "container.port-range", "2 comma-separated"),
        ({"BAI_CONTAINER__PORT_RANGE": "[2, 1]"}, "container.port-range", "must not exceed"),
        ({"BAI_RESOURCE__RESERVED_DISK": "lots"}, "resource.reserved-disk", "byte size"),
        ({"BAI_LOGGING__DRIVERS": "[unterminated"}, "logging.drivers", "TOML value"),
        ({"BAI_REDIS__ADDR__HOST": "x"}, "redis.addr", "no sub-keys"),
        ({"BAI_AGENT___ID": "x"}, None, "malformed"),
    ],
)
def test_bad_env_override_names_the_variable(
    env: dict[str, str], key: str | None, problem: str
) -> None:
    error = bad(AgentConfig, "", **env)
    (name,) = env
    assert f"environment variable {name}" in str(error)
    assert error.field == key
    assert problem in str(error)


# --------------------------------------------------------------- bad files


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nid = "a"\nheartbeat-interval = \n')
    with pytest.raises(ConfigError) as info:
        load_config(AgentConfig, path, env={})
    assert info.value.line == 3
    assert f"{path}, line 3" in str(info.value)
    assert "TOML syntax error" in str(info.value)


def test_duplicate_key_is_a_syntax_error() -> None:
    error = bad(AgentConfig, '[agent]\nid = "a"\nid = "b"\n')
    assert error.line == 3


@pytest.mark.parametrize(
    ("kind", "text", "key", "problem"),
    [
        (AgentConfig, "[agent]\nheartbeat-intervl = 3\n", "agent.heartbeat-intervl", "did you"),
        (AgentConfig, "[agnet]\nid = 'x'\n", "agnet", "unknown key"),
        (ManagerConfig, "[etcd]\nnamespace = 'local'\n", "etcd", "no etcd"),
        (AgentConfig, "[agent]\nmode = 'docker'\n", "agent.mode", "agent.backend"),
        (
            StorageProxyConfig,
            "[storage-proxy]\nevent-loop = 'uvloop'\n",
            "storage-proxy.event-loop",
            "Trio",
        ),
        (ManagerConfig, "[logging.file]\nrotation = '1M'\n", "logging.file.rotation", "unknown"),
    ],
)
def test_unknown_keys_are_rejected(
    kind: type[DaemonConfig], text: str, key: str, problem: str
) -> None:
    error = bad(kind, text)
    assert error.field == key
    assert "unknown key" in str(error)
    assert problem in str(error)
    assert str(error).startswith("test.toml: ")


@pytest.mark.parametrize(
    ("kind", "text", "key", "value"),
    [
        (AgentConfig, "[resource]\nreserved-mem = '1Q'\n", "resource.reserved-mem", "'1Q'"),
        (AgentConfig, "[resource]\nreserved-mem = -5\n", "resource.reserved-mem", "-5"),
        (AgentConfig, "[resource]\nreserved-mem = true\n", "resource.reserved-mem", "True"),
        (AgentConfig, "[agent]\nheartbeat-interval = '10x'\n", "agent.heartbeat-interval", "10x"),
        (AgentConfig, "[agent]\nheartbeat-interval = -1\n", "agent.heartbeat-interval", "-1"),
        (AgentConfig, "[agent]\nheartbeat-interval = nan\n", "agent.heartbeat-interval", "nan"),
        (AgentConfig, "[agent]\nheartbeat-interval = inf\n", "agent.heartbeat-interval", "inf"),
        (ManagerConfig, "[manager]\nrpc-timeout = 0\n", "manager.rpc-timeout", "0"),
        (ManagerConfig, "[manager]\nservice-addr = 8081\n", "manager.service-addr", "8081"),
        (ManagerConfig, "[manager]\nhide-agents = 'yes'\n", "manager.hide-agents", "'yes'"),
        (ManagerConfig, "[db]\ntype = 'mysql'\n", "db.type", "'mysql'"),
        (ManagerConfig, "[db]\npool-size = 0\n", "db.pool-size", "0"),
        (ManagerConfig, "[db]\naddr = 'pg:99999'\n", "db.addr", "'pg:99999'"),
        (ManagerConfig, "[db]\npath = ''\n", "db.path", "''"),
        (ManagerConfig, "db = 5\n", "db", "5"),
        (ManagerConfig, "[logging]\nlevel = 'LOUD'\n", "logging.level", "'LOUD'"),
        (ManagerConfig, "[logging]\ndrivers = ['console', 'syslog']\n", "logging.drivers[1]", ""),
        (ManagerConfig, "[logging]\ndrivers = 'console'\n", "logging.drivers", "'console'"),
        (ManagerConfig, "[logging.pkg-ns]\na = 'INFO'\nb = 'LOUD'\n", "logging.pkg-ns.b", ""),
        (ManagerConfig, "[manager]\nid = 2023-01-01\n", "manager.id", "2023"),
        (AgentConfig, "[container]\nport-range = [1, 'b']\n", "container.port-range[1]", "'b'"),
        (AgentConfig, "[container]\nport-range = [0, 10]\n", "container.port-range[0]", "0"),
        (AgentConfig, "[container]\nport-range = [1, 2, 3]\n", "container.port-range", ""),
        (AgentConfig, "[agent]\nrpc-listen-addr = 'http://x:1'\n", "agent.rpc-listen-addr", ""),
        (AgentConfig, "[agent]\nid = ''\n", "agent.id", "''"),
        (StorageProxyConfig, "[volume.a]\npath = 3\n", "volume.a.path", "3"),
        (StorageProxyConfig, "[volume.a]\npath = '/a'\nbackend = 'nfs'\n", "volume.a.backend", ""),
    ],
)
def test_bad_values_name_the_key_and_value(
    kind: type[DaemonConfig], text: str, key: str, value: str
) -> None:
    error = bad(kind, text)
    assert error.field == key
    message = str(error)
    assert message.startswith(f"test.toml: {key}: ")
    assert value in message


def test_missing_required_key_is_named() -> None:
    error = bad(StorageProxyConfig, "[volume.ok]\npath = '/a'\n[volume.broken]\nbackend = 'vfs'\n")
    assert error.field == "volume.broken.path"
    assert "required" in str(error)


@pytest.mark.parametrize(
    ("kind", "text", "key"),
    [
        (ManagerConfig, "[manager]\nssl-enabled = true\nssl-privkey = '/k'\n", "manager.ssl-cert"),
        (StorageProxyConfig, "[api.manager]\nssl-enabled = true\n", "api.manager.ssl-cert"),
        (AgentConfig, "[container]\nport-range = [31000, 30000]\n", "container.port-range"),
        (ManagerConfig, "[logging]\ndrivers = ['file', 'file']\n", "logging.drivers"),
        (ManagerConfig, "[logging.file]\nfilename = 'logs/m.log'\n", "logging.file.filename"),
        (StorageProxyConfig, "[volume.'a:b']\npath = '/a'\n", "volume.a:b"),
    ],
)
def test_cross_field_problems_are_named(kind: type[DaemonConfig], text: str, key: str) -> None:
    assert bad(kind, text).field == key


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'[agent]\nregion = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8") as info:
        load_config(AgentConfig, path, env={})
    assert info.value.line == 2
    assert str(path) in str(info.value)


def test_utf8_with_bom_is_accepted() -> None:
    config = parse_config(AgentConfig, '\ufeff[agent]\nregion = "café"\n'.encode())
    assert config.agent.region == "café"


def test_huge_file_is_rejected_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "manager.toml"
    path.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="larger than") as info:
        load_config(ManagerConfig, path, env={})
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="larger than"):
        parse_config(ManagerConfig, "#" * (MAX_CONFIG_BYTES + 1))


def test_deeply_nested_values_are_rejected() -> None:
    error = bad(ManagerConfig, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in str(error)


def test_errors_are_invalid_values() -> None:
    error = bad(AgentConfig, "[agent]\nheartbeat-interval = '10x'\n")
    assert isinstance(error, InvalidValue)
    assert error.value == "10x"
    assert error.source == "test.toml"


# ------------------------------------------------------------ documentation


def _keys(spec: mi.Type, prefix: str) -> Iterator[str]:
    if isinstance(spec, mi.UnionType):
        for member in spec.types:
            yield from _keys(member, prefix)
    elif isinstance(spec, mi.StructType):
        for field in spec.fields:
            key = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
            if not isinstance(field.type, mi.StructType):
                yield key
            yield from _keys(field.type, key)
    elif isinstance(spec, mi.DictType) and isinstance(spec.value_type, mi.StructType):
        yield from _keys(spec.value_type, f"{prefix}.NAME")


def _documented(chapter_title: str) -> set[str]:
    docs = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    chapter = docs.split(f"\n## {chapter_title}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", chapter, re.MULTILINE))


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_is_documented(kind: type[DaemonConfig]) -> None:
    shared = _documented("Sections shared by the daemons")
    own = _documented(kind.FILE_NAME)
    keys = set(_keys(mi.type_info(kind), ""))
    assert keys - own - shared == set(), "undocumented keys"
    assert own - keys == set(), "documented keys that do not exist"


def test_shared_documented_keys_exist() -> None:
    every = {key for kind in KINDS for key in _keys(mi.type_info(kind), "")}
    assert _documented("Sections shared by the daemons") - every == set()


# ------------------------------------------------------------- robustness

_SECTION_NAMES = ["db", "redis", "manager", "agent", "container", "resource", "watcher"]
_SECTION_NAMES += ["storage-proxy", "api", "volume", "logging", "debug", "x"]
_KEY_NAMES = ["addr", "type", "path", "port-range", "heartbeat-interval", "reserved-mem"]
_KEY_NAMES += ["drivers", "pkg-ns", "client", "local", "secret", "id", "file", "level", "zz"]

_scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=12)
    | st.sampled_from(["10m", "1G", "0", "-1s", "tcp://h:1", "h:80", "INFO", "vfs", "~"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEY_NAMES) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _toml(value: object) -> str:
    """Write *value* as a TOML inline value (tomllib has no writer)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    document=st.dictionaries(
        st.sampled_from(_SECTION_NAMES),
        st.dictionaries(st.sampled_from(_KEY_NAMES), _values, max_size=4),
        max_size=4,
    ),
)
def test_any_document_loads_or_raises_config_error(
    kind: type[DaemonConfig], document: dict[str, dict[str, object]]
) -> None:
    text = "\n".join(f"{json.dumps(name)} = {_toml(table)}" for name, table in document.items())
    try:
        parse_config(kind, text)
    except ConfigError as error:
        assert str(error).startswith("<string>")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_load_or_raise_config_error(data: bytes) -> None:
    try:
        parse_config(AgentConfig, data)
    except ConfigError as error:
        assert str(error).startswith("<string>")


def test_redis_section_gives_one_url_with_the_password_quoted() -> None:
    config = parse_config(
        ManagerConfig,
        '[redis]\ntype = "redis"\naddr = "10.0.0.5:6380"\npassword = "p@ss/w"\ndb = 2\n',
    )
    assert config.redis.url == "redis://:p%40ss%2Fw@10.0.0.5:6380/2"
    assert parse_config(ManagerConfig, "").redis.url == "redis://127.0.0.1:6379/0"
