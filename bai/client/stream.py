"""A session's WebSocket streams: its terminal, a streamed run, TCP tunnels to its apps.

Every stream is a WebSocket (RFC 6455, :mod:`trio_websocket`) under
``/stream/session/{name}``, opened with a ``GET`` signed like every REST call
(:meth:`bai.client.request.APIClient.build_request` signs it; the signature
covers the path with its query string and the ``Host`` header the WebSocket
client sends):

* :func:`stream_pty` -- ``/pty``: a shell in a pseudo-terminal of the
  session's main kernel.  TEXT messages carry JSON (spec, "terminal
  emulation"): ``{"type": "stdin", "chars": base64}``,
  ``{"type": "resize", "rows", "cols"}``, ``{"type": "ping"}``,
  ``{"type": "restart"}`` go out; ``{"type": "out", "data": base64}`` and
  ``{"type": "error", "data": text}`` come back.  The server closes the
  socket with 1000 when the shell exits.
* :func:`stream_execute` -- ``/execute``: one run of the execute loop; the
  first message holds the run's parameters, each Execution Result Object
  comes back as a JSON message, ``waiting-input`` is answered with a text
  message.
* :func:`open_tcpproxy` -- ``/tcpproxy?app=NAME``: one TCP connection to an
  app service (``sshd``, ``ttyd``, the image's own) per WebSocket, its bytes
  in BINARY messages both ways; the server closes with 1000 when the service
  closes its side.  :func:`forward_app` serves local TCP listeners with one
  such tunnel per accepted connection (``bai app``, ``bai ssh``).

Guarantees:

* a refusal before the upgrade raises the typed
  :class:`~bai.client.exceptions.BackendAPIError` built from the RFC 7807
  answer, exactly as a REST call would; an unreachable endpoint or a failed
  handshake raises :class:`~bai.client.exceptions.BackendClientError`;
* a stream that the server ends with a close code other than 1000 (or with
  an error message of the execute protocol) raises :class:`StreamClosed`,
  which names the code and the server's reason; a close with 1000 is the
  stream's normal end;
* every stream is closed (with 1000) when its ``async with`` block exits,
  also on cancellation;
* nothing is buffered without bound: a message is read from the socket only
  when the previous one was taken, and a send waits until the bytes are on
  the wire, so a slow reader on either side slows the writer on the other.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket,
)

from bai.client.exceptions import (
    BackendClientError,
    BackendError,
    MalformedResponse,
    error_from_response,
)
from bai.client.request import APIClient, QueryParams
from bai.client.session import ComputeSession, ExecutionResult, batch_options

__all__ = [
    "CLOSE_NORMAL",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_TERMINAL_SIZE",
    "ExecuteStream",
    "ForwardStats",
    "PtyError",
    "PtyStream",
    "StreamClosed",
    "TcpTunnel",
    "decode_pty_message",
    "encode_pty_resize",
    "encode_pty_stdin",
    "forward_app",
    "open_stream",
    "open_tcpproxy",
    "stream_execute",
    "stream_pty",
]

#: The close code of a stream's normal end.
CLOSE_NORMAL: Final = 1000
#: The largest number of rows or columns a terminal may be resized to.
MAX_TERMINAL_SIZE: Final = 1000
#: Bytes of terminal input per ``stdin`` message (base64 makes it 4/3 larger;
#: the server refuses messages over 1 MiB).
PTY_STDIN_CHUNK: Final = 256 * 1024
#: Bytes per BINARY message sent through a tunnel, and per local read.
TUNNEL_CHUNK: Final = 256 * 1024
#: The largest message a tunnel accepts from the server.
_TUNNEL_MAX_MESSAGE: Final = 4 * 1024 * 1024
#: Bytes read from the socket at once (trio-websocket's default is 4 KiB).
_RECEIVE_BUFFER: Final = 64 * 1024
#: Seconds the closing handshake may take before the socket is dropped.
_DISCONNECT_TIMEOUT: Final = 5.0
#: Local connections :func:`forward_app` tunnels at once by default.
DEFAULT_MAX_CONNECTIONS: Final = 128
# Headers the WebSocket handshake writes itself (or that make no sense on it).
_HANDSHAKE_HEADERS: Final = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "accept",
        "accept-encoding",
        "content-length",
        "transfer-encoding",
    }
)


class StreamClosed(BackendClientError):
    """The server ended a stream abnormally.

    ``code`` is the WebSocket close code (``None`` when the connection broke
    without a closing handshake), ``reason`` the server's close reason, and
    ``problem`` the error message the server sent before closing, if any
    (the execute stream's ``{"status": "error", "type", "title", "msg"}``).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None,
        reason: str | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.problem = dict(problem) if problem is not None else None


def _closed_error(what: str, exc: ConnectionClosed, extra: str = "") -> StreamClosed:
    reason = exc.reason
    code = reason.code if reason is not None else None
    text = reason.reason if reason is not None else None
    message = f"the server closed the {what} (code {code}{', ' + text if text else ''})"
    return StreamClosed(message + extra, code=code, reason=text)


def _is_normal_close(exc: ConnectionClosed) -> bool:
    return exc.reason is not None and exc.reason.code == CLOSE_NORMAL


def _ws_host_header(host: str, port: int) -> str:
    # trio-websocket writes the Host header itself, by this rule; the
    # signature must cover exactly that text.
    return host if port in (80, 443) else f"{host}:{port}"


def _ssl_context(api: APIClient) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if api.config.skip_sslcert_validation:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@asynccontextmanager
async def open_stream(
    api: APIClient,
    path: str,
    *,
    params: QueryParams | None = None,
    max_message_size: int = 1024 * 1024,
) -> AsyncIterator[WebSocketConnection]:
    """Open the WebSocket at *path* (with *params*) of the manager behind *api*, signed.

    Yields the open :class:`trio_websocket.WebSocketConnection`; it is closed
    with 1000 when the block exits.  Refusals and connection failures raise
    as the module docstring says.  Messages larger than *max_message_size*
    make the client close the socket with 1009.
    """
    url = api.http.base_url
    secure = url.scheme in ("https", "wss")
    port = url.port or (443 if secure else 80)
    request = api.build_request("GET", path, params=params, host=_ws_host_header(url.host, port))
    headers = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.items()
        if name.lower() not in _HANDSHAKE_HEADERS and not name.lower().startswith("sec-websocket")
    ]
    entered = False
    failure: BaseException | None = None
    try:
        async with open_websocket(
            url.host,
            port,
            request.url.raw_path.decode("ascii"),
            use_ssl=_ssl_context(api) if secure else False,
            extra_headers=headers,
            max_message_size=max_message_size,
            receive_buffer_size=_RECEIVE_BUFFER,
            connect_timeout=api.config.connection_timeout,
            disconnect_timeout=_DISCONNECT_TIMEOUT,
        ) as ws:
            entered = True
            try:
                yield ws
            except BaseException as exc:
                failure = exc
                raise
    except ConnectionRejected as exc:
        if entered:
            raise
        raise error_from_response(exc.status_code, "", exc.body or b"") from None
    except DisconnectionTimeout as exc:
        if not entered:
            raise BackendClientError(f"the stream {path} broke off during its handshake") from exc
        # The server did not answer the closing handshake in time and the
        # socket was dropped: nothing is lost, unless the block itself failed
        # (raised below, outside this handler, so its own context stays).
    except (HandshakeError, trio.BrokenResourceError) as exc:
        if entered:
            raise
        cause = exc.__cause__ or exc
        raise BackendClientError(
            f"cannot open the stream {path} at {api.config.endpoint}: "
            f"{cause or type(cause).__name__}"
        ) from exc
    if failure is not None:
        raise failure


# ---------------------------------------------------------------------------
# The terminal


@dataclass(frozen=True, slots=True)
class PtyError:
    """An ``error`` message of the terminal protocol: the server refused one message.

    The terminal stays open after it (e.g. a resize out of range).
    """

    message: str


def encode_pty_stdin(data: bytes) -> str:
    """The ``stdin`` message carrying *data* (keep it under :data:`PTY_STDIN_CHUNK`)."""
    return json.dumps({"type": "stdin", "chars": base64.b64encode(data).decode("ascii")})


def encode_pty_resize(rows: int, cols: int) -> str:
    """The ``resize`` message; :class:`BackendClientError` unless both are 1..1000."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BackendClientError(f"a terminal's {name} must be an integer, got {value!r}")
        if not 1 <= value <= MAX_TERMINAL_SIZE:
            raise BackendClientError(
                f"a terminal's {name} must be 1..{MAX_TERMINAL_SIZE}, got {value}"
            )
    return json.dumps({"type": "resize", "rows": rows, "cols": cols})


def decode_pty_message(message: str | bytes) -> bytes | PtyError | None:
    """One server message: the output bytes of ``out``, a :class:`PtyError` for
    ``error``, ``None`` for a type this client does not know (to be skipped).

    Raises :class:`MalformedResponse` naming the field for anything else.
    """
    try:
        data = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse(
            "is not JSON", value=message[:200], field="terminal message"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise MalformedResponse("has no type", value=data, field="terminal message")
    kind = data["type"]
    payload = data.get("data")
    if kind == "out":
        if not isinstance(payload, str):
            raise MalformedResponse("is not base64 text", value=payload, field="out.data")
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise MalformedResponse(
                "is not base64 text", value=payload[:200], field="out.data"
            ) from None
    if kind == "error":
        return PtyError(payload if isinstance(payload, str) else json.dumps(payload))
    return None


class PtyStream:
    """A terminal of a session (:func:`stream_pty`).

    ``async for data in pty`` yields the terminal's output bytes until the
    shell exits; ``error`` messages do not end it: they are appended to
    :attr:`errors` and passed to ``on_error`` (see :func:`stream_pty`).
    :meth:`receive` returns both kinds, in order.
    """

    def __init__(
        self, ws: WebSocketConnection, on_error: Callable[[PtyError], None] | None = None
    ) -> None:
        self.ws = ws
        self.errors: list[PtyError] = []
        self._on_error = on_error

    async def _send(self, text: str) -> None:
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise _closed_error("terminal", exc) from None

    async def send_stdin(self, data: bytes | str) -> None:
        """Type *data* (text is sent as UTF-8) into the terminal."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        for start in range(0, len(raw), PTY_STDIN_CHUNK):
            await self._send(encode_pty_stdin(raw[start : start + PTY_STDIN_CHUNK]))

    async def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size (1..1000 each); the shell gets ``SIGWINCH``."""
        await self._send(encode_pty_resize(rows, cols))

    async def ping(self) -> None:
        """Tell the server the terminal is in use (keeps an idle session alive)."""
        await self._send(json.dumps({"type": "ping"}))

    async def restart(self) -> None:
        """Restart the session's kernels (files kept); the terminal gets a fresh shell."""
        await self._send(json.dumps({"type": "restart"}))

    async def receive(self) -> bytes | PtyError | None:
        """The next output bytes or error message; ``None`` once the shell has exited.

        Raises :class:`StreamClosed` if the server closed with another code
        than 1000, :class:`MalformedResponse` for a message that breaks the
        protocol.
        """
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed as exc:
                if _is_normal_close(exc):
                    return None
                raise _closed_error("terminal", exc) from None
            decoded = decode_pty_message(message)
            if decoded is not None:
                return decoded

    def __aiter__(self) -> PtyStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            message = await self.receive()
            if message is None:
                raise StopAsyncIteration
            if isinstance(message, PtyError):
                self.errors.append(message)
                if self._on_error is not None:
                    self._on_error(message)
                continue
            return message


@asynccontextmanager
async def stream_pty(
    session: ComputeSession, *, on_error: Callable[[PtyError], None] | None = None
) -> AsyncIterator[PtyStream]:
    """``GET /stream/session/{name}/pty``: a new shell in its own terminal.

    ``async with stream_pty(sess) as pty: await pty.send_stdin(b"ls\\r") ...``.
    The shell ends when the block exits (the session does not).  *on_error*
    is called with each ``error`` message met while iterating.
    """
    async with open_stream(
        session.api, f"{session.stream_path}/pty", params=session.owner_params()
    ) as ws:
        yield PtyStream(ws, on_error)


# ---------------------------------------------------------------------------
# Streamed execution


class ExecuteStream:
    """One run over ``/stream/session/{name}/execute`` (:func:`stream_execute`).

    ``async for result in run`` yields each :class:`ExecutionResult` and stops
    after the final one (``finished`` or ``exec-timeout``); on
    ``waiting-input`` answer with :meth:`send_input` before reading on.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.done = False

    async def send_input(self, text: str) -> None:
        """Answer a ``waiting-input`` result with *text*."""
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise _closed_error("run", exc) from None

    async def receive(self) -> ExecutionResult | None:
        """The next result; ``None`` after the final one.

        Raises :class:`StreamClosed` when the server reports an error (its
        problem in ``problem``) or closes before the final result.
        """
        if self.done:
            return None
        try:
            message = await self.ws.get_message()
        except ConnectionClosed as exc:
            raise _closed_error("run", exc, " before the run finished") from None
        try:
            data = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponse(
                "is not JSON", value=message[:200], field="execution result"
            ) from None
        if isinstance(data, dict) and data.get("status") == "error":
            title = data.get("title") or "the run failed"
            detail = data.get("msg") or data.get("detail")
            raise StreamClosed(
                f"{title} ({detail})" if detail and detail != title else str(title),
                code=None,
                problem=data,
            )
        result = ExecutionResult.from_json(data)
        self.done = result.is_final
        return result

    def __aiter__(self) -> ExecuteStream:
        return self

    async def __anext__(self) -> ExecutionResult:
        result = await self.receive()
        if result is None:
            raise StopAsyncIteration
        return result


@asynccontextmanager
async def stream_execute(
    session: ComputeSession,
    code: str = "",
    *,
    mode: str = "query",
    options: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> AsyncIterator[ExecuteStream]:
    """``GET /stream/session/{name}/execute``: run *code* (``query``) or the
    uploaded files (``batch``, *options* as :meth:`ComputeSession.execute`).

    The run's parameters are sent on entering the block; iterate the yielded
    :class:`ExecuteStream` for the results.
    """
    if mode not in ("query", "batch"):
        raise BackendClientError(f"a streamed run starts in query or batch mode, not {mode!r}")
    first: dict[str, Any] = {"mode": mode, "code": code}
    if mode == "batch":
        first["options"] = batch_options(options)
    elif options:
        first["options"] = dict(options)
    if run_id is not None:
        first["runId"] = run_id
    async with open_stream(
        session.api, f"{session.stream_path}/execute", params=session.owner_params()
    ) as ws:
        run = ExecuteStream(ws)
        await run.send_input(json.dumps(first))
        yield run


# ---------------------------------------------------------------------------
# TCP tunnels


class TcpTunnel(trio.abc.Stream):
    """One TCP connection to an app service, as a :class:`trio.abc.Stream`.

    :meth:`receive_some` returns ``b""`` once the service closed its side
    (the server's close 1000) and raises :class:`StreamClosed` if the server
    ended the tunnel any other way; :meth:`send_all` raises
    :class:`StreamClosed` once the tunnel is closed.  The protocol has no
    half-close: :meth:`aclose` ends both directions.  Text messages (not
    part of the protocol) are kept in :attr:`notices` and otherwise ignored.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.notices: list[str] = []
        self._pending = b""
        self._eof = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), TUNNEL_CHUNK):
                await self.ws.send_message(bytes(view[start : start + TUNNEL_CHUNK]))
        except ConnectionClosed as exc:
            raise _closed_error("tunnel", exc) from None

    async def wait_send_all_might_not_block(self) -> None:
        # send_all waits for the socket itself; there is nothing to wait for here.
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        limit = max_bytes or TUNNEL_CHUNK
        while not self._pending:
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                message = await self.ws.get_message()
            except ConnectionClosed as exc:
                if not _is_normal_close(exc):
                    extra = f": {self.notices[-1]}" if self.notices else ""
                    raise _closed_error("tunnel", exc, extra) from None
                self._eof = True
                continue
            if isinstance(message, str):
                self.notices.append(message)
                continue
            self._pending = message
        data, self._pending = self._pending[:limit], self._pending[limit:]
        return data

    async def aclose(self) -> None:
        await self.ws.aclose()


def _json_param(value: Mapping[str, Any] | None) -> str | None:
    return json.dumps(dict(value)) if value else None


@asynccontextmanager
async def open_tcpproxy(
    session: ComputeSession,
    app: str,
    *,
    port: int | None = None,
    envs: Mapping[str, str] | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> AsyncIterator[TcpTunnel]:
    """``GET /stream/session/{name}/tcpproxy?app=APP``: one connection to *app*.

    The server starts the app's service on first use and accepts the
    WebSocket once the service listens; *port* picks one of the app's
    ports, *envs* and *arguments* go to the service's start (as JSON text).
    A refusal (unknown app 404, the service failed to start 503/502) raises
    the typed API error.
    """
    params: dict[str, Any] = {
        "app": app,
        "port": port,
        "envs": _json_param(envs),
        "arguments": _json_param(arguments),
        **session.owner_params(),
    }
    async with open_stream(
        session.api,
        f"{session.stream_path}/tcpproxy",
        params=params,
        max_message_size=_TUNNEL_MAX_MESSAGE,
    ) as ws:
        yield TcpTunnel(ws)


@dataclass
class ForwardStats:
    """What :func:`forward_app` did so far (read it while it runs, for progress)."""

    accepted: int = 0
    active: int = 0
    failed: int = 0
    #: The last few failures, newest last.
    errors: deque[BaseException] = field(default_factory=lambda: deque(maxlen=16))


def _http_error_page(exc: BaseException) -> bytes:
    status = getattr(exc, "status", None)
    code = status if isinstance(status, int) and status >= 400 else 502
    text = f"bai app: the tunnel could not be opened: {exc}\n".encode()
    head = (
        f"HTTP/1.1 {code} Tunnel Failed\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + text


async def _pump(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream) -> None:
    while data := await source.receive_some(TUNNEL_CHUNK):
        await sink.send_all(data)


async def _splice(local: trio.abc.Stream, tunnel: TcpTunnel) -> None:
    """Relay both ways until either side ends, then return; raises the tunnel's failure.

    A local EOF ends the connection at once: the tunnel protocol has no
    half-close (the official client does the same).  The local side going
    away is a normal end, and so is a tunnel closed with 1000.
    """
    failures: list[BackendError] = []
    async with trio.open_nursery() as nursery:

        async def one_way(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream) -> None:
            try:
                await _pump(source, sink)
            except StreamClosed as exc:
                if exc.code != CLOSE_NORMAL:
                    failures.append(exc)
            except BackendError as exc:
                failures.append(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(one_way, local, tunnel)
        nursery.start_soon(one_way, tunnel, local)
    if failures:
        raise failures[0]


async def _tunnel_one(
    session: ComputeSession,
    app: str,
    local: trio.abc.Stream,
    *,
    port: int | None,
    envs: Mapping[str, str] | None,
    arguments: Mapping[str, Any] | None,
    http: bool,
    stats: ForwardStats,
    on_error: Callable[[BaseException], None] | None,
) -> None:
    stats.active += 1
    try:
        async with local:
            try:
                async with open_tcpproxy(
                    session, app, port=port, envs=envs, arguments=arguments
                ) as tunnel:
                    await _splice(local, tunnel)
            except BackendError as exc:
                stats.failed += 1
                stats.errors.append(exc)
                if on_error is not None:
                    on_error(exc)
                if http and not isinstance(exc, StreamClosed):
                    # A browser shows why instead of an empty reply.
                    with trio.move_on_after(_DISCONNECT_TIMEOUT):
                        await local.send_all(_http_error_page(exc))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the local client went away before its error answer: nothing to tell it
    finally:
        stats.active -= 1


async def forward_app(
    session: ComputeSession,
    app: str,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    *,
    port: int | None = None,
    envs: Mapping[str, str] | None = None,
    arguments: Mapping[str, Any] | None = None,
    http: bool = False,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    stats: ForwardStats | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Serve *listeners*: each accepted connection gets its own :func:`open_tcpproxy` tunnel.

    Runs until cancelled; the listeners are closed then, and so are all
    tunnels.  At most *max_connections* are tunnelled at once (the next is
    accepted when one ends).  A tunnel that cannot be opened or breaks ends
    its connection only: the error goes to *on_error* and *stats*; for an
    *http* app, a connection whose tunnel could not be opened gets a short
    HTTP error answer naming the reason.
    """
    stats = stats if stats is not None else ForwardStats()
    slots = trio.Semaphore(max_connections)

    async def serve(listener: trio.abc.Listener[trio.abc.Stream]) -> None:
        async with listener, trio.open_nursery() as connections:
            while True:
                await slots.acquire()
                try:
                    local = await listener.accept()
                except BaseException:
                    slots.release()
                    raise
                stats.accepted += 1
                connections.start_soon(handle, local)

    async def handle(local: trio.abc.Stream) -> None:
        try:
            await _tunnel_one(
                session,
                app,
                local,
                port=port,
                envs=envs,
                arguments=arguments,
                http=http,
                stats=stats,
                on_error=on_error,
            )
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(serve, listener)
