"""The distributed mode as an operator runs it: separate processes, PostgreSQL and Redis.

``bai manager fixture populate default`` seeds a fresh PostgreSQL database,
``bai manager config put`` writes the shared config before any daemon runs,
then ``bai manager --config manager.toml`` and two ``bai agent --config
agent.toml`` run as processes of their own, meeting only through PostgreSQL,
Redis Streams and ``ipc://`` RPC.  The test talks to them as a user would,
through the client SDK over HTTP, and looks at the host's processes to see
where kernels run and that none is left behind.

Each run takes a Redis database of its own (a lock key claims it), because
the daemons use bai's fixed stream key and parallel runs must not see each
other's agents.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
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
from test_agent_support import CATALOG
from test_hostile_support import assert_contained, parse, probe_code

from bai.client import APIClient, APIConfig, ComputeSession, get_config, graphql
from bai.manager.db import create_database
from bai.manager.models import keypairs

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
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=_clean_env()
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


def _clean_env() -> dict[str, str]:
    # BAI_<SECTION>__<KEY> variables would override the configs this test writes.
    return {k: v for k, v in os.environ.items() if not (k.startswith("BAI_") and "__" in k)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
    """A PostgreSQL database, a Redis database and the config files of three daemons."""

    tmp: Path
    endpoint: str
    manager_toml: Path
    pid_file: Path
    agent_ids: list[str]
    agent_tomls: list[Path]
    daemons: list[Daemon] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)

    def daemon(self, name: str, *args: str) -> Daemon:
        found = Daemon(name, [str(BAI), *args], self.tmp / f"{name}.log")
        self.daemons.append(found)
        return found

    async def cli(self, *args: str) -> str:
        """Run ``bai manager --config manager.toml ARGS`` to its end; its standard output."""
        with trio.fail_after(START_TIMEOUT):
            done = await trio.run_process(
                [str(BAI), "manager", "--config", str(self.manager_toml), *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=_clean_env(),
            )
        assert done.returncode == 0, done.stderr.decode()
        return str(done.stdout.decode())


def _manager_toml(pg_url: str, redis_db: int, port: int, pid_file: Path) -> str:
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
db = {redis_db}
[manager]
id = "i-dist-manager"
service-addr = "127.0.0.1:{port}"
pid-file = "{pid_file}"
heartbeat-timeout = "{HEARTBEAT_TIMEOUT}s"
scheduler-interval = "0.5s"
[logging]
drivers = ["console"]
[logging.console]
colored = false
"""


def _agent_toml(agent_id: str, folder: Path, ipc: Path, redis_db: int, ports: int) -> str:
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
port-range = [{ports}, {ports + 99}]
[resource]
reserved-cpu = 0
reserved-mem = "512m"
[redis]
type = "redis"
db = {redis_db}
[logging]
drivers = ["console"]
[logging.console]
colored = false
"""


@pytest.fixture
def pg_url(postgres_dsn: str, db_templates: Any) -> str:
    """An emptied PostgreSQL database at the newest schema."""
    url: str = db_templates.postgres_emptied(postgres_dsn)
    return url


@pytest.fixture
async def deployment(pg_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    # Unix socket paths must stay short: the ipc folders live directly under /tmp.
    ipc_root = Path(f"/tmp/bai-d-{tag}")
    port = _free_port()
    async with private_redis_db(redis_url) as redis_db:
        pid_file = tmp_path / "manager.pid"
        manager_toml = tmp_path / "manager.toml"
        manager_toml.write_text(_manager_toml(pg_url, redis_db, port, pid_file))
        agent_ids, agent_tomls = [], []
        for n in (1, 2):
            agent_id = f"i-dist-{tag}-{n}"
            toml = tmp_path / f"agent{n}.toml"
            ports = 41000 + 100 * n
            toml.write_text(
                _agent_toml(agent_id, tmp_path / f"agent{n}", ipc_root / f"a{n}", redis_db, ports)
            )
            agent_ids.append(agent_id)
            agent_tomls.append(toml)
        found = Deployment(
            tmp=tmp_path,
            endpoint=f"http://127.0.0.1:{port}",
            manager_toml=manager_toml,
            pid_file=pid_file,
            agent_ids=agent_ids,
            agent_tomls=agent_tomls,
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
                daemon.process.kill()
                await daemon.process.wait()
        # Shown by pytest only when the test failed.
        print(f"----- {daemon.name} -----\n{daemon.output()}")
    for pid in kernel_processes(deployment.session_ids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def wait_until_serving(endpoint: str, daemons: list[Daemon]) -> None:
    """Wait until ``GET /`` answers; fail at once if a daemon exits instead."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        with trio.fail_after(START_TIMEOUT):
            while True:
                for daemon in daemons:
                    assert daemon.running, f"{daemon.name} exited:\n{daemon.output()}"
                try:
                    if (await http.get(endpoint + "/")).status_code == 200:
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


def _admin_keys(populate_output: str) -> tuple[str, str]:
    found = re.search(
        r"^admin@lablup.com \(admin\): access key (\S+)  secret key (\S+)$",
        populate_output,
        re.MULTILINE,
    )
    assert found is not None, populate_output
    return found.group(1), found.group(2)


ENV_CODE = (
    "import json, os\n"
    "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('BACKENDAI_CLUSTER_')}))"
)
LOG_CODE = (
    "import os\n"
    "print('on', os.environ['BACKENDAI_CLUSTER_HOST'])\n"
    # The runner's own stderr is the kernel's log file, which /logs reads.
    "with open(f'/proc/{os.getppid()}/fd/2', 'a') as log:\n"
    "    print('into the kernel log', file=log)\n"
)


async def test_manager_and_two_agents_as_separate_processes(deployment: Deployment) -> None:
    d = deployment
    access_key, secret_key = _admin_keys(await d.cli("fixture", "populate", "default"))
    await d.cli("config", "put", "config/redis/addr", "10.0.0.5:6379")

    manager = d.daemon("manager", "manager", "--config", str(d.manager_toml))
    agents = [
        d.daemon(f"agent{n}", "agent", "--config", str(toml))
        for n, toml in enumerate(d.agent_tomls, 1)
    ]
    for daemon in (manager, *agents):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    assert manager.process is not None
    assert d.pid_file.read_text() == f"{manager.process.pid}\n"

    config = APIConfig(endpoint=d.endpoint, access_key=access_key, secret_key=secret_key)
    sessions = d.session_ids
    async with APIClient(config) as api:
        first, second = d.agent_ids
        await wait_for_agents(api, {first: "ALIVE", second: "ALIVE"}, d.daemons)
        # What the CLI wrote straight into the database, the running manager serves.
        assert await get_config(api, "config/redis/addr") == "10.0.0.5:6379"

        # A two-kernel multi-node session: each kernel takes a whole agent's CPUs,
        # so the scheduler has to put them on different agents.
        cpus = (await graphql(api, "query { agents { id cpu_slots } }"))["agents"][0]["cpu_slots"]
        cluster = await ComputeSession.create(
            api,
            "python",
            name="multi",
            cluster_size=2,
            cluster_mode="multi-node",
            resources={"cpu": int(cpus), "mem": "128m"},
            max_wait=30,
        )
        assert cluster.status == "RUNNING"
        assert cluster.id is not None
        sessions.append(str(cluster.id))
        kernels = (await cluster.info())["kernels"]
        placed = {k["clusterHostname"]: k["agent"] for k in kernels}
        assert placed.keys() == {"main1", "sub1"}
        assert set(placed.values()) == {first, second}
        env = json.loads(await output_of(cluster, ENV_CODE))
        assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1"
        assert env["BACKENDAI_CLUSTER_HOST"] == "main1"
        assert env["BACKENDAI_CLUSTER_ROLE"] == "main"
        assert env["BACKENDAI_CLUSTER_SIZE"] == "2"
        # The sub kernel is a live process of its own, on the other agent.
        running = kernel_processes(sessions).values()
        assert {p.get("BACKENDAI_CLUSTER_HOST") for p in running} == {"main1", "sub1"}
        assert {p.get("BACKENDAI_CLUSTER_ROLE") for p in running} == {"main", "sub"}
        await cluster.destroy()
        assert kernel_processes(sessions) == {}
        assert (await cluster.info())["status"] == "TERMINATED"

        # kill -9 an agent: the manager declares it LOST after the heartbeat timeout.
        assert agents[1].process is not None
        agents[1].process.kill()
        await agents[1].process.wait()
        await wait_for_agents(api, {first: "ALIVE", second: "LOST"}, [manager, agents[0]])

        # With the second agent lost, a one-kernel session lands on the first.
        single = await ComputeSession.create(
            api, "python", name="single", resources={"cpu": 1, "mem": "128m"}, max_wait=30
        )
        assert single.status == "RUNNING"
        assert single.id is not None
        sessions.append(str(single.id))
        assert [k["agent"] for k in (await single.info())["kernels"]] == [first]
        assert await output_of(single, LOG_CODE) == "on main1\n"
        assert "into the kernel log\n" in await single.logs()

        # The killed agent comes back under the same id and is ALIVE again.
        revived = d.daemon("agent2-restarted", "agent", "--config", str(d.agent_tomls[1]))
        await revived.start()
        await wait_for_agents(api, {first: "ALIVE", second: "ALIVE"}, [manager, revived])

        # Ctrl-C on the agent that runs the session: it kills the kernel and exits 0,
        # and the manager, still up, records why the session ended.
        assert kernel_processes(sessions) != {}
        assert await agents[0].stop(signal.SIGINT) == 0
        assert kernel_processes(sessions) == {}
        with trio.fail_after(START_TIMEOUT):
            while True:
                info = await single.info()
                if info["status"] == "TERMINATED":
                    break
                await trio.sleep(0.2)
        assert info["statusInfo"] == "agent-termination"
        await wait_for_agents(api, {first: "TERMINATED"}, [manager])

    codes: dict[str, int] = {}

    async def stop(daemon: Daemon, signum: signal.Signals) -> None:
        codes[daemon.name] = await daemon.stop(signum)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop, revived, signal.SIGTERM)
        nursery.start_soon(stop, manager, signal.SIGTERM)
    assert codes == {"agent2-restarted": 0, "manager": 0}
    assert not d.pid_file.exists()
    assert kernel_processes(sessions) == {}
    for daemon in d.daemons:
        assert "Traceback" not in daemon.output(), daemon.output()


async def _keys_of(pg_url: str, email: str) -> tuple[str, str]:
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


async def test_a_users_session_reaches_nothing_of_the_deployment(
    deployment: Deployment, pg_url: str
) -> None:
    d = deployment
    await d.cli("fixture", "populate", "default")
    admin = await _keys_of(pg_url, "admin@lablup.com")
    user = await _keys_of(pg_url, "user@lablup.com")
    manager = d.daemon("manager", "manager", "--config", str(d.manager_toml))
    agent = d.daemon("agent1", "agent", "--config", str(d.agent_tomls[0]))
    for daemon in (manager, agent):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    port = int(d.endpoint.rsplit(":", 1)[1])
    admin_config = APIConfig(endpoint=d.endpoint, access_key=admin[0], secret_key=admin[1])
    user_config = APIConfig(endpoint=d.endpoint, access_key=user[0], secret_key=user[1])
    async with APIClient(admin_config) as api:
        await wait_for_agents(api, {d.agent_ids[0]: "ALIVE"}, d.daemons)
    ipc_base = str(d.tmp / "agent1" / "var")
    async with APIClient(user_config) as api:
        session = await ComputeSession.create(
            api, "python", name="hostile", resources={"cpu": 1, "mem": "128m"}, max_wait=30
        )
        assert session.id is not None
        d.session_ids.append(str(session.id))
        paths = [
            str(d.manager_toml),
            str(d.agent_tomls[0]),
            str(d.tmp / "manager.log"),
            *(str(p) for p in (d.tmp / "agent1" / "var" / "kernels").glob("*")),
        ]
        code = probe_code(paths, listed=[ipc_base], ports=[port])
        found = parse(await output_of(session, code))
        await session.destroy()
    assert_contained(found)
    assert found["listings"][ipc_base] == 2  # ENOENT: the agent's state is not there
    for daemon in (agent, manager):
        assert await daemon.stop(signal.SIGTERM) == 0


async def test_batch_sessions_outlive_a_kill_9_of_their_manager(
    deployment: Deployment, pg_url: str
) -> None:
    d = deployment
    await d.cli("fixture", "populate", "default")
    access_key, secret_key = await _keys_of(pg_url, "admin@lablup.com")
    manager = d.daemon("manager", "manager", "--config", str(d.manager_toml))
    agent = d.daemon("agent1", "agent", "--config", str(d.agent_tomls[0]))
    for daemon in (manager, agent):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    config = APIConfig(endpoint=d.endpoint, access_key=access_key, secret_key=secret_key)
    async with APIClient(config) as api:
        await wait_for_agents(api, {d.agent_ids[0]: "ALIVE"}, d.daemons)
        jobs: dict[int, ComputeSession] = {}
        for code in (0, 3):
            job = await ComputeSession.create(
                api,
                "python",
                name=f"job-{code}",
                type="batch",
                startup_command=f"sleep 3; exit {code}",
                resources={"cpu": 1, "mem": "128m"},
                max_wait=30,
            )
            assert job.id is not None
            d.session_ids.append(str(job.id))
            jobs[code] = job
        # The manager driving both jobs dies; a new one takes them over from the database.
        assert manager.process is not None
        manager.process.kill()
        await manager.process.wait()
        revived = d.daemon("manager-restarted", "manager", "--config", str(d.manager_toml))
        await revived.start()
        await wait_until_serving(d.endpoint, [revived, agent])
        ended: dict[int, dict[str, Any]] = {}
        with trio.fail_after(60):
            for code, job in jobs.items():
                while True:
                    info = await job.info()
                    if info["status"] == "TERMINATED":
                        break
                    await trio.sleep(0.5)
                ended[code] = info
    assert ended[0]["statusInfo"] == "task-finished"
    assert ended[3]["statusInfo"] == "task-failed"
    assert [k["exitCode"] for k in ended[3]["kernels"]] == [3]
    assert kernel_processes(d.session_ids) == {}
    for daemon in (agent, revived):
        assert await daemon.stop(signal.SIGTERM) == 0
