"""``/scaling-groups``: the resource groups a caller may start sessions in.

* ``GET /scaling-groups?group=...`` answers ``{"scaling_groups": [{"name"}]}``:
  the active resource groups associated with the caller's domain, with the
  project ``group`` names (its id or its name, in the caller's domain), or with
  the caller's keypair (:func:`bai.manager.sessions.queries.allowed_scaling_groups`);
  only the public ones unless the caller is an admin, as in the original.
* ``GET /scaling-groups/{name}/wsproxy-version?group=...`` answers
  ``{"wsproxy_version"}`` for one of those groups: ``"v2"`` when it has an
  app proxy (bai's app proxy speaks the v2 protocol), ``"v1"`` without one
  (the manager relays apps itself).  A group the caller may not use is 404,
  whether or not it exists.

An unknown or inactive project is 400 naming ``group``.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
import sqlalchemy as sa
from quart import Blueprint, Response

from bai.common.errors import InvalidValue
from bai.manager.api.auth import AuthContext, auth_required, current_auth
from bai.manager.api.errors import NotFound
from bai.manager.api.helpers import current_ctx, json_response, read_query
from bai.manager.db import Connection
from bai.manager.models.identity import groups
from bai.manager.models.resource import scaling_groups
from bai.manager.sessions.queries import allowed_scaling_groups

__all__ = ["blueprint"]

blueprint = Blueprint("scaling_groups", __name__, url_prefix="/scaling-groups")


class _GroupQuery(msgspec.Struct, kw_only=True):
    group: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


async def _project_id(conn: Connection, auth: AuthContext, group: str) -> uuid.UUID:
    try:
        by = groups.c.id == uuid.UUID(group)
    except ValueError:
        by = groups.c.name == group
    found = (
        await conn.execute(
            sa.select(groups.c.id).where(
                by, groups.c.domain_name == auth.domain_name, groups.c.is_active.is_(True)
            )
        )
    ).first()
    if found is None:
        raise InvalidValue("no such active project in your domain", value=group, field="group")
    return uuid.UUID(str(found.id))


async def _usable(conn: Connection, group: str) -> list[str]:
    auth = current_auth()
    allowed = await allowed_scaling_groups(
        conn,
        domain_name=auth.domain_name,
        group_id=await _project_id(conn, auth, group),
        access_key=auth.access_key,
    )
    return [name for name, public in allowed.items() if public or auth.is_admin]


@blueprint.route("", methods=["GET"])
@auth_required
async def list_available() -> Response:
    """``GET /scaling-groups``."""
    params = read_query(_GroupQuery)
    async with current_ctx().db.begin_readonly() as conn:
        names = await _usable(conn, params.group)
    return json_response({"scaling_groups": [{"name": name} for name in names]})


@blueprint.route("/<scaling_group>/wsproxy-version", methods=["GET"])
@auth_required
async def wsproxy_version(scaling_group: str) -> Response:
    """``GET /scaling-groups/{name}/wsproxy-version``."""
    params = read_query(_GroupQuery)
    async with current_ctx().db.begin_readonly() as conn:
        if scaling_group not in await _usable(conn, params.group):
            raise NotFound("no such resource group usable by you")
        addr = (
            await conn.execute(
                sa.select(scaling_groups.c.wsproxy_addr).where(
                    scaling_groups.c.name == scaling_group
                )
            )
        ).scalar_one()
    return json_response({"wsproxy_version": "v2" if addr else "v1"})
