"""Shared harness of the GraphQL API tests: a populated cluster and a query helper.

Imported by the ``test_api_gql*`` modules (it holds no tests itself).
:func:`build_world` adds to the default fixture a second domain with its own
admin and user, a domain admin of ``default``, an image, an agent and
sessions in several statuses (one with two kernels, one depending on
another), so that every visibility rule has something to hide.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus, SessionStatus, SessionTypes
from bai.manager.fixtures import populate
from bai.manager.models import (
    AgentStatus,
    agents,
    groups,
    kernels,
    session_dependencies,
    sessions,
)
from bai.manager.transitions import initial_status

from support.api import Api, Key, seeded_keys

G = 2**30
IMAGE = "cr.backend.ai/stable/python:3.11"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def gql(
    api: Api,
    key: Key,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    path: str = "/admin/gql",
) -> dict[str, Any]:
    """POST one GraphQL request signed with *key*; the 200 answer's JSON body."""
    response = await gql_raw(api, key, query, variables, path=path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def gql_raw(
    api: Api,
    key: Key,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    path: str = "/admin/gql",
) -> httpx.Response:
    """POST one GraphQL request signed with *key*; the raw response."""
    return await api.call("POST", path, key=key, json_body={"query": query, "variables": variables})


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of an answer that must have no errors."""
    assert not body.get("errors"), body.get("errors")
    data: dict[str, Any] = body["data"]
    return data


def messages(body: dict[str, Any]) -> list[str]:
    """The messages of an answer's ``errors``."""
    return [str(error["message"]) for error in body.get("errors") or ()]


@dataclass
class World:
    """Who is who in the populated cluster, and the sessions' ids by name."""

    api: Api
    keys: dict[str, Key]
    sessions: dict[str, uuid.UUID] = field(default_factory=dict)
    kernels: dict[str, list[uuid.UUID]] = field(default_factory=dict)

    @property
    def superadmin(self) -> Key:
        return self.keys["admin@lablup.com"]

    @property
    def user(self) -> Key:
        return self.keys["user@lablup.com"]

    @property
    def domain_admin(self) -> Key:
        return self.keys["dadmin@lablup.com"]

    @property
    def other_admin(self) -> Key:
        return self.keys["other-admin@lablup.com"]

    @property
    def other_user(self) -> Key:
        return self.keys["other-user@lablup.com"]


_EXTRA_FIXTURE: dict[str, Any] = {
    "domains": [{"name": "other", "description": "Another domain"}],
    "groups": [{"name": "research", "domain_name": "other", "resource_policy": "default"}],
    "users": [
        {
            "email": "dadmin@lablup.com",
            "username": "dadmin",
            "full_name": "Domain Admin",
            "domain_name": "default",
            "role": "admin",
            "resource_policy": "default",
            "groups": ["default"],
        },
        {
            "email": "other-admin@lablup.com",
            "username": "other-admin",
            "domain_name": "other",
            "role": "admin",
            "resource_policy": "default",
            "groups": ["research"],
        },
        {
            "email": "other-user@lablup.com",
            "username": "other-user",
            "full_name": "Other User",
            "domain_name": "other",
            "role": "user",
            "resource_policy": "default",
            "groups": ["research"],
        },
    ],
    "keypairs": [
        {"user": "dadmin@lablup.com", "resource_policy": "default"},
        {"user": "other-admin@lablup.com", "resource_policy": "default"},
        {"user": "other-user@lablup.com", "resource_policy": "default"},
    ],
    "scaling_groups": [
        {"name": "other-sg", "domains": ["other"]},
        {"name": "hidden-sg"},
    ],
    "images": [
        {
            "name": IMAGE,
            "registry": "cr.backend.ai",
            "image": "stable/python",
            "tag": "3.11",
            "size_bytes": 123456789,
            "labels": {"ai.backend.features": "batch query", "ai.backend.base-distro": "debian"},
            "resources": {"cpu": {"min": "1", "max": None}, "mem": {"min": "268435456"}},
            "aliases": ["python"],
        }
    ],
}


async def _add_session(
    world: World,
    name: str,
    key: Key,
    status: SessionStatus,
    *,
    age: int,
    domain: str = "default",
    group: str = "default",
    kernel_count: int = 1,
    agent: str | None = "i-agent01",
    tag: str | None = None,
) -> None:
    db = world.api.db
    session_id = uuid.uuid4()
    created = T0 + timedelta(minutes=age)
    kernel_status = KernelStatus(str(status))
    slots = ResourceSlot({"cpu": 1, "mem": G})
    kernel_ids: list[uuid.UUID] = []
    async with db.begin() as conn:
        group_id = await conn.scalar(
            sa.select(groups.c.id).where(groups.c.name == group, groups.c.domain_name == domain)
        )
        await conn.execute(
            sa.insert(sessions).values(
                id=session_id,
                name=name,
                session_type=SessionTypes.INTERACTIVE,
                cluster_size=kernel_count,
                domain_name=domain,
                group_id=group_id,
                user_uuid=key.user_id,
                access_key=key.access_key,
                scaling_group_name="default",
                image=IMAGE,
                tag=tag,
                created_at=created,
                requested_slots=slots * kernel_count,
                occupying_slots=slots * kernel_count,
                **initial_status(status, "test", now=created),
            )
        )
        for index in range(kernel_count):
            kernel_id = session_id if index == 0 else uuid.uuid4()
            kernel_ids.append(kernel_id)
            await conn.execute(
                sa.insert(kernels).values(
                    id=kernel_id,
                    session_id=session_id,
                    cluster_role="main" if index == 0 else "sub",
                    cluster_idx=1 if index == 0 else index,
                    local_rank=index,
                    cluster_hostname="main1" if index == 0 else f"sub{index}",
                    agent=agent,
                    agent_addr=f"inproc://{agent}" if agent else None,
                    image=IMAGE,
                    requested_slots=slots,
                    occupied_slots=slots,
                    created_at=created,
                    **initial_status(kernel_status, "test", now=created),
                )
            )
    world.sessions[name] = session_id
    world.kernels[name] = kernel_ids


async def build_world(api: Api) -> World:
    """Populate *api*'s database as the module docs describe."""
    await populate(api.db, _EXTRA_FIXTURE)
    world = World(api=api, keys=await seeded_keys(api.db))
    async with api.db.begin() as conn:
        await conn.execute(
            sa.insert(agents).values(
                id="i-agent01",
                status=AgentStatus.ALIVE,
                scaling_group="default",
                addr="inproc://i-agent01",
                available_slots=ResourceSlot({"cpu": 8, "mem": 16 * G}),
                version="bai-test",
            )
        )
    await _add_session(world, "train-1", world.user, SessionStatus.RUNNING, age=1, kernel_count=2)
    await _add_session(world, "train-2", world.user, SessionStatus.TERMINATED, age=2, tag="old")
    await _add_session(world, "batch-1", world.user, SessionStatus.PENDING, age=3, agent=None)
    await _add_session(world, "admin-nb", world.superadmin, SessionStatus.RUNNING, age=4)
    await _add_session(
        world,
        "other-1",
        world.other_user,
        SessionStatus.RUNNING,
        age=5,
        domain="other",
        group="research",
    )
    async with api.db.begin() as conn:
        await conn.execute(
            sa.insert(session_dependencies).values(
                session_id=world.sessions["batch-1"], depends_on=world.sessions["train-1"]
            )
        )
    return world
