"""Keeping what an agent runs and what the database says in step: the kernel sync.

:class:`KernelSync` reconciles the two views with the agent's
``sync_kernel_registry`` when the pool first hears from an agent (or the
agent restarted), and again when two heartbeats in a row lack a kernel the
database has RUNNING there (see :mod:`bai.manager.agents`).  Guarantees:
kernels the agent runs that the database does not have alive are destroyed
(``not-found-in-manager``); kernels the manager believes alive there but the
agent lacks are reported ended by the agent itself; kernels degraded by the
agent's loss that it still has go back to RUNNING (``agent-returned``); a
sync the agent or the database failed runs again at the agent's next
heartbeat.  Events are published only after their transaction committed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

import sqlalchemy as sa
import trio

from bai.common.agent_api import AgentMethod
from bai.common.events import Event, EventBus, publish_events
from bai.common.rpc import RemoteError
from bai.common.types import (
    LIVE_KERNEL_STATUSES,
    REPORTED_KERNEL_STATUSES,
    STARTED_KERNEL_STATUSES,
    KernelStatus,
)
from bai.manager.agents.clients import AgentClients
from bai.manager.agents.liveness import move_kernels
from bai.manager.db import UNAVAILABLE_ERRORS, Connection, Database
from bai.manager.errors import AgentNotFound, AgentUnavailable
from bai.manager.models.resource import AgentStatus, agents
from bai.manager.models.session import kernels
from bai.manager.protocols import SessionWaiters

__all__ = ["KernelSync"]

log = logging.getLogger(__name__)

_SYNC_TIMEOUT_FLOOR: Final = 5.0


class KernelSync:
    """The kernel sync of every agent the pool hears from; see the module docstring.

    :attr:`nursery` is the pool's while it serves: syncs run there, and none
    starts without it.
    """

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        clients: AgentClients,
        waiters: SessionWaiters,
        rpc_timeout: float,
    ) -> None:
        self._db = db
        self._bus = bus
        self._clients = clients
        self._waiters = waiters
        self.rpc_timeout = rpc_timeout
        self._synced: set[str] = set()
        # Running kernels the agent's latest heartbeat lacked, by agent.
        self._absent: dict[str, set[uuid.UUID]] = {}
        self.nursery: trio.Nursery | None = None

    async def on_heartbeat(self, agent_id: str, live: frozenset[uuid.UUID] | None) -> None:
        """Sync *agent_id* if it was not yet, else check the kernels its heartbeat has (*live*)."""
        if agent_id in self._synced:
            if live is not None:
                await self._repair_kernels(agent_id, live)
        elif self.nursery is not None:
            self._synced.add(agent_id)
            self.nursery.start_soon(self._sync_kernels, agent_id)

    def forget(self, agent_id: str) -> None:
        """Start over with *agent_id*: it restarted, or is no longer ALIVE."""
        self._synced.discard(agent_id)
        self._absent.pop(agent_id, None)

    def resync(self, agent_id: str) -> None:
        """Reconcile *agent_id*'s kernels again at its next heartbeat.

        For a caller that could not destroy a kernel there: the sync destroys
        every kernel the agent runs that the database does not have alive.
        """
        self._synced.discard(agent_id)

    async def _sync_kernels(self, agent_id: str) -> None:
        """Reconcile what the agent runs with what the database says (see the module docs).

        When the agent or the database fails on the way, the agent's next
        heartbeat starts over.
        """
        timeout = max(self.rpc_timeout, _SYNC_TIMEOUT_FLOOR)
        try:
            strays, present = await self._compare(agent_id, timeout)
            await self._restore_kernels(agent_id, present)
        except (
            AgentUnavailable,
            AgentNotFound,
            RemoteError,
            AttributeError,  # the agent's report was not a map
            *UNAVAILABLE_ERRORS,
        ) as exc:
            log.warning("could not reconcile the kernels of agent %s: %s", agent_id, exc)
            self.resync(agent_id)
            return
        for kid in strays:
            log.warning("agent %s runs kernel %s that the manager does not know", agent_id, kid)
            try:
                await self._clients.call(
                    agent_id,
                    AgentMethod.DESTROY_KERNEL,
                    {"kernel_id": kid, "reason": "not-found-in-manager"},
                    timeout=timeout,
                )
            except (AgentUnavailable, AgentNotFound, RemoteError, *UNAVAILABLE_ERRORS) as exc:
                log.warning("could not destroy kernel %s on agent %s: %s", kid, agent_id, exc)
                self.resync(agent_id)

    async def _repair_kernels(self, agent_id: str, live: frozenset[uuid.UUID]) -> None:
        """Reconcile *agent_id* again when this heartbeat and the one before lack a running kernel.

        The heartbeats only raise the suspicion: they may have been sent
        before a kernel was created and read after.  The sync asks the agent
        itself, which reports the kernels it does not have through
        ``agent_kernel_terminated`` (with the real reason and exit code of a
        kernel it still remembers), so a late copy of a lost report, or
        another manager doing the same, changes nothing.
        """
        rows = await self._db.fetch(
            sa.select(kernels.c.id).where(
                kernels.c.agent == agent_id,
                kernels.c.status.in_(sorted(s.value for s in REPORTED_KERNEL_STATUSES)),
            )
        )
        absent = {kid for kid in rows.scalars() if kid not in live}
        gone = absent & self._absent.get(agent_id, set())
        if gone and self.nursery is not None:
            log.warning(
                "agent %s no longer reports kernels %s; reconciling",
                agent_id,
                ", ".join(sorted(str(kid) for kid in gone)),
            )
            # Two more heartbeats before the next try: the sync's reports take a moment.
            absent.clear()
            self.nursery.start_soon(self._sync_kernels, agent_id)
        self._absent[agent_id] = absent

    async def _compare(self, agent_id: str, limit: float) -> tuple[list[str], set[uuid.UUID]]:
        """What *agent_id* runs against what the database has started there.

        Returns the kernels the agent runs that the database does not have
        alive (strays, to destroy) and the started kernels the agent still
        has.  The agent reports those it lacks itself.  *limit* bounds the
        agent's answer, in seconds.
        """
        rows = await self._db.fetch(
            sa.select(kernels.c.id, kernels.c.session_id).where(
                kernels.c.agent == agent_id,
                kernels.c.status.in_(sorted(s.value for s in STARTED_KERNEL_STATUSES)),
            )
        )
        listed = [[str(row.id), str(row.session_id)] for row in rows]
        report = await self._clients.call(
            agent_id, AgentMethod.SYNC_KERNEL_REGISTRY, {"kernels": listed}, timeout=limit
        )
        missing = {str(k) for k in report.get("missing", [])}
        present = {row.id for row in rows if str(row.id) not in missing}
        unknown = [str(k) for k in report.get("unknown", [])]
        if not unknown:
            return [], present
        ids = []
        for text in unknown:
            try:
                ids.append(uuid.UUID(text))
            except ValueError:
                continue
        # Checked after the call: a kernel created meanwhile is known by now.
        known = await self._db.fetch(
            sa.select(kernels.c.id).where(
                kernels.c.id.in_(ids),
                kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
            )
        )
        keep = {str(kid) for kid in known.scalars()}
        return [kid for kid in unknown if kid not in keep], present

    async def _restore_kernels(self, agent_id: str, present: set[uuid.UUID]) -> None:
        """Return to RUNNING the kernels degraded by *agent_id*'s loss that it still has."""
        if not present:
            return
        events: list[Event] = []
        touched: set[uuid.UUID] = set()

        async def write(conn: Connection) -> None:
            events.clear()
            touched.clear()
            alive = await conn.scalar(
                sa.select(agents.c.id)
                .where(agents.c.id == agent_id, agents.c.status == AgentStatus.ALIVE.value)
                .with_for_update()
            )
            if alive is None:
                return
            rows = await conn.execute(
                sa.select(kernels.c.id, kernels.c.session_id, kernels.c.status).where(
                    kernels.c.id.in_(sorted(present)),
                    kernels.c.agent == agent_id,
                    kernels.c.status == KernelStatus.RUNNING_DEGRADED.value,
                    kernels.c.status_info == "agent-lost",
                )
            )
            events.extend(
                await move_kernels(
                    conn, rows, lambda _: KernelStatus.RUNNING, "agent-returned", touched
                )
            )

        await self._db.transaction(write)
        if touched:
            log.warning("agent %s is back: %d of its sessions go on", agent_id, len(touched))
        await publish_events(self._bus, events)
        self._waiters.notify(touched)
