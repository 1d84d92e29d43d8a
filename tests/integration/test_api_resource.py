"""``/resource``: presets, and check-presets against policies and live agents' capacity."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus, SessionStatus
from bai.manager.db import Database
from bai.manager.fixtures import populate
from bai.manager.models import (
    AgentStatus,
    agents,
    domains,
    groups,
    kernels,
    keypairs,
    scaling_groups,
    sessions,
    sgroups_for_keypairs,
)
from bai.manager.models.shared_config import put_config
from bai.manager.transitions import initial_status

from support.api import Api, Key, assert_problem, running_api

G = 2**30


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        yield running


async def add_agent(
    api: Api,
    agent_id: str,
    slots: dict[str, int],
    *,
    sgroup: str = "default",
    status: AgentStatus = AgentStatus.ALIVE,
    schedulable: bool = True,
) -> None:
    async with api.db.begin() as conn:
        await conn.execute(
            sa.insert(agents).values(
                id=agent_id,
                status=status,
                scaling_group=sgroup,
                schedulable=schedulable,
                addr=f"inproc://{agent_id}",
                available_slots=ResourceSlot(slots),
            )
        )


async def add_session(
    api: Api,
    key: Key,
    agent_id: str,
    slots: dict[str, int],
    *,
    status: KernelStatus = KernelStatus.RUNNING,
    sgroup: str = "default",
) -> None:
    session_id = uuid.uuid4()
    session_status = SessionStatus(str(status))
    async with api.db.begin() as conn:
        group_id = await conn.scalar(sa.select(groups.c.id).where(groups.c.name == "default"))
        await conn.execute(
            sa.insert(sessions).values(
                id=session_id,
                name=f"s-{session_id.hex[:8]}",
                domain_name="default",
                group_id=group_id,
                user_uuid=key.user_id,
                access_key=key.access_key,
                scaling_group_name=sgroup,
                image="python:3.11",
                **initial_status(session_status, "test"),
            )
        )
        await conn.execute(
            sa.insert(kernels).values(
                session_id=session_id,
                agent=agent_id,
                image="python:3.11",
                requested_slots=ResourceSlot(slots),
                occupied_slots=ResourceSlot(slots),
                **initial_status(status, "test"),
            )
        )


async def check(api: Api, key: Key, **body: Any) -> dict[str, Any]:
    params = body.pop("params", None)
    response = await api.call(
        "POST", "/resource/check-presets", key=key, json_body=body, params=params
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def allocatable(result: dict[str, Any]) -> dict[str, bool]:
    return {preset["name"]: preset["allocatable"] for preset in result["presets"]}


@pytest.fixture
async def cluster(api: Api) -> Api:
    """Two live agents in ``default`` (one with a GPU), a lost and an unschedulable one,
    a private group the user's keypair may use, a group nobody may use; the user has a
    limited policy and one running session, the admin one more, plus a finished one."""
    await populate(
        api.db,
        {
            "keypair_resource_policies": [
                {"name": "limited", "total_resource_slots": {"cpu": "3", "mem": "4g"}}
            ],
            "scaling_groups": [
                {"name": "private", "is_public": False, "keypairs": [api.user.access_key]},
                {"name": "elsewhere"},
            ],
        },
    )
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(keypairs)
            .where(keypairs.c.access_key == api.user.access_key)
            .values(resource_policy="limited")
        )
    await add_agent(api, "a1", {"cpu": 4, "mem": 8 * G})
    await add_agent(api, "a2", {"cpu": 8, "mem": 16 * G, "cuda.device": 1})
    await add_agent(api, "lost", {"cpu": 64, "mem": 64 * G}, status=AgentStatus.LOST)
    await add_agent(api, "drained", {"cpu": 64, "mem": 64 * G}, schedulable=False)
    await add_agent(api, "p1", {"cpu": 16, "mem": 32 * G}, sgroup="private")
    await add_agent(api, "e1", {"cpu": 16, "mem": 32 * G}, sgroup="elsewhere")
    await add_session(api, api.user, "a1", {"cpu": 1, "mem": G})
    await add_session(api, api.admin, "a2", {"cpu": 2, "mem": G})
    await add_session(api, api.user, "a1", {"cpu": 3, "mem": G}, status=KernelStatus.TERMINATED)
    return api


async def test_presets_list_the_known_slots(api: Api) -> None:
    response = await api.call("GET", "/resource/presets", key=api.user)
    presets = {p["name"]: p for p in response.json()["presets"]}
    assert presets["cpu01-small"] == {
        "name": "cpu01-small",
        "resource_slots": {"cpu": "1", "mem": str(G)},
        "shared_memory": str(64 * 2**20),
    }
    # No live agent has GPUs: the preset's cuda.device is not shown.
    assert presets["gpu01-small"]["resource_slots"] == {"cpu": "2", "mem": str(8 * G)}
    await add_agent(api, "gpu", {"cpu": 4, "mem": G, "cuda.device": 1})
    response = await api.call("GET", "/resource/presets", key=api.user)
    presets = {p["name"]: p for p in response.json()["presets"]}
    assert presets["gpu01-small"]["resource_slots"]["cuda.device"] == "1"


async def test_check_presets_for_a_limited_keypair(cluster: Api) -> None:
    result = await check(cluster, cluster.user)
    assert result["keypair_limits"] == {"cpu": "3", "mem": str(4 * G), "cuda.device": "0"}
    assert result["keypair_using"] == {"cpu": "1", "mem": str(G), "cuda.device": "0"}
    remaining = {"cpu": "2", "mem": str(3 * G), "cuda.device": "0"}
    assert result["keypair_remaining"] == remaining
    assert result["scaling_group_remaining"] == remaining
    assert result["scaling_groups"] == {
        "default": {
            "using": {"cpu": "1", "mem": str(G), "cuda.device": "0"},
            "remaining": remaining,
        }
    }
    assert allocatable(result) == {
        "cpu01-small": True,
        "cpu02-medium": False,  # 4g of memory is over what the policy leaves
        "cpu04-large": False,
        "gpu01-small": False,
    }
    assert result["group_limits"] == {"cpu": "NaN", "mem": "NaN", "cuda.device": "NaN"}


async def test_check_presets_reflects_free_capacity(cluster: Api) -> None:
    result = await check(cluster, cluster.admin)
    assert result["keypair_limits"] == {
        "cpu": "Infinity",
        "mem": "Infinity",
        "cuda.device": "Infinity",
    }
    assert result["keypair_using"] == {"cpu": "2", "mem": str(G), "cuda.device": "0"}
    # a1: 4-1 cpu, 8-1 GiB; a2: 8-2 cpu, 16-1 GiB, 1 GPU; lost/drained/other groups excluded.
    free = {"cpu": "9", "mem": str(22 * G), "cuda.device": "1"}
    assert result["scaling_group_remaining"] == free
    assert result["scaling_groups"]["default"]["remaining"] == free
    assert allocatable(result) == {
        "cpu01-small": True,
        "cpu02-medium": True,
        "cpu04-large": True,  # only a2 has room for 4 cpu and 8 GiB at once
        "gpu01-small": True,
    }
    await add_session(cluster, cluster.admin, "a2", {"cpu": 4})
    result = await check(cluster, cluster.admin)
    assert allocatable(result)["cpu04-large"] is False  # 3 + 2 free cpus, on two agents


async def test_private_groups_are_considered_only_when_named(cluster: Api) -> None:
    result = await check(cluster, cluster.user, scaling_group="private")
    assert list(result["scaling_groups"]) == ["private"]
    assert result["scaling_groups"]["private"]["using"] == {
        "cpu": "0",
        "mem": "0",
        "cuda.device": "0",
    }
    admin = await check(cluster, cluster.admin)
    assert list(admin["scaling_groups"]) == ["default"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scaling_group": "elsewhere"}, "scaling_group"),
        ({"scaling_group": "nope"}, "scaling_group"),
        ({"group": "nope"}, "group"),
        ({"group": 5}, "group"),
    ],
)
async def test_unknown_groups_name_the_field(
    cluster: Api, body: dict[str, Any], field: str
) -> None:
    response = await cluster.call(
        "POST", "/resource/check-presets", key=cluster.user, json_body=body
    )
    problem = assert_problem(response, 400, "invalid-api-params")
    assert problem["field"] == field


async def test_inactive_resource_groups_are_not_offered(cluster: Api) -> None:
    async with cluster.db.begin() as conn:
        await conn.execute(
            sa.update(scaling_groups)
            .where(scaling_groups.c.name == "default")
            .values(is_active=False)
        )
    result = await check(cluster, cluster.admin)
    assert result["scaling_groups"] == {}
    assert result["scaling_group_remaining"] == {"cpu": "0", "mem": "0", "cuda.device": "0"}
    assert not any(allocatable(result).values())


async def test_domain_and_project_caps_limit_what_remains(cluster: Api) -> None:
    async with cluster.db.begin() as conn:
        await conn.execute(sa.update(domains).values(total_resource_slots=ResourceSlot({"cpu": 4})))
        await conn.execute(
            sa.update(groups).values(total_resource_slots=ResourceSlot({"mem": 3 * G}))
        )
        await put_config(conn, "config/api/resources/group_resource_visibility", True)
    result = await check(cluster, cluster.admin)
    # The domain's 4 cpus minus the 3 its sessions use; the project's 3 GiB minus 2 used.
    assert result["keypair_remaining"] == {"cpu": "1", "mem": str(G), "cuda.device": "Infinity"}
    assert result["group_limits"] == {
        "cpu": "Infinity",
        "mem": str(3 * G),
        "cuda.device": "Infinity",
    }
    assert result["group_using"] == {"cpu": "3", "mem": str(2 * G), "cuda.device": "0"}
    assert result["group_remaining"] == {
        "cpu": "Infinity",
        "mem": str(G),
        "cuda.device": "Infinity",
    }
    assert allocatable(result) == dict.fromkeys(
        ["cpu01-small", "cpu02-medium", "cpu04-large", "gpu01-small"], False
    ) | {"cpu01-small": True}


async def test_admins_see_the_view_of_the_owner_they_name(cluster: Api) -> None:
    result = await check(
        cluster, cluster.admin, params={"owner_access_key": cluster.user.access_key}
    )
    assert result["keypair_limits"]["cpu"] == "3"
    assert result["keypair_using"]["cpu"] == "1"


async def test_the_official_clients_bodiless_post_works(cluster: Api) -> None:
    response = await cluster.call("POST", "/resource/check-presets", key=cluster.user, content=b"")
    assert response.status_code == 200
    assert "default" in response.json()["scaling_groups"]


async def test_keypair_private_groups_need_the_keypair(cluster: Api) -> None:
    async with cluster.db.begin() as conn:
        await conn.execute(sa.delete(sgroups_for_keypairs))
    response = await cluster.call(
        "POST", "/resource/check-presets", key=cluster.user, json_body={"scaling_group": "private"}
    )
    assert_problem(response, 400, "invalid-api-params")
