"""The reconcile pass finishes what a manager that died half-way left behind.

A crashed manager is imitated by writing the statuses it would have written
(through the transition function, with old timestamps) and not doing the rest.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus, SessionStatus
from bai.manager import transitions
from bai.manager.db import Connection
from bai.manager.models import agents, kernels
from bai.manager.models.base import utcnow
from bai.manager.models.resource import AgentStatus

from support.registry import Cluster, eventually, running_cluster, unreadable


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_cluster(db_url, tmp_path) as c:
        yield c


async def _abandon(
    cluster: Cluster, statuses: list[SessionStatus], *, age: timedelta, agent_id: str | None = None
) -> uuid.UUID:
    """A session a dead manager moved through *statuses*, the last one *age* ago.

    Its kernel is on *agent_id* (default: the cluster's first agent).
    """
    agent_id = agent_id or cluster.agents[0].agent_id
    # No scheduling pass may place it meanwhile.
    held = [agent.agent_id for agent in cluster.agents]
    await cluster.ctx.dispatcher.operation("exclude-agents", held)
    info = await cluster.enqueue()
    when = utcnow() - age

    async def write(conn: Connection) -> None:
        await transitions.transition_kernel(
            conn,
            info.main_kernel.id,
            KernelStatus.SCHEDULED,
            "scheduled",
            values={"agent": agent_id, "occupied_slots": info.main_kernel.requested_slots},
            now=when,
        )
        for status in statuses:
            await transitions.transition_session(
                conn, info.id, status, status.value.lower(), cascade_kernels=True, now=when
            )

    # A scheduling pass may hold the agent's row: retried like the manager's own writes.
    await cluster.db.transaction(write)
    await cluster.ctx.dispatcher.operation("include-agents", held)
    return info.id


async def test_a_scheduled_session_nobody_started_is_started(cluster: Cluster) -> None:
    session_id = await _abandon(cluster, [], age=timedelta(seconds=10))
    assert (await cluster.registry.get_session_by_id(session_id)).status is (
        SessionStatus.SCHEDULED
    )
    await cluster.registry.reconcile()
    started = await cluster.registry.wait_for_start(session_id, timeout=30)
    assert started.status is SessionStatus.RUNNING
    await cluster.registry.destroy_session(started)


async def test_a_session_stuck_creating_ends_in_error(cluster: Cluster) -> None:
    stuck = [SessionStatus.PREPARING, SessionStatus.CREATING]
    fresh = await _abandon(cluster, stuck, age=timedelta(seconds=1))
    old = await _abandon(cluster, stuck, age=timedelta(hours=1))
    await cluster.registry.reconcile()
    failed = await cluster.registry.get_session_by_id(old)
    assert failed.status is SessionStatus.ERROR
    assert failed.status_info == "creation-timeout"
    # One still within its deadline is left alone.
    waiting = await cluster.registry.get_session_by_id(fresh)
    assert waiting.status is SessionStatus.CREATING
    await cluster.registry.destroy_session(failed)
    await cluster.registry.destroy_session(waiting, forced=True)


async def test_a_session_stuck_terminating_ends(cluster: Cluster) -> None:
    running = await cluster.start()
    when = utcnow() - timedelta(hours=1)
    async with cluster.db.begin() as conn:
        await transitions.transition_session(
            conn,
            running.id,
            SessionStatus.TERMINATING,
            "user-requested",
            cascade_kernels=True,
            now=when,
        )
    # The kernel the dead manager did not get to destroy is still running on the agent.
    assert str(running.main_kernel.id) in cluster.agents[0].kernels
    await cluster.registry.reconcile()
    ended = await cluster.wait_status(running.id, SessionStatus.TERMINATED)
    assert ended.status_info in ("user-requested", "termination-timeout")
    assert str(running.main_kernel.id) not in cluster.agents[0].kernels
    rows = await cluster.db.fetch(
        sa.select(kernels.c.status).where(kernels.c.id == running.main_kernel.id)
    )
    assert rows.scalar() == "TERMINATED"


async def test_a_database_outage_while_destroying_a_stuck_sessions_kernels_is_survived(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bai.manager")
    async with running_cluster(db_url, tmp_path, manager={"heartbeat-timeout": "300s"}) as cluster:
        # An agent this manager process never called yet (as after a restart): calling
        # it starts with reading its address from the database.
        stranger = "i-never-called"
        async with cluster.db.begin() as conn:
            await conn.execute(
                sa.insert(agents).values(
                    id=stranger,
                    status=AgentStatus.ALIVE,
                    status_changed=utcnow(),
                    scaling_group="default",
                    schedulable=False,
                    available_slots=ResourceSlot(),
                    addr="inproc://bai-test-never-called",
                )
            )
        stuck = await _abandon(
            cluster,
            [SessionStatus.PREPARING, SessionStatus.CREATING],
            age=timedelta(hours=1),
            agent_id=stranger,
        )
        async with unreadable(cluster.db, "agents"):
            await cluster.registry.reconcile()
            await eventually(lambda: f"on agent {stranger}" in caplog.text)
        failed = await cluster.registry.get_session_by_id(stuck)
        assert failed.status is SessionStatus.ERROR
        assert failed.status_info == "creation-timeout"
        # The manager kept running through the outage.
        later = await cluster.start()
        assert later.status is SessionStatus.RUNNING
        await cluster.registry.destroy_session(later)
        assert await cluster.ctx.agents.mark_lost(stranger)
        ended = (await cluster.registry.destroy_session(failed, forced=True)).session
        assert ended.status is SessionStatus.TERMINATED
