"""``POST /admin/gql`` mutations of resource groups, their associations, presets and user
and project resource policies: each role, bad input, and their effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bai.manager.db import Database

from support.api import Key, running_api
from support.api_gql import World, build_world, data_of, gql, messages


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db, auth_cache_ttl=0) as api:
        yield await build_world(api)


async def run(world: World, key: Key, query: str, **variables: Any) -> dict[str, Any]:
    return data_of(await gql(world.api, key, query, variables))


CREATE_SG = """
mutation($name: String!, $input: CreateScalingGroupInput!) {
  create_scaling_group(name: $name, props: $input) { ok msg scaling_group { name scheduler } }
}"""
MODIFY_SG = """
mutation($name: String!, $input: ModifyScalingGroupInput!) {
  modify_scaling_group(name: $name, props: $input) { ok msg }
}"""
DELETE_SG = "mutation($name: String!) { delete_scaling_group(name: $name) { ok msg } }"
ASSOC_DOMAIN = """
mutation($scaling_group: String!, $domain: String!) {
  associate_scaling_group_with_domain(scaling_group: $scaling_group, domain: $domain) { ok msg }
}"""
DISSOC_DOMAIN = """
mutation($scaling_group: String!, $domain: String!) {
  disassociate_scaling_group_with_domain(scaling_group: $scaling_group, domain: $domain) {
    ok msg
  }
}"""
DISSOC_ALL_DOMAIN = """
mutation($domain: String!) {
  disassociate_all_scaling_groups_with_domain(domain: $domain) { ok msg }
}"""
ASSOC_KEYPAIR = """
mutation($scaling_group: String!, $access_key: String!) {
  associate_scaling_group_with_keypair(scaling_group: $scaling_group, access_key: $access_key) {
    ok msg
  }
}"""
DISSOC_KEYPAIR = """
mutation($scaling_group: String!, $access_key: String!) {
  disassociate_scaling_group_with_keypair(scaling_group: $scaling_group, access_key: $access_key) {
    ok msg
  }
}"""
GROUP_ID = "query { user { groups { id } } }"
ASSOC_GROUP = """
mutation($scaling_group: String!, $user_group: UUID!) {
  associate_scaling_group_with_user_group(scaling_group: $scaling_group, user_group: $user_group) {
    ok msg
  }
}"""
DISSOC_GROUP = """
mutation($scaling_group: String!, $user_group: String!) {
  disassociate_scaling_group_with_user_group(
    scaling_group: $scaling_group, user_group: $user_group) { ok msg }
}"""
DISSOC_ALL_GROUP = """
mutation($group_id: UUID!) {
  disassociate_all_scaling_groups_with_group(user_group: $group_id) { ok msg }
}"""
VISIBLE = "query { scaling_groups { name } }"

SG_INPUT = {
    "description": "",
    "is_active": True,
    "is_public": False,
    "driver": "static",
    "scheduler": "fifo",
    "use_host_network": False,
    "wsproxy_addr": None,
    "wsproxy_api_token": None,
}


async def visible_to(world: World, key: Key) -> set[str]:
    return {g["name"] for g in (await run(world, key, VISIBLE))["scaling_groups"]}


async def test_scaling_groups_and_associations(world: World) -> None:
    created = await run(world, world.superadmin, CREATE_SG, name="gpu", input=SG_INPUT)
    assert created["create_scaling_group"] == {
        "ok": True,
        "msg": "success",
        "scaling_group": {"name": "gpu", "scheduler": "fifo"},
    }
    again = await run(world, world.superadmin, CREATE_SG, name="gpu", input=SG_INPUT)
    assert again["create_scaling_group"]["ok"] is False
    body = await gql(
        world.api,
        world.superadmin,
        CREATE_SG,
        {"name": "x", "input": {**SG_INPUT, "scheduler": "random"}},
    )
    assert "props.scheduler" in messages(body)[0]
    for key in (world.domain_admin, world.user):
        body = await gql(world.api, key, CREATE_SG, {"name": "x", "input": SG_INPUT})
        assert messages(body) == ["creating resource groups needs superadmin privileges"]
        body = await gql(
            world.api, key, ASSOC_DOMAIN, {"scaling_group": "gpu", "domain": "default"}
        )
        assert "superadmin" in messages(body)[0]

    # A private group becomes usable for the domain's users once associated.
    assert "gpu" not in await visible_to(world, world.user)
    assoc = await run(world, world.superadmin, ASSOC_DOMAIN, scaling_group="gpu", domain="default")
    assert assoc["associate_scaling_group_with_domain"] == {"ok": True, "msg": "success"}
    assert "gpu" in await visible_to(world, world.user)
    assert "gpu" not in await visible_to(world, world.other_user)
    dissoc = await run(
        world, world.superadmin, DISSOC_DOMAIN, scaling_group="gpu", domain="default"
    )
    assert dissoc["disassociate_scaling_group_with_domain"]["ok"] is True
    assert "gpu" not in await visible_to(world, world.user)
    unknown = await run(world, world.superadmin, ASSOC_DOMAIN, scaling_group="gpu", domain="nope")
    assert unknown["associate_scaling_group_with_domain"]["ok"] is False

    # Through the project, then through the keypair.
    gid = (await run(world, world.user, GROUP_ID))["user"]["groups"][0]["id"]
    assert (await run(world, world.superadmin, ASSOC_GROUP, scaling_group="gpu", user_group=gid))[
        "associate_scaling_group_with_user_group"
    ]["ok"]
    assert "gpu" in await visible_to(world, world.user)
    assert (await run(world, world.superadmin, DISSOC_GROUP, scaling_group="gpu", user_group=gid))[
        "disassociate_scaling_group_with_user_group"
    ]["ok"]
    assert (await run(world, world.superadmin, DISSOC_ALL_GROUP, group_id=gid))[
        "disassociate_all_scaling_groups_with_group"
    ]["ok"]
    ak = world.other_user.access_key
    assert (await run(world, world.superadmin, ASSOC_KEYPAIR, scaling_group="gpu", access_key=ak))[
        "associate_scaling_group_with_keypair"
    ]["ok"]
    assert "gpu" in await visible_to(world, world.other_user)
    assert (await run(world, world.superadmin, DISSOC_KEYPAIR, scaling_group="gpu", access_key=ak))[
        "disassociate_scaling_group_with_keypair"
    ]["ok"]
    assert "gpu" not in await visible_to(world, world.other_user)
    assert (await run(world, world.superadmin, DISSOC_ALL_DOMAIN, domain="other"))[
        "disassociate_all_scaling_groups_with_domain"
    ]["ok"]
    assert "other-sg" not in await visible_to(world, world.other_user)

    modified = await run(
        world, world.superadmin, MODIFY_SG, name="gpu", input={"scheduler": "lifo"}
    )
    assert modified["modify_scaling_group"]["ok"] is True
    busy = await run(world, world.superadmin, DELETE_SG, name="default")
    assert busy["delete_scaling_group"]["ok"] is False
    deleted = await run(world, world.superadmin, DELETE_SG, name="gpu")
    assert deleted["delete_scaling_group"] == {"ok": True, "msg": "success"}
    assert (await run(world, world.superadmin, DELETE_SG, name="gpu"))["delete_scaling_group"][
        "ok"
    ] is False


CREATE_PRESET = """
mutation($name: String!, $input: CreateResourcePresetInput!) {
  create_resource_preset(name: $name, props: $input) {
    ok msg resource_preset { name resource_slots shared_memory }
  }
}"""
MODIFY_PRESET = """
mutation($name: String!, $input: ModifyResourcePresetInput!) {
  modify_resource_preset(name: $name, props: $input) { ok msg }
}"""
DELETE_PRESET = "mutation($name: String!) { delete_resource_preset(name: $name) { ok msg } }"


async def test_resource_presets(world: World) -> None:
    created = await run(
        world,
        world.superadmin,
        CREATE_PRESET,
        name="small",
        input={"resource_slots": '{"cpu": "1", "mem": "1g"}', "shared_memory": "64m"},
    )
    assert created["create_resource_preset"]["ok"] is True
    assert created["create_resource_preset"]["resource_preset"]["shared_memory"] == 64 * 2**20
    listed = await world.api.call("GET", "/resource/presets", key=world.user)
    assert "small" in {p["name"] for p in listed.json()["presets"]}
    body = await gql(
        world.api,
        world.superadmin,
        CREATE_PRESET,
        {"name": "bad", "input": {"resource_slots": '{"cpu": "-1"}'}},
    )
    assert "props.resource_slots" in messages(body)[0]
    body = await gql(
        world.api,
        world.superadmin,
        MODIFY_PRESET,
        {"name": "small", "input": {"shared_memory": "2g"}},
    )
    assert "props.shared_memory" in messages(body)[0]
    body = await gql(world.api, world.domain_admin, DELETE_PRESET, {"name": "small"})
    assert messages(body) == ["deleting resource presets needs superadmin privileges"]
    assert (await run(world, world.superadmin, DELETE_PRESET, name="small"))[
        "delete_resource_preset"
    ] == {"ok": True, "msg": "success"}


CREATE_UPOLICY = """
mutation($name: String!, $input: CreateUserResourcePolicyInput!) {
  create_user_resource_policy(name: $name, props: $input) {
    ok msg resource_policy { name max_vfolder_count max_quota_scope_size }
  }
}"""
DELETE_UPOLICY = "mutation($name: String!) { delete_user_resource_policy(name: $name) { ok msg } }"
CREATE_PPOLICY = """
mutation($name: String!, $input: CreateProjectResourcePolicyInput!) {
  create_project_resource_policy(name: $name, props: $input) { ok msg }
}"""
MODIFY_PPOLICY = """
mutation($name: String!, $input: ModifyProjectResourcePolicyInput!) {
  modify_project_resource_policy(name: $name, props: $input) { ok msg }
}"""
DELETE_PPOLICY = """
mutation($name: String!) { delete_project_resource_policy(name: $name) { ok msg } }"""


async def test_user_and_project_resource_policies(world: World) -> None:
    created = await run(
        world,
        world.superadmin,
        CREATE_UPOLICY,
        name="students",
        input={"max_vfolder_count": 3, "max_quota_scope_size": 2**30},
    )
    assert created["create_user_resource_policy"]["resource_policy"] == {
        "name": "students",
        "max_vfolder_count": 3,
        "max_quota_scope_size": 2**30,
    }
    body = await gql(
        world.api,
        world.superadmin,
        CREATE_UPOLICY,
        {"name": "neg", "input": {"max_vfolder_count": -1}},
    )
    assert "props.max_vfolder_count" in messages(body)[0]
    listed = await run(world, world.superadmin, "{ user_resource_policies { name } }")
    assert {p["name"] for p in listed["user_resource_policies"]} == {"default", "students"}
    mine = await run(world, world.user, "{ user_resource_policy { name } }")
    assert mine["user_resource_policy"] == {"name": "default"}
    body = await gql(world.api, world.user, "{ user_resource_policies { name } }")
    assert messages(body)
    in_use = await run(world, world.superadmin, DELETE_UPOLICY, name="default")
    assert in_use["delete_user_resource_policy"]["ok"] is False
    assert (await run(world, world.superadmin, DELETE_UPOLICY, name="students"))[
        "delete_user_resource_policy"
    ]["ok"]

    assert (await run(world, world.superadmin, CREATE_PPOLICY, name="labs", input={}))[
        "create_project_resource_policy"
    ]["ok"]
    assert (
        await run(
            world, world.superadmin, MODIFY_PPOLICY, name="labs", input={"max_vfolder_count": 9}
        )
    )["modify_project_resource_policy"]["ok"]
    got = await run(
        world, world.domain_admin, '{ project_resource_policy(name: "labs") { max_vfolder_count } }'
    )
    assert got["project_resource_policy"] == {"max_vfolder_count": 9}
    body = await gql(world.api, world.domain_admin, DELETE_PPOLICY, {"name": "labs"})
    assert messages(body) == ["deleting resource policies needs superadmin privileges"]
    assert (await run(world, world.superadmin, DELETE_PPOLICY, name="labs"))[
        "delete_project_resource_policy"
    ]["ok"]
