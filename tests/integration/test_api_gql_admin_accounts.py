"""``POST /admin/gql`` mutations of users, projects and domains: each role, bad input, and
their effect (a created user logs in, a deleted one cannot sign requests)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bai.manager.db import Database
from bai.manager.models.identity import association_groups_users, groups, keypairs, users

from support.api import Key, running_api
from support.api_gql import World, build_world, data_of, gql, messages


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db, auth_cache_ttl=0) as api:
        yield await build_world(api)


# What the official client 23.9's `admin user add` sends.
CREATE_USER = """
mutation($email: String!, $input: UserInput!) {
  create_user(email: $email, props: $input) {
    ok msg user { domain_name email username uuid role status groups { id name } }
  }
}"""
MODIFY_USER = """
mutation($email: String!, $input: ModifyUserInput!) {
  modify_user(email: $email, props: $input) { ok msg }
}"""
DELETE_USER = "mutation($email: String!) { delete_user(email: $email) { ok msg } }"
PURGE_USER = """
mutation($email: String!, $input: PurgeUserInput!) {
  purge_user(email: $email, props: $input) { ok msg }
}"""
CREATE_GROUP = """
mutation($name: String!, $input: GroupInput!) {
  create_group(name: $name, props: $input) { ok msg group { id domain_name name } }
}"""
MODIFY_GROUP = """
mutation($gid: UUID!, $input: ModifyGroupInput!) {
  modify_group(gid: $gid, props: $input) { ok msg }
}"""
DELETE_GROUP = "mutation($gid: UUID!) { delete_group(gid: $gid) { ok msg } }"
PURGE_GROUP = "mutation($gid: UUID!) { purge_group(gid: $gid) { ok msg } }"
CREATE_DOMAIN = """
mutation($name: String!, $input: DomainInput!) {
  create_domain(name: $name, props: $input) { ok msg domain { name is_active } }
}"""
MODIFY_DOMAIN = """
mutation($name: String!, $input: ModifyDomainInput!) {
  modify_domain(name: $name, props: $input) { ok msg }
}"""
DELETE_DOMAIN = "mutation($name: String!) { delete_domain(name: $name) { ok msg } }"
PURGE_DOMAIN = "mutation($name: String!) { purge_domain(name: $name) { ok msg } }"


def user_input(**extra: Any) -> dict[str, Any]:
    return {
        "password": "s3cret-Pass",
        "role": "user",
        "status": "active",
        "need_password_change": False,
        "description": "",
        "domain_name": "default",
        "totp_activated": False,
        "sudo_session_enabled": False,
        **extra,
    }


async def run(world: World, key: Key, query: str, **variables: Any) -> dict[str, Any]:
    return data_of(await gql(world.api, key, query, variables))


async def login(world: World, username: str, password: str) -> int:
    body = {"type": "keypair", "domain": "default", "username": username, "password": password}
    return (await world.api.call("POST", "/auth/authorize", json_body=body)).status_code


async def default_group(world: World, domain: str = "default") -> uuid.UUID:
    async with world.api.db.begin() as conn:
        found = await conn.scalar(
            sa.select(groups.c.id).where(groups.c.domain_name == domain).limit(1)
        )
    return uuid.UUID(str(found))


async def scalars(world: World, query: sa.Select[Any]) -> list[Any]:
    async with world.api.db.begin() as conn:
        return list((await conn.execute(query)).scalars())


async def key_of(world: World, email: str) -> Key:
    async with world.api.db.begin() as conn:
        row = (
            await conn.execute(
                sa.select(keypairs.c.access_key, keypairs.c.secret_key, users.c.uuid)
                .join(users, users.c.uuid == keypairs.c.user)
                .where(users.c.email == email)
            )
        ).one()
    return Key(row.access_key, row.secret_key, email, row.uuid)


async def test_created_user_logs_in_with_keypair_and_groups(world: World) -> None:
    gid = await default_group(world)
    created = await run(
        world,
        world.superadmin,
        CREATE_USER,
        email="new@example.com",
        input=user_input(username="newbie", group_ids=[str(gid)]),
    )
    answer = created["create_user"]
    assert answer["ok"] is True, answer
    assert answer["user"]["username"] == "newbie"
    assert answer["user"]["groups"] == [{"id": str(gid), "name": "default"}]
    assert await login(world, "newbie", "s3cret-Pass") == 200
    key = await key_of(world, "new@example.com")
    me = data_of(await gql(world.api, key, "{ user { email role } }"))
    assert me["user"] == {"email": "new@example.com", "role": "user"}

    # Twice: refused, nothing changed.
    again = await run(
        world, world.superadmin, CREATE_USER, email="new@example.com", input=user_input()
    )
    assert again["create_user"]["ok"] is False
    assert "already exists" in again["create_user"]["msg"]

    # Password change through modify_user.
    changed = await run(
        world,
        world.superadmin,
        MODIFY_USER,
        email="new@example.com",
        input={"password": "other-Pass", "full_name": "New Person"},
    )
    assert changed["modify_user"]["ok"] is True
    assert await login(world, "newbie", "s3cret-Pass") == 401
    assert await login(world, "newbie", "other-Pass") == 200

    # Delete: the keypair stops working.
    deleted = await run(world, world.superadmin, DELETE_USER, email="new@example.com")
    assert deleted["delete_user"] == {"ok": True, "msg": "success"}
    response = await gql_status(world, key)
    assert response == 401

    # Purge: the rows are gone.
    purged = await run(
        world,
        world.superadmin,
        PURGE_USER,
        email="new@example.com",
        input={"purge_shared_vfolders": False},
    )
    assert purged["purge_user"] == {"ok": True, "msg": "success"}
    assert (
        await scalars(world, sa.select(users.c.uuid).where(users.c.email == "new@example.com"))
        == []
    )


async def gql_status(world: World, key: Key) -> int:
    response = await world.api.call(
        "POST", "/admin/gql", key=key, json_body={"query": "{ user { email } }"}
    )
    return response.status_code


async def test_bad_user_input_changes_nothing(world: World) -> None:
    body = await gql(
        world.api, world.superadmin, CREATE_USER, {"email": "not-an-email", "input": user_input()}
    )
    assert "is not an email address" in messages(body)[0]
    body = await gql(
        world.api,
        world.superadmin,
        CREATE_USER,
        {"email": "x@example.com", "input": user_input(role="emperor")},
    )
    assert "props.role" in messages(body)[0]
    unknown_domain = await run(
        world,
        world.superadmin,
        CREATE_USER,
        email="x@example.com",
        input=user_input(domain_name="nowhere"),
    )
    assert "'nowhere'" in unknown_domain["create_user"]["msg"]
    unknown_group = await run(
        world,
        world.superadmin,
        CREATE_USER,
        email="x@example.com",
        input=user_input(group_ids=[str(uuid.uuid4())]),
    )
    assert unknown_group["create_user"]["ok"] is False
    # The project of another domain does not count either.
    other = await default_group(world, "other")
    foreign = await run(
        world,
        world.superadmin,
        CREATE_USER,
        email="x@example.com",
        input=user_input(group_ids=[str(other)]),
    )
    assert foreign["create_user"]["ok"] is False
    assert (
        await scalars(world, sa.select(users.c.uuid).where(users.c.email == "x@example.com")) == []
    )


async def test_roles_on_user_mutations(world: World) -> None:
    # A domain admin creates users in their domain, never superadmins, never elsewhere.
    made = await run(
        world, world.domain_admin, CREATE_USER, email="d1@example.com", input=user_input()
    )
    assert made["create_user"]["ok"] is True
    body = await gql(
        world.api,
        world.domain_admin,
        CREATE_USER,
        {"email": "d2@example.com", "input": user_input(role="superadmin")},
    )
    assert "superadmin" in messages(body)[0]
    body = await gql(
        world.api,
        world.domain_admin,
        CREATE_USER,
        {"email": "d3@example.com", "input": user_input(domain_name="other")},
    )
    assert messages(body) and "'other'" in messages(body)[0]
    body = await gql(world.api, world.domain_admin, DELETE_USER, {"email": "other-user@lablup.com"})
    assert messages(body)
    body = await gql(world.api, world.domain_admin, DELETE_USER, {"email": "admin@lablup.com"})
    assert "superadmin" in messages(body)[0]
    body = await gql(
        world.api,
        world.domain_admin,
        MODIFY_USER,
        {"email": "d1@example.com", "input": {"role": "superadmin"}},
    )
    assert "superadmin" in messages(body)[0]
    # A plain user: nothing.
    body = await gql(
        world.api, world.user, CREATE_USER, {"email": "u@example.com", "input": user_input()}
    )
    assert messages(body) == ["creating users needs admin privileges"]
    body = await gql(world.api, world.user, DELETE_USER, {"email": "d1@example.com"})
    assert messages(body) == ["deleting users needs admin privileges"]
    body = await gql(world.api, world.superadmin, DELETE_USER, {"email": "admin@lablup.com"})
    assert "your own account" in messages(body)[0]
    # A user with live sessions is not purged.
    refused = await run(world, world.superadmin, PURGE_USER, email="user@lablup.com", input={})
    assert refused["purge_user"]["ok"] is False
    assert "live session(s)" in refused["purge_user"]["msg"]


async def test_groups_members_and_deletion(world: World) -> None:
    created = await run(
        world,
        world.domain_admin,
        CREATE_GROUP,
        name="team-a",
        input={
            "description": "",
            "is_active": True,
            "domain_name": "default",
            "total_resource_slots": None,
            "allowed_vfolder_hosts": None,
            "integration_id": None,
        },
    )
    answer = created["create_group"]
    assert answer["ok"] is True, answer
    gid = answer["group"]["id"]
    twice = await run(
        world, world.superadmin, CREATE_GROUP, name="team-a", input={"domain_name": "default"}
    )
    assert twice["create_group"]["ok"] is False
    body = await gql(
        world.api,
        world.domain_admin,
        CREATE_GROUP,
        {"name": "x", "input": {"domain_name": "other"}},
    )
    assert messages(body)
    body = await gql(
        world.api, world.user, CREATE_GROUP, {"name": "x", "input": {"domain_name": "default"}}
    )
    assert messages(body) == ["creating projects needs admin privileges"]

    added = await run(
        world,
        world.domain_admin,
        MODIFY_GROUP,
        gid=gid,
        input={"user_update_mode": "add", "user_uuids": [str(world.user.user_id)]},
    )
    assert added["modify_group"]["ok"] is True
    assert await scalars(
        world,
        sa.select(association_groups_users.c.user_id).where(
            association_groups_users.c.group_id == uuid.UUID(gid)
        ),
    ) == [world.user.user_id]
    # A member of another domain cannot join.
    foreign = await run(
        world,
        world.superadmin,
        MODIFY_GROUP,
        gid=gid,
        input={"user_update_mode": "add", "user_uuids": [str(world.other_user.user_id)]},
    )
    assert foreign["modify_group"]["ok"] is False

    refused = await run(world, world.superadmin, DELETE_GROUP, gid=gid)
    assert refused["delete_group"]["ok"] is False
    assert "1 member(s)" in refused["delete_group"]["msg"]
    removed = await run(
        world,
        world.superadmin,
        MODIFY_GROUP,
        gid=gid,
        input={"user_update_mode": "remove", "user_uuids": [str(world.user.user_id)]},
    )
    assert removed["modify_group"]["ok"] is True
    deleted = await run(world, world.domain_admin, DELETE_GROUP, gid=gid)
    assert deleted["delete_group"] == {"ok": True, "msg": "success"}
    purged = await run(world, world.domain_admin, PURGE_GROUP, gid=gid)
    assert purged["purge_group"] == {"ok": True, "msg": "success"}
    # The default project has members and live sessions.
    busy = await run(world, world.superadmin, PURGE_GROUP, gid=str(await default_group(world)))
    assert "live session(s)" in busy["purge_group"]["msg"]


async def test_domains(world: World) -> None:
    created = await run(
        world,
        world.superadmin,
        CREATE_DOMAIN,
        name="lab",
        input={"description": "", "is_active": True, "total_resource_slots": '{"cpu": "4"}'},
    )
    assert created["create_domain"] == {
        "ok": True,
        "msg": "success",
        "domain": {"name": "lab", "is_active": True},
    }
    again = await run(world, world.superadmin, CREATE_DOMAIN, name="lab", input={})
    assert again["create_domain"]["ok"] is False
    body = await gql(world.api, world.superadmin, CREATE_DOMAIN, {"name": "bad name!", "input": {}})
    assert "name" in messages(body)[0]
    for key in (world.domain_admin, world.user):
        body = await gql(world.api, key, CREATE_DOMAIN, {"name": "x", "input": {}})
        assert messages(body) == ["creating domains needs superadmin privileges"]
        body = await gql(world.api, key, DELETE_DOMAIN, {"name": "default"})
        assert messages(body) == ["deleting domains needs superadmin privileges"]
    modified = await run(
        world, world.superadmin, MODIFY_DOMAIN, name="lab", input={"description": "Lab"}
    )
    assert modified["modify_domain"]["ok"] is True
    busy = await run(world, world.superadmin, DELETE_DOMAIN, name="default")
    assert busy["delete_domain"]["ok"] is False
    assert "user(s)" in busy["delete_domain"]["msg"]
    deleted = await run(world, world.superadmin, DELETE_DOMAIN, name="lab")
    assert deleted["delete_domain"] == {"ok": True, "msg": "success"}
    purged = await run(world, world.superadmin, PURGE_DOMAIN, name="lab")
    assert purged["purge_domain"] == {"ok": True, "msg": "success"}
    gone = await run(world, world.superadmin, PURGE_DOMAIN, name="lab")
    assert gone["purge_domain"]["ok"] is False


async def test_projects_named_as_the_spec_does(world: World) -> None:
    created = await run(
        world, world.domain_admin, CREATE_GROUP, name="team-b", input={"domain_name": "default"}
    )
    assert created["create_group"]["ok"] is True
    by_name = """
    mutation($name: String!, $input: ModifyGroupInput!) {
      modify_group(name: $name, props: $input) { ok msg group { name description } }
    }"""
    renamed = await run(
        world, world.domain_admin, by_name, name="team-b", input={"description": "B"}
    )
    assert renamed["modify_group"] == {
        "ok": True,
        "msg": "success",
        "group": {"name": "team-b", "description": "B"},
    }
    # The domain admin of "default" does not reach "research" of the domain "other".
    hidden = await run(world, world.domain_admin, by_name, name="research", input={})
    assert hidden["modify_group"]["ok"] is False
    body = await gql(world.api, world.superadmin, "mutation { delete_group { ok msg } }")
    assert "gid or by name" in messages(body)[0]
    deleted = await run(
        world, world.domain_admin, 'mutation { delete_group(name: "team-b") { ok msg } }'
    )
    assert deleted["delete_group"] == {"ok": True, "msg": "success"}


async def test_renamed_domain_keeps_its_users(world: World) -> None:
    assert (await run(world, world.superadmin, CREATE_DOMAIN, name="lab", input={}))[
        "create_domain"
    ]["ok"]
    made = await run(
        world,
        world.superadmin,
        CREATE_USER,
        email="lab@example.com",
        input=user_input(domain_name="lab"),
    )
    assert made["create_user"]["user"]["domain_name"] == "lab"
    taken = await run(world, world.superadmin, MODIFY_DOMAIN, name="lab", input={"name": "other"})
    assert "already exists" in taken["modify_domain"]["msg"]
    renamed = await run(world, world.superadmin, MODIFY_DOMAIN, name="lab", input={"name": "lab2"})
    assert renamed["modify_domain"]["ok"] is True
    assert await scalars(
        world, sa.select(users.c.domain_name).where(users.c.email == "lab@example.com")
    ) == ["lab2"]
    refused = await run(world, world.superadmin, DELETE_DOMAIN, name="lab2")
    assert refused["delete_domain"] == {
        "ok": False,
        "msg": "the domain 'lab2' still has 1 user(s)",
    }
