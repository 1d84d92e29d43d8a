"""Scheduling passes of the dispatcher against an in-memory SQLite database.

Sessions are queued through the real registry; agents are rows as their
heartbeats would have written them.  No agent runs: placed sessions stay
SCHEDULED, which is what a pass decides.
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from bai.common.config import ManagerConfig, parse_config
from bai.common.errors import InvalidValue
from bai.common.events import InProcEventBus
from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus, SessionStatus
from bai.manager.db import Database, create_database
from bai.manager.errors import AgentNotFound
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import (
    agents,
    kernels,
    keypair_resource_policies,
    keypairs,
    migrate,
    scaling_groups,
)
from bai.manager.models.resource import AgentStatus
from bai.manager.models.usage import agent_occupancy
from bai.manager.scheduler.dispatcher import Dispatcher
from bai.manager.scheduler.validation import normalize_architecture
from bai.manager.server import build_services
from bai.manager.sessions.model import SessionInfo, SessionRequest
from bai.manager.sessions.registry import SessionRegistry

ARCH = normalize_architecture(platform.machine())
PLUGINS = {
    "cpu": {"slot_types": {"cpu": "count"}},
    "mem": {"slot_types": {"mem": "bytes"}},
}


@dataclass
class Setup:
    db: Database
    registry: SessionRegistry
    dispatcher: Dispatcher
    user_key: str

    async def enqueue(self, cpu: str = "1", **options: Any) -> SessionInfo:
        request = SessionRequest(image="python", resources={"cpu": cpu, "mem": "64m"}, **options)
        return (await self.registry.enqueue_session(self.user_key, request)).session

    async def add_agent(self, agent_id: str, cpu: int) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                sa.insert(agents).values(
                    id=agent_id,
                    status=AgentStatus.ALIVE,
                    scaling_group="default",
                    addr=f"inproc://{agent_id}",
                    architecture=ARCH,
                    available_slots=ResourceSlot({"cpu": cpu, "mem": 64 * 1024**3}),
                    compute_plugins=PLUGINS,
                )
            )

    async def status_of(self, session: SessionInfo) -> SessionInfo:
        return await self.registry.get_session_by_id(session.id)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with create_database("sqlite://") as db:
        await migrate.upgrade(db)
        fixture = default_fixture()
        fixture["images"] = [
            {
                "name": "python:3.11",
                "registry": "local",
                "image": "python",
                "tag": "3.11",
                "architecture": ARCH,
                "aliases": ["python"],
                "resources": {"cpu": {"min": "1"}, "mem": {"min": "64m"}},
            }
        ]
        await populate(db, fixture)
        user_key = (
            await db.fetch(
                sa.select(keypairs.c.access_key).where(keypairs.c.user_id == "user@lablup.com")
            )
        ).scalar()
        config = parse_config(ManagerConfig, "")
        ctx = build_services(config, db, InProcEventBus())
        yield Setup(db, ctx.registry, ctx.dispatcher, user_key)


async def test_fifo_places_what_fits_and_holds_the_rest(setup: Setup) -> None:
    await setup.add_agent("agent-a", cpu=4)
    big1 = await setup.enqueue("3")
    big2 = await setup.enqueue("3")
    small = await setup.enqueue("1")
    report = await setup.dispatcher.run_pass()
    assert report.scheduled == (big1.id,)
    assert report.waiting == 2
    placed = await setup.status_of(big1)
    assert placed.status is SessionStatus.SCHEDULED
    assert placed.main_kernel.status is KernelStatus.SCHEDULED
    assert placed.main_kernel.agent == "agent-a"
    assert placed.main_kernel.occupied_slots.get("cpu") == 3
    waiting = await setup.status_of(big2)
    assert waiting.status is SessionStatus.PENDING
    assert waiting.status_data is not None
    note = waiting.status_data["scheduler"]
    assert note["retries"] == 1 and "last_try" in note
    # Strict FIFO: the small session would fit but waits behind the older one.
    held = await setup.status_of(small)
    assert held.status is SessionStatus.PENDING
    assert held.status_data is not None
    assert "head-of-line" in held.status_data["scheduler"]["msg"]
    async with setup.db.begin() as conn:
        used = await agent_occupancy(conn)
    assert used["agent-a"].occupied_slots.get("cpu") == 3  # type: ignore[index]
    again = await setup.dispatcher.run_pass()
    assert again.scheduled == ()
    assert (await setup.status_of(big2)).status_data["scheduler"]["retries"] == 2  # type: ignore[index]


async def test_many_passes_never_over_allocate(setup: Setup) -> None:
    await setup.add_agent("agent-a", cpu=3)
    await setup.add_agent("agent-b", cpu=2)
    queued = [await setup.enqueue("1") for _ in range(8)]
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(setup.dispatcher.run_pass)
    rows = await setup.db.fetch(sa.select(kernels.c.agent, kernels.c.status))
    placed = [row.agent for row in rows if row.status == "SCHEDULED"]
    assert sorted(placed) == ["agent-a"] * 3 + ["agent-b"] * 2
    statuses = [(await setup.status_of(s)).status for s in queued]
    assert statuses.count(SessionStatus.SCHEDULED) == 5
    assert statuses.count(SessionStatus.PENDING) == 3


async def test_excluded_agents_get_nothing_until_included(setup: Setup) -> None:
    await setup.add_agent("agent-a", cpu=4)
    assert await setup.dispatcher.operation("exclude-agents", ["agent-a"]) == ["agent-a"]
    session = await setup.enqueue()
    assert (await setup.dispatcher.run_pass()).scheduled == ()
    status = await setup.dispatcher.status()
    assert status["excluded_agents"] == ["agent-a"]
    assert status["pending_sessions"] == 1
    assert status["last_pass"]["waiting"] == 1
    with pytest.raises(InvalidValue):
        await setup.dispatcher.operation("reboot-agents", ["agent-a"])
    with pytest.raises(AgentNotFound):
        await setup.dispatcher.operation("include-agents", ["agent-a", "agent-zzz"])
    assert (await setup.dispatcher.status())["excluded_agents"] == ["agent-a"]
    await setup.dispatcher.operation("include-agents", ["agent-a"])
    assert (await setup.dispatcher.run_pass()).scheduled == (session.id,)


async def test_hopeless_sessions_are_cancelled(setup: Setup) -> None:
    await setup.add_agent("agent-a", cpu=4)
    await setup.dispatcher.operation("exclude-agents", ["agent-a"])
    first = await setup.enqueue()
    dependent = await setup.enqueue(dependencies=[str(first.id)])
    await setup.registry.destroy_session(first)
    report = await setup.dispatcher.run_pass()
    assert report.cancelled == (dependent.id,)
    ended = await setup.status_of(dependent)
    assert ended.status is SessionStatus.CANCELLED
    assert ended.status_info == "dependency-failed"
    assert ended.status_data is not None
    failed = ended.status_data["scheduler"]["failed_predicates"]
    assert failed[0]["name"] == "dependencies"

    async with setup.db.begin() as conn:
        await conn.execute(
            sa.update(scaling_groups).values(scheduler_opts={"pending_timeout": 0.01})
        )
    late = await setup.enqueue()
    await trio.sleep(0.05)
    await setup.dispatcher.run_pass()
    timed_out = await setup.status_of(late)
    assert timed_out.status is SessionStatus.CANCELLED
    assert timed_out.status_info == "pending-timeout"


async def test_the_pending_resource_limit_caps_only_the_slots_it_names(setup: Setup) -> None:
    async def limit_pending(slots: ResourceSlot) -> list[SessionStatus]:
        async with setup.db.begin() as conn:
            await conn.execute(
                sa.update(keypair_resource_policies).values(
                    max_pending_session_resource_slots=slots
                )
            )
        await setup.dispatcher.run_pass()
        return [(await setup.status_of(s)).status for s in queued]

    await setup.add_agent("agent-a", cpu=4)
    await setup.dispatcher.operation("exclude-agents", ["agent-a"])
    queued = [await setup.enqueue("1") for _ in range(3)]
    await setup.dispatcher.operation("include-agents", ["agent-a"])
    # Only cpu is named: the sessions' mem is not capped, the third one's cpu is.
    assert (await limit_pending(ResourceSlot({"cpu": 2}))).count(SessionStatus.SCHEDULED) == 2
    held = await setup.status_of(queued[2])
    assert held.status is SessionStatus.PENDING
    assert held.status_data is not None
    assert "max_pending_session_resource_slots" in held.status_data["scheduler"]["msg"]
    # A limit that names no slot caps nothing.
    assert await limit_pending(ResourceSlot()) == [SessionStatus.SCHEDULED] * 3


async def test_a_misconfigured_resource_group_schedules_nothing(setup: Setup) -> None:
    await setup.add_agent("agent-a", cpu=4)
    await setup.dispatcher.operation("exclude-agents", ["agent-a"])
    session = await setup.enqueue()
    async with setup.db.begin() as conn:
        await conn.execute(sa.update(scaling_groups).values(scheduler="no-such-sequencer"))
    await setup.dispatcher.operation("include-agents", ["agent-a"])
    report = await setup.dispatcher.run_pass()
    assert report.scheduled == ()
    held = await setup.status_of(session)
    assert held.status is SessionStatus.PENDING
    assert held.status_data is not None
    assert "no-such-sequencer" in held.status_data["scheduler"]["error"]


async def test_trigger_runs_a_pass_in_the_service(setup: Setup) -> None:
    await setup.add_agent("agent-a", cpu=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(setup.dispatcher.serve)
        session = await setup.enqueue()
        with trio.fail_after(5):
            while True:
                if (await setup.status_of(session)).status is SessionStatus.SCHEDULED:
                    break
                await trio.sleep(0.01)
        status = await setup.dispatcher.status()
        assert status["running"] and status["passes"] >= 1
        nursery.cancel_scope.cancel()
