"""What the session services of one manager process share beside the database.

:class:`LocalState` holds the sessions this process is busy with, its
:class:`Waiters` and the nursery its background tasks run in;
:class:`ClusterLink` is how the services reach the agents and every
manager's dispatcher; :class:`Timeouts` are the deadlines of the manager's
configuration.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from bai.common.events import AgentKernelTerminated
from bai.common.types import SessionId
from bai.manager.protocols import AgentCaller, ScheduleRequester

__all__ = ["ClusterLink", "LocalState", "Timeouts", "Waiters"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The manager's deadlines, in seconds (``manager.*`` of its configuration)."""

    #: Bound on an agent RPC beyond its own work.
    rpc: float
    #: ``kernel-creation-timeout``: creating (or restarting) a session's kernels.
    creation: float
    #: ``kernel-termination-timeout``: destroying a kernel.
    termination: float
    #: ``execute-flush-timeout``: how long an execute call waits before answering ``continued``.
    flush: float
    #: Seconds between two reconcile passes.
    reconcile_interval: float


class ClusterLink:
    """The agents (by RPC) and every manager's dispatcher, as the session services reach them."""

    def __init__(self, agents: AgentCaller, schedule: ScheduleRequester) -> None:
        self._agents = agents
        self._schedule = schedule

    async def call(
        self,
        agent_id: str,
        method: str,
        args: Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - each call's deadline is the contract
    ) -> Any:
        """Call *method* on *agent_id* (see :meth:`bai.manager.protocols.AgentCaller.call`)."""
        return await self._agents.call(agent_id, method, args, timeout=timeout)

    def resync(self, agent_id: str) -> None:
        """Reconcile *agent_id*'s kernels again at its next heartbeat."""
        self._agents.resync(agent_id)

    async def request_schedule(self) -> None:
        """Ask every manager's dispatcher for a pass (see :mod:`bai.manager.protocols`)."""
        await self._schedule.request_schedule()


class Waiters:
    """Those waiting in this process for a session's next status change.

    The manager's :class:`~bai.manager.protocols.SessionWaiters`: the
    registry waits on them, and whatever changes a session's status here (or
    reports a change on the bus) wakes them.
    """

    def __init__(self) -> None:
        self._waiters: dict[SessionId, trio.Event] = {}

    def waiter(self, session_id: SessionId) -> trio.Event:
        """The event :meth:`notify` sets at the session's next status change."""
        return self._waiters.setdefault(session_id, trio.Event())

    def notify(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Wake the waiters of these sessions (their status changed)."""
        for session_id in session_ids:
            waiter = self._waiters.pop(SessionId(session_id), None)
            if waiter is not None:
                waiter.set()


class LocalState:
    """The sessions this process is starting, terminating or restarting, and its *waiters*.

    Also the kernel-end reports about sessions it is starting, applied once the
    start is over, and the nursery (set while the registry serves) that runs
    its background tasks.
    """

    def __init__(self, waiters: Waiters) -> None:
        self.waiters = waiters
        self.nursery: trio.Nursery | None = None
        self.starting: set[SessionId] = set()
        self.terminating: set[SessionId] = set()
        self.restarting: set[SessionId] = set()
        self.deferred: dict[SessionId, list[AgentKernelTerminated]] = {}

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``fn(*args)`` in the background; False (and nothing runs) while not serving."""
        nursery = self.nursery
        if nursery is None:
            return False
        nursery.start_soon(fn, *args)
        return True
