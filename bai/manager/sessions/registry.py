"""The session registry: the one object the rest of the manager asks about compute sessions.

:class:`SessionRegistry` builds the session services of this package, runs
their background work in its nursery, and passes each public call to the one
that does it (see :mod:`bai.manager.sessions` for a session's life).
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import trio

from bai.common.config import ManagerSection
from bai.common.events import (
    AgentKernelTerminated,
    Event,
    EventBus,
    EventBusError,
    SessionEvent,
    follow_events,
)
from bai.common.types import STARTING_STATUSES, SessionId
from bai.manager.db import Database
from bai.manager.protocols import AgentCaller, ScheduleRequester
from bai.manager.sessions.activity import SessionActivity
from bai.manager.sessions.batch import BatchDrivers
from bai.manager.sessions.enqueue import Enqueuer
from bai.manager.sessions.model import (
    DestroyResult,
    EnqueueResult,
    SessionInfo,
    SessionRef,
    SessionRequest,
)
from bai.manager.sessions.queries import SessionLookup
from bai.manager.sessions.reconcile import Reconciler
from bai.manager.sessions.relay import Relay
from bai.manager.sessions.services import ServiceAddress, Services
from bai.manager.sessions.start import Starter
from bai.manager.sessions.state import ClusterLink, LocalState, Timeouts, Waiters
from bai.manager.sessions.terminate import Terminator

__all__ = ["WAIT_POLL", "SessionRegistry"]

log = logging.getLogger(__name__)

#: Seconds between two polls of a waiter, in case an event was missed.
WAIT_POLL: Final = 2.0


class SessionRegistry:
    """Compute sessions from enqueue to termination; see :mod:`bai.manager.sessions`.

    Built with the manager's ``[manager]`` settings, its database and bus,
    *agents* to call them, *schedule* to ask for scheduling passes, the
    process's start *waiters* and *placed*, the channel on which the
    dispatcher hands over the sessions it placed.  Run :meth:`serve` in the
    manager's nursery: it handles agents' ``agent_kernel_terminated`` reports,
    runs the reconcile loop and owns the tasks that start sessions and run
    batch jobs.
    """

    def __init__(
        self,
        section: ManagerSection,
        db: Database,
        bus: EventBus,
        *,
        agents: AgentCaller,
        schedule: ScheduleRequester,
        waiters: Waiters,
        placed: trio.MemoryReceiveChannel[tuple[SessionId, ...]],
    ) -> None:
        timeouts = Timeouts(
            rpc=float(section.rpc_timeout),
            creation=float(section.kernel_creation_timeout),
            termination=float(section.kernel_termination_timeout),
            flush=float(section.execute_flush_timeout),
            reconcile_interval=max(0.2, min(5.0, float(section.scheduler_interval))),
        )
        self._bus = bus
        self._placed = placed
        self._state = LocalState(waiters)
        cluster = ClusterLink(agents, schedule)
        self._lookup = SessionLookup(db)
        self.activity = SessionActivity(db)
        self._relay = Relay(cluster, self._lookup, timeouts, self.activity)
        self._services = Services(self._relay)
        self._terminator = Terminator(db, bus, cluster, self._state, self._lookup, timeouts)
        self._batches = BatchDrivers(
            db, bus, self._state, self._lookup, self._relay, self._terminator
        )
        self._starter = Starter(
            db, bus, cluster, self._state, self._terminator, self._batches, timeouts.creation
        )
        self._enqueuer = Enqueuer(db, bus, cluster, self._lookup)
        self._reconciler = Reconciler(
            db,
            bus,
            cluster,
            self._state,
            self._lookup,
            self._starter,
            self._terminator,
            self._batches,
            timeouts,
        )

    @property
    def batch_lease(self) -> float:
        """Seconds this manager's claims on batch jobs hold unless renewed."""
        return self._batches.lease

    @batch_lease.setter
    def batch_lease(self, seconds: float) -> None:
        self._batches.lease = seconds

    # ------------------------------------------------------------------ service

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (see the class docstring); report started once events flow."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        follow_events,
                        self._bus,
                        (SessionEvent,),
                        self._on_session_event,
                        buffer_size=100_000,
                        on_overflow=self._on_session_overflow,
                    )
                )
                await nursery.start(self._consume_kernel_events)
                nursery.start_soon(self._reconciler.run)
                await nursery.start(self.activity.serve)
                nursery.start_soon(self._start_placed)
                self._state.nursery = nursery
                task_status.started()
        finally:
            self._state.nursery = None

    async def _on_session_event(self, event: Event) -> None:
        # Session events from any manager wake this process's waiters; the
        # services also wake them right after their own moves, so that the
        # waiters do not depend on the bus.
        assert isinstance(event, SessionEvent)
        self._state.waiters.notify([event.session_id])

    @staticmethod
    def _on_session_overflow() -> None:
        # Waiters also poll the database, so a missed wake-up only delays them.
        log.warning("session events came faster than they were handled")

    async def _start_placed(self) -> None:
        """Start the sessions the dispatcher placed, as it hands them over."""
        async for session_ids in self._placed:
            self._starter.start_scheduled(session_ids)

    async def _consume_kernel_events(self, *, task_status: trio.TaskStatus[None]) -> None:
        types = (AgentKernelTerminated,)
        async with self._bus.consume("manager.kernel-terminated", types=types) as c:
            task_status.started()
            async for delivery in c:
                event = delivery.event
                assert isinstance(event, AgentKernelTerminated)
                try:
                    await self.handle_kernel_terminated(event)
                except Exception:
                    log.exception("handling the end of kernel %s failed", event.kernel_id)
                try:
                    await delivery.ack()
                except trio.ClosedResourceError:
                    return
                except EventBusError as exc:
                    # Delivered again later; handling a report twice changes nothing.
                    log.warning("could not acknowledge agent_kernel_terminated: %s", exc)

    # ------------------------------------------------------------------- lookup

    async def get_session_by_id(self, session_id: uuid.UUID) -> SessionInfo:
        """The session with this id, in any status; :class:`SessionNotFound` otherwise."""
        return await self._lookup.get_session_by_id(session_id)

    async def get_session(
        self,
        ref: str | uuid.UUID,
        *,
        access_key: str | None = None,
        include_terminated: bool = False,
    ) -> SessionInfo:
        """Find a session by id, name or id prefix (:meth:`SessionLookup.get_session`)."""
        return await self._lookup.get_session(
            ref, access_key=access_key, include_terminated=include_terminated
        )

    async def match_sessions(
        self, access_key: str | None, text: str, *, limit: int = 10
    ) -> list[SessionInfo]:
        """Active sessions whose name or id starts with *text* (``match``), newest first."""
        return await self._lookup.match_sessions(access_key, text, limit=limit)

    async def wait_for_start(
        self,
        session_id: uuid.UUID,
        timeout: float | None = None,  # noqa: ASYNC109 - maxWaitSeconds is the contract
    ) -> SessionInfo:
        """Wait until the session leaves PENDING … CREATING, at most *timeout* seconds.

        Returns the session as it is then (RUNNING, ERROR, CANCELLED, ... or,
        when the deadline passed first, still starting).  *timeout* ``None``
        waits without a limit (the spec's ``maxWaitSeconds`` of 0).
        """
        sid = SessionId(session_id)
        deadline = math.inf if timeout is None else trio.current_time() + max(timeout, 0.0)
        while True:
            event = self._state.waiters.waiter(sid)
            info = await self._lookup.get_session_by_id(sid)
            if info.status not in STARTING_STATUSES or trio.current_time() >= deadline:
                return info
            with trio.move_on_at(min(deadline, trio.current_time() + WAIT_POLL)):
                await event.wait()

    # ---------------------------------------------------------------- lifecycle

    async def enqueue_session(self, access_key: str, request: SessionRequest) -> EnqueueResult:
        """Validate *request* and queue a new session (:meth:`Enqueuer.enqueue_session`)."""
        return await self._enqueuer.enqueue_session(access_key, request)

    async def destroy_session(
        self, session: SessionRef, *, forced: bool = False, reason: str = "user-requested"
    ) -> DestroyResult:
        """Destroy a session and wait (bounded) until its kernels are gone
        (:meth:`Terminator.destroy_session`)."""
        return await self._terminator.destroy_session(session, forced=forced, reason=reason)

    async def restart_session(self, session: SessionRef) -> SessionInfo:
        """Restart every kernel of a RUNNING session (:meth:`Terminator.restart_session`)."""
        return await self._terminator.restart_session(session)

    async def rename_session(self, session: SessionRef, new_name: str) -> SessionInfo:
        """Give an active session a new name (:meth:`Enqueuer.rename_session`)."""
        return await self._enqueuer.rename_session(session, new_name)

    async def handle_kernel_terminated(self, event: AgentKernelTerminated) -> None:
        """Apply an agent's ``agent_kernel_terminated`` report
        (:meth:`Terminator.handle_kernel_terminated`)."""
        await self._terminator.handle_kernel_terminated(event)

    async def reconcile(self) -> None:
        """One pass of the deadline keeper (:meth:`Reconciler.reconcile`)."""
        await self._reconciler.reconcile()

    # ------------------------------------------------------------- kernel relay

    async def execute(
        self,
        session: SessionRef,
        *,
        mode: str,
        code: str = "",
        run_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        flush_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One execute call of the spec's long-poll, relayed to the main kernel
        (:meth:`Relay.execute`)."""
        return await self._relay.execute(
            session,
            mode=mode,
            code=code,
            run_id=run_id,
            options=options,
            flush_timeout=flush_timeout,
        )

    async def interrupt(self, session: SessionRef) -> None:
        """Send an interrupt to the main kernel's current run (no guarantee it stops)."""
        await self._relay.interrupt(session)

    async def complete(
        self, session: SessionRef, code: str, options: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Auto-completion candidates for *code* from the main kernel (may be empty)."""
        return await self._relay.complete(session, code, options)

    async def upload_files(
        self, session: SessionRef, files: Sequence[tuple[str, bytes]]
    ) -> list[dict[str, Any]]:
        """Write *files* under the main kernel's ``/home/work`` (:meth:`Relay.upload_files`)."""
        return await self._relay.upload_files(session, files)

    async def download_files(self, session: SessionRef, paths: Sequence[str]) -> list[bytes]:
        """A tar archive of each path (file or folder) under the main kernel's ``/home/work``."""
        return await self._relay.download_files(session, paths)

    async def download_single(self, session: SessionRef, path: str) -> bytes:
        """The content of one regular file under the main kernel's ``/home/work``."""
        return await self._relay.download_single(session, path)

    async def list_files(self, session: SessionRef, path: str = ".") -> dict[str, Any]:
        """The main kernel's listing of *path*: ``{"files": JSON text, "errors", "abspath"}``."""
        return await self._relay.list_files(session, path)

    async def get_logs(self, session: SessionRef) -> str:
        """The main kernel's recent console log (the runner's output), as text."""
        return await self._relay.get_logs(session)

    # ---------------------------------------------------------------- services

    async def start_service(
        self,
        info: SessionInfo,
        app: str,
        *,
        port: int | None = None,
        envs: Mapping[str, str] | None = None,
    ) -> ServiceAddress:
        """Start the main kernel's *app* unless it runs (:meth:`Services.start`)."""
        return await self._services.start(info, app, port=port, envs=envs)

    async def shutdown_service(self, info: SessionInfo, app: str) -> str:
        """Stop the main kernel's *app* (:meth:`Services.shutdown`)."""
        return await self._services.shutdown(info, app)
