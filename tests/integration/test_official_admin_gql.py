"""The official client's ``backend.ai admin ...`` account commands against ``bai up``:
each one's effect is read back from the manager's database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bai.embedded import EmbeddedHandle
from bai.manager.models.identity import (
    UserStatus,
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.resource import scaling_groups, sgroups_for_domains

from support.official import embedded_cluster, official, official_cli_path


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    async with embedded_cluster(tmp_path / "data") as handle:
        yield handle


async def scalar(handle: EmbeddedHandle, query: sa.Select[tuple[object]]) -> object:
    async with handle.manager.ctx.db.begin() as conn:
        return await conn.scalar(query)


def admin_cli(official_cli: Path, cluster: EmbeddedHandle, cwd: Path) -> Callable[..., Any]:
    async def cli(*args: str) -> str:
        # "y": purges ask for a confirmation.
        code, out, err = await official(official_cli, cluster, cwd, "admin", *args, stdin=b"y\n")
        assert code == 0, (args, out, err)
        # The client exits 0 on a refused mutation too; it prints the refusal.
        assert "failed" not in (out + err).lower(), (args, out, err)
        return out + err

    return cli


async def test_admin_domain_user_and_scaling_group_commands(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    cli = admin_cli(official_cli, cluster, tmp_path)

    await cli("domain", "add", "lab")
    await cli("domain", "update", "lab", "--description", "The lab")
    assert await scalar(cluster, sa.select(domains.c.description).where(domains.c.name == "lab"))
    await cli("domain", "delete", "lab")
    assert (
        await scalar(cluster, sa.select(domains.c.is_active).where(domains.c.name == "lab"))
        is False
    )

    await cli("user", "add", "default", "cli@example.com", "pa55-Word", "-u", "cliuser")
    await cli("user", "update", "cli@example.com", "--full-name", "CLI User")
    assert (
        await scalar(
            cluster, sa.select(users.c.full_name).where(users.c.email == "cli@example.com")
        )
        == "CLI User"
    )
    await cli("user", "delete", "cli@example.com")
    status = await scalar(
        cluster, sa.select(users.c.status).where(users.c.email == "cli@example.com")
    )
    assert str(status) == UserStatus.DELETED
    await cli("user", "purge", "cli@example.com")
    assert (
        await scalar(cluster, sa.select(users.c.uuid).where(users.c.email == "cli@example.com"))
        is None
    )

    await cli("scaling-group", "add", "gpu", "--driver", "static", "--scheduler", "fifo")
    await cli("scaling-group", "update", "gpu", "--description", "GPUs")
    assert (
        await scalar(
            cluster, sa.select(scaling_groups.c.description).where(scaling_groups.c.name == "gpu")
        )
        == "GPUs"
    )
    await cli("scaling-group", "delete", "gpu")
    assert (
        await scalar(
            cluster, sa.select(scaling_groups.c.name).where(scaling_groups.c.name == "gpu")
        )
        is None
    )


async def test_admin_keypair_group_and_policy_commands(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    cli = admin_cli(official_cli, cluster, tmp_path)
    email = "user@lablup.com"

    await cli("keypair-resource-policy", "add", "small", "--max-concurrent-sessions", "2")
    await cli("keypair-resource-policy", "update", "small", "--max-concurrent-sessions", "3")
    assert (
        await scalar(
            cluster,
            sa.select(keypair_resource_policies.c.max_concurrent_sessions).where(
                keypair_resource_policies.c.name == "small"
            ),
        )
        == 3
    )

    before = await scalar(
        cluster, sa.select(sa.func.count()).select_from(keypairs).where(keypairs.c.user_id == email)
    )
    await cli("keypair", "add", email, "small")
    access_key = await scalar(
        cluster,
        sa.select(keypairs.c.access_key).where(
            keypairs.c.user_id == email, keypairs.c.resource_policy == "small"
        ),
    )
    assert isinstance(access_key, str)
    await cli("keypair", "update", access_key, "--rate-limit", "500")
    assert (
        await scalar(
            cluster, sa.select(keypairs.c.rate_limit).where(keypairs.c.access_key == access_key)
        )
        == 500
    )
    await cli("keypair", "deactivate", access_key)
    active = sa.select(keypairs.c.is_active).where(keypairs.c.access_key == access_key)
    assert await scalar(cluster, active) is False
    await cli("keypair", "activate", access_key)
    assert await scalar(cluster, active) is True
    await cli("keypair", "delete", access_key)
    after = await scalar(
        cluster, sa.select(sa.func.count()).select_from(keypairs).where(keypairs.c.user_id == email)
    )
    assert after == before
    await cli("keypair-resource-policy", "delete", "small")
    assert (
        await scalar(
            cluster,
            sa.select(keypair_resource_policies.c.name).where(
                keypair_resource_policies.c.name == "small"
            ),
        )
        is None
    )

    await cli("group", "add", "default", "team-a", "-d", "Team A")
    gid = await scalar(cluster, sa.select(groups.c.id).where(groups.c.name == "team-a"))
    await cli("group", "update", str(gid), "--description", "The A team")
    assert (
        await scalar(cluster, sa.select(groups.c.description).where(groups.c.id == gid))
        == "The A team"
    )
    user_uuid = await scalar(cluster, sa.select(users.c.uuid).where(users.c.email == email))
    await cli("group", "add-users", str(gid), str(user_uuid))
    assert (
        await scalar(
            cluster,
            sa.select(association_groups_users.c.user_id).where(
                association_groups_users.c.group_id == gid
            ),
        )
        == user_uuid
    )
    await cli("group", "remove-users", str(gid), str(user_uuid))
    await cli("group", "delete", str(gid))
    assert await scalar(cluster, sa.select(groups.c.is_active).where(groups.c.id == gid)) is False

    await cli("scaling-group", "add", "gpu")
    await cli("domain", "add", "lab")
    await cli("scaling-group", "associate-scaling-group", "gpu", "lab")
    assert (
        await scalar(
            cluster,
            sa.select(sgroups_for_domains.c.domain).where(
                sgroups_for_domains.c.scaling_group == "gpu"
            ),
        )
        == "lab"
    )
    # `dissociate-scaling-group` is left out: the 23.9 client prints a `scaling_group` key
    # that its own query never asks for, so it fails against any manager.
