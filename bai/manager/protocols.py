"""What one manager service needs of another, as narrow protocols.

The services take these in their constructors instead of each other (or of
the whole manager context), and :mod:`bai.manager.server` wires them, so no
service imports another.  This module imports nothing of the services:
anything may import it.

* :class:`AgentCaller` -- call a method on an agent (the agent pool);
* :class:`ScheduleRequester` -- ask every manager's dispatcher for a pass;
* :class:`SessionWaiters` -- wake those waiting on these sessions' status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["AgentCaller", "ScheduleRequester", "SessionWaiters"]


class AgentCaller(Protocol):
    """The manager's one way to talk to an agent."""

    async def call(
        self,
        agent_id: str,
        method: str,
        args: Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - each call's deadline is the contract
    ) -> Any:
        """Call *method* on *agent_id* and return its result.

        *timeout* defaults to ``manager.rpc-timeout``.  Raises
        :class:`~bai.manager.errors.AgentNotFound`,
        :class:`~bai.manager.errors.AgentUnavailable` or
        :class:`~bai.common.rpc.RemoteError`.
        """
        ...

    def resync(self, agent_id: str) -> None:
        """Reconcile *agent_id*'s kernels again at its next heartbeat.

        For a caller that could not destroy a kernel there.
        """
        ...


class ScheduleRequester(Protocol):
    """Asks for a scheduling pass: a pending session may fit now."""

    async def request_schedule(self) -> None:
        """Ask every manager's dispatcher for a pass; never raises.

        Call it after the commit that enqueued a session or freed or added
        capacity, so that the pass it causes sees the change.
        """
        ...


class SessionWaiters(Protocol):
    """Those waiting in this process for a session's status to change."""

    def notify(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Wake the waiters of these sessions (their status changed)."""
        ...
