"""A folder's life: create, rename, options, trash, restore, purge, clone, change owner.

Each operation checks everything it can before it writes, and writes so
that a failure leaves nothing half done:

* :func:`create_folder` checks the name, the host, the owner's right to use
  the host (:mod:`~bai.manager.vfolders.hosts`), the folder types allowed
  (shared config ``volumes/_types``, default user and project folders) and
  the policies' ``max_vfolder_count`` and ``max_vfolder_size``
  (:mod:`~bai.manager.vfolders.rules`), then asks the proxy for the folder
  and only then inserts its row; if the insert fails (a name taken
  meanwhile), the new folder is removed from the proxy again.
* :func:`trash_folder` locks the folder's row, refuses (409, naming the
  sessions) while a live session mounts it, and moves it to the trash
  (``delete-pending``): its data stay, its name is free.
* :func:`restore_folder` brings a trashed folder back (under a new name when
  its own is taken); :func:`purge_folder` removes it for good: the row is
  marked ``delete-ongoing``, the proxy deletes the data, then the row goes
  (with its invitations and grants).  If the proxy fails, the folder is
  back in the trash as it was.
* :func:`clone_folder` inserts the target's row as ``cloning`` (so its name
  is taken and it cannot be used half-filled) and copies the data in a
  background task; the task marks the target ``ready``, or removes it
  (row and data) and fails with the proxy's message.

Who may: creating a project folder, and acting on one's options, needs an
admin of its domain (or a superadmin); trash, rename and clone need the
levels :func:`~bai.manager.vfolders.access.find_folder` checks (``wd``,
``wd``, ``ro`` of a cloneable folder); restore and purge the folder's owner
or an admin who reaches it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import sqlalchemy as sa
import trio

from bai.common.storage_api import (
    CloneFolder,
    CreateFolder,
    FolderArgs,
    FolderQuota,
    StorageErrorType,
)
from bai.manager.bgtask import ProgressReporter
from bai.manager.db import Connection
from bai.manager.models.base import utcnow
from bai.manager.models.identity import (
    UserStatus,
    groups,
    keypair_resource_policies,
    project_resource_policies,
    user_resource_policies,
    users,
)
from bai.manager.models.shared_config import get_config_prefix
from bai.manager.models.vfolder import (
    LIVE_CONDITION,
    TRASH_STATUSES,
    VFolderInvitationState,
    VFolderOwnershipType,
    VFolderStatus,
    VFolderUsageMode,
    vfolder_invitations,
    vfolder_permissions,
    vfolders,
)
from bai.manager.protocols import StorageClient
from bai.manager.vfolders.access import (
    USABLE_STATUSES,
    FolderAccess,
    FolderContext,
    Viewer,
    accessible_folders,
    manages,
    used_names,
)
from bai.manager.vfolders.errors import (
    InvalidFolderInput,
    VFolderAlreadyExists,
    VFolderInUse,
    VFolderNotFound,
    VFolderNotReady,
    VFolderPermissionDenied,
    VFolderUserNotFound,
)
from bai.manager.vfolders.hosts import configured_hosts, merge_allowed
from bai.manager.vfolders.mounts import sessions_mounting
from bai.manager.vfolders.proxies import StorageProxyError, split_host
from bai.manager.vfolders.rules import (
    Permission,
    check_count,
    check_name,
    effective_quota,
    is_private_name,
)

__all__ = [
    "DEFAULT_TYPES",
    "CloneRequest",
    "FolderServices",
    "NewFolder",
    "TaskStarter",
    "allowed_types",
    "change_ownership",
    "clone_folder",
    "create_folder",
    "folder_by_id",
    "host_choices",
    "purge_folder",
    "read_allowed_types",
    "rename_folder",
    "restore_folder",
    "trash_folder",
    "trashed_folders",
    "update_options",
]

log = logging.getLogger(__name__)

#: Folder types allowed when the shared config's ``volumes/_types`` names none.
DEFAULT_TYPES: Final = ("user", "group")
#: Seconds cleaning up after a failure may take (shielded from cancellation).
CLEANUP_TIMEOUT: Final = 30.0


class TaskStarter(Protocol):
    """Starts background tasks (:class:`bai.manager.bgtask.BackgroundTasks`)."""

    def start(self, fn: Any, *, name: str = ...) -> uuid.UUID: ...


class FolderServices(FolderContext, Protocol):
    """What folder operations need of the manager (``ManagerContext`` has it)."""

    @property
    def storage(self) -> StorageClient: ...

    @property
    def bgtasks(self) -> TaskStarter: ...


@dataclass(frozen=True, slots=True)
class NewFolder:
    """A folder to create, as the API parsed it (the name is checked here)."""

    name: str
    host: str | None = None
    usage_mode: VFolderUsageMode = VFolderUsageMode.GENERAL
    permission: Permission = Permission.RW
    #: A project's id or name: a project folder; ``None``: the caller's own folder.
    group: str | None = None
    #: Bytes (``None``: the policy's ``max_vfolder_size``, or no limit).
    quota: int | None = None
    cloneable: bool = False


# ------------------------------------------------------------------------ helpers


def allowed_types(items: Mapping[str, Any]) -> tuple[str, ...]:
    """The folder types the shared config's ``volumes/_types`` keys allow (pure).

    ``volumes/_types/user`` and ``volumes/_types/group`` keys, or a list or
    object at ``volumes/_types``; :data:`DEFAULT_TYPES` when it names none.
    """
    named: set[str] = set()
    for key, value in items.items():
        tail = key.removeprefix("volumes/_types").strip("/")
        if tail:
            named.add(tail.split("/")[0])
        elif isinstance(value, Mapping | list):
            named.update(str(name) for name in value)
    chosen = tuple(sorted(named & set(DEFAULT_TYPES)))
    return chosen or DEFAULT_TYPES


async def read_allowed_types(conn: Connection) -> tuple[str, ...]:
    """:func:`allowed_types` of the shared config."""
    return allowed_types(await get_config_prefix(conn, "volumes/_types"))


async def host_choices(
    ctx: FolderServices, viewer: Viewer, *, group_id: uuid.UUID | None = None
) -> tuple[list[str], list[str]]:
    """The hosts the proxies serve and those of them *viewer* may use (for a folder of
    project *group_id*, or of the viewer); both sorted."""
    async with ctx.db.begin_readonly() as conn:
        configured = await configured_hosts(
            conn,
            domain_name=viewer.domain_name,
            resource_policy=viewer.resource_policy,
            user_id=viewer.user_id,
            group_id=group_id,
        )
    available = await ctx.storage.hosts()
    return available, merge_allowed(configured, available)


async def _check_host(
    ctx: FolderServices, viewer: Viewer, host: str, group_id: uuid.UUID | None, field: str
) -> tuple[str, str]:
    proxy, volume = split_host(host, field=field)
    available, allowed = await host_choices(ctx, viewer, group_id=group_id)
    if host not in available:
        raise InvalidFolderInput(
            "no storage volume is known by this folder host", field=field, value=host
        )
    if host not in allowed:
        raise VFolderPermissionDenied(f"{field}: you may not use the folder host {host!r}")
    return proxy, volume


async def _resolve_project(conn: Connection, viewer: Viewer, ref: str) -> tuple[uuid.UUID, str]:
    """A project (id or name in the viewer's domain) as (id, domain); 400 naming ``group``."""
    try:
        by_id: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        by_id = None
    query = sa.select(groups.c.id, groups.c.domain_name)
    if by_id is not None:
        query = query.where(groups.c.id == by_id)
    else:
        query = query.where(groups.c.name == ref, groups.c.domain_name == viewer.domain_name)
    row = (await conn.execute(query)).first()
    if row is None or (not viewer.is_superadmin and row.domain_name != viewer.domain_name):
        raise InvalidFolderInput("no such project in your domain", field="group", value=ref)
    return row.id, row.domain_name


async def _live_count(conn: Connection, *conditions: sa.ColumnElement[bool]) -> int:
    """How many live folders match *conditions*."""
    found = await conn.scalar(
        sa.select(sa.func.count()).select_from(vfolders).where(*conditions, LIVE_CONDITION)
    )
    return int(found or 0)


async def _set_status(
    conn: Connection, folder_id: uuid.UUID, status: VFolderStatus, **values: Any
) -> None:
    """Move the folder *folder_id* to *status* now, changing *values* with it."""
    await conn.execute(
        sa.update(vfolders)
        .where(vfolders.c.id == folder_id)
        .values(status=status, status_changed=utcnow(), **values)
    )


async def _check_limits(
    conn: Connection, viewer: Viewer, group_id: uuid.UUID | None, field: str
) -> int:
    """Refuse a folder over the count limits; return the keypair policy's ``max_vfolder_size``."""
    policy = (
        await conn.execute(
            sa.select(
                keypair_resource_policies.c.max_vfolder_count,
                keypair_resource_policies.c.max_vfolder_size,
            ).where(keypair_resource_policies.c.name == viewer.resource_policy)
        )
    ).first()
    max_size = int(policy.max_vfolder_size) if policy is not None else 0
    if group_id is None:
        count = await _live_count(conn, vfolders.c.user == viewer.user_id)
        if policy is not None:
            check_count(
                count,
                int(policy.max_vfolder_count),
                what="a keypair of this resource policy",
                field=field,
            )
        user_limit = await conn.scalar(
            sa.select(user_resource_policies.c.max_vfolder_count)
            .select_from(
                users.join(
                    user_resource_policies,
                    user_resource_policies.c.name == users.c.resource_policy,
                )
            )
            .where(users.c.uuid == viewer.user_id)
        )
        check_count(count, int(user_limit or 0), what="a user", field=field)
    else:
        count = await _live_count(conn, vfolders.c.group == group_id)
        project_limit = await conn.scalar(
            sa.select(project_resource_policies.c.max_vfolder_count)
            .select_from(
                groups.join(
                    project_resource_policies,
                    project_resource_policies.c.name == groups.c.resource_policy,
                )
            )
            .where(groups.c.id == group_id)
        )
        check_count(count, int(project_limit or 0), what="a project", field=field)
    return max_size


async def _name_taken(
    conn: Connection, viewer: Viewer, name: str, group_id: uuid.UUID | None
) -> bool:
    if name in await used_names(conn, viewer):
        return True
    owner = (
        vfolders.c.group == group_id if group_id is not None else vfolders.c.user == viewer.user_id
    )
    return bool(await _live_count(conn, owner, vfolders.c.name == name))


async def _cleanup(ctx: FolderServices, proxy: str, volume: str, vfid: str) -> None:
    """Remove a folder this operation made at a proxy (shielded; failures are logged)."""
    with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
        try:
            await ctx.storage.call(proxy, "/folder/delete", FolderArgs(volume=volume, vfid=vfid))
        except StorageProxyError as exc:
            log.warning("could not remove folder %s from %s:%s: %s", vfid, proxy, volume, exc)


async def folder_by_id(
    conn: Connection, viewer: Viewer, folder_id: uuid.UUID, *, trashed: bool = False
) -> FolderAccess:
    """A folder the viewer reaches (admins as far as their role goes), live or, with
    *trashed*, in the trash; 404 otherwise."""
    extra = [vfolders.c.id == folder_id]
    if trashed:
        extra.append(vfolders.c.status.in_(sorted(TRASH_STATUSES)))
    found = await accessible_folders(conn, viewer, *extra, admin="all", live=not trashed)
    if not found:
        where = "in your trash" if trashed else "that you can reach"
        raise VFolderNotFound(f"no virtual folder {folder_id} {where}")
    return found[0]


# ------------------------------------------------------------------------- create


async def create_folder(ctx: FolderServices, viewer: Viewer, new: NewFolder) -> FolderAccess:
    """Create a folder (module docs); returns it as the viewer sees it."""
    name = check_name(new.name)
    group_id: uuid.UUID | None = None
    async with ctx.db.begin_readonly() as conn:
        types = await read_allowed_types(conn)
        if new.group is not None:
            group_id, group_domain = await _resolve_project(conn, viewer, new.group)
            if "group" not in types:
                raise InvalidFolderInput(
                    "project folders are not allowed here (volumes/_types)",
                    field="group",
                    value=new.group,
                )
            if not (
                viewer.is_superadmin or (viewer.is_admin and group_domain == viewer.domain_name)
            ):
                raise VFolderPermissionDenied(
                    "only admins of its domain may create project folders"
                )
            if is_private_name(name):
                raise InvalidFolderInput(
                    "a name starting with '.' is a private user folder, not a project folder",
                    field="name",
                    value=name,
                )
        elif "user" not in types:
            raise InvalidFolderInput(
                "user folders are not allowed here (volumes/_types); name a project",
                field="group",
                value=None,
            )
        if await _name_taken(conn, viewer, name, group_id):
            raise VFolderAlreadyExists(
                "you already have a folder of this name", field="name", value=name
            )
        max_size = await _check_limits(conn, viewer, group_id, "name")
    host = new.host or await ctx.storage.default_host()
    if not host:
        raise InvalidFolderInput("is required: no default folder host is configured", field="host")
    proxy, volume = await _check_host(ctx, viewer, host, group_id, "host")
    quota = effective_quota(new.quota, max_size)
    folder_id = uuid.uuid4()
    scope = f"project:{group_id}" if group_id is not None else f"user:{viewer.user_id}"
    await ctx.storage.call(
        proxy,
        "/folder/create",
        CreateFolder(volume=volume, vfid=folder_id.hex, quota_scope=scope, quota=quota),
        fields={"volume": "host", "quota": "quota"},
    )
    now = utcnow()
    values = {
        "id": folder_id,
        "host": host,
        "quota_scope_id": scope,
        "name": name,
        "usage_mode": new.usage_mode,
        "permission": new.permission.label,
        "max_files": 0,
        "quota": quota,
        "created_at": now,
        "ownership_type": VFolderOwnershipType.GROUP if group_id else VFolderOwnershipType.USER,
        "user": None if group_id else viewer.user_id,
        "group": group_id,
        "creator": viewer.email,
        "cloneable": new.cloneable,
        "status": VFolderStatus.READY,
        "status_changed": now,
    }
    try:
        async with ctx.db.begin() as conn:
            await conn.execute(sa.insert(vfolders).values(**values))
            created = await folder_by_id(conn, viewer, folder_id)
    except BaseException as exc:
        await _cleanup(ctx, proxy, volume, folder_id.hex)
        if isinstance(exc, sa.exc.IntegrityError):
            raise VFolderAlreadyExists(
                "you already have a folder of this name", field="name", value=name
            ) from None
        raise
    return created


# ------------------------------------------------------------------ rename, options


async def rename_folder(
    ctx: FolderServices, viewer: Viewer, folder: FolderAccess, new_name: str
) -> None:
    """Rename *folder* (found with ``wd``); the new name must be free for its owner and the
    viewer."""
    name = check_name(new_name, field="new_name")
    if folder.ownership_type == "group" and is_private_name(name):
        raise InvalidFolderInput(
            "a name starting with '.' is a private user folder", field="new_name", value=name
        )
    if name == folder.name:
        return
    try:
        async with ctx.db.begin() as conn:
            if name in await used_names(conn, viewer):
                raise VFolderAlreadyExists(
                    "you already reach a folder of this name", field="new_name", value=name
                )
            result = await conn.execute(
                sa.update(vfolders)
                .where(vfolders.c.id == folder.id, LIVE_CONDITION)
                .values(name=name)
            )
            if result.rowcount == 0:
                raise VFolderNotFound(f"the folder {folder.name!r} is gone")
    except sa.exc.IntegrityError:
        raise VFolderAlreadyExists(
            "the folder's owner already has a folder of this name", field="new_name", value=name
        ) from None


async def update_options(
    ctx: FolderServices,
    viewer: Viewer,
    folder: FolderAccess,
    *,
    permission: Permission | None,
    cloneable: bool | None,
) -> None:
    """Change a folder's member permission and cloneable flag: its owner, or an admin of a
    project folder's domain (403 otherwise)."""
    if not manages(folder, viewer):
        raise VFolderPermissionDenied("only the folder's owner may change its options")
    values: dict[str, Any] = {}
    if permission is not None:
        values["permission"] = permission.label
    if cloneable is not None:
        values["cloneable"] = cloneable
    if not values:
        return
    async with ctx.db.begin() as conn:
        await conn.execute(
            sa.update(vfolders).where(vfolders.c.id == folder.id, LIVE_CONDITION).values(**values)
        )


# -------------------------------------------------------------------------- trash


async def trash_folder(ctx: FolderServices, folder: FolderAccess) -> None:
    """Move *folder* (found with ``wd``) to the trash; 409 while a live session mounts it."""
    async with ctx.db.begin() as conn:
        # Lock first: a session being enqueued locks the rows of the folders it mounts.
        status = await conn.scalar(
            sa.select(vfolders.c.status).where(vfolders.c.id == folder.id).with_for_update()
        )
        if status is None or VFolderStatus(status) in TRASH_STATUSES:
            raise VFolderNotFound(f"the folder {folder.name!r} is gone")
        if VFolderStatus(status) not in USABLE_STATUSES:
            raise VFolderNotReady(f"the folder {folder.name!r} is {status} right now")
        mounting = await sessions_mounting(conn, [folder.id])
        if mounting:
            names = ", ".join(sorted({entry["name"] for entry in mounting}))
            raise VFolderInUse(
                f"the folder {folder.name!r} is mounted by the live session(s) {names}",
                sessions=[{"id": entry["id"], "name": entry["name"]} for entry in mounting],
            )
        await _set_status(conn, folder.id, VFolderStatus.DELETE_PENDING)


async def trashed_folders(conn: Connection, viewer: Viewer) -> list[FolderAccess]:
    """The folders in the trash that the viewer may restore or purge: its own, and those
    its admin role reaches."""
    found = await accessible_folders(
        conn,
        viewer,
        vfolders.c.status.in_(sorted(TRASH_STATUSES)),
        shared=False,
        project=False,
        admin="all",
        live=False,
    )
    return [folder for folder in found if manages(folder, viewer)]


async def _trashed(conn: Connection, viewer: Viewer, folder_id: uuid.UUID) -> FolderAccess:
    folder = await folder_by_id(conn, viewer, folder_id, trashed=True)
    if not manages(folder, viewer):
        raise VFolderNotFound(f"no virtual folder {folder_id} in your trash")
    return folder


async def restore_folder(
    ctx: FolderServices, viewer: Viewer, folder_id: uuid.UUID, new_name: str | None = None
) -> uuid.UUID:
    """Bring a trashed folder back, under *new_name* if given; 400 when its name is taken."""
    name_field = "name" if new_name is not None else "id"
    try:
        async with ctx.db.begin() as conn:
            folder = await _trashed(conn, viewer, folder_id)
            if folder.status != VFolderStatus.DELETE_PENDING:
                raise VFolderNotReady(f"the folder {folder.name!r} is being purged")
            name = check_name(new_name, field="name") if new_name is not None else folder.name
            await _set_status(conn, folder.id, VFolderStatus.READY, name=name)
    except sa.exc.IntegrityError:
        raise VFolderAlreadyExists(
            "the folder's owner has a folder of this name now; restore it under another name",
            field=name_field,
            value=new_name or str(folder_id),
        ) from None
    return folder.id


async def purge_folder(ctx: FolderServices, viewer: Viewer, folder_id: uuid.UUID) -> None:
    """Remove a trashed folder and its data for good (module docs)."""
    async with ctx.db.begin() as conn:
        folder = await _trashed(conn, viewer, folder_id)
        if folder.status != VFolderStatus.DELETE_PENDING:
            raise VFolderNotReady(f"the folder {folder.name!r} is being purged already")
        await _set_status(conn, folder.id, VFolderStatus.DELETE_ONGOING)
    try:
        await ctx.storage.call(
            folder.proxy, "/folder/delete", FolderArgs(volume=folder.volume, vfid=folder.vfid)
        )
    except StorageProxyError as exc:
        if exc.name != StorageErrorType.FOLDER_NOT_FOUND:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                async with ctx.db.begin() as conn:
                    await conn.execute(
                        sa.update(vfolders)
                        .where(vfolders.c.id == folder.id)
                        .values(status=VFolderStatus.DELETE_PENDING)
                    )
            raise
        # Its data are gone already (an earlier purge that died midway): finish the job.
    async with ctx.db.begin() as conn:
        await conn.execute(sa.delete(vfolders).where(vfolders.c.id == folder.id))


# -------------------------------------------------------------------------- clone


@dataclass(frozen=True, slots=True)
class CloneRequest:
    """The target of a clone, as the API parsed it."""

    target_name: str
    target_host: str | None = None
    usage_mode: VFolderUsageMode = VFolderUsageMode.GENERAL
    permission: Permission = Permission.RW
    cloneable: bool = False


async def clone_folder(
    ctx: FolderServices, viewer: Viewer, source: FolderAccess, request: CloneRequest
) -> tuple[FolderAccess, uuid.UUID]:
    """Clone *source* (found with ``ro``) into a new folder of the viewer; returns the new
    folder (``cloning``) and the id of the background task that fills it."""
    if not source.cloneable:
        raise VFolderPermissionDenied(f"the folder {source.name!r} may not be cloned")
    if source.status not in USABLE_STATUSES:
        raise VFolderNotReady(f"the folder {source.name!r} is {source.status} right now")
    name = check_name(request.target_name, field="target_name")
    host = request.target_host or source.host
    proxy, volume = split_host(host, field="target_host")
    if proxy != source.proxy:
        raise InvalidFolderInput(
            f"a folder is cloned within its storage proxy ({source.proxy!r})",
            field="target_host",
            value=host,
        )
    async with ctx.db.begin_readonly() as conn:
        if "user" not in await read_allowed_types(conn):
            raise InvalidFolderInput(
                "user folders are not allowed here (volumes/_types)", field="target_name"
            )
        if await _name_taken(conn, viewer, name, None):
            raise VFolderAlreadyExists(
                "you already have a folder of this name", field="target_name", value=name
            )
        max_size = await _check_limits(conn, viewer, None, "target_name")
    await _check_host(ctx, viewer, host, None, "target_host")
    quota = effective_quota(None, max_size)
    folder_id = uuid.uuid4()
    scope = f"user:{viewer.user_id}"
    now = utcnow()
    try:
        async with ctx.db.begin() as conn:
            await conn.execute(
                sa.insert(vfolders).values(
                    id=folder_id,
                    host=host,
                    quota_scope_id=scope,
                    name=name,
                    usage_mode=request.usage_mode,
                    permission=request.permission.label,
                    max_files=0,
                    quota=quota,
                    created_at=now,
                    ownership_type=VFolderOwnershipType.USER,
                    user=viewer.user_id,
                    group=None,
                    creator=viewer.email,
                    cloneable=request.cloneable,
                    status=VFolderStatus.CLONING,
                    status_changed=now,
                )
            )
            target = await folder_by_id(conn, viewer, folder_id)
    except sa.exc.IntegrityError:
        raise VFolderAlreadyExists(
            "you already have a folder of this name", field="target_name", value=name
        ) from None

    async def fill(reporter: ProgressReporter) -> str:
        await reporter.update(0, 1, f"cloning {source.name} into {name}")
        try:
            await ctx.storage.call(
                source.proxy,
                "/folder/clone",
                CloneFolder(
                    volume=source.volume,
                    vfid=source.vfid,
                    dst_volume=volume,
                    dst_vfid=folder_id.hex,
                    dst_quota_scope=scope,
                ),
            )
            if quota is not None:
                await ctx.storage.call(
                    proxy,
                    "/folder/quota/update",
                    FolderQuota(volume=volume, vfid=folder_id.hex, quota=quota),
                )
            async with ctx.db.begin() as conn:
                await _set_status(conn, folder_id, VFolderStatus.READY)
        except BaseException:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                async with ctx.db.begin() as conn:
                    await conn.execute(sa.delete(vfolders).where(vfolders.c.id == folder_id))
            await _cleanup(ctx, proxy, volume, folder_id.hex)
            raise
        await reporter.update(1, 1, f"cloned {source.name} into {name}")
        return f"cloned {source.name} into {name}"

    try:
        task_id = ctx.bgtasks.start(fill, name=f"clone of {source.vfid}")
    except BaseException:
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            async with ctx.db.begin() as conn:
                await conn.execute(sa.delete(vfolders).where(vfolders.c.id == folder_id))
        raise
    return target, task_id


# ---------------------------------------------------------------- change ownership


async def change_ownership(ctx: FolderServices, folder_id: uuid.UUID, user_email: str) -> None:
    """Give user folder *folder_id* to the active user *user_email* (superadmins' route).

    The new owner's grant and pending invitations for it go (an owner needs
    neither); pending invitations sent by the old owner are canceled.  The
    folder's bytes keep counting against the quota scope it was made in.
    """
    try:
        async with ctx.db.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(vfolders.c.id, vfolders.c.ownership_type, vfolders.c.user)
                    .where(vfolders.c.id == folder_id, LIVE_CONDITION)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise VFolderNotFound(f"no virtual folder {folder_id}")
            if str(row.ownership_type) != "user":
                raise InvalidFolderInput(
                    "only user folders change owners", field="vfolder", value=str(folder_id)
                )
            user = (
                await conn.execute(
                    sa.select(users.c.uuid, users.c.email).where(
                        users.c.email == user_email, users.c.status == UserStatus.ACTIVE
                    )
                )
            ).first()
            if user is None:
                raise VFolderUserNotFound(
                    "no active user has this email", field="user_email", value=user_email
                )
            if user.uuid == row.user:
                return
            old_owner = await conn.scalar(sa.select(users.c.email).where(users.c.uuid == row.user))
            await conn.execute(
                sa.update(vfolders).where(vfolders.c.id == folder_id).values(user=user.uuid)
            )
            await conn.execute(
                sa.delete(vfolder_permissions).where(
                    vfolder_permissions.c.vfolder == folder_id,
                    vfolder_permissions.c.user == user.uuid,
                )
            )
            await conn.execute(
                sa.update(vfolder_invitations)
                .where(
                    vfolder_invitations.c.vfolder == folder_id,
                    vfolder_invitations.c.state == VFolderInvitationState.PENDING,
                    sa.or_(
                        vfolder_invitations.c.invitee == user.email,
                        vfolder_invitations.c.inviter == old_owner,
                    ),
                )
                .values(state=VFolderInvitationState.CANCELED)
            )
    except sa.exc.IntegrityError:
        raise VFolderAlreadyExists(
            "the new owner has a folder of this name already", field="user_email", value=user_email
        ) from None
