"""``/folders``: the routes that work on folders as a whole (not on the files inside them).

Each route parses its parameters (:func:`~bai.manager.api.vfolder.params.read_args`),
finds the folder with the level it needs
(:func:`~bai.manager.vfolders.access.find_folder`: ``ro`` to read, ``rw`` to
write, ``wd`` to delete or rename) and calls :mod:`bai.manager.vfolders`;
the rules and their errors live there.  Answers are in
:mod:`~bai.manager.api.vfolder.views`.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from quart import Response

from bai.common.storage_api import FolderArgs, FolderQuota
from bai.manager.api.auth import (
    auth_required,
    current_auth,
    load_principal,
    superadmin_required,
)
from bai.manager.api.errors import Forbidden
from bai.manager.api.helpers import (
    InvalidParameter,
    current_ctx,
    json_response,
    no_content,
)
from bai.manager.api.vfolder.params import read_args
from bai.manager.api.vfolder.views import created_json, info_json, item_json
from bai.manager.models.identity import (
    UserRole,
    groups,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.vfolder import VFolderStatus, VFolderUsageMode, vfolders
from bai.manager.vfolders.access import (
    FolderAccess,
    Viewer,
    accessible_folders,
    find_folder,
    find_folder_in,
    manages,
    parse_folder_id,
    viewer_of,
)
from bai.manager.vfolders.errors import InvalidFolderInput, VFolderPermissionDenied
from bai.manager.vfolders.lifecycle import (
    CloneRequest,
    NewFolder,
    change_ownership,
    clone_folder,
    create_folder,
    folder_by_id,
    host_choices,
    purge_folder,
    read_allowed_types,
    rename_folder,
    restore_folder,
    trash_folder,
    trashed_folders,
    update_options,
)
from bai.manager.vfolders.proxies import StorageProxyError
from bai.manager.vfolders.rules import Permission, effective_quota, max_size_mib, parse_quota

__all__ = [
    "all_hosts",
    "allowed_types",
    "change_owner",
    "clone",
    "create",
    "delete_by_id",
    "delete_by_name",
    "get_quota",
    "get_usage",
    "get_used_bytes",
    "info",
    "list_folders",
    "list_hosts",
    "list_trash",
    "purge",
    "rename",
    "restore",
    "set_quota",
    "update_folder_options",
]

PermName = Literal["ro", "rw", "wd"]


def _viewer() -> Viewer:
    return viewer_of(current_auth())


def _permission(value: str | None, default: Permission) -> Permission:
    return default if value is None else Permission.of(value)


# ------------------------------------------------------------------------ create


class _CreateBody(msgspec.Struct, kw_only=True):
    name: str
    host: str | None = None
    usage_mode: VFolderUsageMode | None = None
    permission: PermName | None = None
    unmanaged_path: str | None = None
    unmanaged_path_camel: str | None = msgspec.field(default=None, name="unmanagedPath")
    group: str | None = None
    group_id: str | None = None
    group_id_camel: str | None = msgspec.field(default=None, name="groupId")
    quota: int | str | None = None
    cloneable: bool = False


@auth_required
async def create() -> Response:
    """``POST /folders``: a new user or project folder; 201 with the Creation Result."""
    body = await read_args(_CreateBody)
    if body.unmanaged_path or body.unmanaged_path_camel:
        raise InvalidParameter(
            "unmanaged folders are not supported; create a folder on a host",
            field="unmanaged_path",
            value=body.unmanaged_path or body.unmanaged_path_camel,
        )
    groups_named = [g for g in (body.group, body.group_id, body.group_id_camel) if g]
    if len(set(groups_named)) > 1:
        raise InvalidParameter("group and group_id disagree", field="group_id", value=groups_named)
    new = NewFolder(
        name=body.name,
        host=body.host or None,
        usage_mode=body.usage_mode or VFolderUsageMode.GENERAL,
        permission=_permission(body.permission, Permission.RW),
        group=groups_named[0] if groups_named else None,
        quota=parse_quota(body.quota),
        cloneable=body.cloneable,
    )
    folder = await create_folder(current_ctx(), _viewer(), new)
    return json_response(created_json(folder), status=201)


# -------------------------------------------------------------------------- list


class _ListArgs(msgspec.Struct, kw_only=True):
    all: bool = False
    group_id: str | None = None
    group_id_camel: str | None = msgspec.field(default=None, name="groupId")
    owner_user_email: str | None = None
    owner_user_email_camel: str | None = msgspec.field(default=None, name="ownerUserEmail")


async def _listed_user(viewer: Viewer, email: str) -> Viewer:
    """The viewer as which an admin lists another user's folders (``owner_user_email``)."""
    if email == viewer.email:
        return viewer
    if not viewer.is_admin:
        raise Forbidden("only admins may list another user's folders")
    db = current_ctx().db
    row = (
        await db.fetch(
            sa.select(keypairs.c.access_key)
            .join(users, users.c.uuid == keypairs.c.user)
            .where(users.c.email == email)
            .order_by(keypairs.c.is_admin.desc(), keypairs.c.created_at)
            .limit(1)
        )
    ).first()
    principal = None if row is None else await load_principal(db, row.access_key)
    if principal is None:
        raise InvalidFolderInput(
            "no user with a keypair has this email", field="owner_user_email", value=email
        )
    if not viewer.is_superadmin and (
        principal.domain_name != viewer.domain_name or principal.role is UserRole.SUPERADMIN
    ):
        raise Forbidden("domain admins may only list the folders of their domain's users")
    return Viewer.of(principal)


@auth_required
async def list_folders() -> Response:
    """``GET /folders``: the caller's own, invited and project folders (``all``: every
    folder an admin reaches); ``group_id`` keeps user folders and that project's folders."""
    args = await read_args(_ListArgs)
    viewer = _viewer()
    email = args.owner_user_email or args.owner_user_email_camel
    if email:
        viewer = await _listed_user(viewer, email)
    if args.all and not viewer.is_admin:
        raise Forbidden("only admins may list all folders")
    conditions: list[sa.ColumnElement[bool]] = []
    group_ref = args.group_id or args.group_id_camel
    async with current_ctx().db.begin_readonly() as conn:
        if group_ref:
            group_id = parse_folder_id(group_ref)
            if group_id is None:
                group_id = await conn.scalar(
                    sa.select(groups.c.id).where(
                        groups.c.name == group_ref, groups.c.domain_name == viewer.domain_name
                    )
                )
                if group_id is None:
                    raise InvalidParameter("no such project", field="group_id", value=group_ref)
            conditions.append(sa.or_(vfolders.c.group == group_id, vfolders.c.user.is_not(None)))
        found = await accessible_folders(
            conn, viewer, *conditions, admin="all" if args.all else "none"
        )
    return json_response([item_json(folder) for folder in found])


# -------------------------------------------------------------------------- info


@auth_required
async def info(name: str) -> Response:
    """``GET /folders/:name``: the folder, with its file count and bytes from its proxy."""
    ctx = current_ctx()
    folder = await find_folder(ctx, current_auth(), name, need="ro")
    usage = await _usage(folder)
    return json_response(
        info_json(folder, int(usage.get("file_count", 0)), int(usage.get("used_bytes", 0)))
    )


async def _usage(folder: FolderAccess) -> dict[str, Any]:
    if folder.status == VFolderStatus.CLONING:
        return {}  # the proxy makes the folder as it copies: nothing to count yet
    reply = await current_ctx().storage.call(
        folder.proxy, "/folder/usage", FolderArgs(volume=folder.volume, vfid=folder.vfid)
    )
    return dict(reply) if isinstance(reply, dict) else {}


# ------------------------------------------------------------------------ delete


@auth_required
async def delete_by_name(name: str) -> Response:
    """``DELETE /folders/:name``: move the folder to the trash (``wd``); 409 while mounted."""
    ctx = current_ctx()
    folder = await find_folder(ctx, current_auth(), name, need="wd")
    await trash_folder(ctx, folder)
    return no_content()


class _IdArgs(msgspec.Struct, kw_only=True):
    id: uuid.UUID


@superadmin_required
async def delete_by_id() -> Response:
    """``DELETE /folders`` ``{id}``: move any folder to the trash (superadmins)."""
    args = await read_args(_IdArgs)
    ctx = current_ctx()
    folder = await find_folder(ctx, current_auth(), args.id.hex, need="wd")
    await trash_folder(ctx, folder)
    return no_content()


@auth_required
async def list_trash() -> Response:
    """``GET /folders/_/trash``: the trashed folders the caller may restore or purge."""
    async with current_ctx().db.begin_readonly() as conn:
        found = await trashed_folders(conn, _viewer())
    return json_response([item_json(folder) for folder in found])


class _RestoreArgs(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str | None = None


@auth_required
async def restore() -> Response:
    """``POST /folders/_/restore`` ``{id, name?}``: bring a trashed folder back."""
    args = await read_args(_RestoreArgs)
    ctx = current_ctx()
    viewer = _viewer()
    folder_id = await restore_folder(ctx, viewer, args.id, args.name)
    async with ctx.db.begin_readonly() as conn:
        folder = await folder_by_id(conn, viewer, folder_id)
    return json_response(item_json(folder))


@auth_required
async def purge() -> Response:
    """``POST /folders/_/purge`` ``{id}``: remove a trashed folder and its data for good."""
    args = await read_args(_IdArgs)
    await purge_folder(current_ctx(), _viewer(), args.id)
    return no_content()


# ------------------------------------------------------------------ rename, options


class _RenameBody(msgspec.Struct, kw_only=True):
    new_name: str


@auth_required
async def rename(name: str) -> Response:
    """``POST /folders/:name/rename`` ``{new_name}`` (``wd``): 201."""
    body = await read_args(_RenameBody)
    ctx = current_ctx()
    folder = await find_folder(ctx, current_auth(), name, need="wd")
    await rename_folder(ctx, _viewer(), folder, body.new_name)
    return json_response({}, status=201)


class _OptionsBody(msgspec.Struct, kw_only=True):
    permission: PermName | None = None
    cloneable: bool | None = None


@auth_required
async def update_folder_options(name: str) -> Response:
    """``POST /folders/:name/update-options`` ``{permission, cloneable}``: the owner (or an
    admin, for project folders); 201."""
    body = await read_args(_OptionsBody)
    ctx = current_ctx()
    folder = await find_folder(ctx, current_auth(), name, need="ro")
    await update_options(
        ctx,
        _viewer(),
        folder,
        permission=None if body.permission is None else Permission.of(body.permission),
        cloneable=body.cloneable,
    )
    return json_response({}, status=201)


# ------------------------------------------------------------------------- hosts


class _HostsArgs(msgspec.Struct, kw_only=True):
    group_id: str | None = None
    group_id_camel: str | None = msgspec.field(default=None, name="groupId")


@auth_required
async def list_hosts() -> Response:
    """``GET /folders/_/hosts``: ``{default, allowed, volume_info}`` for the caller."""
    args = await read_args(_HostsArgs)
    ctx = current_ctx()
    viewer = _viewer()
    group_ref = args.group_id or args.group_id_camel
    group_id = parse_folder_id(group_ref) if group_ref else None
    if group_ref and group_id is None:
        raise InvalidParameter("must be a project id", field="group_id", value=group_ref)
    _, allowed = await host_choices(ctx, viewer, group_id=group_id)
    default = await ctx.storage.default_host()
    volume_info: dict[str, Any] = {}
    for proxy in sorted({host.partition(":")[0] for host in allowed}):
        try:
            volumes = await ctx.storage.volumes(proxy)
        except StorageProxyError:
            continue  # gone since it listed its hosts: its volumes have no details now
        for volume in volumes:
            host = f"{proxy}:{volume['name']}"
            if host in allowed:
                volume_info[host] = {
                    "backend": volume.get("backend"),
                    "capabilities": volume.get("capabilities", []),
                }
    return json_response(
        {
            "default": default if default in allowed else None,
            "allowed": allowed,
            "volume_info": volume_info,
        }
    )


@superadmin_required
async def all_hosts() -> Response:
    """``GET /folders/_/all-hosts`` (and ``all_hosts``): every host, ``{default, allowed}``."""
    ctx = current_ctx()
    hosts = await ctx.storage.hosts()
    default = await ctx.storage.default_host()
    return json_response({"default": default if default in hosts else None, "allowed": hosts})


@auth_required
async def allowed_types() -> Response:
    """``GET /folders/_/allowed-types`` (and ``allowed_types``): ``["user", "group"]`` or what
    the shared config's ``volumes/_types`` allows."""
    async with current_ctx().db.begin_readonly() as conn:
        types = await read_allowed_types(conn)
    return json_response(list(types))


# ------------------------------------------------------------------------- clone


class _CloneBody(msgspec.Struct, kw_only=True):
    target_name: str
    target_host: str | None = None
    usage_mode: VFolderUsageMode | None = None
    permission: PermName | None = None
    cloneable: bool = False


@auth_required
async def clone(name: str) -> Response:
    """``POST /folders/:name/clone``: a new folder of the caller with a copy of the data,
    filled by a background task; 201 with the new folder and ``bgtask_id``."""
    body = await read_args(_CloneBody)
    ctx = current_ctx()
    source = await find_folder(ctx, current_auth(), name, need="ro")
    target, task_id = await clone_folder(
        ctx,
        _viewer(),
        source,
        CloneRequest(
            target_name=body.target_name,
            target_host=body.target_host or None,
            usage_mode=body.usage_mode or VFolderUsageMode.GENERAL,
            permission=_permission(body.permission, Permission.RW),
            cloneable=body.cloneable,
        ),
    )
    return json_response({**created_json(target), "bgtask_id": str(task_id)}, status=201)


# ------------------------------------------------------------- change ownership


class _OwnershipBody(msgspec.Struct, kw_only=True):
    vfolder: uuid.UUID
    user_email: str


@superadmin_required
async def change_owner() -> Response:
    """``POST /folders/_/change-ownership`` ``{vfolder, user_email}`` (superadmins): ``{}``."""
    body = await read_args(_OwnershipBody)
    await change_ownership(current_ctx(), body.vfolder, body.user_email)
    return json_response({})


# ------------------------------------------------------------ quota and usage


class _HostIdArgs(msgspec.Struct, kw_only=True):
    folder_host: str
    id: uuid.UUID


async def _folder_on_host(args: _HostIdArgs, need: PermName) -> FolderAccess:
    ctx = current_ctx()
    async with ctx.db.begin_readonly() as conn:
        folder = await find_folder_in(conn, _viewer(), args.id.hex, need=need)
    if folder.host != args.folder_host:
        raise InvalidParameter(
            f"the folder lives on {folder.host!r}", field="folder_host", value=args.folder_host
        )
    return folder


@auth_required
async def get_quota() -> Response:
    """``GET /folders/_/quota`` ``{folder_host, id}`` (``ro``): the proxy's ``{quota}`` plus
    ``size_bytes`` (0 without a quota)."""
    folder = await _folder_on_host(await read_args(_HostIdArgs), "ro")
    reply = await current_ctx().storage.call(
        folder.proxy, "/folder/quota", FolderArgs(volume=folder.volume, vfid=folder.vfid)
    )
    quota = reply.get("quota") if isinstance(reply, dict) else None
    return json_response({"quota": quota, "size_bytes": quota or 0})


class _QuotaInput(msgspec.Struct, kw_only=True):
    size_bytes: int | str | None


class _QuotaBody(msgspec.Struct, kw_only=True):
    folder_host: str
    id: uuid.UUID
    input: _QuotaInput


@auth_required
async def set_quota() -> Response:
    """``POST /folders/_/quota`` ``{folder_host, id, input: {size_bytes}}``: the folder's
    owner or an admin who manages it; at most the policy's ``max_vfolder_size``."""
    body = await read_args(_QuotaBody)
    ctx = current_ctx()
    viewer = _viewer()
    folder = await _folder_on_host(_HostIdArgs(folder_host=body.folder_host, id=body.id), "ro")
    if not manages(folder, viewer):
        raise VFolderPermissionDenied("only the folder's owner or an admin may set its quota")
    async with ctx.db.begin_readonly() as conn:
        max_size = await conn.scalar(
            sa.select(keypair_resource_policies.c.max_vfolder_size).where(
                keypair_resource_policies.c.name == viewer.resource_policy
            )
        )
    requested = parse_quota(body.input.size_bytes, field="input.size_bytes")
    if requested is None and max_size:
        raise InvalidFolderInput(
            f"must be at most {int(max_size)} bytes (max_vfolder_size)",
            field="input.size_bytes",
            value=body.input.size_bytes,
        )
    quota = effective_quota(requested, int(max_size or 0), field="input.size_bytes")
    await ctx.storage.call(
        folder.proxy,
        "/folder/quota/update",
        FolderQuota(volume=folder.volume, vfid=folder.vfid, quota=quota),
        fields={"quota": "input.size_bytes"},
    )
    async with ctx.db.begin() as conn:
        await conn.execute(
            sa.update(vfolders).where(vfolders.c.id == folder.id).values(quota=quota)
        )
    return json_response({"size_bytes": quota or 0, "max_size": max_size_mib(quota)})


@superadmin_required
async def get_usage() -> Response:
    """``GET /folders/_/usage`` ``{folder_host, id}`` (superadmins): file count and bytes."""
    folder = await _folder_on_host(await read_args(_HostIdArgs), "ro")
    usage = await _usage(folder)
    return json_response(
        {
            "file_count": int(usage.get("file_count", 0)),
            "used_bytes": int(usage.get("used_bytes", 0)),
        }
    )


@superadmin_required
async def get_used_bytes() -> Response:
    """``GET /folders/_/used-bytes`` ``{folder_host, id}`` (superadmins): ``{used_bytes}``."""
    folder = await _folder_on_host(await read_args(_HostIdArgs), "ro")
    usage = await _usage(folder)
    return json_response({"used_bytes": int(usage.get("used_bytes", 0))})
