"""Sharing folders: invitations to user folders, direct shares of project folders, grants.

Invitations (user folders only):

* :func:`invite` -- only the folder's owner (or a superadmin) invites, never
  with more than the inviter holds (:func:`~bai.manager.vfolders.rules.
  check_grant`); private (dot-named) folders are never shared.  Every email
  must name an active user other than the owner (400 naming
  ``emails.N``; nothing is written otherwise); users who already have a
  grant or a pending invitation are skipped.  Returns the emails invited.
* :func:`received` / :func:`sent` -- pending invitations to or from the
  viewer, of live folders.
* :func:`accept` -- the invitee turns a pending invitation into a grant,
  unless it already reaches a folder of that name (400).
* :func:`withdraw` -- the inviter cancels, the invitee rejects.
* :func:`update_invitation` -- the inviter changes a pending invitation's
  permission, within what it holds.
* :func:`leave` -- a grantee gives up its grant (a superadmin may remove
  another user's).

Shares (project folders only; admins of the folder's domain): :func:`share`
writes or replaces grants for project members (a grant replaces the
folder's member permission for that user, so it can lower it too);
:func:`unshare` removes them.  :func:`shared_grants` and
:func:`update_grant` list and change the grants of the folders the viewer
manages (its own user folders; project folders of its domain for admins).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bai.manager.db import Connection
from bai.manager.models.base import utcnow
from bai.manager.models.identity import UserStatus, association_groups_users, users
from bai.manager.models.vfolder import (
    LIVE_CONDITION,
    VFolderInvitationState,
    vfolder_invitations,
    vfolder_permissions,
    vfolders,
)
from bai.manager.vfolders.access import (
    FolderAccess,
    Viewer,
    accessible_folders,
    manages,
    used_names,
)
from bai.manager.vfolders.errors import (
    InvalidFolderInput,
    InvitationNotFound,
    VFolderAlreadyExists,
    VFolderNotFound,
    VFolderPermissionDenied,
    VFolderUserNotFound,
)
from bai.manager.vfolders.rules import Permission, check_grant, is_private_name

__all__ = [
    "accept",
    "invite",
    "leave",
    "received",
    "sent",
    "share",
    "shared_grants",
    "unshare",
    "update_grant",
    "update_invitation",
    "withdraw",
]


async def _users_by_email(
    conn: Connection, emails: Sequence[str], field: str
) -> list[tuple[uuid.UUID, str]]:
    """The active users of *emails*, in order; 400 naming ``field.N`` for an unknown one."""
    if not emails:
        raise InvalidFolderInput("must name at least one user", field=field, value=list(emails))
    rows = await conn.execute(
        sa.select(users.c.uuid, users.c.email).where(
            users.c.email.in_(sorted(set(emails))), users.c.status == UserStatus.ACTIVE
        )
    )
    by_email = {row.email: row.uuid for row in rows}
    found: list[tuple[uuid.UUID, str]] = []
    for index, email in enumerate(emails):
        if email not in by_email:
            raise VFolderUserNotFound(
                "no active user has this email", field=f"{field}.{index}", value=email
            )
        if (by_email[email], email) not in found:
            found.append((by_email[email], email))
    return found


def _check_granter(permission: Permission, folder: FolderAccess, *, is_admin: bool) -> None:
    """:func:`~bai.manager.vfolders.rules.check_grant` for a granter holding *folder*."""
    check_grant(
        permission,
        granter=folder.level,
        granter_is_owner=folder.is_owner,
        granter_is_admin=is_admin,
    )


def _grant(folder_id: uuid.UUID, user_id: uuid.UUID) -> sa.ColumnElement[bool]:
    """The condition selecting the grant of *user_id* on the folder *folder_id*."""
    return sa.and_(
        vfolder_permissions.c.vfolder == folder_id, vfolder_permissions.c.user == user_id
    )


async def _set_grant(
    conn: Connection, folder_id: uuid.UUID, user_id: uuid.UUID, permission: str
) -> None:
    """Give *user_id* *permission* on the folder, replacing the grant it has."""
    await conn.execute(sa.delete(vfolder_permissions).where(_grant(folder_id, user_id)))
    await conn.execute(
        sa.insert(vfolder_permissions).values(
            vfolder=folder_id, user=user_id, permission=permission
        )
    )


# -------------------------------------------------------------------- invitations


async def invite(
    conn: Connection,
    viewer: Viewer,
    folder: FolderAccess,
    permission: Permission,
    emails: Sequence[str],
    *,
    field: str = "emails",
) -> list[str]:
    """Invite users to a user folder (module docs); returns the emails invited."""
    if folder.ownership_type != "user":
        raise InvalidFolderInput(
            "project folders are shared with /share, not invited to",
            field="name",
            value=folder.name,
        )
    if is_private_name(folder.name):
        raise VFolderPermissionDenied("folders whose name starts with '.' are private")
    _check_granter(permission, folder, is_admin=viewer.is_superadmin)
    invitees = await _users_by_email(conn, emails, field)
    for index, (user_id, email) in enumerate(invitees):
        if user_id == folder.user:
            raise InvalidFolderInput(
                "is the folder's owner, who has it already", field=f"{field}.{index}", value=email
            )
    granted = set(
        (
            await conn.execute(
                sa.select(vfolder_permissions.c.user).where(
                    vfolder_permissions.c.vfolder == folder.id
                )
            )
        ).scalars()
    )
    pending = set(
        (
            await conn.execute(
                sa.select(vfolder_invitations.c.invitee).where(
                    vfolder_invitations.c.vfolder == folder.id,
                    vfolder_invitations.c.state == VFolderInvitationState.PENDING,
                )
            )
        ).scalars()
    )
    invited: list[str] = []
    now = utcnow()
    for user_id, email in invitees:
        if user_id in granted or email in pending:
            continue
        await conn.execute(
            sa.insert(vfolder_invitations).values(
                id=uuid.uuid4(),
                permission=permission.label,
                inviter=viewer.email,
                invitee=email,
                state=VFolderInvitationState.PENDING,
                created_at=now,
                modified_at=now,
                vfolder=folder.id,
            )
        )
        invited.append(email)
    return invited


def _invitation_item(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "inviter": row.inviter,
        "invitee": row.invitee,
        "perm": str(row.permission),
        "state": str(row.state),
        "created_at": row.created_at.isoformat(),
        "modified_at": row.modified_at.isoformat(),
        "vfolder_id": str(row.vfolder),
        "vfolder_name": row.vfolder_name,
    }


def _pending(*conditions: sa.ColumnElement[bool]) -> sa.Select[Any]:
    return (
        sa.select(vfolder_invitations, vfolders.c.name.label("vfolder_name"))
        .select_from(
            vfolder_invitations.join(vfolders, vfolders.c.id == vfolder_invitations.c.vfolder)
        )
        .where(
            vfolder_invitations.c.state == VFolderInvitationState.PENDING,
            LIVE_CONDITION,
            *conditions,
        )
        .order_by(vfolder_invitations.c.created_at, vfolder_invitations.c.id)
    )


async def received(conn: Connection, viewer: Viewer) -> list[dict[str, Any]]:
    """The pending invitations to the viewer (the spec's Invitation objects plus extras)."""
    rows = await conn.execute(_pending(vfolder_invitations.c.invitee == viewer.email))
    return [_invitation_item(row) for row in rows]


async def sent(conn: Connection, viewer: Viewer) -> list[dict[str, Any]]:
    """The pending invitations the viewer sent."""
    rows = await conn.execute(_pending(vfolder_invitations.c.inviter == viewer.email))
    return [_invitation_item(row) for row in rows]


async def _invitation(conn: Connection, inv_id: uuid.UUID, *who: sa.ColumnElement[bool]) -> Any:
    row = (
        await conn.execute(
            _pending(vfolder_invitations.c.id == inv_id, sa.or_(sa.false(), *who)).with_for_update(
                of=vfolder_invitations
            )
        )
    ).first()
    if row is None:
        raise InvitationNotFound(f"no pending invitation {inv_id} for you")
    return row


async def _set_invitation(conn: Connection, inv_id: uuid.UUID, **values: Any) -> None:
    """Change the invitation *inv_id* (and its ``modified_at``)."""
    await conn.execute(
        sa.update(vfolder_invitations)
        .where(vfolder_invitations.c.id == inv_id)
        .values(**values, modified_at=utcnow())
    )


async def accept(conn: Connection, viewer: Viewer, inv_id: uuid.UUID) -> None:
    """Accept a pending invitation to the viewer: a grant of its permission."""
    row = await _invitation(conn, inv_id, vfolder_invitations.c.invitee == viewer.email)
    if row.vfolder_name in await used_names(conn, viewer):
        raise VFolderAlreadyExists(
            f"you already reach a folder called {row.vfolder_name!r}; rename yours first",
            field="inv_id",
            value=str(inv_id),
        )
    await _set_grant(conn, row.vfolder, viewer.user_id, str(row.permission))
    await _set_invitation(conn, inv_id, state=VFolderInvitationState.ACCEPTED)


async def withdraw(conn: Connection, viewer: Viewer, inv_id: uuid.UUID) -> str:
    """The inviter cancels or the invitee rejects a pending invitation; returns the new state."""
    row = await _invitation(
        conn,
        inv_id,
        vfolder_invitations.c.inviter == viewer.email,
        vfolder_invitations.c.invitee == viewer.email,
    )
    state = (
        VFolderInvitationState.CANCELED
        if row.inviter == viewer.email
        else VFolderInvitationState.REJECTED
    )
    await _set_invitation(conn, inv_id, state=state)
    return str(state)


async def update_invitation(
    conn: Connection, viewer: Viewer, inv_id: uuid.UUID, permission: Permission
) -> None:
    """The inviter changes a pending invitation's permission, within what it holds now."""
    row = await _invitation(conn, inv_id, vfolder_invitations.c.inviter == viewer.email)
    found = await accessible_folders(conn, viewer, vfolders.c.id == row.vfolder, admin="all")
    if not found:
        raise InvitationNotFound(f"no pending invitation {inv_id} for you")
    _check_granter(permission, found[0], is_admin=viewer.is_superadmin)
    await _set_invitation(conn, inv_id, permission=permission.label)


async def leave(
    conn: Connection, viewer: Viewer, folder: FolderAccess, shared_user: uuid.UUID | None
) -> None:
    """Give up a grant on a user folder (module docs)."""
    if folder.ownership_type != "user":
        raise InvalidFolderInput(
            "you cannot leave a project folder", field="name", value=folder.name
        )
    target = viewer.user_id
    if shared_user is not None and shared_user != viewer.user_id:
        if not viewer.is_superadmin:
            raise VFolderPermissionDenied("only superadmins may remove another user's grant")
        target = shared_user
    elif folder.is_owner:
        raise InvalidFolderInput(
            "you own this folder: delete it instead of leaving it", field="name", value=folder.name
        )
    result = await conn.execute(sa.delete(vfolder_permissions).where(_grant(folder.id, target)))
    if result.rowcount == 0:
        raise VFolderNotFound(f"the folder {folder.name!r} is not shared with this user")


# ------------------------------------------------------------------------- shares


def _check_project_admin(folder: FolderAccess, viewer: Viewer) -> None:
    if folder.ownership_type != "group":
        raise InvalidFolderInput(
            "only project folders are shared directly; invite users to a user folder",
            field="name",
            value=folder.name,
        )
    if not manages(folder, viewer):
        raise VFolderPermissionDenied("only admins of the folder's domain may share it")


async def share(
    conn: Connection,
    viewer: Viewer,
    folder: FolderAccess,
    permission: Permission,
    emails: Sequence[str],
    *,
    field: str = "emails",
) -> list[str]:
    """Grant *permission* on a project folder to members of its project; returns the emails."""
    _check_project_admin(folder, viewer)
    check_grant(permission, granter=folder.level, granter_is_owner=False, granter_is_admin=True)
    targets = await _users_by_email(conn, emails, field)
    members = set(
        (
            await conn.execute(
                sa.select(association_groups_users.c.user_id).where(
                    association_groups_users.c.group_id == folder.group
                )
            )
        ).scalars()
    )
    for index, (user_id, email) in enumerate(targets):
        if user_id not in members:
            raise VFolderUserNotFound(
                "is not a member of the folder's project", field=f"{field}.{index}", value=email
            )
    for user_id, _email in targets:
        await _set_grant(conn, folder.id, user_id, permission.label)
    return [email for _user_id, email in targets]


async def unshare(
    conn: Connection,
    viewer: Viewer,
    folder: FolderAccess,
    emails: Sequence[str],
    *,
    field: str = "emails",
) -> list[str]:
    """Remove the grants of users on a project folder; returns the emails."""
    _check_project_admin(folder, viewer)
    targets = await _users_by_email(conn, emails, field)
    await conn.execute(
        sa.delete(vfolder_permissions).where(
            vfolder_permissions.c.vfolder == folder.id,
            vfolder_permissions.c.user.in_([user_id for user_id, _ in targets]),
        )
    )
    return [email for _user_id, email in targets]


async def _managed(
    conn: Connection, viewer: Viewer, folder_id: uuid.UUID | None
) -> list[FolderAccess]:
    extra = [] if folder_id is None else [vfolders.c.id == folder_id]
    found = await accessible_folders(conn, viewer, *extra, shared=False, admin="all")
    managed = [folder for folder in found if manages(folder, viewer)]
    if folder_id is not None and not managed:
        raise VFolderNotFound(f"no virtual folder {folder_id} whose sharing you manage")
    return managed


async def shared_grants(
    conn: Connection, viewer: Viewer, folder_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """The grants on the folders the viewer manages (or on *folder_id* only)."""
    folders = {folder.id: folder for folder in await _managed(conn, viewer, folder_id)}
    if not folders:
        return []
    rows = await conn.execute(
        sa.select(vfolder_permissions, users.c.email)
        .join(users, users.c.uuid == vfolder_permissions.c.user)
        .where(vfolder_permissions.c.vfolder.in_(sorted(folders)))
        .order_by(vfolder_permissions.c.vfolder, users.c.email)
    )
    out: list[dict[str, Any]] = []
    for row in rows:
        folder = folders[row.vfolder]
        owner = folder.group if folder.ownership_type == "group" else folder.user
        out.append(
            {
                "vfolder_id": str(folder.id),
                "vfolder_name": folder.name,
                "status": folder.status,
                "owner": str(owner),
                "type": "project" if folder.ownership_type == "group" else "user",
                "shared_to": {"uuid": str(row.user), "email": row.email},
                "perm": str(row.permission),
            }
        )
    return out


async def update_grant(
    conn: Connection,
    viewer: Viewer,
    folder_id: uuid.UUID,
    user_id: uuid.UUID,
    permission: Permission | None,
) -> None:
    """Change (or with ``None`` remove) a user's grant on a folder the viewer manages."""
    folder = (await _managed(conn, viewer, folder_id))[0]
    if permission is not None:
        _check_granter(permission, folder, is_admin=viewer.is_admin)
        result = await conn.execute(
            sa.update(vfolder_permissions)
            .where(_grant(folder.id, user_id))
            .values(permission=permission.label)
        )
    else:
        result = await conn.execute(
            sa.delete(vfolder_permissions).where(_grant(folder.id, user_id))
        )
    if result.rowcount == 0:
        raise VFolderUserNotFound("has no grant on this folder", field="user", value=str(user_id))
