"""Who reaches which folder, on a real (in-memory SQLite) database: bai.manager.vfolders.access.

A small world: an owner with a user folder, a project folder members may
only read, a grant, users inside and outside the project, a domain admin, a
domain admin of another domain, and the superadmin.  Checked: the level each
one gets (and that the SQL form used by the GraphQL lists agrees with the
Python rule), how names and ids are found, and the 404 / 403 / 409 of
:func:`find_folder_in`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from bai.manager.db import Database, create_database
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import migrate
from bai.manager.models.base import utcnow
from bai.manager.models.identity import (
    UserRole,
    association_groups_users,
    domains,
    groups,
    users,
)
from bai.manager.models.vfolder import VFolderStatus, vfolder_permissions, vfolders
from bai.manager.vfolders.access import (
    FolderAmbiguous,
    Viewer,
    accessible_folders,
    find_folder_in,
    folder_source,
    permission_expr,
    reach_condition,
    used_names,
)
from bai.manager.vfolders.errors import VFolderNotFound, VFolderNotReady, VFolderPermissionDenied


@dataclass
class World:
    db: Database
    viewers: dict[str, Viewer]
    group_id: uuid.UUID
    own: uuid.UUID  # owner's user folder "data"
    project: uuid.UUID  # project folder "shared", members ro
    granted: uuid.UUID  # owner's user folder "lent", reader granted rw


async def _user(
    db: Database, name: str, role: UserRole, domain: str, member_of: uuid.UUID | None
) -> Viewer:
    user_id = uuid.uuid4()
    async with db.begin() as conn:
        await conn.execute(
            sa.insert(users).values(
                uuid=user_id, username=name, email=f"{name}@x", domain_name=domain, role=role
            )
        )
        if member_of is not None:
            await conn.execute(
                sa.insert(association_groups_users).values(user_id=user_id, group_id=member_of)
            )
    return Viewer(
        user_id=user_id,
        email=f"{name}@x",
        domain_name=domain,
        access_key="AKIA" + name.upper()[:16],
        resource_policy="default",
        is_admin=role in (UserRole.ADMIN, UserRole.SUPERADMIN),
        is_superadmin=role is UserRole.SUPERADMIN,
    )


async def _folder(
    db: Database,
    name: str,
    *,
    user: uuid.UUID | None = None,
    group: uuid.UUID | None = None,
    permission: str = "rw",
    status: VFolderStatus = VFolderStatus.READY,
) -> uuid.UUID:
    folder_id = uuid.uuid4()
    async with db.begin() as conn:
        await conn.execute(
            sa.insert(vfolders).values(
                id=folder_id,
                host="local:vol",
                quota_scope_id=f"user:{user}" if user else f"project:{group}",
                name=name,
                permission=permission,
                ownership_type="user" if user else "group",
                user=user,
                group=group,
                status=status,
                created_at=utcnow(),
                status_changed=utcnow(),
            )
        )
    return folder_id


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with create_database("sqlite://") as db:
        await migrate.upgrade(db)
        await populate(db, default_fixture())
        async with db.begin() as conn:
            group_id = await conn.scalar(sa.select(groups.c.id).where(groups.c.name == "default"))
            await conn.execute(sa.insert(domains).values(name="other"))
        viewers = {
            "owner": await _user(db, "owner", UserRole.USER, "default", group_id),
            "reader": await _user(db, "reader", UserRole.USER, "default", group_id),
            "outsider": await _user(db, "outsider", UserRole.USER, "default", None),
            "admin": await _user(db, "dadmin", UserRole.ADMIN, "default", None),
            "foreign": await _user(db, "fadmin", UserRole.ADMIN, "other", None),
            "root": await _user(db, "root", UserRole.SUPERADMIN, "default", None),
        }
        owner = viewers["owner"].user_id
        own = await _folder(db, "data", user=owner)
        project = await _folder(db, "shared", group=group_id, permission="ro")
        granted = await _folder(db, "lent", user=owner)
        async with db.begin() as conn:
            await conn.execute(
                sa.insert(vfolder_permissions).values(
                    vfolder=granted, user=viewers["reader"].user_id, permission="rw"
                )
            )
        yield World(db, viewers, group_id, own, project, granted)


async def levels(world: World, who: str) -> dict[uuid.UUID, str]:
    async with world.db.begin_readonly() as conn:
        found = await accessible_folders(conn, world.viewers[who], admin="all")
    return {folder.id: folder.permission for folder in found}


EXPECTED = {
    "owner": {"own": "wd", "granted": "wd", "project": "ro"},
    "reader": {"granted": "rw", "project": "ro"},
    "outsider": {},
    "admin": {"project": "wd"},
    "foreign": {},
    "root": {"own": "wd", "granted": "wd", "project": "wd"},
}


@pytest.mark.parametrize("who", list(EXPECTED))
async def test_each_caller_gets_its_level_in_python_and_in_sql(world: World, who: str) -> None:
    ids = {"own": world.own, "project": world.project, "granted": world.granted}
    expected = {ids[name]: level for name, level in EXPECTED[who].items()}
    assert await levels(world, who) == expected
    viewer = world.viewers[who]
    query = (
        sa.select(vfolders.c.id, permission_expr(viewer).label("level"))
        .select_from(folder_source(viewer.user_id))
        .where(reach_condition(viewer, admin="all"))
    )
    rows = await world.db.fetch(query)
    assert {row.id: row.level for row in rows} == expected


async def test_names_find_the_closest_folder_and_ids_reach_further(world: World) -> None:
    owner, reader, root = (world.viewers[k] for k in ("owner", "reader", "root"))
    async with world.db.begin_readonly() as conn:
        assert (await find_folder_in(conn, owner, "data")).id == world.own
        assert (await find_folder_in(conn, reader, "lent", need="rw")).permission == "rw"
        assert (await find_folder_in(conn, reader, "shared")).permission == "ro"
        # The superadmin reaches another user's folder by id, not by name.
        assert (await find_folder_in(conn, root, world.own.hex, need="wd")).id == world.own
        assert (await find_folder_in(conn, root, str(world.own))).id == world.own
        with pytest.raises(VFolderNotFound):
            await find_folder_in(conn, root, "data")
        # But admins reach project folders of their domain by name.
        assert (await find_folder_in(conn, root, "shared")).permission == "wd"
        assert await used_names(conn, owner) == {"data", "lent", "shared"}
        assert await used_names(conn, reader) == {"lent", "shared"}


async def test_find_refuses_with_404_403_and_409(world: World) -> None:
    reader, outsider, foreign = (world.viewers[k] for k in ("reader", "outsider", "foreign"))
    async with world.db.begin_readonly() as conn:
        for who, ref in ((outsider, "data"), (outsider, world.own.hex), (foreign, "shared")):
            with pytest.raises(VFolderNotFound):
                await find_folder_in(conn, who, ref)
        with pytest.raises(VFolderPermissionDenied) as denied:
            await find_folder_in(conn, reader, "shared", need="rw")
        assert denied.value.http_status == 403
        with pytest.raises(VFolderPermissionDenied):
            await find_folder_in(conn, reader, "lent", need="wd")
    # A folder being cloned is read, not written; a trashed one is not found at all.
    await _folder(world.db, "filling", user=reader.user_id, status=VFolderStatus.CLONING)
    trashed = await _folder(
        world.db, "binned", user=reader.user_id, status=VFolderStatus.DELETE_PENDING
    )
    async with world.db.begin_readonly() as conn:
        assert (await find_folder_in(conn, reader, "filling")).status == "cloning"
        with pytest.raises(VFolderNotReady) as busy:
            await find_folder_in(conn, reader, "filling", need="rw")
        assert busy.value.http_status == 409
        for ref in ("binned", trashed.hex):
            with pytest.raises(VFolderNotFound):
                await find_folder_in(conn, reader, ref)


async def test_two_equal_claims_to_a_name_are_ambiguous(world: World) -> None:
    root = world.viewers["root"]
    other_project = uuid.uuid4()
    async with world.db.begin() as conn:
        await conn.execute(
            sa.insert(groups).values(id=other_project, name="second", domain_name="default")
        )
    await _folder(world.db, "shared", group=other_project)
    async with world.db.begin_readonly() as conn:
        with pytest.raises(FolderAmbiguous):
            await find_folder_in(conn, root, "shared")
        # The owner's member view still picks its own project's folder.
        assert (await find_folder_in(conn, world.viewers["owner"], "shared")).id == world.project


async def test_names_are_unique_per_owner_among_live_folders_only(world: World) -> None:
    owner = world.viewers["owner"].user_id
    with pytest.raises(sa.exc.IntegrityError):
        await _folder(world.db, "data", user=owner)
    with pytest.raises(sa.exc.IntegrityError):
        await _folder(world.db, "shared", group=world.group_id)
    # Another owner may use the name, and so may a folder in the trash.
    await _folder(world.db, "data", user=world.viewers["reader"].user_id)
    await _folder(world.db, "data", user=owner, status=VFolderStatus.DELETE_PENDING)
    await _folder(world.db, "data", user=owner, status=VFolderStatus.DELETE_PENDING)
    # A folder is owned by a user or by a project, never both or neither.
    with pytest.raises(sa.exc.IntegrityError):
        await _folder(world.db, "both", user=owner, group=world.group_id)
