"""``POST /admin/gql``: domains, projects, users, keypairs, policies, agents, resource
groups, presets and images, and who may see each of them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bai.manager.db import Database

from support.api import Key, running_api
from support.api_gql import IMAGE, World, build_world, data_of, gql, messages


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db) as api:
        yield await build_world(api)


async def ask(world: World, key: Key, query: str, **variables: Any) -> dict[str, Any]:
    return data_of(await gql(world.api, key, query, variables or None))


async def refused(world: World, key: Key, query: str, **variables: Any) -> list[str]:
    body = await gql(world.api, key, query, variables or None)
    assert body["errors"], body
    return messages(body)


# ------------------------------------------------------------------ domains, projects


async def test_domains(world: World) -> None:
    query = "{ domain { name description is_active total_resource_slots scaling_groups } }"
    own = (await ask(world, world.other_user, query))["domain"]
    assert own == {
        "name": "other",
        "description": "Another domain",
        "is_active": True,
        "total_resource_slots": "{}",
        "scaling_groups": ["other-sg"],
    }
    named = '{ domain(name: "default") { name } }'
    assert (await ask(world, world.superadmin, named))["domain"] == {"name": "default"}
    assert await refused(world, world.other_admin, named) == [
        "you may not query the domain 'default'"
    ]
    everything = await ask(world, world.superadmin, "{ domains { name } }")
    assert [d["name"] for d in everything["domains"]] == ["default", "other"]
    assert await refused(world, world.domain_admin, "{ domains { name } }") == [
        "listing domains needs superadmin privileges"
    ]


async def test_projects(world: World) -> None:
    query = "{ groups { name domain_name scaling_groups } }"
    assert (await ask(world, world.superadmin, query))["groups"] == [
        {"name": "default", "domain_name": "default", "scaling_groups": []},
        {"name": "research", "domain_name": "other", "scaling_groups": []},
    ]
    assert [g["name"] for g in (await ask(world, world.other_admin, query))["groups"]] == [
        "research"
    ]
    assert [g["name"] for g in (await ask(world, world.user, query))["groups"]] == ["default"]
    research = (await ask(world, world.other_user, '{ groups_by_name(name: "research") { id } }'))[
        "groups_by_name"
    ][0]["id"]
    by_id = "query($id: UUID!) { group(id: $id) { name description } }"
    assert (await ask(world, world.other_user, by_id, id=research))["group"] == {
        "name": "research",
        "description": None,
    }
    # Not a member, or another domain: the project does not exist for them.
    assert (await ask(world, world.user, by_id, id=research))["group"] is None
    assert (await ask(world, world.domain_admin, by_id, id=research))["group"] is None


# --------------------------------------------------------------------------- users


async def test_users(world: World) -> None:
    me = "{ user { email role is_active status domain_name groups { name } main_access_key } }"
    assert (await ask(world, world.user, me))["user"] == {
        "email": "user@lablup.com",
        "role": "user",
        "is_active": True,
        "status": "active",
        "domain_name": "default",
        "groups": [{"name": "default"}],
        "main_access_key": world.user.access_key,
    }
    other = '{ user(email: "other-user@lablup.com") { full_name } }'
    assert (await ask(world, world.other_admin, other))["user"] == {"full_name": "Other User"}
    assert (await ask(world, world.domain_admin, other))["user"] is None
    assert await refused(world, world.user, other) == ["you may only query your own user"]
    by_uuid = "query($id: ID) { user_from_uuid(user_id: $id) { email } }"
    assert (await ask(world, world.superadmin, by_uuid, id=str(world.other_user.user_id)))[
        "user_from_uuid"
    ] == {"email": "other-user@lablup.com"}
    listing = "{ users { email } }"
    assert [u["email"] for u in (await ask(world, world.other_admin, listing))["users"]] == [
        "other-admin@lablup.com",
        "other-user@lablup.com",
    ]
    assert len((await ask(world, world.superadmin, listing))["users"]) == 5
    assert await refused(world, world.user, listing) == ["listing users needs admin privileges"]
    page = """
    query($group: UUID) {
      user_list(limit: 2, offset: 0, group_id: $group, filter: "role == \\"admin\\"",
                order: "-email") { total_count items { email } }
    }"""
    assert (await ask(world, world.superadmin, page))["user_list"] == {
        "total_count": 2,
        "items": [{"email": "other-admin@lablup.com"}, {"email": "dadmin@lablup.com"}],
    }


# ------------------------------------------------------------------------- keypairs


async def test_keypairs_never_show_a_superadmins_secret_to_a_domain_admin(world: World) -> None:
    listing = "{ keypairs { user_id secret_key } }"
    seen = {k["user_id"] for k in (await ask(world, world.domain_admin, listing))["keypairs"]}
    assert seen == {"user@lablup.com", "dadmin@lablup.com"}
    everyone = {k["user_id"] for k in (await ask(world, world.superadmin, listing))["keypairs"]}
    assert len(everyone) == 5
    assert [k["user_id"] for k in (await ask(world, world.user, listing))["keypairs"]] == [
        "user@lablup.com"
    ]
    named = "query($ak: String) { keypair(access_key: $ak) { user_id } }"
    superadmin_key = world.superadmin.access_key
    assert (await ask(world, world.domain_admin, named, ak=superadmin_key))["keypair"] is None
    assert (await ask(world, world.domain_admin, named, ak=world.user.access_key))["keypair"] == {
        "user_id": "user@lablup.com"
    }
    assert await refused(world, world.user, named, ak=superadmin_key) == [
        "you may only query your own keypair"
    ]


async def test_keypair_details_and_pages(world: World) -> None:
    query = """
    {
      keypair {
        access_key is_admin resource_policy rate_limit num_queries user domain_name
        concurrency_used projects user_info { email full_name }
        compute_sessions(status: "RUNNING,PENDING") { name }
      }
      keypair_list(limit: 10, offset: 0, filter: "user_id like \\"other-%\\"", order: "+user_id") {
        total_count items { user_id }
      }
    }
    """
    data = await ask(world, world.user, query)
    assert data["keypair"] == {
        "access_key": world.user.access_key,
        "is_admin": False,
        "resource_policy": "default",
        "rate_limit": 30000,
        "num_queries": 0,
        "user": str(world.user.user_id),
        "domain_name": "default",
        "concurrency_used": 1,
        "projects": ["default"],
        "user_info": {"email": "user@lablup.com", "full_name": "User"},
        "compute_sessions": [{"name": "batch-1"}, {"name": "train-1"}],
    }
    assert data["keypair_list"] == {"total_count": 0, "items": []}
    others = (await ask(world, world.superadmin, query))["keypair_list"]
    assert others["items"] == [
        {"user_id": "other-admin@lablup.com"},
        {"user_id": "other-user@lablup.com"},
    ]


async def test_keypair_resource_policies(world: World) -> None:
    query = """
    {
      keypair_resource_policy { name default_for_unspecified total_resource_slots
        max_concurrent_sessions max_containers_per_session idle_timeout allowed_vfolder_hosts }
      keypair_resource_policies { name }
    }
    """
    data = await ask(world, world.user, query)
    assert data["keypair_resource_policy"] == {
        "name": "default",
        "default_for_unspecified": "UNLIMITED",
        "total_resource_slots": "{}",
        "max_concurrent_sessions": 30,
        "max_containers_per_session": 8,
        "idle_timeout": 0,
        "allowed_vfolder_hosts": [],
    }
    assert data["keypair_resource_policies"] == [{"name": "default"}]


# ------------------------------------------------------------------------ resources


async def test_agents_are_for_superadmins(world: World) -> None:
    query = """
    {
      agent(agent_id: "i-agent01") { id status scaling_group schedulable version
        available_slots occupied_slots mem_slots cpu_slots used_mem_slots used_cpu_slots
        cpu_cur_pct mem_cur_bytes live_stat }
      agents(status: "ALIVE") { id }
      lost: agents(status: "LOST") { id }
      agent_list(limit: 5, offset: 0, filter: "schedulable == true", order: "-id") {
        total_count items { id }
      }
    }
    """
    data = await ask(world, world.superadmin, query)
    agent = data["agent"]
    assert json.loads(agent["available_slots"]) == {"cpu": "8", "mem": str(16 * 2**30)}
    # Occupied: train-1 (2 kernels), admin-nb and other-1 run there; batch-1 is pending.
    assert json.loads(agent["occupied_slots"]) == {"cpu": "4", "mem": str(4 * 2**30)}
    assert (agent["mem_slots"], agent["cpu_slots"]) == (16 * 1024, 8.0)
    assert (agent["used_mem_slots"], agent["used_cpu_slots"]) == (4 * 1024, 4.0)
    assert (agent["cpu_cur_pct"], agent["mem_cur_bytes"]) == (50.0, float(4 * 2**30))
    assert agent["live_stat"] is None
    assert (agent["status"], agent["scaling_group"], agent["version"]) == (
        "ALIVE",
        "default",
        "bai-test",
    )
    assert data["agents"] == [{"id": "i-agent01"}] and data["lost"] == []
    assert data["agent_list"] == {"total_count": 1, "items": [{"id": "i-agent01"}]}
    for key in (world.domain_admin, world.user):
        assert await refused(world, key, '{ agent(agent_id: "i-agent01") { id } }') == [
            "querying agents needs superadmin privileges"
        ]


async def test_resource_groups_follow_associations(world: World) -> None:
    query = "{ scaling_groups { name } }"

    async def visible(key: Key) -> list[str]:
        return [g["name"] for g in (await ask(world, key, query))["scaling_groups"]]

    assert await visible(world.superadmin) == ["default", "hidden-sg", "other-sg"]
    assert await visible(world.user) == ["default"]
    assert await visible(world.other_user) == ["other-sg"]
    # The official client's `admin scaling-group info` declares the name nullable.
    named = (
        "query($name: String) { scaling_group(name: $name) { name driver scheduler is_public } }"
    )
    assert (await ask(world, world.user, named, name="default"))["scaling_group"] == {
        "name": "default",
        "driver": "static",
        "scheduler": "fifo",
        "is_public": True,
    }
    assert (await ask(world, world.other_user, named, name="default"))["scaling_group"] is None
    for_domain = '{ scaling_groups_for_domain(domain: "other") { name } }'
    assert (await ask(world, world.superadmin, for_domain))["scaling_groups_for_domain"] == [
        {"name": "other-sg"}
    ]
    assert await refused(world, world.user, for_domain) == ["you may not query the domain 'other'"]


async def test_presets_and_images_are_for_everyone(world: World) -> None:
    query = """
    {
      resource_preset(name: "cpu01-small") { name resource_slots shared_memory }
      resource_presets { name }
      image(reference: "python") { name registry tag architecture size_bytes aliases
        labels { key value } resource_limits { key min max } }
      images(is_operation: false) { name }
      operation: images(is_operation: true) { name }
      missing: image(reference: "nothing:here") { name }
    }
    """
    data = await ask(world, world.other_user, query)
    assert data["resource_preset"] == {
        "name": "cpu01-small",
        "resource_slots": json.dumps({"cpu": "1", "mem": str(2**30)}),
        "shared_memory": 64 * 2**20,
    }
    assert [p["name"] for p in data["resource_presets"]] == [
        "cpu01-small",
        "cpu02-medium",
        "cpu04-large",
        "gpu01-small",
    ]
    assert data["image"] == {
        "name": IMAGE,
        "registry": "cr.backend.ai",
        "tag": "3.11",
        "architecture": "x86_64",
        "size_bytes": 123456789,
        "aliases": ["python"],
        "labels": [
            {"key": "ai.backend.base-distro", "value": "debian"},
            {"key": "ai.backend.features", "value": "batch query"},
        ],
        "resource_limits": [
            {"key": "cpu", "min": "1", "max": "Infinity"},
            {"key": "mem", "min": "268435456", "max": "Infinity"},
        ],
    }
    assert data["images"] == [{"name": IMAGE}]
    assert data["operation"] == [] and data["missing"] is None
