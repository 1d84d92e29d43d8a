"""Ending sessions and kernels: destroy, restart, and the agents' reports of kernels' ends.

A session goes TERMINATING, its kernels are destroyed on their agents within
``manager.kernel-termination-timeout`` and it ends TERMINATED (what a failed
agent call leaves TERMINATING is retried by :mod:`bai.manager.sessions.reconcile`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import trio

from bai.common.agent_api import AgentErrorType, AgentMethod
from bai.common.errors import InvalidValue
from bai.common.events import AgentKernelTerminated, Event, EventBus, publish_events
from bai.common.rpc import RemoteError
from bai.common.types import (
    ACTIVE_STATUSES,
    KERNEL_PRE_START_STATUSES,
    PRE_START_STATUSES,
    RUNNING_STATUSES,
    STARTED_KERNEL_STATUSES,
    InvalidTransition,
    KernelStatus,
    SessionId,
    SessionResult,
    SessionStatus,
)
from bai.manager import transitions
from bai.manager.db import UNAVAILABLE_ERRORS, Connection, Database
from bai.manager.errors import AgentNotFound, AgentUnavailable
from bai.manager.models.session import kernels, sessions
from bai.manager.sessions.errors import SessionBusy, SessionNotFound, SessionNotRunning
from bai.manager.sessions.model import (
    DestroyResult,
    KernelRow,
    SessionInfo,
    SessionRef,
)
from bai.manager.sessions.queries import SessionLookup, running_values
from bai.manager.sessions.state import ClusterLink, LocalState, Timeouts
from bai.manager.transitions import check_reason

__all__ = ["Terminator", "reason_of"]

log = logging.getLogger(__name__)


def reason_of(text: object, fallback: str) -> str:
    """*text* if it is a valid status reason, *fallback* otherwise."""
    try:
        return check_reason(text)
    except InvalidValue:
        return fallback


def _kernel_gone(answer: object) -> bool:
    """Whether an agent answered that it does not have the kernel (nothing left to destroy)."""
    return isinstance(answer, RemoteError) and answer.remote_type == AgentErrorType.KERNEL_NOT_FOUND


class Terminator:
    """Destroys and restarts sessions, and applies the agents' reports of kernels' ends."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        cluster: ClusterLink,
        state: LocalState,
        lookup: SessionLookup,
        timeouts: Timeouts,
    ) -> None:
        self._db = db
        self._bus = bus
        self._cluster = cluster
        self._state = state
        self._lookup = lookup
        self._creation_timeout = timeouts.creation
        self._termination_timeout = timeouts.termination

    async def destroy_leftovers(self, targets: Mapping[uuid.UUID, str], reason: str) -> None:
        """Destroy the kernels a session that went to ERROR left on *targets* (kernel -> agent).

        A kernel that could not be destroyed now is left to its agent's next
        kernel sync, which destroys whatever the database does not have alive.
        """
        outcome = await self.destroy_on_agents(targets, reason)
        for kernel_id, answer in outcome.items():
            if isinstance(answer, BaseException) and not _kernel_gone(answer):
                agent_id = targets[kernel_id]
                log.warning(
                    "could not destroy kernel %s on agent %s (%s); left to its next kernel sync",
                    kernel_id,
                    agent_id,
                    answer,
                )
                self._cluster.resync(agent_id)

    async def destroy_on_agents(
        self, targets: Mapping[uuid.UUID, str], reason: str
    ) -> dict[uuid.UUID, dict[str, Any] | BaseException]:
        """Call ``destroy_kernel`` for each kernel on its agent (see :meth:`_call_each_kernel`).

        A kernel the agent does not have answers ``KernelNotFound``.
        """
        return await self._call_each_kernel(
            targets, AgentMethod.DESTROY_KERNEL, {"reason": reason}, self._termination_timeout
        )

    async def _call_each_kernel(
        self,
        targets: Mapping[uuid.UUID, str],
        method: str,
        args: Mapping[str, Any],
        limit: float,
    ) -> dict[uuid.UUID, dict[str, Any] | BaseException]:
        """Call *method* for each kernel on its agent, concurrently, within *limit* seconds.

        Returns the agent's answer per kernel, or the error that call met (a
        database that fails to give the agent's address included).
        """
        outcome: dict[uuid.UUID, dict[str, Any] | BaseException] = {}

        async def call(kernel_id: uuid.UUID, agent_id: str) -> None:
            try:
                with trio.fail_after(limit):
                    answer = await self._cluster.call(
                        agent_id,
                        method,
                        {"kernel_id": str(kernel_id), **args},
                        timeout=limit + 1.0,
                    )
                outcome[kernel_id] = answer if isinstance(answer, dict) else {}
            except (
                RemoteError,
                AgentUnavailable,
                AgentNotFound,
                trio.TooSlowError,
                *UNAVAILABLE_ERRORS,
            ) as exc:
                outcome[kernel_id] = exc

        async with trio.open_nursery() as nursery:
            for kernel_id, agent_id in targets.items():
                nursery.start_soon(call, kernel_id, agent_id)
        return outcome

    # ----------------------------------------------------------------- destroy

    async def destroy_session(
        self, session: SessionRef, *, forced: bool = False, reason: str = "user-requested"
    ) -> DestroyResult:
        """Destroy a session and wait (bounded) until its kernels are gone.

        A PENDING or SCHEDULED session is CANCELLED.  A running (or ERROR)
        session goes TERMINATING, its kernels are destroyed on their agents
        within ``manager.kernel-termination-timeout``, and it ends TERMINATED
        (the reconcile loop finishes what a failed agent call left
        TERMINATING).  A session being created, restarted or terminated
        raises :class:`SessionBusy` unless *forced*, which terminates it
        anyway and marks kernels whose agent does not answer TERMINATED.  An
        ended session is returned as it is.  Raises :class:`SessionNotFound`.
        """
        check_reason(reason)
        info = await self._lookup.resolve(session)
        return await self.terminate(info.id, reason=reason, forced=forced)

    async def terminate(
        self,
        session_id: SessionId,
        *,
        reason: str,
        forced: bool,
        result: SessionResult | None = None,
        exit_codes: Mapping[uuid.UUID, int] | None = None,
        busy_ok: bool = False,
    ) -> DestroyResult:
        """Destroy the session as :meth:`destroy_session` does.

        A batch job's end gives its *result* and the kernels' *exit_codes*
        (which the kernels' own ends do not replace); *busy_ok* terminates a
        busy session even when not *forced*.
        """
        events: list[Event] = []

        async def begin(conn: Connection) -> list[KernelRow]:
            events.clear()
            row = (
                await conn.execute(sa.select(sessions.c.status).where(sessions.c.id == session_id))
            ).first()
            if row is None:
                raise SessionNotFound(f"no session has the id {session_id}")
            status = SessionStatus(row.status)
            if status in (SessionStatus.TERMINATED, SessionStatus.CANCELLED):
                return []
            if status in (SessionStatus.PENDING, SessionStatus.SCHEDULED):
                moved = await transitions.transition_session(
                    conn, session_id, SessionStatus.CANCELLED, reason, cascade_kernels=True
                )
                events.extend(moved.events)
                return []
            busy = status in PRE_START_STATUSES or status in (
                SessionStatus.TERMINATING,
                SessionStatus.RESTARTING,
            )
            if busy and not forced and not busy_ok:
                raise SessionBusy(
                    f"the session is {status.value}; wait, or destroy it with forced=true"
                )
            if status is not SessionStatus.TERMINATING:
                moved = await transitions.transition_session(
                    conn,
                    session_id,
                    SessionStatus.TERMINATING,
                    reason,
                    result=result,
                    cascade_kernels=True,
                )
                events.extend(moved.events)
            for kernel_id, code in (exit_codes or {}).items():
                # The batch command's exit code, which the kernel's own end must not replace.
                await conn.execute(
                    sa.update(kernels).where(kernels.c.id == kernel_id).values(exit_code=code)
                )
            rows = await conn.execute(
                sa.select(kernels.c.id, kernels.c.agent, kernels.c.status).where(
                    kernels.c.session_id == session_id
                )
            )
            return [KernelRow(r.id, r.agent, KernelStatus(r.status)) for r in rows]

        self._state.terminating.add(session_id)
        try:
            kernel_rows = await self._db.transaction(begin)
            await publish_events(self._bus, events)
            targets = {
                k.id: k.agent
                for k in kernel_rows
                if k.agent is not None and k.status is KernelStatus.TERMINATING
            }
            outcome = await self.destroy_on_agents(targets, reason) if targets else {}
            stats = await self.finish_terminating(
                session_id,
                outcome=outcome,
                forced=forced,
                reason=reason,
                unplaced=[k.id for k in kernel_rows if k.agent is None],
            )
        finally:
            self._state.terminating.discard(session_id)
        await self._cluster.request_schedule()
        return DestroyResult(await self._lookup.get_session_by_id(session_id), stats)

    async def finish_terminating(
        self,
        session_id: SessionId,
        *,
        outcome: Mapping[uuid.UUID, dict[str, Any] | BaseException] | None = None,
        forced: bool = True,
        reason: str = "user-requested",
        unplaced: Sequence[uuid.UUID] = (),
    ) -> Mapping[str, Any] | None:
        """Move the session's TERMINATING kernels to TERMINATED after their agents answered.

        A kernel whose agent answered (or does not have it) ends with the
        agent's reason and exit code; one whose agent failed ends only when
        *forced*.  Returns the main kernel's last stats when known.
        """
        events: list[Event] = []
        outcome = outcome or {}
        stats: list[Mapping[str, Any] | None] = [None]

        async def write(conn: Connection) -> None:
            events.clear()
            rows = await conn.execute(
                sa.select(
                    kernels.c.id, kernels.c.status, kernels.c.cluster_role, kernels.c.exit_code
                ).where(kernels.c.session_id == session_id)
            )
            for row in rows:
                if KernelStatus(row.status) is not KernelStatus.TERMINATING:
                    continue
                answer = outcome.get(row.id)
                kernel_reason = reason
                exit_code: int | None = None
                values: dict[str, Any] = {}
                if isinstance(answer, dict):
                    kernel_reason = reason_of(answer.get("reason"), reason)
                    code = answer.get("exit_code")
                    if isinstance(code, int) and row.exit_code is None:
                        exit_code = code
                    last_stat = answer.get("last_stat")
                    if isinstance(last_stat, Mapping):
                        values["last_stat"] = dict(last_stat)
                        if row.cluster_role == "main":
                            stats[0] = dict(last_stat)
                elif _kernel_gone(answer) or row.id in unplaced:
                    kernel_reason = reason
                elif isinstance(answer, BaseException) or answer is None:
                    if not forced:
                        continue
                    kernel_reason = "force-terminated" if answer is not None else reason
                try:
                    moved = await transitions.transition_kernel(
                        conn,
                        row.id,
                        KernelStatus.TERMINATED,
                        kernel_reason,
                        exit_code=exit_code,
                        values=values,
                    )
                except InvalidTransition:
                    continue
                events.extend(moved.events)

        await self._db.transaction(write)
        await publish_events(self._bus, events)
        return stats[0]

    # ----------------------------------------------------------------- restart

    async def restart_session(self, session: SessionRef) -> SessionInfo:
        """Restart every kernel of a RUNNING session (same files, fresh interpreter state).

        The session goes RESTARTING and back to RUNNING; a kernel that does
        not come back within ``manager.kernel-creation-timeout`` goes to ERROR
        (``restart-failed``).  Raises :class:`SessionNotFound`,
        :class:`SessionNotRunning` or :class:`SessionBusy`.
        """
        info = await self._lookup.resolve(session)
        session_id = info.id
        events: list[Event] = []

        async def begin(conn: Connection) -> list[Any]:
            events.clear()
            row = (
                await conn.execute(sa.select(sessions.c.status).where(sessions.c.id == session_id))
            ).first()
            if row is None:
                raise SessionNotFound(f"no session has the id {session_id}")
            status = SessionStatus(row.status)
            if status is not SessionStatus.RUNNING:
                if status in ACTIVE_STATUSES and status not in (
                    SessionStatus.ERROR,
                    SessionStatus.PENDING,
                ):
                    raise SessionBusy(f"the session is {status.value}, not RUNNING")
                raise SessionNotRunning(f"the session is {status.value}, not RUNNING")
            moved = await transitions.transition_session(
                conn, session_id, SessionStatus.RESTARTING, "restarting", cascade_kernels=True
            )
            events.extend(moved.events)
            return (
                await conn.execute(
                    sa.select(kernels.c.id, kernels.c.agent).where(
                        kernels.c.session_id == session_id,
                        kernels.c.status == KernelStatus.RESTARTING.value,
                    )
                )
            ).all()

        self._state.restarting.add(session_id)
        try:
            rows = await self._db.transaction(begin)
            await publish_events(self._bus, events)
            answers = await self._call_each_kernel(
                {row.id: row.agent for row in rows},
                AgentMethod.RESTART_KERNEL,
                {},
                self._creation_timeout,
            )

            async def finish(conn: Connection) -> None:
                events.clear()
                for kernel_id, answer in answers.items():
                    if isinstance(answer, dict):
                        target, why, values = (
                            KernelStatus.RUNNING,
                            "restarted",
                            running_values(answer),
                        )
                    else:
                        target, why, values = KernelStatus.ERROR, "restart-failed", {}
                    try:
                        moved = await transitions.transition_kernel(
                            conn, kernel_id, target, why, values=values
                        )
                    except InvalidTransition:
                        continue
                    events.extend(moved.events)

            await self._db.transaction(finish)
            await publish_events(self._bus, events)
        finally:
            self._state.restarting.discard(session_id)
        return await self._lookup.get_session_by_id(session_id)

    # ------------------------------------------------------------ agent events

    async def handle_kernel_terminated(self, event: AgentKernelTerminated) -> None:
        """Apply an agent's ``agent_kernel_terminated`` report (:mod:`bai.manager.sessions`, 6.).

        A report about a session this process is starting waits until the
        start is over, so the start's own outcome (and its error details) is
        written first.
        """
        if SessionId(event.session_id) in self._state.starting:
            self._state.deferred.setdefault(SessionId(event.session_id), []).append(event)
            return
        reason = reason_of(event.reason, "kernel-terminated")
        events: list[Event] = []

        async def write(conn: Connection) -> SessionStatus | None:
            events.clear()
            row = (
                await conn.execute(
                    sa.select(kernels.c.status, kernels.c.exit_code).where(
                        kernels.c.id == event.kernel_id
                    )
                )
            ).first()
            if row is None:
                return None
            status = KernelStatus(row.status)
            if status in STARTED_KERNEL_STATUSES:
                target = KernelStatus.TERMINATED
            elif status in KERNEL_PRE_START_STATUSES:
                target = KernelStatus.ERROR
            else:
                return None
            exit_code = event.exit_code if row.exit_code is None else None
            # The end report may come before the destroy call's answer: keep its sample.
            values = {"last_stat": dict(event.last_stat)} if event.last_stat else None
            try:
                moved = await transitions.transition_kernel(
                    conn, event.kernel_id, target, reason, exit_code=exit_code, values=values
                )
            except (InvalidTransition, transitions.KernelRowNotFound):
                return None
            events.extend(moved.events)
            return moved.session_status

        status = await self._db.transaction(write)
        await publish_events(self._bus, events)
        if status is not None and status not in RUNNING_STATUSES:
            self._state.waiters.notify([event.session_id])
            await self._cluster.request_schedule()
