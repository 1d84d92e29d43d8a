"""Fault tolerance of the distributed mode, as separate processes throughout.

Two ``bai manager`` processes share one PostgreSQL database and two ``bai
agent`` processes; they meet through a ``redis-server`` that the test runs
itself, so it can stop it and start it again empty.  The test talks to both
managers as users would, through the client SDK over HTTP, and compares what
the database says with the kernel processes that really run on the host.

The manager's heartbeat timeout is 3 s (agents beat every second).
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from bai.client import APIClient, APIConfig, ComputeSession
from bai.common.slots import ResourceSlot
from bai.manager.db import Database, create_database
from bai.manager.models import agents
from bai.manager.models.usage import agent_occupancy

from support.agent import alive
from support.distributed import (
    HEARTBEAT_TIMEOUT,
    Daemon,
    Deployment,
    RedisServer,
    deploy,
    kernel_processes,
    keys_of,
    output_of,
    private_redis_server,
    start_session,
    wait_for_agents,
    wait_until_serving,
)

SESSION_TIMEOUT = 60.0


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    async with private_redis_server() as server:
        yield server


@pytest.fixture
async def deployment(
    pg_url: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Deployment]:
    async with deploy(
        pg_url,
        tmp_path,
        redis=f"127.0.0.1:{redis_server.port}",
        managers=2,
        manager_options={"lost-agent-grace": "60s"},
    ) as found:
        yield found


@dataclass
class Running:
    """The started daemons and a client of each manager."""

    managers: list[Daemon]
    agents: list[Daemon]
    apis: list[APIClient]
    db: Database

    @property
    def daemons(self) -> list[Daemon]:
        return [*self.managers, *self.agents]


@asynccontextmanager
async def running(d: Deployment, pg_url: str) -> AsyncIterator[Running]:
    """Both managers and both agents started, the agents ALIVE; clients for both managers."""
    await d.cli("fixture", "populate", "default")
    access_key, secret_key = await keys_of(pg_url, "admin@lablup.com")
    managers = [d.manager(n, f"manager{n + 1}") for n in range(2)]
    agent_daemons = [d.agent(n, f"agent{n + 1}") for n in range(2)]
    for daemon in (*managers, *agent_daemons):
        await daemon.start()
    async with AsyncExitStack() as stack:
        apis = []
        for endpoint in d.endpoints:
            await wait_until_serving(endpoint, d.daemons)
            config = APIConfig(endpoint=endpoint, access_key=access_key, secret_key=secret_key)
            apis.append(await stack.enter_async_context(APIClient(config)))
        alive = dict.fromkeys(d.agent_ids, "ALIVE")
        await wait_for_agents(apis[0], alive, d.daemons)
        db = await stack.enter_async_context(create_database(pg_url))
        yield Running(managers, agent_daemons, apis, db)


def via(api: APIClient, session: ComputeSession) -> ComputeSession:
    """*session* as a client of *api*'s manager reaches it."""
    return ComputeSession(api, session.name, session_id=session.id)


async def status_of(api: APIClient, session: ComputeSession) -> dict[str, Any]:
    """The session as a client of *api*'s manager sees it."""
    info: dict[str, Any] = await via(api, session).info()
    return info


async def wait_for_status(api: APIClient, session: ComputeSession, status: str) -> dict[str, Any]:
    with trio.fail_after(SESSION_TIMEOUT):
        while True:
            info = await status_of(api, session)
            if info["status"] == status:
                return info
            await trio.sleep(0.2)


async def agent_rows(db: Database) -> dict[str, tuple[str, object]]:
    rows = await db.fetch(sa.select(agents.c.id, agents.c.status, agents.c.status_changed))
    return {row.id: (row.status, row.status_changed) for row in rows}


async def occupied_kernels(db: Database) -> int:
    """Kernels holding slots on any agent, by the database (occupancy derives from kernels)."""
    async with db.begin() as conn:
        used = await agent_occupancy(conn)
    return sum(o.container_count for o in used.values())


async def running_command(session: ComputeSession, name: bytes) -> None:
    """Wait until a process *name* runs in *session*'s kernel (its batch job has begun)."""
    with trio.fail_after(SESSION_TIMEOUT):
        while True:
            if any(command(pid).startswith(name) for pid in kernel_processes([str(session.id)])):
                return
            await trio.sleep(0.1)


def command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def live_sessions(session_ids: list[str]) -> set[str]:
    """The sessions that have at least one kernel process on this host."""
    return {env["BACKENDAI_SESSION_ID"] for env in kernel_processes(session_ids).values()}


async def stop_all(r: Running) -> None:
    for daemon in r.daemons:
        if daemon.running:
            assert await daemon.stop(signal.SIGTERM) == 0, daemon.output()
    for daemon in r.daemons:
        assert "Traceback" not in daemon.output(), daemon.output()


async def test_sessions_outlive_a_redis_outage_of_twice_the_heartbeat_timeout(
    deployment: Deployment, redis_server: RedisServer, pg_url: str
) -> None:
    d = deployment
    async with running(d, pg_url) as r:
        first, second = r.apis
        kept = [await start_session(d, first, "kept-1"), await start_session(d, second, "kept-2")]
        victim = await start_session(d, first, "victim")
        before = await agent_rows(r.db)

        await redis_server.stop()
        # A kernel dies while nobody can hear its agent's report.
        assert victim.id is not None
        for pid in kernel_processes([str(victim.id)]):
            os.kill(pid, signal.SIGKILL)
        await trio.sleep(2 * HEARTBEAT_TIMEOUT + 0.5)
        await redis_server.start()

        # Its session ends within seconds of Redis returning, and frees its slots.
        with trio.fail_after(10):
            ended = await wait_for_status(second, victim, "TERMINATED")
        assert ended["statusInfo"] == "self-terminated"
        assert [k["exitCode"] for k in ended["kernels"]] == [128 + signal.SIGKILL]
        # Long enough after the outage for a manager that blamed the agents to act.
        await trio.sleep(2 * HEARTBEAT_TIMEOUT)
        assert await agent_rows(r.db) == before
        for api, session in zip((second, first), kept, strict=True):
            assert (await status_of(api, session))["status"] == "RUNNING"
            assert await output_of(via(api, session), "print('here')") == "here\n"
        assert await occupied_kernels(r.db) == len(live_sessions(d.session_ids)) == 2
        for session in kept:
            await session.destroy()
        assert kernel_processes(d.session_ids) == {}
        assert await occupied_kernels(r.db) == 0
        await stop_all(r)


IGNORE_SIGTERM = (
    "import subprocess\n"
    "subprocess.Popen(['sh', '-c', \"trap '' TERM; exec sleep 1000\"], start_new_session=True,\n"
    "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print('spawned')\n"
)


async def test_a_lost_agent_back_within_the_grace_keeps_its_sessions(
    deployment: Deployment, pg_url: str
) -> None:
    d = deployment
    async with running(d, pg_url) as r:
        first, second = r.apis
        session = await start_session(d, first, "resilient")
        placed = (await session.info())["kernels"][0]["agent"]
        n = d.agent_ids.index(placed)
        # With the other agent shut down, the batch job lands beside the session.
        assert await r.agents[1 - n].stop(signal.SIGTERM) == 0
        await wait_for_agents(first, {d.agent_ids[1 - n]: "TERMINATED"}, r.managers)
        job = await start_session(
            d, second, "batch-job", type="batch", startup_command="sleep 10; exit 3"
        )
        # A process of the kernel's that ignores SIGTERM and left its session.
        assert await output_of(session, IGNORE_SIGTERM) == "spawned\n"
        pids = set(kernel_processes([str(session.id)]))
        assert len(pids) >= 2
        await running_command(job, b"sleep")

        await r.agents[n].kill()
        await wait_for_agents(second, {placed: "LOST"}, r.managers)
        waiting = await wait_for_status(second, session, "RUNNING_DEGRADED")
        assert waiting["statusInfo"] == "agent-lost"
        # The kernels do not depend on their agent's process.
        assert set(kernel_processes([str(session.id)])) == pids
        assert (await status_of(first, job))["status"] == "RUNNING_DEGRADED"

        revived = d.agent(n, f"agent{n + 1}-restarted")
        await revived.start()
        await wait_for_agents(first, {placed: "ALIVE"}, [*r.managers, revived])
        back = await wait_for_status(first, session, "RUNNING")
        assert back["statusInfo"] == "agent-returned"
        assert await output_of(via(second, session), "print('back')") == "back\n"
        # The batch job's driver waited for the agent and collects the job's own end.
        ended = await wait_for_status(first, job, "TERMINATED")
        assert ended["statusInfo"] == "task-failed"
        assert [k["exitCode"] for k in ended["kernels"]] == [3]

        # The re-adopted kernel is destroyed whole: SIGTERM, the grace, SIGKILL.
        await via(second, session).destroy()
        assert kernel_processes(d.session_ids) == {}
        assert not [pid for pid in pids if alive(pid)]
        assert await occupied_kernels(r.db) == 0
        r.agents[n] = revived
        await stop_all(r)


JOBS = 60
_STARTED = re.compile(r"kernel (\S+) started \(session (\S+)\)")


async def test_a_manager_killed_while_sixty_sessions_are_scheduled(
    deployment: Deployment, pg_url: str
) -> None:
    d = deployment
    async with running(d, pg_url) as r:
        capacity = ResourceSlot()
        for row in await r.db.fetch(sa.select(agents.c.available_slots)):
            capacity = capacity + row.available_slots
        overfull: list[str] = []
        done = trio.Event()

        async def sample() -> None:
            """Occupancy never exceeds capacity; live kernels never exceed what fits."""
            while not done.is_set():
                async with r.db.begin() as conn:
                    used = await agent_occupancy(conn)
                total = ResourceSlot()
                for o in used.values():
                    total = total + o.occupied_slots
                if not total <= capacity:
                    overfull.append(f"occupied {total} of {capacity}")
                live = len(live_sessions(d.session_ids))
                if live > int(capacity["cpu"]):
                    overfull.append(f"{live} sessions live on {capacity['cpu']} CPUs")
                await trio.sleep(0.25)

        jobs: list[ComputeSession] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            apis = list(r.apis)
            for i in range(JOBS):
                job = await ComputeSession.create(
                    apis[i % len(apis)],
                    "python",
                    name=f"job-{i}",
                    type="batch",
                    startup_command="sleep 0.5",
                    enqueue_only=True,
                    resources={"cpu": 1, "mem": "128m"},
                )
                assert job.id is not None
                d.session_ids.append(str(job.id))
                jobs.append(job)
                if i == JOBS // 3:
                    # The first manager dies in the middle of scheduling and driving them.
                    await r.managers[0].kill()
                    apis = [r.apis[1]]
            restarted = d.manager(0, "manager1-restarted")
            await restarted.start()
            await wait_until_serving(d.endpoints[0], [restarted, *r.agents])
            r.managers[0] = restarted
            ends = [await wait_for_status(r.apis[1], job, "TERMINATED") for job in jobs]
            done.set()

        assert overfull == []
        assert Counter(end["statusInfo"] for end in ends) == {"task-finished": JOBS}
        assert all([k["exitCode"] for k in end["kernels"]] == [0] for end in ends)
        started = Counter(
            found.group(1) for daemon in r.agents for found in _STARTED.finditer(daemon.output())
        )
        kernel_ids = {k["id"] for end in ends for k in end["kernels"]}
        assert set(started) == kernel_ids
        assert max(started.values()) == 1, "a kernel was started twice"
        assert kernel_processes(d.session_ids) == {}
        assert await occupied_kernels(r.db) == 0
        await stop_all(r)
