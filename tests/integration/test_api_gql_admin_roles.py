"""Every mutation of ``/admin/gql`` refuses callers without the privilege it needs, with a
GraphQL error and no change: plain users all of them, domain admins those for superadmins
and those aimed at another domain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bai.manager.api.gql.schema import SCHEMA
from bai.manager.db import Database
from bai.manager.models.identity import (
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
    keypairs,
    project_resource_policies,
    user_resource_policies,
    users,
)
from bai.manager.models.resource import (
    resource_presets,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)

from support.api import Key, running_api
from support.api_gql import World, build_world, gql, messages


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db, auth_cache_ttl=0) as api:
        yield await build_world(api)


_SOME_ID = str(uuid.uuid4())

# (mutation, arguments as GraphQL literals, only for superadmins)
MUTATIONS: list[tuple[str, str, bool]] = [
    ("create_domain", 'name: "d2", props: {}', True),
    ("modify_domain", 'name: "default", props: {description: "x"}', True),
    ("delete_domain", 'name: "other"', True),
    ("purge_domain", 'name: "other"', True),
    ("create_scaling_group", 'name: "s2", props: {driver: "static", scheduler: "fifo"}', True),
    ("modify_scaling_group", 'name: "default", props: {description: "x"}', True),
    ("delete_scaling_group", 'name: "hidden-sg"', True),
    ("associate_scaling_group_with_domain", 'domain: "default", scaling_group: "hidden-sg"', True),
    ("disassociate_scaling_group_with_domain", 'domain: "other", scaling_group: "other-sg"', True),
    ("disassociate_all_scaling_groups_with_domain", 'domain: "other"', True),
    (
        "associate_scaling_group_with_user_group",
        f'scaling_group: "hidden-sg", user_group: "{_SOME_ID}"',
        True,
    ),
    (
        "disassociate_scaling_group_with_user_group",
        f'scaling_group: "hidden-sg", user_group: "{_SOME_ID}"',
        True,
    ),
    ("disassociate_all_scaling_groups_with_group", f'user_group: "{_SOME_ID}"', True),
    (
        "associate_scaling_group_with_keypair",
        'access_key: "AKIA", scaling_group: "hidden-sg"',
        True,
    ),
    (
        "disassociate_scaling_group_with_keypair",
        'access_key: "AKIA", scaling_group: "hidden-sg"',
        True,
    ),
    ("create_resource_preset", 'name: "p2", props: {resource_slots: "{\\"cpu\\": \\"1\\"}"}', True),
    ("modify_resource_preset", 'name: "p2", props: {shared_memory: "1m"}', True),
    ("delete_resource_preset", 'name: "p2"', True),
    (
        "create_keypair_resource_policy",
        'name: "k2", props: {default_for_unspecified: "LIMITED", total_resource_slots: "{}",'
        " max_concurrent_sessions: 1, max_containers_per_session: 1, idle_timeout: 0}",
        True,
    ),
    ("modify_keypair_resource_policy", 'name: "default", props: {idle_timeout: 5}', True),
    ("delete_keypair_resource_policy", 'name: "default"', True),
    ("create_user_resource_policy", 'name: "u2", props: {}', True),
    ("modify_user_resource_policy", 'name: "default", props: {max_vfolder_count: 1}', True),
    ("delete_user_resource_policy", 'name: "default"', True),
    ("create_project_resource_policy", 'name: "g2", props: {}', True),
    ("modify_project_resource_policy", 'name: "default", props: {max_vfolder_count: 1}', True),
    ("delete_project_resource_policy", 'name: "default"', True),
    (
        "create_user",
        'email: "x@example.com", props: {password: "p", domain_name: "default"}',
        False,
    ),
    ("modify_user", 'email: "user@lablup.com", props: {full_name: "x"}', False),
    ("delete_user", 'email: "user@lablup.com"', False),
    ("purge_user", 'email: "user@lablup.com", props: {}', False),
    ("create_group", 'name: "g2", props: {domain_name: "default"}', False),
    ("modify_group", f'gid: "{_SOME_ID}", props: {{description: "x"}}', False),
    ("delete_group", f'gid: "{_SOME_ID}"', False),
    ("purge_group", f'gid: "{_SOME_ID}"', False),
    ("create_keypair", 'user_id: "user@lablup.com", props: {}', False),
    ("modify_keypair", 'access_key: "AKIA", props: {is_active: false}', False),
    ("delete_keypair", 'access_key: "AKIA"', False),
]

# Aimed at the domain "other" or at a superadmin: refused to the admin of "default".
FOREIGN: list[tuple[str, str]] = [
    ("create_user", 'email: "x@example.com", props: {password: "p", domain_name: "other"}'),
    ("create_user", 'email: "x@example.com", props: {password: "p", domain_name: "default",'
     ' role: "superadmin"}'),
    ("modify_user", 'email: "other-user@lablup.com", props: {full_name: "x"}'),
    ("modify_user", 'email: "admin@lablup.com", props: {full_name: "x"}'),
    ("delete_user", 'email: "other-user@lablup.com"'),
    ("purge_user", 'email: "other-admin@lablup.com", props: {}'),
    ("create_group", 'name: "g2", props: {domain_name: "other"}'),
]  # fmt: skip

_TABLES = (
    domains,
    groups,
    users,
    association_groups_users,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
    resource_presets,
    keypair_resource_policies,
    user_resource_policies,
    project_resource_policies,
)


async def snapshot(world: World) -> list[Any]:
    """Every row a mutation could change (keypairs without their usage counters)."""
    async with world.api.db.begin() as conn:
        rows = [sorted(map(repr, await conn.execute(sa.select(table)))) for table in _TABLES]
        rows.append(
            sorted(
                map(
                    repr,
                    await conn.execute(
                        sa.select(
                            keypairs.c.access_key,
                            keypairs.c.is_active,
                            keypairs.c.is_admin,
                            keypairs.c.resource_policy,
                            keypairs.c.rate_limit,
                        )
                    ),
                )
            )
        )
    return rows


async def refused(world: World, key: Key, name: str, arguments: str) -> list[str]:
    """The error messages of running mutation *name*, which must give no data; a refusal
    for want of privileges carries the problem type ``forbidden``."""
    body = await gql(world.api, key, f"mutation {{ {name}({arguments}) {{ ok msg }} }}")
    assert body["data"] == {name: None} or body.get("data") is None, (name, body)
    for error in body.get("errors") or ():
        if "privileges" in error["message"]:
            assert error["extensions"]["code"] == "forbidden", (name, error)
    return messages(body)


async def test_plain_users_may_run_no_mutation(world: World) -> None:
    before = await snapshot(world)
    for name, arguments, _ in MUTATIONS:
        errors = await refused(world, world.user, name, arguments)
        assert len(errors) == 1 and "privileges" in errors[0], (name, errors)
    assert await snapshot(world) == before


async def test_domain_admins_stay_in_their_domain(world: World) -> None:
    before = await snapshot(world)
    for name, arguments, superadmin_only in MUTATIONS:
        if superadmin_only:
            errors = await refused(world, world.domain_admin, name, arguments)
            assert errors and "superadmin privileges" in errors[0], (name, errors)
    for name, arguments in FOREIGN:
        errors = await refused(world, world.domain_admin, name, arguments)
        assert errors, (name, arguments)
    assert await snapshot(world) == before


def test_every_mutation_of_the_schema_is_checked() -> None:
    assert SCHEMA.mutation_type is not None
    assert set(SCHEMA.mutation_type.fields) == {name for name, _, _ in MUTATIONS}
