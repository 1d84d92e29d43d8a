# ruff: noqa: F811  (the owner fixture is imported from test_db_transitions)
"""Usage derived from kernels, and the shared-config table, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
import trio
from test_db_transitions import Owner, make_session, move_kernels, owner  # noqa: F401

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus
from bai.manager.db import Database
from bai.manager.models import agents, kernels
from bai.manager.models.resource import AgentStatus
from bai.manager.models.shared_config import (
    delete_config,
    get_config,
    get_config_prefix,
    put_config,
    put_config_many,
)
from bai.manager.models.usage import AgentOccupancy, agent_occupancy, keypair_concurrency

ONE_CPU = ResourceSlot({"cpu": 1, "mem": 1 << 30})


async def schedule(db: Database, kernel_ids: list[uuid.UUID], agent: str) -> None:
    await move_kernels(
        db, kernel_ids, KernelStatus.SCHEDULED, values={"agent": agent, "occupied_slots": ONE_CPU}
    )


async def test_occupancy_sums_resource_holding_kernels(db: Database, owner: Owner) -> None:
    async with db.begin() as conn:
        await conn.execute(
            sa.insert(agents).values(
                id="agent-2", status=AgentStatus.ALIVE, scaling_group="default", addr="inproc://2"
            )
        )
    _, first = await make_session(db, owner, kernel_count=3, name="a")
    _, second = await make_session(db, owner, kernel_count=1, name="b")
    await schedule(db, first, "agent-1")
    await schedule(db, second, "agent-2")
    async with db.begin_readonly() as conn:
        usage = await agent_occupancy(conn)
    assert usage == {
        "agent-1": AgentOccupancy(ONE_CPU * 3, 3),
        "agent-2": AgentOccupancy(ONE_CPU, 1),
    }
    # Ending kernels release their slots; nothing else needs updating.
    await move_kernels(db, first[:2], KernelStatus.CANCELLED)
    await move_kernels(db, second, KernelStatus.ERROR)
    async with db.begin_readonly() as conn:
        usage = await agent_occupancy(conn, ["agent-1", "agent-2", "agent-unknown"])
    assert usage["agent-1"] == AgentOccupancy(ONE_CPU, 1)
    assert usage["agent-2"] == AgentOccupancy(ResourceSlot(), 0)
    assert usage["agent-unknown"].container_count == 0


async def test_pending_kernels_hold_nothing(db: Database, owner: Owner) -> None:
    _, kernel_ids = await make_session(db, owner, kernel_count=2)
    async with db.begin() as conn:
        # A pending kernel already pointing at an agent (say a designated one) holds nothing yet.
        await conn.execute(
            sa.update(kernels)
            .where(kernels.c.id.in_(kernel_ids))
            .values(agent="agent-1", occupied_slots=ONE_CPU)
        )
    async with db.begin_readonly() as conn:
        assert (await agent_occupancy(conn))["agent-1"] == AgentOccupancy(ResourceSlot(), 0)


async def test_locked_occupancy_serialises_placements(db: Database, owner: Owner) -> None:
    """Two passes that each place a kernel if the agent has room never over-allocate."""
    async with db.begin() as conn:
        await conn.execute(
            sa.update(agents).where(agents.c.id == "agent-1").values(available_slots=ONE_CPU)
        )
    sessions_kernels = [await make_session(db, owner, name=f"s{i}") for i in range(4)]
    placed: list[uuid.UUID] = []

    async def place(kernel_id: uuid.UUID) -> None:
        async with db.begin() as conn:
            usage = await agent_occupancy(conn, ["agent-1"], lock=True)
            await trio.sleep(0.01)  # give the other passes every chance to interleave
            if (usage["agent-1"].occupied_slots + ONE_CPU).fits_in(ONE_CPU):
                await conn.execute(
                    sa.update(kernels)
                    .where(kernels.c.id == kernel_id)
                    .values(agent="agent-1", occupied_slots=ONE_CPU, status=KernelStatus.SCHEDULED)
                )
                placed.append(kernel_id)

    async with trio.open_nursery() as nursery:
        for _, (kernel_id,) in sessions_kernels:
            nursery.start_soon(place, kernel_id)
    assert len(placed) == 1
    async with db.begin_readonly() as conn:
        assert (await agent_occupancy(conn))["agent-1"] == AgentOccupancy(ONE_CPU, 1)


async def test_keypair_concurrency_counts_live_sessions(db: Database, owner: Owner) -> None:
    _, a = await make_session(db, owner, name="a")
    _, b = await make_session(db, owner, name="b")
    await make_session(db, owner, name="pending")
    await schedule(db, a + b, "agent-1")
    async with db.begin_readonly() as conn:
        assert await keypair_concurrency(conn) == {owner.access_key: 2}
        assert await keypair_concurrency(conn, [owner.access_key, "AKIANOBODY"]) == {
            owner.access_key: 2,
            "AKIANOBODY": 0,
        }
    await move_kernels(db, a, KernelStatus.CANCELLED)
    async with db.begin_readonly() as conn:
        assert await keypair_concurrency(conn) == {owner.access_key: 1}


async def test_shared_config_get_put_delete(db: Database) -> None:
    async with db.begin() as conn:
        await put_config_many(
            conn,
            {
                "a/b": 1,
                "a/b/c": {"x": [1, 2]},
                "a/bc": "not below a/b",
                "A/B": "other case",
            },
        )
        await put_config(conn, "a/b", 2)  # replaces
    async with db.begin_readonly() as conn:
        assert await get_config(conn, "a/b") == 2
        assert await get_config(conn, "missing", default="d") == "d"
        assert await get_config_prefix(conn, "a/b") == {"a/b": 2, "a/b/c": {"x": [1, 2]}}
        assert await get_config_prefix(conn, "a") == {
            "a/b": 2,
            "a/b/c": {"x": [1, 2]},
            "a/bc": "not below a/b",
        }
    async with db.begin() as conn:
        assert await delete_config(conn, "a/b", prefix=True) == 2
        assert await delete_config(conn, "nothing") == 0
    async with db.begin_readonly() as conn:
        assert await get_config_prefix(conn, "a") == {"a/bc": "not below a/b"}
        assert await get_config(conn, "A/B") == "other case"


async def test_shared_config_rejects_bad_input_before_writing(db: Database) -> None:
    async with db.begin() as conn:
        with pytest.raises(InvalidValue, match="JSON"):
            await put_config_many(conn, {"ok": 1, "bad": {1, 2}})
        with pytest.raises(InvalidValue, match="'/x'"):
            await put_config(conn, "/x", 1)
        assert await get_config(conn, "ok") is None
