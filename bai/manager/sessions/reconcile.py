"""The deadline keeper: a loop that finishes what no task of any manager is finishing.

Every few seconds it starts SCHEDULED sessions nobody started (a manager that
died mid-way), records RUNNING the sessions in CREATING that no task of its
own is starting once their agents say (after :data:`ADOPT_GRACE`) that all
their kernels are up, moves sessions stuck in PREPARING/CREATING past the
creation deadline (plus the RPC deadline) to ERROR ``creation-timeout``,
retries the destruction of sessions TERMINATING past the termination deadline
and, after twice that, ends them ``termination-timeout``, moves sessions stuck
RESTARTING to ERROR ``restart-timeout``, and resumes the batch jobs no manager
holds.  Its first pass comes as the registry starts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.agent_api import AgentMethod
from bai.common.events import Event, EventBus, publish_events
from bai.common.rpc import RemoteError
from bai.common.types import (
    LIVE_KERNEL_STATUSES,
    PRE_START_STATUSES,
    InvalidTransition,
    KernelStatus,
    SessionId,
    SessionStatus,
)
from bai.manager import transitions
from bai.manager.db import UNAVAILABLE_ERRORS, Connection, Database
from bai.manager.errors import AgentNotFound, AgentUnavailable
from bai.manager.models.base import utcnow
from bai.manager.models.session import kernels, sessions
from bai.manager.sessions.batch import BatchDrivers
from bai.manager.sessions.queries import (
    SessionLookup,
    kernel_status,
    merge_status_data,
    running_values,
)
from bai.manager.sessions.start import Starter
from bai.manager.sessions.state import ClusterLink, LocalState, Timeouts
from bai.manager.sessions.terminate import Terminator, reason_of

__all__ = ["ADOPT_ASK_TIMEOUT", "ADOPT_GRACE", "SCHEDULED_GRACE", "Reconciler"]

log = logging.getLogger(__name__)

#: Seconds a SCHEDULED session may wait for the manager that scheduled it.
SCHEDULED_GRACE: Final = 2.0
#: Seconds a session may be PREPARING/CREATING before a manager that is not starting it asks
#: its agents whether its kernels are up (its creator may have died).
ADOPT_GRACE: Final = 2.0
#: Bound on that question (a trivial call): an agent too slow to answer is asked again next pass,
#: and one pass of the reconcile loop is not held up for long by an agent that is down.
ADOPT_ASK_TIMEOUT: Final = 2.0


class Reconciler:
    """The reconcile loop and its passes (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        cluster: ClusterLink,
        state: LocalState,
        lookup: SessionLookup,
        starter: Starter,
        terminator: Terminator,
        batches: BatchDrivers,
        timeouts: Timeouts,
    ) -> None:
        self._db = db
        self._bus = bus
        self._cluster = cluster
        self._state = state
        self._lookup = lookup
        self._starter = starter
        self._terminator = terminator
        self._batches = batches
        self._timeouts = timeouts

    async def run(self) -> None:
        """Reconcile every ``reconcile_interval`` seconds, until cancelled."""
        # The first pass comes at once: a restarted manager resumes what its predecessor left.
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("the session reconcile pass failed")
            await trio.sleep(self._timeouts.reconcile_interval)

    async def reconcile(self) -> None:
        """One pass of the deadline keeper (see the module docstring)."""
        watched = [
            SessionStatus.SCHEDULED,
            *PRE_START_STATUSES,
            SessionStatus.TERMINATING,
            SessionStatus.RESTARTING,
        ]
        rows = await self._db.fetch(
            sa.select(sessions.c.id, sessions.c.status, sessions.c.status_changed).where(
                sessions.c.status.in_([s.value for s in watched])
            )
        )
        now = utcnow()
        creation_limit = timedelta(seconds=self._timeouts.creation + self._timeouts.rpc)
        termination_limit = timedelta(seconds=self._timeouts.termination)
        for row in rows:
            sid = SessionId(row.id)
            status = SessionStatus(row.status)
            age = now - row.status_changed
            if status is SessionStatus.SCHEDULED:
                if age > timedelta(seconds=SCHEDULED_GRACE):
                    self._starter.start_scheduled([sid])
            elif status in PRE_START_STATUSES:
                if sid in self._state.starting or age <= timedelta(seconds=ADOPT_GRACE):
                    continue
                if await self._adopt_started(sid):
                    continue
                if age > creation_limit:
                    await self._fail_stuck(sid, "creation-timeout")
            elif status is SessionStatus.RESTARTING:
                if sid not in self._state.restarting and age > creation_limit:
                    await self._fail_stuck(sid, "restart-timeout")
            elif sid not in self._state.terminating and age > termination_limit:
                self._state.terminating.add(sid)
                self._state.spawn(self._retry_termination, sid, age > 2 * termination_limit)
        await self._batches.resume_unheld()

    async def _adopt_started(self, session_id: SessionId) -> bool:
        """Record a session RUNNING if its agents run all its kernels (its creator died).

        Written as the creator would have, from the agents' descriptions;
        a creator still alive finds its kernels RUNNING and leaves them so.
        Returns whether the session was moved.
        """
        rows = await self._db.fetch(
            sa.select(kernels.c.id, kernels.c.agent).where(kernels.c.session_id == session_id)
        )
        by_agent: dict[str, list[str]] = {}
        for row in rows:
            if row.agent is None:
                return False
            by_agent.setdefault(row.agent, []).append(str(row.id))
        described: dict[str, Mapping[str, Any]] = {}
        for agent_id, kernel_ids in by_agent.items():
            try:
                answer = await self._cluster.call(
                    agent_id,
                    AgentMethod.DESCRIBE_KERNELS,
                    {"kernel_ids": kernel_ids},
                    timeout=ADOPT_ASK_TIMEOUT,
                )
            except (RemoteError, AgentUnavailable, AgentNotFound, *UNAVAILABLE_ERRORS) as exc:
                # Not known to be up: the deadline still applies (finding the agent's
                # address reads the database, which may be what fails).
                log.info("could not ask %s about session %s: %s", agent_id, session_id, exc)
                return False
            for item in answer if isinstance(answer, list) else []:
                if isinstance(item, Mapping):
                    described[str(item.get("kernel_id"))] = item
        if not rows or any(str(row.id) not in described for row in rows):
            return False
        events: list[Event] = []

        async def write(conn: Connection) -> bool:
            events.clear()
            for row in rows:
                # Only kernels in CREATING were asked of their agents.
                if await kernel_status(conn, row.id, lock=True) is not KernelStatus.CREATING:
                    return False
            for row in rows:
                moved = await transitions.transition_kernel(
                    conn,
                    row.id,
                    KernelStatus.RUNNING,
                    "running",
                    values=running_values(described[str(row.id)]),
                )
                events.extend(moved.events)
            return True

        adopted = await self._db.transaction(write)
        await publish_events(self._bus, events)
        if adopted:
            log.info("session %s was up on its agents: recorded RUNNING", session_id)
            self._state.waiters.notify([session_id])
        return adopted

    async def _fail_stuck(self, session_id: SessionId, reason: str) -> None:
        rows = await self._db.fetch(
            sa.select(kernels.c.id, kernels.c.agent).where(
                kernels.c.session_id == session_id,
                kernels.c.agent.is_not(None),
                kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
            )
        )
        leftovers: dict[uuid.UUID, str] = {row.id: row.agent for row in rows}
        log.warning("session %s is stuck; moving it to ERROR (%s)", session_id, reason)

        async def write(conn: Connection) -> list[Event]:
            row = (
                await conn.execute(
                    sa.select(sessions.c.status, sessions.c.status_data).where(
                        sessions.c.id == session_id
                    )
                )
            ).first()
            if row is None:
                return []
            data = merge_status_data(
                row.status_data,
                "error",
                {"src": "manager", "name": "Timeout", "repr": f"stuck in {row.status}"},
            )
            try:
                moved = await transitions.transition_session(
                    conn,
                    session_id,
                    SessionStatus.ERROR,
                    reason,
                    status_data=data,
                    cascade_kernels=True,
                )
            except InvalidTransition:
                return []
            return list(moved.events)

        await publish_events(self._bus, await self._db.transaction(write))
        self._state.waiters.notify([session_id])
        await self._cluster.request_schedule()
        if leftovers:
            self._state.spawn(self._terminator.destroy_leftovers, leftovers, reason)

    async def _retry_termination(self, session_id: SessionId, forced: bool) -> None:
        try:
            info = await self._lookup.get_session_by_id(session_id)
            if info.status is not SessionStatus.TERMINATING:
                return
            targets: dict[uuid.UUID, str] = {
                k.id: k.agent
                for k in info.kernels
                if k.agent is not None and k.status is KernelStatus.TERMINATING
            }
            reason = reason_of(info.status_info, "user-requested")
            outcome = await self._terminator.destroy_on_agents(targets, reason)
            await self._terminator.finish_terminating(
                session_id,
                outcome=outcome,
                forced=forced,
                reason="termination-timeout" if forced else reason,
                unplaced=[k.id for k in info.kernels if k.agent is None],
            )
            await self._cluster.request_schedule()
        except Exception:
            log.exception("retrying the termination of session %s failed", session_id)
        finally:
            self._state.terminating.discard(session_id)
