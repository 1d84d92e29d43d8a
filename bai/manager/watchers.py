"""The manager's client of the agent watchers (``bai watcher``, :mod:`bai.watcher`).

A watcher listens on its agent's host: the agent's ``public_host`` (or the
host of its RPC address) and the port of the shared-config key
``nodes/agents/{agent_id}/watcher_port`` (the original's), else
``config/watcher/port``, else 6009.  Managers present the token of
``config/watcher/token`` in ``X-BackendAI-Watcher-Token``.

:func:`call_watcher` relays one call and answers the watcher's status and
JSON body as they are.  Failures are errors the API answers as RFC 7807:

* :class:`~bai.manager.errors.AgentNotFound` (404): no such agent;
* :class:`WatcherNotConfigured` (503): no ``config/watcher/token``;
* :class:`WatcherUnavailable` (503): the watcher cannot be reached, does not
  answer in time, or answers something that is not JSON.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

import httpx
import sqlalchemy as sa

from bai.common.errors import BaiError
from bai.manager.db import Database
from bai.manager.errors import AgentNotFound
from bai.manager.models.resource import agents
from bai.manager.models.shared_config import get_config

__all__ = [
    "DEFAULT_WATCHER_PORT",
    "TOKEN_KEY",
    "WatcherNotConfigured",
    "WatcherUnavailable",
    "call_watcher",
]

#: The shared-config key of the token managers present.
TOKEN_KEY: Final = "config/watcher/token"
_PORT_KEY: Final = "config/watcher/port"
#: The watcher's port when the shared config names none (``[watcher] service-addr``'s).
DEFAULT_WATCHER_PORT: Final = 6009
_TOKEN_HEADER: Final = "X-BackendAI-Watcher-Token"


class WatcherNotConfigured(BaiError):
    """The shared config has no watcher token."""

    http_status = 503
    error_type = "watcher-not-configured"


class WatcherUnavailable(BaiError):
    """The agent's watcher did not answer (in time, or in JSON)."""

    http_status = 503
    error_type = "watcher-unavailable"


async def _where(db: Database, agent_id: str) -> tuple[str, str]:
    """``(base URL, token)`` of *agent_id*'s watcher."""
    async with db.begin_readonly() as conn:
        row = (
            await conn.execute(
                sa.select(agents.c.addr, agents.c.public_host).where(agents.c.id == agent_id)
            )
        ).first()
        if row is None:
            raise AgentNotFound(f"no agent {agent_id!r} is registered")
        token = await get_config(conn, TOKEN_KEY)
        port = await get_config(conn, f"nodes/agents/{agent_id}/watcher_port")
        if port is None:
            port = await get_config(conn, _PORT_KEY, DEFAULT_WATCHER_PORT)
    if not isinstance(token, str) or not token:
        raise WatcherNotConfigured(f"the shared configuration has no {TOKEN_KEY}")
    host = row.public_host or urllib.parse.urlsplit(str(row.addr)).hostname or "127.0.0.1"
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise WatcherNotConfigured(
            f"the watcher port of agent {agent_id} is not a number"
        ) from None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{number}", token


async def call_watcher(
    db: Database,
    agent_id: str,
    method: str,
    path: str,
    *,
    timeout: float,  # noqa: ASYNC109 - each route's bound is the contract
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[int, Any]:
    """Call *path* on *agent_id*'s watcher; its status and JSON body (module docs)."""
    base, token = await _where(db, agent_id)
    url = f"{base}{path}"
    try:
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
            response = await client.request(method, url, headers={_TOKEN_HEADER: token})
    except httpx.TimeoutException:
        raise WatcherUnavailable(f"the watcher at {base} did not answer in {timeout:g} s") from None
    except httpx.TransportError as exc:
        raise WatcherUnavailable(f"the watcher at {base} cannot be reached: {exc}") from None
    try:
        return response.status_code, response.json()
    except ValueError:
        raise WatcherUnavailable(
            f"the watcher at {base} answered {response.status_code} without JSON"
        ) from None
