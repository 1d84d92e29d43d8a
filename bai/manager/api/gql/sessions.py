"""Compute sessions and their containers (kernels) as the GraphQL API shows them.

Root fields: ``compute_session(id)``, ``compute_session_list(limit, offset,
...)``, ``compute_container(id)`` and ``compute_container_list(limit,
offset, session_id, role)``; nested: ``ComputeSession.containers`` and
``.dependencies``, ``KeyPair.compute_sessions`` and
``Agent.compute_containers``.

Who sees which sessions (:func:`session_scope`): superadmins all of them,
domain admins those of their domain, users their own keypair's.  A session
the caller may not see is answered as if it did not exist (``null``).
``status`` arguments are comma-separated session statuses
(``"RUNNING,PENDING"``); an unknown one is an error naming it.

Each page of sessions is read in one read-only transaction (count, rows and
all their kernels), so ``total_count`` and ``items`` agree.  A session's
``occupied_slots`` and ``occupying_slots`` are the sums of its kernels'
``occupied_slots``; ``agent_ids`` and the containers' ``agent`` /
``agent_addr`` are ``null`` unless the caller may see agents.  A
container's ``live_stat`` is its agent's newest sample
(:mod:`bai.manager.livestats`, read once per page), ``null`` when there is
none; ``idle_checks`` is ``{}`` and ``abusing_reports`` is empty.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import ClusterMode, KernelStatus, SessionResult, SessionStatus, SessionTypes
from bai.manager.api.gql.context import GqlContext, Info, context_of, with_siblings
from bai.manager.api.gql.filters import Field, Kind, enum_field, parse_filter
from bai.manager.api.gql.images import registry_of
from bai.manager.api.gql.pages import check_page, order_terms, read_page
from bai.manager.db import Connection
from bai.manager.models.identity import groups, users
from bai.manager.models.session import kernels, session_dependencies, sessions

__all__ = [
    "SESSION_FIELDS",
    "parse_statuses",
    "resolve_agent_containers",
    "resolve_compute_container",
    "resolve_compute_container_list",
    "resolve_compute_session",
    "resolve_compute_session_list",
    "resolve_container_registry",
    "resolve_keypair_sessions",
    "resolve_session_dependencies",
    "resolve_session_registry",
    "session_scope",
]

_FROM: Final = sessions.outerjoin(users, users.c.uuid == sessions.c.user_uuid).outerjoin(
    groups, groups.c.id == sessions.c.group_id
)
_COLUMNS: Final = (sessions, users.c.email.label("user_email"), groups.c.name.label("group_name"))
_CONTAINER_FROM: Final = kernels.join(sessions, sessions.c.id == kernels.c.session_id)
_CONTAINER_ORDER: Final = (kernels.c.created_at, kernels.c.cluster_idx, kernels.c.id)


#: Fields of ``compute_session_list``'s ``filter`` and ``order``.
SESSION_FIELDS: Final[Mapping[str, Field]] = {
    "id": Field(sessions.c.id, Kind.UUID),
    "session_id": Field(sessions.c.id, Kind.UUID),
    "name": Field(sessions.c.name, Kind.STRING),
    "session_name": Field(sessions.c.name, Kind.STRING),
    "type": enum_field(sessions.c.session_type, SessionTypes),
    "session_type": enum_field(sessions.c.session_type, SessionTypes),
    "status": enum_field(sessions.c.status, SessionStatus),
    "status_info": Field(sessions.c.status_info, Kind.STRING),
    "result": enum_field(sessions.c.result, SessionResult),
    "image": Field(sessions.c.image, Kind.STRING),
    "architecture": Field(sessions.c.architecture, Kind.STRING),
    "tag": Field(sessions.c.tag, Kind.STRING),
    "access_key": Field(sessions.c.access_key, Kind.STRING),
    "domain_name": Field(sessions.c.domain_name, Kind.STRING),
    "group_id": Field(sessions.c.group_id, Kind.UUID),
    "group_name": Field(groups.c.name, Kind.STRING),
    "user_id": Field(sessions.c.user_uuid, Kind.UUID),
    "user_email": Field(users.c.email, Kind.STRING),
    "scaling_group": Field(sessions.c.scaling_group_name, Kind.STRING),
    "cluster_mode": enum_field(sessions.c.cluster_mode, ClusterMode),
    "cluster_size": Field(sessions.c.cluster_size, Kind.INTEGER),
    "priority": Field(sessions.c.priority, Kind.INTEGER),
    "startup_command": Field(sessions.c.startup_command, Kind.STRING),
    "created_at": Field(sessions.c.created_at, Kind.DATETIME),
    "terminated_at": Field(sessions.c.terminated_at, Kind.DATETIME),
    "status_changed": Field(sessions.c.status_changed, Kind.DATETIME),
    "starts_at": Field(sessions.c.starts_at, Kind.DATETIME),
}

_DEFAULT_ORDER: Final = (sessions.c.created_at.desc(), sessions.c.id)


# --------------------------------------------------------------------- arguments


def parse_statuses(text: str | None, statuses: type[enum.StrEnum], what: str) -> list[str] | None:
    """A ``status`` argument: comma-separated values of *statuses* (``None`` or empty:
    any status); an unknown one is an error saying it is not *what*."""
    if text is None or not text.strip():
        return None
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    known = {s.value for s in statuses}
    for name in names:
        if name not in known:
            raise InvalidValue(
                f"is not {what} (choose from {', '.join(statuses)})", value=name, field="status"
            )
    return names


def _uuid_arg(value: str | uuid.UUID | None, field: str) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidValue("is not a UUID", value=value, field=field) from None


def session_scope(
    ctx: GqlContext,
    *,
    domain_name: str | None = None,
    group_id: uuid.UUID | None = None,
    access_key: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """Conditions selecting the sessions the caller may see, narrowed by the arguments."""
    conditions: list[sa.ColumnElement[bool]] = []
    domain = ctx.domain_scope(domain_name)
    if domain is not None:
        conditions.append(sessions.c.domain_name == domain)
    key = ctx.own_only(access_key, ctx.auth.access_key, "sessions")
    if key is not None:
        conditions.append(sessions.c.access_key == key)
    if group_id is not None:
        conditions.append(sessions.c.group_id == group_id)
    return conditions


# ----------------------------------------------------------------------- loading


def _timestamp(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _scheduled_at(history: Any) -> datetime | None:
    for entry in history or ():
        if isinstance(entry, Mapping) and entry.get("status") == SessionStatus.SCHEDULED:
            return _timestamp(entry.get("timestamp"))
    return None


def _mount_names(mounts: Any) -> list[str]:
    names: list[str] = []
    for mount in mounts or ():
        if isinstance(mount, Mapping):
            names.append(str(mount.get("name") or mount.get("vfolder_name") or mount))
        else:
            names.append(str(mount))
    return names


def container_item(
    ctx: GqlContext, row: Any, live: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """One kernel row as a ``ComputeContainer``; *live*: live samples by kernel id text."""
    shows_agents = ctx.shows_agents
    return {
        "id": row.id,
        "session_id": row.session_id,
        "role": row.cluster_role,
        "cluster_role": row.cluster_role,
        "cluster_idx": row.cluster_idx,
        "idx": row.cluster_idx,
        "local_rank": row.local_rank,
        "cluster_hostname": row.cluster_hostname,
        "hostname": row.cluster_hostname,
        "image": row.image,
        "architecture": row.architecture,
        "status": str(row.status),
        "status_info": row.status_info,
        "status_data": row.status_data,
        "status_history": row.status_history,
        "status_changed": row.status_changed,
        "created_at": row.created_at,
        "terminated_at": row.terminated_at,
        "agent": row.agent if shows_agents else None,
        "agent_addr": row.agent_addr if shows_agents else None,
        "container_id": row.container_id,
        "resource_opts": row.resource_opts,
        "occupied_slots": row.occupied_slots,
        "requested_slots": row.requested_slots,
        "attached_devices": row.attached_devices,
        "service_ports": row.service_ports,
        "preopen_ports": [],
        "exit_code": row.exit_code,
        "live_stat": live.get(str(row.id)),
        "last_stat": row.last_stat,
    }


def _main_first(rows: list[Any]) -> list[Any]:
    return sorted(rows, key=lambda k: (k.cluster_role != "main", k.local_rank, k.cluster_idx))


def session_item(
    ctx: GqlContext,
    row: Any,
    kernel_rows: list[Any],
    live: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """One session row (with ``user_email`` and ``group_name``) as a ``ComputeSession``."""
    ordered = _main_first(kernel_rows)
    main = ordered[0] if ordered else None
    occupied = sum((row.occupied_slots for row in ordered), ResourceSlot())
    agent_ids = sorted({k.agent for k in ordered if k.agent is not None})
    return {
        "id": row.id,
        "session_id": row.id,
        "main_kernel_id": main.id if main is not None else None,
        "name": row.name,
        "session_name": row.name,
        "type": str(row.session_type),
        "session_type": str(row.session_type),
        "tag": row.tag,
        "image": row.image,
        "architecture": row.architecture,
        "cluster_mode": str(row.cluster_mode),
        "cluster_size": row.cluster_size,
        "priority": row.priority,
        "domain_name": row.domain_name,
        "group_name": row.group_name,
        "group_id": row.group_id,
        "user_email": row.user_email,
        "user_id": row.user_uuid,
        "access_key": row.access_key,
        "created_user_email": row.user_email,
        "created_user_id": row.user_uuid,
        "created_user_uuid": row.user_uuid,
        "status": str(row.status),
        "status_info": row.status_info,
        "status_data": row.status_data,
        "status_history": row.status_history,
        "status_changed": row.status_changed,
        "status_updated": row.status_changed,
        "created_at": row.created_at,
        "terminated_at": row.terminated_at,
        "starts_at": row.starts_at,
        "scheduled_at": _scheduled_at(row.status_history),
        "startup_command": row.startup_command,
        "batch_timeout": row.batch_timeout,
        "result": str(row.result),
        "resource_opts": {k.cluster_hostname: k.resource_opts for k in ordered},
        "scaling_group": row.scaling_group_name,
        "service_ports": main.service_ports if main is not None else [],
        "mounts": _mount_names(row.vfolder_mounts),
        "vfolder_mounts": row.vfolder_mounts,
        "requested_slots": row.requested_slots,
        "occupied_slots": occupied,
        "occupying_slots": occupied,
        "num_queries": row.num_queries,
        "agent_ids": agent_ids if ctx.shows_agents else None,
        "containers": [container_item(ctx, k, live) for k in ordered],
        "abusing_reports": [],
    }


async def _kernels_of(conn: Connection, session_ids: Collection[Any]) -> dict[Any, list[Any]]:
    by_session: dict[Any, list[Any]] = {sid: [] for sid in session_ids}
    if not by_session:
        return by_session
    rows = await conn.execute(sa.select(kernels).where(kernels.c.session_id.in_(list(by_session))))
    for row in rows:
        by_session[row.session_id].append(row)
    return by_session


def load_sessions(
    ctx: GqlContext,
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    order: Sequence[Any] = _DEFAULT_ORDER,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Sessions matching *conditions* as ``ComputeSession`` items (with *limit*, one page
    of them), and how many match in all; read in one transaction."""

    async def read(conn: Connection) -> tuple[list[Any], dict[Any, list[Any]], int]:
        rows, total = await read_page(
            conn, _FROM, _COLUMNS, conditions, order, limit=limit, offset=offset
        )
        return rows, await _kernels_of(conn, [row.id for row in rows]), total

    rows, by_session, total = ctx.read(read)
    live = ctx.live_samples([k.id for kernel_rows in by_session.values() for k in kernel_rows])
    items = [session_item(ctx, row, by_session[row.id], live) for row in rows]
    return with_siblings(items), total


# --------------------------------------------------------------------- resolvers


def resolve_idle_checks(item: dict[str, Any], info: Info) -> Any:
    """``ComputeSession.idle_checks``: each idle checker's remaining time for a RUNNING
    session (``{}`` for others), for every session of the page at once."""
    ctx = context_of(info)
    none: dict[str, Any] = {}
    return ctx.batch("ComputeSession.idle_checks", item, "id", ctx.idle_reports, none)


def resolve_compute_session(_root: Any, info: Info, id: uuid.UUID) -> Any:
    """``compute_session(id)``: the session, or ``null`` if the caller may not see it."""
    ctx = context_of(info)
    items, _ = load_sessions(ctx, [*session_scope(ctx), sessions.c.id == id])
    return items[0] if items else None


def resolve_compute_session_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    order_key: str | None = None,
    order_asc: bool | None = None,
    domain_name: str | None = None,
    group_id: str | None = None,
    access_key: str | None = None,
    status: str | None = None,
    filter: str | None = None,
    order: str | None = None,
) -> dict[str, Any]:
    """``compute_session_list``: one page of the sessions the caller may see."""
    ctx = context_of(info)
    check_page(limit, offset)
    conditions = session_scope(
        ctx,
        domain_name=domain_name,
        group_id=_uuid_arg(group_id, "group_id"),
        access_key=access_key,
    )
    statuses = parse_statuses(status, SessionStatus, "a session status")
    if statuses is not None:
        conditions.append(sessions.c.status.in_(statuses))
    if filter:
        conditions.append(parse_filter(filter, SESSION_FIELDS))
    ordering = order_terms(
        SESSION_FIELDS,
        _DEFAULT_ORDER,
        sessions.c.id,
        order=order,
        order_key=order_key,
        order_asc=order_asc,
    )
    items, total = load_sessions(ctx, conditions, order=ordering, limit=limit, offset=offset)
    return {"items": items, "total_count": total}


def resolve_session_dependencies(session: Mapping[str, Any], info: Info) -> Any:
    """``ComputeSession.dependencies``: the sessions this one waits for, that the caller
    may see."""
    ctx = context_of(info)

    def load(session_ids: list[uuid.UUID]) -> dict[Any, list[Any]]:
        edges = ctx.read_rows(
            sa.select(session_dependencies).where(
                session_dependencies.c.session_id.in_(session_ids)
            )
        )
        if not edges:
            return {}
        wanted = {edge.depends_on for edge in edges}
        items, _ = load_sessions(ctx, [*session_scope(ctx), sessions.c.id.in_(wanted)])
        found: dict[Any, list[Any]] = {}
        for item in items:  # in load_sessions' order
            for edge in edges:
                if edge.depends_on == item["id"]:
                    found.setdefault(edge.session_id, []).append(item)
        return found

    return ctx.batch("ComputeSession.dependencies", session, "id", load, [])


def resolve_keypair_sessions(
    keypair: Mapping[str, Any], info: Info, status: str | None = None
) -> Any:
    """``KeyPair.compute_sessions(status)``."""
    ctx = context_of(info)
    statuses = parse_statuses(status, SessionStatus, "a session status")

    def load(access_keys: list[str]) -> dict[Any, list[Any]]:
        conditions = [*session_scope(ctx), sessions.c.access_key.in_(access_keys)]
        if statuses is not None:
            conditions.append(sessions.c.status.in_(statuses))
        items, _ = load_sessions(ctx, conditions)
        found: dict[Any, list[Any]] = {}
        for item in items:
            found.setdefault(item["access_key"], []).append(item)
        return found

    field = ("KeyPair.compute_sessions", tuple(statuses or ()))
    return ctx.batch(field, keypair, "access_key", load, [])


def resolve_session_registry(session: Mapping[str, Any], info: Info) -> Any:
    """``ComputeSession.registry``: the registry of the session's image."""
    return registry_of(context_of(info), session["image"], session["architecture"])


def resolve_container_registry(container: Mapping[str, Any], info: Info) -> Any:
    """``ComputeContainer.registry``: the registry of the kernel's image."""
    return registry_of(context_of(info), container["image"], container["architecture"])


def _load_containers(
    ctx: GqlContext,
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    async def read(conn: Connection) -> tuple[list[Any], int]:
        return await read_page(
            conn,
            _CONTAINER_FROM,
            (kernels,),
            conditions,
            _CONTAINER_ORDER,
            limit=limit,
            offset=offset,
        )

    rows, total = ctx.read(read)
    live = ctx.live_samples([row.id for row in rows])
    return with_siblings([container_item(ctx, row, live) for row in rows]), total


def resolve_compute_container(_root: Any, info: Info, id: uuid.UUID) -> Any:
    """``compute_container(id)``: one kernel of a session the caller may see."""
    ctx = context_of(info)
    items, _ = _load_containers(ctx, [*session_scope(ctx), kernels.c.id == id])
    return items[0] if items else None


def resolve_compute_container_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    session_id: uuid.UUID,
    role: str | None = None,
) -> dict[str, Any]:
    """``compute_container_list``: one page of a visible session's kernels."""
    ctx = context_of(info)
    check_page(limit, offset)
    conditions = [*session_scope(ctx), kernels.c.session_id == session_id]
    if role is not None:
        conditions.append(kernels.c.cluster_role == role)
    items, total = _load_containers(ctx, conditions, limit=limit, offset=offset)
    return {"items": items, "total_count": total}


def resolve_agent_containers(
    agent: Mapping[str, Any], info: Info, status: str | None = None
) -> Any:
    """``Agent.compute_containers(status)``: the kernels placed on the agent."""
    ctx = context_of(info)
    statuses = parse_statuses(status, KernelStatus, "a kernel status")

    def load(agent_ids: list[str]) -> dict[Any, list[Any]]:
        conditions = [kernels.c.agent.in_(agent_ids)]
        if statuses is not None:
            conditions.append(kernels.c.status.in_(statuses))
        items, _ = _load_containers(ctx, conditions)
        found: dict[Any, list[Any]] = {}
        for item in items:  # only superadmins see agents, so ``agent`` is shown
            found.setdefault(item["agent"], []).append(item)
        return found

    field = ("Agent.compute_containers", tuple(statuses or ()))
    return ctx.batch(field, agent, "id", load, [])
