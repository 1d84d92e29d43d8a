"""``/stream/session/:id/tcpproxy`` and ``/httpproxy``: one TCP connection to an app per WebSocket.

The query string names the app (``app``) and optionally one of its ports
(``port``) and the environment to start it with (``envs``, a JSON object;
``arguments`` is accepted only empty).  The app's service is started on
first use: the kernel starts it and waits until it listens, and only then is
the WebSocket accepted and the connection opened, so the first bytes the
client sends reach a listening service.  After the upgrade, BINARY messages
carry the connection's bytes both ways; the socket is closed with 1000 when
the service closes its side.

Guarantees:

* an unknown app, an app of someone else's session, a bad parameter, or a
  service that does not start or cannot be reached is refused before the
  upgrade with an RFC 7807 answer (404, 400, 503, 502);
* ``httpproxy`` serves only apps of protocol ``http``; ``tcpproxy`` any app;
* one chunk at a time is relayed in each direction and the next is read only
  once it was passed on, so a slow reader slows the writer on the other side
  instead of growing a buffer in the manager;
* at most ``[manager] max-proxied-connections`` connections per session and
  manager process are open at once; more are refused with 503.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import trio
from quart import current_app, websocket

from bai.manager.api.errors import ApiError
from bai.manager.api.helpers import InvalidParameter, current_ctx, read_query
from bai.manager.api.session.lookup import find_session, translated_errors
from bai.manager.api.session.services import ServiceParams, service_request
from bai.manager.api.stream.common import CLOSE_NORMAL, authenticate_websocket
from bai.manager.sessions.services import ServiceAddress

__all__ = ["httpproxy", "tcpproxy"]

_CHUNK: Final = 256 * 1024
_OPEN_KEY: Final = "bai.proxied_connections"


class TooManyConnections(ApiError):
    """The session already has as many proxied connections as allowed."""

    http_status = 503
    error_type = "too-many-connections"
    error_title = "Too many connections."


class AppUnreachable(ApiError):
    """The app's service started but its port does not accept connections."""

    http_status = 502
    error_type = "app-unreachable"
    error_title = "The app cannot be reached."


# Each chunk either way is a use of the session for the idle checker (*touch*).


async def _to_service(stream: trio.SocketStream, touch: Callable[[], None]) -> None:
    while True:
        data = await websocket.receive()
        touch()
        await stream.send_all(data.encode() if isinstance(data, str) else data)


async def _to_client(stream: trio.SocketStream, touch: Callable[[], None]) -> None:
    while data := await stream.receive_some(_CHUNK):
        touch()
        await websocket.send(data)


async def _relay(stream: trio.SocketStream, touch: Callable[[], None]) -> None:
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(_to_service, stream, touch)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await _to_client(stream, touch)
        nursery.cancel_scope.cancel()
    await websocket.close(CLOSE_NORMAL)


async def _proxy(session_name: str, *, http_only: bool) -> None:
    auth = await authenticate_websocket()
    params = read_query(ServiceParams, websocket.args)
    app, port, envs = service_request(params)
    info = await find_session(session_name, auth)
    key = str(info.id)
    opened: Counter[str] = current_app.extensions.setdefault(_OPEN_KEY, Counter())
    bound = current_ctx().config.manager.max_proxied_connections
    if opened[key] >= bound:
        raise TooManyConnections(f"session {info.name} already has {bound} proxied connections")
    opened[key] += 1
    try:
        if http_only:
            _check_http(info.service_ports, app)
        registry = current_ctx().registry
        with translated_errors():
            address = await registry.start_service(info, app, port=port, envs=envs)
        stream = await _connect(address)
        await websocket.accept()
        await _relay(stream, functools.partial(registry.activity.touch, info.id))
    finally:
        opened[key] -= 1
        if not opened[key]:
            del opened[key]


def _check_http(service_ports: Iterable[Mapping[str, Any]], app: str) -> None:
    for service in service_ports:
        if service.get("name") == app and service.get("protocol") != "http":
            raise InvalidParameter(
                f"app {app!r} speaks {service.get('protocol')}, not http: use tcpproxy",
                field="app",
                value=app,
            )


async def _connect(address: ServiceAddress) -> trio.SocketStream:
    try:
        with trio.fail_after(10):
            return await trio.open_tcp_stream(address.host, address.port)
    except (OSError, trio.TooSlowError) as exc:
        raise AppUnreachable(
            f"app {address.app!r} started but {address.host}:{address.port} does not accept"
            f" connections ({exc or 'timed out'})"
        ) from None


async def tcpproxy(session_name: str) -> None:
    """``GET /stream/session/:id/tcpproxy?app=`` (WebSocket): a TCP connection to the app."""
    await _proxy(session_name, http_only=False)


async def httpproxy(session_name: str) -> None:
    """``GET /stream/session/:id/httpproxy?app=`` (WebSocket): a connection to an HTTP app."""
    await _proxy(session_name, http_only=True)
