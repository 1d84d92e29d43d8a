"""Virtual folders as the GraphQL API shows them.

Root fields: ``vfolder_list(limit, offset, filter, order, order_key,
order_asc, domain_name, group_id, access_key)``, ``vfolder_own_list``,
``vfolder_invited_list`` and ``vfolder_project_list`` (``limit``,
``offset``, ``filter``, ``order``), each a ``VirtualFolderList {items,
total_count}``; nested: ``KeyPair.vfolders`` (the folders the keypair's
user owns).  Folders in the trash are never listed.

Who sees what in ``vfolder_list``: superadmins every folder (``domain_name``
narrows to one domain), domain admins the folders of their domain's users
and projects, users the folders they reach (own, invited, and their
projects').  ``group_id`` keeps one project's folders; ``access_key`` the
folders of that keypair's user (users may name only their own).  The other
lists are the caller's own folders, those shared with it, and its projects'.

``permission`` is the caller's level on the folder (``ro``, ``rw``, ``wd``;
for a folder an admin sees without any right to it, the folder's member
permission); ``max_size`` is the quota in MiB and ``quota`` in bytes.
``num_files`` and ``cur_size`` ask the folder's storage proxy (only when
queried; ``null`` if it cannot answer).

``filter`` and ``order`` (:mod:`~bai.manager.api.gql.filters`) take
``id``, ``host``, ``name``, ``user``, ``group``, ``creator``,
``unmanaged_path``, ``usage_mode``, ``cloneable``, ``max_files``,
``created_at``, ``last_used``, and, written as the official client documents
them, ``ownership_type`` (``USER``, ``GROUP``), ``status`` (``READY``,
``PERFORMING``, ``CLONING``, ``MOUNTED``, ``ERROR``) and ``permission``
(``READ_ONLY``, ``READ_WRITE``, ``RW_DELETE``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.storage_api import FolderArgs
from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.api.gql.filters import Field, Kind, parse_filter
from bai.manager.api.gql.pages import check_page, order_terms, read_page
from bai.manager.db import Connection
from bai.manager.models.identity import keypairs
from bai.manager.models.vfolder import (
    LIVE_CONDITION,
    VFolderOwnershipType,
    VFolderStatus,
    VFolderUsageMode,
    vfolders,
)
from bai.manager.vfolders.access import (
    Viewer,
    folder_columns,
    folder_source,
    owner_domain,
    permission_expr,
    reach_condition,
    viewer_of,
)
from bai.manager.vfolders.proxies import StorageProxyError
from bai.manager.vfolders.rules import max_size_mib

__all__ = [
    "resolve_keypair_vfolders",
    "resolve_vfolder_cur_size",
    "resolve_vfolder_invited_list",
    "resolve_vfolder_list",
    "resolve_vfolder_num_files",
    "resolve_vfolder_own_list",
    "resolve_vfolder_project_list",
    "vfolder_fields",
]

_PERMISSION_NAMES: Final = {"ro": "READ_ONLY", "rw": "READ_WRITE", "wd": "RW_DELETE"}


def _named(expr: sa.ColumnElement[Any], names: Mapping[str, str]) -> Field:
    """An enum field compared by the names the official client documents."""
    case = sa.case(*((expr == value, name) for value, name in names.items()), else_=None)
    return Field(case, Kind.ENUM, frozenset(names.values()))


def vfolder_fields(viewer: Viewer) -> dict[str, Field]:
    """The ``filter`` / ``order`` fields of the folder lists, for *viewer*'s permissions."""
    return {
        "id": Field(vfolders.c.id, Kind.UUID),
        "host": Field(vfolders.c.host, Kind.STRING),
        "name": Field(vfolders.c.name, Kind.STRING),
        "user": Field(vfolders.c.user, Kind.UUID),
        "group": Field(vfolders.c.group, Kind.UUID),
        "creator": Field(vfolders.c.creator, Kind.STRING),
        "unmanaged_path": Field(vfolders.c.unmanaged_path, Kind.STRING),
        "usage_mode": Field(
            sa.cast(vfolders.c.usage_mode, sa.String),
            Kind.ENUM,
            frozenset(m.value for m in VFolderUsageMode),
        ),
        "cloneable": Field(vfolders.c.cloneable, Kind.BOOLEAN),
        "max_files": Field(vfolders.c.max_files, Kind.INTEGER),
        "created_at": Field(vfolders.c.created_at, Kind.DATETIME),
        "last_used": Field(vfolders.c.last_used, Kind.DATETIME),
        "ownership_type": _named(
            sa.cast(vfolders.c.ownership_type, sa.String),
            {m.value: m.name for m in VFolderOwnershipType},
        ),
        "status": _named(
            sa.cast(vfolders.c.status, sa.String), {m.value: m.name for m in VFolderStatus}
        ),
        "permission": _named(permission_expr(viewer), _PERMISSION_NAMES),
    }


def _item(row: Any) -> dict[str, Any]:
    proxy, _, volume = str(row.host).partition(":")
    return {
        "id": row.id,
        "host": row.host,
        "name": row.name,
        "user": row.user,
        "group": row.group,
        "user_email": row.user_email,
        "group_name": row.group_name,
        "creator": row.creator,
        "status": str(row.status),
        "unmanaged_path": row.unmanaged_path,
        "usage_mode": str(row.usage_mode),
        "permission": str(row.viewer_permission),
        "ownership_type": str(row.ownership_type),
        "max_files": row.max_files,
        "max_size": max_size_mib(row.quota),
        "quota": row.quota,
        "created_at": row.created_at,
        "last_used": row.last_used,
        "cloneable": row.cloneable,
        "_proxy": proxy,
        "_volume": volume,
    }


def _page(
    ctx: GqlContext,
    viewer: Viewer,
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    limit: int | None,
    offset: int = 0,
    filter: str | None = None,
    order: str | None = None,
    order_key: str | None = None,
    order_asc: bool | None = None,
) -> dict[str, Any]:
    fields = vfolder_fields(viewer)
    where = [*conditions, LIVE_CONDITION]
    if filter:
        where.append(parse_filter(filter, fields))
    ordering = order_terms(
        fields,
        (vfolders.c.created_at, vfolders.c.id),
        vfolders.c.id,
        order=order,
        order_key=order_key,
        order_asc=order_asc,
    )
    columns = [*folder_columns(), permission_expr(viewer).label("viewer_permission")]

    async def read(conn: Connection) -> tuple[list[Any], int]:
        return await read_page(
            conn,
            folder_source(viewer.user_id),
            columns,
            where,
            ordering,
            limit=limit,
            offset=offset,
        )

    rows, total = ctx.read(read)
    return {"items": [_item(row) for row in rows], "total_count": total}


def _keypair_user(access_key: str) -> sa.ColumnElement[bool]:
    owner = sa.select(keypairs.c.user).where(keypairs.c.access_key == access_key)
    return vfolders.c.user.in_(owner.scalar_subquery())


def resolve_vfolder_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    filter: str | None = None,
    order: str | None = None,
    order_key: str | None = None,
    order_asc: bool | None = None,
    domain_name: str | None = None,
    group_id: uuid.UUID | None = None,
    access_key: str | None = None,
) -> Any:
    """``vfolder_list``: one page of the folders the caller may see (module docs)."""
    ctx = context_of(info)
    check_page(limit, offset)
    viewer = viewer_of(ctx.auth)
    conditions: list[sa.ColumnElement[bool]] = []
    domain = ctx.domain_scope(domain_name)
    if ctx.is_admin:
        if domain is not None:
            conditions.append(owner_domain() == domain)
    else:
        conditions.append(reach_condition(viewer))
    if group_id is not None:
        conditions.append(vfolders.c.group == group_id)
    if access_key is not None:
        ctx.own_only(access_key, ctx.auth.access_key, "keypair")
        conditions.append(_keypair_user(access_key))
    return _page(
        ctx,
        viewer,
        conditions,
        limit=limit,
        offset=offset,
        filter=filter,
        order=order,
        order_key=order_key,
        order_asc=order_asc,
    )


def _scoped_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    filter: str | None = None,
    order: str | None = None,
    *,
    own: bool = False,
    shared: bool = False,
    project: bool = False,
) -> Any:
    ctx = context_of(info)
    check_page(limit, offset)
    viewer = viewer_of(ctx.auth)
    scope = reach_condition(viewer, own=own, shared=shared, project=project)
    conditions = [scope]
    if shared:
        # Shared *with* the caller: user folders of others only.
        conditions += [vfolders.c.group.is_(None), vfolders.c.user != viewer.user_id]
    if project:
        conditions.append(vfolders.c.group.is_not(None))
    return _page(ctx, viewer, conditions, limit=limit, offset=offset, filter=filter, order=order)


#: ``vfolder_own_list``: the caller's own folders.
resolve_vfolder_own_list: Final = functools.partial(_scoped_list, own=True)
#: ``vfolder_invited_list``: other users' folders shared with the caller.
resolve_vfolder_invited_list: Final = functools.partial(_scoped_list, shared=True)
#: ``vfolder_project_list``: the folders of the caller's projects.
resolve_vfolder_project_list: Final = functools.partial(_scoped_list, project=True)


def resolve_keypair_vfolders(keypair: Mapping[str, Any], info: Info) -> Any:
    """``KeyPair.vfolders``: the folders the keypair's user owns (the keypair is visible)."""
    ctx = context_of(info)
    viewer = viewer_of(ctx.auth)

    def load(owners: list[uuid.UUID]) -> dict[Any, list[Any]]:
        found: dict[Any, list[Any]] = {}
        for item in _page(ctx, viewer, [vfolders.c.user.in_(owners)], limit=None)["items"]:
            found.setdefault(item["user"], []).append(item)
        return found

    return ctx.batch("KeyPair.vfolders", keypair, "user", load, [])


def _usage(item: Mapping[str, Any], info: Info) -> Mapping[str, Any] | None:
    ctx = context_of(info)
    if ctx.storage is None:
        return None
    key = ("vfolder-usage", item["id"])
    if key not in ctx.memo:
        call = functools.partial(
            ctx.storage.call,
            item["_proxy"],
            "/folder/usage",
            FolderArgs(volume=item["_volume"], vfid=item["id"].hex),
        )
        try:
            reply = trio.from_thread.run(call)
        except StorageProxyError:
            reply = None
        ctx.memo[key] = reply if isinstance(reply, Mapping) else None
    usage: Mapping[str, Any] | None = ctx.memo[key]
    return usage


def resolve_vfolder_num_files(item: Mapping[str, Any], info: Info) -> Any:
    """``VirtualFolder.num_files``: the file count the folder's proxy reports."""
    usage = _usage(item, info)
    return None if usage is None else usage.get("file_count")


def resolve_vfolder_cur_size(item: Mapping[str, Any], info: Info) -> Any:
    """``VirtualFolder.cur_size``: the bytes the folder's proxy reports."""
    usage = _usage(item, info)
    return None if usage is None else usage.get("used_bytes")
