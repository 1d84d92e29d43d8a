"""The SDK's WebSocket streams (`bai.client.stream`) and the app-service calls of sessions.

The streams talk to ``support.fakemanager``'s WebSocket routes: the same
signature check as the manager's (so a handshake signed over the wrong Host
header or target fails), with protocol handlers written here: a terminal that
answers in upper case, a tunnel that relays to a real local TCP service, and a
scripted streamed run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from typing import Any

import pytest
import trio
from quart import websocket

from bai.client import (
    APIClient,
    AppInfo,
    ComputeSession,
    ForwardStats,
    MalformedResponse,
    NotFound,
    PtyError,
    StreamClosed,
    Unauthorized,
    forward_app,
    open_tcpproxy,
    stream_execute,
    stream_pty,
)
from bai.client.exceptions import BackendClientError
from bai.client.stream import (
    TUNNEL_CHUNK,
    decode_pty_message,
    encode_pty_resize,
    encode_pty_stdin,
)

from support.fakemanager import FakeManager, Recorded, manager
from support.fakestreams import (
    echo_service,
    greeter_service,
    relay_to,
    start_service,
    upper_terminal,
)

__all__ = ["manager"]

PTY = "/stream/session/s1/pty"
TCPPROXY = "/stream/session/s1/tcpproxy"
EXECUTE = "/stream/session/s1/execute"


# --- the terminal -----------------------------------------------------------


async def test_a_terminal_types_resizes_reports_errors_and_ends(manager: FakeManager) -> None:
    manager.add_websocket(PTY, upper_terminal)
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        async with stream_pty(session) as pty:
            await pty.send_stdin("echo hi")
            assert await pty.receive() == b"ECHO HI"
            await pty.resize(24, 80)
            assert await pty.receive() == b"24x80"
            await pty.ping()
            await pty.restart()
            # The unknown answer to the ping is skipped; the refusal arrives as an error.
            assert await pty.receive() == PtyError("no restart here")
            await pty.send_stdin(b"exit\r")
            assert await pty.receive() is None
    handshake = manager.last()
    assert handshake.path == PTY and handshake.query == {}
    assert handshake.headers["host"] == manager.url.removeprefix("http://")


async def test_iterating_a_terminal_yields_output_and_collects_errors(
    manager: FakeManager,
) -> None:
    manager.add_websocket(PTY, upper_terminal)
    seen: list[PtyError] = []
    async with (
        APIClient(manager.config()) as api,
        stream_pty(ComputeSession(api, "s1"), on_error=seen.append) as pty,
    ):
        await pty.send_stdin(b"a")
        await pty.restart()
        await pty.send_stdin(b"b")
        await pty.send_stdin(b"exit\r")
        output = [data async for data in pty]
    assert output == [b"A", b"B"]
    assert seen == pty.errors == [PtyError("no restart here")]


async def test_large_input_is_split_into_messages_the_server_accepts(
    manager: FakeManager,
) -> None:
    manager.add_websocket(PTY, upper_terminal)
    typed = os.urandom(600 * 1024).hex().encode()[: 600 * 1024]
    async with APIClient(manager.config()) as api, stream_pty(ComputeSession(api, "s1")) as pty:
        await pty.send_stdin(typed)
        received = b""
        while len(received) < len(typed):
            chunk = await pty.receive()
            assert isinstance(chunk, bytes)
            received += chunk
    assert received == typed.upper()


async def test_an_abnormal_close_raises_with_its_code(manager: FakeManager) -> None:
    manager.add_websocket(PTY, upper_terminal)
    async with APIClient(manager.config()) as api, stream_pty(ComputeSession(api, "s1")) as pty:
        await pty.send_stdin(b"crash\r")
        with pytest.raises(StreamClosed) as closed:
            await pty.receive()
    assert closed.value.code == 1011 and closed.value.reason == "kernel gone"
    assert "1011" in str(closed.value)


async def test_refusals_before_the_upgrade_are_typed_api_errors(manager: FakeManager) -> None:
    async with APIClient(manager.config()) as api:
        with pytest.raises(NotFound) as missing:
            async with stream_pty(ComputeSession(api, "nobody")):
                pass
        assert "/stream/session/nobody/pty" in str(missing.value.detail)
    manager.add_websocket(PTY, upper_terminal)
    async with APIClient(manager.config(secret_key="wrong-secret")) as api:
        with pytest.raises(Unauthorized):
            async with stream_pty(ComputeSession(api, "s1")):
                pass


async def test_an_unreachable_endpoint_is_a_client_error() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from bai.client import APIConfig

    config = APIConfig(endpoint=f"http://127.0.0.1:{port}", access_key="AK", secret_key="SK")
    async with APIClient(config) as api:
        with pytest.raises(BackendClientError, match="cannot open the stream"):
            async with stream_pty(ComputeSession(api, "s1")):
                pass


async def test_the_owner_and_the_percent_encoded_name_reach_the_server(
    manager: FakeManager,
) -> None:
    name = "s 1/x"
    manager.add_websocket(f"/stream/session/{name}/pty", upper_terminal)
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, name, owner_access_key="AKIAOTHER")
        async with stream_pty(session) as pty:
            await pty.send_stdin(b"exit\r")
            assert await pty.receive() is None
    handshake = manager.last()
    assert handshake.raw_target.startswith("/stream/session/s%201%2Fx/pty?")
    assert handshake.query == {"owner_access_key": ["AKIAOTHER"]}


def test_terminal_messages_encode_and_decode() -> None:
    assert json.loads(encode_pty_stdin(b"\x03ls\r")) == {"type": "stdin", "chars": "A2xzDQ=="}
    assert json.loads(encode_pty_resize(1, 1000)) == {"type": "resize", "rows": 1, "cols": 1000}
    for rows, cols in ((0, 80), (24, 1001), (True, 80)):
        with pytest.raises(BackendClientError):
            encode_pty_resize(rows, cols)
    assert decode_pty_message('{"type": "out", "data": "aGk="}') == b"hi"
    assert decode_pty_message(b'{"type": "error", "data": "bad rows"}') == PtyError("bad rows")
    assert decode_pty_message('{"type": "something-new"}') is None
    for bad in ("not json", "[]", '{"type": "out", "data": "!!"}', '{"type": "out"}'):
        with pytest.raises(MalformedResponse):
            decode_pty_message(bad)


# --- tunnels -----------------------------------------------------------------


async def test_a_tunnel_carries_bytes_both_ways_and_ends_when_the_service_closes(
    manager: FakeManager, nursery: trio.Nursery
) -> None:
    services = {
        "echo": await start_service(nursery, echo_service),
        "greeter": await start_service(nursery, greeter_service),
    }
    manager.add_websocket(TCPPROXY, relay_to(services))
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        async with open_tcpproxy(session, "echo", envs={"A": "1"}) as tunnel:
            payload = os.urandom(3 * TUNNEL_CHUNK + 5)
            await tunnel.send_all(payload)
            received = b""
            while len(received) < len(payload):
                chunk = await tunnel.receive_some(1000)
                assert 0 < len(chunk) <= 1000
                received += chunk
            assert received == payload
        assert manager.last().query == {"app": ["echo"], "envs": ['{"A": "1"}']}
        async with open_tcpproxy(session, "greeter") as tunnel:
            assert await tunnel.receive_some() == b"hello\n"
            assert await tunnel.receive_some() == b""
            assert await tunnel.receive_some() == b""
            with pytest.raises(StreamClosed):
                await tunnel.send_all(b"too late")
        with pytest.raises(NotFound):
            async with open_tcpproxy(session, "nope"):
                pass


async def test_a_slow_reader_holds_the_sender_back(manager: FakeManager) -> None:
    total = 64 * 1024 * 1024
    sent = 0

    async def flood(recorded: Recorded) -> None:
        nonlocal sent
        await websocket.accept()
        block = b"x" * 65536
        while sent < total:
            await websocket.send(block)
            sent += len(block)
        await websocket.close(1000)

    manager.add_websocket(TCPPROXY, flood)
    async with (
        APIClient(manager.config()) as api,
        open_tcpproxy(ComputeSession(api, "s1"), "flood") as tunnel,
    ):
        await trio.sleep(0.5)
        # Socket buffers and one message in the client's queue, not the whole flood.
        assert sent < 24 * 1024 * 1024
        received = 0
        while chunk := await tunnel.receive_some():
            received += len(chunk)
    assert received == total


async def test_forward_app_tunnels_many_connections_at_once(
    manager: FakeManager, nursery: trio.Nursery
) -> None:
    services = {"echo": await start_service(nursery, echo_service)}
    manager.add_websocket(TCPPROXY, relay_to(services))
    stats = ForwardStats()
    async with APIClient(manager.config()) as api:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as inner:
            inner.start_soon(
                lambda: forward_app(ComputeSession(api, "s1"), "echo", listeners, stats=stats)
            )

            async def client(index: int) -> None:
                payload = os.urandom(100_000 + index)
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    async with trio.open_nursery() as both:
                        both.start_soon(stream.send_all, payload)
                        received = b""
                        while len(received) < len(payload):
                            received += await stream.receive_some(65536)
                    assert received == payload

            with trio.fail_after(30):
                async with trio.open_nursery() as clients:
                    for index in range(40):
                        clients.start_soon(client, index)
            inner.cancel_scope.cancel()
    assert stats.accepted == 40 and stats.failed == 0


async def test_forward_app_reports_a_tunnel_that_cannot_open(manager: FakeManager) -> None:
    manager.add_websocket(TCPPROXY, relay_to({}))
    errors: list[BaseException] = []
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        for http in (False, True):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as inner:
                inner.start_soon(
                    functools.partial(
                        forward_app, session, "gone", listeners, http=http, on_error=errors.append
                    )
                )
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    answer = b""
                    with trio.fail_after(10):
                        while chunk := await stream.receive_some():
                            answer += chunk
                if http:
                    assert answer.startswith(b"HTTP/1.1 404 ")
                    assert b"no app 'gone'" in answer
                else:
                    assert answer == b""
                inner.cancel_scope.cancel()
    assert [type(e) for e in errors] == [NotFound, NotFound]


# --- streamed execution ------------------------------------------------------


async def test_a_streamed_run_yields_results_and_takes_input(manager: FakeManager) -> None:
    first: list[Any] = []

    async def run(recorded: Recorded) -> None:
        await websocket.accept()
        first.append(json.loads(await websocket.receive()))
        prompt = {"runId": "r", "status": "waiting-input", "console": [["stdout", "name? "]]}
        await websocket.send(json.dumps(prompt))
        name = await websocket.receive()
        done = {"runId": "r", "status": "finished", "exitCode": 0, "console": [["stdout", name]]}
        await websocket.send(json.dumps(done))
        await websocket.close(1000)

    manager.add_websocket(EXECUTE, run)
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        statuses = []
        async with stream_execute(session, "print(input())") as results:
            async for result in results:
                statuses.append(result.status)
                if result.status == "waiting-input":
                    await results.send_input("Lablup")
                else:
                    assert result.console[0].data == "Lablup"
        assert statuses == ["waiting-input", "finished"]
        assert first == [{"mode": "query", "code": "print(input())"}]
        async with stream_execute(session, mode="batch", options={"exec": "make"}) as results:
            pass
    assert first[1]["options"] == {"clean": None, "build": None, "buildLog": False, "exec": "make"}


async def test_a_streamed_run_raises_the_servers_error(manager: FakeManager) -> None:
    async def fail(recorded: Recorded) -> None:
        await websocket.accept()
        await websocket.receive()
        error = {"status": "error", "type": "x/kernel-gone", "title": "Gone", "msg": "it died"}
        await websocket.send(json.dumps(error))
        await websocket.close(1011)

    manager.add_websocket(EXECUTE, fail)
    async with APIClient(manager.config()) as api:
        with pytest.raises(StreamClosed, match=r"Gone \(it died\)") as failed:
            async with stream_execute(ComputeSession(api, "s1"), "1") as results:
                async for _ in results:
                    pass
    assert failed.value.problem is not None and failed.value.problem["title"] == "Gone"
    with pytest.raises(BackendClientError):
        async with (
            APIClient(manager.config()) as api,
            stream_execute(ComputeSession(api, "s1"), mode="continue"),
        ):
            pass


# --- app services (REST) -----------------------------------------------------


async def test_apps_are_parsed_and_services_start_and_stop(manager: FakeManager) -> None:
    listed = [
        {"name": "sshd", "protocol": "tcp", "ports": [2200]},
        {
            "name": "jupyter",
            "protocol": "http",
            "ports": [8080, 8081],
            "url_template": "{protocol}://{host}:{port}/lab",
            "allowed_envs": ["TOKEN"],
        },
    ]
    manager.answer("GET", "/stream/session/s1/apps", listed)
    manager.answer(
        "POST", "/session/s1/start-service", {"token": "t0k", "wsproxy_addr": "http://proxy"}
    )
    manager.answer("POST", "/session/s1/shutdown-service", None)
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        apps = await session.apps()
        assert [a.name for a in apps] == ["sshd", "jupyter"]
        assert apps[0] == AppInfo("sshd", "tcp", (2200,), None, None, None, listed[0])
        assert apps[1].url_template == "{protocol}://{host}:{port}/lab"
        assert apps[1].allowed_envs == ["TOKEN"]
        answer = await session.start_service("jupyter", port=8081, envs={"TOKEN": "x"})
        assert answer["token"] == "t0k"
        await session.shutdown_service("jupyter")
    assert manager.bodies("POST", "/session/s1/start-service") == [
        {"app": "jupyter", "port": 8081, "envs": '{"TOKEN": "x"}'}
    ]
    assert manager.bodies("POST", "/session/s1/shutdown-service") == [{"service_name": "jupyter"}]


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"name": "x"}, "apps answer"),
        ([{"protocol": "tcp"}], "app.name"),
        ([{"name": "x", "ports": ["22"]}], "app.ports"),
        (["sshd"], "app"),
    ],
)
async def test_malformed_app_lists_name_the_field(
    manager: FakeManager, answer: Any, field: str
) -> None:
    manager.answer("GET", "/stream/session/s1/apps", answer)
    async with APIClient(manager.config()) as api:
        with pytest.raises(MalformedResponse) as bad:
            await ComputeSession(api, "s1").apps()
    assert bad.value.field == field


async def test_a_start_service_answer_without_token_is_malformed(manager: FakeManager) -> None:
    manager.answer("POST", "/session/s1/start-service", {"wsproxy_addr": "http://proxy"})
    async with APIClient(manager.config()) as api:
        with pytest.raises(MalformedResponse) as bad:
            await ComputeSession(api, "s1").start_service("ttyd")
    assert bad.value.field == "token"


# --- a server that never answers the closing handshake -------------------------


async def mute_websocket_server(stream: trio.SocketStream) -> None:
    """Completes the opening handshake, then reads and answers nothing."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await trio.sleep_forever()


async def test_a_closing_handshake_that_times_out_loses_nothing(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bai.client.stream

    monkeypatch.setattr(bai.client.stream, "_DISCONNECT_TIMEOUT", 0.2)
    host, port = await start_service(nursery, mute_websocket_server)
    from bai.client import APIConfig

    config = APIConfig(endpoint=f"http://{host}:{port}", access_key="AK", secret_key="SK")
    async with APIClient(config) as api:
        session = ComputeSession(api, "s1")
        with trio.fail_after(10):
            async with stream_pty(session):
                pass  # the close times out: the stream still ends quietly
            with pytest.raises(ZeroDivisionError):
                async with stream_pty(session):
                    1 / 0  # noqa: B018 - the block's own failure must come out unchanged
