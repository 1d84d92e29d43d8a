"""A small HTTP/1.1 server on Trio for one ASGI app, with zero-copy file bodies.

The storage proxy's client-facing API (:mod:`bai.storage.client_api`) runs on
:class:`Http11Server` instead of hypercorn: hypercorn passes every body byte
through h11 and a queue, so a download cost the proxy two copies and a few
Python calls per 1 MiB piece, while here a file's bytes go from the page cache
to the socket with ``os.sendfile`` and never enter Python.

What it speaks: HTTP/1.1 and 1.0 through :mod:`h11` (keep-alive, one request
at a time per connection, chunked and ``Content-Length`` bodies both ways,
``Expect: 100-continue``), TLS when given an SSL context.  What it serves:
ASGI 3 ``http`` scopes (no lifespan, no WebSocket) and, on plain TCP, the
ASGI *zero-copy send* extension: with ``"http.response.zerocopysend"`` in
``scope["extensions"]`` the app may send ``{"type":
"http.response.zerocopysend", "file": FD, "offset": N, "count": N,
"more_body": False}`` (``file`` a descriptor or an object with ``fileno()``;
without ``offset`` the file's position is used and advanced, without
``count`` the rest of the file), and those bytes are sent with
``os.sendfile`` in a worker thread, so a page-cache miss never stalls the
event loop.

It also offers, on plain TCP on Linux, for a request whose body has a
``Content-Length`` (no ``Transfer-Encoding``), the *splice receive*
extension: ``scope["extensions"]["bai.http.request.splice"]["splice"]`` is
an async callable ``splice(fd, offset, progress) -> bool`` that writes the
rest of the body into descriptor ``fd`` from ``offset`` on, straight from
the socket (``os.splice`` through a pipe, in a worker thread: the bytes
never enter Python), calling ``progress(n)`` whenever the first ``n`` bytes
are in the file.  It answers True once the whole body is there (the next
``receive()`` then answers the body's end) and False if the client hung up,
reset or stalled first (``receive()`` then answers ``http.disconnect``);
a failing file write raises its ``OSError``.  Never more than the body's
``Content-Length`` is read off the socket.  The body then bypassed h11, so the
answer carries ``Connection: close`` and the connection closes after it.

Guarantees:

* A client that hangs up, resets or stalls ends only its own connection:
  ``receive()`` then answers ``http.disconnect`` and ``send()`` raises
  :class:`ClientDisconnected` (an ``OSError``, as ASGI asks); no exception of
  a connection ever reaches the listener.
* No read or write waits more than *idle_timeout* seconds for progress; a
  request's head must arrive within *keep_alive_timeout* seconds of the
  connection going idle (accepted, or its previous answer sent), else the
  connection is closed.
* A malformed request is answered 400 (a head over :data:`MAX_HEAD` bytes
  431: heads are read in pieces of that size and h11 checks between reads, so
  no head past twice that size is accepted) with an RFC 7807 body, then the
  connection closes; an app that fails
  before answering gets a 500 RFC 7807 body (the traceback logged under a
  reference); one that fails or stops mid-answer has its connection closed,
  which the client sees as a short body.
* A connection whose request body was not read to its end is closed after the
  answer, with a short lingering read so the answer is not lost to a reset.
* Every connection's socket is closed when its task ends, cancellation
  included (a stopping server cuts running transfers; clients resume them).
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

import h11
import msgspec
import trio

from bai.common.asgi import Message, Receive, Scope, Send
from bai.common.errors import sole_exception
from bai.common.fileio import (
    CAN_SPLICE,
    SPLICE_BATCH,
    SocketFailed,
    open_splice_pipe,
    pwrite_all,
    splice_into_file,
)
from bai.storage.errors import PROBLEM_CONTENT_TYPE, http_problem, problem_of

__all__ = [
    "MAX_HEAD",
    "RECV_SIZE",
    "SPLICE_RECEIVE",
    "ZEROCOPY_SEND",
    "ASGIApp",
    "ClientDisconnected",
    "Http11Server",
]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The ASGI extension (and message type) of a zero-copy file body.
ZEROCOPY_SEND: Final = "http.response.zerocopysend"
#: The ASGI extension of a request body spliced from the socket into a file.
SPLICE_RECEIVE: Final = "bai.http.request.splice"
#: Bytes read from a socket at once (large: each read costs a round through h11).
RECV_SIZE: Final = 1024 * 1024
#: Most bytes of a request's head (line and headers).
MAX_HEAD: Final = 16 * 1024
#: Most seconds spent reading (and dropping) what a client still sends before closing.
LINGER: Final = 2.0
#: Most bytes of a request body the app left unread that are read off to keep the connection.
KEEP_UNREAD: Final = 64 * 1024
#: Bodies up to this size are joined with their framing into one write.
_JOIN_LIMIT: Final = 64 * 1024
#: sendfile errors that mean the peer is gone, not that the file failed.
_PEER_ERRNOS: Final = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH}
)


class ClientDisconnected(OSError):
    """The client has gone (hung up, reset, or stalled): the answer cannot be sent."""


class _Idle(Exception):
    """The client sent nothing for longer than the timeout that applied."""


class _FileSpan:
    """``count`` bytes of descriptor ``fd`` from ``offset`` (None: its position), for h11.

    h11 only needs the length of a body part; with
    ``send_with_data_passthrough`` the span comes back unchanged among the
    framing bytes, and is then sent with ``os.sendfile``.
    """

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int | None, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count


def _problem_bytes(status: int, body: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    data = msgspec.json.encode(body)
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(data)).encode()),
    ]
    return headers, data


class Http11Server:
    """Serves ASGI app *app* over HTTP/1.1 (module docstring).

    *ssl_context* turns TLS on (then bodies are copied, never sent with
    sendfile); *zerocopy* False leaves the zero-copy extension out of every
    scope.  Errors go to *logger*.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger: logging.Logger,
        ssl_context: ssl.SSLContext | None = None,
        zerocopy: bool = True,
        keep_alive_timeout: float = 5.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self.app = app
        self.log = logger
        self.ssl_context = ssl_context
        self.zerocopy = zerocopy and ssl_context is None
        self.keep_alive_timeout = keep_alive_timeout
        self.idle_timeout = idle_timeout

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[list[str]]) -> None:
        """Listen on *host*:*port* (0: a free port) until cancelled.

        Reports the bound addresses as URLs (``http://127.0.0.1:6021``), as
        hypercorn does.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        scheme = "https" if self.ssl_context is not None else "http"
        bound = []
        for listener in listeners:
            name = listener.socket.getsockname()
            address = f"[{name[0]}]" if listener.socket.family == trio.socket.AF_INET6 else name[0]
            bound.append(f"{scheme}://{address}:{name[1]}")
        for url in bound:
            self.log.info("Running on %s", url)
        task_status.started(bound)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Serve one connection; never raises (a handler's error would end the listener)."""
        try:
            peer = stream.socket.getpeername()
            local = stream.socket.getsockname()
        except OSError:  # reset before we looked
            await trio.aclose_forcefully(stream)
            return
        served: trio.abc.Stream = stream
        if self.ssl_context is not None:
            served = trio.SSLStream(stream, self.ssl_context, server_side=True)
        connection = _Connection(
            self, served, stream.socket if self.zerocopy else None, peer[:2], local[:2]
        )
        try:
            await connection.run()
        except (ClientDisconnected, _Idle, trio.BrokenResourceError, ssl.SSLError):
            pass
        except Exception:
            self.log.exception("client connection from %s failed", peer[0])
        finally:
            try:
                await connection.close()
            except Exception:
                self.log.exception("closing the connection from %s failed", peer[0])


class _Connection:
    """One client connection: its stream, its h11 state, and the request loop."""

    def __init__(
        self,
        server: Http11Server,
        stream: trio.abc.Stream,
        sock: trio.socket.SocketType | None,
        peer: tuple[str, int],
        local: tuple[str, int],
    ) -> None:
        self.server = server
        self.stream = stream
        self.sock = sock  # set when bodies may go with sendfile
        self.peer = peer
        self.local = local
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.broken = False  # the stream failed: nothing more can be sent
        self.answered = False  # something was sent in the current cycle
        self.body_declined = False  # answered a client that waited for 100-continue
        self.spliced = False  # a request body was (partly) read past h11: close after the answer
        self.body_consumed = False  # ... and all of it was read: no lingering read at close

    async def run(self) -> None:
        while True:
            event: Any = None
            malformed: h11.RemoteProtocolError | None = None
            with trio.move_on_after(self.server.keep_alive_timeout):
                try:
                    # A head is read in pieces of MAX_HEAD bytes: h11 checks its limit between.
                    event = await self.next_event(float("inf"), MAX_HEAD)
                except h11.RemoteProtocolError as exc:
                    malformed = exc
            if malformed is not None:
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._refuse(malformed.error_status_hint, str(malformed))
                return
            if not isinstance(event, h11.Request):
                return  # closed between requests, or no whole head in time
            await _Exchange(self, event).run()
            if self.h11.our_state is not h11.DONE or self.body_declined or self.spliced:
                return  # a client answered before it sent its body may send it or not: close
            if not await self._rest_of_request():
                return
            self.h11.start_next_cycle()
            self.answered = False

    async def next_event(self, timeout: float, size: int = RECV_SIZE) -> Any:  # noqa: ASYNC109
        """h11's next event, reading at most *size* bytes and waiting at most *timeout*
        seconds per read (else :class:`_Idle`)."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data: bytes | bytearray = b""
            with trio.move_on_after(timeout) as waited:
                try:
                    data = await self.stream.receive_some(size)
                except trio.BrokenResourceError:
                    data = b""  # a reset peer is a closed peer; h11 says if that was fine
            if waited.cancelled_caught:
                raise _Idle
            # h11 appends to its own buffer, which takes a bytearray as well (no copy here).
            self.h11.receive_data(cast(bytes, data))

    async def _rest_of_request(self) -> bool:
        """Read off what the app left of the request body (at most :data:`KEEP_UNREAD`
        bytes); whether the request has ended, so that the connection can serve the next.

        A GET's end is only seen once read, though it carries no bytes.
        """
        left = KEEP_UNREAD
        while self.h11.their_state is h11.SEND_BODY and left >= 0:
            try:
                event = await self.next_event(self.server.idle_timeout)
            except (_Idle, h11.RemoteProtocolError):
                return False
            if isinstance(event, h11.Data):
                left -= len(event.data)
        return self.h11.their_state is h11.DONE

    async def send_all(self, data: bytes) -> None:
        """Send *data*; :class:`ClientDisconnected` if the client is gone or stalls."""
        if self.broken:
            raise ClientDisconnected("the connection is broken")
        self.answered = True
        with trio.move_on_after(self.server.idle_timeout) as waited:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                raise ClientDisconnected(str(exc)) from exc
        if waited.cancelled_caught:
            self.broken = True
            raise ClientDisconnected(self._stalled())

    def _stalled(self) -> str:
        return f"the client read nothing for {self.server.idle_timeout} s"

    async def send_parts(self, parts: list[Any]) -> None:
        """Send h11's output: bytes as they are, :class:`_FileSpan` parts with sendfile."""
        pending: list[bytes] = []
        for part in parts:
            if isinstance(part, _FileSpan):
                if pending:
                    await self.send_all(b"".join(pending))
                    pending = []
                await self._sendfile(part)
            elif len(part) > _JOIN_LIMIT:
                if pending:
                    await self.send_all(b"".join(pending))
                    pending = []
                await self.send_all(part)
            else:
                pending.append(part)
        if pending:
            await self.send_all(b"".join(pending))

    async def _sendfile(self, span: _FileSpan) -> None:
        if self.broken:
            raise ClientDisconnected("the connection is broken")
        sock = self.sock
        if sock is None:  # never handed out without a socket; a guard for misuse
            raise RuntimeError("zero-copy send on a connection without a plain socket")
        self.answered = True
        out = sock.fileno()
        offset, left = span.offset, span.count
        while left > 0:
            with trio.move_on_after(self.server.idle_timeout) as waited:
                await trio.lowlevel.wait_writable(sock)
            if waited.cancelled_caught:
                self.broken = True
                raise ClientDisconnected(self._stalled())
            try:
                # The socket is non-blocking: each call sends what fits in its buffer now.
                sent = await trio.to_thread.run_sync(os.sendfile, out, span.fd, offset, left)
            except BlockingIOError:
                continue
            except OSError as exc:
                if isinstance(exc, ConnectionError) or exc.errno in _PEER_ERRNOS:
                    self.broken = True
                    raise ClientDisconnected(str(exc)) from exc
                raise
            if sent == 0:
                self.broken = True  # the body is short of its announced length
                raise EOFError(f"the file ended {left} bytes before the end of the span sent")
            left -= sent
            if offset is not None:
                offset += sent

    async def _refuse(self, status: int, detail: str) -> None:
        """Answer a request h11 could not read, and mark the connection to be closed."""
        headers, data = _problem_bytes(status, http_problem(status, detail))
        headers.append((b"connection", b"close"))
        try:
            parts = [
                self.h11.send(h11.Response(status_code=status, headers=headers)),
                self.h11.send(h11.Data(data=data)),
                self.h11.send(h11.EndOfMessage()),
            ]
            await self.send_all(b"".join(part for part in parts if part))
        except h11.LocalProtocolError:
            pass

    async def close(self) -> None:
        """Close the stream; first read off what the client still sends if it was answered."""
        try:
            if (
                self.answered
                and not self.broken
                and not self.body_consumed
                and self.h11.their_state not in (h11.DONE, h11.CLOSED, h11.MUST_CLOSE)
                and isinstance(self.stream, trio.SocketStream)
            ):
                await self._linger(self.stream)
        finally:
            await trio.aclose_forcefully(self.stream)

    @staticmethod
    async def _linger(stream: trio.SocketStream) -> None:
        # Closing with unread bytes makes the kernel send a reset, which may reach the
        # client before it read the answer: shut our side, drop what comes, then close.
        with trio.move_on_after(LINGER):
            try:
                await stream.send_eof()
                while await stream.receive_some(RECV_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


class _Exchange:
    """One request and its answer: the ASGI ``receive`` and ``send`` of the app's call."""

    def __init__(self, connection: _Connection, request: h11.Request) -> None:
        self.connection = connection
        self.request = request
        self.head_only = request.method == b"HEAD"
        self.no_body = self.head_only
        self.head: bytes | None = None  # the answer's head, sent with its first body part
        self.started = False
        self.complete = False
        self.body_ended = False
        self.gone = False
        self.finished = trio.Event()  # the answer is complete, or the client is gone
        self.received = 0  # body bytes handed to the app so far
        self.end_pending = False  # the body ended outside h11: receive() says so next

    def scope(self) -> Scope:
        request = self.request
        target = request.target
        if target.startswith(b"/"):
            raw_path, _, query = target.partition(b"?")
        else:  # absolute-form ("http://host/path?q") or "*"
            parts = urlsplit(target)
            raw_path, query = parts.path or b"/", parts.query
        connection = self.connection
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"),
            "scheme": "http" if connection.server.ssl_context is None else "https",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(name, value) for name, value in request.headers],
            "client": connection.peer,
            "server": connection.local,
            "extensions": self._extensions(),
        }

    def _extensions(self) -> dict[str, dict[str, Any]]:
        if self.connection.sock is None:
            return {}
        extensions: dict[str, dict[str, Any]] = {ZEROCOPY_SEND: {}}
        if CAN_SPLICE and self._content_length() is not None:
            extensions[SPLICE_RECEIVE] = {"splice": self.splice}
        return extensions

    def _content_length(self) -> int | None:
        """The body's ``Content-Length`` when h11 frames the body by it, else None."""
        length: int | None = None
        for name, value in self.request.headers:
            if name == b"transfer-encoding":
                return None
            if name == b"content-length":
                length = int(value)  # h11 checked it: digits, and one value
        return length

    async def run(self) -> None:
        server = self.connection.server
        method = self.request.method.decode("ascii")
        try:
            await server.app(self.scope(), self.receive, self.send)
        except Exception as raised:
            exc = sole_exception(raised)
            if isinstance(exc, ClientDisconnected) or self.gone:
                self.gone = True  # what failed had no one left to answer
                server.log.debug(
                    "%s %s: the client left", method, self.path_for_log(), exc_info=exc
                )
            elif self.started:
                server.log.error(
                    "%s %s failed mid-answer", method, self.path_for_log(), exc_info=exc
                )
            else:
                status, body, _ = problem_of(exc)  # logs the traceback under a reference
                await self._answer_problem(status, body)
            return
        finally:
            self.finished.set()
        if not self.started and not self.gone:
            status, body, _ = problem_of(RuntimeError("the application sent no answer"))
            await self._answer_problem(status, body)

    def path_for_log(self) -> str:
        return self.request.target.split(b"?", 1)[0].decode("latin-1")[:200]

    async def _answer_problem(self, status: int, body: dict[str, Any]) -> None:
        headers, data = _problem_bytes(status, body)
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": data})

    async def splice(self, fd: int, offset: int, progress: Callable[[int], None]) -> bool:
        """The splice receive extension (module docstring): the rest of the body into *fd*."""
        connection = self.connection
        sock = connection.sock
        length = self._content_length()
        if sock is None or length is None or self.started:
            raise RuntimeError("a body can only be spliced before the answer, on plain TCP")
        if self.gone or self.body_ended or self.end_pending or connection.spliced:
            raise RuntimeError("the request body was already read")
        connection.spliced = True
        moved = 0
        try:
            if connection.h11.they_are_waiting_for_100_continue:
                continue_ = h11.InformationalResponse(status_code=100, headers=[])
                await connection.send_all(connection.h11.send(continue_) or b"")
            # What h11 read with the head first: its events come without reading the socket.
            while True:
                event = connection.h11.next_event()
                if isinstance(event, h11.Data):
                    at = offset + moved
                    moved += await trio.to_thread.run_sync(pwrite_all, fd, [event.data], at)
                    progress(moved)
                elif isinstance(event, h11.EndOfMessage):
                    connection.spliced = False  # h11 read it all: the connection stays usable
                    self.end_pending = True
                    return True
                else:
                    break  # NEED_DATA: the rest is in the socket
            left = length - self.received - moved
            read_end, write_end = open_splice_pipe()
            try:
                while left > 0:
                    with trio.move_on_after(connection.server.idle_timeout) as waited:
                        await trio.lowlevel.wait_readable(sock)
                    if waited.cancelled_caught:
                        return self._left()
                    try:
                        got, ended = await trio.to_thread.run_sync(
                            splice_into_file,
                            sock.fileno(),
                            read_end,
                            write_end,
                            fd,
                            offset + moved,
                            min(left, SPLICE_BATCH),
                        )
                    except SocketFailed:
                        return self._left()
                    if got:
                        moved += got
                        left -= got
                        progress(moved)
                    elif ended:
                        return self._left()
            finally:
                os.close(read_end)
                os.close(write_end)
        except (ClientDisconnected, h11.RemoteProtocolError):
            return self._left()
        connection.body_consumed = True
        self.end_pending = True
        return True

    def _left(self) -> bool:
        """The client left mid-body: ``receive()`` answers ``http.disconnect`` from now on."""
        self.connection.broken = True
        self.gone = True
        self.finished.set()
        return False

    async def receive(self) -> Message:
        if self.gone or self.complete:
            return {"type": "http.disconnect"}
        if self.end_pending:
            self.end_pending = False
            self.body_ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.connection.spliced and not self.body_ended:
            # A splice failed (a file write) partway: the rest of the body cannot be read.
            self.body_ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.body_ended:
            # ASGI: after the body, receive() waits until the answer is done or the client left.
            await self.finished.wait()
            return {"type": "http.disconnect"}
        connection = self.connection
        try:
            if connection.h11.they_are_waiting_for_100_continue:
                continue_ = h11.InformationalResponse(status_code=100, headers=[])
                await connection.send_all(connection.h11.send(continue_) or b"")
            event = await connection.next_event(connection.server.idle_timeout)
        except (ClientDisconnected, _Idle, h11.RemoteProtocolError):
            # Hung up, stalled, or sent a broken body: to the app, all mean the client left.
            connection.broken = True
            self.gone = True
            self.finished.set()
            return {"type": "http.disconnect"}
        if isinstance(event, h11.Data):
            self.received += len(event.data)
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            self.body_ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.gone = True  # h11 reports a body cut short as an error: not reached in practice
        self.finished.set()
        return {"type": "http.disconnect"}

    def _take_head(self) -> list[Any]:
        if self.head is None:
            return []
        head, self.head = self.head, None
        return [head]

    async def send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected("the client has gone")
        kind = message["type"]
        h = self.connection.h11
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            status = int(message["status"])
            headers = [*message.get("headers", []), (b"date", _http_date())]
            if self.connection.spliced:
                headers.append((b"connection", b"close"))  # the body went past h11
            if h.they_are_waiting_for_100_continue:
                self.connection.body_declined = True
            self.head = h.send(h11.Response(status_code=status, headers=headers))
            self.started = True
            self.no_body = self.head_only or status in (204, 304)
            return
        if not self.started or self.complete:
            raise RuntimeError(f"{kind} outside an answer")
        parts = self._take_head()
        if kind == "http.response.body":
            body = message.get("body", b"")
            if body and not self.no_body:
                parts.append(h.send(h11.Data(data=body)))
        elif kind == ZEROCOPY_SEND and self.connection.sock is not None:
            span = _span_of(message)
            if span.count and not self.no_body:
                # h11 frames the span by its length; the bytes never pass through Python.
                parts.extend(h.send_with_data_passthrough(h11.Data(data=cast(bytes, span))) or [])
        else:
            raise ValueError(f"unexpected ASGI message {kind!r}")
        more = bool(message.get("more_body", False))
        if not more:
            parts.append(h.send(h11.EndOfMessage()))
        try:
            await self.connection.send_parts(parts)
        except ClientDisconnected:
            self.gone = True
            raise
        if not more:
            self.complete = True
            self.finished.set()


def _span_of(message: Message) -> _FileSpan:
    """The file span a zero-copy send message names."""
    file = message["file"]
    fd = file if isinstance(file, int) else int(file.fileno())
    offset = message.get("offset")
    count = message.get("count")
    if count is None:
        start = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else int(offset)
        count = max(os.fstat(fd).st_size - start, 0)
    return _FileSpan(fd, None if offset is None else int(offset), int(count))


def _http_date() -> bytes:
    return email.utils.formatdate(usegmt=True).encode()
