"""Two managers scheduling the same queue at once never over-allocate an agent.

Each manager has its own database connections (as separate processes do);
on PostgreSQL the advisory lock serialises their passes, on SQLite the write
transaction does.
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import trio

from bai.common.config import ManagerConfig, parse_config
from bai.common.events import InProcEventBus
from bai.common.slots import ResourceSlot
from bai.manager.context import ManagerContext
from bai.manager.db import create_database
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import agents, kernels, keypairs
from bai.manager.models.resource import AgentStatus
from bai.manager.scheduler.validation import normalize_architecture
from bai.manager.server import build_services
from bai.manager.sessions.model import SessionRequest

ARCH = normalize_architecture(platform.machine())


@pytest.fixture
async def managers(db_url: str) -> AsyncIterator[list[ManagerContext]]:
    config = parse_config(ManagerConfig, "")
    async with (
        create_database(db_url, statement_timeout=20.0, acquire_timeout=20.0) as db1,
        create_database(db_url, statement_timeout=20.0, acquire_timeout=20.0) as db2,
    ):
        fixture = default_fixture()
        fixture["images"] = [
            {
                "name": "python:3.11",
                "registry": "local",
                "image": "python",
                "tag": "3.11",
                "architecture": ARCH,
                "aliases": ["python"],
            }
        ]
        await populate(db1, fixture)
        contexts = []
        for db in (db1, db2):
            ctx = build_services(config, db, InProcEventBus())
            contexts.append(ctx)
        yield contexts


async def test_concurrent_passes_of_two_managers(managers: list[ManagerContext]) -> None:
    first, second = managers
    async with first.db.begin() as conn:
        for agent_id, cpu in (("agent-a", 3), ("agent-b", 2)):
            await conn.execute(
                sa.insert(agents).values(
                    id=agent_id,
                    status=AgentStatus.ALIVE,
                    scaling_group="default",
                    addr=f"inproc://{agent_id}",
                    architecture=ARCH,
                    available_slots=ResourceSlot({"cpu": cpu, "mem": 64 * 1024**3}),
                    compute_plugins={"cpu": {"slot_types": {"cpu": "count"}}},
                )
            )
    user_key = (
        await first.db.fetch(
            sa.select(keypairs.c.access_key).where(keypairs.c.user_id == "user@lablup.com")
        )
    ).scalar()
    for index in range(10):
        ctx = managers[index % 2]
        await ctx.registry.enqueue_session(
            user_key, SessionRequest(image="python", resources={"cpu": "1", "mem": "64m"})
        )
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(first.dispatcher.run_pass)
            nursery.start_soon(second.dispatcher.run_pass)
    rows = await second.db.fetch(sa.select(kernels.c.agent, kernels.c.status))
    placed = sorted(row.agent for row in rows if row.status == "SCHEDULED")
    assert placed == ["agent-a"] * 3 + ["agent-b"] * 2
    assert sum(1 for row in rows if row.status == "PENDING") == 5
