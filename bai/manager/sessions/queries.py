"""Reading sessions: rows to :class:`SessionInfo`, lookups by id, name or prefix, shared queries.

Also the column values the session services write from what agents answer
(:func:`running_values`) and the resource groups an owner may use
(:func:`allowed_scaling_groups`).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import (
    AccessKey,
    AgentId,
    ClusterMode,
    KernelId,
    KernelStatus,
    SessionId,
    SessionResult,
    SessionStatus,
    SessionTypes,
)
from bai.manager.db import Connection, Database
from bai.manager.models.resource import (
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from bai.manager.models.session import kernels, sessions
from bai.manager.sessions.errors import (
    InvalidSessionRequest,
    SessionNotFound,
    TooManySessionsMatched,
)
from bai.manager.sessions.model import KernelInfo, SessionInfo, SessionRef

__all__ = [
    "SessionLookup",
    "allowed_scaling_groups",
    "group_rows",
    "kernel_status",
    "merge_status_data",
    "running_values",
    "session_query",
    "terminal_values",
]

_HEX_PREFIX_RE: Final = re.compile(r"[0-9a-fA-F-]{4,36}\Z", re.ASCII)

_KERNEL_COLUMNS: Final = (
    kernels.c.id.label("k_id"),
    kernels.c.cluster_role.label("k_cluster_role"),
    kernels.c.cluster_idx.label("k_cluster_idx"),
    kernels.c.local_rank.label("k_local_rank"),
    kernels.c.cluster_hostname.label("k_cluster_hostname"),
    kernels.c.agent.label("k_agent"),
    kernels.c.agent_addr.label("k_agent_addr"),
    kernels.c.image.label("k_image"),
    kernels.c.architecture.label("k_architecture"),
    kernels.c.status.label("k_status"),
    kernels.c.status_info.label("k_status_info"),
    kernels.c.status_changed.label("k_status_changed"),
    kernels.c.requested_slots.label("k_requested_slots"),
    kernels.c.occupied_slots.label("k_occupied_slots"),
    kernels.c.attached_devices.label("k_attached_devices"),
    kernels.c.service_ports.label("k_service_ports"),
    kernels.c.kernel_host.label("k_kernel_host"),
    kernels.c.container_id.label("k_container_id"),
    kernels.c.exit_code.label("k_exit_code"),
    kernels.c.created_at.label("k_created_at"),
    kernels.c.terminated_at.label("k_terminated_at"),
    kernels.c.last_stat.label("k_last_stat"),
)


def _kernel_info(row: Any) -> KernelInfo:
    return KernelInfo(
        id=KernelId(row.k_id),
        session_id=SessionId(row.id),
        cluster_role=row.k_cluster_role,
        cluster_idx=row.k_cluster_idx,
        local_rank=row.k_local_rank,
        cluster_hostname=row.k_cluster_hostname,
        agent=AgentId(row.k_agent) if row.k_agent is not None else None,
        agent_addr=row.k_agent_addr,
        image=row.k_image,
        architecture=row.k_architecture,
        status=KernelStatus(row.k_status),
        status_info=row.k_status_info,
        status_changed=row.k_status_changed,
        requested_slots=row.k_requested_slots,
        occupied_slots=row.k_occupied_slots,
        attached_devices=row.k_attached_devices or {},
        service_ports=tuple(row.k_service_ports or ()),
        kernel_host=row.k_kernel_host,
        container_id=row.k_container_id,
        exit_code=row.k_exit_code,
        created_at=row.k_created_at,
        terminated_at=row.k_terminated_at,
        last_stat=row.k_last_stat,
    )


def _session_info(row: Any, kernel_list: list[KernelInfo]) -> SessionInfo:
    kernel_list.sort(key=lambda k: (k.cluster_role != "main", k.local_rank, k.cluster_idx))
    return SessionInfo(
        id=SessionId(row.id),
        name=row.name,
        access_key=AccessKey(row.access_key),
        user_uuid=row.user_uuid,
        domain_name=row.domain_name,
        group_id=row.group_id,
        scaling_group=row.scaling_group_name,
        session_type=SessionTypes(row.session_type),
        cluster_mode=ClusterMode(row.cluster_mode),
        cluster_size=row.cluster_size,
        priority=row.priority,
        image=row.image,
        architecture=row.architecture,
        tag=row.tag,
        status=SessionStatus(row.status),
        status_info=row.status_info,
        status_data=row.status_data,
        status_history=tuple(row.status_history or ()),
        status_changed=row.status_changed,
        created_at=row.created_at,
        terminated_at=row.terminated_at,
        starts_at=row.starts_at,
        batch_timeout=row.batch_timeout,
        startup_command=row.startup_command,
        bootstrap_script=row.bootstrap_script,
        callback_url=row.callback_url,
        result=SessionResult(row.result),
        requested_slots=row.requested_slots,
        occupying_slots=row.occupying_slots,
        vfolder_mounts=tuple(row.vfolder_mounts or ()),
        environ=dict(row.environ or {}),
        num_queries=row.num_queries,
        designated_agent=row.designated_agent,
        kernels=tuple(kernel_list),
    )


def session_query(where: sa.ColumnElement[bool], *, limit: int | None = None) -> sa.Select[Any]:
    """Sessions matching *where* (at most *limit*, newest first) joined with their kernels."""
    order = (sessions.c.created_at.desc(), sessions.c.id)
    chosen = sa.select(sessions.c.id).where(where).order_by(*order)
    if limit is not None:
        chosen = chosen.limit(limit)
    return (
        sa.select(sessions, *_KERNEL_COLUMNS)
        .select_from(sessions.join(kernels, kernels.c.session_id == sessions.c.id))
        .where(sessions.c.id.in_(chosen.scalar_subquery()))
        .order_by(*order)
    )


def _id_prefix(text: str) -> sa.ColumnElement[bool] | None:
    """Sessions whose id starts with the hex digits of *text* (dashes ignored); None if not hex."""
    digits = text.replace("-", "").lower()
    if not digits or any(c not in "0123456789abcdef" for c in digits):
        return None
    id_text = sa.func.replace(sa.cast(sessions.c.id, sa.String), "-", "")
    return id_text.like(f"{digits}%")


def group_rows(rows: Iterable[Any]) -> list[SessionInfo]:
    """Sessions from the rows of :func:`session_query`, in the rows' order."""
    order: list[Any] = []
    grouped: dict[Any, tuple[Any, list[KernelInfo]]] = {}
    for row in rows:
        entry = grouped.get(row.id)
        if entry is None:
            entry = grouped[row.id] = (row, [])
            order.append(row.id)
        entry[1].append(_kernel_info(row))
    return [_session_info(*grouped[sid]) for sid in order]


def terminal_values() -> list[str]:
    """The ``status`` values of sessions that are over."""
    return [SessionStatus.TERMINATED.value, SessionStatus.CANCELLED.value]


def merge_status_data(current: Any, key: str, value: Any) -> dict[str, Any]:
    """A session's ``status_data`` with *key* set to *value*."""
    data = dict(current) if isinstance(current, Mapping) else {}
    data[key] = value
    return data


async def kernel_status(
    conn: Connection, kernel_id: uuid.UUID, *, lock: bool = False
) -> KernelStatus | None:
    """The kernel's status (None when it is gone); *lock* locks its row for the transaction."""
    query = sa.select(kernels.c.status).where(kernels.c.id == kernel_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return None if row is None else KernelStatus(row.status)


def running_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """Kernel columns to write from one ``create_kernels``/``restart_kernel`` answer."""
    values: dict[str, Any] = {}
    if isinstance(item.get("agent_addr"), str):
        values["agent_addr"] = item["agent_addr"][:128]
    if isinstance(item.get("kernel_host"), str):
        values["kernel_host"] = item["kernel_host"][:128]
    if isinstance(item.get("pid"), int):
        values["container_id"] = str(item["pid"])
    ports = item.get("service_ports")
    if isinstance(ports, list):
        values["service_ports"] = [p for p in ports if isinstance(p, Mapping)]
    with contextlib.suppress(InvalidValue):
        values["occupied_slots"] = ResourceSlot.from_json(item.get("occupied_slots") or {})
    for key in ("attached_devices", "resource_opts"):
        if isinstance(item.get(key), Mapping):
            values[key] = dict(item[key])
    return values


async def allowed_scaling_groups(
    conn: Connection, *, domain_name: str, group_id: uuid.UUID, access_key: str
) -> dict[str, bool]:
    """The active resource groups associated with the domain, the project or the keypair:
    name -> whether it is public, by name (see :func:`bai.manager.policy.usable_groups`)."""
    associated = sa.union(
        sa.select(sgroups_for_domains.c.scaling_group.label("name")).where(
            sgroups_for_domains.c.domain == domain_name
        ),
        sa.select(sgroups_for_groups.c.scaling_group.label("name")).where(
            sgroups_for_groups.c.group == group_id
        ),
        sa.select(sgroups_for_keypairs.c.scaling_group.label("name")).where(
            sgroups_for_keypairs.c.access_key == access_key
        ),
    ).subquery()
    rows = await conn.execute(
        sa.select(scaling_groups.c.name, scaling_groups.c.is_public)
        .where(scaling_groups.c.name.in_(sa.select(associated.c.name)))
        .where(scaling_groups.c.is_active.is_(True))
        .order_by(scaling_groups.c.name)
    )
    return {row.name: bool(row.is_public) for row in rows}


class SessionLookup:
    """Finds sessions in the database by id, name or id prefix."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_session_by_id(self, session_id: uuid.UUID) -> SessionInfo:
        """The session with this id, in any status; :class:`SessionNotFound` otherwise."""
        found = group_rows(await self._db.fetch(session_query(sessions.c.id == session_id)))
        if not found:
            raise SessionNotFound(f"no session has the id {session_id}")
        return found[0]

    async def get_session(
        self,
        ref: str | uuid.UUID,
        *,
        access_key: str | None = None,
        include_terminated: bool = False,
    ) -> SessionInfo:
        """Find a session by id, name or id prefix, as the API's ``:id`` parameter names it.

        With *access_key*, only that owner's sessions match.  Order of
        attempts: an exact id; a name among active sessions; an id prefix (4
        or more hex digits) among active sessions; then, with
        *include_terminated*, the newest ended session of that name or id
        prefix.  Raises :class:`SessionNotFound`, or
        :class:`TooManySessionsMatched` when a prefix is ambiguous.
        """
        owner = sessions.c.access_key == access_key if access_key is not None else sa.true()
        if isinstance(ref, uuid.UUID):
            exact: uuid.UUID | None = ref
        else:
            # No session name holds a NUL, and PostgreSQL refuses one in a query.
            if not isinstance(ref, str) or not 0 < len(ref) <= 64 or "\x00" in ref:
                raise SessionNotFound(f"no session is called {ref!r}")
            try:
                exact = uuid.UUID(ref)
            except ValueError:
                exact = None
        if exact is not None:
            found = group_rows(
                await self._db.fetch(session_query(sa.and_(sessions.c.id == exact, owner)))
            )
            if found and (include_terminated or found[0].is_active):
                return found[0]
            raise SessionNotFound(f"no session has the id {exact}")
        assert isinstance(ref, str)
        active = sessions.c.status.notin_(terminal_values())
        scopes = [active, sa.true()] if include_terminated else [active]
        for scope in scopes:
            named = group_rows(
                await self._db.fetch(
                    session_query(sa.and_(sessions.c.name == ref, owner, scope), limit=1)
                )
            )
            if named:
                return named[0]
            if _HEX_PREFIX_RE.match(ref):
                matches = await self._by_prefix(ref, owner, scope, limit=10)
                if len(matches) == 1:
                    return matches[0]
                if matches and scope is active:
                    raise TooManySessionsMatched(
                        f"{len(matches)} sessions have ids starting with {ref!r}", matches
                    )
                if matches:
                    return matches[0]
        raise SessionNotFound(f"no session is called {ref!r}")

    async def _by_prefix(
        self, prefix: str, owner: sa.ColumnElement[bool], scope: sa.ColumnElement[bool], limit: int
    ) -> list[SessionInfo]:
        by_id = _id_prefix(prefix)
        if by_id is None:
            return []
        return group_rows(
            await self._db.fetch(session_query(sa.and_(by_id, owner, scope), limit=limit))
        )

    async def match_sessions(
        self, access_key: str | None, text: str, *, limit: int = 10
    ) -> list[SessionInfo]:
        """Active sessions whose name or id starts with *text* (``match``), newest first."""
        if not isinstance(text, str) or not text or len(text) > 64:
            raise InvalidSessionRequest("must be 1 to 64 characters", value=text, field="id")
        if "\x00" in text:
            raise InvalidSessionRequest("must not contain NUL", value=text, field="id")
        owner = sessions.c.access_key == access_key if access_key is not None else sa.true()
        active = sessions.c.status.notin_(terminal_values())
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        condition: sa.ColumnElement[bool] = sessions.c.name.like(f"{escaped}%", escape="\\")
        by_id = _id_prefix(text)
        if by_id is not None:
            condition = sa.or_(condition, by_id)
        rows = await self._db.fetch(
            session_query(sa.and_(condition, owner, active), limit=max(1, min(limit, 100)))
        )
        return group_rows(rows)

    async def resolve(self, session: SessionRef) -> SessionInfo:
        """*session* as read, read by its id when it is one."""
        if isinstance(session, SessionInfo):
            return session
        return await self.get_session_by_id(session)
