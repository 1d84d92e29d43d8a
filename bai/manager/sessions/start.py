"""Starting scheduled sessions: create their kernels on their agents and record them RUNNING.

A session goes PREPARING (a compare-and-set: one manager wins), then
CREATING; each agent of the session creates all of its kernels there under
``manager.kernel-creation-timeout``.  A failure or the deadline moves the
session to ERROR with a reason and the agent's message, and destroys whatever
the agents did create.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.agent_api import AgentErrorType, AgentMethod
from bai.common.events import Event, EventBus, publish_events
from bai.common.rpc import RemoteError
from bai.common.types import (
    PRE_START_STATUSES,
    InvalidTransition,
    KernelStatus,
    SessionId,
    SessionStatus,
    SessionTypes,
)
from bai.manager import transitions
from bai.manager.db import Connection, Database
from bai.manager.dotfiles.store import kernel_home
from bai.manager.errors import AgentNotFound, AgentUnavailable
from bai.manager.models.session import kernels, sessions
from bai.manager.sessions.batch import BatchDrivers
from bai.manager.sessions.errors import AgentError
from bai.manager.sessions.queries import kernel_status, merge_status_data, running_values
from bai.manager.sessions.request import VFOLDER_MOUNT_KEYS
from bai.manager.sessions.state import ClusterLink, LocalState
from bai.manager.sessions.terminate import Terminator
from bai.manager.sshkeys import session_keypair

__all__ = ["Starter"]

log = logging.getLogger(__name__)

#: Reasons an agent gives for a kernel that did not start that the session repeats.
_AGENT_START_REASONS: Final = frozenset({"bootstrap-failed"})


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        detail = exc.detail if isinstance(exc.detail, Mapping) else {}
        reasons = detail.get("reasons")
        if exc.remote_type == AgentErrorType.KERNEL_CREATION_FAILED and isinstance(
            reasons, Mapping
        ):
            for reason in reasons.values():
                if reason in _AGENT_START_REASONS:
                    return str(reason)
        return {
            AgentErrorType.KERNEL_CREATION_FAILED: "failed-to-start",
            "UnknownImage": "unknown-image",
            "InsufficientResource": "insufficient-resource",
            "FragmentedResource": "insufficient-resource",
            "InvalidAllocation": "insufficient-resource",
            "InsufficientPorts": "insufficient-resource",
            "KernelAlreadyExists": "kernel-already-exists",
        }.get(exc.remote_type, "agent-error")
    if isinstance(exc, trio.TooSlowError):
        return "creation-timeout"
    if isinstance(exc, AgentUnavailable | AgentNotFound):
        return "agent-unavailable"
    return "agent-error"


def _error_data(exc: BaseException, agent_id: str | None) -> dict[str, Any]:
    if isinstance(exc, RemoteError):
        return {
            "src": "agent",
            "agent_id": agent_id,
            "name": exc.remote_type,
            "repr": exc.remote_message,
            "detail": exc.detail if isinstance(exc.detail, Mapping | list | str) else None,
        }
    if isinstance(exc, trio.TooSlowError):
        return {
            "src": "manager",
            "agent_id": agent_id,
            "name": "CreationTimeout",
            "repr": "the agent did not create the kernels in time",
        }
    return {"src": "manager", "agent_id": agent_id, "name": type(exc).__name__, "repr": str(exc)}


def _replicas(kernel_rows: Sequence[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in kernel_rows:
        counts[row.cluster_role] = counts.get(row.cluster_role, 0) + 1
    return counts


def _kernel_config(
    session_row: Any,
    row: Any,
    ssh_keypair: dict[str, Any] | None = None,
    home: tuple[list[dict[str, Any]], str | None] = ([], None),
) -> dict[str, Any]:
    """The ``KernelConfig`` map of ``create_kernels`` for one kernel row (and the session
    owner's *ssh_keypair* and *home*, the dotfiles and stored bootstrap script of
    :func:`bai.manager.dotfiles.store.kernel_home`, the same for every kernel of the
    session)."""
    config = {
        "kernel_id": str(row.id),
        "image": session_row.image,
        "architecture": row.architecture,
        "resource_slots": {k: v for k, v in row.requested_slots.to_json().items()},
        "environ": dict(session_row.environ or {}),
        "cluster_role": row.cluster_role,
        "cluster_idx": row.cluster_idx,
        "local_rank": row.local_rank,
        "cluster_hostname": row.cluster_hostname,
        "session_type": SessionTypes(session_row.session_type).value,
    }
    if session_row.bootstrap_script:
        config["bootstrap_script"] = session_row.bootstrap_script
    shmem = (row.resource_opts or {}).get("shmem")
    if shmem:
        config["resource_opts"] = {"shmem": shmem}
    mounts = kernel_mounts(session_row.vfolder_mounts)
    if mounts:
        config["mounts"] = mounts
    if ssh_keypair is not None:
        config["ssh_keypair"] = ssh_keypair
    dotfiles, user_bootstrap = home
    if dotfiles:
        config["dotfiles"] = dotfiles
    if user_bootstrap:
        config["user_bootstrap_script"] = user_bootstrap
    return config


#: The keys of a ``vfolder_mounts`` entry that a kernel's ``VFolderMount`` carries.
_MOUNT_KEYS: Final = tuple(key for key in VFOLDER_MOUNT_KEYS if key != "host")


def kernel_mounts(vfolder_mounts: Any) -> list[dict[str, Any]]:
    """The ``KernelConfig.mounts`` of every kernel of a session with these ``vfolder_mounts``.

    Each entry of the session row (``{"name", "vfid", "host", "host_path",
    "kernel_path", "mode"}``, resolved at enqueue) loses ``host``, which the
    agent does not need.  The agent checks the rest again.
    """
    return [
        {key: mount[key] for key in _MOUNT_KEYS if key in mount}
        for mount in vfolder_mounts or ()
        if isinstance(mount, Mapping)
    ]


class Starter:
    """Starts the sessions the dispatcher (or a reconcile pass) hands over, each in a task."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        cluster: ClusterLink,
        state: LocalState,
        terminator: Terminator,
        batches: BatchDrivers,
        creation_timeout: float,
    ) -> None:
        self._db = db
        self._bus = bus
        self._cluster = cluster
        self._state = state
        self._terminator = terminator
        self._batches = batches
        self._creation_timeout = creation_timeout

    def start_scheduled(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Start each SCHEDULED session in the background (the dispatcher's hand-off).

        A session another task or manager already started is left alone.
        Without a running registry the sessions stay SCHEDULED until the
        reconcile loop of some manager starts them.
        """
        for raw in session_ids:
            sid = SessionId(raw)
            if sid in self._state.starting or self._state.nursery is None:
                continue
            self._state.starting.add(sid)
            self._state.spawn(self._task, sid)

    async def _task(self, session_id: SessionId) -> None:
        try:
            await self._start(session_id)
        except Exception:
            log.exception("starting session %s failed", session_id)
        finally:
            self._state.starting.discard(session_id)
        for event in self._state.deferred.pop(session_id, []):
            try:
                await self._terminator.handle_kernel_terminated(event)
            except Exception:
                log.exception("handling the end of kernel %s failed", event.kernel_id)

    async def _start(self, session_id: SessionId) -> None:
        events: list[Event] = []

        async def prepare(conn: Connection) -> tuple[Any, list[Any]] | None:
            events.clear()
            try:
                result = await transitions.transition_session(
                    conn, session_id, SessionStatus.PREPARING, "preparing", cascade_kernels=True
                )
            except (InvalidTransition, transitions.SessionNotFound):
                return None
            events.extend(result.events)
            session_row = (
                await conn.execute(sa.select(sessions).where(sessions.c.id == session_id))
            ).one()
            kernel_rows = (
                await conn.execute(
                    sa.select(kernels)
                    .where(kernels.c.session_id == session_id)
                    .order_by(kernels.c.local_rank)
                )
            ).all()
            return session_row, kernel_rows

        loaded = await self._db.transaction(prepare)
        await publish_events(self._bus, events)
        if loaded is None:
            return
        session_row, kernel_rows = loaded
        if any(k.agent is None for k in kernel_rows):
            await self._fail_start(session_id, {}, "agent-error", {"repr": "a kernel has no agent"})
            return
        # Made (on first use) while PREPARING: once the session is CREATING, the
        # kernels must be asked for at once, or a manager that dies in between
        # leaves a creation nobody started until its deadline.
        ssh_keypair = await session_keypair(self._db, session_row.access_key)
        home = await kernel_home(
            self._db, session_row.user_uuid, session_row.group_id, session_row.domain_name
        )

        async def creating(conn: Connection) -> bool:
            events.clear()
            try:
                result = await transitions.transition_session(
                    conn, session_id, SessionStatus.CREATING, "creating", cascade_kernels=True
                )
            except InvalidTransition:
                return False
            events.extend(result.events)
            return True

        proceed = await self._db.transaction(creating)
        await publish_events(self._bus, events)
        if not proceed:
            return
        by_agent: dict[str, list[Any]] = {}
        for row in kernel_rows:
            by_agent.setdefault(row.agent, []).append(row)
        cluster = {
            "size": len(kernel_rows),
            "hosts": [row.cluster_hostname for row in kernel_rows],
            "replicas": _replicas(kernel_rows),
        }
        created: dict[str, dict[str, Any]] = {}
        failures: dict[str, BaseException] = {}

        async def create_on(agent_id: str, rows: list[Any]) -> None:
            args = {
                "session_id": str(session_id),
                "kernels": [_kernel_config(session_row, row, ssh_keypair, home) for row in rows],
                "cluster": cluster,
            }
            try:
                with trio.fail_after(self._creation_timeout):
                    results = await self._cluster.call(
                        agent_id,
                        AgentMethod.CREATE_KERNELS,
                        args,
                        timeout=self._creation_timeout + 1.0,
                    )
                for item in results:
                    created[str(item["kernel_id"])] = item
            except (RemoteError, AgentUnavailable, AgentNotFound, trio.TooSlowError) as exc:
                failures[agent_id] = exc
            except (KeyError, TypeError) as exc:
                failures[agent_id] = AgentError(f"malformed create_kernels reply: {exc!r}")

        async with trio.open_nursery() as nursery:
            for agent_id, rows in by_agent.items():
                nursery.start_soon(create_on, agent_id, rows)
        if failures:
            agent_id, exc = next(iter(failures.items()))
            reason = _failure_reason(exc)
            log.warning("session %s failed to start on %s: %s", session_id, agent_id, exc)
            # Whatever did start, and anything a timed-out agent may still create, goes.
            leftovers = {
                row.id: row.agent
                for row in kernel_rows
                if str(row.id) in created
                or isinstance(failures.get(row.agent), trio.TooSlowError | AgentUnavailable)
            }
            await self._fail_start(session_id, leftovers, reason, _error_data(exc, agent_id))
            return
        stale: dict[uuid.UUID, str] = {}

        async def running(conn: Connection) -> SessionStatus:
            events.clear()
            stale.clear()
            status = SessionStatus.CREATING
            for row in kernel_rows:
                item = created[str(row.id)]
                try:
                    result = await transitions.transition_kernel(
                        conn,
                        row.id,
                        KernelStatus.RUNNING,
                        "running",
                        values=running_values(item),
                    )
                except InvalidTransition:
                    # Recorded by a reconcile pass that found it up (see sessions.reconcile).
                    if await kernel_status(conn, row.id) is not KernelStatus.RUNNING:
                        stale[row.id] = row.agent
                    continue
                events.extend(result.events)
                status = result.session_status
            return status

        status = await self._db.transaction(running)
        await publish_events(self._bus, events)
        if stale:
            # Destroyed (or failed) while the agents were creating it.
            await self._terminator.destroy_on_agents(stale, "user-requested")
            await self._terminator.finish_terminating(session_id)
            return
        if status is SessionStatus.RUNNING and session_row.session_type == SessionTypes.BATCH:
            self._batches.drive(session_id)

    async def _fail_start(
        self,
        session_id: SessionId,
        leftovers: Mapping[uuid.UUID, str],
        reason: str,
        error: Mapping[str, Any],
    ) -> None:
        """Move a session that could not start to ERROR and clean up what the agents made."""
        events: list[Event] = []

        async def write(conn: Connection) -> None:
            events.clear()
            row = (
                await conn.execute(
                    sa.select(sessions.c.status, sessions.c.status_data).where(
                        sessions.c.id == session_id
                    )
                )
            ).first()
            if row is None:
                return
            status = SessionStatus(row.status)
            data = merge_status_data(row.status_data, "error", dict(error))
            if status in PRE_START_STATUSES or status is SessionStatus.SCHEDULED:
                result = await transitions.transition_session(
                    conn,
                    session_id,
                    SessionStatus.ERROR,
                    reason,
                    status_data=data,
                    cascade_kernels=True,
                )
                events.extend(result.events)
            elif status is SessionStatus.ERROR:
                await conn.execute(
                    sa.update(sessions).where(sessions.c.id == session_id).values(status_data=data)
                )

        await self._db.transaction(write)
        await publish_events(self._bus, events)
        self._state.waiters.notify([session_id])
        await self._cluster.request_schedule()
        if leftovers:
            await self._terminator.destroy_leftovers(leftovers, reason)
