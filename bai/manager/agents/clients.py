"""The manager's RPC clients to its agents, one per agent address.

:class:`AgentClients` opens a client the first time an agent is called and
keeps it while the agent's address stays the same, in the agent pool's
nursery.  Guarantees: every call is bounded by its timeout (by default
``manager.rpc-timeout``); an agent the database does not know raises
:class:`~bai.manager.errors.AgentNotFound`, one that is not ALIVE, does not
answer in time or whose connection broke raises
:class:`~bai.manager.errors.AgentUnavailable`; an error the agent answered
comes back as :class:`~bai.common.rpc.RemoteError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import trio

from bai.common.errors import InvalidValue
from bai.common.rpc import RemoteError, RPCClient, RPCConnectionError, RPCError, RPCTimeout
from bai.manager.db import Database
from bai.manager.errors import AgentNotFound, AgentUnavailable
from bai.manager.models.resource import AgentStatus, agents

__all__ = ["AgentClients"]


@dataclass(slots=True)
class _Client:
    addr: str
    client: RPCClient
    scope: trio.CancelScope


class AgentClients:
    """The RPC clients of the agent pool; see the module docstring.

    *heard_addr* gives the address an agent's latest heartbeat announced
    (``None`` before one was heard): a client to another address is replaced.
    :attr:`nursery` is the pool's while it serves; no client opens without it.
    """

    def __init__(
        self, db: Database, rpc_timeout: float, heard_addr: Callable[[str], str | None]
    ) -> None:
        self._db = db
        self.rpc_timeout = rpc_timeout
        self._heard_addr = heard_addr
        self._clients: dict[str, _Client] = {}
        self._client_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None

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
        :class:`AgentNotFound` for an agent the database does not know,
        :class:`AgentUnavailable` when the agent is not ALIVE, does not answer
        in time or the connection broke, and
        :class:`~bai.common.rpc.RemoteError` for an error the agent answered.
        """
        client = await self._client(agent_id)
        limit = self.rpc_timeout if timeout is None else timeout
        try:
            return await client.call(method, args, timeout=limit)
        except RPCTimeout as exc:
            raise AgentUnavailable(f"agent {agent_id} did not answer {method}: {exc}") from None
        except RPCConnectionError as exc:
            raise AgentUnavailable(f"agent {agent_id}: {exc}") from None
        except RemoteError:
            raise
        except RPCError as exc:
            raise AgentUnavailable(f"agent {agent_id} answered {method} badly: {exc}") from None

    async def _client(self, agent_id: str) -> RPCClient:
        entry = self._clients.get(agent_id)
        heard = self._heard_addr(agent_id)
        if entry is not None and (heard is None or heard == entry.addr):
            return entry.client
        row = (
            await self._db.fetch(
                sa.select(agents.c.addr, agents.c.status).where(agents.c.id == agent_id)
            )
        ).first()
        if row is None:
            raise AgentNotFound(f"no agent has the id {agent_id!r}")
        if AgentStatus(row.status) is not AgentStatus.ALIVE:
            raise AgentUnavailable(f"agent {agent_id} is {row.status}")
        async with self._client_lock:
            entry = self._clients.get(agent_id)
            if entry is not None and entry.addr == row.addr:
                return entry.client
            if entry is not None:
                entry.scope.cancel()
                del self._clients[agent_id]
            nursery = self.nursery
            if nursery is None:
                raise AgentUnavailable("the agent pool is not running")
            try:
                new: _Client = await nursery.start(self._run_client, agent_id, row.addr)
            except InvalidValue as exc:
                raise AgentUnavailable(f"agent {agent_id} has an unusable address: {exc}") from None
            return new.client

    async def _run_client(
        self, agent_id: str, addr: str, *, task_status: trio.TaskStatus[_Client]
    ) -> None:
        with trio.CancelScope() as scope:
            async with RPCClient(addr, timeout=self.rpc_timeout) as client:
                entry = _Client(addr, client, scope)
                self._clients[agent_id] = entry
                task_status.started(entry)
                try:
                    await trio.sleep_forever()
                finally:
                    if self._clients.get(agent_id) is entry:
                        del self._clients[agent_id]

    async def close(self, agent_id: str) -> None:
        """Close the client to *agent_id*, if one is open."""
        async with self._client_lock:
            entry = self._clients.pop(agent_id, None)
            if entry is not None:
                entry.scope.cancel()
