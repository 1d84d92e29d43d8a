"""``/folders``: invitations, leaving, direct shares and the grants they make.

Thin routes over :mod:`bai.manager.vfolders.sharing`, which holds the rules
(only owners invite, only admins share, nobody grants more than it holds).
Answers carry the keys the official client reads: ``invited_ids``,
``invitations`` (each ``{id, inviter, invitee, perm, state, created_at,
modified_at, vfolder_id, vfolder_name}``), ``shared_emails``,
``unshared_emails``, ``shared`` (each ``{vfolder_id, vfolder_name, status,
owner, type, shared_to: {uuid, email}, perm}``) and ``msg``.
"""

from __future__ import annotations

import uuid
from typing import Literal, TypeVar

import msgspec
from quart import Response

from bai.manager.api.auth import admin_required, auth_required, current_auth
from bai.manager.api.helpers import InvalidParameter, current_ctx, json_response
from bai.manager.api.vfolder.params import read_args
from bai.manager.vfolders import sharing
from bai.manager.vfolders.access import find_folder_in, viewer_of
from bai.manager.vfolders.rules import Permission

__all__ = [
    "accept_invitation",
    "delete_invitation",
    "invite",
    "leave",
    "list_invitations",
    "list_sent_invitations",
    "list_shared",
    "share",
    "unshare",
    "update_invitation",
    "update_shared",
]

PermName = Literal["ro", "rw", "wd"]
T = TypeVar("T")


def _one(*named: tuple[str, T | None]) -> T | None:
    """The value given under one of several alias keys; 400 when two disagree."""
    given = [(key, value) for key, value in named if value is not None]
    for key, value in given[1:]:
        if value != given[0][1]:
            raise InvalidParameter(f"disagrees with {given[0][0]}", field=key, value=value)
    return given[0][1] if given else None


class _InviteBody(msgspec.Struct, kw_only=True):
    perm: PermName | None = None
    permission: PermName | None = None
    emails: list[str] | None = None
    user_ids: list[str] | None = None
    user_ids_camel: list[str] | None = msgspec.field(default=None, name="userIDs")


@auth_required
async def invite(name: str) -> Response:
    """``POST /folders/:name/invite`` ``{perm, emails}`` (also ``permission``, ``user_ids``):
    201 ``{"invited_ids": [emails]}``."""
    body = await read_args(_InviteBody)
    perm = _one(("perm", body.perm), ("permission", body.permission)) or "rw"
    emails = _one(
        ("emails", body.emails), ("user_ids", body.user_ids), ("userIDs", body.user_ids_camel)
    )
    if emails is None:
        raise InvalidParameter("is required", field="emails")
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        folder = await find_folder_in(conn, viewer, name, need="ro")
        invited = await sharing.invite(conn, viewer, folder, Permission.of(perm), emails)
    return json_response({"invited_ids": invited}, status=201)


@auth_required
async def list_invitations() -> Response:
    """``GET /folders/invitations/list``: the pending invitations to the caller."""
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin_readonly() as conn:
        found = await sharing.received(conn, viewer)
    return json_response({"invitations": found})


@auth_required
async def list_sent_invitations() -> Response:
    """``GET /folders/invitations/list-sent`` (and ``list_sent``): the caller's pending ones."""
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin_readonly() as conn:
        found = await sharing.sent(conn, viewer)
    return json_response({"invitations": found})


class _InvitationArgs(msgspec.Struct, kw_only=True):
    inv_id: uuid.UUID


class _PermBody(msgspec.Struct, kw_only=True):
    perm: PermName | None = None
    permission: PermName | None = None


@auth_required
async def update_invitation(inv_id: str) -> Response:
    """``POST /folders/invitations/update/:inv_id`` ``{perm}``: the inviter changes it."""
    try:
        invitation = uuid.UUID(inv_id)
    except ValueError:
        raise InvalidParameter("must be an invitation id", field="inv_id", value=inv_id) from None
    body = await read_args(_PermBody)
    perm = _one(("perm", body.perm), ("permission", body.permission))
    if perm is None:
        raise InvalidParameter("is required", field="perm")
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        await sharing.update_invitation(conn, viewer, invitation, Permission.of(perm))
    return json_response({"msg": f"vfolder invitation updated: {invitation}."})


@auth_required
async def accept_invitation() -> Response:
    """``POST /folders/invitations/accept`` ``{inv_id}``: ``{}``."""
    args = await read_args(_InvitationArgs)
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        await sharing.accept(conn, viewer, args.inv_id)
    return json_response({})


@auth_required
async def delete_invitation() -> Response:
    """``DELETE /folders/invitations/delete`` ``{inv_id}``: the invitee rejects, the inviter
    cancels; ``{"msg"}``."""
    args = await read_args(_InvitationArgs)
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        state = await sharing.withdraw(conn, viewer, args.inv_id)
    return json_response({"msg": f"vfolder invitation {state}: {args.inv_id}"})


class _LeaveBody(msgspec.Struct, kw_only=True):
    shared_user_uuid: uuid.UUID | None = None
    shared_user_uuid_camel: uuid.UUID | None = msgspec.field(default=None, name="sharedUserUuid")


@auth_required
async def leave(name: str) -> Response:
    """``POST /folders/:name/leave`` ``{shared_user_uuid?}``: give up a grant."""
    body = await read_args(_LeaveBody)
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        folder = await find_folder_in(conn, viewer, name, need="ro")
        await sharing.leave(
            conn, viewer, folder, body.shared_user_uuid or body.shared_user_uuid_camel
        )
    return json_response({"msg": "left the shared vfolder"})


class _ShareBody(msgspec.Struct, kw_only=True):
    permission: PermName | None = None
    perm: PermName | None = None
    emails: list[str]


@admin_required
async def share(name: str) -> Response:
    """``POST /folders/:name/share`` ``{permission, emails}`` (admins; project folders):
    201 ``{"shared_emails"}``."""
    body = await read_args(_ShareBody)
    perm = _one(("permission", body.permission), ("perm", body.perm)) or "rw"
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        folder = await find_folder_in(conn, viewer, name, need="ro")
        shared = await sharing.share(conn, viewer, folder, Permission.of(perm), body.emails)
    return json_response({"shared_emails": shared}, status=201)


class _UnshareArgs(msgspec.Struct, kw_only=True):
    emails: list[str]


@admin_required
async def unshare(name: str) -> Response:
    """``DELETE /folders/:name/unshare`` ``{emails}`` (admins): ``{"unshared_emails"}``."""
    args = await read_args(_UnshareArgs, lists=("emails",))
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        folder = await find_folder_in(conn, viewer, name, need="ro")
        unshared = await sharing.unshare(conn, viewer, folder, args.emails)
    return json_response({"unshared_emails": unshared})


class _SharedArgs(msgspec.Struct, kw_only=True):
    vfolder_id: uuid.UUID | None = None
    vfolder_id_camel: uuid.UUID | None = msgspec.field(default=None, name="vfolderId")


@auth_required
async def list_shared() -> Response:
    """``GET /folders/_/shared`` ``{vfolder_id?}``: grants on the folders the caller manages."""
    args = await read_args(_SharedArgs)
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin_readonly() as conn:
        found = await sharing.shared_grants(conn, viewer, args.vfolder_id or args.vfolder_id_camel)
    return json_response({"shared": found})


class _UpdateSharedBody(msgspec.Struct, kw_only=True):
    vfolder: uuid.UUID
    user: uuid.UUID
    perm: PermName | None = None
    permission: PermName | None = None


@auth_required
async def update_shared() -> Response:
    """``POST /folders/_/shared`` ``{vfolder, user, perm}``: change a grant (``perm`` null
    removes it) on a folder the caller manages."""
    body = await read_args(_UpdateSharedBody)
    perm = _one(("perm", body.perm), ("permission", body.permission))
    viewer = viewer_of(current_auth())
    async with current_ctx().db.begin() as conn:
        await sharing.update_grant(
            conn,
            viewer,
            body.vfolder,
            body.user,
            None if perm is None else Permission.of(perm),
        )
    return json_response({"msg": "shared vfolder permission updated"})
