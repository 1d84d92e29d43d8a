"""The agent pool: the manager's one Trio service for its agents.

:class:`AgentPool` follows the agents' events, registers them
(:mod:`~bai.manager.agents.beats`, :mod:`~bai.manager.agents.registration`),
judges their liveness (:mod:`~bai.manager.agents.liveness`), keeps their
kernels in step (:mod:`~bai.manager.agents.sync`) and calls them
(:mod:`~bai.manager.agents.clients`); see :mod:`bai.manager.agents` for what
it does and guarantees.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import trio

from bai.common.config import ManagerSection
from bai.common.errors import InvalidValue
from bai.common.events import (
    AgentHeartbeat,
    AgentStarted,
    AgentTerminated,
    Event,
    EventBus,
    follow_events,
    publish_events,
)
from bai.common.types import LIVE_KERNEL_STATUSES, AgentId
from bai.manager.agents.beats import Beat, parse_beat
from bai.manager.agents.clients import AgentClients
from bai.manager.agents.liveness import (
    SHUTDOWN_GRACE,
    end_kernels_of,
    silent_too_long,
    strand_kernels_of,
)
from bai.manager.agents.registration import register_agent
from bai.manager.agents.sync import KernelSync
from bai.manager.db import Connection, Database
from bai.manager.models.base import utcnow
from bai.manager.models.resource import AgentStatus, agents
from bai.manager.models.session import kernels
from bai.manager.protocols import ScheduleRequester, SessionWaiters

__all__ = ["AgentPool"]

log = logging.getLogger(__name__)


def _agent_events_overflowed() -> None:
    # Heartbeats repeat: missing a few only delays an update.
    log.warning("agent events came faster than they were handled")


class AgentPool:
    """Agents as the manager sees them; see :mod:`bai.manager.agents`.

    Built with the manager's ``[manager]`` settings, its database and bus,
    *schedule* (asked for a pass of every manager's dispatcher whenever
    capacity appears or disappears) and *waiters* (woken when the pool moves
    a session's kernels).  It is the manager's
    :class:`~bai.manager.protocols.AgentCaller`.
    """

    def __init__(
        self,
        section: ManagerSection,
        db: Database,
        bus: EventBus,
        *,
        schedule: ScheduleRequester,
        waiters: SessionWaiters,
    ) -> None:
        self._db = db
        self._bus = bus
        self._schedule = schedule
        self._waiters = waiters
        self.heartbeat_timeout = float(section.heartbeat_timeout)
        self.lost_agent_grace = float(section.lost_agent_grace)
        rpc_timeout = float(section.rpc_timeout)
        self._last_seen: dict[str, float] = {}
        self._written: dict[str, Beat] = {}
        self._images_seen: dict[str, str] = {}
        self._bad_groups: set[tuple[str, str]] = set()
        self._clients = AgentClients(db, rpc_timeout, self._heard_addr)
        self._sync = KernelSync(db, bus, self._clients, waiters, rpc_timeout)
        self._started_at = 0.0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: heartbeat handling, the LOST checker and the RPC clients."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._follow, nursery.cancel_scope)
                self._clients.nursery = self._sync.nursery = nursery
                self._started_at = trio.current_time()
                nursery.start_soon(self._check_liveness)
                task_status.started()
        finally:
            self._clients.nursery = self._sync.nursery = None

    async def _follow(
        self, pool_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            await follow_events(
                self._bus,
                (AgentHeartbeat, AgentStarted, AgentTerminated),
                self._on_event,
                buffer_size=10_000,
                on_overflow=_agent_events_overflowed,
                task_status=task_status,
            )
        finally:
            # The bus ended the subscription: the pool stops with it.
            pool_scope.cancel()

    async def _on_event(self, event: Event) -> None:
        try:
            await self._handle_event(event)
        except Exception:
            log.exception("handling %s failed", event.name)

    async def _handle_event(self, event: Event) -> None:
        if isinstance(event, AgentHeartbeat):
            await self.handle_heartbeat(event.agent_id, event.agent_info)
        elif isinstance(event, AgentStarted):
            # The agent (re)started: what it runs may have changed behind our back.
            self._written.pop(event.agent_id, None)
            self._sync.forget(event.agent_id)
        elif isinstance(event, AgentTerminated) and event.reason != "agent-lost":
            await self._mark(event.agent_id, AgentStatus.TERMINATED)

    # --------------------------------------------------------------- heartbeats

    async def handle_heartbeat(self, agent_id: str, info: Mapping[str, Any]) -> None:
        """Register or refresh *agent_id* from its ``agent_info`` (:mod:`bai.manager.agents`)."""
        try:
            if not isinstance(agent_id, str) or not 0 < len(agent_id) <= 64:
                raise InvalidValue("must be 1 to 64 characters", value=agent_id, field="agent_id")
            beat = parse_beat(info)
        except InvalidValue as exc:
            log.warning("ignoring a malformed heartbeat of agent %r: %s", agent_id, exc)
            return
        self._last_seen[agent_id] = trio.current_time()
        previous = self._written.get(agent_id)
        row_changed = previous is None or not previous.same_row(beat)
        images_changed = self._images_seen.get(agent_id) != beat.images_digest
        if row_changed or images_changed:
            if not await self._register(agent_id, beat, row=row_changed, images=images_changed):
                return
            self._written[agent_id] = beat
            self._images_seen[agent_id] = beat.images_digest
            if previous is None or previous.available_slots != beat.available_slots:
                await self._schedule.request_schedule()
        await self._sync.on_heartbeat(agent_id, beat.live_kernels)

    async def _register(self, agent_id: str, beat: Beat, *, row: bool, images: bool) -> bool:
        """Write the agent's row as ALIVE and its images, in one transaction.

        The images are there as soon as the agent is, so a session asking for
        one never races the agent's registration.  Returns False (nothing
        written) if the agent's resource group does not exist.
        """

        async def write(conn: Connection) -> bool:
            return await register_agent(conn, agent_id, beat, row=row, images=images)

        try:
            registered = await self._db.transaction(write)
        except sa.exc.IntegrityError:
            # Another manager inserted the same agent or image first; now they exist.
            registered = await self._db.transaction(write)
        key = (agent_id, beat.scaling_group)
        if not registered:
            if key not in self._bad_groups:
                self._bad_groups.add(key)
                log.error(
                    "agent %s belongs to resource group %r, which does not exist; "
                    "it will not receive kernels until the group is created",
                    agent_id,
                    beat.scaling_group,
                )
            return False
        self._bad_groups.discard(key)
        return True

    # ----------------------------------------------------------------- liveness

    async def _check_liveness(self) -> None:
        period = min(max(self.heartbeat_timeout / 4, 0.1), 5.0)
        while True:
            await trio.sleep(period)
            try:
                await self.check_liveness()
            except Exception:
                log.exception("the agent liveness check failed")

    async def check_liveness(self) -> list[str]:
        """Declare LOST every ALIVE agent silent for ``heartbeat-timeout``; return their ids.

        Silent as :func:`silent_too_long` judges it, from this bus's read health.

        Also ends the leftover kernels of agents that shut down more than
        :data:`SHUTDOWN_GRACE` seconds ago, or were declared LOST more than
        ``lost-agent-grace`` seconds ago.
        """
        alive = await self._db.fetch(sa.select(agents.c.id).where(agents.c.status == "ALIVE"))
        alive_ids = set(alive.scalars())
        for agent_id in list(self._written):
            if agent_id not in alive_ids:
                # Declared lost or terminated elsewhere: the next heartbeat revives it.
                del self._written[agent_id]
        lost: list[str] = []
        for agent_id in sorted(alive_ids):
            last = self._last_seen.get(agent_id, self._started_at)
            silent = silent_too_long(last, self._bus.read_health(), self.heartbeat_timeout)
            if silent and await self._mark(agent_id, AgentStatus.LOST):
                lost.append(agent_id)
        await self._reap_departed()
        return lost

    async def mark_lost(self, agent_id: str) -> bool:
        """Declare *agent_id* LOST now (as the checker would); False if it was not ALIVE."""
        return await self._mark(agent_id, AgentStatus.LOST)

    async def _mark(self, agent_id: str, status: AgentStatus) -> bool:
        events: list[Event] = []
        touched: set[uuid.UUID] = set()

        async def write(conn: Connection) -> bool:
            events.clear()
            touched.clear()
            row = (
                await conn.execute(
                    sa.select(agents.c.status).where(agents.c.id == agent_id).with_for_update()
                )
            ).first()
            if row is None or AgentStatus(row.status) is not AgentStatus.ALIVE:
                return False
            now = utcnow()
            values: dict[str, Any] = {"status": status, "status_changed": now}
            if status is AgentStatus.LOST:
                values["lost_at"] = now
            await conn.execute(sa.update(agents).where(agents.c.id == agent_id).values(values))
            if status is AgentStatus.LOST:
                events.extend(await strand_kernels_of(conn, agent_id, touched))
            return True

        changed = await self._db.transaction(write)
        self._written.pop(agent_id, None)
        self._sync.forget(agent_id)
        if not changed:
            return False
        log.warning("agent %s is %s", agent_id, status.value)
        if status is AgentStatus.LOST:
            events.append(AgentTerminated(agent_id=AgentId(agent_id), reason="agent-lost"))
        await publish_events(self._bus, events)
        self._waiters.notify(touched)
        await self._clients.close(agent_id)
        await self._schedule.request_schedule()
        return True

    async def _reap_departed(self) -> None:
        """End the kernels still alive on agents that shut down or were lost a while ago."""
        now = utcnow()
        departed_long_ago = sa.or_(
            sa.and_(
                agents.c.status == AgentStatus.TERMINATED.value,
                agents.c.status_changed < now - timedelta(seconds=SHUTDOWN_GRACE),
            ),
            sa.and_(
                agents.c.status == AgentStatus.LOST.value,
                agents.c.status_changed < now - timedelta(seconds=self.lost_agent_grace),
            ),
        )
        rows = await self._db.fetch(
            sa.select(kernels.c.agent)
            .distinct()
            .select_from(kernels.join(agents, kernels.c.agent == agents.c.id))
            .where(
                departed_long_ago,
                kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
            )
        )
        departed = rows.scalars()
        if not departed:
            return
        events: list[Event] = []
        touched: set[uuid.UUID] = set()

        async def write(conn: Connection) -> None:
            events.clear()
            touched.clear()
            # Again under the row locks: an agent heard meanwhile is ALIVE again.
            states = await conn.execute(
                sa.select(agents.c.id, agents.c.status)
                .where(agents.c.id.in_(departed), departed_long_ago)
                .with_for_update()
            )
            for state in states:
                lost = state.status == AgentStatus.LOST
                reason = "agent-lost" if lost else "agent-terminated"
                events.extend(await end_kernels_of(conn, [state.id], reason, touched))

        await self._db.transaction(write)
        await publish_events(self._bus, events)
        self._waiters.notify(touched)
        if events:
            await self._schedule.request_schedule()

    # --------------------------------------------------------------------- RPC

    async def call(
        self,
        agent_id: str,
        method: str,
        args: Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - each call's deadline is the contract
    ) -> Any:
        """Call *method* on *agent_id* (see :meth:`AgentClients.call`)."""
        return await self._clients.call(agent_id, method, args, timeout=timeout)

    def resync(self, agent_id: str) -> None:
        """Reconcile *agent_id*'s kernels again at its next heartbeat.

        For a caller that could not destroy a kernel there: the sync destroys
        every kernel the agent runs that the database does not have alive.
        """
        self._sync.resync(agent_id)

    def _heard_addr(self, agent_id: str) -> str | None:
        beat = self._written.get(agent_id)
        return None if beat is None else beat.addr
