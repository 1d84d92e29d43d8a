"""Who may use which folder: :func:`find_folder` and the queries of accessible folders.

A caller reaches a folder as its owner, through a per-user grant (an
accepted invitation or an admin's share), as a member of the owning
project, or as an admin (domain admins: the project folders of their
domain; superadmins: every folder); :func:`bai.manager.vfolders.rules.
effective_permission` turns that into one level.  Whose folders a request
is about is the *owner* of the request (``AuthContext.owner``: the caller,
or the keypair an admin named with ``owner_access_key``), and the request
acts entirely as that user.

Guarantees of :func:`find_folder`:

* only live folders (not in the trash) are found;
* a 32-hex-digit or dashed UUID is first looked up as the folder's id
  (superadmins reach any folder by id); otherwise, or when no folder has
  that id, it is a name among the folders the caller reaches as owner,
  grantee, project member or admin of the project's domain; when several
  share the name, the caller's own folder wins, then a granted one, then a
  project folder, and a tie that remains is a 409 asking for the id;
* a folder the caller cannot reach is 404 :class:`VFolderNotFound`, one it
  reaches with too low a level for *need* is 403
  :class:`VFolderPermissionDenied` (``rw`` needs ``rw`` or ``wd``; ``wd``
  needs ``wd``), and one that is busy (being cloned, or in an error state)
  is 409 :class:`VFolderNotReady` for ``rw`` and ``wd``.

This package sits below the API: the caller and the manager context are
structural protocols (:class:`Caller`, :class:`FolderContext`) that
``AuthContext`` and ``ManagerContext`` satisfy.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import sqlalchemy as sa

from bai.manager.db import Connection, Database
from bai.manager.models.identity import association_groups_users, groups, users
from bai.manager.models.vfolder import (
    LIVE_CONDITION,
    VFolderStatus,
    vfolder_permissions,
    vfolders,
)
from bai.manager.vfolders.errors import (
    VFolderError,
    VFolderNotFound,
    VFolderNotReady,
    VFolderPermissionDenied,
)
from bai.manager.vfolders.rules import Permission, PermissionName, effective_permission

__all__ = [
    "USABLE_STATUSES",
    "AdminReach",
    "Caller",
    "FolderAccess",
    "FolderAmbiguous",
    "FolderContext",
    "Person",
    "Viewer",
    "access_of",
    "accessible_folders",
    "check_need",
    "find_folder",
    "find_folder_in",
    "folder_columns",
    "folder_source",
    "manages",
    "owner_domain",
    "parse_folder_id",
    "permission_expr",
    "reach_condition",
    "used_names",
    "viewer_of",
]

#: Statuses in which a folder may be written to, renamed, deleted or mounted.
USABLE_STATUSES: Final = frozenset(
    {VFolderStatus.READY, VFolderStatus.MOUNTED, VFolderStatus.PERFORMING}
)


class Person(Protocol):
    """A user as authentication knows them (``bai.manager.api.auth.Principal``)."""

    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def email(self) -> str: ...
    @property
    def domain_name(self) -> str: ...
    @property
    def access_key(self) -> str: ...
    @property
    def resource_policy(self) -> str: ...
    @property
    def is_admin(self) -> bool: ...
    @property
    def is_superadmin(self) -> bool: ...


class Caller(Person, Protocol):
    """The caller of a request and whose resources it targets (``AuthContext``)."""

    @property
    def owner(self) -> Person: ...


class FolderContext(Protocol):
    """What folder look-ups need of the manager (``ManagerContext`` has it)."""

    @property
    def db(self) -> Database: ...


class FolderAmbiguous(VFolderError):
    """Several folders the caller reaches equally have this name (409): use the id."""

    http_status = 409
    error_type = "vfolder-ambiguous"
    error_title = "Several virtual folders have this name."


@dataclass(frozen=True, slots=True)
class Viewer:
    """The user a folder request acts as, with that user's privileges."""

    user_id: uuid.UUID
    email: str
    domain_name: str
    access_key: str
    resource_policy: str
    is_admin: bool
    is_superadmin: bool

    @classmethod
    def of(cls, person: Person) -> Viewer:
        """*person* as the user a folder request acts as."""
        return cls(
            user_id=person.user_id,
            email=person.email,
            domain_name=person.domain_name,
            access_key=person.access_key,
            resource_policy=person.resource_policy,
            is_admin=person.is_admin,
            is_superadmin=person.is_superadmin,
        )


def viewer_of(auth: Caller) -> Viewer:
    """The :class:`Viewer` of a request: its owner (module docs)."""
    return Viewer.of(auth.owner)


@dataclass(frozen=True, slots=True)
class FolderAccess:
    """A live folder and what the caller may do with it (``permission``)."""

    id: uuid.UUID
    name: str
    host: str  # "PROXY:VOLUME"
    proxy: str
    volume: str
    vfid: str  # id.hex
    ownership_type: Literal["user", "group"]
    user: uuid.UUID | None
    group: uuid.UUID | None
    permission: PermissionName  # the caller's effective permission
    is_owner: bool
    status: str
    cloneable: bool
    quota: int | None
    # What the answers of the API show besides.
    usage_mode: str = "general"
    folder_permission: PermissionName = "rw"  # what project members get
    granted: bool = False  # the caller holds a per-user grant
    is_member: bool = False  # the caller belongs to the owning project
    creator: str | None = None
    user_email: str | None = None
    group_name: str | None = None
    domain_name: str | None = None
    quota_scope_id: str = ""
    created_at: datetime | None = None
    last_used: datetime | None = None
    max_files: int = 0
    unmanaged_path: str | None = None
    status_changed: datetime | None = None

    @property
    def level(self) -> Permission:
        return Permission.of(self.permission)


# The viewer's grant and membership, joined per query with the viewer's id bound.
_grants = vfolder_permissions.alias("viewer_grant")
_members = association_groups_users.alias("viewer_member")
_owner_users = users.alias("owner_user")


def folder_source(viewer_id: uuid.UUID) -> sa.FromClause:
    """``vfolders`` joined with the viewer's grant and membership, the owner and the project."""
    return (
        vfolders.outerjoin(
            _grants, sa.and_(_grants.c.vfolder == vfolders.c.id, _grants.c.user == viewer_id)
        )
        .outerjoin(
            _members,
            sa.and_(_members.c.group_id == vfolders.c.group, _members.c.user_id == viewer_id),
        )
        .outerjoin(_owner_users, _owner_users.c.uuid == vfolders.c.user)
        .outerjoin(groups, groups.c.id == vfolders.c.group)
    )


def folder_columns() -> list[Any]:
    """The columns :func:`access_of` reads from a row of :func:`folder_source`."""
    return [
        vfolders,
        _grants.c.permission.label("grant"),
        _members.c.user_id.label("member"),
        _owner_users.c.email.label("user_email"),
        _owner_users.c.domain_name.label("user_domain"),
        groups.c.name.label("group_name"),
        groups.c.domain_name.label("group_domain"),
    ]


#: How far an admin's role reaches beyond the admin's own, granted and project folders:
#: ``"none"``; ``"domain"``, the project folders of the admin's domain; ``"all"``, that for
#: domain admins and every folder for superadmins.
AdminReach = Literal["none", "domain", "all"]


def reach_condition(
    viewer: Viewer,
    *,
    own: bool = True,
    shared: bool = True,
    project: bool = True,
    admin: AdminReach = "none",
) -> sa.ColumnElement[bool]:
    """Folders the viewer reaches (over :func:`folder_source`): its own, granted and project
    ones, and what its admin role reaches as far as *admin* says (:data:`AdminReach`)."""
    parts: list[sa.ColumnElement[bool]] = []
    if own:
        parts.append(vfolders.c.user == viewer.user_id)
    if shared:
        parts.append(_grants.c.vfolder.is_not(None))
    if project:
        parts.append(sa.and_(vfolders.c.group.is_not(None), _members.c.user_id.is_not(None)))
    if admin == "all" and viewer.is_superadmin:
        parts.append(sa.true())
    elif admin != "none" and viewer.is_admin:
        parts.append(
            sa.and_(vfolders.c.group.is_not(None), groups.c.domain_name == viewer.domain_name)
        )
    return sa.or_(sa.false(), *parts)


def owner_domain() -> sa.ColumnElement[str]:
    """The domain of each folder of :func:`folder_source`: its owning user's or project's."""
    return sa.func.coalesce(_owner_users.c.domain_name, groups.c.domain_name)


def permission_expr(viewer: Viewer) -> sa.ColumnElement[str]:
    """The viewer's level (``ro``/``rw``/``wd``) on each folder of :func:`folder_source`,
    in SQL: the same as :func:`~bai.manager.vfolders.rules.effective_permission`, except
    that a folder the viewer reaches by no rule (an admin's view of all folders) shows
    the folder's member permission instead of nothing."""
    project = vfolders.c.group.is_not(None)
    # vfolders.user is set only for user folders (a CHECK constraint holds it).
    whens: list[tuple[sa.ColumnElement[bool], Any]] = [(vfolders.c.user == viewer.user_id, "wd")]
    if viewer.is_superadmin:
        whens.insert(0, (sa.true(), "wd"))
    elif viewer.is_admin:
        whens.append((sa.and_(project, groups.c.domain_name == viewer.domain_name), "wd"))
    whens.append((_grants.c.permission.is_not(None), sa.cast(_grants.c.permission, sa.String)))
    whens.append(
        (
            sa.and_(project, _members.c.user_id.is_not(None)),
            sa.cast(vfolders.c.permission, sa.String),
        )
    )
    return sa.case(*whens, else_=sa.cast(vfolders.c.permission, sa.String))


def _split(host: str) -> tuple[str, str]:
    proxy, _, volume = host.partition(":")
    return proxy, volume


def access_of(row: Any, viewer: Viewer) -> FolderAccess | None:
    """The :class:`FolderAccess` of a row of :func:`folder_source`, or ``None`` when the
    viewer has no permission on it."""
    ownership: Literal["user", "group"] = "user" if str(row.ownership_type) == "user" else "group"
    domain = row.user_domain if ownership == "user" else row.group_domain
    grant = None if row.grant is None else Permission.of(str(row.grant))
    is_owner = ownership == "user" and row.user == viewer.user_id
    level = effective_permission(
        ownership_type=ownership,
        folder_permission=Permission.of(str(row.permission)),
        is_owner=is_owner,
        grant=grant,
        is_member=row.member is not None,
        is_domain_admin=viewer.is_admin and domain == viewer.domain_name,
        is_superadmin=viewer.is_superadmin,
    )
    if level is None:
        return None
    proxy, volume = _split(row.host)
    return FolderAccess(
        id=row.id,
        name=row.name,
        host=row.host,
        proxy=proxy,
        volume=volume,
        vfid=row.id.hex,
        ownership_type=ownership,
        user=row.user,
        group=row.group,
        permission=level.label,
        is_owner=is_owner,
        status=str(row.status),
        cloneable=bool(row.cloneable),
        quota=row.quota,
        usage_mode=str(row.usage_mode),
        folder_permission=Permission.of(str(row.permission)).label,
        granted=grant is not None,
        is_member=row.member is not None,
        creator=row.creator,
        user_email=row.user_email,
        group_name=row.group_name,
        domain_name=domain,
        quota_scope_id=row.quota_scope_id,
        created_at=row.created_at,
        last_used=row.last_used,
        max_files=row.max_files,
        unmanaged_path=row.unmanaged_path,
        status_changed=row.status_changed,
    )


async def accessible_folders(
    conn: Connection,
    viewer: Viewer,
    *conditions: sa.ColumnElement[bool],
    own: bool = True,
    shared: bool = True,
    project: bool = True,
    admin: AdminReach = "none",
    live: bool = True,
) -> list[FolderAccess]:
    """The folders the viewer reaches (see :func:`reach_condition`) that match *conditions*,
    oldest first; only live ones unless *live* is false."""
    where = [
        reach_condition(viewer, own=own, shared=shared, project=project, admin=admin),
        *conditions,
    ]
    if live:
        where.append(LIVE_CONDITION)
    query = (
        sa.select(*folder_columns())
        .select_from(folder_source(viewer.user_id))
        .where(*where)
        .order_by(vfolders.c.created_at, vfolders.c.id)
    )
    found = [access_of(row, viewer) for row in await conn.execute(query)]
    return [folder for folder in found if folder is not None]


async def used_names(conn: Connection, viewer: Viewer) -> set[str]:
    """Names of the live folders the viewer reaches without admin rights: a new or renamed
    folder of theirs must not take one (so a name always finds one folder)."""
    return {folder.name for folder in await accessible_folders(conn, viewer)}


def manages(folder: FolderAccess, viewer: Viewer) -> bool:
    """Whether the viewer may manage the folder's sharing: its owner, a superadmin, or an
    admin of a project folder's domain."""
    if folder.is_owner or viewer.is_superadmin:
        return True
    return (
        folder.ownership_type == "group"
        and viewer.is_admin
        and folder.domain_name == viewer.domain_name
    )


def parse_folder_id(text: str) -> uuid.UUID | None:
    """*text* as a folder id (32 hex digits or a dashed UUID), else ``None``."""
    if len(text) not in (32, 36):
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _rank(folder: FolderAccess) -> int:
    if folder.is_owner:
        return 0
    if folder.granted:
        return 1
    if folder.is_member:
        return 2
    return 3


def _pick(found: Sequence[FolderAccess], name: str) -> FolderAccess | None:
    if not found:
        return None
    best = min(_rank(folder) for folder in found)
    top = [folder for folder in found if _rank(folder) == best]
    if len(top) > 1:
        raise FolderAmbiguous(
            f"{len(top)} folders you can reach are called {name!r}; name one by its id"
        )
    return top[0]


def check_need(folder: FolderAccess, need: PermissionName) -> FolderAccess:
    """*folder* if its permission meets *need* and (for writes) it is usable; else raise."""
    if folder.level < Permission.of(need):
        raise VFolderPermissionDenied(
            f"the folder {folder.name!r} needs {need!r} for this; you have {folder.permission!r}"
        )
    if need != "ro" and folder.status not in USABLE_STATUSES:
        raise VFolderNotReady(f"the folder {folder.name!r} is {folder.status} right now")
    return folder


async def find_folder_in(
    conn: Connection, viewer: Viewer, name_or_id: str, *, need: PermissionName = "ro"
) -> FolderAccess:
    """:func:`find_folder` inside an open transaction."""
    folder_id = parse_folder_id(name_or_id)
    if folder_id is not None:
        by_id = await accessible_folders(conn, viewer, vfolders.c.id == folder_id, admin="all")
        if by_id:
            return check_need(by_id[0], need)
    found = _pick(
        await accessible_folders(conn, viewer, vfolders.c.name == name_or_id, admin="domain"),
        name_or_id,
    )
    if found is None:
        raise VFolderNotFound(f"no virtual folder {name_or_id!r} that you can reach")
    return check_need(found, need)


async def find_folder(
    ctx: FolderContext, auth: Caller, name_or_id: str, *, need: PermissionName = "ro"
) -> FolderAccess:
    """The caller's folder (own, invited/shared, or project) by name or id (module docs).

    Raises 404 :class:`VFolderNotFound`, 403 :class:`VFolderPermissionDenied`
    ('rw' needs rw or wd, 'wd' needs wd) or 409 :class:`VFolderNotReady`.
    """
    viewer = viewer_of(auth)
    async with ctx.db.begin_readonly() as conn:
        return await find_folder_in(conn, viewer, name_or_id, need=need)
