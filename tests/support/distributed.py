"""Harness for the distributed mode run as an operator runs it: separate processes.

:func:`deploy` seeds nothing and starts nothing: it writes the config files
of one or more ``bai manager`` processes on one PostgreSQL database and of
agents, all meeting through one Redis database, and on leaving it stops
whatever the test left running (gracefully if it can), prints each daemon's
log (shown by pytest only for a failed test) and kills any kernel process of
the sessions the test recorded.  :class:`Daemon` runs one ``bai`` process;
:class:`RedisServer` is a private ``redis-server`` a test can stop and start.

Each run takes a Redis database of its own (a lock key claims it) on a
shared server, because the daemons use bai's fixed stream key and parallel
runs must not see each other's agents; a private server needs no lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coredis
import httpx
import pytest
import sqlalchemy as sa
import trio
from coredis import PureToken

from bai.client import APIClient, ComputeSession, graphql
from bai.common.storage_api import proxy_config_items
from bai.manager.db import create_database
from bai.manager.models import keypairs

from support.agent import CATALOG
from support.net import agent_port_range, free_port
from support.storage import PROXY as STORAGE_PROXY
from support.storage import VOLUME as STORAGE_VOLUME
from support.storage import kernel_volume_owner, storage_toml

BAI = Path(sys.executable).with_name("bai")
STREAM = "bai:events"
REDIS_LOCK = "bai-test:distributed-processes"
HEARTBEAT_TIMEOUT = 3.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


@dataclass
class Daemon:
    """One ``bai`` daemon process, its output going to *log*."""

    name: str
    argv: list[str]
    log: Path
    process: trio.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await trio.lowlevel.open_process(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=clean_env()
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self, signum: signal.Signals) -> int:
        """Send *signum*; the exit code once the process ended (within the deadline)."""
        assert self.process is not None
        self.process.send_signal(signum)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()

    async def kill(self) -> None:
        """``kill -9`` the process and reap it."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()


def clean_env() -> dict[str, str]:
    # BAI_<SECTION>__<KEY> variables would override the configs this harness writes.
    return {k: v for k, v in os.environ.items() if not (k.startswith("BAI_") and "__" in k)}


class RedisServer:
    """A private ``redis-server`` without persistence, stopped and started by the test.

    Started again it is empty, as a crashed Redis without persistence comes back.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: trio.Process | None = None

    async def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self._process = await trio.lowlevel.open_process(
            [*command, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(10):
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return
                except OSError:
                    await trio.sleep(0.05)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            await process.wait()


@asynccontextmanager
async def private_redis_server() -> AsyncIterator[RedisServer]:
    """A running :class:`RedisServer`; skips (fails under BAI_REQUIRE_SERVICES) without one."""
    if shutil.which("redis-server") is None:
        if os.environ.get("BAI_REQUIRE_SERVICES", "") not in ("", "0"):
            pytest.fail("redis-server is not installed and BAI_REQUIRE_SERVICES is set")
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def private_redis_db(redis_url: str) -> AsyncIterator[int]:
    """A Redis database number no other run holds, without bai's stream in it."""
    base = redis_url.rsplit("/", 1)[0]
    token = uuid.uuid4().hex
    for db in range(1, 16):
        client: coredis.Redis[bytes] = coredis.Redis.from_url(f"{base}/{db}")
        async with client:
            if not await client.set(REDIS_LOCK, token, condition=PureToken.NX, ex=600):
                continue
            await client.delete([STREAM])
            try:
                yield db
            finally:
                await client.delete([STREAM, REDIS_LOCK])
            return
    pytest.fail("every Redis database 1-15 is held by another run of this test")


def kernel_processes(session_ids: Iterable[str]) -> dict[int, dict[str, str]]:
    """Live host processes of the given sessions' kernels: pid -> BACKENDAI_* environment."""
    wanted = {f"BACKENDAI_SESSION_ID={sid}".encode() for sid in session_ids}
    found: dict[int, dict[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted.intersection(environ):
            pairs = (item.decode(errors="replace").partition("=") for item in environ)
            found[int(entry.name)] = {k: v for k, _, v in pairs if k.startswith("BACKENDAI_")}
    return found


@dataclass
class Deployment:
    """A PostgreSQL database, a Redis database and the config files of the daemons."""

    tmp: Path
    endpoints: list[str]
    manager_tomls: list[Path]
    pid_files: list[Path]
    agent_ids: list[str]
    agent_tomls: list[Path]
    #: ``storage-proxy.toml`` of the deployment's one storage proxy, and its two API URLs.
    storage_toml: Path
    storage_manager_api: str
    storage_client_api: str
    storage_secret: str
    daemons: list[Daemon] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    @property
    def manager_toml(self) -> Path:
        return self.manager_tomls[0]

    @property
    def pid_file(self) -> Path:
        return self.pid_files[0]

    def daemon(self, name: str, *args: str) -> Daemon:
        found = Daemon(name, [str(BAI), *args], self.tmp / f"{name}.log")
        self.daemons.append(found)
        return found

    def manager(self, n: int, name: str) -> Daemon:
        """A ``bai manager`` process (not started) with the *n*-th manager config."""
        return self.daemon(name, "manager", "--config", str(self.manager_tomls[n]))

    def agent(self, n: int, name: str) -> Daemon:
        """A ``bai agent`` process (not started) with the *n*-th agent config."""
        return self.daemon(name, "agent", "--config", str(self.agent_tomls[n]))

    def storage_proxy(self, name: str = "storage-proxy") -> Daemon:
        """The ``bai storage-proxy`` process (not started); see :meth:`announce_storage`."""
        return self.daemon(name, "storage-proxy", "--config", str(self.storage_toml))

    async def announce_storage(self) -> None:
        """Write the proxy's ``volumes/*`` keys with ``bai manager config put``, as operators do."""
        items = proxy_config_items(
            STORAGE_PROXY,
            manager_api=self.storage_manager_api,
            client_api=self.storage_client_api,
            secret=self.storage_secret,
            ssl_verify=False,
            default_host=f"{STORAGE_PROXY}:{STORAGE_VOLUME}",
        )
        for key, value in items.items():
            await self.cli("config", "put", key, value)

    async def cli(self, *args: str) -> str:
        """Run ``bai manager --config manager.toml ARGS`` to its end; its standard output."""
        with trio.fail_after(START_TIMEOUT):
            done = await trio.run_process(
                [str(BAI), "manager", "--config", str(self.manager_toml), *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=clean_env(),
            )
        assert done.returncode == 0, done.stderr.decode()
        return str(done.stdout.decode())


def _manager_toml(
    pg_url: str, redis: str, redis_db: int, n: int, port: int, pid_file: Path, extra: str
) -> str:
    url = sa.make_url(pg_url)
    return f"""
[db]
type = "postgresql"
addr = "{url.host}:{url.port or 5432}"
name = "{url.database}"
user = "{url.username}"
password = "{url.password or ""}"
[redis]
type = "redis"
addr = "{redis}"
db = {redis_db}
[manager]
id = "i-dist-manager-{n}"
service-addr = "127.0.0.1:{port}"
pid-file = "{pid_file}"
heartbeat-timeout = "{HEARTBEAT_TIMEOUT}s"
scheduler-interval = "0.5s"
{extra}
[logging]
drivers = ["console"]
[logging.console]
colored = false
"""


def _agent_toml(
    agent_id: str, folder: Path, ipc: Path, redis: str, redis_db: int, ports: tuple[int, int]
) -> str:
    return f"""
[agent]
id = "{agent_id}"
rpc-listen-addr = "ipc://{ipc}/rpc.sock"
var-base-path = "{folder}/var"
ipc-base-path = "{ipc}"
heartbeat-interval = "1s"
image-catalog = "{CATALOG}"
allow-compute-plugins = []
[container]
scratch-root = "{folder}/scratch"
port-range = [{ports[0]}, {ports[1]}]
[resource]
reserved-cpu = 0
reserved-mem = "512m"
[redis]
type = "redis"
addr = "{redis}"
db = {redis_db}
[logging]
drivers = ["console"]
[logging.console]
colored = false
"""


@asynccontextmanager
async def deploy(
    pg_url: str,
    tmp_path: Path,
    *,
    redis: str = "127.0.0.1:6379",
    redis_db: int = 0,
    managers: int = 1,
    agents: int = 2,
    manager_options: dict[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """Write the configs of *managers* managers and *agents* agents; clean up after them.

    *manager_options* are more ``[manager]`` keys for every manager.
    """
    tag = uuid.uuid4().hex[:8]
    # Unix socket paths must stay short: the ipc folders live directly under /tmp.
    ipc_root = Path(f"/tmp/bai-d-{tag}")
    extra = "\n".join(f'{key} = "{value}"' for key, value in (manager_options or {}).items())
    endpoints, manager_tomls, pid_files = [], [], []
    for n in range(1, managers + 1):
        port = free_port()
        pid_file = tmp_path / f"manager{n}.pid"
        toml = tmp_path / f"manager{n}.toml"
        toml.write_text(_manager_toml(pg_url, redis, redis_db, n, port, pid_file, extra))
        endpoints.append(f"http://127.0.0.1:{port}")
        manager_tomls.append(toml)
        pid_files.append(pid_file)
    agent_ids, agent_tomls = [], []
    for n in range(1, agents + 1):
        agent_id = f"i-dist-{tag}-{n}"
        toml = tmp_path / f"agent{n}.toml"
        folder, ipc = tmp_path / f"agent{n}", ipc_root / f"a{n}"
        ports = agent_port_range(n - 1)
        toml.write_text(_agent_toml(agent_id, folder, ipc, redis, redis_db, ports))
        agent_ids.append(agent_id)
        agent_tomls.append(toml)
    storage_ports = free_port(), free_port()
    storage_secret = uuid.uuid4().hex
    proxy_toml = tmp_path / "storage-proxy.toml"
    (tmp_path / "vfroot" / STORAGE_VOLUME).mkdir(parents=True)
    proxy_toml.write_text(
        storage_toml(
            tmp_path / "vfroot",
            owner=kernel_volume_owner(),
            secret=storage_secret,
            node_id="i-dist-storage",
            manager_port=storage_ports[0],
            client_port=storage_ports[1],
            pid_file=tmp_path / "vfroot" / "storage-proxy.pid",
        )
    )
    found = Deployment(
        tmp=tmp_path,
        endpoints=endpoints,
        manager_tomls=manager_tomls,
        pid_files=pid_files,
        agent_ids=agent_ids,
        agent_tomls=agent_tomls,
        storage_toml=proxy_toml,
        storage_manager_api=f"http://127.0.0.1:{storage_ports[0]}",
        storage_client_api=f"http://127.0.0.1:{storage_ports[1]}",
        storage_secret=storage_secret,
    )
    try:
        yield found
    finally:
        await _tear_down(found)
        shutil.rmtree(ipc_root, ignore_errors=True)


async def _tear_down(deployment: Deployment) -> None:
    """Stop what a failed test left running: daemons gracefully if they can, then kernels."""
    for daemon in deployment.daemons:
        if daemon.running:
            assert daemon.process is not None
            daemon.process.terminate()
            with trio.move_on_after(STOP_TIMEOUT):
                await daemon.process.wait()
            if daemon.running:
                await daemon.kill()
        # Shown by pytest only when the test failed.
        print(f"----- {daemon.name} -----\n{daemon.output()}")
    for pid in kernel_processes(deployment.session_ids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def wait_until_serving(
    endpoint: str, daemons: list[Daemon], *, statuses: tuple[int, ...] = (200,)
) -> None:
    """Wait until ``GET /`` answers with one of *statuses*; fail at once if a daemon exits."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        with trio.fail_after(START_TIMEOUT):
            while True:
                for daemon in daemons:
                    assert daemon.running, f"{daemon.name} exited:\n{daemon.output()}"
                try:
                    if (await http.get(endpoint + "/")).status_code in statuses:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)


async def agent_statuses(api: APIClient) -> dict[str, str]:
    data = await graphql(api, "query { agents { id status } }")
    return {agent["id"]: agent["status"] for agent in data["agents"]}


async def wait_for_agents(api: APIClient, wanted: dict[str, str], daemons: list[Daemon]) -> None:
    """Wait until the manager reports each agent in *wanted* with that status."""
    with trio.fail_after(START_TIMEOUT):
        while True:
            for daemon in daemons:
                assert daemon.running, f"{daemon.name} exited:\n{daemon.output()}"
            statuses = await agent_statuses(api)
            if all(statuses.get(agent) == status for agent, status in wanted.items()):
                return
            await trio.sleep(0.2)


async def output_of(session: ComputeSession, code: str) -> str:
    """Standard output of *code* run to its end in *session*."""
    chunks: list[str] = []
    async for result in session.run(code):
        chunks += [item.data for item in result.console if item.kind == "stdout"]
        if result.is_final:
            assert result.exit_code == 0, result
    return "".join(chunks)


async def start_session(
    d: Deployment,
    api: APIClient,
    name: str,
    *,
    resources: Mapping[str, str | int] | None = None,
    max_wait: int = 30,
    **options: Any,
) -> ComputeSession:
    """A python session *name* (1 CPU and 128 MiB unless *resources* say otherwise), created
    through *api*, waited for up to *max_wait* seconds and left in ``d.session_ids`` for the
    cleanup."""
    session = await ComputeSession.create(
        api,
        "python",
        name=name,
        resources=resources or {"cpu": 1, "mem": "128m"},
        max_wait=max_wait,
        **options,
    )
    assert session.id is not None
    d.session_ids.append(str(session.id))
    return session


async def keys_of(pg_url: str, email: str) -> tuple[str, str]:
    """The access and secret key of *email*'s keypair, read from the database."""
    async with create_database(pg_url) as db:
        row = (
            await db.fetch(
                sa.select(keypairs.c.access_key, keypairs.c.secret_key).where(
                    keypairs.c.user_id == email
                )
            )
        ).first()
    assert row is not None, email
    return row.access_key, row.secret_key
