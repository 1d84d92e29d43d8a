"""Enqueueing sessions: validate a create request against the database and queue it PENDING.

The checks that need no database are :mod:`bai.manager.sessions.request`'s;
here the owner, the image, the project, the policies, the resource groups and
the dependencies are checked, and the session and its kernels (``main1``,
``sub1`` ... ``subN``) inserted in one transaction.  Renaming lives here too:
an owner's active sessions have unique names.

Validation at enqueue
=====================

* The image must be registered in the ``images`` table, by name or alias.
  Agents register their catalog's images there with each changed heartbeat
  (:mod:`bai.manager.agents`), and fixtures may add more; the scheduler does
  not check which agent holds an image, so an agent that cannot run it makes
  the session end in ERROR ``unknown-image``.
* Resources are parsed with the slot types the alive agents declare or report
  (:func:`bai.manager.policy.slot_types_of`; the well-known ones of
  ``DEFAULT_SLOT_TYPES`` when no agent is alive); slots the request leaves out
  get the image's minimum (``ai.backend.resource.min.*``), and a request below
  the minimum is refused.
* Over policy (the keypair policy's total resource slots or
  ``max_containers_per_session``, the project's or the domain's caps):
  :class:`QuotaExceeded`.  Over the capacity of every alive agent of the
  resource group, or a slot no agent there has: :class:`ResourceLimitExceeded`.
  With no alive agent in the group the capacity check is skipped and the
  session waits for one.
* ``vfolder_mounts`` (resolved by the API layer, :mod:`bai.manager.vfolders.mounts`)
  are stored as they are, once every folder they name is still live; a
  folder deleted meanwhile is :class:`InvalidSessionRequest` about ``mounts``.
* A name already used by an active session of the same owner:
  :class:`SessionAlreadyExists` (or, with ``reuse_if_exists`` and the same
  image, the existing session is returned).

Every error raised here is one of :mod:`bai.manager.sessions.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.events import EventBus, SessionEnqueued, publish_events
from bai.common.slots import DEFAULT_SLOT_TYPES, ResourceSlot
from bai.common.types import (
    ACTIVE_STATUSES,
    AccessKey,
    AgentId,
    KernelStatus,
    SessionId,
    SessionStatus,
    SessionTypes,
    SlotTypes,
)
from bai.manager.db import Connection, Database
from bai.manager.models.base import utcnow
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.image import image_aliases, images
from bai.manager.models.resource import AgentStatus, agents, scaling_groups
from bai.manager.models.session import kernels, session_dependencies, sessions
from bai.manager.models.vfolder import TRASH_STATUSES, VFolderStatus, vfolders
from bai.manager.policy import cap_limits, excess, keypair_limits, slot_types_of, usable_groups
from bai.manager.scheduler.types import AgentInfo, PendingSession
from bai.manager.scheduler.validation import (
    UnsatisfiableRequest,
    check_satisfiable,
    normalize_architecture,
)
from bai.manager.sessions.errors import (
    ImageNotFound,
    InvalidSessionRequest,
    QuotaExceeded,
    ResourceGroupNotAllowed,
    ResourceLimitExceeded,
    SessionAlreadyExists,
    SessionNotFound,
)
from bai.manager.sessions.model import (
    EnqueueResult,
    Owner,
    SessionInfo,
    SessionRef,
    SessionRequest,
)
from bai.manager.sessions.queries import (
    SessionLookup,
    allowed_scaling_groups,
    group_rows,
    session_query,
    terminal_values,
)
from bai.manager.sessions.request import (
    check_name,
    check_request,
    kernel_slots,
    nested_problem,
    normalized,
)
from bai.manager.sessions.state import ClusterLink
from bai.manager.transitions import initial_status

__all__ = ["Enqueuer"]


class Enqueuer:
    """Queues new sessions and renames active ones."""

    def __init__(
        self, db: Database, bus: EventBus, cluster: ClusterLink, lookup: SessionLookup
    ) -> None:
        self._db = db
        self._bus = bus
        self._cluster = cluster
        self._lookup = lookup

    async def enqueue_session(self, access_key: str, request: SessionRequest) -> EnqueueResult:
        """Validate *request* and queue a new session owned by *access_key*.

        Returns the new session (PENDING), or with ``reuse_if_exists`` the
        owner's active session of the same name and image.  Raises
        :class:`InvalidSessionRequest`, :class:`ImageNotFound`,
        :class:`QuotaExceeded`, :class:`ResourceLimitExceeded`,
        :class:`ResourceGroupNotAllowed` or :class:`SessionAlreadyExists`; the
        database is then unchanged.
        """
        request = normalized(request)
        check_request(request)
        name = request.name or f"session-{secrets.token_hex(5)}"
        if request.name is not None:
            check_name(request.name)

        async def run(conn: Connection) -> EnqueueResult:
            return await self._enqueue(conn, access_key, request, name)

        result = await self._db.transaction(run)
        if result.created:
            info = result.session
            await publish_events(
                self._bus,
                [
                    SessionEnqueued(
                        session_id=info.id,
                        owner_access_key=info.access_key,
                        session_name=info.name,
                        reason="enqueued",
                    )
                ],
            )
            await self._cluster.request_schedule()
        return result

    async def _enqueue(
        self, conn: Connection, access_key: str, request: SessionRequest, name: str
    ) -> EnqueueResult:
        owner = await _load_owner(conn, access_key)
        existing = (
            await conn.execute(
                sa.select(sessions.c.id, sessions.c.image).where(
                    sessions.c.access_key == owner.access_key,
                    sessions.c.name == name,
                    sessions.c.status.notin_(terminal_values()),
                )
            )
        ).first()
        image_name, image_arch, image_resources = await _resolve_image(
            conn, request.image, request.architecture
        )
        if existing is not None:
            if request.reuse_if_exists and existing.image == image_name:
                found = group_rows(await conn.execute(session_query(sessions.c.id == existing.id)))
                return EnqueueResult(found[0], created=False)
            raise SessionAlreadyExists(
                f"an active session called {name!r} already exists", existing.id
            )
        domain_name = await _check_domain(conn, owner, request.domain)
        group_id = await _check_group(conn, owner, domain_name, request.group)
        alive_rows = (
            await conn.execute(
                sa.select(
                    agents.c.id,
                    agents.c.scaling_group,
                    agents.c.architecture,
                    agents.c.available_slots,
                    agents.c.compute_plugins,
                ).where(agents.c.status == AgentStatus.ALIVE.value)
            )
        ).all()
        known_slots = (
            slot_types_of(
                (row.compute_plugins for row in alive_rows),
                (row.available_slots for row in alive_rows),
            )
            if alive_rows
            else dict(DEFAULT_SLOT_TYPES)
        )
        per_kernel = kernel_slots(request.resources, image_resources, known_slots)
        shmem = request.resource_opts.get("shmem")
        memory = per_kernel.get("mem")
        if shmem is not None and memory is not None and shmem > memory:
            raise InvalidSessionRequest(
                f"must not be more than the kernel's memory ({int(memory)} bytes)",
                value=shmem,
                field="config.resource_opts.shmem",
            )
        total = per_kernel * request.cluster_size
        await _check_policies(conn, owner, group_id, domain_name, request, total, known_slots)
        allowed = await allowed_scaling_groups(
            conn, domain_name=domain_name, group_id=group_id, access_key=owner.access_key
        )
        candidates = usable_groups(allowed, request.scaling_group, public_only=False)
        if candidates is None:
            raise ResourceGroupNotAllowed(
                "the resource group does not exist or is not allowed for this owner",
                value=request.scaling_group,
                field="scaling_group",
            )
        if not candidates:
            raise ResourceGroupNotAllowed(
                "the owner may use no resource group", value=owner.access_key, field="scaling_group"
            )
        now = utcnow()
        session_id = SessionId(uuid.uuid4())
        pending = PendingSession(
            id=session_id,
            access_key=AccessKey(owner.access_key),
            user_id=owner.user_id,
            group_id=group_id,
            domain_name=domain_name,
            resource_group=candidates[0],
            created_at=now,
            kernels=(per_kernel,) * request.cluster_size,
            priority=request.priority,
            cluster_mode=request.cluster_mode,
            architecture=image_arch,
            designated_agent=AgentId(request.designated_agent)
            if request.designated_agent
            else None,
        )
        chosen = await _choose_group(conn, pending, candidates, alive_rows, request.session_type)
        dependencies = await _resolve_dependencies(conn, owner, request.dependencies)
        await _lock_mounted_folders(conn, request.vfolder_mounts)
        await conn.execute(
            sa.insert(sessions).values(
                id=session_id,
                name=name,
                session_type=request.session_type,
                priority=request.priority,
                cluster_mode=request.cluster_mode,
                cluster_size=request.cluster_size,
                domain_name=domain_name,
                group_id=group_id,
                user_uuid=owner.user_id,
                access_key=owner.access_key,
                scaling_group_name=chosen,
                designated_agent=request.designated_agent,
                image=image_name,
                architecture=image_arch,
                tag=request.tag,
                created_at=now,
                starts_at=request.starts_at,
                batch_timeout=(
                    math.ceil(request.batch_timeout) if request.batch_timeout is not None else None
                ),
                startup_command=request.startup_command,
                bootstrap_script=request.bootstrap_script,
                callback_url=request.callback_url,
                requested_slots=total,
                occupying_slots=ResourceSlot(),
                vfolder_mounts=[dict(entry) for entry in request.vfolder_mounts],
                environ=dict(request.environ),
                **initial_status(SessionStatus.PENDING, "enqueued", now=now),
            )
        )
        kernel_rows = []
        for rank in range(request.cluster_size):
            role, idx = ("main", 1) if rank == 0 else ("sub", rank)
            kernel_rows.append(
                {
                    "id": uuid.uuid4(),
                    "session_id": session_id,
                    "cluster_role": role,
                    "cluster_idx": idx,
                    "local_rank": rank,
                    "cluster_hostname": f"{role}{idx}",
                    "image": image_name,
                    "architecture": image_arch,
                    "requested_slots": per_kernel,
                    "occupied_slots": ResourceSlot(),
                    "resource_opts": dict(request.resource_opts),
                    "created_at": now,
                    **initial_status(KernelStatus.PENDING, "enqueued", now=now),
                }
            )
        await conn.execute(sa.insert(kernels), kernel_rows)
        if dependencies:
            await conn.execute(
                sa.insert(session_dependencies),
                [{"session_id": session_id, "depends_on": dep} for dep in dependencies],
            )
        found = group_rows(await conn.execute(session_query(sessions.c.id == session_id)))
        return EnqueueResult(found[0], created=True)

    # ------------------------------------------------------------------ rename

    async def rename_session(self, session: SessionRef, new_name: str) -> SessionInfo:
        """Give an active session a new name (unique among the owner's active sessions).

        Raises :class:`InvalidSessionRequest`, :class:`SessionNotFound` (also
        for an ended session) or :class:`SessionAlreadyExists`.
        """
        check_name(new_name, "name")
        info = await self._lookup.resolve(session)

        async def write(conn: Connection) -> None:
            row = (
                await conn.execute(
                    sa.select(sessions.c.status, sessions.c.access_key)
                    .where(sessions.c.id == info.id)
                    .with_for_update()
                )
            ).first()
            if row is None or SessionStatus(row.status) not in ACTIVE_STATUSES:
                raise SessionNotFound(f"no active session has the id {info.id}")
            await conn.execute(
                sa.select(keypairs.c.access_key)
                .where(keypairs.c.access_key == row.access_key)
                .with_for_update()
            )
            clash = await conn.scalar(
                sa.select(sessions.c.id).where(
                    sessions.c.access_key == row.access_key,
                    sessions.c.name == new_name,
                    sessions.c.status.notin_(terminal_values()),
                    sessions.c.id != info.id,
                )
            )
            if clash is not None:
                raise SessionAlreadyExists(
                    f"an active session called {new_name!r} already exists", clash
                )
            await conn.execute(
                sa.update(sessions).where(sessions.c.id == info.id).values(name=new_name)
            )

        await self._db.transaction(write)
        return await self._lookup.get_session_by_id(info.id)


# ------------------------------------------------------------ enqueue helpers


async def _load_owner(conn: Connection, access_key: str) -> Owner:
    row = (
        await conn.execute(
            sa.select(
                keypairs.c.access_key,
                keypairs.c.is_active,
                keypairs.c.resource_policy,
                users.c.uuid,
                users.c.email,
                users.c.domain_name,
                users.c.role,
                users.c.status,
            )
            .select_from(keypairs.join(users, keypairs.c.user == users.c.uuid))
            .where(keypairs.c.access_key == access_key)
            # Serialises the owner's enqueues, so a name cannot be taken twice.
            .with_for_update(of=keypairs)
        )
    ).first()
    if row is None or not row.is_active or UserStatus(row.status) is not UserStatus.ACTIVE:
        raise InvalidSessionRequest(
            "no active keypair has this access key", value=access_key, field="owner_access_key"
        )
    return Owner(
        access_key=row.access_key,
        user_id=row.uuid,
        email=row.email,
        domain_name=row.domain_name,
        role=UserRole(row.role),
        resource_policy=row.resource_policy,
    )


async def _resolve_image(
    conn: Connection, ref: str, architecture: str | None
) -> tuple[str, str, Mapping[str, Any]]:
    """The canonical name, architecture and ``resources`` of the image *ref* names."""
    by_name = sa.select(images.c.name, images.c.architecture, images.c.resources).where(
        images.c.name == ref
    )
    by_alias = (
        sa.select(images.c.name, images.c.architecture, images.c.resources)
        .select_from(images.join(image_aliases, image_aliases.c.image_id == images.c.id))
        .where(image_aliases.c.alias == ref)
    )
    rows = (await conn.execute(by_name)).all()
    if not rows:
        alias_rows = (await conn.execute(by_alias)).all()
        if alias_rows:
            # An alias points at one image; every architecture of that name qualifies.
            rows = (
                await conn.execute(
                    sa.select(images.c.name, images.c.architecture, images.c.resources).where(
                        images.c.name == alias_rows[0].name
                    )
                )
            ).all()
    if not rows:
        raise ImageNotFound("no registered image has this name or alias", value=ref, field="image")
    if architecture is not None:
        wanted = normalize_architecture(architecture)
        for row in rows:
            if normalize_architecture(row.architecture) == wanted:
                return row.name, row.architecture, row.resources or {}
        raise ImageNotFound(
            f"the image exists, but not for {wanted}", value=ref, field="architecture"
        )
    preferred = normalize_architecture(_host_architecture())
    rows.sort(key=lambda r: (normalize_architecture(r.architecture) != preferred, r.architecture))
    row = rows[0]
    return row.name, row.architecture, row.resources or {}


def _host_architecture() -> str:
    import platform

    return platform.machine() or "x86_64"


async def _check_domain(conn: Connection, owner: Owner, requested: str | None) -> str:
    name = requested or owner.domain_name
    if name != owner.domain_name and owner.role is not UserRole.SUPERADMIN:
        raise InvalidSessionRequest(
            "sessions can only be created in the owner's domain", value=name, field="domain"
        )
    active = await conn.scalar(sa.select(domains.c.is_active).where(domains.c.name == name))
    if not active:
        raise InvalidSessionRequest("no active domain has this name", value=name, field="domain")
    return name


async def _check_group(conn: Connection, owner: Owner, domain_name: str, ref: str) -> uuid.UUID:
    if not isinstance(ref, str) or not ref:
        raise InvalidSessionRequest("must be a project name", value=ref, field="group")
    condition = groups.c.name == ref
    with contextlib.suppress(ValueError):
        condition = sa.or_(condition, groups.c.id == uuid.UUID(ref))
    row = (
        await conn.execute(
            sa.select(groups.c.id, groups.c.is_active).where(
                condition, groups.c.domain_name == domain_name
            )
        )
    ).first()
    if row is None or not row.is_active:
        raise InvalidSessionRequest(
            f"no active project of this name in domain {domain_name!r}", value=ref, field="group"
        )
    if owner.role not in (UserRole.SUPERADMIN, UserRole.ADMIN):
        member = await conn.scalar(
            sa.select(association_groups_users.c.user_id).where(
                association_groups_users.c.user_id == owner.user_id,
                association_groups_users.c.group_id == row.id,
            )
        )
        if member is None:
            raise InvalidSessionRequest(
                "the owner is not a member of this project", value=ref, field="group"
            )
    group_id: uuid.UUID = row.id
    return group_id


async def _check_policies(
    conn: Connection,
    owner: Owner,
    group_id: uuid.UUID,
    domain_name: str,
    request: SessionRequest,
    total: ResourceSlot,
    known_slots: Mapping[str, SlotTypes],
) -> None:
    policy = (
        await conn.execute(
            sa.select(keypair_resource_policies).where(
                keypair_resource_policies.c.name == owner.resource_policy
            )
        )
    ).first()
    if policy is None:
        raise QuotaExceeded(
            "the keypair's resource policy does not exist",
            value=owner.resource_policy,
            field="resource_policy",
        )
    if request.cluster_size > policy.max_containers_per_session:
        raise QuotaExceeded(
            f"the keypair policy allows {policy.max_containers_per_session} kernels per session",
            value=request.cluster_size,
            field="cluster_size",
        )
    slot_names = set(known_slots) | set(total)
    limits: list[tuple[str, ResourceSlot]] = [
        (
            "keypair resource policy",
            keypair_limits(policy.total_resource_slots, policy.default_for_unspecified, slot_names),
        )
    ]
    caps = (
        ("project", groups, groups.c.id == group_id),
        ("domain", domains, domains.c.name == domain_name),
    )
    for label, table, condition in caps:
        cap = cap_limits(
            await conn.scalar(sa.select(table.c.total_resource_slots).where(condition)), slot_names
        )
        if cap is not None:
            limits.append((f"{label} resource limit", cap))
    for label, limit in limits:
        if not total.fits_in(limit):
            raise QuotaExceeded(
                f"the session exceeds the {label}: {excess(total, limit)}",
                value=total.to_json(),
                field="resources",
            )


async def _choose_group(
    conn: Connection,
    pending: PendingSession,
    candidates: Sequence[str],
    alive_rows: Sequence[Any],
    session_type: SessionTypes,
) -> str:
    """The first candidate group that allows the session type and could host the session."""
    options = {
        row.name: row.scheduler_opts
        for row in await conn.execute(
            sa.select(scaling_groups.c.name, scaling_groups.c.scheduler_opts).where(
                scaling_groups.c.name.in_(list(candidates))
            )
        )
    }
    first_error: InvalidValue | None = None
    for group in candidates:
        opts = options.get(group) or {}
        allowed_types = opts.get("allowed_session_types") if isinstance(opts, Mapping) else None
        if isinstance(allowed_types, list) and session_type.value not in allowed_types:
            first_error = first_error or InvalidSessionRequest(
                f"resource group {group!r} does not allow {session_type.value} sessions",
                value=session_type.value,
                field="type",
            )
            continue
        hosts = [
            AgentInfo(
                id=AgentId(row.id),
                resource_group=row.scaling_group,
                available_slots=row.available_slots,
                occupied_slots=ResourceSlot(),
                architecture=row.architecture,
            )
            for row in alive_rows
            if row.scaling_group == group
            and (pending.designated_agent is None or row.id == pending.designated_agent)
        ]
        if not hosts:
            return group
        try:
            check_satisfiable(dataclasses.replace(pending, resource_group=group), hosts)
        except UnsatisfiableRequest as exc:
            first_error = first_error or nested_problem(exc, ResourceLimitExceeded, "resources")
            continue
        return group
    assert first_error is not None
    raise first_error


async def _lock_mounted_folders(conn: Connection, entries: Sequence[Mapping[str, str]]) -> None:
    """Refuse folders deleted since the API resolved them; lock the others' rows.

    The locks last until the session row is in, so a folder's deletion,
    which locks the folder's row before it looks for live sessions mounting
    it, either comes first (and the session is refused here) or sees the
    session.
    """
    ids = {uuid.UUID(hex=entry["vfid"]) for entry in entries}
    if not ids:
        return
    rows = await conn.execute(
        sa.select(vfolders.c.id, vfolders.c.status)
        .where(vfolders.c.id.in_(sorted(ids)))
        .with_for_update()
    )
    live = {row.id for row in rows if VFolderStatus(row.status) not in TRASH_STATUSES}
    for entry in entries:
        if uuid.UUID(hex=entry["vfid"]) not in live:
            raise InvalidSessionRequest(
                "the folder was deleted while the session was being created",
                value=entry["name"],
                field="mounts",
            )


async def _resolve_dependencies(
    conn: Connection, owner: Owner, refs: Sequence[str | uuid.UUID]
) -> list[uuid.UUID]:
    resolved: list[uuid.UUID] = []
    for index, ref in enumerate(refs):
        where = f"dependencies[{index}]"
        session_id: uuid.UUID | None = None
        if isinstance(ref, uuid.UUID):
            session_id = ref
        elif isinstance(ref, str):
            try:
                session_id = uuid.UUID(ref)
            except ValueError:
                session_id = await conn.scalar(
                    sa.select(sessions.c.id)
                    .where(sessions.c.access_key == owner.access_key, sessions.c.name == ref)
                    .order_by(sessions.c.created_at.desc())
                    .limit(1)
                )
        else:
            raise InvalidSessionRequest("must be a session id or name", value=ref, field=where)
        if session_id is not None:
            session_id = await conn.scalar(
                sa.select(sessions.c.id).where(
                    sessions.c.id == session_id, sessions.c.access_key == owner.access_key
                )
            )
        if session_id is None:
            raise InvalidSessionRequest(
                "the owner has no session with this id or name", value=ref, field=where
            )
        if session_id not in resolved:
            resolved.append(session_id)
    return resolved
