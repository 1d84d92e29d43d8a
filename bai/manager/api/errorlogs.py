"""``/logs/error``: error reports filed by clients and services, listed and cleared by role.

* ``POST /logs/error`` (any user): file a report (``severity``, ``source``,
  ``message``, ``context_lang``, ``context_env``, optional ``request_url``,
  ``request_status``, ``traceback``) under the caller; ``{"success": true}``.
  ``context_env`` is a JSON object, or a string holding one, as the spec says.
* ``GET /logs/error?page_size=&page_no=&mark_read=``: newest first,
  ``{"logs": [...], "count": total}``; a superadmin sees every report, a
  domain admin those of the domain's users, a user their own that are not
  cleared (and without ``is_cleared``).  ``page_size`` is 1-100 (default 20),
  ``page_no`` from 1; ``mark_read`` marks the page's reports read.
* ``POST /logs/error/{log_id}/clear``: hides a report from its user; by the
  same visibility rules, 404 when the caller cannot see it.

Report entries use the original manager's names: ``log_id``, ``created_at``
(a POSIX timestamp), ``severity``, ``source``, ``user``, ``is_read``,
``message``, ``context_lang``, ``context_env``, ``request_url``,
``request_status``, ``traceback``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import msgspec
import sqlalchemy as sa
from quart import Blueprint, Response

from bai.common.errors import InvalidValue
from bai.manager.api.auth import AuthContext, auth_required, current_auth
from bai.manager.api.errors import NotFound
from bai.manager.api.helpers import current_ctx, json_response, read_json, read_query
from bai.manager.models.errorlog import ErrorLogSeverity, error_logs
from bai.manager.models.identity import users

__all__ = ["MAX_PAGE_SIZE", "blueprint"]

#: The most reports one page lists.
MAX_PAGE_SIZE: Final = 100

blueprint = Blueprint("errorlogs", __name__, url_prefix="/logs/error")

_Short = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Text = Annotated[str, msgspec.Meta(max_length=1024 * 1024)]


class _NewReport(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    severity: ErrorLogSeverity
    source: _Short
    message: _Text
    context_lang: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    context_env: dict[str, Any] | str
    request_url: _Text | None = None
    request_status: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None
    traceback: _Text | None = None


def _context_env(value: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        decoded = msgspec.json.decode(value)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise InvalidValue("must be a JSON object, or a string holding one", field="context_env")
    return decoded


@blueprint.route("", methods=["POST"])
@auth_required
async def append() -> Response:
    """``POST /logs/error``."""
    params = await read_json(_NewReport)
    values = msgspec.structs.asdict(params) | {
        "context_env": _context_env(params.context_env),
        "user": current_auth().user_id,
    }
    async with current_ctx().db.begin() as conn:
        await conn.execute(sa.insert(error_logs).values(values))
    return json_response({"success": True})


def _visible(auth: AuthContext) -> sa.ColumnElement[bool]:
    """The reports *auth* may see and clear."""
    if auth.is_superadmin:
        return sa.true()
    if auth.is_admin:
        return error_logs.c.user.in_(
            sa.select(users.c.uuid).where(users.c.domain_name == auth.domain_name)
        )
    return sa.and_(error_logs.c.user == auth.user_id, error_logs.c.is_cleared.is_(False))


class _ListQuery(msgspec.Struct, kw_only=True):
    mark_read: bool = False
    page_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_SIZE)] = 20
    page_no: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1


@blueprint.route("", methods=["GET"])
@auth_required
async def list_logs() -> Response:
    """``GET /logs/error``."""
    params = read_query(_ListQuery)
    auth = current_auth()
    where = _visible(auth)
    async with current_ctx().db.begin() as conn:
        total = (
            await conn.execute(sa.select(sa.func.count()).select_from(error_logs).where(where))
        ).scalar_one()
        rows = (
            await conn.execute(
                sa.select(error_logs)
                .where(where)
                .order_by(error_logs.c.created_at.desc(), error_logs.c.id)
                .limit(params.page_size)
                .offset((params.page_no - 1) * params.page_size)
            )
        ).all()
        if params.mark_read and rows:
            await conn.execute(
                sa.update(error_logs)
                .where(error_logs.c.id.in_([row.id for row in rows]))
                .values(is_read=True)
            )
    logs = []
    for row in rows:
        entry = {
            "log_id": str(row.id),
            "created_at": row.created_at.timestamp(),
            "severity": str(row.severity),
            "source": row.source,
            "user": None if row.user is None else str(row.user),
            "is_read": bool(row.is_read),
            "message": row.message,
            "context_lang": row.context_lang,
            "context_env": row.context_env,
            "request_url": row.request_url,
            "request_status": row.request_status,
            "traceback": row.traceback,
        }
        if auth.is_admin:
            entry["is_cleared"] = bool(row.is_cleared)
        logs.append(entry)
    return json_response({"logs": logs, "count": int(total)})


@blueprint.route("/<log_id>/clear", methods=["POST"])
@auth_required
async def clear(log_id: str) -> Response:
    """``POST /logs/error/{log_id}/clear``."""
    try:
        target = uuid.UUID(log_id)
    except ValueError:
        raise InvalidValue("must be a UUID", value=log_id, field="log_id") from None
    async with current_ctx().db.begin() as conn:
        result = await conn.execute(
            sa.update(error_logs)
            .where(error_logs.c.id == target, _visible(current_auth()))
            .values(is_cleared=True)
        )
        if result.rowcount != 1:
            raise NotFound("no such error report visible to you")
    return json_response({"success": True})
