"""``POST /admin/gql`` mutations: keypair resource policies and keypairs, with their
effect on authentication."""

from __future__ import annotations

import json
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


CREATE_POLICY = """
mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {
  create_keypair_resource_policy(name: $name, props: $input) {
    ok msg resource_policy { name default_for_unspecified total_resource_slots
      max_concurrent_sessions max_containers_per_session idle_timeout allowed_vfolder_hosts }
  }
}"""
MODIFY_POLICY = """
mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) {
  modify_keypair_resource_policy(name: $name, props: $input) { ok msg }
}"""
DELETE_POLICY = """
mutation($name: String!) { delete_keypair_resource_policy(name: $name) { ok msg } }"""
POLICY = """
query($name: String) {
  keypair_resource_policy(name: $name) { max_concurrent_sessions total_resource_slots }
}"""

# What the official client's `admin keypair-resource-policy add` sends (total_resource_slots
# as a JSON string, plus the SFTP limit bai does not have).
OFFICIAL_POLICY_INPUT = {
    "default_for_unspecified": "UNLIMITED",
    "total_resource_slots": '{"cpu": "8", "mem": "16g"}',
    "max_session_lifetime": 0,
    "max_concurrent_sessions": 5,
    "max_concurrent_sftp_sessions": 1,
    "max_containers_per_session": 2,
    "idle_timeout": 600,
    "allowed_vfolder_hosts": '{"local:volume1": ["create-vfolder"]}',
}


async def run(world: World, key: Key, query: str, **variables: Any) -> dict[str, Any]:
    return data_of(await gql(world.api, key, query, variables))


async def test_superadmins_manage_keypair_resource_policies(world: World) -> None:
    created = await run(
        world, world.superadmin, CREATE_POLICY, name="small", input=OFFICIAL_POLICY_INPUT
    )
    assert created["create_keypair_resource_policy"] == {
        "ok": True,
        "msg": "success",
        "resource_policy": {
            "name": "small",
            "default_for_unspecified": "UNLIMITED",
            "total_resource_slots": json.dumps({"cpu": "8", "mem": str(16 * 2**30)}),
            "max_concurrent_sessions": 5,
            "max_containers_per_session": 2,
            "idle_timeout": 600,
            "allowed_vfolder_hosts": ["local:volume1"],
        },
    }
    again = await run(
        world, world.superadmin, CREATE_POLICY, name="small", input=OFFICIAL_POLICY_INPUT
    )
    assert again["create_keypair_resource_policy"]["ok"] is False
    assert "already exists" in again["create_keypair_resource_policy"]["msg"]

    changed = await run(
        world, world.superadmin, MODIFY_POLICY, name="small", input={"max_concurrent_sessions": 7}
    )
    assert changed["modify_keypair_resource_policy"] == {"ok": True, "msg": "success"}
    assert (await run(world, world.superadmin, POLICY, name="small"))[
        "keypair_resource_policy"
    ] == {
        "max_concurrent_sessions": 7,
        "total_resource_slots": json.dumps({"cpu": "8", "mem": str(16 * 2**30)}),
    }
    missing = await run(
        world, world.superadmin, MODIFY_POLICY, name="nope", input={"idle_timeout": 1}
    )
    assert missing["modify_keypair_resource_policy"]["ok"] is False

    in_use = await run(world, world.superadmin, DELETE_POLICY, name="default")
    assert in_use["delete_keypair_resource_policy"]["ok"] is False
    assert "still use" in in_use["delete_keypair_resource_policy"]["msg"]
    deleted = await run(world, world.superadmin, DELETE_POLICY, name="small")
    assert deleted["delete_keypair_resource_policy"] == {"ok": True, "msg": "success"}
    assert (await run(world, world.superadmin, POLICY, name="small"))[
        "keypair_resource_policy"
    ] is None


async def test_policy_input_is_checked_and_admins_are_refused(world: World) -> None:
    bad_slots = {**OFFICIAL_POLICY_INPUT, "total_resource_slots": {"cpu": "lots"}}
    body = await gql(world.api, world.superadmin, CREATE_POLICY, {"name": "x", "input": bad_slots})
    assert body["data"]["create_keypair_resource_policy"] is None
    assert "'lots'" in messages(body)[0] and "total_resource_slots" in messages(body)[0]
    bad_default = {**OFFICIAL_POLICY_INPUT, "default_for_unspecified": "SOMETIMES"}
    body = await gql(
        world.api, world.superadmin, CREATE_POLICY, {"name": "x", "input": bad_default}
    )
    assert "'SOMETIMES'" in messages(body)[0]
    body = await gql(
        world.api,
        world.superadmin,
        MODIFY_POLICY,
        {"name": "default", "input": {"idle_timeout": -1}},
    )
    assert "must be 0 or more" in messages(body)[0]
    body = await gql(world.api, world.domain_admin, DELETE_POLICY, {"name": "default"})
    assert messages(body) == ["deleting resource policies needs superadmin privileges"]
    # Nothing was written by any of the refused calls.
    names = data_of(
        await gql(world.api, world.superadmin, "{ keypair_resource_policies { name } }")
    )
    assert names["keypair_resource_policies"] == [{"name": "default"}]


CREATE_KEYPAIR = """
mutation($user_id: String!, $input: KeyPairInput!) {
  create_keypair(user_id: $user_id, props: $input) {
    ok msg keypair { access_key secret_key user_id is_active is_admin rate_limit resource_policy }
  }
}"""
MODIFY_KEYPAIR = """
mutation($access_key: String!, $input: ModifyKeyPairInput!) {
  modify_keypair(access_key: $access_key, props: $input) { ok msg }
}"""
DELETE_KEYPAIR = """
mutation($access_key: String!) { delete_keypair(access_key: $access_key) { ok msg } }"""


async def can_authenticate(world: World, key: Key) -> bool:
    response = await world.api.call("GET", "/auth", key=key, params={"echo": "hi"})
    return response.status_code == 200


async def test_a_domain_admin_issues_revokes_and_deletes_keypairs(world: World) -> None:
    created = (
        await run(
            world,
            world.domain_admin,
            CREATE_KEYPAIR,
            user_id="user@lablup.com",
            input={"is_active": True, "is_admin": False, "rate_limit": 100},
        )
    )["create_keypair"]
    assert created["ok"] is True
    new = created["keypair"]
    assert new["access_key"].startswith("AKIA") and len(new["secret_key"]) == 40
    assert (new["user_id"], new["rate_limit"], new["resource_policy"]) == (
        "user@lablup.com",
        100,
        "default",
    )
    key = Key(new["access_key"], new["secret_key"], "user@lablup.com", world.user.user_id)
    assert await can_authenticate(world, key)

    # The official client deactivates with explicit nulls for the other fields.
    off = {"is_active": False, "is_admin": None, "resource_policy": None, "rate_limit": None}
    result = await run(
        world, world.domain_admin, MODIFY_KEYPAIR, access_key=key.access_key, input=off
    )
    assert result["modify_keypair"] == {"ok": True, "msg": "success"}
    assert not await can_authenticate(world, key)
    listing = (
        "query($email: String!) { keypairs(email: $email) { access_key is_active rate_limit } }"
    )
    rows = (await run(world, world.domain_admin, listing, email="user@lablup.com"))["keypairs"]
    assert {"access_key": key.access_key, "is_active": False, "rate_limit": 100} in rows

    deleted = await run(world, world.domain_admin, DELETE_KEYPAIR, access_key=key.access_key)
    assert deleted["delete_keypair"] == {"ok": True, "msg": "success"}
    rows = (await run(world, world.domain_admin, listing, email="user@lablup.com"))["keypairs"]
    assert [row["access_key"] for row in rows] == [world.user.access_key]


async def test_keypair_mutations_stay_within_the_callers_reach(world: World) -> None:
    # A domain admin cannot touch another domain's users, nor a superadmin's keypair.
    foreign = await run(
        world, world.domain_admin, CREATE_KEYPAIR, user_id="other-user@lablup.com", input={}
    )
    assert foreign["create_keypair"]["ok"] is False and foreign["create_keypair"]["keypair"] is None
    for mutation, variables in (
        (
            MODIFY_KEYPAIR,
            {"access_key": world.superadmin.access_key, "input": {"is_active": False}},
        ),
        (DELETE_KEYPAIR, {"access_key": world.superadmin.access_key}),
    ):
        answer = data_of(await gql(world.api, world.domain_admin, mutation, variables))
        assert next(iter(answer.values()))["ok"] is False
    assert await can_authenticate(world, world.superadmin)
    # Sessions keep their owner: a keypair that has any cannot be deleted.
    owner = await run(world, world.superadmin, DELETE_KEYPAIR, access_key=world.user.access_key)
    assert owner["delete_keypair"]["ok"] is False
    assert "3 session(s)" in owner["delete_keypair"]["msg"]
    unknown_policy = await run(
        world,
        world.superadmin,
        CREATE_KEYPAIR,
        user_id="user@lablup.com",
        input={"resource_policy": "gold"},
    )
    assert "'gold'" in unknown_policy["create_keypair"]["msg"]
    # concurrency_limit is accepted (the limit lives in the policy), but not a negative one.
    accepted = await run(
        world,
        world.superadmin,
        MODIFY_KEYPAIR,
        access_key=world.user.access_key,
        input={"concurrency_limit": 3},
    )
    assert accepted["modify_keypair"]["ok"] is True
    body = await gql(
        world.api,
        world.superadmin,
        MODIFY_KEYPAIR,
        {"access_key": world.user.access_key, "input": {"concurrency_limit": -1}},
    )
    assert "props.concurrency_limit" in messages(body)[0]
    body = await gql(world.api, world.user, DELETE_KEYPAIR, {"access_key": world.user.access_key})
    assert messages(body) == ["deleting keypairs needs admin privileges"]
