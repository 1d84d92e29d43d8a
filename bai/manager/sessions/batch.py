"""Driving batch jobs: run a batch session's startup command, then end the session by its result.

A job is driven by one manager at a time, and recoverable from the database
alone: the driver claims it (``sessions.batch_driver``, a lease in
``batch_lease`` renewed every third of :data:`BATCH_LEASE`, taken under the
session's row lock), records its deadline (``batch_deadline``) and, just
before its call, that it sent it (``batch_sent``).  A job whose lease ran out
is claimed by the next reconcile pass of any manager, which resumes it with
``continue`` instead of sending it again: a job never runs twice.
"""

from __future__ import annotations

import logging
import math
import secrets
import uuid
from datetime import timedelta
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.events import (
    Event,
    EventBus,
    ExecutionCancelled,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    publish_events,
)
from bai.common.types import RUNNING_STATUSES, SessionId, SessionResult, SessionStatus, SessionTypes
from bai.manager.db import UNAVAILABLE_ERRORS, Connection, Database
from bai.manager.errors import AgentUnavailable
from bai.manager.models.base import utcnow
from bai.manager.models.session import sessions
from bai.manager.sessions.errors import AgentError, InvalidSessionRequest, SessionNotRunning
from bai.manager.sessions.model import BatchClaim, SessionInfo
from bai.manager.sessions.queries import SessionLookup
from bai.manager.sessions.relay import Relay
from bai.manager.sessions.state import LocalState
from bai.manager.sessions.terminate import Terminator

__all__ = ["BATCH_FLUSH_TIMEOUT", "BATCH_LEASE", "BATCH_RESUME_RETRY", "BatchDrivers"]

log = logging.getLogger(__name__)

#: How long one batch-mode execute call waits before answering ``continued``.
BATCH_FLUSH_TIMEOUT: Final = 30.0
#: Seconds a manager's claim on a batch job holds unless renewed (it renews every third of it).
BATCH_LEASE: Final = 15.0
#: Seconds between two tries to resume a batch job whose run a dead driver's call still holds.
BATCH_RESUME_RETRY: Final = 1.0
#: Seconds between tries to reach the agent of a batch job that stopped answering.
BATCH_AGENT_RETRY: Final = 2.0
# What the agent's refusals of a ``continue`` say (bai.agent.server, bai.agent.runnerlink).
_RUN_BUSY: Final = "another execute call is already waiting"
_RUN_UNKNOWN: Final = "no run "


class BatchDrivers:
    """The batch jobs this manager drives, each in a task of its own."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        state: LocalState,
        lookup: SessionLookup,
        relay: Relay,
        terminator: Terminator,
    ) -> None:
        self._db = db
        self._bus = bus
        self._state = state
        self._lookup = lookup
        self._relay = relay
        self._terminator = terminator
        # Names this manager in the batch jobs it drives (sessions.batch_driver).
        self._driver_id = secrets.token_hex(16)
        #: Seconds this manager's claims hold unless renewed (:data:`BATCH_LEASE`).
        self.lease = BATCH_LEASE
        #: The sessions whose jobs a task of this manager drives now.
        self.driving: set[SessionId] = set()

    def drive(self, session_id: SessionId) -> None:
        """Drive the session's job in the background, unless another manager holds it."""
        self._state.spawn(self._task, session_id)

    async def resume_unheld(self) -> None:
        """Drive the RUNNING batch jobs no manager holds (their driver died or never began)."""
        rows = await self._db.fetch(
            sa.select(sessions.c.id, sessions.c.batch_lease).where(
                sessions.c.status.in_([s.value for s in RUNNING_STATUSES]),
                sessions.c.session_type == SessionTypes.BATCH,
            )
        )
        now = utcnow()
        for row in rows:
            sid = SessionId(row.id)
            # The claim decides; this only spares it the jobs plainly held.
            if sid not in self.driving and (row.batch_lease is None or row.batch_lease <= now):
                self.drive(sid)

    async def _task(self, session_id: SessionId) -> None:
        if session_id in self.driving:
            return
        self.driving.add(session_id)
        try:
            claim = await self.claim(session_id)
            if claim is None:
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew_lease, session_id, nursery.cancel_scope)
                await self._run(session_id, claim)
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("the batch job of session %s failed", session_id)
        finally:
            self.driving.discard(session_id)

    async def claim(self, session_id: SessionId) -> BatchClaim | None:
        """Make this manager the driver of a RUNNING batch job, unless another one holds it.

        The first claim starts the job: it records the deadline.  The row lock
        (the write transaction on SQLite) puts two managers' claims one after
        the other, so only one of them finds the job free.
        """

        async def write(conn: Connection) -> BatchClaim | None:
            row = (
                await conn.execute(
                    sa.select(
                        sessions.c.status,
                        sessions.c.session_type,
                        sessions.c.batch_timeout,
                        sessions.c.batch_deadline,
                        sessions.c.batch_sent,
                        sessions.c.batch_driver,
                        sessions.c.batch_lease,
                    )
                    .where(sessions.c.id == session_id)
                    .with_for_update()
                )
            ).first()
            if (
                row is None
                or SessionStatus(row.status) not in RUNNING_STATUSES
                or row.session_type != SessionTypes.BATCH
            ):
                return None
            now = utcnow()
            held = row.batch_lease is not None and row.batch_lease > now
            if row.batch_driver not in (None, self._driver_id) and held:
                return None
            started = row.batch_sent is not None
            deadline = row.batch_deadline
            if row.batch_driver is None and row.batch_timeout:
                deadline = now + timedelta(seconds=row.batch_timeout)
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id)
                .values(
                    batch_driver=self._driver_id,
                    batch_lease=now + timedelta(seconds=self.lease),
                    batch_deadline=deadline,
                )
            )
            return BatchClaim(started=started, deadline=deadline)

        return await self._db.transaction(write)

    async def _renew_lease(self, session_id: SessionId, driver: trio.CancelScope) -> None:
        """Extend this manager's claim on a batch job; stop the driver once it lost the claim."""

        async def write(conn: Connection) -> bool:
            moved = await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id, sessions.c.batch_driver == self._driver_id)
                .values(batch_lease=utcnow() + timedelta(seconds=self.lease))
            )
            return moved.rowcount > 0

        while True:
            await trio.sleep(self.lease / 3)
            try:
                held = await self._db.transaction(write)
            except UNAVAILABLE_ERRORS as exc:
                # Two more tries before the lease runs out and another manager may resume it.
                log.warning("could not renew the batch lease of session %s: %s", session_id, exc)
                continue
            if not held:
                log.warning("another manager took over the batch job of session %s", session_id)
                driver.cancel()
                return

    async def _run(self, session_id: SessionId, claim: BatchClaim) -> None:
        info = await self._lookup.get_session_by_id(session_id)
        command = info.startup_command or ""
        run_id = f"batch-{session_id.hex[:16]}"
        limit = math.inf
        if claim.deadline is not None:
            limit = (claim.deadline - utcnow()).total_seconds()
        result: dict[str, Any] = {}
        if not claim.started:
            await self._mark_sent(session_id)
            await publish_events(self._bus, [ExecutionStarted(session_id=session_id)])
        with trio.move_on_after(limit) as scope:
            try:
                if claim.started:
                    result = await self._resume(info, run_id)
                else:
                    result = await self._send(info, run_id, command)
                while result.get("status") != "finished":
                    mode = "input" if result.get("status") == "waiting-input" else "continue"
                    try:
                        result = await self._relay.execute(
                            info, mode=mode, run_id=run_id, flush_timeout=BATCH_FLUSH_TIMEOUT
                        )
                    except AgentUnavailable as exc:
                        result = await self._after_outage(info, run_id, exc)
            except (SessionNotRunning, AgentError, InvalidSessionRequest) as exc:
                # The kernel went away: its agent's report of its end ends the session.
                log.info("batch job of session %s ended early: %s", session_id, exc)
                await publish_events(self._bus, [ExecutionCancelled(session_id=session_id)])
                return
        ended: Event
        if scope.cancelled_caught:
            outcome, reason, exit_code = SessionResult.FAILURE, "batch-timeout", None
            ended = ExecutionTimeout(session_id=session_id)
        else:
            code = result.get("exitCode")
            exit_code = code if isinstance(code, int) else -1
            success = exit_code == 0
            outcome = SessionResult.SUCCESS if success else SessionResult.FAILURE
            reason = "task-finished" if success else "task-failed"
            ended = ExecutionFinished(session_id=session_id)
        await publish_events(self._bus, [ended])
        codes: dict[uuid.UUID, int] = {}
        if exit_code is not None:
            codes[info.main_kernel.id] = exit_code
        await self._terminator.terminate(
            session_id, reason=reason, forced=True, result=outcome, exit_codes=codes, busy_ok=True
        )

    async def _mark_sent(self, session_id: SessionId) -> None:
        """Record, before the call, that this job goes to its kernel.

        A driver that dies before this leaves a job that never ran: the next
        one starts it.  One that dies after it leaves a job the next driver
        resumes, or fails if its kernel never got it: never a job run twice.
        """

        async def write(conn: Connection) -> None:
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id, sessions.c.batch_driver == self._driver_id)
                .values(batch_sent=utcnow())
            )

        await self._db.transaction(write)

    async def _send(self, info: SessionInfo, run_id: str, command: str) -> dict[str, Any]:
        """Start the job in its kernel; the first answer about it."""
        try:
            return await self._relay.execute(
                info,
                mode="batch",
                run_id=run_id,
                options={"exec": command},
                flush_timeout=BATCH_FLUSH_TIMEOUT,
            )
        except AgentUnavailable as exc:
            # Whether the job got there is unknown: only a resume can tell, never a resend.
            return await self._after_outage(info, run_id, exc)

    async def _after_outage(
        self, info: SessionInfo, run_id: str, exc: AgentUnavailable
    ) -> dict[str, Any]:
        """Wait for the job's agent to answer again; then the first answer about the job.

        A LOST agent's sessions wait for it (``lost-agent-grace``), and so
        does their driver, still under the job's deadline.  Raises
        :class:`SessionNotRunning` once the session ended meanwhile.
        """
        log.info("the agent of batch session %s is unavailable (%s); waiting", info.id, exc)
        while True:
            await trio.sleep(BATCH_AGENT_RETRY)
            current = await self._lookup.get_session_by_id(info.id)
            if current.status not in RUNNING_STATUSES:
                raise SessionNotRunning(f"the session is {current.status.value}")
            try:
                return await self._resume(current, run_id)
            except AgentUnavailable:
                continue

    async def _resume(self, info: SessionInfo, run_id: str) -> dict[str, Any]:
        """The first answer about a job another driver started (most likely one that died).

        The dead driver's last ``continue`` may still wait on the run in the
        agent (for at most :data:`BATCH_FLUSH_TIMEOUT`), so a refusal that
        says so is tried again.  A run the agent does not know was lost on the
        way (its driver died between recording the call and making it) or was
        forgotten by its agent (restarted since): starting it again could run it twice, so
        it is answered ``finished`` with no exit code (recorded as -1) and the
        job fails.
        """
        while True:
            try:
                return await self._relay.execute(
                    info, mode="continue", run_id=run_id, flush_timeout=BATCH_FLUSH_TIMEOUT
                )
            except InvalidSessionRequest as exc:
                if _RUN_BUSY in str(exc):
                    await trio.sleep(BATCH_RESUME_RETRY)
                    continue
                if _RUN_UNKNOWN not in str(exc):
                    raise
                log.warning("the batch job of session %s is lost: %s", info.id, exc)
                return {"runId": run_id, "status": "finished", "exitCode": None}
