"""Request/reply RPC between bai daemons: NNG Req0/Rep0 wire, msgpack envelopes.

Wire (compatible with any NNG ``Req0``/``Rep0`` peer, e.g. pynng): a request is
``{"m": method, "a": args}``; the reply is ``{"ok": result}`` or
``{"err": {"type": str, "msg": str, "detail": any}}``; both msgpack-encoded and
carried as SP Req/Rep messages (the body preceded by the request's 32-bit id
with its top bit set, and on the server side by any hops' backtrace, which the
reply echoes).  Transports: ``inproc://`` (bai peers in one process),
``ipc://`` and ``tcp://``; see :mod:`bai.common._nng`.

Design, and why
---------------

Measured on this project's 2-core VMs (``bench/rpc.py``), a 16-byte echo
between two processes costs ≈200-350 µs through pynng's ``asend``/``arecv``
under Trio and ≈160-200 µs even with blocking pynng calls: each message crosses
several of NNG's internal threads, and every thread hand-off costs tens of µs
there.  This module does the same echo in ≈50-100 µs over ipc, ≈20-30 µs
inproc.  Polling NNG's ``NNG_OPT_RECVFD``/``SENDFD`` from Trio (non-blocking
calls on raw ``Req0``/``Rep0`` sockets with the request id in the message
header) was measured too: ≈280-330 µs, because the thread hops remain and
NNG contexts, the only cooked way to keep many requests in flight, expose no
pollable descriptor at all.  So this module speaks the SP wire itself from
Trio sockets, one syscall per frame each way, and multiplexes by request id,
which is what NNG contexts do inside:

* **Server** (:class:`RPCServer`): on each connection, the task that receives
  a request runs its handler and sends the reply (tagged with the request's
  backtrace) right away, in the same scheduler pass.  If that has to wait
  (the handler awaits something, or the socket is full), a fresh task takes
  over receiving just before the wait.  So any number of requests (up to
  ``max_in_flight``) are in flight at once and replies may overtake each
  other, while a quick request costs no task switch and no task creation.
* **Client** (:class:`RPCClient`): one connection; :meth:`RPCClient.call`
  picks a fresh request id, sends, and sleeps until its reply or its
  deadline.  One background task (re)connects and reads the connection,
  handing each reply to the call with its id, and it also keeps the calls'
  deadlines: it reads under a single cancel scope due at the earliest of
  them.  A call thus opens no cancel scope of its own unless it must wait for
  a connection or for room to send (measured: entering and leaving a scope
  with a deadline costs more per call than handing the reply over from the
  reader task).  A call that times out or is cancelled forgets its id, so its
  late reply is dropped on arrival and can never be taken for the reply of a
  later call.  Any number of tasks may call concurrently on one client.

Semantics: a request is sent at most once.  If the connection drops after the
request went out, the call raises :class:`RPCConnectionError` instead of
resending it (NNG's cooked ``Req0`` would resend, running a non-idempotent
handler twice).  A call made while disconnected waits, within its deadline,
for the client's reconnect loop.  Handlers keep running when their caller gives
up or disconnects; their replies are then dropped.

Bad input never stops a server: undecodable or mis-shaped requests, unknown
methods, oversized frames and handler exceptions are all answered with an
``err`` reply (type ``RPCProtocolError``, ``UnknownMethod``, or the handler
exception's class name).  A frame that carries no request id cannot be
answered; the connection that sent it is closed.
"""

from __future__ import annotations

import logging
import math
import secrets
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final

import msgpack
import trio

from bai.common import _nng
from bai.common.errors import BaiError, InvalidValue

logger = logging.getLogger(__name__)

#: Frames above this size are refused with an ``err`` reply (NNG's default is 1 MiB).
#: It leaves room for the largest request bai sends: an agent's ``upload_files`` with
#: the API's whole upload (20 files of 1 MiB), which must travel in one call to be
#: written all or nothing.
DEFAULT_MAX_FRAME_SIZE: Final = 32 * 1024 * 1024
#: Requests a server runs at once before it stops reading more.
DEFAULT_MAX_IN_FLIGHT: Final = 1024
#: Deadline of a call that names none.
DEFAULT_CALL_TIMEOUT: Final = 30.0
#: A backtrace longer than this many hops is dropped (NNG's default ``NNG_OPT_MAXTTL``).
MAX_HOPS: Final = 8

#: An RPC handler: receives the request's ``args``, returns a msgpack-encodable result.
Handler = Callable[[Any], Awaitable[Any]]

_ID_BIT = 0x80000000


class RPCError(BaiError):
    """Base class of the errors this module raises."""


class RPCProtocolError(RPCError, InvalidValue):
    """A frame or envelope is malformed; the message names the problem."""


class RPCTimeout(RPCError, TimeoutError):
    """No reply arrived before the call's deadline."""


class RPCConnectionError(RPCError, ConnectionError):
    """The connection dropped after the request was sent, or the client is closed."""


class UnknownMethod(RPCError):
    """Raised on the server for a method nobody registered; travels as ``err``."""


class RemoteError(RPCError):
    """The server answered with ``err``: the remote exception, re-raised here.

    ``remote_type`` is the remote exception's class name, ``remote_message``
    its message, ``detail`` any msgpack value the server attached.
    """

    def __init__(self, method: str, remote_type: str, remote_message: str, detail: Any) -> None:
        self.method = method
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.detail = detail
        super().__init__(f"{method}: {remote_type}: {remote_message}")


# ---------------------------------------------------------------------------
# Envelopes (pure functions; every decode error is an RPCProtocolError).


def _unpack(data: bytes | memoryview, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        raise RPCProtocolError(
            f"{what} has trailing bytes after the msgpack value", value=bytes(data)
        ) from None
    except UnicodeDecodeError as exc:
        raise RPCProtocolError(
            f"{what} has a msgpack string that is not valid UTF-8 ({exc.reason})",
            value=bytes(data),
        ) from None
    except msgpack.FormatError:
        raise RPCProtocolError(f"{what} is not valid msgpack", value=bytes(data)) from None
    except msgpack.StackError:
        raise RPCProtocolError(f"{what} nests msgpack too deeply", value=bytes(data)) from None
    except Exception as exc:
        problem = "truncated" if "incomplete" in str(exc) else f"undecodable ({exc})"
        raise RPCProtocolError(f"{what} msgpack is {problem}", value=bytes(data)) from None


def _pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def encode_request(method: str, args: Any) -> bytes:
    """Encode ``{"m": method, "a": args}``; raise TypeError if *args* is not msgpack-able."""
    return _pack({"m": method, "a": args})


def decode_request(data: bytes | memoryview) -> tuple[str, Any]:
    """Decode a request envelope into ``(method, args)``.

    Raises :class:`RPCProtocolError` naming the problem for anything but a map
    with exactly the keys ``"m"`` (a non-empty string) and ``"a"``.
    """
    envelope = _unpack(data, "request")
    if not isinstance(envelope, dict):
        raise RPCProtocolError(
            f"request must be a msgpack map, not {type(envelope).__name__}", value=envelope
        )
    extra = [key for key in envelope if key not in ("m", "a")]
    if extra:
        raise RPCProtocolError(f"request has unexpected keys {extra!r}", value=envelope)
    if "m" not in envelope or "a" not in envelope:
        missing = [key for key in ("m", "a") if key not in envelope]
        raise RPCProtocolError(f"request lacks the keys {missing!r}", value=envelope)
    method = envelope["m"]
    if not isinstance(method, str) or not method:
        raise RPCProtocolError("request method must be a non-empty string", value=method, field="m")
    return method, envelope["a"]


def encode_ok(result: Any) -> bytes:
    """Encode ``{"ok": result}``; raise TypeError/ValueError if it is not msgpack-able."""
    return _pack({"ok": result})


def encode_err(type_name: str, message: str, detail: Any = None) -> bytes:
    """Encode ``{"err": ...}``; an unencodable *detail* is replaced by None."""
    try:
        return _pack({"err": {"type": type_name, "msg": message, "detail": detail}})
    except (TypeError, ValueError, OverflowError):
        return _pack({"err": {"type": type_name, "msg": message, "detail": None}})


def decode_reply(data: bytes | memoryview, method: str = "?") -> Any:
    """Return the ``ok`` result, or raise :class:`RemoteError` for an ``err`` reply.

    Raises :class:`RPCProtocolError` for anything that is neither.
    """
    reply = _unpack(data, "reply")
    if isinstance(reply, dict) and len(reply) == 1:
        if "ok" in reply:
            return reply["ok"]
        err = reply.get("err")
        if (
            isinstance(err, dict)
            and isinstance(err.get("type"), str)
            and isinstance(err.get("msg"), str)
        ):
            raise RemoteError(method, err["type"], err["msg"], err.get("detail"))
    raise RPCProtocolError(
        'reply must be {"ok": result} or {"err": {"type": str, "msg": str, "detail": any}}',
        value=reply,
    )


def split_backtrace(frame: bytes) -> int:
    """Return the length of the SP backtrace (hops then request id) at the start of *frame*.

    Raises :class:`RPCProtocolError` when no word with the top bit set ends it
    within :data:`MAX_HOPS` words.
    """
    end = 0
    for _ in range(MAX_HOPS):
        if len(frame) < end + 4:
            break
        end += 4
        if frame[end - 4] & 0x80:
            return end
    raise RPCProtocolError("frame carries no request id", value=frame[: MAX_HOPS * 4])


#: Characters of a rejected string value that travel in an error's detail.
_ECHOED_CHARS: Final = 4096


def _error_detail(exc: BaseException) -> Any:
    detail = getattr(exc, "detail", None)
    if detail is None and isinstance(exc, InvalidValue):
        detail = {"field": exc.field, "problem": exc.problem}
        # Only a string is sure to encode; the peer shows its start anyway.
        if isinstance(exc.value, str):
            detail["value"] = exc.value[:_ECHOED_CHARS]
    return detail


# ---------------------------------------------------------------------------
# Server


@types.coroutine
def _run_inline_until_blocked(
    coro: Coroutine[Any, Any, None], on_block: Callable[[], None]
) -> Generator[Any, Any, None]:
    """Await *coro* in the calling task, calling *on_block* just before it first blocks.

    Behaves exactly like ``await coro`` (Trio's traps pass through unchanged,
    and so do values and exceptions sent back in); the only addition is the
    hook, which lets the caller react to *coro* needing to wait before any
    other task runs.
    """
    try:
        trap = coro.send(None)
    except StopIteration:
        return
    on_block()
    while True:
        try:
            resumed_with = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                trap = coro.send(resumed_with)
            except StopIteration:
                return


class RPCServer:
    """Serves registered async handlers on one or more addresses.

    ``handlers`` maps method names to ``async def handler(args) -> result``;
    more can be added with :meth:`register` (also while serving).
    """

    def __init__(
        self,
        addresses: str | Iterable[str],
        handlers: Mapping[str, Handler] | None = None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self._addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        for address in self._addresses:
            _nng.parse_address(address)
        if not self._addresses:
            raise InvalidValue("an RPC server needs at least one address", value=self._addresses)
        if max_frame_size < 64:
            raise InvalidValue("max_frame_size must be at least 64", value=max_frame_size)
        if max_in_flight < 1:
            raise InvalidValue("max_in_flight must be at least 1", value=max_in_flight)
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._max_frame_size = max_frame_size
        # Requests that may still start before readers stop reading.
        self._free_slots = max_in_flight
        self._slot_waiters = trio.lowlevel.ParkingLot()
        #: The URLs bound by serve() (``tcp://…:0`` with its real port).
        self.listen_urls: list[str] = []

    def register(self, method: str, handler: Handler) -> None:
        """Serve *method* with *handler* (replacing any previous one)."""
        if not isinstance(method, str) or not method:
            raise InvalidValue("an RPC method name must be a non-empty string", value=method)
        self._handlers[method] = handler

    async def serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, report the bound URLs through ``task_status.started``, serve until cancelled.

        The started value lists the URLs actually bound (``tcp://…:0`` gets its
        real port).  On cancellation the listeners and connections are closed
        and ipc socket files removed.
        """
        listeners: list[_nng.Listener] = []
        try:
            for address in self._addresses:
                listeners.append(await _nng.listen(address, _nng.PROTO_REP0))
            self.listen_urls = [listener.url for listener in listeners]
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started(list(self.listen_urls))
                await trio.sleep_forever()
        finally:
            for listener in listeners:
                listener.close()

    async def _accept_loop(self, listener: _nng.Listener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except _nng.PipeClosed:
                return
            except OSError as exc:
                # Out of file descriptors and the like: back off, keep serving.
                logger.warning("RPC server at %s cannot accept: %s", listener.url, exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self._serve_connection, stream, nursery)

    async def _serve_connection(self, stream: _nng.FrameStream, nursery: trio.Nursery) -> None:
        try:
            with trio.fail_after(_nng.HANDSHAKE_TIMEOUT):
                await stream.handshake(_nng.PROTO_REP0, _nng.PROTO_REQ0)
        except (_nng.TransportError, trio.TooSlowError) as exc:
            logger.debug("RPC handshake failed: %s", exc)
            stream.close()
            return
        await self._read_requests(stream, nursery)

    async def _read_requests(self, stream: _nng.FrameStream, nursery: trio.Nursery) -> None:
        """Be the connection's reader, handling each request right here until one blocks.

        When a request's handling has to wait (the handler awaits something,
        or the reply cannot be sent at once), a fresh task takes over the
        reading before the wait begins, and this one finishes that request.
        Most requests thus cost no task switch and no task creation, yet any
        number of them can be in flight.
        """
        handed_over = False

        def hand_over() -> None:
            nonlocal handed_over
            handed_over = True
            nursery.start_soon(self._read_requests, stream, nursery)

        while not handed_over:
            try:
                frame = await stream.receive_frame(self._max_frame_size)
                while not self._free_slots:
                    await self._slot_waiters.park()
                self._free_slots -= 1
            except _nng.TransportError as exc:
                logger.debug("RPC connection closed: %s", exc)
                stream.close()
                return
            except BaseException:
                # Server shutdown: the connection's reader is the one that hangs up.
                stream.close()
                raise
            try:
                await _run_inline_until_blocked(self._handle(stream, frame), hand_over)
            finally:
                self._free_slots += 1
                if self._slot_waiters:
                    self._slot_waiters.unpark()

    async def _handle(self, stream: _nng.FrameStream, frame: bytes | _nng.Oversized) -> None:
        try:
            if isinstance(frame, _nng.Oversized):
                backtrace = frame.prefix[: split_backtrace(frame.prefix)]
                reply = encode_err(
                    RPCProtocolError.__name__,
                    f"request of {frame.size} bytes exceeds the limit of "
                    f"{self._max_frame_size} bytes",
                    {"size": frame.size, "limit": self._max_frame_size},
                )
            else:
                split = split_backtrace(frame)
                backtrace = frame[:split]
                reply = await self._dispatch(memoryview(frame)[split:])
            await stream.send_frame(backtrace + reply)
        except RPCProtocolError as exc:
            # No request id to answer to: the peer is not speaking Req/Rep.
            logger.debug("closing RPC connection: %s", exc)
            stream.close()
        except _nng.PipeClosed:
            pass

    async def _dispatch(self, body: memoryview) -> bytes:
        try:
            method, args = decode_request(body)
        except RPCProtocolError as exc:
            return encode_err(type(exc).__name__, str(exc), _error_detail(exc))
        try:
            handler = self._handlers.get(method)
            if handler is None:
                raise UnknownMethod(f"no RPC method named {method!r}")
            result = await handler(args)
        except Exception as exc:
            if not isinstance(exc, BaiError):
                logger.exception("RPC handler %r failed", method)
            return encode_err(type(exc).__name__, str(exc), _error_detail(exc))
        try:
            return encode_ok(result)
        except (TypeError, ValueError, OverflowError) as exc:
            return encode_err(
                type(exc).__name__, f"result of {method!r} cannot be encoded as msgpack: {exc}"
            )


# ---------------------------------------------------------------------------
# Client


class _Pending:
    """One call waiting for its reply."""

    __slots__ = ("deadline", "done", "error", "frame", "stream", "task", "timed_out")

    def __init__(self, stream: _nng.FrameStream, deadline: float) -> None:
        self.stream = stream
        self.deadline = deadline
        self.done = False
        self.timed_out = False
        self.frame: bytes | None = None
        self.error: RPCError | None = None
        #: The calling task while it sleeps until the reply comes.
        self.task: trio.lowlevel.Task | None = None


class RPCClient:
    """Calls methods of the :class:`RPCServer` at *address*.

    Use as ``async with RPCClient(url) as client: await client.call(...)``.
    A background task connects, reconnects with exponential backoff
    (``reconnect_min`` to ``reconnect_max`` seconds) whenever the connection
    drops, and reads the connection: it hands each reply to the call waiting
    for it, and notices a peer hanging up on an idle connection at once.

    That task keeps the calls' deadlines too: it reads under one cancel scope
    due no later than the earliest of them, and when that passes it wakes the
    calls whose time is up (see the module's design notes for why).

    A call cancelled or timed out while its request is only partly written
    (a request larger than the socket buffer, to a server that does not read)
    has to drop the connection, failing the other calls on it with
    :class:`RPCConnectionError`.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        reconnect_min: float = 0.01,
        reconnect_max: float = 2.0,
    ) -> None:
        _nng.parse_address(address)
        _check_timeout(timeout)
        if max_frame_size < 64:
            raise InvalidValue("max_frame_size must be at least 64", value=max_frame_size)
        if not 0 < reconnect_min <= reconnect_max:
            raise InvalidValue(
                "need 0 < reconnect_min <= reconnect_max", value=(reconnect_min, reconnect_max)
            )
        self.address = address
        self._timeout = timeout
        self._max_frame_size = max_frame_size
        self._reconnect = (reconnect_min, reconnect_max)
        self._stream: _nng.FrameStream | None = None
        self._stream_changed = trio.Event()
        self._pending: dict[int, _Pending] = {}
        self._next_id = secrets.randbits(31)
        self._last_error: str = "not connected yet"
        self._closed = False
        self._stack: AsyncExitStack | None = None
        # The reader's scope; its deadline is never later than a waiting call's.
        self._timer: trio.CancelScope | None = None

    @property
    def connected(self) -> bool:
        """True while a connection to the server is established."""
        return self._stream is not None

    async def __aenter__(self) -> RPCClient:
        if self._stack is not None or self._closed:
            raise RuntimeError("an RPCClient can be entered only once")
        async with AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self._maintain_connection)
            stack.callback(nursery.cancel_scope.cancel)
            stack.callback(self._shut_down)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        return await self._stack.__aexit__(exc_type, exc, tb)

    def _shut_down(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._connection_lost(self._stream, "the RPC client is closed")
        # Wakes the calls waiting for a connection too: they find the client closed.
        self._signal_stream_change(None)
        self._fail_pending(None, "the RPC client is closed")

    # -- connection ---------------------------------------------------------

    def _signal_stream_change(self, stream: _nng.FrameStream | None) -> None:
        self._stream = stream
        self._stream_changed.set()
        self._stream_changed = trio.Event()

    def _fail_pending(self, stream: _nng.FrameStream | None, message: str) -> None:
        for pending in self._pending.values():
            if not pending.done and (stream is None or pending.stream is stream):
                pending.error = RPCConnectionError(message)
                _finish(pending)

    def _connection_lost(self, stream: _nng.FrameStream, message: str) -> None:
        """Close *stream* and fail the calls that wait on it (idempotent)."""
        stream.close()
        if self._stream is stream:
            self._last_error = message
            self._signal_stream_change(None)
        self._fail_pending(stream, message)

    async def _maintain_connection(self) -> None:
        delay_min, delay_max = self._reconnect
        delay = delay_min
        while True:
            try:
                stream = await _nng.dial(self.address, _nng.PROTO_REQ0, _nng.PROTO_REP0)
            except (OSError, _nng.TransportError) as exc:
                self._last_error = f"cannot connect to {self.address}: {exc}"
                await trio.sleep(delay)
                delay = min(delay * 2, delay_max)
                continue
            delay = delay_min
            self._signal_stream_change(stream)
            try:
                await self._read_replies(stream)
            finally:
                self._connection_lost(stream, self._last_error)

    # -- replies ------------------------------------------------------------

    async def _read_replies(self, stream: _nng.FrameStream) -> None:
        """Hand each reply on *stream* to its call and time out overdue calls.

        Returns when the connection is lost, with ``_last_error`` saying why.
        """
        while True:
            earliest = min(
                (pending.deadline for pending in self._pending.values() if not pending.done),
                default=math.inf,
            )
            with trio.CancelScope(deadline=earliest) as self._timer:
                try:
                    while True:
                        frame = await stream.receive_frame(self._max_frame_size)
                        if not self._deliver(stream, frame):
                            return
                except _nng.TransportError as exc:
                    self._last_error = f"connection to {self.address} lost: {exc}"
                    return
                finally:
                    self._timer = None
            now = trio.current_time()
            for pending in self._pending.values():
                if not pending.done and pending.deadline <= now:
                    pending.timed_out = True
                    _finish(pending)

    def _deliver(self, stream: _nng.FrameStream, frame: bytes | _nng.Oversized) -> bool:
        """Hand *frame* to its call; False if the peer broke the Req/Rep protocol."""
        head = frame.prefix if isinstance(frame, _nng.Oversized) else frame
        if len(head) < 4 or not head[0] & 0x80:
            # A Rep peer must echo exactly our one-word backtrace.
            self._last_error = f"{self.address} sent a reply without request id"
            return False
        pending = self._pending.get(int.from_bytes(head[:4], "big") & ~_ID_BIT)
        if pending is None or pending.done or pending.stream is not stream:
            return True  # the late reply of a call that gave up
        if isinstance(frame, _nng.Oversized):
            pending.error = RPCProtocolError(
                f"reply of {frame.size} bytes exceeds the limit of {self._max_frame_size} bytes",
                value=frame.size,
            )
        else:
            pending.frame = frame
        _finish(pending)
        return True

    # -- calls --------------------------------------------------------------

    def _allocate_id(self) -> int:
        while True:
            self._next_id = (self._next_id + 1) & ~_ID_BIT
            if self._next_id not in self._pending:
                return self._next_id

    async def call(
        self,
        method: str,
        args: Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call deadline is the contract
    ) -> Any:
        """Call *method* with *args* and return its result.

        Raises :class:`RemoteError` for an exception on the server,
        :class:`RPCTimeout` when no reply came within *timeout* seconds (the
        client's default when None), :class:`RPCConnectionError` when the
        connection dropped after the request went out or the client is closed,
        :class:`RPCProtocolError` for an undecodable reply, and TypeError when
        *args* cannot be encoded.  Cancelling a call is safe: the client stays
        usable and the late reply is discarded.
        """
        if not isinstance(method, str) or not method:
            raise InvalidValue("an RPC method name must be a non-empty string", value=method)
        if timeout is None:
            timeout = self._timeout
        else:
            _check_timeout(timeout)
        deadline = trio.current_time() + timeout
        body = encode_request(method, args)
        if len(body) + 4 > self._max_frame_size:
            raise InvalidValue(
                f"request of {len(body) + 4} bytes exceeds max_frame_size {self._max_frame_size}",
                value=method,
                field="args",
            )
        reply = await self._round_trip(body, deadline)
        if reply is None:
            state = "connected" if self._stream is not None else self._last_error
            raise RPCTimeout(f"{method}: no reply from {self.address} within {timeout} s ({state})")
        return decode_reply(reply, method)

    async def _round_trip(self, body: bytes, deadline: float) -> memoryview | None:
        """Send *body* and return the reply's body, or None once *deadline* has passed."""
        while True:
            if self._closed:
                raise RPCConnectionError("the RPC client is closed")
            stream = self._stream
            if stream is None:
                with trio.move_on_at(deadline):
                    await self._stream_changed.wait()
                    continue
                return None
            request_id = self._allocate_id()
            pending = _Pending(stream, deadline)
            self._pending[request_id] = pending
            try:
                timer = self._timer
                if timer is not None and deadline < timer.deadline:
                    timer.deadline = deadline
                try:
                    await stream.send_frame(
                        (request_id | _ID_BIT).to_bytes(4, "big") + body, deadline
                    )
                except _nng.PipeClosed:
                    # Not (completely) sent, so not run: safe to try the next connection.
                    self._connection_lost(stream, f"connection to {self.address} lost")
                    continue
                except trio.TooSlowError:
                    return None
                if not pending.done:
                    await _wait_for_reply(pending)
            finally:
                del self._pending[request_id]
            if pending.timed_out:
                return None
            if pending.error is not None:
                raise pending.error
            assert pending.frame is not None
            return memoryview(pending.frame)[4:]


async def _wait_for_reply(pending: _Pending) -> None:
    """Sleep until :func:`_finish` is called for *pending*; cancellable."""
    # Raw parking rather than a trio.Event: this happens once per call.
    pending.task = trio.lowlevel.current_task()

    def abort(_: Any) -> trio.lowlevel.Abort:
        pending.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


def _finish(pending: _Pending) -> None:
    """Mark *pending* answered (or failed) and wake its call if it sleeps."""
    pending.done = True
    task, pending.task = pending.task, None
    if task is not None:
        trio.lowlevel.reschedule(task)


def _check_timeout(timeout: float) -> None:
    if not isinstance(timeout, int | float) or not 0 < timeout <= math.inf or timeout != timeout:
        raise InvalidValue("an RPC timeout must be a positive number of seconds", value=timeout)
