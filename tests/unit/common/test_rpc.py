"""bai.common.rpc: round trips, concurrency, deadlines, cancellation, bad input.

Malformed input is fed through real pynng ``Req0`` sockets (NNG's own wire
implementation) and through raw sockets, and every test checks that the server
answers and keeps serving afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
import pynng
import pytest
import trio
import trio.testing

from bai.common import _nng
from bai.common.errors import InvalidValue
from bai.common.rpc import (
    RemoteError,
    RPCClient,
    RPCConnectionError,
    RPCProtocolError,
    RPCServer,
    RPCTimeout,
    decode_reply,
)

from support.net import free_port

# Generous outer bound on any single test step; a hang fails instead of blocking CI.
STEP = 10


@pytest.fixture
def short_dir() -> Iterator[str]:
    # ipc paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="rpc-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["inproc", "ipc", "tcp"])
def url(request: pytest.FixtureRequest, short_dir: str) -> str:
    return {
        "inproc": f"inproc://test-rpc-{os.getpid()}-{id(request)}",
        "ipc": f"ipc://{short_dir}/rpc.sock",
        "tcp": "tcp://127.0.0.1:0",
    }[request.param]


@pytest.fixture(params=["ipc", "tcp"])
def nng_url(request: pytest.FixtureRequest, short_dir: str) -> str:
    """Addresses that NNG itself (pynng) can reach."""
    return {"ipc": f"ipc://{short_dir}/rpc.sock", "tcp": "tcp://127.0.0.1:0"}[request.param]


class Service:
    """Handlers whose behaviour the tests steer."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.all_in = trio.Event()
        self.expected = 0
        self.release = trio.Event()
        self.finished: list[str] = []

    def handlers(self) -> dict[str, Any]:
        return {
            "echo": self.echo,
            "gather": self.gather,
            "block": self.block,
            "fail": self.fail,
            "bad_result": self.bad_result,
            "grow": self.grow,
            "fail_later": self.fail_later,
        }

    async def echo(self, args: Any) -> Any:
        return args

    async def gather(self, args: Any) -> Any:
        """Wait until `expected` calls are inside at once, then return args."""
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight == self.expected:
            self.all_in.set()
        await self.all_in.wait()
        self.in_flight -= 1
        return args

    async def block(self, args: Any) -> Any:
        await self.release.wait()
        self.finished.append(args)
        return args

    async def fail(self, args: Any) -> Any:
        if args == "invalid":
            raise InvalidValue("must be positive", value=-1, field="count")
        raise KeyError(args)

    async def bad_result(self, args: Any) -> Any:
        return object()

    async def grow(self, args: Any) -> Any:
        return b"x" * args

    async def fail_later(self, args: Any) -> Any:
        await trio.lowlevel.checkpoint()
        raise ValueError(f"failed after waiting: {args}")


@pytest.fixture
def service() -> Service:
    return Service()


async def start_server(nursery: trio.Nursery, url: str, service: Service, **options: Any) -> str:
    server = RPCServer(url, service.handlers(), **options)
    urls: list[str] = await nursery.start(server.serve)
    return urls[0]


@pytest.fixture
async def server_url(url: str, service: Service) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, url, service)
        nursery.cancel_scope.cancel()


# --- round trips -------------------------------------------------------------


async def test_round_trip_on_every_transport(server_url: str) -> None:
    value = {"s": "héllo", "b": b"\x00\xff", "n": [1, -2, 3.5, None, True], "d": {1: "int key"}}
    async with RPCClient(server_url) as client:
        with trio.fail_after(STEP):
            assert await client.call("echo", value) == value
            assert await client.call("echo") is None
            assert client.connected


async def test_large_payload_round_trip(server_url: str) -> None:
    blob = os.urandom(3 * 1024 * 1024)
    async with RPCClient(server_url) as client:
        with trio.fail_after(STEP):
            assert await client.call("echo", blob) == blob


async def test_tcp_port_zero_reports_bound_port(service: Service) -> None:
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, "tcp://127.0.0.1:0", service)
        assert bound.startswith("tcp://127.0.0.1:")
        assert int(bound.rsplit(":", 1)[1]) > 0
        nursery.cancel_scope.cancel()


async def test_server_listens_on_several_addresses(short_dir: str, service: Service) -> None:
    server = RPCServer([f"ipc://{short_dir}/a.sock", "tcp://127.0.0.1:0"], service.handlers())
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(server.serve)
        assert len(urls) == 2
        for bound in urls:
            async with RPCClient(bound) as client:
                with trio.fail_after(STEP):
                    assert await client.call("echo", bound) == bound
        nursery.cancel_scope.cancel()


# --- concurrency --------------------------------------------------------------


async def test_fifty_calls_from_fifty_tasks_are_in_flight_at_once(
    server_url: str, service: Service
) -> None:
    service.expected = 50
    results: dict[int, Any] = {}
    async with RPCClient(server_url) as client:

        async def one(i: int) -> None:
            results[i] = await client.call("gather", i)

        # The handler only returns once all 50 are inside it, so this
        # completes only if the server runs the 50 requests concurrently.
        with trio.fail_after(STEP):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
    assert results == {i: i for i in range(50)}
    assert service.peak == 50


async def test_replies_overtake_slower_requests(server_url: str, service: Service) -> None:
    async with RPCClient(server_url) as client, trio.open_nursery() as nursery:
        order: list[str] = []

        async def slow() -> None:
            order.append(await client.call("block", "slow"))

        nursery.start_soon(slow)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(STEP):
            order.append(await client.call("echo", "fast"))
        service.release.set()
    assert order == ["fast", "slow"]


async def test_max_in_flight_bounds_concurrent_handlers(url: str, service: Service) -> None:
    service.expected = 3
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, url, service, max_in_flight=3)
        async with RPCClient(bound) as client:
            with trio.fail_after(STEP):
                async with trio.open_nursery() as callers:
                    for i in range(9):
                        callers.start_soon(client.call, "gather", i)
        nursery.cancel_scope.cancel()
    assert service.peak == 3


# --- deadlines and cancellation -------------------------------------------------


async def test_timeout_raises_typed_error_and_late_reply_is_dropped(
    server_url: str, service: Service
) -> None:
    async with RPCClient(server_url) as client:
        with pytest.raises(RPCTimeout, match="block"):
            await client.call("block", "late", timeout=0.05)

        async def next_call_after_late_reply() -> Any:
            return await client.call("echo", "fresh", timeout=STEP)

        # Let the timed-out request finish and its reply arrive before and
        # during the next call; that reply must not be taken for this one.
        service.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert service.finished == ["late"]
        assert await next_call_after_late_reply() == "fresh"


async def test_cancelled_call_leaves_client_usable(server_url: str, service: Service) -> None:
    async with RPCClient(server_url) as client:
        async with trio.open_nursery() as nursery:
            cancelled = trio.CancelScope()

            async def doomed() -> None:
                with cancelled:
                    await client.call("block", "doomed")
                    pytest.fail("the call should have been cancelled")

            nursery.start_soon(doomed)
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
        assert cancelled.cancelled_caught
        service.release.set()
        with trio.fail_after(STEP):
            results = [await client.call("echo", i) for i in range(20)]
        assert results == list(range(20))
        assert service.finished == ["doomed"]


async def test_cancelling_one_waiting_call_strands_none_of_the_others(
    server_url: str, service: Service
) -> None:
    results: dict[str, Any] = {}
    scopes: dict[str, trio.CancelScope] = {}
    async with RPCClient(server_url) as client:
        with trio.fail_after(STEP):
            async with trio.open_nursery() as nursery:

                async def call(name: str) -> None:
                    with trio.CancelScope() as scopes[name]:
                        results[name] = await client.call("block", name)

                for name in ("first", "b", "c"):
                    nursery.start_soon(call, name)
                    await trio.testing.wait_all_tasks_blocked()
                scopes["first"].cancel()
                await trio.testing.wait_all_tasks_blocked()
                service.release.set()
            assert results == {"b": "b", "c": "c"}
            assert await client.call("echo", "next") == "next"


@pytest.mark.parametrize("shortest_first", [False, True])
async def test_each_waiting_call_times_out_at_its_own_deadline(
    server_url: str, service: Service, shortest_first: bool
) -> None:
    timeouts = {"short": 0.05, "medium": 0.3, "long": STEP}
    order = sorted(timeouts, key=timeouts.__getitem__, reverse=not shortest_first)
    outcomes: dict[str, Any] = {}
    async with RPCClient(server_url) as client:
        with trio.fail_after(STEP / 2):
            async with trio.open_nursery() as nursery:

                async def call(name: str) -> None:
                    start = trio.current_time()
                    try:
                        outcomes[name] = await client.call("block", name, timeout=timeouts[name])
                    except RPCTimeout:
                        outcomes[name] = ("timed out", trio.current_time() - start)
                        if len(outcomes) == 2:
                            service.release.set()

                for name in order:
                    nursery.start_soon(call, name)
                    await trio.testing.wait_all_tasks_blocked()
    # The long call is still waiting when the others time out, and it gets its reply.
    assert outcomes["long"] == "long"
    for name in ("short", "medium"):
        verdict, waited = outcomes[name]
        assert verdict == "timed out"
        assert waited >= timeouts[name]


async def accept_rep_connection(listener: _nng.Listener) -> _nng.FrameStream:
    stream = await listener.accept()
    await stream.handshake(_nng.PROTO_REP0, _nng.PROTO_REQ0)
    return stream


async def test_call_that_cannot_send_in_time_times_out(nng_url: str) -> None:
    """A server that stops reading: the sends block, and the calls time out anyway."""
    listener = await _nng.listen(nng_url, _nng.PROTO_REP0)
    try:
        async with RPCClient(listener.url, reconnect_max=0.05) as client:
            stalled = await accept_rep_connection(listener)
            huge = b"x" * (8 << 20)  # far more than the socket buffers hold
            timed_out: list[str] = []
            with trio.fail_after(STEP):
                async with trio.open_nursery() as nursery:

                    async def call(name: str, args: bytes, seconds: float) -> None:
                        with pytest.raises(RPCTimeout, match=name):
                            await client.call(name, args, timeout=seconds)
                        timed_out.append(name)

                    nursery.start_soon(call, "huge", huge, 0.2)
                    await trio.testing.wait_all_tasks_blocked()
                    # This one waits behind the half-sent request for its turn to send.
                    nursery.start_soon(call, "small", b"", 0.1)
                assert timed_out == ["small", "huge"]
                # Half a request on the wire: that connection is dropped, and
                # the client reconnects and works on the next one.
                with pytest.raises(_nng.PipeClosed):
                    while True:
                        await stalled.receive_frame(16 << 20)
                answering = await accept_rep_connection(listener)
                async with trio.open_nursery() as nursery:

                    async def answer() -> None:
                        request = await answering.receive_frame(1 << 20)
                        assert isinstance(request, bytes)
                        await answering.send_frame(request[:4] + msgpack.packb({"ok": "sent"}))

                    nursery.start_soon(answer)
                    assert await client.call("echo", "after") == "sent"
            stalled.close()
            answering.close()
    finally:
        listener.close()


async def test_call_waits_for_a_server_that_starts_later(url: str, service: Service) -> None:
    if url.startswith("tcp"):
        url = f"tcp://127.0.0.1:{free_port()}"
    async with RPCClient(url, reconnect_max=0.05) as client, trio.open_nursery() as nursery:
        with pytest.raises(RPCTimeout, match="cannot connect"):
            await client.call("echo", 1, timeout=0.1)
        await start_server(nursery, url, service)
        with trio.fail_after(STEP):
            assert await client.call("echo", 2) == 2
        nursery.cancel_scope.cancel()


async def run_server_until(
    scope: trio.CancelScope, url: str, service: Service, *, task_status: trio.TaskStatus[None]
) -> None:
    """Serve until *scope* is cancelled (which cancels nothing else)."""
    with scope:
        async with trio.open_nursery() as nursery:
            await start_server(nursery, url, service)
            task_status.started()


async def test_server_going_away_fails_sent_calls_and_client_reconnects(
    url: str, service: Service
) -> None:
    if url.startswith("tcp"):
        url = f"tcp://127.0.0.1:{free_port()}"
    async with RPCClient(url, reconnect_max=0.05) as client, trio.open_nursery() as nursery:
        first_server = trio.CancelScope()
        await nursery.start(run_server_until, first_server, url, service)
        with trio.fail_after(STEP):
            assert await client.call("echo", "first") == "first"

        async def stop_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            first_server.cancel()

        nursery.start_soon(stop_soon)
        with pytest.raises(RPCConnectionError, match="lost"):
            await client.call("block", "lost", timeout=STEP)

        second_server = trio.CancelScope()
        await nursery.start(run_server_until, second_server, url, Service())
        with trio.fail_after(STEP):
            assert await client.call("echo", "again") == "again"
        second_server.cancel()


async def test_idle_connection_to_restarted_server_is_renewed(url: str, service: Service) -> None:
    if url.startswith("tcp"):
        url = f"tcp://127.0.0.1:{free_port()}"
    async with RPCClient(url, reconnect_max=0.05) as client:
        async with trio.open_nursery() as servers:
            await start_server(servers, url, service)
            with trio.fail_after(STEP):
                assert await client.call("echo", "before") == "before"
            servers.cancel_scope.cancel()
        # The client notices the hang-up while idle, not through a failed call.
        await trio.testing.wait_all_tasks_blocked(0.01)
        assert not client.connected
        async with trio.open_nursery() as servers:
            await start_server(servers, url, Service())
            with trio.fail_after(STEP):
                assert await client.call("echo", "after") == "after"
            servers.cancel_scope.cancel()


async def test_calls_after_close_fail(server_url: str) -> None:
    client = RPCClient(server_url)
    async with client:
        assert await client.call("echo", 1, timeout=STEP) == 1
    with pytest.raises(RPCConnectionError, match="closed"):
        await client.call("echo", 1)


async def test_closing_client_wakes_its_waiting_calls(server_url: str) -> None:
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            async with RPCClient(server_url) as client:
                errors: list[BaseException] = []

                async def waiter() -> None:
                    try:
                        await client.call("block", "x")
                    except RPCConnectionError as exc:
                        errors.append(exc)

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert len(errors) == 1
            nursery.cancel_scope.cancel()


async def test_closing_client_wakes_calls_waiting_for_a_connection(short_dir: str) -> None:
    # Nothing listens: the call waits for the reconnect loop, within its long deadline.
    url = f"ipc://{short_dir}/nobody.sock"
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            errors: list[BaseException] = []
            async with RPCClient(url, reconnect_max=0.05) as client:

                async def waiter() -> None:
                    try:
                        await client.call("echo", "x", timeout=600)
                    except RPCConnectionError as exc:
                        errors.append(exc)

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert [str(e) for e in errors] == ["the RPC client is closed"]


async def test_a_call_gets_a_reply_until_its_deadline_and_a_timeout_at_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time: the 30 s deadline costs no real time, and is met to the millisecond.
    url = f"inproc://deadline-{os.getpid()}"

    async def answer_after(seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds

    async with trio.open_nursery() as nursery:
        await nursery.start(RPCServer(url, {"after": answer_after}).serve)
        async with RPCClient(url) as client:
            assert await client.call("after", 29.9, timeout=30) == 29.9
            start = trio.current_time()
            with pytest.raises(RPCTimeout, match="within 30 s"):
                await client.call("after", 30.1, timeout=30)
            assert trio.current_time() - start == pytest.approx(30, abs=1e-3)
        nursery.cancel_scope.cancel()


# --- remote errors --------------------------------------------------------------


async def test_handler_exception_is_reraised_as_remote_error(server_url: str) -> None:
    async with RPCClient(server_url) as client:
        with pytest.raises(RemoteError) as caught:
            await client.call("fail", "missing-key", timeout=STEP)
        assert caught.value.remote_type == "KeyError"
        assert caught.value.remote_message == "'missing-key'"
        assert caught.value.method == "fail"
        with pytest.raises(RemoteError) as caught:
            await client.call("fail", "invalid", timeout=STEP)
        assert caught.value.remote_type == "InvalidValue"
        assert "must be positive" in caught.value.remote_message
        assert caught.value.detail == {"field": "count", "problem": "must be positive"}
        assert await client.call("echo", "still up", timeout=STEP) == "still up"


async def test_handler_failing_after_it_waited(server_url: str) -> None:
    async with RPCClient(server_url) as client:
        with pytest.raises(RemoteError, match="failed after waiting: 3") as caught:
            await client.call("fail_later", 3, timeout=STEP)
        assert caught.value.remote_type == "ValueError"


async def test_unknown_method(server_url: str) -> None:
    async with RPCClient(server_url) as client:
        with pytest.raises(RemoteError, match="no RPC method named 'nope'") as caught:
            await client.call("nope", timeout=STEP)
        assert caught.value.remote_type == "UnknownMethod"


async def test_unencodable_result_becomes_err(server_url: str) -> None:
    async with RPCClient(server_url) as client:
        with pytest.raises(RemoteError, match="cannot be encoded") as caught:
            await client.call("bad_result", timeout=STEP)
        assert caught.value.remote_type == "TypeError"


async def test_client_rejects_bad_arguments(server_url: str) -> None:
    async with RPCClient(server_url, max_frame_size=1024) as client:
        with pytest.raises(TypeError):
            await client.call("echo", object())
        with pytest.raises(InvalidValue, match="exceeds max_frame_size"):
            await client.call("echo", b"x" * 2048)
        with pytest.raises(InvalidValue, match="method name"):
            await client.call("")
        with pytest.raises(InvalidValue, match="timeout"):
            await client.call("echo", timeout=0)
        assert await client.call("echo", 5, timeout=STEP) == 5


# --- malformed input through NNG's own Req0 -------------------------------------------

TRUNCATED = msgpack.packb({"m": "echo", "a": "hello world"})[:-4]
MALFORMED: list[tuple[bytes, str]] = [
    (b"\xc1", "not valid msgpack"),
    (TRUNCATED, "truncated"),
    (b"\x82\xa1m\xa2\xff\xfe\xa1a\xc0", "not valid UTF-8"),
    (msgpack.packb({"m": "echo", "a": 1}) + b"\x00", "trailing bytes"),
    (msgpack.packb(["echo", 1]), "must be a msgpack map"),
    (msgpack.packb({"a": 1}), "lacks the keys ['m']"),
    (msgpack.packb({"m": 7, "a": 1}), "non-empty string"),
    (msgpack.packb({"m": b"echo", "a": 1}, use_bin_type=True), "non-empty string"),
    (msgpack.packb({"m": "echo", "a": 1, "x": 2}), "unexpected keys ['x']"),
    (b"\x81\x91\x01\x01", "undecodable"),
    (b"\x91" * 5000, "nests msgpack too deeply"),
    (b"", "truncated"),
]


async def nng_request(sock: pynng.Req0, frame: bytes) -> Any:
    with trio.fail_after(STEP):
        await sock.asend(frame)
        return msgpack.unpackb(await sock.arecv(), raw=False)


async def test_malformed_requests_get_err_replies_and_server_stays_up(
    nng_url: str, service: Service
) -> None:
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, nng_url, service, max_frame_size=64 * 1024)
        with pynng.Req0(dial=bound, block_on_dial=False) as sock:
            for frame, problem in MALFORMED:
                reply = await nng_request(sock, frame)
                assert set(reply) == {"err"}, frame
                assert reply["err"]["type"] == "RPCProtocolError"
                assert problem in reply["err"]["msg"], (frame, reply)
            huge = msgpack.packb({"m": "echo", "a": b"x" * 100_000})
            reply = await nng_request(sock, huge)
            assert reply["err"]["type"] == "RPCProtocolError"
            assert "exceeds the limit of 65536 bytes" in reply["err"]["msg"]
            assert reply["err"]["detail"] == {"size": len(huge) + 4, "limit": 65536}
            ok = await nng_request(sock, msgpack.packb({"m": "echo", "a": "alive"}))
            assert ok == {"ok": "alive"}
        async with RPCClient(bound) as client:
            assert await client.call("echo", "still serving", timeout=STEP) == "still serving"
        nursery.cancel_scope.cancel()


async def test_nng_req0_peer_gets_replies_to_concurrent_requests(
    nng_url: str, service: Service
) -> None:
    service.expected = 5
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, nng_url, service)
        with pynng.Req0(dial=bound, block_on_dial=False) as sock:
            replies: dict[int, Any] = {}

            async def one(i: int) -> None:
                with sock.new_context() as context, trio.fail_after(STEP):
                    await context.asend(msgpack.packb({"m": "gather", "a": i}))
                    replies[i] = msgpack.unpackb(await context.arecv())

            async with trio.open_nursery() as callers:
                for i in range(5):
                    callers.start_soon(one, i)
        assert replies == {i: {"ok": i} for i in range(5)}
        nursery.cancel_scope.cancel()


async def test_client_talks_to_an_nng_rep0_server(nng_url: str) -> None:
    if nng_url.startswith("tcp"):
        nng_url = f"tcp://127.0.0.1:{free_port()}"
    with pynng.Rep0(listen=nng_url) as rep:
        requests: list[Any] = []

        async def answer(reply: bytes) -> None:
            requests.append(msgpack.unpackb(await rep.arecv()))
            await rep.asend(reply)

        async with RPCClient(nng_url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(answer, msgpack.packb({"ok": [1, 2]}))
            with trio.fail_after(STEP):
                assert await client.call("sum", {"x": 1}) == [1, 2]
            assert requests == [{"m": "sum", "a": {"x": 1}}]

            nursery.start_soon(answer, b"\xc1")
            with pytest.raises(RPCProtocolError, match="reply is not valid msgpack"):
                await client.call("sum", None, timeout=STEP)

            nursery.start_soon(answer, msgpack.packb({"neither": 1}))
            with pytest.raises(RPCProtocolError, match="reply must be"):
                await client.call("sum", None, timeout=STEP)

            nursery.start_soon(
                answer, msgpack.packb({"err": {"type": "Boom", "msg": "m", "detail": [1]}})
            )
            with pytest.raises(RemoteError) as caught:
                await client.call("sum", None, timeout=STEP)
            assert (caught.value.remote_type, caught.value.detail) == ("Boom", [1])


# --- malformed input below the Req/Rep layer ------------------------------------------


async def raw_connect(bound: str) -> trio.SocketStream:
    address = _nng.parse_address(bound)
    if address.scheme == "ipc":
        return await trio.open_unix_socket(address.path)
    return await trio.open_tcp_stream(address.host, address.port)


async def test_garbage_connections_are_dropped_and_server_stays_up(
    nng_url: str, service: Service
) -> None:
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, nng_url, service)
        ipc = bound.startswith("ipc")
        handshake = b"\x00SP\x00\x00\x30\x00\x00"

        def framed(body: bytes) -> bytes:
            return (b"\x01" if ipc else b"") + len(body).to_bytes(8, "big") + body

        attacks = [
            b"GET / HTTP/1.1\r\n\r\n",  # not SP at all
            b"\x00SP\x00\x00\x10\x00\x00",  # SP, but a PAIR peer
            handshake + framed(b"\x00\x01"),  # a frame without a request id
            handshake + framed(b"\x00\x00\x00\x01" * 9),  # backtrace too long
        ]
        if ipc:
            attacks.append(handshake + b"\x07" + (4).to_bytes(8, "big"))  # bad ipc msg type
        for attack in attacks:
            stream = await raw_connect(bound)
            with trio.fail_after(STEP):
                await stream.send_all(attack)
                received = b""
                try:
                    while chunk := await stream.receive_some():
                        received += chunk
                except trio.BrokenResourceError:
                    pass  # reset instead of a clean close: hung up all the same
            # At most the server's own handshake came back before it hung up.
            assert received in (b"", b"\x00SP\x00\x00\x31\x00\x00"), attack
            await stream.aclose()

        # A well-formed request on a raw connection is answered.
        stream = await raw_connect(bound)
        request = b"\x80\x00\x00\x2a" + msgpack.packb({"m": "echo", "a": 1})
        await stream.send_all(handshake + framed(request))
        expected_reply = b"\x80\x00\x00\x2a" + msgpack.packb({"ok": 1})
        received = b""
        with trio.fail_after(STEP):
            while len(received) < 8 + len(framed(expected_reply)):
                received += await stream.receive_some()
        assert received == b"\x00SP\x00\x00\x31\x00\x00" + framed(expected_reply)
        await stream.aclose()

        async with RPCClient(bound) as client:
            assert await client.call("echo", "ok", timeout=STEP) == "ok"
        nursery.cancel_scope.cancel()


async def test_inproc_malformed_frames(service: Service) -> None:
    url = f"inproc://malformed-{os.getpid()}"
    async with trio.open_nursery() as nursery:
        await start_server(nursery, url, service, max_frame_size=8192)
        stream = await _nng.dial(url, _nng.PROTO_REQ0, _nng.PROTO_REP0)
        with trio.fail_after(STEP):
            for i, (body, problem) in enumerate(MALFORMED):
                request_id = (0x80000000 | i).to_bytes(4, "big")
                await stream.send_frame(request_id + body)
                reply = await stream.receive_frame(1 << 20)
                assert isinstance(reply, bytes)
                assert reply[:4] == request_id
                with pytest.raises(RemoteError, match="RPCProtocolError") as caught:
                    decode_reply(reply[4:])
                assert problem in caught.value.remote_message
            await stream.send_frame(b"\x80\x00\x00\x01" + b"\x00" * 9000)
            reply = await stream.receive_frame(1 << 20)
            assert isinstance(reply, bytes)
            with pytest.raises(RemoteError, match="exceeds the limit of 8192 bytes"):
                decode_reply(reply[4:])
            await stream.send_frame(b"\x01")
            with pytest.raises(_nng.PipeClosed):
                await stream.receive_frame(1 << 20)
        stream.close()
        async with RPCClient(url) as client:
            assert await client.call("echo", "up", timeout=STEP) == "up"
        nursery.cancel_scope.cancel()


async def test_oversized_reply_fails_only_that_call(server_url: str) -> None:
    async with RPCClient(server_url, max_frame_size=4096) as client:
        with pytest.raises(RPCProtocolError, match="exceeds the limit of 4096"):
            await client.call("grow", 6000, timeout=STEP)
        assert await client.call("grow", 2000, timeout=STEP) == b"x" * 2000


# --- the frame streams underneath -------------------------------------------------------


async def test_cancelled_receive_keeps_the_partial_frame() -> None:
    ours, theirs = socket.socketpair()
    stream = _nng.SocketFrameStream(ours, ipc=True)
    peer = trio.socket.from_stdlib_socket(theirs)
    big = os.urandom(600_000)  # read into its own buffer
    frames = [b"small", big, b"z" * 800_000, b"tail"]  # the third exceeds the limit
    wire = b"".join(b"\x01" + len(f).to_bytes(8, "big") + f for f in frames)
    received: list[bytes | _nng.Oversized] = []
    current = trio.CancelScope()
    cancellations = 0

    async def receive_all() -> None:
        nonlocal current
        while len(received) < len(frames):
            with trio.CancelScope() as current:
                received.append(await stream.receive_frame(700_000))

    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_all)
            # Odd-sized pieces split headers and bodies everywhere; after each,
            # the receive waiting for the rest is cancelled and restarted.
            for start in range(0, len(wire), 7919):
                piece = memoryview(wire)[start : start + 7919]
                while piece:
                    piece = piece[await peer.send(piece) :]
                await trio.testing.wait_all_tasks_blocked()
                if len(received) < len(frames):
                    current.cancel()
                    cancellations += 1
    stream.close()
    peer.close()
    assert received == [b"small", big, _nng.Oversized(b"z" * 64, 800_000), b"tail"]
    assert cancellations > 100


async def test_send_deadline_on_a_full_inproc_connection() -> None:
    url = f"inproc://full-{os.getpid()}"
    listener = await _nng.listen(url, _nng.PROTO_REP0)
    try:
        client = await _nng.dial(url, _nng.PROTO_REQ0, _nng.PROTO_REP0)
        server = await listener.accept()
        sent = 0
        with pytest.raises(trio.TooSlowError):
            while True:
                await client.send_frame(b"%d" % sent, trio.current_time() + 0.05)
                sent += 1
        assert sent > 0
        # Nothing was lost or half-sent: the connection carries on.
        assert await server.receive_frame(100) == b"0"
        await client.send_frame(b"more", trio.current_time() + STEP)
        received = [await server.receive_frame(100) for _ in range(sent)]
        assert received[-1] == b"more"
        client.close()
        server.close()
    finally:
        listener.close()


async def test_inproc_peer_reads_what_was_sent_before_close() -> None:
    url = f"inproc://close-{os.getpid()}"
    listener = await _nng.listen(url, _nng.PROTO_REP0)
    try:
        client = await _nng.dial(url, _nng.PROTO_REQ0, _nng.PROTO_REP0)
        server = await listener.accept()
        await client.send_frame(b"one")
        await client.send_frame(b"two")
        client.close()
        assert await server.receive_frame(100) == b"one"
        assert await server.receive_frame(100) == b"two"
        with pytest.raises(_nng.PipeClosed):
            await server.receive_frame(100)
        with pytest.raises(_nng.PipeClosed):
            await server.send_frame(b"reply")
        with pytest.raises(_nng.PipeClosed):
            await client.receive_frame(100)
    finally:
        listener.close()
    with pytest.raises(ConnectionRefusedError):
        await _nng.dial(url, _nng.PROTO_REQ0, _nng.PROTO_REP0)


async def test_dialing_the_wrong_protocol_is_refused(url: str, service: Service) -> None:
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, url, service)
        with pytest.raises(_nng.PeerProtocolError, match="0x31, expected 0x30"):
            await _nng.dial(bound, _nng.PROTO_REP0, _nng.PROTO_REQ0)
        nursery.cancel_scope.cancel()


# --- addresses and listeners -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "echo", "http://x:1", "inproc://", "ipc://", "tcp://host", "tcp://h:99999", "tcp://::1:5"],
)
def test_bad_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidValue, match="address"):
        RPCServer(bad)
    with pytest.raises(InvalidValue, match="address"):
        RPCClient(bad)


def test_overlong_ipc_path_is_rejected() -> None:
    with pytest.raises(InvalidValue, match="at most 107 bytes"):
        RPCServer("ipc:///tmp/" + "x" * 120)


async def test_address_in_use(url: str, service: Service) -> None:
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, url, service)
        with pytest.raises(OSError, match=r"in use|Address already"):
            await RPCServer(bound, service.handlers()).serve()
        nursery.cancel_scope.cancel()


async def test_stale_ipc_socket_file_is_replaced_and_removed_on_close(
    short_dir: str, service: Service
) -> None:
    path = f"{short_dir}/stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, f"ipc://{path}", service)
        async with RPCClient(bound) as client:
            assert await client.call("echo", 1, timeout=STEP) == 1
        nursery.cancel_scope.cancel()
    assert not await trio.Path(path).exists()
