"""The ``ttyd`` intrinsic service: the runner's own web terminal server (threads, stdlib only).

An HTTP/1.1 server on one port of 127.0.0.1 (inside the kernel's network):

* ``GET /`` answers a self-contained HTML web terminal (:mod:`bai.kernel.webterm`);
* ``GET /pty`` upgrades to a WebSocket (:mod:`bai.kernel.websocket`) speaking
  the spec's PTY protocol in TEXT messages holding JSON: the client sends
  ``{"type": "stdin", "chars": <base64>}``, ``{"type": "resize", "rows": R,
  "cols": C}`` and ``{"type": "ping"}``; the server sends ``{"type": "out",
  "data": <base64>}`` and ``{"type": "error", "data": <text>}``.
  (``{"type": "restart"}`` belongs to the manager, which restarts the
  session's kernels; this server answers it with an error.)

Guarantees:

* each WebSocket gets its own shell in its own pseudo-terminal
  (:class:`~bai.kernel.pty.PtyShell`, 24x80 until resized), started in the
  runner's working directory with the kernel's environment, the service's
  ``envs`` over it, and ``TERM=xterm``;
* when the shell exits, the server sends what it printed last and closes
  the socket with code 1000; when the socket closes (or breaks), the shell's
  process group gets SIGHUP, and SIGKILL after 1 s;
* a message over :data:`MAX_MESSAGE` bytes closes the socket with 1009, a
  broken frame with 1002 (:class:`~bai.kernel.websocket.Decoder`); malformed
  JSON, an unknown ``type``, bad base64 and ``rows`` / ``cols`` outside
  1..1000 get an ``error`` message naming the field, and the socket stays open;
* at most :data:`MAX_TERMINALS` terminals at once (the next upgrade gets HTTP
  503) and :data:`MAX_PENDING` connections still sending their request head,
  each within :data:`HEAD_TIMEOUT` seconds and :data:`~bai.kernel.websocket.MAX_HEAD`
  bytes;
* no polling sleeps between a keystroke and its echo: each terminal's
  thread waits in ``poll`` on the socket, the terminal and the shell's pidfd,
  writes what it reads at once, and the socket has ``TCP_NODELAY``;
* back-pressure both ways: a slow client stops the terminal being read (the
  shell blocks on a full terminal), a shell that reads no input stops the
  socket being read, so neither side makes the server buffer more than
  about :data:`MAX_MESSAGE` plus :data:`_HIGH_WATER` bytes per terminal;
* :meth:`TerminalServer.close` stops accepting, closes every terminal with
  code 1001 and ends every shell before it returns.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import os
import select
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bai.kernel import websocket as ws
from bai.kernel.pty import PtyShell, default_shell

#: Terminals (WebSockets with their shells) one server holds at once.
MAX_TERMINALS: Final = 32
#: Largest WebSocket message a client may send (bytes).
MAX_MESSAGE: Final = 1024 * 1024
#: Connections that have not finished their request head, at once.
MAX_PENDING: Final = 32
#: Seconds a client has to send its request head.
HEAD_TIMEOUT: Final = 10.0
#: Seconds the server waits for the client's close frame after sending its own.
CLOSE_TIMEOUT: Final = 1.0
#: Seconds output is still read after the shell exited while something else holds the
#: terminal open (a background job): the shell's last words arrive, the job's do not.
_DRAIN_TIMEOUT: Final = 0.1
#: Bytes queued towards one side before the other side stops being read.
_HIGH_WATER: Final = 256 * 1024
#: Rows and columns a resize may ask for.
MAX_SIZE: Final = 1000
_READ_SIZE: Final = 65536


class MessageError(ValueError):
    """A client message the server cannot use; the text names the field."""


@dataclass(frozen=True, slots=True)
class Stdin:
    """Bytes to type into the terminal."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Resize:
    """A new terminal size."""

    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class Ping:
    """A keep-alive; the terminal does nothing with it."""


@dataclass(frozen=True, slots=True)
class Restart:
    """A session restart request (the manager's to handle)."""


ClientMessage = Stdin | Resize | Ping | Restart
MESSAGE_TYPES: Final = ("stdin", "resize", "ping", "restart")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:80]}... ({len(text)} chars)" if len(text) > 80 else text


def _size(message: dict[str, Any], field: str) -> int:
    value = message.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise MessageError(f"{field}: expected an integer 1..{MAX_SIZE} (got {_shown(value)})")
    return value


def parse_message(payload: bytes) -> ClientMessage:
    """Decode one TEXT message of the PTY protocol; :class:`MessageError` names the bad field."""
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise MessageError(f"message: not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise MessageError(f"message: expected a JSON object (got {_shown(message)})")
    kind = message.get("type")
    if kind == "stdin":
        chars = message.get("chars")
        if not isinstance(chars, str):
            raise MessageError(f"chars: expected a base64 string (got {_shown(chars)})")
        try:
            return Stdin(base64.b64decode(chars, validate=True))
        except (binascii.Error, ValueError):
            raise MessageError(f"chars: not valid base64 (got {_shown(chars)})") from None
    if kind == "resize":
        return Resize(_size(message, "rows"), _size(message, "cols"))
    if kind == "ping":
        return Ping()
    if kind == "restart":
        return Restart()
    expected = ", ".join(f'"{name}"' for name in MESSAGE_TYPES)
    raise MessageError(f"type: expected one of {expected} (got {_shown(kind)})")


def out_message(data: bytes) -> bytes:
    """The ``out`` message carrying terminal output *data* (base64 needs no JSON escaping)."""
    return b'{"type":"out","data":"' + base64.b64encode(data) + b'"}'


def error_message(text: str) -> bytes:
    """The ``error`` message carrying *text*."""
    return json.dumps({"type": "error", "data": text}).encode("utf-8")


_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def http_response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers: str
) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Refused(Exception):
    """Answer the connection with *response* and close it."""

    def __init__(self, response: bytes) -> None:
        super().__init__(response[:40])
        self.response = response


class TerminalServer:
    """The web terminal server on ``host:port`` (see the module docstring).

    The constructor binds and listens (raising :class:`OSError` when it
    cannot), so the port accepts connections as soon as it returns;
    :meth:`start` starts serving them.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        shell: str | None = None,
        environ: Mapping[str, str] | None = None,
        max_terminals: int = MAX_TERMINALS,
    ) -> None:
        self._shell = shell or default_shell()
        self._environ = dict(environ or {})
        self._max_terminals = max_terminals
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(64)
        except BaseException:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._closing = False
        self._pending: set[socket.socket] = set()
        self._terminals: set[_Terminal] = set()
        self._reserved = 0
        self._threads: set[threading.Thread] = set()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"ttyd-{self.port}", daemon=True
        )

    @property
    def terminals(self) -> int:
        """Terminals open now (their shells not yet reaped included)."""
        with self._lock:
            return self._reserved

    def start(self) -> None:
        """Start accepting connections."""
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting, close every terminal (1001) and end its shell; then return."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            pending = list(self._pending)
            terminals = list(self._terminals)
            threads = list(self._threads)
        os.write(self._wake_w, b"x")
        for conn in pending:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread reading its head
        for terminal in terminals:
            terminal.wake()
        if self._acceptor.is_alive():
            self._acceptor.join()
        # Each thread ends within CLOSE_TIMEOUT plus the shell's hang-up grace; the bound
        # only guards against a bug keeping close() (and the runner's shutdown) forever.
        deadline = time.monotonic() + HEAD_TIMEOUT
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- accepting -------------------------------------------------------------

    def _accept_loop(self) -> None:
        poller = select.poll()
        poller.register(self._listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    return
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of fds or memory: the listener stays readable, so poll would spin.
                    time.sleep(0.1)
                continue  # else the client gave up before the accept
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"ttyd-{self.port}-conn", daemon=True
            )
            with self._lock:
                admitted = not self._closing and len(self._pending) < MAX_PENDING
                if admitted:
                    self._pending.add(conn)
                    self._threads.add(thread)
            if admitted:
                thread.start()
            else:
                self._refuse(conn, 503, "too many connections to the terminal server")

    @staticmethod
    def _refuse(conn: socket.socket, status: int, reason: str) -> None:
        with contextlib.suppress(OSError):
            conn.setblocking(False)  # best effort: the response fits an empty socket buffer
            conn.send(http_response(status, f"{reason}\n".encode()))
        conn.close()

    # -- one connection ----------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        terminal: _Terminal | None = None
        try:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                head, rest = _read_head(conn)
                terminal = self._route(conn, ws.parse_request_head(head), rest)
                if terminal is not None:
                    conn.sendall(terminal.response)
            except ws.HandshakeError as exc:
                conn.sendall(http_response(exc.status, f"{exc.reason}\n".encode()))
            except _Refused as exc:
                conn.sendall(exc.response)
            finally:
                with self._lock:
                    self._pending.discard(conn)
            if terminal is not None:
                terminal.run()
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            conn.close()
            if terminal is not None:
                terminal.end()
                with self._lock:
                    self._terminals.discard(terminal)
                    self._reserved -= 1
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _route(self, conn: socket.socket, request: ws.Request, rest: bytes) -> _Terminal | None:
        """Answer a page request, or make the terminal of an upgrade (its 101 still to send)."""
        if request.path == "/pty":
            response = ws.handshake(request)
            with self._lock:
                if self._closing:
                    raise _Refused(http_response(503, b"the terminal server is closing\n"))
                if self._reserved >= self._max_terminals:
                    raise _Refused(
                        http_response(
                            503, f"at most {self._max_terminals} terminals at once\n".encode()
                        )
                    )
                self._reserved += 1
            try:
                shell = PtyShell.spawn(self._shell, term="xterm", environ=self._environ)
            except OSError as exc:
                with self._lock:
                    self._reserved -= 1
                raise _Refused(
                    http_response(500, f"cannot start a shell: {exc}\n".encode())
                ) from None
            terminal = _Terminal(conn, shell, response, rest)
            with self._lock:
                self._terminals.add(terminal)
                closing = self._closing
            if closing:
                terminal.wake()  # close() did not see it: it closes at once
            return terminal
        if request.path in ("/", "/index.html"):
            if request.method != "GET":
                raise _Refused(http_response(405, b"only GET\n", Allow="GET"))
            from bai.kernel.webterm import PAGE

            conn.sendall(http_response(200, PAGE, "text/html; charset=utf-8"))
            return None
        raise _Refused(http_response(404, f"no such page: {request.path[:200]}\n".encode()))


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request head (through its empty line) and the bytes that followed it."""
    deadline = time.monotonic() + HEAD_TIMEOUT
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[: end + 4], data[end + 4 :]
        if len(data) > ws.MAX_HEAD:
            raise _Refused(http_response(431, b"the request head is too large\n"))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OSError(errno.ETIMEDOUT, "the request head took too long")
        conn.settimeout(remaining)
        chunk = conn.recv(ws.MAX_HEAD + 4 - len(data) + 1)
        if not chunk:
            raise OSError(errno.ECONNRESET, "the client closed before its request was complete")
        data += chunk


class _Terminal:
    """One WebSocket and its shell, pumped by one thread in a ``poll`` loop."""

    def __init__(
        self, conn: socket.socket, shell: PtyShell, response: bytes, received: bytes
    ) -> None:
        self.response = response
        self._conn = conn
        self._shell = shell
        self._received = received
        self._decoder = ws.Decoder(MAX_MESSAGE)
        self._to_client = bytearray()
        self._to_shell = bytearray()
        self._wake_r, self._wake_w = os.pipe()
        # Guards the pipe's fds: wake() may come from the closing server as they are closed.
        self._wake_lock = threading.Lock()
        self._fds_open = True
        self._poller = select.poll()
        self._registered: dict[int, int] = {}
        self._master = shell.master
        self._reading_client = True  # until the client's close frame or its EOF
        # After a protocol error: what the client still sends is read and dropped until it
        # hangs up, so that closing the socket on unread data (a TCP reset) cannot destroy
        # the close frame before the client read it.
        self._failed = False
        self._close_deadline: float | None = None  # set once our close frame is queued
        self._drain_deadline: float | None = None  # set when the shell exited

    def wake(self) -> None:
        """Ask the terminal to close (server shutdown); safe from any thread, once or more."""
        with self._wake_lock, contextlib.suppress(OSError):
            if self._fds_open:
                os.write(self._wake_w, b"x")

    def end(self) -> None:
        """End the shell (SIGHUP, SIGKILL after 1 s) and free the terminal's fds."""
        self._shell.end()
        with self._wake_lock:
            if self._fds_open:
                self._fds_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    # -- the loop ------------------------------------------------------------------

    def _want(self, fd: int, events: int) -> None:
        if self._registered.get(fd) != events:
            if fd in self._registered:
                self._poller.modify(fd, events)
            else:
                self._poller.register(fd, events)
            self._registered[fd] = events

    def _forget(self, fd: int) -> None:
        if self._registered.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def run(self) -> None:
        """Pump both directions until the socket closes (the caller closes it, then :meth:`end`)."""
        self._conn.setblocking(False)
        sock_fd = self._conn.fileno()
        pidfd = self._shell.pidfd()
        self._want(self._wake_r, select.POLLIN)
        if pidfd >= 0:
            self._want(pidfd, select.POLLIN)
        try:
            if self._received:
                self._on_client_data(self._received)
                self._received = b""
            while True:
                if self._close_deadline is not None:
                    if not self._to_client and not self._reading_client:
                        return  # our close frame is out and the client's came
                    if time.monotonic() >= self._close_deadline:
                        return  # the client never answered our close frame
                if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
                    self._stop_shell()  # something else holds the terminal: stop waiting
                events = select.POLLOUT if self._to_client else 0
                if self._reading_client and len(self._to_shell) < _HIGH_WATER:
                    events |= select.POLLIN
                self._want(sock_fd, events)
                if self._master >= 0:
                    events = select.POLLOUT if self._to_shell else 0
                    if len(self._to_client) < _HIGH_WATER:
                        events |= select.POLLIN
                    self._want(self._master, events)
                deadlines = [
                    d for d in (self._close_deadline, self._drain_deadline) if d is not None
                ]
                timeout = max(min(deadlines) - time.monotonic(), 0) * 1000 if deadlines else None
                for fd, revents in self._poller.poll(timeout):
                    if fd == self._wake_r:
                        self._forget(fd)
                        self._send_close(ws.CLOSE_GOING_AWAY, "the terminal service stopped")
                    elif fd == pidfd:
                        self._forget(fd)
                        if self._master >= 0:
                            self._drain_deadline = time.monotonic() + _DRAIN_TIMEOUT
                        else:
                            self._send_close(ws.CLOSE_NORMAL, "the shell exited")
                    elif fd == self._master:
                        self._on_shell_ready(revents)
                    elif fd == sock_fd and not self._on_client_ready(revents):
                        return
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _stop_shell(self) -> None:
        """Stop reading the terminal and close the socket with 1000."""
        self._drain_deadline = None
        if self._master >= 0:
            self._forget(self._master)
            self._master = -1
        self._send_close(ws.CLOSE_NORMAL, "the shell exited")

    def _on_shell_ready(self, revents: int) -> None:
        if revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = os.read(self._master, _READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""  # EIO: nothing holds the terminal open any more
            if data == b"":
                self._stop_shell()
                return
            if data:
                self._queue(ws.OP_TEXT, out_message(data))
        if revents & select.POLLOUT:
            self._write_shell()

    def _on_client_ready(self, revents: int) -> bool:
        """Serve the socket's readiness; False once there is nothing more to wait for."""
        if revents & select.POLLOUT:
            self._flush_client()
        if revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
            if not self._reading_client:
                return False  # hung up after the close handshake or a protocol error
            try:
                data = self._conn.recv(_READ_SIZE)
            except BlockingIOError:
                return True
            if not data:
                return False  # EOF: the client is gone, with or without a close frame
            if self._failed:
                return True
            self._on_client_data(data)
            if self._master >= 0 and self._to_shell:
                self._write_shell()  # at once: the keystroke's echo waits on it
        return True

    # -- the two sides -------------------------------------------------------------

    def _queue(self, opcode: int, payload: bytes) -> None:
        if self._close_deadline is not None:
            return  # nothing may follow a close frame
        self._to_client += ws.encode_frame(opcode, payload)
        self._flush_client()

    def _flush_client(self) -> None:
        while self._to_client:
            try:
                sent = self._conn.send(self._to_client)
            except BlockingIOError:
                return
            del self._to_client[:sent]
        if self._failed and self._close_deadline is not None:
            # The close frame is out: tell the client we send nothing more.
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_WR)

    def _send_close(self, code: int, reason: str) -> None:
        """Queue our close frame (once) and start waiting for the client's."""
        if self._close_deadline is None:
            self._queue(ws.OP_CLOSE, ws.close_payload(code, reason))
            self._close_deadline = time.monotonic() + CLOSE_TIMEOUT
            self._flush_client()  # after a protocol error, this also shuts our side

    def _write_shell(self) -> None:
        try:
            written = os.write(self._master, self._to_shell)
        except BlockingIOError:
            return
        except OSError:
            self._to_shell.clear()  # the terminal is gone: what it was sent is lost with it
            return
        del self._to_shell[:written]

    def _on_client_data(self, data: bytes) -> None:
        """Handle bytes from the client (after a close or an error it may send nothing more)."""
        try:
            messages = self._decoder.feed(data)
        except ws.WebSocketError as exc:
            self._failed = True
            self._send_close(exc.code, exc.reason)
            return
        for message in messages:
            if message.opcode == ws.OP_TEXT:
                self._on_message(message.payload)
            elif message.opcode == ws.OP_BINARY:
                self._queue(
                    ws.OP_TEXT, error_message("message: expected a TEXT message holding JSON")
                )
            elif message.opcode == ws.OP_PING:
                self._queue(ws.OP_PONG, message.payload)
            elif message.opcode == ws.OP_CLOSE:
                code, _ = ws.parse_close(message.payload)
                self._reading_client = False
                self._send_close(code or ws.CLOSE_NORMAL, "")
                return

    def _on_message(self, payload: bytes) -> None:
        try:
            message = parse_message(payload)
        except MessageError as exc:
            self._queue(ws.OP_TEXT, error_message(str(exc)))
            return
        if isinstance(message, Stdin):
            self._to_shell += message.data
        elif isinstance(message, Resize):
            with contextlib.suppress(OSError):  # the terminal is already gone
                self._shell.resize(message.rows, message.cols)
        elif isinstance(message, Restart):
            self._queue(
                ws.OP_TEXT,
                error_message(
                    "type: this kernel's terminal cannot restart the session "
                    "(the manager's /stream/session/{id}/pty does)"
                ),
            )
