"""The manager's client of the app proxies (:mod:`bai.common.appproxy_api`).

A resource group's app proxy is the ``wsproxy_addr`` column of its
``scaling_groups`` row (the base URL of the proxy's API); the secret every
manager presents is the shared-config key ``appproxy/secret``.  ``bai up``
writes both at each start; an operator of the distributed mode sets them
(``bai manager config put appproxy/secret ...`` and the column).  Both are
read on every call, so a proxy moved or added applies at once.

:func:`app_last_use` tells the idle checker when each session's apps last
carried traffic through a proxy.

Guarantees of :func:`register_app` and :func:`unregister_session`: a
failure is an :class:`AppProxyError`, which the API answers as an RFC 7807
problem, never a 500:

* 404 ``object-not-found``: no resource group of that name;
* 400 ``invalid-api-params``: an app whose protocol no proxy serves;
* 503 ``app-proxy-not-configured``: the group has no ``wsproxy_addr``, or
  ``appproxy/secret`` is not set;
* 503 ``app-proxy-unavailable``: the proxy cannot be reached, does not
  answer within :data:`TIMEOUT` seconds, or refuses the secret (an
  operator's problem: the log says so);
* 502 ``app-proxy-failed``: the proxy answered something outside the
  contract, or refused the registration itself.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
import msgspec
import sqlalchemy as sa
import trio

from bai.common.appproxy_api import (
    SECRET_CONFIG_KEY,
    SECRET_HEADER,
    AppProtocol,
    AppRegistration,
    RouteInfo,
)
from bai.common.errors import BaiError
from bai.common.events import EventBus, EventBusError, SessionTerminated
from bai.manager.db import Database
from bai.manager.models.base import utcnow
from bai.manager.models.resource import scaling_groups
from bai.manager.models.session import sessions
from bai.manager.models.shared_config import get_config

__all__ = [
    "TIMEOUT",
    "AppProxyError",
    "EndedSessionRoutes",
    "app_last_use",
    "app_proxy_protocol",
    "register_app",
    "unregister_session",
]

log = logging.getLogger(__name__)

#: Seconds one call to a proxy may take (it answers from memory).
TIMEOUT: Final = 10.0

#: Service-port protocols of kernels as the proxy serves them.
_PROTOCOLS: Final[dict[str, AppProtocol]] = {
    "http": "http",
    "preopen": "http",
    "tcp": "tcp",
    "vnc": "tcp",
    "rdp": "tcp",
}


class AppProxyError(BaiError):
    """A call to an app proxy failed; see the module docstring for the cases."""

    def __init__(self, status: int, error_type: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.http_status = status
        self.error_type = error_type
        self.error_title = title
        self.detail = detail


def _not_configured(detail: str) -> AppProxyError:
    return AppProxyError(503, "app-proxy-not-configured", "No app proxy is configured.", detail)


def _unavailable(detail: str) -> AppProxyError:
    return AppProxyError(503, "app-proxy-unavailable", "The app proxy is not available.", detail)


def _failed(detail: str) -> AppProxyError:
    return AppProxyError(502, "app-proxy-failed", "The app proxy failed.", detail)


def app_proxy_protocol(protocol: str, app: str) -> AppProtocol:
    """How the proxy serves a service port of *protocol*; 400 when it cannot."""
    served = _PROTOCOLS.get(protocol)
    if served is None:
        raise AppProxyError(
            400,
            "invalid-api-params",
            "Missing or invalid API parameters.",
            f"app {app!r} speaks {protocol!r}, which the app proxy does not serve "
            f"(it serves {', '.join(sorted(_PROTOCOLS))})",
        )
    return served


async def _proxy_of(db: Database, resource_group: str) -> tuple[str, str]:
    """``(wsproxy_addr without a trailing /, secret)`` of *resource_group*."""
    async with db.begin_readonly() as conn:
        row = (
            await conn.execute(
                sa.select(scaling_groups.c.wsproxy_addr).where(
                    scaling_groups.c.name == resource_group
                )
            )
        ).first()
        secret = await get_config(conn, SECRET_CONFIG_KEY)
    if row is None:
        raise AppProxyError(
            404, "object-not-found", "No such object.", f"no resource group {resource_group!r}"
        )
    address = row.wsproxy_addr
    if not isinstance(address, str) or not address.startswith(("http://", "https://")):
        raise _not_configured(
            f"the resource group {resource_group!r} has no app proxy "
            "(its wsproxy_addr is not an http(s) URL)"
        )
    if not isinstance(secret, str) or not secret:
        raise _not_configured(f"the shared configuration has no {SECRET_CONFIG_KEY}")
    return address.rstrip("/"), secret


async def _call(
    method: str,
    url: str,
    secret: str,
    *,
    body: bytes | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Any:
    headers = {SECRET_HEADER: secret}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        async with httpx.AsyncClient(
            timeout=TIMEOUT, transport=transport, follow_redirects=False
        ) as client:
            response = await client.request(method, url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise _unavailable(f"the app proxy at {url} did not answer in time") from None
    except httpx.TransportError as exc:
        raise _unavailable(f"the app proxy cannot be reached at {url}: {exc}") from None
    try:
        reply = response.json()
    except ValueError:
        reply = None
    if response.status_code == 401:
        log.error("the app proxy at %s refused the manager's secret", url)
        raise _unavailable(
            f"the app proxy refused the manager's secret (check {SECRET_CONFIG_KEY})"
        )
    if response.status_code >= 400:
        detail = reply.get("detail") if isinstance(reply, dict) else None
        log.warning("the app proxy at %s answered %d: %s", url, response.status_code, detail)
        raise _failed(f"the app proxy answered {response.status_code}: {detail or 'no detail'}")
    if not isinstance(reply, dict):
        raise _failed(f"the app proxy at {url} answered something that is not a JSON object")
    return reply


async def register_app(
    db: Database,
    *,
    resource_group: str,
    session_id: uuid.UUID,
    kernel_host: str,
    kernel_port: int,
    app: str,
    protocol: str,
    user_id: uuid.UUID,
    access_key: str,
    open_to_public: bool,
    login_session_token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[str, str]:
    """Register *app* of *session_id* (at *kernel_host*:*kernel_port*) with the app
    proxy of *resource_group*; ``(token, wsproxy_addr)``.

    The client then spends the token at ``{wsproxy_addr}/v2/proxy/{token}/
    {session_id}/add?app={app}`` within five minutes.  *protocol* is the
    service port's (``http``, ``preopen``, ``tcp``, ...).  Raises
    :class:`AppProxyError` (module docstring).
    """
    registration = AppRegistration(
        session_id=session_id,
        kernel_host=kernel_host,
        kernel_port=kernel_port,
        app=app,
        protocol=app_proxy_protocol(protocol, app),
        user_id=user_id,
        access_key=access_key,
        open_to_public=open_to_public,
        login_session_token=login_session_token,
    )
    address, secret = await _proxy_of(db, resource_group)
    reply = await _call(
        "POST",
        f"{address}/v2/conf",
        secret,
        body=msgspec.json.encode(registration),
        transport=transport,
    )
    token = reply.get("token")
    if not isinstance(token, str) or not token:
        raise _failed(f"the app proxy at {address} answered no token")
    return token, address


async def unregister_session(
    db: Database,
    *,
    resource_group: str,
    session_id: uuid.UUID,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Drop every route of *session_id* on the app proxy of *resource_group*; how many.

    Raises :class:`AppProxyError` (module docstring); a caller ending a
    session may log it and go on (the proxy drops idle routes itself).
    """
    address, secret = await _proxy_of(db, resource_group)
    reply = await _call("DELETE", f"{address}/v2/conf/{session_id}", secret, transport=transport)
    dropped = reply.get("dropped")
    return dropped if isinstance(dropped, int) else 0


async def app_last_use(
    db: Database, *, transport: httpx.AsyncBaseTransport | None = None
) -> dict[uuid.UUID, datetime]:
    """When each session's apps last carried traffic through any app proxy.

    Asks every distinct app proxy of the resource groups (``GET
    /v2/routes``); a route with an open connection counts as used now.  A
    proxy that cannot be asked is logged and left out: its sessions are
    judged by the manager's own records only.
    """
    async with db.begin_readonly() as conn:
        rows = await conn.execute(
            sa.select(scaling_groups.c.wsproxy_addr)
            .distinct()
            .where(scaling_groups.c.wsproxy_addr.is_not(None))
        )
        addresses = sorted(
            {
                row.wsproxy_addr.rstrip("/")
                for row in rows
                if row.wsproxy_addr.startswith(("http://", "https://"))
            }
        )
        secret = await get_config(conn, SECRET_CONFIG_KEY)
    if not addresses or not isinstance(secret, str) or not secret:
        return {}
    now = utcnow()
    used: dict[uuid.UUID, datetime] = {}
    for address in addresses:
        try:
            reply = await _call("GET", f"{address}/v2/routes", secret, transport=transport)
            routes = msgspec.convert(reply.get("routes"), list[RouteInfo])
        except (AppProxyError, msgspec.ValidationError) as exc:
            log.warning("could not read the app routes of %s: %s", address, exc)
            continue
        for route in routes:
            idle = 0.0 if route["active_connections"] > 0 else max(0.0, route["idle_seconds"])
            when = now - timedelta(seconds=idle)
            session_id = uuid.UUID(route["session_id"])
            if session_id not in used or used[session_id] < when:
                used[session_id] = when
    return used


class EndedSessionRoutes:
    """Drops a session's routes on its resource group's app proxy once the session ends.

    It follows ``session_terminated`` in an anycast group, so one manager
    handles each end.  A group without an app proxy is skipped; a proxy that
    cannot be reached is logged and left to drop the routes itself once they
    have been idle for its ``idle-timeout``.  Without this, every app a
    browser opened would hold a port of the proxy's range for that long.
    """

    GROUP: Final = "manager.appproxy-routes"

    def __init__(self, db: Database, bus: EventBus) -> None:
        self._db = db
        self._bus = bus

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; report started once it follows the events."""
        async with self._bus.consume(self.GROUP, types=(SessionTerminated,)) as consumer:
            task_status.started()
            async for delivery in consumer:
                event = delivery.event
                assert isinstance(event, SessionTerminated)
                await self.drop(event.session_id)
                try:
                    await delivery.ack()
                except trio.ClosedResourceError:
                    return
                except EventBusError as exc:
                    # Delivered again later; dropping routes twice changes nothing.
                    log.warning("could not acknowledge session_terminated: %s", exc)

    async def drop(self, session_id: uuid.UUID) -> None:
        """Drop *session_id*'s routes on its group's app proxy (never raises an AppProxyError)."""
        async with self._db.begin_readonly() as conn:
            group = (
                await conn.execute(
                    sa.select(sessions.c.scaling_group_name).where(sessions.c.id == session_id)
                )
            ).scalar()
        if not isinstance(group, str):
            return
        try:
            await unregister_session(self._db, resource_group=group, session_id=session_id)
        except AppProxyError as exc:
            if exc.error_type != "app-proxy-not-configured":
                log.warning("the app routes of session %s stay until idle: %s", session_id, exc)
