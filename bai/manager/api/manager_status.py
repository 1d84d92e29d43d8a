"""``/manager/status`` and ``/manager/announcement``: maintenance freeze and the notice board.

The manager's status (``running`` or ``frozen``) and the announcement live in
the shared configuration (keys :data:`STATUS_KEY`, :data:`ANNOUNCEMENT_KEY`),
so every manager sharing the database sees the same ones.

* ``GET /manager/status`` (anyone): ``{"nodes": [...], "status",
  "active_sessions"}`` as the original manager answers; ``active_sessions``
  counts the sessions holding resources now.
* ``PUT /manager/status`` (superadmin) ``{"status", "force_kill"}``:
  ``frozen`` freezes, ``running`` unfreezes (204).  With ``force_kill`` every
  live session is destroyed by force first, then the status is written.
* While frozen, the routes of :data:`REFUSED_WHILE_FROZEN` (those the
  original manager allows only when running: creating, renaming and
  changing sessions' and folders' standing, ``/acl``) answer 503
  ``server-frozen``; everything else, running sessions' work included,
  goes on, so users can finish what they do during maintenance.  The app's
  request gate calls :meth:`StatusCache.refuse_if_frozen`; each manager
  rereads the status at most every :data:`STATUS_TTL` seconds, and the
  manager that changes it knows at once.
* ``GET /manager/announcement`` (anyone): ``{"enabled", "message"}``;
  ``POST /manager/announcement`` (superadmin) ``{"enabled", "message"}``:
  enabling needs a non-empty ``message``; disabling deletes it (204).
"""

from __future__ import annotations

import enum
import logging
import socket
from typing import Annotated, Final

import msgspec
import sqlalchemy as sa
import trio
from quart import Blueprint, Response, current_app

import bai
from bai.common.errors import InvalidValue
from bai.common.types import RESOURCE_OCCUPYING_STATUSES, TERMINAL_STATUSES
from bai.manager.api.auth import public, superadmin_required
from bai.manager.api.errors import ServiceUnavailable
from bai.manager.api.helpers import current_ctx, json_response, no_content, read_json
from bai.manager.api.version import current_api_version
from bai.manager.db import Database
from bai.manager.models.session import kernels, sessions
from bai.manager.models.shared_config import delete_config, get_config, put_config

__all__ = [
    "ANNOUNCEMENT_KEY",
    "REFUSED_WHILE_FROZEN",
    "STATUS_KEY",
    "STATUS_TTL",
    "ManagerStatus",
    "ServerFrozen",
    "StatusCache",
    "blueprint",
]

log = logging.getLogger(__name__)

#: The shared-config key holding the manager status (absent: running).
STATUS_KEY: Final = "manager/status"
#: The shared-config key holding the announcement (absent: none).
ANNOUNCEMENT_KEY: Final = "manager/announcement"
#: Seconds a manager trusts the status it read.
STATUS_TTL: Final = 1.0
#: Sessions destroyed at once by a forced freeze.
_KILL_CONCURRENCY: Final = 8

#: ``(method, route rule)`` pairs refused while the manager is frozen.
REFUSED_WHILE_FROZEN: Final = frozenset(
    {
        ("GET", "/acl"),
        ("POST", "/session"),
        ("POST", "/session/_/create"),
        ("POST", "/session/_/create-from-template"),
        ("POST", "/session/_/create-cluster"),
        ("POST", "/session/<session_name>/rename"),
        ("POST", "/folders"),
        ("DELETE", "/folders"),
        ("DELETE", "/folders/<name>"),
        ("POST", "/folders/_/restore"),
        ("POST", "/folders/_/purge"),
        ("POST", "/folders/_/shared"),
        ("POST", "/folders/_/change-ownership"),
        ("POST", "/folders/_/change_ownership"),
        ("POST", "/folders/_/quota"),
        ("POST", "/folders/invitations/update/<inv_id>"),
        ("POST", "/folders/invitations/accept"),
        ("DELETE", "/folders/invitations/delete"),
        ("POST", "/folders/<name>/rename"),
        ("POST", "/folders/<name>/update-options"),
        ("POST", "/folders/<name>/update_options"),
        ("POST", "/folders/<name>/clone"),
        ("POST", "/folders/<name>/invite"),
        ("POST", "/folders/<name>/leave"),
        ("POST", "/folders/<name>/share"),
        ("DELETE", "/folders/<name>/unshare"),
    }
)


class ManagerStatus(enum.StrEnum):
    """Whether the manager serves everything or is frozen for maintenance."""

    RUNNING = "running"
    FROZEN = "frozen"


class ServerFrozen(ServiceUnavailable):
    """The manager is frozen for maintenance (503)."""

    error_type = "server-frozen"
    error_title = "The server is frozen due to maintenance. Please try again later."


async def read_status(db: Database) -> ManagerStatus:
    """The status in the shared configuration (a value other than ``frozen`` is running)."""
    async with db.begin_readonly() as conn:
        value = await get_config(conn, STATUS_KEY)
    return ManagerStatus.FROZEN if value == ManagerStatus.FROZEN else ManagerStatus.RUNNING


class StatusCache:
    """The status as one manager's request gate sees it, reread every *ttl* seconds."""

    def __init__(self, ttl: float = STATUS_TTL) -> None:
        self.ttl = ttl
        self._status = ManagerStatus.RUNNING
        self._until = float("-inf")

    def set(self, status: ManagerStatus) -> None:
        """Note *status* as just written by this manager."""
        self._status = status
        self._until = trio.current_time() + self.ttl

    async def get(self, db: Database) -> ManagerStatus:
        if trio.current_time() >= self._until:
            self.set(await read_status(db))
        return self._status

    async def refuse_if_frozen(self, db: Database, method: str, rule: str) -> None:
        """Raise :class:`ServerFrozen` when frozen and ``(method, rule)`` is refused then."""
        if (method, rule) in REFUSED_WHILE_FROZEN and await self.get(db) is ManagerStatus.FROZEN:
            raise ServerFrozen(
                "the manager is frozen for maintenance; it takes no new sessions or folder "
                "changes until an administrator unfreezes it"
            )


def status_cache() -> StatusCache:
    """The :class:`StatusCache` of the app serving the request."""
    cache = current_app.extensions["bai_manager_status"]
    assert isinstance(cache, StatusCache)
    return cache


blueprint = Blueprint("manager_status", __name__, url_prefix="/manager")


async def _active_sessions(db: Database) -> int:
    occupying = sorted(RESOURCE_OCCUPYING_STATUSES)
    held = sa.select(kernels.c.session_id).where(kernels.c.status.in_(occupying))
    count = await db.fetch(
        sa.select(sa.func.count()).select_from(sessions).where(sessions.c.id.in_(held))
    )
    return int(count.scalar_one())


@blueprint.route("/status", methods=["GET"])
@public
async def get_status() -> Response:
    """``GET /manager/status``: the status, active sessions and this node."""
    ctx = current_ctx()
    status = await read_status(ctx.db)
    status_cache().set(status)
    active = await _active_sessions(ctx.db)
    manager = ctx.config.manager
    node = {
        "id": manager.id or socket.gethostname(),
        "num_proc": 1,
        "service_addr": str(manager.service_addr),
        "heartbeat_timeout": float(manager.heartbeat_timeout),
        "ssl_enabled": manager.ssl_enabled,
        "active_sessions": active,
        "status": str(status),
        "version": bai.__version__,
        "api_version": str(current_api_version()),
    }
    return json_response({"nodes": [node], "status": str(status), "active_sessions": active})


class _StatusUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: ManagerStatus
    force_kill: bool = False


async def _kill_all_sessions() -> None:
    ctx = current_ctx()
    rows = await ctx.db.fetch(
        sa.select(sessions.c.id).where(sessions.c.status.not_in(sorted(TERMINAL_STATUSES)))
    )
    limiter = trio.CapacityLimiter(_KILL_CONCURRENCY)

    async def kill(session_id: object) -> None:
        async with limiter:
            try:
                await ctx.registry.destroy_session(
                    session_id,  # type: ignore[arg-type]
                    forced=True,
                    reason="force-terminated",
                )
            except Exception:  # one stuck session must not keep the others alive
                log.exception("a forced freeze could not destroy session %s", session_id)

    async with trio.open_nursery() as nursery:
        for row in rows:
            nursery.start_soon(kill, row.id)


@blueprint.route("/status", methods=["PUT"])
@superadmin_required
async def update_status() -> Response:
    """``PUT /manager/status``: freeze (optionally killing every session) or unfreeze."""
    params = await read_json(_StatusUpdate)
    if params.force_kill:
        await _kill_all_sessions()
    async with current_ctx().db.begin() as conn:
        await put_config(conn, STATUS_KEY, str(params.status))
    status_cache().set(params.status)
    log.info("manager status set to %s (force_kill=%s)", params.status, params.force_kill)
    return no_content()


@blueprint.route("/announcement", methods=["GET"])
@public
async def get_announcement() -> Response:
    """``GET /manager/announcement``: ``{"enabled", "message"}``."""
    async with current_ctx().db.begin_readonly() as conn:
        message = await get_config(conn, ANNOUNCEMENT_KEY)
    if not isinstance(message, str) or not message:
        return json_response({"enabled": False, "message": ""})
    return json_response({"enabled": True, "message": message})


#: The longest announcement kept (it is shown to every user of the console).
MAX_ANNOUNCEMENT: Final = 64 * 1024


class _AnnouncementUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    message: Annotated[str, msgspec.Meta(max_length=MAX_ANNOUNCEMENT)] | None = None


@blueprint.route("/announcement", methods=["POST"])
@superadmin_required
async def update_announcement() -> Response:
    """``POST /manager/announcement``: post (``enabled`` with a ``message``) or delete it."""
    params = await read_json(_AnnouncementUpdate)
    async with current_ctx().db.begin() as conn:
        if params.enabled:
            if not params.message or not params.message.strip():
                raise InvalidValue(
                    "an enabled announcement needs a non-empty message",
                    value=params.message,
                    field="message",
                )
            await put_config(conn, ANNOUNCEMENT_KEY, params.message)
        else:
            await delete_config(conn, ANNOUNCEMENT_KEY)
    return no_content()
