"""The relay between browsers and apps: HTTP/1.1 (with WebSocket upgrades) and raw TCP.

:class:`AppRelay` serves one accepted connection of an app listener.  For an
``http`` route it speaks HTTP/1.1 on both sides with :mod:`h11`:

* each request is decided by :meth:`RouteTable.authorize
  <bai.appproxy.routes.RouteTable.authorize>`: forwarded, redirected (the
  token exchange) or answered 401 with a problem body;
* a forwarded request goes to the route's target over one upstream
  connection per client connection, reused while both sides keep it alive.
  Bodies stream both ways piece by piece (at most :data:`RECV_SIZE` bytes
  at a time): a piece is read from one side only once the previous one was
  written to the other, so a slow reader slows the writer down and nothing
  is buffered whole.  The request body and the response run concurrently,
  so an app that answers while still reading (or streams an echo) works;
* hop-by-hop headers are not forwarded (``Connection`` and what it names,
  ``Keep-Alive``, ``TE``, ``Trailer``, ``Upgrade``, ``Proxy-*``), nor the
  proxy's own cookies; ``X-Forwarded-For``, ``-Proto`` and ``-Host`` are
  added;
* a request with ``Upgrade`` (WebSocket) is forwarded with it; once the app
  answers 101 the proxy relays raw bytes both ways until both sides close;
* a target that refuses or does not answer gets a 502 problem; a target
  that breaks mid-response cuts the client connection (its answer cannot
  be completed honestly).

For a ``tcp`` route the relay connects and copies raw bytes both ways.

Every connection counts against its route's
``max-connections-per-route`` (:class:`Connections`): one over the bound is
answered 503 (HTTP) or closed (TCP).  Dropping a route
(:meth:`Connections.cancel`) ends its connections at once.  Every byte
relayed marks the route used (:meth:`Route.touch
<bai.appproxy.routes.Route.touch>`).  A client must send a request's head
within :data:`HEAD_TIMEOUT` seconds, and the next one on a kept-alive
connection within :data:`KEEPALIVE_TIMEOUT`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, cast

import h11
import trio

from bai.appproxy.errors import PROBLEM_CONTENT_TYPE, problem_body
from bai.appproxy.routes import (
    Deny,
    Forward,
    Redirect,
    Route,
    RouteTable,
    strip_proxy_cookies,
)
from bai.common.appproxy_api import ERROR_STATUS, AppProxyErrorType

__all__ = [
    "CONNECT_TIMEOUT",
    "HEAD_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "RECV_SIZE",
    "AppRelay",
    "Connections",
    "forward_request_headers",
    "forward_response_headers",
]

log = logging.getLogger(__name__)

#: Bytes read from a socket at once.
RECV_SIZE: Final = 256 * 1024
#: Longest request or response head accepted.
MAX_HEAD: Final = 64 * 1024
#: Seconds a client has to send a request's head on a new connection.
HEAD_TIMEOUT: Final = 30.0
#: Seconds a kept-alive client connection may wait for its next request.
KEEPALIVE_TIMEOUT: Final = 120.0
#: Seconds connecting to an app may take.
CONNECT_TIMEOUT: Final = 10.0
#: Most body bytes read (and dropped) from a request the proxy answers itself.
MAX_DRAIN: Final = 1024 * 1024
#: Seconds spent reading such a body, or waiting for a peer to close after an answer.
DRAIN_TIMEOUT: Final = 2.0

_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
_PEER_ERRORS: Final = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
    OSError,
)

Headers = list[tuple[bytes, bytes]]


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(part.strip().lower() for part in value.split(b","))
    return tokens


def _upgrade_of(headers: Headers) -> bytes | None:
    """The ``Upgrade`` a request or a 101 asks for (with ``Connection: upgrade``)."""
    if b"upgrade" not in _connection_tokens(headers):
        return None
    for name, value in headers:
        if name == b"upgrade":
            return value
    return None


def forward_request_headers(
    headers: Headers, *, client_ip: str | None, scheme: str, upgrade: bytes | None
) -> Headers:
    """The headers a forwarded request carries to the app (module docstring).

    *upgrade* is the request's ``Upgrade`` value when it asks for one.
    """
    named = _connection_tokens(headers)
    out: Headers = []
    forwarded_for: list[bytes] = []
    host: bytes | None = None
    for name, value in headers:
        if name in _HOP_BY_HOP or name in named:
            continue
        if name == b"cookie":
            kept = strip_proxy_cookies(value.decode("latin-1"))
            if kept is not None:
                out.append((name, kept.encode("latin-1")))
            continue
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
            continue
        if name in (b"x-forwarded-proto", b"x-forwarded-host"):
            continue
        if name == b"host":
            host = value
        out.append((name, value))
    if client_ip is not None:
        forwarded_for.append(client_ip.encode("latin-1"))
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    if upgrade is not None:
        out += [(b"connection", b"upgrade"), (b"upgrade", upgrade)]
    return out


def forward_response_headers(headers: Headers, *, switching: bool) -> Headers:
    """The headers of an app's answer as the browser gets them (no hop-by-hop ones).

    A 101 (*switching*) keeps ``Connection: upgrade`` and ``Upgrade``.
    """
    named = _connection_tokens(headers)
    out = [(n, v) for n, v in headers if n not in _HOP_BY_HOP and n not in named]
    if switching:
        upgrade = _upgrade_of(headers)
        if upgrade is not None:
            out += [(b"connection", b"upgrade"), (b"upgrade", upgrade)]
    return out


class Connections:
    """Counts and cancels the connections of each route (module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._scopes: dict[str, set[trio.CancelScope]] = {}

    @contextmanager
    def attach(self, route: Route) -> Iterator[trio.CancelScope | None]:
        """A cancel scope to run one connection of *route* in; ``None`` when it is full."""
        if route.active >= self.limit:
            yield None
            return
        scope = trio.CancelScope()
        scopes = self._scopes.setdefault(route.route_id, set())
        scopes.add(scope)
        route.active += 1
        try:
            yield scope
        finally:
            route.active -= 1
            scopes.discard(scope)
            if not scopes:
                self._scopes.pop(route.route_id, None)

    def cancel(self, route: Route) -> None:
        """End every connection of *route* now."""
        for scope in self._scopes.pop(route.route_id, set()):
            scope.cancel()


class _Side:
    """One HTTP/1.1 connection: a stream and its h11 state machine.

    A body of known length may be read past h11 (:meth:`read_counted`): h11
    then still waits for it, so the next exchange gets a new state machine
    (:meth:`next_cycle`).
    """

    def __init__(
        self, stream: trio.SocketStream, role: type[h11.CLIENT] | type[h11.SERVER]
    ) -> None:
        self.stream = stream
        self.role = role
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self._behind = False

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return cast(h11.Event | type[h11.PAUSED], event)
            try:
                data = await self.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, OSError):
                data = b""  # a reset peer is a closed peer; h11 says whether that was fine
            self.conn.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def read_counted(self, remaining: int, emit: Callable[[bytes], Awaitable[None]]) -> bool:
        """Read the peer's body, *remaining* bytes by its ``Content-Length``, giving each
        piece to *emit*; whether it all came (``False``: the peer closed first).

        What h11 holds goes first; the rest is read straight from the socket,
        never past the body, which saves h11's copies of every piece.
        """
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                remaining -= len(event.data)
                await emit(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return True
            else:
                raise h11.RemoteProtocolError("the peer closed mid-body")
        self._behind = True
        while remaining > 0:
            try:
                data = await self.stream.receive_some(min(RECV_SIZE, remaining))
            except (trio.BrokenResourceError, OSError):
                data = b""
            if not data:
                return False
            remaining -= len(data)
            await emit(data)
        return True

    def reusable(self) -> bool:
        """Whether the connection may carry another exchange.

        h11 has seen both heads, so our side is ``DONE`` only if both
        allowed keep-alive; a peer body read past h11 was read whole.
        """
        if self._behind:
            return self.conn.our_state is h11.DONE
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def next_cycle(self) -> None:
        """Get ready for the next exchange (after :meth:`reusable` said yes)."""
        if self._behind:
            self.conn = h11.Connection(self.role, max_incomplete_event_size=MAX_HEAD)
            self._behind = False
        else:
            self.conn.start_next_cycle()


class _UpstreamFailed(Exception):
    """The app failed before its answer began (refused, reset, closed, or spoke nonsense)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Cut(Exception):
    """The exchange cannot go on; both connections are to be closed without an answer."""


@dataclass
class _Exchange:
    """How one forwarded exchange ended."""

    started: bool = False
    switched: bool = False
    body_done: bool = False


async def _close(stream: trio.abc.AsyncResource | None) -> None:
    if stream is not None:
        await trio.aclose_forcefully(stream)


async def _linger_close(stream: trio.SocketStream) -> None:
    """Close after an answer the client may still be sending a body to.

    Closing with unread bytes makes the kernel send a reset, which can
    destroy the answer before the client reads it; so the write side is
    shut first and what arrives is dropped for a moment.
    """
    try:
        await stream.send_eof()
        with trio.move_on_after(DRAIN_TIMEOUT):
            while await stream.receive_some(RECV_SIZE):
                pass
    except _PEER_ERRORS:
        pass
    await _close(stream)


async def splice(
    left: trio.SocketStream,
    left_head: bytes,
    right: trio.SocketStream,
    right_head: bytes,
    touch: Callable[[], None],
) -> None:
    """Copy bytes both ways until both directions ended; *left_head* goes to *right* first.

    A direction that reaches end of file shuts the other side's write half
    and the opposite direction goes on (half-close); an error on either side
    ends both.
    """

    async def one_way(
        source: trio.SocketStream, sink: trio.SocketStream, head: bytes, scope: trio.CancelScope
    ) -> None:
        try:
            if head:
                await sink.send_all(head)
            while data := await source.receive_some(RECV_SIZE):
                await sink.send_all(data)
                touch()
            await sink.send_eof()
        except _PEER_ERRORS:
            scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_way, left, right, left_head, nursery.cancel_scope)
        nursery.start_soon(one_way, right, left, right_head, nursery.cancel_scope)


def _peer_ip(stream: trio.SocketStream) -> str | None:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return None
    return str(peer[0]) if isinstance(peer, tuple) else None


class AppRelay:
    """Serves the connections of app listeners; see the module docstring.

    *resolve* finds the route of a request's ``Host`` header (wildcard
    mode); *scheme* is what browsers use (``X-Forwarded-Proto``, ``Secure``
    cookies).
    """

    def __init__(
        self,
        table: RouteTable,
        connections: Connections,
        *,
        scheme: str,
        resolve: Callable[[str | None], Route | None] | None = None,
    ) -> None:
        self.table = table
        self.connections = connections
        self.scheme = scheme
        self.resolve = resolve

    # ------------------------------------------------------------------ TCP

    async def serve_tcp(self, stream: trio.SocketStream, route: Route) -> None:
        """Relay one TCP connection of *route* to its target."""
        try:
            await self._serve_tcp(stream, route)
        except Exception:
            # One connection's bug must not end the listener serving every other one.
            log.exception("relaying a tcp connection of %s/%s failed", route.session_id, route.app)
        finally:
            await _close(stream)

    async def _serve_tcp(self, stream: trio.SocketStream, route: Route) -> None:
        upstream: trio.SocketStream | None = None
        try:
            with self.connections.attach(route) as scope:
                if scope is None:
                    log.warning(
                        "route %s/%s is full: connection refused", route.session_id, route.app
                    )
                    return
                with scope:
                    route.touch(trio.current_time())
                    try:
                        upstream = await self._connect(route)
                    except _UpstreamFailed as exc:
                        log.info("tcp app %s/%s: %s", route.session_id, route.app, exc.reason)
                        return
                    await splice(
                        stream, b"", upstream, b"", lambda: route.touch(trio.current_time())
                    )
        finally:
            await _close(upstream)

    # ----------------------------------------------------------------- HTTP

    async def serve_http(self, stream: trio.SocketStream, route: Route | None) -> None:
        """Serve one HTTP connection: of *route* (port mode) or of each request's host."""
        try:
            await self._serve_http(stream, route)
        except Exception:
            # One connection's bug must not end the listener serving every other one.
            log.exception("relaying an http connection failed")
        finally:
            await _close(stream)

    async def _serve_http(self, stream: trio.SocketStream, route: Route | None) -> None:
        client = _Side(stream, h11.SERVER)
        request = await self._read_request(client, HEAD_TIMEOUT)
        if request is None:
            return
        if route is None:
            route = self._route_of(request)
            if route is None:
                await self._refuse_and_close(
                    client,
                    AppProxyErrorType.NOT_FOUND,
                    f"no app is served at host {_host_of(request)!r}",
                )
                return
        with self.connections.attach(route) as scope:
            if scope is None:
                await self._refuse_and_close(
                    client,
                    AppProxyErrorType.TOO_MANY_CONNECTIONS,
                    f"app {route.app!r} already has {self.connections.limit} connections; "
                    "try again later",
                )
                return
            with scope:
                await self._serve_requests(client, route, request)

    def _route_of(self, request: h11.Request) -> Route | None:
        return self.resolve(_host_of(request)) if self.resolve is not None else None

    async def _read_request(self, client: _Side, timeout: float) -> h11.Request | None:  # noqa: ASYNC109
        """The next request's head; ``None`` when the client closed, stalled or spoke nonsense."""
        try:
            with trio.move_on_after(timeout):
                event = await client.next_event()
                if isinstance(event, h11.Request):
                    return event
            return None
        except h11.RemoteProtocolError as exc:
            if client.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await self._send_local(
                        client,
                        status,
                        [(b"connection", b"close")],
                        problem_body(AppProxyErrorType.INVALID_REQUEST, f"bad HTTP request: {exc}"),
                        PROBLEM_CONTENT_TYPE,
                    )
            return None
        except _PEER_ERRORS:
            return None

    async def _serve_requests(self, client: _Side, route: Route, request: h11.Request) -> None:
        upstream: _Side | None = None
        try:
            while True:
                if self.resolve is not None and self._route_of(request) is not route:
                    await self._refuse_and_close(
                        client,
                        AppProxyErrorType.INVALID_REQUEST,
                        "one connection serves one app: open a new connection for another host",
                        status=421,
                    )
                    return
                route.touch(trio.current_time())
                keep, upstream = await self._handle(client, route, request, upstream)
                if client.conn.their_state is h11.SWITCHED_PROTOCOL:
                    return
                if not keep or not client.reusable():
                    if client.conn.their_state is not h11.DONE:
                        await _linger_close(client.stream)
                    return
                client.next_cycle()
                next_request = await self._read_request(client, KEEPALIVE_TIMEOUT)
                if next_request is None:
                    return
                request = next_request
        finally:
            await _close(upstream.stream if upstream is not None else None)

    async def _handle(
        self, client: _Side, route: Route, request: h11.Request, upstream: _Side | None
    ) -> tuple[bool, _Side | None]:
        """Answer one request; whether the client connection may serve another, and the
        upstream connection to reuse."""
        if request.method == b"CONNECT":
            return await self._answer_problem(
                client,
                AppProxyErrorType.METHOD_NOT_ALLOWED,
                "CONNECT is not served",
            ), upstream
        cookies = [value.decode("latin-1") for name, value in request.headers if name == b"cookie"]
        decision = self.table.authorize(
            route,
            request.target.decode("latin-1"),
            cookies,
            trio.current_time(),
            secure=self.scheme == "https",
        )
        if isinstance(decision, Deny):
            return await self._answer_problem(
                client, AppProxyErrorType.UNAUTHORIZED, decision.detail
            ), upstream
        if isinstance(decision, Redirect):
            status = 302 if request.method in (b"GET", b"HEAD") else 307
            headers: list[tuple[bytes, bytes]] = [
                (b"location", decision.location.encode("latin-1")),
                (b"cache-control", b"no-store"),
            ]
            if decision.set_cookie is not None:
                headers.append((b"set-cookie", decision.set_cookie.encode("latin-1")))
            return await self._answer_local(client, status, headers, b"", None), upstream
        assert isinstance(decision, Forward)
        return await self._forward(client, route, request, upstream)

    # -------------------------------------------------------- local answers

    async def _drain(self, client: _Side) -> bool:
        """Read and drop the rest of the request body (bounded); whether it ended."""
        left = MAX_DRAIN
        with trio.move_on_after(DRAIN_TIMEOUT):
            while client.conn.their_state is h11.SEND_BODY and left > 0:
                event = await client.next_event()
                if isinstance(event, h11.Data):
                    left -= len(event.data)
                elif not isinstance(event, h11.EndOfMessage):
                    return False
        return client.conn.their_state is not h11.SEND_BODY

    async def _send_local(
        self,
        client: _Side,
        status: int,
        headers: Headers,
        body: bytes,
        content_type: str | None,
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        await client.send(h11.Response(status_code=status, headers=headers))
        if body:
            await client.send(h11.Data(data=body))
        await client.send(h11.EndOfMessage())

    async def _answer_local(
        self,
        client: _Side,
        status: int,
        headers: Headers,
        body: bytes,
        content_type: str | None,
    ) -> bool:
        """Answer the current request from the proxy; whether the connection may go on."""
        try:
            drained = await self._drain(client)
            if not drained:
                headers = [*headers, (b"connection", b"close")]
            await self._send_local(client, status, headers, body, content_type)
        except _PEER_ERRORS:
            return False
        return drained

    async def _answer_problem(
        self, client: _Side, kind: AppProxyErrorType, detail: str, *, status: int | None = None
    ) -> bool:
        return await self._answer_local(
            client,
            status or ERROR_STATUS[kind],
            [(b"cache-control", b"no-store")],
            problem_body(kind, detail),
            PROBLEM_CONTENT_TYPE,
        )

    async def _refuse_and_close(
        self, client: _Side, kind: AppProxyErrorType, detail: str, *, status: int | None = None
    ) -> None:
        await self._answer_problem(client, kind, detail, status=status)
        await _linger_close(client.stream)

    # ----------------------------------------------------------- forwarding

    async def _connect(self, route: Route) -> trio.SocketStream:
        target = route.target
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                return await trio.open_tcp_stream(target.host, target.port)
        except trio.TooSlowError:
            raise _UpstreamFailed(
                f"the app did not accept a connection within {CONNECT_TIMEOUT:.0f} s"
            ) from None
        except OSError as exc:
            log.info(
                "app %s/%s at %s:%d: %s", route.session_id, route.app, target.host, target.port, exc
            )
            reason = exc.strerror or str(exc)
            raise _UpstreamFailed(f"the app refused the connection ({reason})") from None

    async def _forward(
        self, client: _Side, route: Route, request: h11.Request, upstream: _Side | None
    ) -> tuple[bool, _Side | None]:
        """Relay *request* to the app and its answer back (module docstring)."""
        upgrade = _upgrade_of(list(request.headers))
        headers = forward_request_headers(
            list(request.headers),
            client_ip=_peer_ip(client.stream),
            scheme=self.scheme,
            upgrade=upgrade,
        )
        head = h11.Request(method=request.method, target=request.target, headers=headers)
        has_body = _announces_body(request)
        # A kept-alive upstream connection may have been closed by the app meanwhile; a
        # request without a body is then sent again on a new connection.
        attempts = 2 if upstream is not None and not has_body else 1
        for attempt in range(attempts):
            if upstream is None:
                try:
                    upstream = _Side(await self._connect(route), h11.CLIENT)
                except _UpstreamFailed as exc:
                    return await self._bad_gateway(client, route, exc.reason), None
            try:
                outcome = await self._exchange(
                    client, upstream, route, head, upgrade, _counted_length(request)
                )
            except _UpstreamFailed as exc:
                await _close(upstream.stream)
                upstream = None
                if attempt + 1 < attempts:
                    continue
                return await self._bad_gateway(client, route, exc.reason), None
            except _Cut:
                await _close(upstream.stream)
                return False, None
            if outcome.switched:
                await self._relay_switched(client, upstream, route)
                return False, None
            if upstream.reusable():
                upstream.next_cycle()
            else:
                await _close(upstream.stream)
                upstream = None
            return outcome.body_done, upstream
        raise AssertionError("unreachable")

    async def _bad_gateway(self, client: _Side, route: Route, reason: str) -> bool:
        return await self._answer_problem(
            client,
            AppProxyErrorType.APP_UNREACHABLE,
            f"app {route.app!r} of session {route.session_id} cannot be reached: {reason}",
        )

    async def _exchange(
        self,
        client: _Side,
        upstream: _Side,
        route: Route,
        head: h11.Request,
        upgrade: bytes | None,
        length: int | None,
    ) -> _Exchange:
        """One request and its answer, the body and the answer streamed concurrently.

        Raises :class:`_UpstreamFailed` when the app failed before its answer
        began (nothing was sent to the client), :class:`_Cut` when one side
        failed after that or the client went away.
        """
        outcome = _Exchange()
        client_gone = False
        failure: Exception | None = None

        def touch() -> None:
            route.touch(trio.current_time())

        async def pump_body(scope: trio.CancelScope) -> None:
            nonlocal client_gone
            try:
                if client.conn.their_state is not h11.SEND_BODY:
                    # A retry on a new upstream connection: the (empty) body was read.
                    await upstream.send(h11.EndOfMessage())
                    outcome.body_done = True
                    return
                if length:

                    async def emit(data: bytes) -> None:
                        await upstream.send(h11.Data(data=data))
                        touch()

                    if not await client.read_counted(length, emit):
                        client_gone = True
                        scope.cancel()
                        return
                    await upstream.send(h11.EndOfMessage())
                    outcome.body_done = True
                    return
                while True:
                    event = await client.next_event()
                    if isinstance(event, h11.Data):
                        await upstream.send(h11.Data(data=event.data))
                        touch()
                    elif isinstance(event, h11.EndOfMessage):
                        await upstream.send(h11.EndOfMessage())
                        outcome.body_done = True
                        return
                    else:
                        raise h11.RemoteProtocolError("the client closed mid-request")
            except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                if client.conn.their_state is h11.ERROR:
                    client_gone = True
                    scope.cancel()
                # Else the app stopped reading (it may be answering already): the
                # answer goes on; the connections are not reused.
            except OSError:
                scope.cancel()
                client_gone = True

        try:
            await upstream.send(head)
        except _PEER_ERRORS as exc:
            raise _UpstreamFailed(f"the app closed the connection ({exc})") from None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_body, nursery.cancel_scope)
            # Raised only once the nursery is closed: trio would wrap it in a group.
            try:
                await self._relay_answer(client, upstream, head.method, upgrade, outcome, touch)
            except (_Cut, h11.ProtocolError, trio.BrokenResourceError, OSError) as exc:
                nursery.cancel_scope.cancel()
                failure = exc
            else:
                if not outcome.body_done:
                    # The app answered before the request body ended: stop relaying it.
                    nursery.cancel_scope.cancel()
        if isinstance(failure, _Cut):
            raise failure
        if failure is not None:
            if outcome.started:
                log.info("app %s/%s broke mid-answer: %s", route.session_id, route.app, failure)
                raise _Cut from None
            raise _UpstreamFailed(f"the app answered no valid HTTP response ({failure})")
        if client_gone:
            raise _Cut
        return outcome

    async def _relay_answer(
        self,
        client: _Side,
        upstream: _Side,
        method: bytes,
        upgrade: bytes | None,
        outcome: _Exchange,
        touch: Callable[[], None],
    ) -> None:
        """Relay the app's answer (or its 101) to the client; records it in *outcome*."""
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.InformationalResponse):
                switching = event.status_code == 101
                # A 101 is relayed once the upgrade request's (empty) body went up.
                if switching and (upgrade is None or not outcome.body_done):
                    raise h11.RemoteProtocolError("an unasked-for 101")
                await self._send_client(
                    client,
                    h11.InformationalResponse(
                        status_code=event.status_code,
                        headers=forward_response_headers(list(event.headers), switching=switching),
                        reason=event.reason,
                    ),
                )
                if switching:
                    outcome.started = outcome.switched = True
                    return
            elif isinstance(event, h11.Response):
                outcome.started = True
                await self._send_client(
                    client,
                    h11.Response(
                        status_code=event.status_code,
                        headers=forward_response_headers(list(event.headers), switching=False),
                        reason=event.reason,
                    ),
                )
                length = _counted_length(event)
                if length and method != b"HEAD" and event.status_code not in (204, 304):

                    async def emit(data: bytes) -> None:
                        await self._send_client(client, h11.Data(data=data))
                        touch()

                    if not await upstream.read_counted(length, emit):
                        raise h11.RemoteProtocolError("the app closed mid-answer")
                    await self._send_client(client, h11.EndOfMessage())
                    return
            elif isinstance(event, h11.Data):
                await self._send_client(client, h11.Data(data=event.data))
                touch()
            elif isinstance(event, h11.EndOfMessage):
                await self._send_client(client, h11.EndOfMessage())
                return
            else:
                raise h11.RemoteProtocolError("the app closed the connection")

    async def _send_client(self, client: _Side, event: h11.Event) -> None:
        try:
            await client.send(event)
        except _PEER_ERRORS:
            raise _Cut from None

    async def _relay_switched(self, client: _Side, upstream: _Side, route: Route) -> None:
        """After a 101: raw bytes both ways, starting with what h11 read past the heads."""
        client_head, _ = client.conn.trailing_data
        upstream_head, _ = upstream.conn.trailing_data
        try:
            await splice(
                client.stream,
                bytes(client_head),
                upstream.stream,
                bytes(upstream_head),
                lambda: route.touch(trio.current_time()),
            )
        finally:
            await _close(upstream.stream)


def _host_of(request: h11.Request) -> str | None:
    for name, value in request.headers:
        if name == b"host":
            return value.decode("latin-1")
    return None


def _counted_length(message: h11.Request | h11.Response) -> int | None:
    """The ``Content-Length`` of a message without ``Transfer-Encoding`` (h11 checked it)."""
    length: int | None = None
    for name, value in message.headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length


def _announces_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() != b"0":
            return True
    return False
