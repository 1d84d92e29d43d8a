"""Populating the database from fixtures, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.slots import DefaultForUnspecified, ResourceSlot
from bai.manager.db import Database
from bai.manager.fixtures import FixtureError, default_fixture, populate
from bai.manager.models import (
    association_groups_users,
    domains,
    groups,
    image_aliases,
    images,
    keypair_resource_policies,
    keypairs,
    metadata,
    resource_presets,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
    shared_config,
    users,
)
from bai.manager.models.identity import UserRole, verify_password


async def snapshot(db: Database) -> dict[str, list[Any]]:
    """Every row of every table, in a stable order."""
    out: dict[str, list[Any]] = {}
    async with db.begin_readonly() as conn:
        for name, table in sorted(metadata.tables.items()):
            rows = await conn.execute(sa.select(table))
            out[name] = sorted(tuple(map(str, row)) for row in rows)
    return out


async def test_default_fixture_creates_the_embedded_world(db: Database) -> None:
    report = await populate(db, default_fixture())
    assert report.inserted["users"] == 2 and report.inserted["keypairs"] == 2
    created = {k.user_email: k for k in report.keypairs}
    assert set(created) == {"admin@lablup.com", "user@lablup.com"}
    for keypair in created.values():
        assert re.fullmatch(r"AKIA[A-Z0-9]{16}", keypair.access_key)
        assert re.fullmatch(r"[A-Za-z0-9]{40}", keypair.secret_key)
    assert created["admin@lablup.com"].is_admin and not created["user@lablup.com"].is_admin
    async with db.begin_readonly() as conn:
        roles = dict((await conn.execute(sa.select(users.c.email, users.c.role))).all())
        assert roles == {"admin@lablup.com": UserRole.SUPERADMIN, "user@lablup.com": UserRole.USER}
        stored = dict(
            (await conn.execute(sa.select(keypairs.c.access_key, keypairs.c.secret_key))).all()
        )
        assert stored == {k.access_key: k.secret_key for k in created.values()}
        policy = (await conn.execute(sa.select(keypair_resource_policies))).one()
        assert policy.name == "default"
        assert policy.default_for_unspecified is DefaultForUnspecified.UNLIMITED
        group_members = await conn.scalar(
            sa.select(sa.func.count()).select_from(association_groups_users)
        )
        assert group_members == 2
        sgroup = (await conn.execute(sa.select(scaling_groups))).one()
        assert (sgroup.name, sgroup.scheduler) == ("default", "fifo")
        assert (await conn.execute(sa.select(sgroups_for_domains))).one() == ("default", "default")
        presets = dict(
            (
                await conn.execute(
                    sa.select(resource_presets.c.name, resource_presets.c.resource_slots)
                )
            ).all()
        )
        assert presets["cpu01-small"] == ResourceSlot({"cpu": 1, "mem": 1 << 30})
        assert {"cpu01-small", "cpu02-medium"} <= set(presets)


async def test_populate_twice_changes_nothing(db: Database) -> None:
    await populate(db, default_fixture())
    before = await snapshot(db)
    report = await populate(db, default_fixture())
    assert report.inserted == {} and report.keypairs == []
    assert report.skipped["users"] == 2
    assert await snapshot(db) == before


def full_fixture() -> dict[str, Any]:
    fixture = default_fixture()
    fixture["users"].append(
        {
            "email": "dev@example.com",
            "username": "dev",
            "password": "s3cret-pass",
            "domain_name": "default",
            "groups": ["research"],
            "uuid": "8f0c3a52-3a0e-4f36-9a7f-3e8f5b0c2d11",
        }
    )
    fixture["groups"].append(
        {"name": "research", "domain_name": "default", "total_resource_slots": {"cpu": "16"}}
    )
    fixture["keypairs"].append(
        {
            "user": "dev@example.com",
            "access_key": "AKIAFIXEDKEY00000001",
            "secret_key": "fixed-secret-0123456789",
            "resource_policy": "default",
        }
    )
    fixture["scaling_groups"].append(
        {
            "name": "gpu",
            "scheduler": "drf",
            "scheduler_opts": {"num_retries_to_skip": 3},
            "groups": [{"domain": "default", "name": "research"}],
            "keypairs": ["AKIAFIXEDKEY00000001"],
        }
    )
    fixture["images"] = [
        {
            "name": "cr.backend.ai/stable/python:3.11",
            "registry": "cr.backend.ai",
            "image": "stable/python",
            "tag": "3.11",
            "labels": {"ai.backend.runtime-type": "python"},
            "aliases": ["python", "python:3.11"],
        }
    ]
    fixture["config"] = {"docker/registry/cr.backend.ai": {"type": "docker"}}
    return fixture


async def test_every_section_is_written(db: Database) -> None:
    report = await populate(db, full_fixture())
    assert report.inserted["image_aliases"] == 2
    async with db.begin_readonly() as conn:
        dev = (await conn.execute(sa.select(users).where(users.c.email == "dev@example.com"))).one()
        assert dev.uuid == uuid.UUID("8f0c3a52-3a0e-4f36-9a7f-3e8f5b0c2d11")
        assert verify_password("s3cret-pass", dev.password)
        assert not verify_password("wrong", dev.password)
        assert "s3cret-pass" not in dev.password
        research = await conn.scalar(sa.select(groups.c.id).where(groups.c.name == "research"))
        assert (await conn.execute(sa.select(sgroups_for_groups))).one() == ("gpu", research)
        assert (await conn.execute(sa.select(sgroups_for_keypairs))).one() == (
            "gpu",
            "AKIAFIXEDKEY00000001",
        )
        is_admin = await conn.scalar(
            sa.select(keypairs.c.is_admin).where(keypairs.c.user_id == "dev@example.com")
        )
        assert is_admin is False
        image_id = await conn.scalar(sa.select(images.c.id))
        aliases = (
            await conn.execute(sa.select(image_aliases.c.alias, image_aliases.c.image_id))
        ).all()
        assert sorted(aliases) == [("python", image_id), ("python:3.11", image_id)]
        assert await conn.scalar(sa.select(shared_config.c.value)) == {"type": "docker"}
    # A keyed keypair is present after the first run: the second run skips it too.
    before = await snapshot(db)
    await populate(db, full_fixture())
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f["users"][1].update(domain_name="nowhere"), r"users\[1\].*unknown domain"),
        (lambda f: f["users"][0].update(groups=["nope"]), r"users\[0\].*unknown group"),
        (lambda f: f["users"][0].update(role="emperor"), r"role"),
        (lambda f: f["users"][0].update(shoe_size=42), r"shoe_size"),
        (lambda f: f["keypairs"][1].update(user="ghost@x.y"), r"keypairs\[1\].*unknown user"),
        (
            lambda f: f["keypairs"][0].update(resource_policy="vip"),
            r"keypairs\[0\].*unknown keypair resource policy",
        ),
        (
            lambda f: f["keypairs"].append(
                {"user": "user@lablup.com", "resource_policy": "default"}
            ),
            r"keypairs\[2\].*one keypair without an access_key",
        ),
        (
            lambda f: f["resource_presets"][2].update(resource_slots={"cpu": "-1"}),
            r"resource_presets\[2\].*cpu",
        ),
        (
            lambda f: f["resource_presets"][0].update(shared_memory="lots"),
            r"resource_presets\[0\].*shared_memory",
        ),
        (lambda f: f["groups"][0].update(domain_name="elsewhere"), r"groups\[0\].*unknown domain"),
        (lambda f: f.update(config={"bad//key": 1}), r"config"),
        (lambda f: f.update(surprise=[]), r"surprise"),
    ],
)
async def test_a_bad_entry_writes_nothing_and_is_named(
    db: Database,
    mutate: Any,
    message: str,
) -> None:
    fixture = default_fixture()
    mutate(fixture)
    before = await snapshot(db)
    with pytest.raises(FixtureError, match=message):
        await populate(db, fixture)
    assert await snapshot(db) == before


async def test_conflict_with_existing_rows_writes_nothing(db: Database) -> None:
    await populate(db, default_fixture())
    before = await snapshot(db)
    fixture = default_fixture()
    fixture["domains"].append({"name": "second"})
    # Same username as the existing admin, different email: a unique-key conflict.
    fixture["users"].append(
        {"email": "other@lablup.com", "username": "admin", "domain_name": "default"}
    )
    with pytest.raises(FixtureError, match=r"users\[2\].*conflicts"):
        await populate(db, fixture)
    assert await snapshot(db) == before
    async with db.begin_readonly() as conn:
        assert (
            await conn.scalar(sa.select(domains.c.name).where(domains.c.name == "second")) is None
        )
