"""Listing many objects over ``/admin/gql`` costs a bounded number of database statements.

A page of 1,000 users (with their projects and main keypair), keypairs
(with projects, running sessions and their kernels) or sessions (with
kernels, dependencies and registries) must cost as many statements as a
page of three: nested fields are loaded for the whole page at once.  Every
statement that goes through :meth:`bai.manager.db.Connection.execute` is
counted, on both database backends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus, SessionStatus, SessionTypes
from bai.manager.db import Connection, Database
from bai.manager.models import (
    association_groups_users,
    groups,
    kernels,
    keypairs,
    session_dependencies,
    sessions,
    users,
)
from bai.manager.transitions import initial_status

from support.api import running_api
from support.api_gql import IMAGE, T0, World, build_world, data_of, gql

N = 1000

USERS = """
query($limit: Int!) {
  user_list(limit: $limit, offset: 0, filter: "email ilike \\"bulk-%\\"") {
    total_count
    items { email groups { id name } main_access_key }
  }
}
"""

KEYPAIRS = """
query($limit: Int!) {
  keypair_list(limit: $limit, offset: 0, filter: "email ilike \\"bulk-%\\"") {
    total_count
    items {
      access_key projects concurrency_used user_info { email } vfolders { name }
      compute_sessions(status: "RUNNING") { name containers { id } }
    }
  }
}
"""

SESSIONS = """
query($limit: Int!) {
  compute_session_list(limit: $limit, offset: 0, filter: "name ilike \\"bulk-%\\"") {
    total_count
    items {
      name registry status_updated created_user_uuid
      containers { id live_stat registry }
      dependencies { name containers { id } }
    }
  }
}
"""


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db) as api:
        world = await build_world(api)
        await _add_bulk(world)
        yield world


async def _add_bulk(world: World) -> None:
    """N users with a keypair in the default project, each with one running session of
    two kernels; every session after the first depends on the one before it."""
    slots = ResourceSlot({"cpu": 1, "mem": 2**30})
    user_rows, keypair_rows, member_rows, session_rows, kernel_rows = [], [], [], [], []
    async with world.api.db.begin() as conn:
        group_id = await conn.scalar(
            sa.select(groups.c.id).where(
                groups.c.name == "default", groups.c.domain_name == "default"
            )
        )
        for i in range(N):
            user_id, session_id = uuid.uuid4(), uuid.uuid4()
            email, access_key = f"bulk-{i:04d}@example.com", f"AKBULK{i:014d}"
            user_rows.append(
                {
                    "uuid": user_id,
                    "username": f"bulk-{i:04d}",
                    "email": email,
                    "domain_name": "default",
                    "resource_policy": "default",
                }
            )
            keypair_rows.append(
                {
                    "access_key": access_key,
                    "secret_key": "s" * 40,
                    "user_id": email,
                    "user": user_id,
                    "resource_policy": "default",
                }
            )
            member_rows.append({"user_id": user_id, "group_id": group_id})
            session_rows.append(
                {
                    "id": session_id,
                    "name": f"bulk-{i:04d}",
                    "session_type": SessionTypes.INTERACTIVE,
                    "cluster_size": 2,
                    "domain_name": "default",
                    "group_id": group_id,
                    "user_uuid": user_id,
                    "access_key": access_key,
                    "scaling_group_name": "default",
                    "image": IMAGE,
                    "created_at": T0,
                    "requested_slots": slots * 2,
                    "occupying_slots": slots * 2,
                    **initial_status(SessionStatus.RUNNING, "test", now=T0),
                }
            )
            for index in range(2):
                kernel_rows.append(
                    {
                        "id": session_id if index == 0 else uuid.uuid4(),
                        "session_id": session_id,
                        "cluster_role": "main" if index == 0 else "sub",
                        "cluster_idx": index + 1,
                        "local_rank": index,
                        "cluster_hostname": f"k{index}",
                        "agent": "i-agent01",
                        "image": IMAGE,
                        "requested_slots": slots,
                        "occupied_slots": slots,
                        "created_at": T0,
                        **initial_status(KernelStatus.RUNNING, "test", now=T0),
                    }
                )
        await conn.execute(sa.insert(users), user_rows)
        await conn.execute(sa.insert(keypairs), keypair_rows)
        await conn.execute(sa.insert(association_groups_users), member_rows)
        await conn.execute(sa.insert(sessions), session_rows)
        await conn.execute(sa.insert(kernels), kernel_rows)
        await conn.execute(
            sa.insert(session_dependencies),
            [
                {"session_id": session_rows[i]["id"], "depends_on": session_rows[i - 1]["id"]}
                for i in range(1, N)
            ],
        )


@pytest.fixture
def count_statements(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[Callable[[], Awaitable[Any]]], Awaitable[tuple[int, Any]]]:
    """``await count(fn)``: the statements run while ``fn()`` runs, and its result."""
    counter = [0]
    execute = Connection.execute

    async def counting(self: Connection, statement: Any, parameters: Any = None) -> Any:
        counter[0] += 1
        return await execute(self, statement, parameters)

    monkeypatch.setattr(Connection, "execute", counting)

    async def count(fn: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
        before = counter[0]
        result = await fn()
        return counter[0] - before, result

    return count


@pytest.mark.parametrize(
    ("query", "field"),
    [(USERS, "user_list"), (KEYPAIRS, "keypair_list"), (SESSIONS, "compute_session_list")],
)
async def test_a_page_of_a_thousand_costs_what_a_page_of_three_costs(
    world: World, count_statements: Any, query: str, field: str
) -> None:
    async def listing(limit: int) -> dict[str, Any]:
        body = await gql(world.api, world.superadmin, query, {"limit": limit})
        page: dict[str, Any] = data_of(body)[field]
        return page

    await listing(3)  # warms the caches of authentication
    few, small = await count_statements(lambda: listing(3))
    many, large = await count_statements(lambda: listing(N))
    assert len(small["items"]) == 3 and len(large["items"]) == N
    assert large["total_count"] == N
    assert many == few, f"{many} statements for {N} items, {few} for 3"
    assert many <= 12
    # The batched nested fields still belong to the right parent.
    item = large["items"][-1]
    if field == "user_list":
        assert item["groups"][0]["name"] == "default" and item["main_access_key"].startswith(
            "AKBULK"
        )
    elif field == "keypair_list":
        assert item["projects"] == ["default"] and item["concurrency_used"] == 1
        assert [s["name"] for s in item["compute_sessions"]] == [item["user_info"]["email"][:9]]
        assert len(item["compute_sessions"][0]["containers"]) == 2
    else:
        numbered = {s["name"]: s for s in large["items"]}
        assert numbered["bulk-0005"]["dependencies"][0]["name"] == "bulk-0004"
        assert numbered["bulk-0000"]["dependencies"] == []
        assert len(numbered["bulk-0005"]["containers"]) == 2
        assert numbered["bulk-0005"]["status_updated"] is not None
