"""Redis outages in the distributed wiring: liveness from evidence and kernel-state repair.

The cluster (PostgreSQL, agents over ``ipc://``) runs on a Redis server of
its own that the tests stop and start again, empty, as a crashed Redis
without persistence comes back.  The manager's heartbeat timeout is short
(2 s, agents beat every second), so an outage of twice that would have
declared every agent LOST before.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import trio

from bai.common.types import SessionStatus
from bai.manager.models import agents
from bai.manager.models.usage import agent_occupancy

from support.distributed import RedisServer, private_redis_server
from support.registry import Cluster, eventually, running_cluster

HEARTBEAT_TIMEOUT = 2.0


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    async with private_redis_server() as server:
        yield server


@pytest.fixture
async def cluster(  # type: ignore[no-untyped-def]
    pg_url: str, redis_server: RedisServer, tmp_path: Path
):
    async with running_cluster(
        pg_url,
        tmp_path,
        redis_url=redis_server.url,
        rpc="ipc",
        manager={"heartbeat-timeout": f"{HEARTBEAT_TIMEOUT:g}s"},
    ) as c:
        yield c


async def _agent_rows(cluster: Cluster) -> list[tuple[str, str, object]]:
    rows = await cluster.db.fetch(
        sa.select(agents.c.id, agents.c.status, agents.c.status_changed).order_by(agents.c.id)
    )
    return [(row.id, row.status, row.status_changed) for row in rows]


async def _no_cpu_occupied(cluster: Cluster) -> bool:
    async with cluster.db.begin() as conn:
        used = await agent_occupancy(conn)
    return all(not o.occupied_slots.get("cpu") for o in used.values())


async def test_a_redis_outage_longer_than_the_heartbeat_timeout_loses_no_agent(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    info = await cluster.start()
    assert info.status is SessionStatus.RUNNING
    assert await cluster.output(info, "print(6 * 7)") == "42\n"
    before = await _agent_rows(cluster)
    assert [status for _, status, _ in before] == ["ALIVE"]

    await redis_server.stop()
    await trio.sleep(2 * HEARTBEAT_TIMEOUT + 0.5)
    # The manager could not read its bus: the agents' silence proves nothing.
    assert cluster.buses[0].read_health() is None
    assert await _agent_rows(cluster) == before
    await redis_server.start()
    # The grace period after the outage and then some: heartbeats flow again.
    await trio.sleep(2 * HEARTBEAT_TIMEOUT + 0.5)

    assert cluster.buses[0].read_health() is not None
    assert await _agent_rows(cluster) == before
    again = await cluster.registry.get_session_by_id(info.id)
    assert again.status is SessionStatus.RUNNING
    assert await cluster.output(again, "print('still here')") == "still here\n"
    assert cluster.agents[0].kernels.keys() == {str(k.id) for k in again.kernels}


async def test_a_kernel_killed_during_a_redis_outage_ends_its_session_once_redis_is_back(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    info = await cluster.start()
    assert info.status is SessionStatus.RUNNING
    await redis_server.stop()
    os.killpg(int(info.main_kernel.container_id or 0), signal.SIGKILL)
    agent = cluster.agents[0]
    # The agent noticed and kept the report it could not publish.
    await eventually(lambda: not agent.kernels and bool(agent._outbox), within=10)
    assert (await cluster.registry.get_session_by_id(info.id)).status is SessionStatus.RUNNING

    await redis_server.start()
    ended = await cluster.wait_status(info.id, SessionStatus.TERMINATED, within=8)
    assert ended.status_info == "self-terminated"
    assert ended.main_kernel.exit_code == 128 + signal.SIGKILL
    assert await _no_cpu_occupied(cluster)
    await eventually(lambda: not agent._outbox, within=5)


async def test_a_lost_kernel_end_report_is_repaired_from_heartbeats(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await cluster.start()
    agent = cluster.agents[0]

    async def lost(*args: object) -> None:
        """The report went into a Redis that crashed before anyone read it."""

    monkeypatch.setattr(agent, "_report_end", lost)
    os.killpg(int(info.main_kernel.container_id or 0), signal.SIGKILL)
    await eventually(lambda: not agent.kernels, within=10)
    monkeypatch.undo()

    # The heartbeats lack the kernel: the manager asks, the agent reports again.
    ended = await cluster.wait_status(info.id, SessionStatus.TERMINATED, within=8)
    assert ended.status_info == "self-terminated"
    assert ended.main_kernel.exit_code == 128 + signal.SIGKILL
    assert await _no_cpu_occupied(cluster)
    assert [status for _, status, _ in await _agent_rows(cluster)] == ["ALIVE"]
