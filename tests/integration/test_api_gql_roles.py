"""Who may ask ``/admin/gql`` for what: every query field with each role.

Superadmins see everything; a domain admin sees inside their domain; a user
sees their own objects.  A field the caller may not query (another domain,
another user's keypair or projects, an admin-only listing) answers ``null``
with a GraphQL error whose ``extensions.code`` is ``"forbidden"``, never
data; an object merely out of sight (another domain's session named by id)
is ``null`` or absent from lists, as if it did not exist.

Roles (:mod:`support.api_gql`): ``super`` (admin@lablup.com), ``dadmin``
(admin of ``default``), ``user`` (user of ``default``), ``oadmin`` and
``ouser`` (admin and user of ``other``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bai.manager.db import Database

from support.api import Key, running_api
from support.api_gql import World, build_world, gql

ROLES = ("super", "dadmin", "user", "oadmin", "ouser")
#: Outcomes: "data" (a value with something in it), "none" (null, empty or zero),
#: "forbidden" (null with a forbidden error on the field).
DATA, NONE, FORBIDDEN = "data", "none", "forbidden"


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db, auth_cache_ttl=0) as api:
        yield await build_world(api)


def _key(world: World, role: str) -> Key:
    return {
        "super": world.superadmin,
        "dadmin": world.domain_admin,
        "user": world.user,
        "oadmin": world.other_admin,
        "ouser": world.other_user,
    }[role]


async def _ids(world: World) -> dict[str, str]:
    body = await gql(
        world.api,
        world.superadmin,
        '{ groups(domain_name: "other") { id } user(email: "other-user@lablup.com") { uuid } }',
    )
    return {
        "research": body["data"]["groups"][0]["id"],
        "ouser_uuid": body["data"]["user"]["uuid"],
        "ouser_ak": world.other_user.access_key,
        "other_session": str(world.sessions["other-1"]),
        "user_session": str(world.sessions["train-1"]),
    }


#: (query with {placeholders}, the field, outcome per role in ROLES order)
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("{ domains { name } }", "domains", (DATA, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    ('{ domain(name: "other") { name } }', "domain", (DATA, FORBIDDEN, FORBIDDEN, DATA, DATA)),
    ("{ domain { name scaling_groups } }", "domain", (DATA, DATA, DATA, DATA, DATA)),
    ("{ agents { id } }", "agents", (DATA, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN)),
    (
        '{ agent(agent_id: "i-agent01") { id } }',
        "agent",
        (DATA, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN),
    ),
    (
        "{ agent_list(limit: 5, offset: 0) { total_count } }",
        "agent_list",
        (DATA, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN),
    ),
    ("{ users { email } }", "users", (DATA, DATA, FORBIDDEN, DATA, FORBIDDEN)),
    (
        '{ user_list(limit: 50, offset: 0, domain_name: "other") { total_count } }',
        "user_list",
        (DATA, FORBIDDEN, FORBIDDEN, DATA, FORBIDDEN),
    ),
    (
        '{ user(email: "other-user@lablup.com") { email } }',
        "user",
        (DATA, NONE, FORBIDDEN, DATA, DATA),
    ),
    (
        '{ user_from_uuid(user_id: "{ouser_uuid}") { email } }',
        "user_from_uuid",
        (DATA, NONE, FORBIDDEN, DATA, DATA),
    ),
    (
        '{ keypair(access_key: "{ouser_ak}") { secret_key } }',
        "keypair",
        (DATA, NONE, FORBIDDEN, DATA, DATA),
    ),
    (
        '{ keypairs(email: "admin@lablup.com") { secret_key } }',
        "keypairs",
        (DATA, NONE, FORBIDDEN, NONE, FORBIDDEN),
    ),
    (
        '{ keypair_list(limit: 50, offset: 0, domain_name: "other") { total_count } }',
        "keypair_list",
        (DATA, FORBIDDEN, FORBIDDEN, DATA, DATA),
    ),
    (
        "{ keypair_resource_policies { name } }",
        "keypair_resource_policies",
        (DATA, DATA, DATA, DATA, DATA),
    ),
    (
        '{ groups(domain_name: "other") { name } }',
        "groups",
        (DATA, FORBIDDEN, FORBIDDEN, DATA, DATA),
    ),
    ('{ group(id: "{research}") { name } }', "group", (DATA, NONE, NONE, DATA, DATA)),
    (
        '{ groups_by_name(name: "research") { name } }',
        "groups_by_name",
        (DATA, NONE, NONE, DATA, DATA),
    ),
    (
        '{ compute_session_list(limit: 10, offset: 0, domain_name: "other") { total_count } }',
        "compute_session_list",
        (DATA, FORBIDDEN, FORBIDDEN, DATA, DATA),
    ),
    (
        '{ compute_session_list(limit: 10, offset: 0, access_key: "{ouser_ak}") { total_count } }',
        "compute_session_list",
        (DATA, NONE, FORBIDDEN, DATA, DATA),
    ),
    (
        '{ compute_session(id: "{other_session}") { name } }',
        "compute_session",
        (DATA, NONE, NONE, DATA, DATA),
    ),
    (
        '{ compute_session(id: "{user_session}") { name } }',
        "compute_session",
        (DATA, DATA, DATA, NONE, NONE),
    ),
    (
        '{ compute_container(id: "{other_session}") { id } }',
        "compute_container",
        (DATA, NONE, NONE, DATA, DATA),
    ),
    (
        '{ compute_container_list(limit: 5, offset: 0, session_id: "{other_session}")'
        " { total_count } }",
        "compute_container_list",
        (DATA, NONE, NONE, DATA, DATA),
    ),
    (
        '{ scaling_groups_for_domain(domain: "other") { name } }',
        "scaling_groups_for_domain",
        (DATA, FORBIDDEN, FORBIDDEN, DATA, DATA),
    ),
    (
        '{ scaling_groups_for_user_group(user_group: "{research}") { name } }',
        "scaling_groups_for_user_group",
        (NONE, FORBIDDEN, FORBIDDEN, NONE, NONE),
    ),
    (
        '{ scaling_groups_for_keypair(access_key: "{ouser_ak}") { name } }',
        "scaling_groups_for_keypair",
        (NONE, NONE, FORBIDDEN, NONE, NONE),
    ),
    (
        '{ scaling_group(name: "hidden-sg") { name } }',
        "scaling_group",
        (DATA, NONE, NONE, NONE, NONE),
    ),
    (
        '{ vfolder_list(limit: 5, offset: 0, domain_name: "other") { total_count } }',
        "vfolder_list",
        (NONE, FORBIDDEN, FORBIDDEN, NONE, NONE),
    ),
    (
        '{ vfolder_list(limit: 5, offset: 0, access_key: "{ouser_ak}") { total_count } }',
        "vfolder_list",
        (NONE, NONE, FORBIDDEN, NONE, NONE),
    ),
    (
        "{ storage_volume_list(limit: 5, offset: 0) { total_count } }",
        "storage_volume_list",
        (NONE, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN),  # no storage proxy here
    ),
    (
        '{ storage_volume(id: "local:volume1") { id } }',
        "storage_volume",
        (NONE, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN),
    ),
    (
        "{ vfolder_host_permissions { vfolder_host_permission_list } }",
        "vfolder_host_permissions",
        (DATA, DATA, DATA, DATA, DATA),
    ),
    ("{ images { name } }", "images", (DATA, DATA, DATA, DATA, DATA)),
    ("{ resource_presets { name } }", "resource_presets", (DATA, DATA, DATA, DATA, DATA)),
]


def _outcome(body: dict[str, Any], field: str) -> str:
    value = (body.get("data") or {}).get(field)
    errors = body.get("errors") or []
    if errors:
        assert value is None, f"data next to an error: {body}"
        assert [e.get("extensions", {}).get("code") for e in errors] == ["forbidden"], errors
        assert [e["path"] for e in errors] == [[field]], errors
        return FORBIDDEN
    if isinstance(value, dict) and "total_count" in value:
        return DATA if value["total_count"] else NONE
    return DATA if value else NONE


@pytest.mark.parametrize(("query", "field", "expected"), CASES, ids=[c[0][:60] for c in CASES])
async def test_each_role_gets_what_it_may_see(
    world: World, query: str, field: str, expected: tuple[str, ...]
) -> None:
    ids = await _ids(world)
    text = query
    for name, value in ids.items():
        text = text.replace("{" + name + "}", value)
    got = {role: _outcome(await gql(world.api, _key(world, role), text), field) for role in ROLES}
    assert got == dict(zip(ROLES, expected, strict=True)), got


async def test_a_forbidden_field_leaves_its_siblings_answered(world: World) -> None:
    body = await gql(world.api, world.user, "{ domains { name } keypair { access_key } }")
    assert body["data"] == {"domains": None, "keypair": {"access_key": world.user.access_key}}
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "forbidden"} and "superadmin" in error["message"]


async def test_domain_admins_never_see_superadmin_secrets(world: World) -> None:
    query = "{ keypairs { access_key secret_key ssh_private_key is_admin } }"
    body = await gql(world.api, world.domain_admin, query)
    listed = {k["access_key"] for k in body["data"]["keypairs"]}
    assert world.superadmin.access_key not in listed
    assert world.domain_admin.access_key in listed and world.user.access_key in listed
    nested = "{ users { email main_access_key } }"
    users = (await gql(world.api, world.domain_admin, nested))["data"]["users"]
    assert {u["email"] for u in users} >= {"user@lablup.com", "dadmin@lablup.com"}
    assert all(u["email"].endswith("@lablup.com") for u in users)
    assert "other-user@lablup.com" not in {u["email"] for u in users}
