"""``/session``: create, inspect, run code in, move files of, and destroy compute sessions.

Every route is a thin layer over :class:`~bai.manager.sessions.registry.SessionRegistry`:
it parses the spec's request (body or query string), scopes the session to
the caller's keypair (or, for admins, to ``owner_access_key``), calls the
registry and shapes the spec's answer.

Routes (``:id`` is a session name, a full UUID or an unambiguous id prefix;
terminated sessions are found too, so that acting on one says that it is
not running instead of that it does not exist; a RUNNING session's record
may be up to :data:`SESSION_CACHE_TTL` seconds old, see :class:`SessionCache`):

* ``POST /session`` and ``POST /session/_/create`` -- create (below);
* ``GET /session/_/match?id=`` -- ``{"matches": [{"id", "name", "status"}]}``
  of the caller's active sessions whose name or id starts with ``id``;
* ``GET /session/_/logs?session_name=`` and ``GET /session/:id/logs`` --
  ``{"result": {"logs": text}}``;
* ``GET /session/:id`` -- what the manager knows about the session
  (:func:`session_json`);
* ``DELETE /session/:id?forced=&recursive=`` -- destroy (``recursive`` first
  destroys the active sessions that depend on it); ``{"stats": ...}``;
* ``PATCH /session/:id`` -- restart (204);
* ``POST /session/:id`` -- the execute long-poll: ``{"mode", "code",
  "runId", "options"}`` -> ``{"result": Execution Result Object}``;
* ``POST /session/:id/rename?name=``, ``/interrupt`` (204), ``/complete``
  (``{"result": [candidates]}``);
* ``GET /session/:id/status-history`` -- ``{"result": {status: timestamp}}``
  (the latest time the session entered each status);
* ``POST /session/:id/upload`` -- ``multipart/form-data``, each part a file
  whose ``filename`` is its path under ``/home/work``: at most
  :data:`~bai.manager.sessions.relay.MAX_UPLOAD_FILES` files of
  :data:`~bai.manager.sessions.relay.MAX_UPLOAD_FILE_SIZE` bytes, else 400 and
  nothing is written (204 on success);
* ``GET /session/:id/download`` (``files``, query or JSON body, at most 5) --
  ``multipart/mixed``, one ``application/x-tar`` part per path;
  ``GET /session/:id/download_single?file=`` -- the file's bytes;
  ``GET /session/:id/files?path=`` -- ``{"files": JSON text, "folder_path",
  "errors"}``.  Only regular files and folders are read or written: a path
  naming (or passing through) a symbolic link, FIFO, socket or device the
  session made is refused with 400, as is a path leaving ``/home/work`` or
  with a name longer than 255 bytes; the problem names the parameter
  (``files``, ``file`` or ``path``) and the path.

Creating a session
==================

The body follows the spec and both generations of clients: ``image`` (or
the legacy ``lang``), ``name`` (or ``clientSessionToken``), ``type``,
``group``, ``domain``, ``arch``/``architecture``, ``cluster_size``/
``clusterSize`` (or ``config.clusterSize``), ``cluster_mode``/``clusterMode``,
``config`` (``resources``, ``environ``, ``mounts``, ``mount_map``,
``scalingGroup``, ``agentList``, ``resource_opts``, ``preopen_ports``),
``tag``, ``enqueueOnly``, ``maxWaitSeconds``, ``reuseIfExists`` (default
true), ``starts_at`` (ISO 8601, naive meaning UTC, or a delay such as
``"10m"``), ``startupCommand``, ``bootstrap_script``, ``dependencies``,
``callback_url``, ``owner_access_key``, ``priority``, ``batch_timeout``.

* Only admins may set ``priority`` (other than 0) or designate an agent
  (``config.agentList``, one agent for all kernels): 403 otherwise.
* ``config.mounts`` must name existing virtual folders; this manager has no
  storage yet, so naming any is 404 ``vfolder-not-found``.  ``resource_opts``
  and ``preopen_ports`` are refused unless empty (not supported yet).
* The answer is 201 ``{"sessionId", "sessionName", "sessId", "status",
  "statusInfo", "servicePorts", "created": true}`` for a new session, 200 with
  ``"created": false`` when ``reuseIfExists`` found an active session of the
  same name and image.  Unless ``enqueueOnly``, the answer waits until the
  session left the starting statuses, at most ``maxWaitSeconds`` (0: no
  limit); ``status`` is then ``RUNNING``, ``ERROR``, ``CANCELLED``... or
  ``TIMEOUT`` when the wait ran out first.
* Bad input is refused before anything is written, with the field named as
  the client sent it (``config.resources.cpu``, ``dependencies.0``).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeVar

import msgspec
import sqlalchemy as sa
import trio
from quart import Blueprint, Response, current_app, request

from bai.common.config import parse_duration
from bai.common.errors import InvalidValue
from bai.common.types import SessionStatus
from bai.manager.api.auth import AuthContext, auth_required, current_auth, resolve_owner
from bai.manager.api.errors import ApiError, Forbidden
from bai.manager.api.helpers import (
    InvalidParameter,
    current_ctx,
    json_response,
    no_content,
    read_json,
    read_params,
    read_query,
)
from bai.manager.models.base import utcnow
from bai.manager.models.session import session_dependencies, sessions
from bai.manager.sessions.model import (
    ACTIVE_STATUSES,
    STARTING_STATUSES,
    SessionInfo,
    SessionRequest,
)
from bai.manager.sessions.relay import MAX_UPLOAD_FILE_SIZE, MAX_UPLOAD_FILES

__all__ = [
    "SESSION_CACHE_TTL",
    "SessionCache",
    "VFolderNotFound",
    "batch_options",
    "blueprint",
    "completion_options",
    "find_session",
    "session_cache",
    "session_json",
    "translated_errors",
]

T = TypeVar("T")

blueprint = Blueprint("session", __name__, url_prefix="/session")

#: Registry field names -> the names the request used (longest prefix first).
_FIELD_NAMES: Final = (
    ("resources", "config.resources"),
    ("environ", "config.environ"),
    ("mounts", "config.mounts"),
    ("scaling_group", "config.scalingGroup"),
    ("designated_agent", "config.agentList"),
    ("startup_command", "startupCommand"),
)
_INDEX_RE: Final = re.compile(r"\[(\d+)\]")
#: The longest wait ``maxWaitSeconds`` may ask for (a day).
MAX_WAIT_SECONDS: Final = 86400
#: Seconds a RUNNING session's record is reused (:class:`SessionCache`).
SESSION_CACHE_TTL: Final = 1.0
_CACHE_KEY: Final = "bai.session_cache"


# --------------------------------------------------------------------- errors


class VFolderNotFound(ApiError):
    """A virtual folder to mount does not exist (404)."""

    http_status = 404
    error_type = "vfolder-not-found"
    error_title = "Virtual folder not found."


def _api_field(name: str | None) -> str | None:
    if name is None:
        return None
    name = _INDEX_RE.sub(r".\1", name)
    for registry_name, api_name in _FIELD_NAMES:
        if name == registry_name or name.startswith(registry_name + "."):
            return api_name + name[len(registry_name) :]
    return name


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Name the fields of registry errors as the request spelled them."""
    try:
        yield
    except InvalidValue as exc:
        renamed = _api_field(exc.field)
        if renamed == exc.field or type(exc).__init__ is not InvalidValue.__init__:
            raise
        raise type(exc)(exc.problem, value=exc.value, field=renamed) from None


class SessionCache:
    """RUNNING sessions recently read by their full id or exact name, reused for *ttl* seconds.

    The spec lets session information lag "a few seconds"; this keeps the hot
    routes (``GET /session/:id``, execute, files) off the database while a
    session runs.  Only RUNNING sessions are kept, so a session that starts
    is seen at once; one that stops is seen within *ttl* (its kernel calls
    fail with 409 meanwhile, as they would have).  This manager's own
    destroy, restart and rename routes :meth:`forget` the session at once.
    At most *max_entries* records, the oldest dropped first.
    """

    def __init__(self, ttl: float = SESSION_CACHE_TTL, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, SessionInfo]] = {}

    def get(self, owner: str, ref: str) -> SessionInfo | None:
        """The record of *ref* for *owner*, if one younger than ``ttl`` is kept."""
        found = self._entries.get((owner, ref))
        if found is None:
            return None
        if found[0] <= trio.current_time():
            del self._entries[(owner, ref)]
            return None
        return found[1]

    def put(self, owner: str, ref: str, info: SessionInfo) -> None:
        """Keep *info* under *ref* when it is RUNNING and *ref* is its id or name."""
        if info.status is not SessionStatus.RUNNING or ref not in (str(info.id), info.name):
            return
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[(owner, ref)] = (trio.current_time() + self.ttl, info)

    def forget(self, session_id: uuid.UUID) -> None:
        """Drop every record of the session."""
        stale = [key for key, (_, info) in self._entries.items() if info.id == session_id]
        for key in stale:
            del self._entries[key]


def session_cache() -> SessionCache:
    """The :class:`SessionCache` of the app serving the request."""
    cache = current_app.extensions.get(_CACHE_KEY)
    if not isinstance(cache, SessionCache):
        cache = current_app.extensions[_CACHE_KEY] = SessionCache()
    return cache


async def find_session(ref: str, auth: AuthContext, *, fresh: bool = False) -> SessionInfo:
    """The session *ref* names among the sessions of ``auth.owner`` (ended ones included).

    A RUNNING session may come from the :class:`SessionCache` unless *fresh*.
    """
    owner = auth.owner.access_key
    cache = session_cache()
    if not fresh:
        cached = cache.get(owner, ref)
        if cached is not None:
            return cached
    with translated_errors():
        info = await current_ctx().registry.get_session(
            ref, access_key=owner, include_terminated=True
        )
    cache.put(owner, ref, info)
    return info


# ----------------------------------------------------------------- answers


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _kernel_json(info: SessionInfo) -> list[dict[str, Any]]:
    return [
        {
            "id": k.id,
            "clusterRole": k.cluster_role,
            "clusterIdx": k.cluster_idx,
            "clusterHostname": k.cluster_hostname,
            "agent": k.agent,
            "status": k.status,
            "statusInfo": k.status_info,
            "containerId": k.container_id,
            "exitCode": k.exit_code,
            "requestedSlots": k.requested_slots,
            "occupiedSlots": k.occupied_slots,
            "servicePorts": list(k.service_ports),
        }
        for k in info.kernels
    ]


def _cpu_used_msec(stat: Mapping[str, Any] | None) -> int:
    measure = stat.get("cpu_used") if stat else None
    current = measure.get("current") if isinstance(measure, Mapping) else None
    try:
        return int(Decimal(str(current))) if current is not None else 0
    except ArithmeticError:
        return 0


def session_json(info: SessionInfo, *, now: datetime | None = None) -> dict[str, Any]:
    """``GET /session/:id``: the spec's keys (``lang``, ``age`` in ms, ``memoryLimit``
    in KiB, ``numQueriesExecuted``, ``cpuCreditUsed`` in ms) and everything else known.

    UUIDs and string enums are left for :func:`json_response` to encode (as
    their canonical text and their value), which it does faster than ``str``.
    """
    main = info.main_kernel
    end = info.terminated_at or now or utcnow()
    occupied = main.occupied_slots
    for kernel in info.kernels[1:]:
        occupied = occupied + kernel.occupied_slots
    memory = main.requested_slots.get("mem")
    return {
        "sessionId": info.id,
        "sessionName": info.name,
        "ownerAccessKey": info.access_key,
        "domainName": info.domain_name,
        "groupId": info.group_id,
        "userId": info.user_uuid,
        "type": info.session_type,
        "lang": info.image,
        "image": info.image,
        "architecture": info.architecture,
        "tag": info.tag,
        "clusterMode": info.cluster_mode,
        "clusterSize": info.cluster_size,
        "scalingGroup": info.scaling_group,
        "status": info.status,
        "statusInfo": info.status_info,
        "statusData": info.status_data,
        "statusChanged": _iso(info.status_changed),
        "result": info.result,
        "creationTime": _iso(info.created_at),
        "terminationTime": _iso(info.terminated_at),
        "startsAt": _iso(info.starts_at),
        "age": max(0, int((end - info.created_at).total_seconds() * 1000)),
        "memoryLimit": int(memory) // 1024 if memory is not None else None,
        "numQueriesExecuted": info.num_queries,
        "cpuCreditUsed": _cpu_used_msec(main.last_stat),
        "requestedSlots": info.requested_slots,
        "occupyingSlots": info.occupying_slots,
        "occupiedSlots": occupied,
        "environ": dict(info.environ),
        "startupCommand": info.startup_command,
        "servicePorts": list(info.service_ports),
        "lastStat": main.last_stat,
        "kernels": _kernel_json(info),
    }


# ------------------------------------------------------------------ create


class _CreationConfig(msgspec.Struct, kw_only=True):
    # Values are checked by the registry, whose errors name the slot or variable.
    resources: dict[str, Any] | None = None
    environ: dict[str, Any] | None = None
    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = None
    scaling_group_camel: str | None = msgspec.field(default=None, name="scalingGroup")
    scaling_group: str | None = None
    agent_list: list[str] | None = msgspec.field(default=None, name="agentList")
    cluster_size: int | None = msgspec.field(default=None, name="clusterSize")
    resource_opts: dict[str, Any] | None = None
    preopen_ports: list[int] | None = None


class _CreateBody(msgspec.Struct, kw_only=True):
    image: str | None = None
    lang: str | None = None
    name: str | None = None
    client_session_token: str | None = msgspec.field(default=None, name="clientSessionToken")
    type: str = "interactive"
    arch: str | None = None
    architecture: str | None = None
    group: str | None = None
    domain: str | None = None
    cluster_size: int | None = None
    cluster_size_camel: int | None = msgspec.field(default=None, name="clusterSize")
    cluster_mode: str | None = None
    cluster_mode_camel: str | None = msgspec.field(default=None, name="clusterMode")
    config: _CreationConfig | None = None
    tag: str | None = None
    enqueue_only: bool = msgspec.field(default=False, name="enqueueOnly")
    max_wait_seconds: int = msgspec.field(default=0, name="maxWaitSeconds")
    starts_at: str | None = None
    reuse_if_exists: bool = msgspec.field(default=True, name="reuseIfExists")
    startup_command: str | None = msgspec.field(default=None, name="startupCommand")
    bootstrap_script: str | None = None
    dependencies: list[str] | None = None
    callback_url: str | None = None
    owner_access_key: str | None = None
    priority: int | None = None
    batch_timeout: float | None = None


def _one_of(values: Sequence[tuple[str, Any]]) -> Any:
    """The value given under one or more alias names; 400 when the aliases disagree."""
    given = [(name, value) for name, value in values if value is not None]
    if not given:
        return None
    first_name, first = given[0]
    for name, value in given[1:]:
        if value != first:
            raise InvalidParameter(
                f"disagrees with {first_name} ({first!r})", field=name, value=value
            )
    return first


def _parse_starts_at(text: str | None, now: datetime) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now + timedelta(seconds=float(parse_duration(text)))
        except InvalidValue:
            raise InvalidParameter(
                "must be an ISO 8601 time or a delay such as '10m' or '1h30m'",
                field="starts_at",
                value=text,
            ) from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _designated_agent(agent_list: list[str] | None) -> str | None:
    if not agent_list:
        return None
    distinct = set(agent_list)
    if len(distinct) != 1:
        raise InvalidParameter(
            "all kernels of a session can only be designated to one agent",
            field="config.agentList",
            value=agent_list,
        )
    return agent_list[0]


def _check_mounts(config: _CreationConfig) -> list[str]:
    mounts = config.mounts or []
    for index, name in enumerate(mounts):
        if not name or len(name) > 64 or "/" in name:
            raise InvalidParameter(
                "must be a virtual folder name", field=f"config.mounts.{index}", value=name
            )
    for folder, path in (config.mount_map or {}).items():
        if folder not in mounts:
            raise InvalidParameter(
                "maps a folder that config.mounts does not name",
                field=f"config.mount_map.{folder}",
                value=folder,
            )
        if not path or ".." in path.split("/"):
            raise InvalidParameter(
                "must be a path without '..'", field=f"config.mount_map.{folder}", value=path
            )
    if mounts:
        # Virtual folders arrive with the storage proxy; until then none exists.
        raise VFolderNotFound(f"no virtual folder is called {mounts[0]!r}")
    return mounts


def _session_request(body: _CreateBody, auth: AuthContext, now: datetime) -> SessionRequest:
    config = body.config or _CreationConfig()
    image = _one_of([("image", body.image), ("lang", body.lang)])
    if image is None:
        raise InvalidParameter("is required", field="image")
    name = _one_of([("name", body.name), ("clientSessionToken", body.client_session_token)])
    cluster_size = _one_of(
        [
            ("cluster_size", body.cluster_size),
            ("clusterSize", body.cluster_size_camel),
            ("config.clusterSize", config.cluster_size),
        ]
    )
    cluster_mode = _one_of(
        [("cluster_mode", body.cluster_mode), ("clusterMode", body.cluster_mode_camel)]
    )
    architecture = _one_of([("arch", body.arch), ("architecture", body.architecture)])
    scaling_group = _one_of(
        [
            ("config.scalingGroup", config.scaling_group_camel),
            ("config.scaling_group", config.scaling_group),
        ]
    )
    if body.priority not in (None, 0) and not auth.is_admin:
        raise Forbidden("only admins may set the priority of a session")
    designated = _designated_agent(config.agent_list)
    if designated is not None and not auth.is_admin:
        raise Forbidden("only admins may designate agents")
    if config.resource_opts:
        raise InvalidParameter(
            "resource options are not supported", field="config.resource_opts", value=None
        )
    if config.preopen_ports:
        raise InvalidParameter(
            "pre-opened ports are not supported", field="config.preopen_ports", value=None
        )
    if not 0 <= body.max_wait_seconds <= MAX_WAIT_SECONDS:
        raise InvalidParameter(
            f"must be between 0 and {MAX_WAIT_SECONDS}",
            field="maxWaitSeconds",
            value=body.max_wait_seconds,
        )
    mounts = _check_mounts(config)
    return SessionRequest(
        image=image,
        name=name,
        session_type=body.type,  # type: ignore[arg-type]  # the registry checks the value
        architecture=architecture,
        group=body.group or "default",
        domain=body.domain,
        scaling_group=scaling_group,
        cluster_size=1 if cluster_size is None else cluster_size,
        cluster_mode=cluster_mode or "single-node",  # type: ignore[arg-type]
        resources=config.resources,
        environ=config.environ or {},
        mounts=mounts,
        startup_command=body.startup_command,
        bootstrap_script=body.bootstrap_script,
        starts_at=_parse_starts_at(body.starts_at, now),
        batch_timeout=body.batch_timeout,
        dependencies=body.dependencies or (),
        tag=body.tag,
        priority=body.priority or 0,
        callback_url=body.callback_url,
        designated_agent=designated,
        reuse_if_exists=body.reuse_if_exists,
    )


def _creation_json(info: SessionInfo, status: str, created: bool) -> dict[str, Any]:
    return {
        "sessionId": str(info.id),
        "sessionName": info.name,
        "sessId": info.name,
        "status": status,
        "statusInfo": info.status_info,
        "servicePorts": list(info.service_ports),
        "created": created,
    }


@blueprint.route("", methods=["POST"])
@blueprint.route("/_/create", methods=["POST"])
@auth_required
async def create() -> Response:
    """``POST /session``: create a session or reuse one (module docs)."""
    body = await read_json(_CreateBody)
    auth = await resolve_owner(current_auth(), body.owner_access_key)
    registry = current_ctx().registry
    session_request = _session_request(body, auth, utcnow())
    with translated_errors():
        result = await registry.enqueue_session(auth.owner.access_key, session_request)
    info = result.session
    if not result.created:
        return json_response(_creation_json(info, info.status.value, False))
    if body.enqueue_only:
        return json_response(_creation_json(info, info.status.value, True), status=201)
    timeout = float(body.max_wait_seconds) if body.max_wait_seconds else None
    info = await registry.wait_for_start(info.id, timeout)
    status = "TIMEOUT" if info.status in STARTING_STATUSES else info.status.value
    return json_response(_creation_json(info, status, True), status=201)


# ---------------------------------------------------------------- lookups


class _MatchQuery(msgspec.Struct, kw_only=True):
    id: str


@blueprint.route("/_/match", methods=["GET"])
@auth_required
async def match() -> Response:
    """``GET /session/_/match?id=``: the caller's active sessions starting with ``id``."""
    params = read_query(_MatchQuery)
    auth = current_auth()
    with translated_errors():
        found = await current_ctx().registry.match_sessions(auth.owner.access_key, params.id)
    return json_response({"matches": [info.match_json() for info in found]})


class _LogsQuery(msgspec.Struct, kw_only=True):
    session_name: str


async def _logs_of(ref: str) -> Response:
    info = await find_session(ref, current_auth())
    with translated_errors():
        logs = await current_ctx().registry.get_logs(info)
    return json_response({"result": {"logs": logs}})


@blueprint.route("/_/logs", methods=["GET"])
@auth_required
async def logs_by_query() -> Response:
    """``GET /session/_/logs?session_name=``: the main kernel's console log."""
    params = await read_params(_LogsQuery)
    return await _logs_of(params.session_name)


@blueprint.route("/<session_name>/logs", methods=["GET"])
@auth_required
async def logs(session_name: str) -> Response:
    """``GET /session/:id/logs``: the main kernel's console log."""
    return await _logs_of(session_name)


@blueprint.route("/<session_name>", methods=["GET"])
@auth_required
async def get_info(session_name: str) -> Response:
    """``GET /session/:id``: :func:`session_json` of the session."""
    info = await find_session(session_name, current_auth())
    return json_response(session_json(info))


@blueprint.route("/<session_name>/status-history", methods=["GET"])
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


# ------------------------------------------------------------- life cycle


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


@blueprint.route("/<session_name>", methods=["DELETE"])
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


@blueprint.route("/<session_name>", methods=["PATCH"])
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


@blueprint.route("/<session_name>/rename", methods=["POST"])
@auth_required
async def rename(session_name: str) -> Response:
    """``POST /session/:id/rename?name=``: give the session a new name (204)."""
    params = await read_params(_RenameParams)
    info = await find_session(session_name, current_auth(), fresh=True)
    session_cache().forget(info.id)
    with translated_errors():
        await current_ctx().registry.rename_session(info, params.name)
    return no_content()


# --------------------------------------------------------------- execution


class _ExecuteBody(msgspec.Struct, kw_only=True):
    mode: str
    code: str | None = None
    run_id: str | None = msgspec.field(default=None, name="runId")
    options: dict[str, Any] | None = None


class _BatchOptions(msgspec.Struct, kw_only=True):
    clean: str | None = None
    build: str | None = None
    exec: str | None = None
    build_log: bool = msgspec.field(default=False, name="buildLog")


def batch_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec's Batch Execution Query Object from *options*, checked (400 names the key)."""
    try:
        parsed = msgspec.convert(dict(options or {}), _BatchOptions)
    except msgspec.ValidationError as exc:
        raise InvalidParameter(f"is not a batch execution query: {exc}", field="options") from None
    return {"clean": parsed.clean, "build": parsed.build, "exec": parsed.exec}


@blueprint.route("/<session_name>", methods=["POST"])
@auth_required
async def execute(session_name: str) -> Response:
    """``POST /session/:id``: one call of the execute API (``{"result": ...}``)."""
    body = await read_json(_ExecuteBody)
    info = await find_session(session_name, current_auth())
    options: dict[str, Any] | None = body.options
    if body.mode == "batch":
        options = batch_options(body.options)
    elif body.mode == "complete":
        options = completion_options(_completion_struct(body.options))
    with translated_errors():
        result = await current_ctx().registry.execute(
            info, mode=body.mode, code=body.code or "", run_id=body.run_id, options=options
        )
    return json_response({"result": result})


@blueprint.route("/<session_name>/interrupt", methods=["POST"])
@auth_required
async def interrupt(session_name: str) -> Response:
    """``POST /session/:id/interrupt``: ask the running code to stop (204)."""
    info = await find_session(session_name, current_auth())
    with translated_errors():
        await current_ctx().registry.interrupt(info)
    return no_content()


class _CompletionOptions(msgspec.Struct, kw_only=True):
    post: str | None = None
    line: str | None = None
    row: int | None = None
    col: int | None = None


def _completion_struct(options: Mapping[str, Any] | None) -> _CompletionOptions | None:
    if options is None:
        return None
    try:
        return msgspec.convert(dict(options), _CompletionOptions)
    except msgspec.ValidationError as exc:
        raise InvalidParameter(f"is not a completion context: {exc}", field="options") from None


class _CompleteBody(msgspec.Struct, kw_only=True):
    code: str = ""
    options: _CompletionOptions | None = None


def completion_options(options: _CompletionOptions | None) -> dict[str, Any] | None:
    """The cursor context worth passing on: an empty ``line`` says nothing about the cursor,
    so then ``row`` and ``col`` are dropped too and the kernel completes the end of ``code``
    (clients send ``line=""``, ``row=0``, ``col=0`` when they know no better)."""
    if options is None:
        return None
    chosen: dict[str, Any] = {}
    if options.post:
        chosen["post"] = options.post
    if options.line:
        chosen.update(line=options.line, row=options.row, col=options.col)
    return {key: value for key, value in chosen.items() if value is not None} or None


@blueprint.route("/<session_name>/complete", methods=["POST"])
@auth_required
async def complete(session_name: str) -> Response:
    """``POST /session/:id/complete``: ``{"result": [candidates]}``."""
    body = await read_json(_CompleteBody)
    info = await find_session(session_name, current_auth())
    with translated_errors():
        found = await current_ctx().registry.complete(
            info, body.code, completion_options(body.options)
        )
    return json_response({"result": found})


# ------------------------------------------------------------------- files


@blueprint.route("/<session_name>/upload", methods=["POST"])
@auth_required
async def upload(session_name: str) -> Response:
    """``POST /session/:id/upload``: write the multipart body's files (204)."""
    if request.mimetype != "multipart/form-data":
        raise InvalidParameter(
            "uploads must be multipart/form-data", field="Content-Type", value=request.mimetype
        )
    info = await find_session(session_name, current_auth())
    form_files = await request.files
    parts = list(form_files.items(multi=True))
    if not parts:
        raise InvalidParameter("the upload holds no files", field="files")
    if len(parts) > MAX_UPLOAD_FILES:
        raise InvalidParameter(
            f"at most {MAX_UPLOAD_FILES} files may be uploaded at once",
            field="files",
            value=len(parts),
        )
    files: list[tuple[str, bytes]] = []
    for _, storage in parts:
        path = storage.filename or ""
        if not path:
            raise InvalidParameter("each uploaded file needs a filename", field="files")
        data = storage.stream.read(MAX_UPLOAD_FILE_SIZE + 1)
        if len(data) > MAX_UPLOAD_FILE_SIZE:
            raise InvalidParameter(
                f"a file may have at most {MAX_UPLOAD_FILE_SIZE} bytes", field=path, value=None
            )
        files.append((path, data))
    with translated_errors():
        await current_ctx().registry.upload_files(info, files)
    return no_content()


async def _query_or_body(model: type[T], key: str) -> T:
    """*model* from the query string when it names *key*, else from the JSON body
    (the official client sends the parameters of these ``GET`` routes as a body)."""
    return read_query(model) if key in request.args else await read_json(model)


class _FilesBody(msgspec.Struct, kw_only=True):
    files: list[str]


async def _download_paths() -> list[str]:
    """``files`` from the query string (repeated keys) or, failing that, the JSON body."""
    named = request.args.getlist("files")
    if named:
        return named
    return (await read_json(_FilesBody)).files


@blueprint.route("/<session_name>/download", methods=["GET"])
@auth_required
async def download(session_name: str) -> Response:
    """``GET /session/:id/download``: one ``application/x-tar`` part per path."""
    paths = await _download_paths()
    info = await find_session(session_name, current_auth())
    with translated_errors():
        archives = await current_ctx().registry.download_files(info, paths)
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for archive in archives:
        chunks += [
            f"--{boundary}\r\nContent-Type: application/x-tar\r\n"
            f"Content-Length: {len(archive)}\r\n\r\n".encode(),
            archive,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    response: Response = current_app.response_class(
        b"".join(chunks), status=200, content_type=f"multipart/mixed; boundary={boundary}"
    )
    return response


class _SingleFileParams(msgspec.Struct, kw_only=True):
    file: str


@blueprint.route("/<session_name>/download_single", methods=["GET"])
@auth_required
async def download_single(session_name: str) -> Response:
    """``GET /session/:id/download_single?file=``: one small file's bytes."""
    params = await _query_or_body(_SingleFileParams, "file")
    info = await find_session(session_name, current_auth())
    with translated_errors():
        data = await current_ctx().registry.download_single(info, params.file)
    response: Response = current_app.response_class(
        data, status=200, content_type="application/octet-stream"
    )
    return response


class _ListParams(msgspec.Struct, kw_only=True):
    path: str = "."


@blueprint.route("/<session_name>/files", methods=["GET"])
@auth_required
async def list_files(session_name: str) -> Response:
    """``GET /session/:id/files?path=``: ``{"files": JSON text, "folder_path", "errors"}``."""
    params = await _query_or_body(_ListParams, "path")
    info = await find_session(session_name, current_auth())
    with translated_errors():
        listing = await current_ctx().registry.list_files(info, params.path)
    errors = listing.get("errors") or ""
    return json_response(
        {
            "files": listing.get("files", "[]"),
            "folder_path": listing.get("abspath", params.path),
            "errors": errors if isinstance(errors, str) else str(errors),
        }
    )
