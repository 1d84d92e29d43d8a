"""The NNG scalability-protocol (SP) wire, spoken natively from Trio.

This module moves opaque SP messages ("frames") between two peers; it knows
nothing about request ids or msgpack (that is :mod:`bai.common.rpc`).  It is
byte-compatible with NNG 1.x (pynng) peers on ``ipc://`` and ``tcp://``:

* on connect each side sends ``00 'S' 'P' 00``, its 16-bit big-endian protocol
  number and two zero bytes, and checks the peer's eight bytes the same way;
* ``tcp://`` frames are a 64-bit big-endian length followed by the message;
  ``ipc://`` frames put a message-type byte (always ``1``) before that length.

``inproc://`` is an in-process transport of this module (a frame queue per
direction of a connection): it carries the same frames between bai peers in one
process, but it does not meet NNG's own ``inproc://`` sockets, which live inside
the C library.

Why not NNG itself: every NNG message crosses several of NNG's internal threads
(poller, task queue, user thread), and on a 2-core VM each hand-off costs tens of
microseconds; a pynng echo costs ≈160-200 µs even fully blocking, ≈300 µs
through its Trio path.  Talking the wire from Trio sockets costs one syscall
per frame each way and no thread hop at all.

Guarantees:

* a frame is either delivered whole or the connection is reported closed
  (:class:`PipeClosed`); a send interrupted after some of its bytes went out
  closes the connection, because the byte stream can no longer be framed;
* a frame larger than the receiver's limit is read and thrown away, and
  :class:`Oversized` (its first bytes and its size) comes back in its place, so
  the caller can still answer it; memory use stays bounded by the limit;
* a peer that breaks the framing or the handshake gets its connection closed
  (:class:`PeerProtocolError`); nothing it sends can raise anything else.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
import stat
import struct
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Final

import trio

from bai.common.errors import BaiError, InvalidValue

#: SP protocol numbers (``NNG_REQ0_SELF`` / ``NNG_REP0_SELF``).
PROTO_REQ0: Final = 0x30
PROTO_REP0: Final = 0x31

#: A peer that has not finished the 8-byte handshake by then is dropped (NNG uses 10 s too).
HANDSHAKE_TIMEOUT: Final = 10.0
#: How many leading bytes of an oversized frame are kept (room for an 8-hop backtrace).
OVERSIZED_PREFIX: Final = 64

# Below glibc's default mmap threshold (128 KiB): a larger recv() buffer can
# cost an mmap()/munmap() pair per call (≈25 µs) in a process whose malloc has
# not yet raised that threshold; larger frames are read into their own buffer.
_READ_CHUNK = 64 * 1024
# Below this size header and body are joined into one send() call.
_JOIN_LIMIT = 64 * 1024
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_IPC_PATH = 107
_SP_MAGIC = b"\x00SP\x00"
_U64 = struct.Struct(">Q")


class TransportError(BaiError):
    """Base of this module's errors about connections."""


class PipeClosed(TransportError):
    """The connection is gone (closed by either side, reset, or broken)."""


class PeerProtocolError(TransportError):
    """The peer does not speak the expected SP protocol or breaks its framing."""


@dataclass(frozen=True, slots=True)
class Oversized:
    """Stands in for a received frame longer than the receiver's limit."""

    prefix: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed ``inproc://``, ``ipc://`` or ``tcp://`` URL."""

    scheme: str
    #: inproc name or ipc filesystem path; empty for tcp.
    path: str = ""
    host: str = ""
    port: int = 0

    def url(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        return f"{self.scheme}://{self.path}"


def parse_address(url: str) -> Address:
    """Parse an NNG-style URL; raise :class:`InvalidValue` naming what is wrong.

    Accepted: ``inproc://NAME``, ``ipc:///abs/or/rel/path``, ``tcp://HOST:PORT``
    where HOST is a name, an IPv4 address, ``[IPv6]``, ``*`` or empty (all IPv4
    interfaces; listen only), and PORT is 0-65535 (0: any free port; listen only).
    """
    if not isinstance(url, str):
        raise InvalidValue("an address must be a string", value=url, field="address")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidValue("an address needs a scheme (inproc://, ipc://, tcp://)", value=url)
    if scheme == "inproc":
        if not rest:
            raise InvalidValue("an inproc address needs a name", value=url, field="address")
        return Address("inproc", path=rest)
    if scheme == "ipc":
        if not rest:
            raise InvalidValue("an ipc address needs a path", value=url, field="address")
        if len(os.fsencode(rest)) > _MAX_IPC_PATH:
            raise InvalidValue(
                f"an ipc path may be at most {_MAX_IPC_PATH} bytes long", value=url, field="address"
            )
        return Address("ipc", path=rest)
    if scheme == "tcp":
        host, colon, port_text = rest.rpartition(":")
        if not colon or not port_text.isdigit() or int(port_text) > 65535:
            raise InvalidValue(
                "a tcp address needs a port between 0 and 65535", value=url, field="address"
            )
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host or "/" in host:
            raise InvalidValue(
                "a tcp host must be a name, an IPv4 address or [IPv6]", value=url, field="address"
            )
        return Address("tcp", host="" if host == "*" else host, port=int(port_text))
    raise InvalidValue(
        "unsupported address scheme (use inproc://, ipc:// or tcp://)", value=url, field="address"
    )


def _handshake_bytes(proto: int) -> bytes:
    return _SP_MAGIC + proto.to_bytes(2, "big") + b"\x00\x00"


def _check_handshake(data: bytes, expected_peer: int) -> None:
    if data[:4] != _SP_MAGIC or data[6:8] != b"\x00\x00":
        raise PeerProtocolError(f"peer did not open with an SP handshake (got {data!r})")
    peer = int.from_bytes(data[4:6], "big")
    if peer != expected_peer:
        raise PeerProtocolError(f"peer speaks SP protocol {peer:#x}, expected {expected_peer:#x}")


class FrameStream(ABC):
    """One connection that carries whole SP frames in both directions.

    One task at a time may receive; any number of tasks may send concurrently
    (their frames never interleave).
    """

    @abstractmethod
    async def handshake(self, own_proto: int, peer_proto: int) -> None:
        """Exchange protocol numbers; raise :class:`PeerProtocolError` on mismatch."""

    @abstractmethod
    async def send_frame(self, frame: bytes, deadline: float = math.inf) -> None:
        """Send one frame; raise :class:`PipeClosed` if the connection is gone.

        A frame the connection takes at once is sent without a schedule point.
        If sending has to wait past *deadline* (Trio time), raise
        :class:`trio.TooSlowError`; a frame then left half-sent closes the
        connection.
        """

    @abstractmethod
    async def receive_frame(self, max_size: int) -> bytes | Oversized:
        """Receive the next frame, or :class:`Oversized` if it exceeds *max_size*.

        Raises :class:`PipeClosed` when the connection ends and
        :class:`PeerProtocolError` when the peer breaks the framing.  Safe to
        cancel: a partly received frame is kept and completed by the next call.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent); blocked operations raise PipeClosed."""


class SocketFrameStream(FrameStream):
    """SP framing over a connected stream socket (ipc: unix socket, tcp)."""

    def __init__(self, sock: socket.socket, *, ipc: bool) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._ipc = ipc
        self._head_len = 9 if ipc else 8
        self._buf = bytearray()
        self._pos = 0
        # Receive state of the frame in progress (kept across cancelled receives).
        self._size: int | None = None
        self._big: bytearray | None = None
        self._big_got = 0
        self._prefix: bytearray | None = None
        self._skip = 0
        self._waited = False
        self._drained = False
        # A frame is being written; other senders park until it is complete.
        self._sending = False
        self._send_queue = trio.lowlevel.ParkingLot()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    async def _wait_readable(self) -> None:
        self._waited = True
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError as exc:
            raise PipeClosed("connection closed locally") from exc

    async def _receive_more(self) -> None:
        """Move at least one more byte from the socket into the receive state."""
        while True:
            if self._closed:
                raise PipeClosed("connection closed locally")
            if self._drained:
                # The last read emptied the socket: a recv() now would almost
                # surely fail, so wait first and spare the syscall.
                self._drained = False
                await self._wait_readable()
            try:
                if self._big is not None:
                    # _parse() drained the buffer into _big: read straight into it.
                    k = self._sock.recv_into(memoryview(self._big)[self._big_got :])
                    if k == 0:
                        raise PipeClosed("peer closed the connection")
                    self._big_got += k
                    return
                data = self._sock.recv(_READ_CHUNK)
            except BlockingIOError:
                await self._wait_readable()
                continue
            except OSError as exc:
                raise PipeClosed(f"connection failed: {exc}") from exc
            if not data:
                raise PipeClosed("peer closed the connection")
            self._drained = len(data) < _READ_CHUNK
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data
            return

    def _available(self) -> int:
        return len(self._buf) - self._pos

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[self._pos : self._pos + n])
        self._skip_buffered(n)
        return out

    def _skip_buffered(self, n: int) -> None:
        self._pos += n
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0

    def _parse(self, max_size: int) -> bytes | Oversized | None:
        """Advance the receive state with buffered bytes; return a whole frame or None.

        Synchronous on purpose: a cancelled receive_frame() can only be
        interrupted while waiting for bytes, never halfway through this.
        """
        if self._size is None:
            buf = self._buf
            start = self._pos + self._head_len
            if len(buf) < start:
                return None
            if self._ipc and buf[self._pos] != 1:
                raise PeerProtocolError(f"unknown ipc message type {buf[self._pos]}")
            size = _U64.unpack_from(buf, start - 8)[0]
            end = start + size
            if end <= len(buf) and size <= max_size:
                # The common case, a whole frame already buffered, in one step.
                frame = bytes(buf[start:end])
                self._skip_buffered(end - self._pos)
                return frame
            self._skip_buffered(self._head_len)
            self._size = size
            if size > max_size:
                self._prefix = bytearray()
                self._skip = size
            elif size > _READ_CHUNK:
                # Large frames go straight into their own buffer instead of
                # growing (and repeatedly compacting) the shared one.
                self._big = bytearray(size)
                self._big_got = 0
        size = self._size
        if self._prefix is not None:
            n = min(self._available(), self._skip)
            keep = min(n, OVERSIZED_PREFIX - len(self._prefix))
            self._prefix += self._buf[self._pos : self._pos + keep]
            self._skip_buffered(n)
            self._skip -= n
            if self._skip:
                return None
            oversized = Oversized(bytes(self._prefix), size)
            self._prefix = None
            self._size = None
            return oversized
        if self._big is not None:
            n = min(self._available(), size - self._big_got)
            self._big[self._big_got : self._big_got + n] = self._buf[self._pos : self._pos + n]
            self._skip_buffered(n)
            self._big_got += n
            if self._big_got < size:
                return None
            frame = bytes(self._big)
            self._big = None
            self._size = None
            return frame
        if self._available() < size:
            return None
        self._size = None
        return self._take(size)

    async def handshake(self, own_proto: int, peer_proto: int) -> None:
        await self.send_frame_raw(_handshake_bytes(own_proto))
        while self._available() < 8:
            await self._receive_more()
        _check_handshake(self._take(8), peer_proto)

    async def receive_frame(self, max_size: int) -> bytes | Oversized:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._waited = False
        while (frame := self._parse(max_size)) is None:
            await self._receive_more()
        if not self._waited:
            # Keep the scheduler fair when frames arrive faster than we handle them.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return frame

    async def send_frame(self, frame: bytes, deadline: float = math.inf) -> None:
        head = _U64.pack(len(frame))
        if self._ipc:
            head = b"\x01" + head
        if len(frame) >= _JOIN_LIMIT:
            await self._send_parts_by(deadline, [head, frame])
            return
        data = head + frame
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._sending or self._closed:
            await self._send_parts_by(deadline, [data])
            return
        # Fast path: nobody else is mid-frame and the socket takes it all.
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise PipeClosed(f"connection failed: {exc}") from exc
        if sent < len(data):
            await self._send_parts_by(deadline, [memoryview(data)[sent:]], started=sent > 0)

    async def send_frame_raw(self, data: bytes) -> None:
        """Send *data* as-is (the handshake, or deliberately broken test input)."""
        await self._send_parts([data])

    async def _send_parts_by(
        self, deadline: float, parts: list[bytes | memoryview], *, started: bool = False
    ) -> None:
        """:meth:`_send_parts`, failing with TooSlowError past *deadline* (if finite)."""
        if deadline == math.inf:
            await self._send_parts(parts, started=started)
            return
        with trio.fail_at(deadline):
            await self._send_parts(parts, started=started)

    async def _send_parts(self, parts: list[bytes | memoryview], *, started: bool = False) -> None:
        """Send *parts* back to back; *started*: a head of this frame already went out."""
        if not started:
            # Once part of the frame is out, only the guarded loop below may be
            # interrupted, so that a cancellation closes the broken stream.
            await trio.lowlevel.checkpoint_if_cancelled()
            while self._sending:
                await self._send_queue.park()
        self._sending = True
        try:
            try:
                for part in parts:
                    view = memoryview(part)
                    while view:
                        if self._closed:
                            raise PipeClosed("connection closed locally")
                        try:
                            k = self._sock.send(view)
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(self._sock)
                            continue
                        except OSError as exc:
                            raise PipeClosed(f"connection failed: {exc}") from exc
                        started = True
                        view = view[k:]
            except trio.ClosedResourceError as exc:
                raise PipeClosed("connection closed locally") from exc
            except BaseException:
                # Half a frame on the wire desynchronises the stream for good.
                if started:
                    self.close()
                raise
        finally:
            self._sending = False
            if self._send_queue:
                self._send_queue.unpark()


# Frames buffered per direction of an inproc connection before senders wait.
_INPROC_BUFFER = 256


class _InprocPipe:
    """One direction of an inproc connection: a bounded queue of frames."""

    def __init__(self) -> None:
        self.frames: deque[bytes] = deque()
        self.closed = False
        self.readers = trio.lowlevel.ParkingLot()
        self.writers = trio.lowlevel.ParkingLot()

    def close(self) -> None:
        self.closed = True
        self.readers.unpark_all()
        self.writers.unpark_all()


class InprocFrameStream(FrameStream):
    """One end of an in-process connection: frames travel as Python objects.

    Like a socket, closing one end lets the other receive what was already
    sent before it sees the end of the connection.
    """

    def __init__(self, outgoing: _InprocPipe, incoming: _InprocPipe) -> None:
        self._out = outgoing
        self._in = incoming
        self._closed = False

    async def handshake(self, own_proto: int, peer_proto: int) -> None:
        # Protocols were matched by dial() before the pair existed.
        await trio.lowlevel.checkpoint()

    async def send_frame(self, frame: bytes, deadline: float = math.inf) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if len(self._out.frames) >= _INPROC_BUFFER:
            with trio.fail_at(deadline):
                while len(self._out.frames) >= _INPROC_BUFFER and not self._out.closed:
                    await self._out.writers.park()
        if self._closed or self._out.closed:
            raise PipeClosed("inproc connection closed")
        self._out.frames.append(bytes(frame))
        self._out.readers.unpark_all()

    async def receive_frame(self, max_size: int) -> bytes | Oversized:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._in.frames:
            if self._in.closed:
                raise PipeClosed("inproc connection closed")
            await self._in.readers.park()
            parked = True
        frame = self._in.frames.popleft()
        self._in.writers.unpark(count=1)
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if len(frame) > max_size:
            return Oversized(frame[:OVERSIZED_PREFIX], len(frame))
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.close()
            self._in.frames.clear()
            self._in.close()


def _inproc_pair() -> tuple[InprocFrameStream, InprocFrameStream]:
    a_to_b, b_to_a = _InprocPipe(), _InprocPipe()
    return InprocFrameStream(a_to_b, b_to_a), InprocFrameStream(b_to_a, a_to_b)


class Listener(ABC):
    """A bound, listening endpoint that yields un-handshaken connections."""

    #: The URL peers can dial (for ``tcp://…:0`` it names the port actually bound).
    url: str

    @abstractmethod
    async def accept(self) -> FrameStream:
        """Wait for the next connection; raise :class:`PipeClosed` once closed."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening and release the address (idempotent)."""


class SocketListener(Listener):
    """Listening unix or tcp socket."""

    def __init__(self, sock: socket.socket, url: str, *, ipc_path: str | None) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.url = url
        self._ipc_path = ipc_path
        self._closed = False

    async def accept(self) -> FrameStream:
        while True:
            if self._closed:
                raise PipeClosed("listener closed")
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(self._sock)
                except trio.ClosedResourceError as exc:
                    raise PipeClosed("listener closed") from exc
                continue
            if self._ipc_path is None:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return SocketFrameStream(conn, ipc=self._ipc_path is not None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        if self._ipc_path is not None:
            # Like NNG, remove the socket file we created.
            with contextlib.suppress(OSError):
                os.unlink(self._ipc_path)


class InprocListener(Listener):
    """Listener registered under an in-process name."""

    def __init__(self, name: str, proto: int) -> None:
        self.url = f"inproc://{name}"
        self.name = name
        self.proto = proto
        self._incoming_send, self._incoming = trio.open_memory_channel[InprocFrameStream](math.inf)

    def connect(self) -> InprocFrameStream:
        ours, theirs = _inproc_pair()
        try:
            self._incoming_send.send_nowait(theirs)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"nothing listens at {self.url}"
            ) from exc
        return ours

    async def accept(self) -> FrameStream:
        try:
            return await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise PipeClosed("listener closed") from exc

    def close(self) -> None:
        if _INPROC_LISTENERS.get(self.name) is self:
            del _INPROC_LISTENERS[self.name]
        self._incoming_send.close()
        while True:
            try:
                self._incoming.receive_nowait().close()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        self._incoming.close()


_INPROC_LISTENERS: dict[str, InprocListener] = {}


def _remove_stale_ipc_socket(path: str) -> None:
    """Unlink a socket file at *path* unless a live listener still answers on it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live listener with a full backlog answers EAGAIN
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except BlockingIOError:
        pass
    except OSError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"ipc://{path} is already in use (a listener answers there)")


async def _resolve(host: str, port: int, *, passive: bool) -> tuple[int, tuple[object, ...]]:
    flags = socket.AI_PASSIVE if passive else 0
    infos = await trio.socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=flags)
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"{host!r} does not resolve")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


async def listen(url: str, proto: int) -> Listener:
    """Bind and listen at *url* for peers of SP protocol *proto*'s peer.

    Raises :class:`InvalidValue` for a malformed URL and :class:`OSError`
    (``EADDRINUSE`` and friends) when the address cannot be bound.
    """
    address = parse_address(url)
    if address.scheme == "inproc":
        if address.path in _INPROC_LISTENERS:
            raise OSError(errno.EADDRINUSE, f"{url} is already in use")
        listener = InprocListener(address.path, proto)
        _INPROC_LISTENERS[address.path] = listener
        await trio.lowlevel.checkpoint()
        return listener
    if address.scheme == "ipc":
        _remove_stale_ipc_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            sock.listen(socket.SOMAXCONN)
        except BaseException:
            sock.close()
            raise
        await trio.lowlevel.checkpoint()
        return SocketListener(sock, address.url(), ipc_path=address.path)
    family, sockaddr = await _resolve(address.host or "0.0.0.0", address.port, passive=True)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
        bound_host, bound_port = sock.getsockname()[:2]
    except BaseException:
        sock.close()
        raise
    return SocketListener(
        sock, Address("tcp", host=bound_host, port=bound_port).url(), ipc_path=None
    )


async def dial(url: str, own_proto: int, peer_proto: int) -> FrameStream:
    """Connect to *url* and complete the SP handshake within HANDSHAKE_TIMEOUT.

    Raises :class:`OSError` (e.g. ``ConnectionRefusedError``) when nothing
    accepts, :class:`PeerProtocolError` when the peer is not a *peer_proto*
    SP endpoint, :class:`PipeClosed` when it hangs up during the handshake.
    """
    address = parse_address(url)
    if address.scheme == "inproc":
        listener = _INPROC_LISTENERS.get(address.path)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens at {url}")
        if listener.proto != peer_proto:
            raise PeerProtocolError(
                f"{url} speaks SP protocol {listener.proto:#x}, expected {peer_proto:#x}"
            )
        await trio.lowlevel.checkpoint()
        return listener.connect()
    if address.scheme == "ipc":
        family: int = socket.AF_UNIX
        sockaddr: object = address.path
    else:
        if not address.host or address.port == 0:
            raise InvalidValue("a tcp address to dial needs a host and a port", value=url)
        family, sockaddr = await _resolve(address.host, address.port, passive=False)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(sockaddr)  # type: ignore[arg-type]
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"cannot connect to {url}: {os.strerror(err)}")
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    stream = SocketFrameStream(sock, ipc=family == socket.AF_UNIX)
    try:
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            await stream.handshake(own_proto, peer_proto)
            return stream
        raise PeerProtocolError(f"{url} sent no SP handshake within {HANDSHAKE_TIMEOUT} s")
    except BaseException:
        stream.close()
        raise
