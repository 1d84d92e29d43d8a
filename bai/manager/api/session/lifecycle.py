"""The routes that create, look up, destroy, restart and rename sessions.

* ``POST /session`` and ``POST /session/_/create`` create a session from the
  body :mod:`~bai.manager.api.session.schema` describes.  The answer is 201
  ``{"sessionId", "sessionName", "sessId", "status", "statusInfo",
  "servicePorts", "created": true}`` for a new session, 200 with
  ``"created": false`` when ``reuseIfExists`` found an active session of the
  same name and image.  Unless ``enqueueOnly``, the answer waits until the
  session left the starting statuses, at most ``maxWaitSeconds`` (0: no
  limit); ``status`` is then ``RUNNING``, ``ERROR``, ``CANCELLED``... or
  ``TIMEOUT`` when the wait ran out first.
  The body's folders (``config.mounts``, ``config.mount_map``) and the
  owner's dot-folders are resolved first, as the owner
  (:func:`bai.manager.vfolders.mounts.resolve_mounts`), into the
  ``vfolder_mounts`` the registry stores and each kernel mounts.
* ``GET /session/_/match``, ``GET /session/:id`` and
  ``GET /session/:id/status-history`` read; ``DELETE``, ``PATCH`` and
  ``POST /session/:id/rename`` change the session, so they look it up
  fresh and drop it from the :class:`~bai.manager.api.session.lookup.SessionCache`.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import msgspec
import sqlalchemy as sa
from quart import Response

from bai.common.types import ACTIVE_STATUSES, STARTING_STATUSES, SessionTypes
from bai.manager.api.auth import auth_required, current_auth, resolve_owner
from bai.manager.api.helpers import (
    current_ctx,
    json_response,
    no_content,
    read_json,
    read_params,
    read_query,
)
from bai.manager.api.session.lookup import find_session, session_cache, translated_errors
from bai.manager.api.session.schema import CreateBody, session_request
from bai.manager.api.session.views import creation_json, session_json
from bai.manager.errors import AgentNotFound
from bai.manager.models.base import utcnow
from bai.manager.models.resource import agents
from bai.manager.models.session import session_dependencies, sessions
from bai.manager.sessions import graph
from bai.manager.vfolders.mounts import resolve_mounts

__all__ = [
    "create",
    "create_session",
    "destroy",
    "get_info",
    "match",
    "rename",
    "restart",
    "status_history",
]


@auth_required
async def create() -> Response:
    """``POST /session``: create a session or reuse one (module docs)."""
    return await create_session(await read_json(CreateBody))


async def create_session(body: CreateBody) -> Response:
    """The creation of ``POST /session`` for *body* (module docs)."""
    auth = await resolve_owner(current_auth(), body.owner_access_key)
    ctx = current_ctx()
    registry = ctx.registry
    requested = session_request(body, auth, utcnow())
    # Folders are looked up here, as the owner, for the registry (below the API) to store.
    resolved = await resolve_mounts(ctx, auth, requested.mounts, requested.mount_map)
    requested = dataclasses.replace(requested, vfolder_mounts=resolved)
    with translated_errors():
        result = await registry.enqueue_session(auth.owner.access_key, requested)
    info = result.session
    if not result.created:
        return json_response(creation_json(info, info.status.value, False))
    if body.enqueue_only:
        return json_response(creation_json(info, info.status.value, True), status=201)
    timeout = float(body.max_wait_seconds) if body.max_wait_seconds else None
    info = await registry.wait_for_start(info.id, timeout)
    status = "TIMEOUT" if info.status in STARTING_STATUSES else info.status.value
    return json_response(creation_json(info, status, True), status=201)


class _MatchQuery(msgspec.Struct, kw_only=True):
    id: str


@auth_required
async def match() -> Response:
    """``GET /session/_/match?id=``: the caller's active sessions starting with ``id``."""
    params = read_query(_MatchQuery)
    auth = current_auth()
    with translated_errors():
        found = await current_ctx().registry.match_sessions(auth.owner.access_key, params.id)
    return json_response({"matches": [info.match_json() for info in found]})


@auth_required
async def get_info(session_name: str) -> Response:
    """``GET /session/:id``: :func:`session_json` of the session (live statistics while
    it runs)."""
    info = await find_session(session_name, current_auth())
    live = current_ctx().livestats.kernel(info.main_kernel.id)
    return json_response(session_json(info, live_stat=live))


@auth_required
async def status_history(session_name: str) -> Response:
    """``GET /session/:id/status-history``: ``{"result": {status: timestamp}}``."""
    info = await find_session(session_name, current_auth(), fresh=True)
    history: dict[str, Any] = {}
    for entry in info.status_history:
        status = entry.get("status")
        if isinstance(status, str):
            history[status] = entry.get("timestamp")
    return json_response({"result": history})


@auth_required
async def dependency_graph(session_name: str) -> Response:
    """``GET /session/:id/dependency-graph``: the sessions it depends on, as a tree
    (:mod:`bai.manager.sessions.graph`)."""
    info = await find_session(session_name, current_auth())
    return json_response(await graph.dependency_graph(current_ctx().db, info.id))


@auth_required
async def direct_access_info(session_name: str) -> Response:
    """``GET /session/:id/direct-access-info``: where to reach a system session's sshd
    directly (``{}`` for other sessions, as in the original)."""
    info = await find_session(session_name, current_auth())
    main = info.main_kernel
    if info.session_type is not SessionTypes.SYSTEM:
        return json_response({})
    ports: list[Any] = []
    for service in main.service_ports:
        if service.get("name") == "sshd":
            ports = list(service.get("host_ports") or [])
    return json_response(
        {"kernel_role": "SYSTEM", "public_host": main.kernel_host, "sshd_ports": ports}
    )


@auth_required
async def abusing_report(session_name: str) -> Response:
    """``GET /session/:id/abusing-report``: what an abuse detector found; bai runs none,
    so the report is empty (``{}``, the original's answer without one)."""
    await find_session(session_name, current_auth())
    return json_response({})


class _SyncAgentBody(msgspec.Struct, kw_only=True):
    agent: str


@auth_required
async def sync_agent_registry() -> Response:
    """``POST /session/_/sync-agent-registry``: reconcile an agent's kernels with the
    database at its next heartbeat; 404 for an agent never registered."""
    params = await read_json(_SyncAgentBody)
    ctx = current_ctx()
    async with ctx.db.begin_readonly() as conn:
        known = (
            await conn.execute(sa.select(agents.c.id).where(agents.c.id == params.agent))
        ).first()
    if known is None:
        raise AgentNotFound(f"no agent {params.agent!r} is registered")
    ctx.agents.resync(params.agent)
    return json_response({})


class _DestroyQuery(msgspec.Struct, kw_only=True):
    forced: bool = False
    recursive: bool = False


async def _dependents(session_id: uuid.UUID) -> list[uuid.UUID]:
    """Active sessions that depend on *session_id*, directly or not (deepest first)."""
    db = current_ctx().db
    found: list[uuid.UUID] = []
    frontier = [session_id]
    active = [s.value for s in ACTIVE_STATUSES]
    while frontier:
        rows = await db.fetch(
            sa.select(session_dependencies.c.session_id)
            .join(sessions, sessions.c.id == session_dependencies.c.session_id)
            .where(
                session_dependencies.c.depends_on.in_(frontier),
                sessions.c.status.in_(active),
            )
        )
        frontier = [row.session_id for row in rows if row.session_id not in found]
        found.extend(frontier)
    return found[::-1]


@auth_required
async def destroy(session_name: str) -> Response:
    """``DELETE /session/:id?forced=&recursive=``: ``{"stats": last stats or null}``."""
    params = read_query(_DestroyQuery)
    info = await find_session(session_name, current_auth(), fresh=True)
    registry = current_ctx().registry
    cache = session_cache()
    with translated_errors():
        if params.recursive:
            for dependent in await _dependents(info.id):
                cache.forget(dependent)
                await registry.destroy_session(dependent, forced=params.forced)
        cache.forget(info.id)
        result = await registry.destroy_session(info, forced=params.forced)
    return json_response({"stats": result.stats})


@auth_required
async def restart(session_name: str) -> Response:
    """``PATCH /session/:id``: restart the session's kernels (204)."""
    info = await find_session(session_name, current_auth(), fresh=True)
    session_cache().forget(info.id)
    with translated_errors():
        await current_ctx().registry.restart_session(info)
    return no_content()


class _RenameParams(msgspec.Struct, kw_only=True):
    name: str


@auth_required
async def rename(session_name: str) -> Response:
    """``POST /session/:id/rename?name=``: give the session a new name (204)."""
    params = await read_params(_RenameParams)
    info = await find_session(session_name, current_auth(), fresh=True)
    session_cache().forget(info.id)
    with translated_errors():
        await current_ctx().registry.rename_session(info, params.name)
    return no_content()
