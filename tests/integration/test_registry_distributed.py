"""The distributed wiring: PostgreSQL, Redis Streams and two agents reached over ``ipc://``.

Every component has its own Redis connection, as separate processes would,
so heartbeats, kernel reports and session events all cross Redis.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from bai.common.events import DoSchedule
from bai.common.types import ClusterMode, SessionStatus
from bai.manager.server import build_services
from bai.manager.sessions.model import SessionRequest

from support.registry import Cluster, manager_config, running_cluster


@pytest.fixture
async def cluster(pg_url: str, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_cluster(
        pg_url, tmp_path, agent_count=2, redis_url=redis_url, rpc="ipc"
    ) as c:
        yield c


async def test_a_multi_node_session_spans_both_agents(cluster: Cluster) -> None:
    first, second = cluster.agents
    assert first.rpc_urls[0].startswith("ipc://")
    cpus = (await cluster.capacity(first.agent_id))["cpu"]
    # Each kernel needs a whole agent, so the two kernels cannot share one.
    info = await cluster.start(
        cluster_size=2,
        cluster_mode=ClusterMode.MULTI_NODE,
        resources={"cpu": str(cpus), "mem": "128m"},
    )
    assert info.status is SessionStatus.RUNNING
    assert {k.agent for k in info.kernels} == {first.agent_id, second.agent_id}
    code = (
        "import os; "
        "print(os.environ['BACKENDAI_CLUSTER_HOSTS'], os.environ['BACKENDAI_CLUSTER_ROLE'])"
    )
    assert await cluster.output(info, code) == "main1,sub1 main\n"
    ended = (await cluster.registry.destroy_session(info)).session
    assert ended.status is SessionStatus.TERMINATED
    assert first.kernels == {} and second.kernels == {}
    names = cluster.events.names_of(info.id)
    assert names[0] == "session_enqueued" and names[-1] == "session_terminated"


async def test_a_kernel_that_dies_ends_its_session(cluster: Cluster) -> None:
    info = await cluster.start()
    assert info.status is SessionStatus.RUNNING
    os.killpg(int(info.main_kernel.container_id or 0), signal.SIGKILL)
    ended = await cluster.wait_status(info.id, SessionStatus.TERMINATED)
    assert ended.status_info == "self-terminated"
    assert ended.main_kernel.exit_code == 128 + signal.SIGKILL


async def test_a_session_enqueued_by_another_manager_is_scheduled_at_once(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    # The cluster's manager would schedule on its own only once an hour.
    async with running_cluster(
        pg_url, tmp_path, redis_url=redis_url, rpc="ipc", manager={"scheduler-interval": "1h"}
    ) as cluster:
        dispatcher = cluster.ctx.dispatcher
        # Let the passes the agent's arrival asked for end before the real test.
        with trio.fail_after(15):
            while True:
                if (await dispatcher.status())["passes"] >= 1:
                    break
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        passes_before = (await dispatcher.status())["passes"]
        # A second manager process without a dispatcher of its own (one that
        # only serves the API, say), on its own Redis connection.
        bus = await cluster.open_bus()
        other = build_services(manager_config(), cluster.db, bus, dispatcher=False)
        request = SessionRequest(image="python", resources={"cpu": "1", "mem": "256m"})
        queued = (await other.registry.enqueue_session(cluster.user_key, request)).session
        assert queued.status is SessionStatus.PENDING
        info = await cluster.registry.wait_for_start(queued.id, timeout=30)
        assert info.status is SessionStatus.RUNNING
        assert (await dispatcher.status())["passes"] > passes_before
        # The request crossed Redis from the manager that has no dispatcher.
        assert any(isinstance(e, DoSchedule) and e.origin == "" for e in cluster.events.seen)
        await cluster.registry.destroy_session(info)
