"""The app proxy service: its API, its app listeners and the reaper of idle routes.

:class:`AppProxyService` serves the API (:mod:`bai.appproxy.api`) on
``[appproxy] service-addr`` with hypercorn, and the apps:

* **port-mapping mode** (``mode = "port"``): each route gets a port of
  ``port-range`` on ``bind-host``, bound when the route is first added (a
  port some other process holds is skipped); the browser URL names
  ``advertised-host`` (default: ``bind-host``) and that port.  A full range
  is a 503 ``NoFreePort`` naming it.
* **wildcard mode** (``mode = "wildcard"``): one listener on
  ``bind-host:wildcard-port`` serves every route, choosing by the ``Host``
  header (``<session-short>-<app>.<wildcard-domain>``); the URL names
  ``advertised-port`` (default: the listener's port).  ``tcp`` apps are
  refused there (a raw TCP stream names no host).

Every ``idle-timeout / 4`` (at most 30 s) the routes with no connection
and no traffic for ``idle-timeout`` are dropped: their listeners close,
their ports return to the range, their cookies are forgotten.
:meth:`AppProxyService.drop_session` (``DELETE /v2/conf/{session_id}``)
does the same at once for one session's routes, ending their connections.

``bai app-proxy`` runs it as a daemon (:mod:`bai.appproxy.daemon`); ``bai
up`` and the tests run it in a nursery of their own.  Cancelling
:meth:`AppProxyService.serve` closes every listener and connection.
"""

from __future__ import annotations

import errno
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from bai.appproxy.api import ApiApp
from bai.appproxy.proxy import AppRelay, Connections
from bai.appproxy.routes import Route, RouteError, RouteTable, app_url, label_of_host
from bai.common.appproxy_api import AddReply, AppProxyErrorType, AppRegistration, RouteInfo
from bai.common.config import AppProxyConfig
from bai.common.hypercorn_setup import base_url, hypercorn_config

__all__ = ["AppProxyAddresses", "AppProxyService"]

log = logging.getLogger(__name__)

#: Longest pause between two sweeps for idle routes, in seconds.
MAX_SWEEP_INTERVAL = 30.0
#: Bind errors that mean "this port is someone else's": the next port is tried.
_PORT_TAKEN = frozenset({errno.EADDRINUSE, errno.EACCES})


@dataclass(frozen=True, slots=True)
class AppProxyAddresses:
    """Where a running proxy answers.

    ``api`` is the base URL of its API (what ``wsproxy_addr`` holds);
    ``wildcard_port`` the port of the wildcard listener (wildcard mode).
    """

    api: str
    wildcard_port: int | None


class AppProxyService:
    """One app proxy configured by *config*; see the module docstring."""

    def __init__(self, config: AppProxyConfig) -> None:
        self.config = config
        section = config.appproxy
        self.mode = section.mode
        self.table = RouteTable(mode=section.mode, port_range=section.port_range)
        self.connections = Connections(section.max_connections_per_route)
        self.relay = AppRelay(
            self.table,
            self.connections,
            scheme=section.advertised_scheme,
            resolve=self._resolve if section.mode == "wildcard" else None,
        )
        self._nursery: trio.Nursery | None = None
        self._listener_scopes: dict[str, trio.CancelScope] = {}
        self._add_lock = trio.Lock()
        self._wildcard_port: int | None = None

    # ------------------------------------------------------------- control

    def register(self, registration: AppRegistration) -> str:
        """A registration token for *registration* (``POST /v2/conf``)."""
        token = self.table.register(registration, trio.current_time())
        log.info(
            "registered app %s of session %s at %s:%d (%s%s)",
            registration.app,
            registration.session_id,
            registration.kernel_host,
            registration.kernel_port,
            registration.protocol,
            ", public" if registration.open_to_public else "",
        )
        return token

    async def add(self, token: str, session_id: uuid.UUID, app: str) -> AddReply:
        """Spend *token* for *session_id*'s *app*: its route (made on first use) and URL.

        Raises :class:`~bai.appproxy.routes.RouteError` for a bad token, a
        full port range or an app this mode cannot serve.
        """
        section = self.config.appproxy
        async with self._add_lock:
            now = trio.current_time()
            registration = self.table.claim(token, session_id, app, now)
            route = self.table.get(session_id, app)
            if route is not None:
                self.table.update(route, registration, now)
            elif self.mode == "port":
                route = await self._open_port_route(registration, now)
            else:
                if registration.protocol == "tcp":
                    raise RouteError(
                        AppProxyErrorType.UNSUPPORTED,
                        f"app {app!r} is a tcp app: the wildcard mode serves http apps only",
                    )
                route = self.table.add(
                    registration, now, label=self.table.label_for(session_id, app)
                )
            app_token = None if route.protocol == "tcp" else self.table.issue_app_token(route, now)
        if self.mode == "port":
            host = section.advertised_host or section.bind_host
            port = route.port
        else:
            host = section.wildcard_domain or ""
            port = section.advertised_port or self._wildcard_port
        assert port is not None
        url = app_url(
            route, scheme=section.advertised_scheme, host=host, port=port, token=app_token
        )
        return {"code": 200, "url": url}

    async def drop_session(self, session_id: uuid.UUID) -> int:
        """Drop every route of *session_id* now, ending its connections; how many."""
        dropped = self.table.drop_session(session_id)
        for route in dropped:
            self._release(route, "its session's routes were deleted")
        return len(dropped)

    def routes(self) -> list[RouteInfo]:
        """Every route, for ``GET /v2/routes``."""
        now = trio.current_time()
        return [
            {
                "session_id": str(route.session_id),
                "app": route.app,
                "protocol": route.protocol,
                "port": route.port,
                "host": (
                    f"{route.label}.{self.config.appproxy.wildcard_domain}"
                    if route.label is not None
                    else None
                ),
                "open_to_public": route.open_to_public,
                "active_connections": route.active,
                "idle_seconds": round(max(0.0, now - route.last_used), 3),
            }
            for route in self.table
        ]

    def _release(self, route: Route, why: str) -> None:
        """End what serves *route* (already out of the table): connections, listener."""
        self.connections.cancel(route)
        scope = self._listener_scopes.pop(route.route_id, None)
        if scope is not None:
            scope.cancel()
        where = f"port {route.port}" if route.port is not None else f"host {route.label}"
        log.info("dropped app %s of session %s (%s): %s", route.app, route.session_id, where, why)

    def _resolve(self, host: str | None) -> Route | None:
        domain = self.config.appproxy.wildcard_domain
        if host is None or domain is None:
            return None
        label = label_of_host(host, domain)
        return self.table.by_label(label) if label is not None else None

    # ----------------------------------------------------------- listeners

    async def _open_port_route(self, registration: AppRegistration, now: float) -> Route:
        """Bind the first free port of the range and serve a new route on it."""
        nursery = self._nursery
        if nursery is None:
            raise RouteError(AppProxyErrorType.NO_FREE_PORT, "the app proxy is not serving")
        section = self.config.appproxy
        for port in self.table.free_ports():
            try:
                listeners = await trio.open_tcp_listeners(port, host=section.bind_host)
            except OSError as exc:
                if exc.errno in _PORT_TAKEN:
                    continue
                raise
            route = self.table.add(registration, now, port=port)
            scope = trio.CancelScope()
            self._listener_scopes[route.route_id] = scope
            nursery.start_soon(self._serve_route, route, listeners, scope)
            log.info(
                "serving app %s of session %s on port %d",
                registration.app,
                registration.session_id,
                port,
            )
            return route
        low, high = section.port_range
        raise RouteError(
            AppProxyErrorType.NO_FREE_PORT,
            f"every port of the app proxy's range {low}-{high} is in use: "
            "close other apps, or widen [appproxy] port-range",
        )

    async def _serve_route(
        self, route: Route, listeners: list[trio.SocketListener], scope: trio.CancelScope
    ) -> None:
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(self._accept, listener, route, nursery)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _accept(
        self, listener: trio.SocketListener, route: Route | None, nursery: trio.Nursery
    ) -> None:
        """Accept connections forever; each is served by the relay in *nursery*."""
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors and the like: wait, do not spin.
                    log.warning("accepting an app connection failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                if route is None:
                    nursery.start_soon(self.relay.serve_http, stream, None)
                elif route.protocol == "tcp":
                    nursery.start_soon(self.relay.serve_tcp, stream, route)
                else:
                    nursery.start_soon(self.relay.serve_http, stream, route)

    async def _sweep(self) -> None:
        idle_timeout = float(self.config.appproxy.idle_timeout)
        interval = max(0.01, min(idle_timeout / 4, MAX_SWEEP_INTERVAL))
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            self.table.prune(now)
            for route in self.table.idle(now, idle_timeout):
                self.table.drop(route)
                self._release(route, f"unused for {idle_timeout:g} s")

    # ------------------------------------------------------------------ run

    async def serve(
        self, *, task_status: trio.TaskStatus[AppProxyAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the bound addresses (port 0 works)."""
        section = self.config.appproxy
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                hyper = hypercorn_config(
                    section.service_addr,
                    ssl_enabled=section.ssl_enabled,
                    certfile=section.ssl_cert,
                    keyfile=section.ssl_privkey,
                    logger="bai.appproxy.api",
                    graceful_timeout=5.0,
                )
                bound: list[str] = await nursery.start(_serve, ApiApp(self, section.secret), hyper)
                if self.mode == "wildcard":
                    listeners = await trio.open_tcp_listeners(
                        section.wildcard_port, host=section.bind_host
                    )
                    self._wildcard_port = listeners[0].socket.getsockname()[1]
                    for listener in listeners:
                        nursery.start_soon(self._accept, listener, None, nursery)
                nursery.start_soon(self._sweep)
                addresses = AppProxyAddresses(base_url(bound), self._wildcard_port)
                if self.mode == "port":
                    low, high = section.port_range
                    apps = f"ports {low}-{high} on {section.bind_host}"
                else:
                    apps = f"*.{section.wildcard_domain} on port {self._wildcard_port}"
                log.info("app proxy: API %s, apps at %s", addresses.api, apps)
                task_status.started(addresses)
        finally:
            self._nursery = None


async def _serve(
    app: Any, hyper: HypercornConfig, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    await serve(app, hyper, task_status=task_status, mode="asgi")
