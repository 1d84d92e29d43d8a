"""Agents that go silent and kernels that never start: every session reaches a defined status."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from bai.common.config import Duration
from bai.common.events import AgentHeartbeat, AgentTerminated
from bai.common.types import AgentId, KernelStatus, SessionStatus
from bai.manager.models import agents
from bai.manager.models.usage import agent_occupancy

from support.agent import agent_config, fake_runner
from support.registry import eventually, running_cluster, unreadable


async def test_a_lost_agent_fails_its_sessions_and_frees_their_slots(
    db_url: str, tmp_path: Path
) -> None:
    config = agent_config(tmp_path / "agent")
    # The agent keeps running but stops heartbeating after its first report.
    quiet = msgspec.structs.replace(
        config, agent=msgspec.structs.replace(config.agent, heartbeat_interval=Duration(600))
    )
    # It stays silent past the grace its kernels wait for it, RUNNING_DEGRADED.
    deadlines = {"heartbeat-timeout": "2s", "lost-agent-grace": "1s"}
    async with running_cluster(
        db_url, tmp_path, agent_configs=[quiet], manager=deadlines
    ) as cluster:
        agent = cluster.agents[0]
        info = await cluster.start()
        assert info.status is SessionStatus.RUNNING
        lost = await cluster.wait_status(info.id, SessionStatus.ERROR, within=15)
        assert lost.status_info == "agent-lost"
        assert lost.main_kernel.status is KernelStatus.ERROR
        status = await cluster.db.fetch(
            sa.select(agents.c.status).where(agents.c.id == agent.agent_id)
        )
        assert status.scalar() == "LOST"
        async with cluster.db.begin() as conn:
            used = await agent_occupancy(conn, [agent.agent_id])
        assert used[AgentId(agent.agent_id)].container_count == 0
        await cluster.events.wait_for(
            lambda e: isinstance(e, AgentTerminated) and e.reason == "agent-lost"
        )
        # A session asked for meanwhile waits for an agent instead of being refused.
        waiting = await cluster.enqueue()
        assert waiting.status is SessionStatus.PENDING
        # The agent reports again: it is ALIVE, the kernel the manager gave up on is
        # destroyed there, and the waiting session starts on it.
        assert len(agent.kernels) == 1
        await cluster.buses[0].publish(
            AgentHeartbeat(agent_id=AgentId(agent.agent_id), agent_info=agent.agent_info())
        )
        started = await cluster.registry.wait_for_start(waiting.id, timeout=20)
        assert started.status is SessionStatus.RUNNING
        await eventually(lambda: str(info.main_kernel.id) not in agent.kernels)
        # The failed session is still ERROR until destroyed, then TERMINATED.
        assert (await cluster.registry.get_session_by_id(info.id)).status is SessionStatus.ERROR
        ended = (await cluster.registry.destroy_session(lost)).session
        assert ended.status is SessionStatus.TERMINATED
        await cluster.registry.destroy_session(started)


async def test_a_runtime_that_cannot_start_ends_in_error(db_url: str, tmp_path: Path) -> None:
    broken = fake_runner(
        tmp_path, "broken-python", "#!/bin/sh\necho 'runner cannot start' >&2\nexit 3\n"
    )
    async with running_cluster(
        db_url, tmp_path, agent_options={"runner_python": str(broken), "start_timeout": 5.0}
    ) as cluster:
        info = await cluster.start()
        assert info.status is SessionStatus.ERROR
        assert info.status_info == "failed-to-start"
        assert info.status_data is not None
        error = info.status_data["error"]
        assert error["name"] == "KernelCreationFailed"
        assert "runner cannot start" in error["repr"]
        assert cluster.agents[0].kernels == {}
        assert "session_terminated" not in cluster.events.names_of(info.id)
        ended = (await cluster.registry.destroy_session(info)).session
        assert ended.status is SessionStatus.TERMINATED


async def test_creation_past_its_deadline_ends_in_error(db_url: str, tmp_path: Path) -> None:
    hanging = fake_runner(tmp_path, "hanging-python", "#!/bin/sh\nexec sleep 60\n")
    async with running_cluster(
        db_url,
        tmp_path,
        manager={"kernel-creation-timeout": "1.5s"},
        agent_options={"runner_python": str(hanging), "start_timeout": 30.0},
    ) as cluster:
        info = await cluster.start()
        assert info.status is SessionStatus.ERROR
        assert info.status_info == "creation-timeout"
        agent = cluster.agents[0]
        # What the agent was still creating is destroyed there.
        await eventually(lambda: not agent.kernels)
        async with cluster.db.begin() as conn:
            used = await agent_occupancy(conn, [agent.agent_id])
        assert used[AgentId(agent.agent_id)].container_count == 0
        ended = (await cluster.registry.destroy_session(info)).session
        assert ended.status is SessionStatus.TERMINATED


async def test_a_database_outage_during_the_kernel_sync_is_retried_at_the_next_heartbeat(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bai.manager")
    config = agent_config(tmp_path / "agent")
    # Heartbeats come only from the test, so the sync runs exactly when it says.
    quiet = msgspec.structs.replace(
        config, agent=msgspec.structs.replace(config.agent, heartbeat_interval=Duration(600))
    )
    async with running_cluster(db_url, tmp_path, agent_configs=[quiet]) as cluster:
        agent = cluster.agents[0]
        heartbeat = AgentHeartbeat(agent_id=AgentId(agent.agent_id), agent_info=agent.agent_info())
        info = await cluster.start()
        assert info.status is SessionStatus.RUNNING
        # The manager gives the agent up; its session waits for it, degraded.
        assert await cluster.ctx.agents.mark_lost(agent.agent_id)
        waiting = await cluster.registry.get_session_by_id(info.id)
        assert waiting.status is SessionStatus.RUNNING_DEGRADED
        assert waiting.status_info == "agent-lost"
        kernel_id = str(info.main_kernel.id)
        assert kernel_id in agent.kernels
        async with unreadable(cluster.db, "kernels"):
            await cluster.buses[0].publish(heartbeat)
            await eventually(lambda: "could not reconcile the kernels of agent" in caplog.text)
        assert kernel_id in agent.kernels
        # The same heartbeat again (nothing to register): the manager survived the
        # outage, syncs now and finds the kernel still there.
        await cluster.buses[0].publish(heartbeat)
        await eventually(lambda: "is back: 1 of its sessions go on" in caplog.text)
        back = await cluster.registry.get_session_by_id(info.id)
        assert back.status is SessionStatus.RUNNING
        assert kernel_id in agent.kernels
        assert await cluster.output(back, "print(6 * 7)") == "42\n"
        later = await cluster.start()
        assert later.status is SessionStatus.RUNNING
        for session in (back, later):
            ended = (await cluster.registry.destroy_session(session)).session
            assert ended.status is SessionStatus.TERMINATED
