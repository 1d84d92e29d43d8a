"""What one manager service needs of another, as narrow protocols.

The services take these in their constructors instead of each other (or of
the whole manager context), and :mod:`bai.manager.server` wires them, so no
service imports another.  This module imports nothing of the services:
anything may import it.

* :class:`AgentCaller` -- call a method on an agent (the agent pool);
* :class:`ScheduleRequester` -- ask every manager's dispatcher for a pass;
* :class:`SessionWaiters` -- wake those waiting on these sessions' status;
* :class:`StorageClient` -- call the storage proxies
  (:class:`bai.manager.vfolders.proxies.StorageProxies`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import msgspec

    from bai.common.storage_api import VolumeInfo

__all__ = ["AgentCaller", "ScheduleRequester", "SessionWaiters", "StorageClient"]


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


class StorageClient(Protocol):
    """The manager's one way to talk to the storage proxies of the shared configuration.

    Every method raises ``StorageProxyError`` (an HTTP-status-carrying error)
    for an unknown (404), unreachable (503) or failing (502) proxy, and
    relays a proxy's 4xx with its status, error name and field.
    """

    async def call(
        self,
        proxy: str,
        route: str,
        body: msgspec.Struct | None = None,
        *,
        timeout: float = ...,  # noqa: ASYNC109 - a per-request HTTP deadline
        fields: Mapping[str, str] | None = None,
    ) -> Any:
        """Call manager-facing *route* of *proxy* (``GET`` without *body*, else ``POST``)."""
        ...

    async def names(self) -> list[str]:
        """The configured, usable proxies' names, sorted."""
        ...

    async def volumes(self, proxy: str) -> list[VolumeInfo]:
        """The volumes *proxy* serves."""
        ...

    async def hosts(self) -> list[str]:
        """``PROXY:VOLUME`` of every volume of every proxy that answers, sorted."""
        ...

    async def default_host(self) -> str | None:
        """``volumes/default_host``, or ``None``."""
        ...

    async def client_url(self, proxy: str, path: str) -> str:
        """*path* (``/upload``, ``/download``) on *proxy*'s client-facing API."""
        ...

    async def aclose(self) -> None:
        """Release the connections; later calls fail with 503."""
        ...
