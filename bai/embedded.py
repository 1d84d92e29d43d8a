"""``bai up``: the manager and one agent in one Trio process, all state under one folder.

:class:`EmbeddedService` is the embedded deployment of ARCHITECTURE.md: the
same services as the distributed mode, wired with the embedded backends:

* the manager (:class:`~bai.manager.server.ManagerService`) on a SQLite file
  ``DATA_DIR/manager.sqlite3``, migrated and seeded with the default fixture
  (domain, project, resource group, presets, a superadmin and a user with
  keypairs) on the first start;
* one agent (:class:`~bai.agent.server.AgentService`) running local kernels,
  with its registry and logs under ``DATA_DIR/agent`` and kernels' scratch
  folders under ``DATA_DIR/scratches``, each limited to :data:`SCRATCH_SIZE`
  when ``bai up`` runs as root;
* one storage proxy (:class:`~bai.storage.server.StorageProxyService`) named
  ``local`` with one ``vfs`` volume ``local`` under ``DATA_DIR/vfroot/local``
  (the vfolder host ``local:local``), its two APIs on loopback ports chosen at
  each start and announced to the manager in the shared configuration
  (``volumes/*``); as root, the folders it makes belong to the user kernels
  run as, so sessions can write in the folders they mount;
* one app proxy (:class:`~bai.appproxy.server.AppProxyService`) in
  port-mapping mode: its API on a port of the API's host chosen at each
  start, apps on ports :data:`APP_PORT_RANGE` of that host (loopback when the
  API listens on every address), a secret new at each start; it is announced
  to the manager as the ``wsproxy_addr`` of the agent's resource group and
  the shared-config key ``appproxy/secret``;
* one webserver (:class:`~bai.webserver.server.WebserverService`, the
  console server of the session mode) on a port of the API's host chosen at
  each start, relaying to the manager API, its login sessions in memory;
* one in-process event bus both of them use, and manager-to-agent RPC over
  ``inproc://``.

Once the API answers and the manager has registered the agent (so its
images are known), ``DATA_DIR/client.env`` exports ``BACKEND_ENDPOINT``,
``BACKEND_ACCESS_KEY`` and ``BACKEND_SECRET_KEY`` (the superadmin's keypair),
the variables both the official client and ``bai`` read;
``DATA_DIR/client-<email>.env`` does the same for each other keypair of the
fixture; ``DATA_DIR/client-session.env`` exports ``BACKEND_ENDPOINT`` (the
webserver) and ``BACKEND_ENDPOINT_TYPE=session`` for ``backend.ai login``.
The data folder is its user's only (0700, its files 0600, also
those of an earlier run): it holds every secret key.  Cancelling
:meth:`EmbeddedService.serve` stops the agent first, which kills and removes
every kernel, lets the manager record their end, then stops the manager and
both proxies: nothing is left running, and no session is left RUNNING in the
database.

:func:`main` is the ``bai up`` process: it prints the endpoint, the access
keys and the files holding their secret keys (never a secret key: its output
usually ends up in a log file), serves until SIGINT or SIGTERM and exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import sqlalchemy as sa
import trio

from bai.agent.backends.local import kernel_owner
from bai.agent.server import AgentService
from bai.appproxy.server import AppProxyAddresses, AppProxyService
from bai.client.envfile import CLIENT_ENV_NAME, write_client_env
from bai.common.appproxy_api import SECRET_CONFIG_KEY
from bai.common.config import (
    AgentConfig,
    AppProxyConfig,
    ManagerConfig,
    StorageProxyConfig,
    WebserverConfig,
    parse_config,
)
from bai.common.daemon import private_dir, private_file, serve_until_signal, tune_collector
from bai.common.events import InProcEventBus
from bai.common.logging import setup_logging
from bai.common.storage_api import proxy_config_items
from bai.common.types import STARTED_KERNEL_STATUSES
from bai.manager.db import Database, create_database
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import agents, kernels, keypairs, migrate, users
from bai.manager.models.identity import UserRole
from bai.manager.models.resource import AgentStatus, scaling_groups
from bai.manager.models.shared_config import put_config, put_config_many
from bai.manager.server import ManagerHandle, ManagerService
from bai.storage.server import ProxyAddresses, StorageProxyService
from bai.webserver.server import WebserverService

__all__ = [
    "APP_PORT_RANGE",
    "DEFAULT_PORT",
    "SESSION_ENV_NAME",
    "EmbeddedHandle",
    "EmbeddedService",
    "Keypair",
    "announce_app_proxy",
    "announce_storage_proxy",
    "client_env_name",
    "embedded_appproxy_config",
    "embedded_configs",
    "embedded_storage_config",
    "embedded_webserver_config",
    "main",
]

log = logging.getLogger(__name__)

#: The API port ``bai up`` listens on unless told otherwise.
DEFAULT_PORT: Final = 8081
#: Each kernel's scratch folder limit (a sparse ext4 image: it takes only what is written).
SCRATCH_SIZE: Final = "4G"
#: Seconds the manager may take to register the agent from its first heartbeat.
REGISTRATION_TIMEOUT: Final = 30.0
#: Seconds the agent and the manager have to shut down in order before they are cut off.
SHUTDOWN_TIMEOUT: Final = 60.0
#: The storage proxy and the volume of ``bai up``: the vfolder host is ``PROXY:VOLUME``.
STORAGE_PROXY: Final = "local"
STORAGE_VOLUME: Final = "local"
#: The ports the app proxy of ``bai up`` gives apps (one per app of a session).
APP_PORT_RANGE: Final = (10205, 10300)
#: The settings file of the session mode (the webserver's endpoint, no keys).
SESSION_ENV_NAME: Final = "client-session.env"
#: Socket paths longer than this are moved under /tmp (the kernel's limit is 107 bytes).
_MAX_IPC_DIR: Final = 60


@dataclass(frozen=True, slots=True)
class Keypair:
    """A keypair of the embedded cluster, to show the operator."""

    email: str
    role: str
    access_key: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class EmbeddedHandle:
    """A running embedded cluster: the manager, the agent, the endpoint and the keypairs."""

    manager: ManagerHandle
    agent: AgentService
    storage: ProxyAddresses
    appproxy: AppProxyAddresses
    endpoint: str
    keypairs: tuple[Keypair, ...]
    client_env: Path
    #: The webserver's base URL (``BACKEND_ENDPOINT`` of the session mode).
    webserver: str = ""


def client_env_name(index: int, keypair: Keypair) -> str:
    """The settings file of the *index*-th keypair of :attr:`EmbeddedHandle.keypairs`."""
    return CLIENT_ENV_NAME if index == 0 else f"client-{keypair.email}.env"


def _toml(value: str) -> str:
    # A JSON string is a valid TOML basic string.
    return json.dumps(value)


def _ipc_dir(data_dir: Path) -> Path:
    folder = data_dir / "ipc"
    if len(str(folder)) <= _MAX_IPC_DIR:
        return folder
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"bai-ipc-{digest}"


def _default_agent_id(data_dir: Path) -> str:
    # One id per data directory: agents with the same id share a cgroup parent,
    # and each would kill the other's kernels as leftovers of unknown ones.
    return f"embedded-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]}"


def embedded_configs(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    image_catalog: Path | None = None,
    agent_id: str | None = None,
) -> tuple[ManagerConfig, AgentConfig]:
    """The manager's and the agent's configs for an embedded cluster in *data_dir*.

    Adjust them with :func:`msgspec.structs.replace` before passing them to
    :class:`EmbeddedService` when the defaults do not fit.
    """
    data_dir = data_dir.resolve()
    manager = parse_config(
        ManagerConfig,
        f"""
[db]
type = "sqlite"
path = {_toml(str(data_dir / "manager.sqlite3"))}
[redis]
type = "inproc"
[manager]
service-addr = {_toml(f"{host}:{port}")}
""",
        source="bai up (manager)",
    )
    catalog_line = f"image-catalog = {_toml(str(image_catalog))}" if image_catalog else ""
    # Only a root agent can mount a size-limited scratch folder; elsewhere the
    # agent logs that scratch folders are unlimited.
    scratch_line = f"scratch-size = {_toml(SCRATCH_SIZE)}" if os.geteuid() == 0 else ""
    agent = parse_config(
        AgentConfig,
        f"""
[agent]
id = {_toml(agent_id or _default_agent_id(data_dir))}
var-base-path = {_toml(str(data_dir / "agent"))}
ipc-base-path = {_toml(str(_ipc_dir(data_dir)))}
{catalog_line}
[container]
scratch-root = {_toml(str(data_dir / "scratches"))}
{scratch_line}
[redis]
type = "inproc"
""",
        source="bai up (agent)",
    )
    return manager, agent


def embedded_storage_config(data_dir: Path) -> StorageProxyConfig:
    """The storage proxy's config for an embedded cluster in *data_dir*.

    Both APIs listen on loopback ports chosen at each start (the manager
    learns them from the shared configuration); the secrets are new at each
    start, so transfer tokens do not outlive the process that signed them.
    """
    data_dir = data_dir.resolve()
    return parse_config(
        StorageProxyConfig,
        f"""
[storage-proxy]
node-id = {_toml(STORAGE_PROXY)}
[api.client]
service-addr = "127.0.0.1:0"
[api.manager]
service-addr = "127.0.0.1:0"
[volume.{STORAGE_VOLUME}]
backend = "vfs"
path = {_toml(str(data_dir / "vfroot" / STORAGE_VOLUME))}
""",
        source="bai up (storage proxy)",
    )


def embedded_appproxy_config(host: str = "127.0.0.1") -> AppProxyConfig:
    """The app proxy's config for an embedded cluster whose API listens on *host*.

    Port-mapping mode: the API on a port of *host* chosen at each start (the
    manager learns it from ``wsproxy_addr``), apps on :data:`APP_PORT_RANGE`
    of *host*; browsers are sent to *host*, or to the loopback address when
    *host* is every address.  The secret is new at each start.
    """
    advertised = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    low, high = APP_PORT_RANGE
    return parse_config(
        AppProxyConfig,
        f"""
[appproxy]
service-addr = {_toml(f"[{host}]:0" if ":" in host else f"{host}:0")}
mode = "port"
bind-host = {_toml(host)}
advertised-host = {_toml(advertised)}
port-range = [{low}, {high}]
""",
        source="bai up (app proxy)",
    )


def embedded_webserver_config(host: str, api_endpoint: str) -> WebserverConfig:
    """The webserver's config for an embedded cluster whose API listens on *host* at
    *api_endpoint*: a port of *host* chosen at each start, sessions in memory."""
    return parse_config(
        WebserverConfig,
        f"""
[webserver]
service-addr = {_toml(f"[{host}]:0" if ":" in host else f"{host}:0")}

[api]
endpoint = {_toml(api_endpoint)}
""",
        source="bai up (webserver)",
    )


def write_session_env(data_dir: Path, webserver: str) -> Path:
    """Write ``DATA_DIR/client-session.env`` (0600): the official client's session mode
    settings for *webserver*.  Blocking file I/O."""
    path = data_dir / SESSION_ENV_NAME
    text = (
        "# The official backend.ai client in session mode: source this file, then\n"
        "# `backend.ai login` with your email and password.\n"
        f"export BACKEND_ENDPOINT={shlex.quote(webserver)}\n"
        "export BACKEND_ENDPOINT_TYPE=session\n"
    )
    private_file(path)
    path.write_text(text, encoding="utf-8")
    return path


async def announce_app_proxy(
    db: Database, resource_group: str, config: AppProxyConfig, addresses: AppProxyAddresses
) -> None:
    """Tell the managers of *db* that *resource_group*'s app proxy answers at *addresses*.

    Sets the group's ``wsproxy_addr`` and the shared-config key
    ``appproxy/secret``, as an operator of the distributed mode does by hand.
    """
    async with db.begin() as conn:
        updated = await conn.execute(
            sa.update(scaling_groups)
            .where(scaling_groups.c.name == resource_group)
            .values(wsproxy_addr=addresses.api)
        )
        await put_config(conn, SECRET_CONFIG_KEY, config.appproxy.secret)
    if not updated.rowcount:
        log.warning("no resource group %r: its app proxy was not announced", resource_group)


async def announce_storage_proxy(
    db: Database,
    proxy: str,
    config: StorageProxyConfig,
    addresses: ProxyAddresses,
    default_volume: str,
) -> None:
    """Tell the managers of *db* where proxy *proxy* answers (the ``volumes/*`` keys).

    ``PROXY:DEFAULT_VOLUME`` becomes the default vfolder host.  An operator of
    the distributed mode writes the same keys with ``bai manager config put``.
    """
    items = proxy_config_items(
        proxy,
        manager_api=addresses.manager_api,
        client_api=addresses.client_api,
        secret=config.api.manager.secret,
        ssl_verify=False,
        default_host=f"{proxy}:{default_volume}",
    )
    async with db.begin() as conn:
        await put_config_many(conn, items)


async def _seed(db: Database) -> tuple[Keypair, ...]:
    """Migrate, add the default fixture where missing, and read the fixture users' keypairs."""
    await migrate.upgrade(db)
    fixture = default_fixture()
    await populate(db, fixture)
    emails = [entry["email"] for entry in fixture["users"]]
    rows = await db.fetch(
        sa.select(users.c.email, users.c.role, keypairs.c.access_key, keypairs.c.secret_key)
        .select_from(keypairs.join(users, keypairs.c.user == users.c.uuid))
        .where(users.c.email.in_(emails), keypairs.c.is_active.is_(True))
        .order_by(users.c.email, keypairs.c.created_at)
    )
    found: dict[str, Keypair] = {}
    for row in rows:
        found.setdefault(
            row.email, Keypair(row.email, str(row.role), row.access_key, row.secret_key)
        )
    order = {UserRole.SUPERADMIN.value: 0, UserRole.ADMIN.value: 1}
    return tuple(sorted(found.values(), key=lambda k: (order.get(k.role, 2), k.email)))


class EmbeddedService:
    """The embedded cluster; see the module docstring.

    *manager_config* and *agent_config* default to :func:`embedded_configs`
    of *data_dir*, *storage_config* to :func:`embedded_storage_config`,
    *appproxy_config* to :func:`embedded_appproxy_config` of the API's host;
    *agent_options* go to :class:`AgentService` (tunables such as
    ``start_timeout``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        manager_config: ManagerConfig | None = None,
        agent_config: AgentConfig | None = None,
        storage_config: StorageProxyConfig | None = None,
        appproxy_config: AppProxyConfig | None = None,
        agent_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        defaults = embedded_configs(self.data_dir)
        self.manager_config = manager_config or defaults[0]
        self.agent_config = agent_config or defaults[1]
        self.storage_config = storage_config or embedded_storage_config(self.data_dir)
        self.appproxy_config = appproxy_config or embedded_appproxy_config(
            self.manager_config.manager.service_addr.host
        )
        self._agent_options = dict(agent_options or {})

    async def serve(
        self, *, task_status: trio.TaskStatus[EmbeddedHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the cluster until cancelled; report an :class:`EmbeddedHandle` once it serves."""
        await trio.to_thread.run_sync(self._prepare_folders)
        async with create_database(self.manager_config.db) as db:
            pairs = await _seed(db)
        stop = trio.Event()
        try:
            async with trio.open_nursery() as outer:
                try:
                    handle: EmbeddedHandle = await outer.start(self._run, pairs, stop)
                    task_status.started(handle)
                    await trio.sleep_forever()
                finally:
                    stop.set()
        finally:
            ipc = self.agent_config.agent.ipc_base_path
            if ipc != self.data_dir / "ipc":
                # Shielded: this runs while the service is being cancelled.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_remove_empty_dir, ipc)

    async def _run(
        self,
        pairs: tuple[Keypair, ...],
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[EmbeddedHandle],
    ) -> None:
        """Run the services; once *stop* is set, end the agent first, then the manager.

        Shielded, so that the manager still records what the agent reports
        while it kills its kernels; every step of the shutdown is bounded.
        The storage proxy starts first and stops last: kernels mount its folders.
        The app proxy starts with it, before the manager that announces it.
        """
        bus = InProcEventBus()
        rpc_url = f"inproc://bai-agent-{uuid.uuid4().hex}"
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                await nursery.start(bus.serve)
                storage_config = self._storage_config_for(_kernel_owner_of(self.agent_config))
                storage: ProxyAddresses = await nursery.start(
                    StorageProxyService(storage_config).serve
                )
                appproxy: AppProxyAddresses = await nursery.start(
                    AppProxyService(self.appproxy_config).serve
                )
                manager: ManagerHandle = await nursery.start(
                    ManagerService(self.manager_config, bus=bus, upgrade_schema=False).serve
                )
                # Before client.env exists, so no client asks for a folder first; the
                # manager reads these keys on every storage call.
                await announce_storage_proxy(
                    manager.ctx.db, STORAGE_PROXY, storage_config, storage, STORAGE_VOLUME
                )
                await announce_app_proxy(
                    manager.ctx.db,
                    self.agent_config.agent.scaling_group,
                    self.appproxy_config,
                    appproxy,
                )
                agent = AgentService(
                    self.agent_config,
                    event_bus=bus,
                    rpc_listen_addr=rpc_url,
                    **self._agent_options,
                )
                agent_scope = trio.CancelScope()
                agent_done = trio.Event()

                async def run_agent(*, task_status: trio.TaskStatus[list[str]]) -> None:
                    try:
                        with agent_scope:
                            await agent.serve(task_status=task_status)
                    finally:
                        agent_done.set()

                await nursery.start(run_agent)
                with trio.fail_after(REGISTRATION_TIMEOUT):
                    await _registered(manager.ctx.db, agent.agent_id)
                endpoint = manager.urls[0] if manager.urls else ""
                webserver: str = await nursery.start(
                    WebserverService(
                        embedded_webserver_config(
                            self.manager_config.manager.service_addr.host, endpoint
                        )
                    ).serve
                )
                await trio.to_thread.run_sync(write_session_env, self.data_dir, webserver)
                env_path = self.data_dir / CLIENT_ENV_NAME
                for index, pair in enumerate(pairs):
                    await trio.to_thread.run_sync(
                        functools.partial(
                            write_client_env,
                            self.data_dir,
                            endpoint,
                            pair.access_key,
                            pair.secret_key,
                            name=client_env_name(index, pair),
                        )
                    )
                task_status.started(
                    EmbeddedHandle(
                        manager, agent, storage, appproxy, endpoint, pairs, env_path, webserver
                    )
                )
                await stop.wait()
                agent_scope.cancel()
                with trio.move_on_after(SHUTDOWN_TIMEOUT):
                    await agent_done.wait()
                    await _settled(manager.ctx.db, agent.agent_id)
                nursery.cancel_scope.cancel()

    def _storage_config_for(self, owner: tuple[int, int] | None) -> StorageProxyConfig:
        """The proxy's config, its folders owned by *owner* unless the config names one."""
        section = self.storage_config.storage_proxy
        if owner is None or section.user is not None or section.group is not None:
            return self.storage_config
        return msgspec.structs.replace(
            self.storage_config,
            storage_proxy=msgspec.structs.replace(section, user=owner[0], group=owner[1]),
        )

    def _prepare_folders(self) -> None:
        private_dir(self.data_dir)
        db = self.manager_config.db
        if db.type == "sqlite":
            private_file(db.path)  # before SQLite creates it; its journals copy its mode
        for folder in (self.data_dir / "agent", self.data_dir / "scratches"):
            folder.mkdir(parents=True, exist_ok=True)
        for volume in self.storage_config.volume.values():
            volume.path.mkdir(parents=True, exist_ok=True)
        self.agent_config.agent.ipc_base_path.mkdir(parents=True, exist_ok=True)


def _kernel_owner_of(config: AgentConfig) -> tuple[int, int] | None:
    """Who the agent's kernels run as, so the folders they mount are theirs to write."""
    return kernel_owner(config.container.kernel_uid, config.container.kernel_gid)


async def _registered(db: Database, agent_id: str) -> None:
    """Wait until the manager registered the agent (and so its images)."""
    while True:
        status = await db.fetch(sa.select(agents.c.status).where(agents.c.id == agent_id))
        if status.scalar() == AgentStatus.ALIVE.value:
            return
        await trio.sleep(0.02)


async def _settled(db: Database, agent_id: str) -> None:
    """Wait until the manager recorded the end of every kernel the agent had."""
    while True:
        live = await db.fetch(
            sa.select(sa.func.count()).where(
                kernels.c.agent == agent_id,
                kernels.c.status.in_(sorted(s.value for s in STARTED_KERNEL_STATUSES)),
            )
        )
        if not live.scalar():
            return
        await trio.sleep(0.05)


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _describe(handle: EmbeddedHandle) -> list[str]:
    data_dir = handle.client_env.parent
    lines = [
        f"bai is up: {handle.endpoint}",
        f"  agent {handle.agent.agent_id} ({handle.agent.backend.describe()})",
        f"  app proxy {handle.appproxy.api}",
        f"  webserver (session mode) {handle.webserver}:"
        f" source {data_dir / SESSION_ENV_NAME}, then backend.ai login",
        "  keypairs (each secret key is in the file named, readable by its owner only):",
    ]
    lines += [
        f"    {k.email} ({k.role}): access key {k.access_key}"
        f"  in {data_dir / client_env_name(i, k)}"
        for i, k in enumerate(handle.keypairs)
    ]
    lines += [
        f"  client settings: source {handle.client_env}",
        "  stop with Ctrl-C",
    ]
    return lines


async def _start(service: EmbeddedService, nursery: trio.Nursery) -> None:
    handle: EmbeddedHandle = await nursery.start(service.serve)
    for line in _describe(handle):
        print(line, flush=True)


def main(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    image_catalog: Path | None = None,
) -> int:
    """Run ``bai up`` until a signal; returns the process exit code."""
    setup_logging(level="INFO")
    manager, agent = embedded_configs(data_dir, host=host, port=port, image_catalog=image_catalog)
    tune_collector()
    service = EmbeddedService(data_dir, manager_config=manager, agent_config=agent)
    trio.run(serve_until_signal, functools.partial(_start, service))
    return 0
