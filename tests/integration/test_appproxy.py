"""The app proxy against real apps: registration, the token exchange, the relay, both modes.

Each test runs an :class:`AppProxyService` in its nursery and a real app
behind it: the ASGI app of :mod:`support.appproxy` (plain pages, header and
body echoes, large streams, a WebSocket echo) or a bare Trio TCP server
where a test needs one that misbehaves on purpose.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import h11
import httpx
import pytest
import trio
import trio.testing
import trio_websocket

from bai.common.appproxy_api import ERROR_TYPE_PREFIX, SECRET_HEADER, TOKEN_QUERY

from support.appproxy import (
    SECRET,
    MiB,
    Proxy,
    free_range,
    origin,
    pattern,
    serve_target,
    start_proxy,
)
from support.net import free_port


@pytest.fixture
async def target(nursery: trio.Nursery) -> int:
    port: int = await nursery.start(serve_target)
    return port


@pytest.fixture
async def proxy(nursery: trio.Nursery) -> Proxy:
    return await start_proxy(nursery)


@asynccontextmanager
async def browser_session(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that opened *url* (the token exchange done): it holds the cookie."""
    async with httpx.AsyncClient(follow_redirects=False) as client:
        first = await client.get(url)
        assert first.status_code == 302, first.text
        assert first.headers["location"] == "/"
        yield client


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    kind: str = response.json()["type"]
    assert kind.startswith(ERROR_TYPE_PREFIX)
    return kind.removeprefix(ERROR_TYPE_PREFIX)


# ---------------------------------------------------------------- the API


async def test_registration_needs_the_secret_and_a_valid_body(proxy: Proxy) -> None:
    body = {
        "session_id": str(uuid.uuid4()),
        "kernel_host": "127.0.0.1",
        "kernel_port": 80,
        "app": "web",
        "protocol": "http",
        "user_id": str(uuid.uuid4()),
        "access_key": "AK",
        "open_to_public": False,
        "login_session_token": None,
    }
    async with httpx.AsyncClient(base_url=proxy.api) as client:
        missing = await client.post("/v2/conf", json=body)
        wrong = await client.post("/v2/conf", json=body, headers={SECRET_HEADER: "nope"})
        bad = await client.post(
            "/v2/conf", json={**body, "kernel_port": 0}, headers={SECRET_HEADER: SECRET}
        )
        unknown = await client.post(
            "/v2/conf", json={**body, "colour": 1}, headers={SECRET_HEADER: SECRET}
        )
        not_json = await client.post("/v2/conf", content=b"{", headers={SECRET_HEADER: SECRET})
        huge = await client.post(
            "/v2/conf", content=b" " * (128 * 1024), headers={SECRET_HEADER: SECRET}
        )
        drop = await client.delete(f"/v2/conf/{uuid.uuid4()}")
        routes = await client.get("/v2/routes")
        status = await client.get("/v2/status")
        wrong_method = await client.get("/v2/conf")
    assert missing.status_code == wrong.status_code == 401
    assert problem_type(missing) == "Unauthorized"
    assert bad.status_code == 400 and bad.json()["field"] == "kernel_port"
    assert unknown.status_code == 400 and unknown.json()["field"] == "colour"
    assert not_json.status_code == 400
    assert huge.status_code == 413
    assert drop.status_code == routes.status_code == 401
    assert status.json() == {"status": "running", "mode": "port"}
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


async def test_a_token_is_good_once_and_only_for_its_session_and_app(
    proxy: Proxy, target: int
) -> None:
    session_id, token = await proxy.register(target)
    other_session, other_token = await proxy.register(target)
    wrong_app = await proxy.add(other_token, other_session, "jupyter")
    wrong_session = await proxy.add(token, uuid.uuid4())
    unknown = await proxy.add("made-up", session_id)
    assert wrong_app.status_code == wrong_session.status_code == unknown.status_code == 401
    assert problem_type(wrong_app) == "InvalidToken"
    assert "jupyter" in wrong_app.json()["detail"]
    # A token presented for the wrong session is spent all the same.
    assert (await proxy.add(token, session_id)).status_code == 401
    fresh_session, fresh = await proxy.register(target)
    good = await proxy.add(fresh, fresh_session)
    assert good.status_code == 200 and good.headers["access-control-allow-origin"] == "*"
    again = await proxy.add(fresh, fresh_session)
    assert again.status_code == 401 and problem_type(again) == "InvalidToken"


async def test_tokens_expire(nursery: trio.Nursery, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.rate = 1.0
    proxy = await start_proxy(nursery)
    target: int = await nursery.start(serve_target)
    session_id, token = await proxy.register(target)
    _, url = await proxy.open(target)
    mock_clock.jump(301)
    late = await proxy.add(token, session_id)
    assert late.status_code == 401 and problem_type(late) == "InvalidToken"
    assert "expired" in late.json()["detail"]
    async with httpx.AsyncClient() as browser:
        stale = await browser.get(url)
    assert stale.status_code == 401 and problem_type(stale) == "Unauthorized"


# ------------------------------------------------------------ browser access


async def test_the_token_becomes_a_cookie_and_the_app_answers(proxy: Proxy, target: int) -> None:
    session_id, url = await proxy.open(target)
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1"
    assert parts.path == "/" and TOKEN_QUERY in parse_qs(parts.query)
    async with httpx.AsyncClient() as browser:
        first = await browser.get(url)
        assert first.status_code == 302 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"bai_app_{parts.port}=")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        page = await browser.get(origin(url) + "/some/page?x=1")
        assert page.status_code == 200 and page.text == "hello from /some/page?x=1"
        assert page.headers["set-cookie"] == "app=1"
        # The token and the cookie were for one use and one route: a reload of the
        # first URL with the cookie redirects, a new browser without it is refused.
        reload = await browser.get(url)
        assert reload.status_code == 302 and "set-cookie" not in reload.headers
    async with httpx.AsyncClient() as stranger:
        refused = await stranger.get(origin(url) + "/some/page")
        replayed = await stranger.get(url)
    assert refused.status_code == replayed.status_code == 401
    assert problem_type(refused) == "Unauthorized"
    # The same session and app keep their port.
    again_session, again = await proxy.open(target, session_id=session_id)
    assert again_session == session_id and urlsplit(again).port == parts.port


async def test_the_app_sees_forwarding_headers_but_no_proxy_cookie(
    proxy: Proxy, target: int
) -> None:
    _, url = await proxy.open(target)
    _, other_url = await proxy.open(target)
    async with browser_session(url) as browser:
        other = await browser.get(other_url)
        assert other.status_code == 302
        browser.cookies.set("mine", "kept")
        seen = (await browser.get(origin(url) + "/headers")).json()
    assert seen["cookie"] == ["mine=kept"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [urlsplit(url).netloc]


async def test_open_to_public_needs_no_cookie(proxy: Proxy, target: int) -> None:
    _, url = await proxy.open(target, open_to_public=True)
    async with httpx.AsyncClient() as anyone:
        page = await anyone.get(origin(url) + "/open")
        first = await anyone.get(url)
    assert page.status_code == 200 and page.text == "hello from /open?"
    assert first.status_code == 302 and first.headers["location"] == "/"


async def test_a_bad_token_in_the_url_is_refused(proxy: Proxy, target: int) -> None:
    _, url = await proxy.open(target)
    async with httpx.AsyncClient() as browser:
        forged = await browser.get(origin(url) + f"/?{TOKEN_QUERY}=forged")
    assert forged.status_code == 401
    assert "unknown, already used or expired" in forged.json()["detail"]


# ---------------------------------------------------------------- the relay


async def test_large_bodies_stream_both_ways(proxy: Proxy, target: int) -> None:
    _, url = await proxy.open(target)
    size = 64 * MiB
    data = pattern(size)

    async def pieces() -> AsyncIterator[bytes]:
        for offset in range(0, size, MiB):
            yield data[offset : offset + MiB]

    async with browser_session(url) as browser:
        # Chunked, then with a Content-Length (read past h11): both arrive whole.
        counted = await browser.post(origin(url) + "/count", content=pieces())
        assert counted.json() == {"size": size, "sha256": hashlib.sha256(data).hexdigest()}
        counted = await browser.post(origin(url) + "/count", content=data)
        assert counted.json() == {"size": size, "sha256": hashlib.sha256(data).hexdigest()}
        async with browser.stream("GET", origin(url) + f"/big?n={size}") as response:
            digest = hashlib.sha256()
            received = 0
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                received += len(chunk)
        assert received == size and digest.hexdigest() == hashlib.sha256(data).hexdigest()
        # HEAD: the length of a body that is not sent.
        head = await browser.head(origin(url) + "/big?n=1000")
        assert head.headers["content-length"] == "1000" and head.content == b""
        # Keep-alive: the same connection went on serving.
        assert (await browser.get(origin(url) + "/after")).text == "hello from /after?"


async def _raw_request(port: int, head: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head)
    return stream


def _cookie_of(browser: httpx.AsyncClient) -> str:
    return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


async def test_an_echo_streams_while_the_body_is_still_sent(proxy: Proxy, target: int) -> None:
    _, url = await proxy.open(target)
    port = urlsplit(url).port
    assert port is not None
    async with browser_session(url) as browser:
        cookie = _cookie_of(browser)
    stream = await _raw_request(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Cookie: {cookie}\r\n\r\n".encode(),
    )
    async with stream:
        received = b""
        # Each piece comes back before the next is sent: nothing waits for the whole body.
        for index in range(20):
            piece = f"piece {index:02d};".encode()
            await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
            with trio.fail_after(10):
                while piece not in received:
                    received += await stream.receive_some(65536)
        await stream.send_all(b"0\r\n\r\n")
        with trio.fail_after(10):
            while not received.endswith(b"0\r\n\r\n"):
                received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 200")


async def test_pipelined_requests_keep_their_bodies_apart(proxy: Proxy, target: int) -> None:
    _, url = await proxy.open(target, open_to_public=True)
    port = urlsplit(url).port
    assert port is not None
    body = pattern(3 * MiB)
    requests = (
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ) % (len(body), body)
    stream = await _raw_request(port, requests)
    reader = h11.Connection(h11.CLIENT)
    answers: list[bytes] = []
    async with stream:
        with trio.fail_after(30):
            for method in (b"POST", b"GET", b"POST", b"GET"):
                reader.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
                reader.send(h11.EndOfMessage())
                answer = b""
                while True:
                    event = reader.next_event()
                    if event is h11.NEED_DATA:
                        reader.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Data):
                        answer += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                answers.append(answer)
                if reader.our_state is h11.DONE and reader.their_state is h11.DONE:
                    reader.start_next_cycle()
    assert json.loads(answers[0]) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert answers[1] == b"hello from /second?"
    assert json.loads(answers[2])["size"] == 5
    assert answers[3] == b"hello from /last?"


async def _sink_server(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """An app that reads a request head, then nothing more (its socket buffers fill)."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _firehose_server(
    sent: list[int], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """An app that answers any request with an endless body, counting what it wrote."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        while True:
            await stream.send_all(piece)
            sent[0] += 65536

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_a_slow_app_holds_the_client_back(proxy: Proxy, nursery: trio.Nursery) -> None:
    sink: int = await nursery.start(_sink_server)
    _, url = await proxy.open(sink, open_to_public=True)
    port = urlsplit(url).port
    assert port is not None
    stream = await _raw_request(
        port, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"
    )
    sent = 0
    async with stream:
        with trio.move_on_after(3):
            while True:
                await stream.send_all(b"y" * 65536)
                sent += 65536
    # Socket buffers on three connections, and one piece in the proxy: far below 1 GiB.
    assert 0 < sent < 128 * MiB


async def test_a_slow_browser_holds_the_app_back(proxy: Proxy, nursery: trio.Nursery) -> None:
    written = [0]
    hose: int = await nursery.start(_firehose_server, written)
    _, url = await proxy.open(hose, open_to_public=True)
    port = urlsplit(url).port
    assert port is not None
    stream = await _raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with stream:
        assert (await stream.receive_some(64)).startswith(b"HTTP/1.1 200")
        await trio.sleep(3)
        assert 0 < written[0] < 128 * MiB


async def test_websocket_upgrades_are_relayed(proxy: Proxy, target: int) -> None:
    _, url = await proxy.open(target)
    ws_url = origin(url).replace("http://", "ws://") + "/ws"
    async with browser_session(url) as browser:
        cookie = _cookie_of(browser)
    async with trio_websocket.open_websocket_url(
        ws_url, extra_headers=[(b"cookie", cookie.encode())], max_message_size=4 * MiB
    ) as ws:
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        blob = pattern(2 * MiB)
        await ws.send_message(blob)
        assert await ws.get_message() == blob
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(ws_url):
            pass
    assert rejected.value.status_code == 401


async def test_a_target_that_refuses_is_a_502(proxy: Proxy) -> None:
    dead = free_port()
    _, url = await proxy.open(dead, open_to_public=True)
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(origin(url) + "/")
        # The connection stays usable: the next request gets the same clear answer.
        again = await browser.get(origin(url) + "/again")
    assert answer.status_code == again.status_code == 502
    assert problem_type(answer) == "AppUnreachable"
    assert "cannot be reached" in answer.json()["detail"]
    assert "refused" in answer.json()["detail"]


async def test_an_app_that_dies_mid_answer_cuts_the_client(
    proxy: Proxy, nursery: trio.Nursery
) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    _, url = await proxy.open(listeners[0].socket.getsockname()[1], open_to_public=True)
    async with httpx.AsyncClient() as browser:
        with pytest.raises(httpx.RemoteProtocolError):
            await browser.get(origin(url) + "/")


async def test_the_port_range_runs_out_with_a_clear_error(nursery: trio.Nursery) -> None:
    low, high = free_range(2)
    proxy = await start_proxy(nursery, port_range=[low, high])
    ports = {urlsplit((await proxy.open(free_port()))[1]).port for _ in range(2)}
    assert ports == {low, high}
    session_id, token = await proxy.register(free_port())
    full = await proxy.add(token, session_id)
    assert full.status_code == 503 and problem_type(full) == "NoFreePort"
    assert f"{low}-{high}" in full.json()["detail"]


async def test_deleting_a_session_drops_its_routes_and_connections(
    proxy: Proxy, target: int
) -> None:
    session_id, url = await proxy.open(target)
    _, other_url = await proxy.open(target)
    ws_url = origin(url).replace("http://", "ws://") + "/ws"
    async with browser_session(url) as browser:
        cookie = _cookie_of(browser)
    async with trio_websocket.open_websocket_url(
        ws_url, extra_headers=[(b"cookie", cookie.encode())]
    ) as ws:
        await ws.send_message("before")
        assert await ws.get_message() == "before"
        async with httpx.AsyncClient(base_url=proxy.api) as client:
            dropped = await client.delete(f"/v2/conf/{session_id}", headers={SECRET_HEADER: SECRET})
            routes = await client.get("/v2/routes", headers={SECRET_HEADER: SECRET})
        assert dropped.json() == {"dropped": 1}
        assert [route["port"] for route in routes.json()["routes"]] == [urlsplit(other_url).port]
        with pytest.raises(trio_websocket.ConnectionClosed), trio.fail_after(10):
            await ws.get_message()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as late:
            await late.get(origin(url) + "/")


async def test_idle_routes_are_dropped(nursery: trio.Nursery, target: int) -> None:
    proxy = await start_proxy(nursery, idle_timeout="1s")
    _, url = await proxy.open(target, open_to_public=True)
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(origin(url) + "/")).status_code == 200
    with trio.fail_after(10):
        while True:
            async with httpx.AsyncClient(base_url=proxy.api) as client:
                listed = await client.get("/v2/routes", headers={SECRET_HEADER: SECRET})
            if not listed.json()["routes"]:
                break
            await trio.sleep(0.1)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as late:
            await late.get(origin(url) + "/")


async def test_a_route_serves_a_bounded_number_of_connections(
    nursery: trio.Nursery, target: int
) -> None:
    proxy = await start_proxy(nursery, max_connections_per_route=2)
    _, url = await proxy.open(target, open_to_public=True)
    ws_url = origin(url).replace("http://", "ws://") + "/ws"
    async with (
        trio_websocket.open_websocket_url(ws_url) as first,
        trio_websocket.open_websocket_url(ws_url) as second,
    ):
        for ws in (first, second):
            await ws.send_message("x")
            assert await ws.get_message() == "x"
        async with httpx.AsyncClient() as third:
            full = await third.get(origin(url) + "/")
        assert full.status_code == 503 and problem_type(full) == "TooManyConnections"
    with trio.fail_after(10):
        while True:
            async with httpx.AsyncClient() as later:
                if (await later.get(origin(url) + "/")).status_code == 200:
                    break
            await trio.sleep(0.05)


async def test_a_tcp_app_gets_a_raw_port(proxy: Proxy, nursery: trio.Nursery) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, echo, listeners)
    _, url = await proxy.open(listeners[0].socket.getsockname()[1], app="sshd", protocol="tcp")
    parts = urlsplit(url)
    assert parts.scheme == "tcp" and parts.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", parts.port)
    async with stream:
        await stream.send_all(b"SSH-2.0-test\r\n")
        with trio.fail_after(10):
            assert await stream.receive_some(100) == b"SSH-2.0-test\r\n"


# ------------------------------------------------------------ wildcard mode


async def test_wildcard_mode_routes_by_host(nursery: trio.Nursery, target: int) -> None:
    proxy = await start_proxy(
        nursery, mode="wildcard", wildcard_domain="apps.example.test", wildcard_port=0
    )
    port = proxy.addresses.wildcard_port
    assert port is not None
    session_id, url = await proxy.open(target, app="Jupyter_Lab")
    parts = urlsplit(url)
    assert parts.hostname == f"{session_id.hex[:8]}-jupyter-lab.apps.example.test"
    assert parts.port == port
    _, public = await proxy.open(target, open_to_public=True, app="web")
    _, private = await proxy.open(target, app="private")
    host = parts.netloc
    # No DNS for the test domain: connect to the listener and name the host (one
    # connection per host: a connection serves one app).

    async def get(path: str, host: str, cookie: str | None = None) -> httpx.Response:
        headers = {"host": host} | ({"cookie": cookie} if cookie else {})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as browser:
            return await browser.get(path, headers=headers)

    first = await get(f"/?{parts.query}", host)
    assert first.status_code == 302
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("bai_app=") and "Domain" not in cookie
    value = cookie.split(";")[0]
    page = await get("/x", host, value)
    assert page.status_code == 200 and page.text == "hello from /x?"
    assert (await get("/p", urlsplit(public).netloc)).status_code == 200
    # The cookie opens its own app only.
    assert (await get("/", urlsplit(private).netloc, value)).status_code == 401
    nobody = await get("/", "nope.apps.example.test")
    assert nobody.status_code == 404 and problem_type(nobody) == "NotFound"
    assert (await get("/", "example.org")).status_code == 404
    session_id, token = await proxy.register(target, app="sshd", protocol="tcp")
    tcp = await proxy.add(token, session_id, "sshd")
    assert tcp.status_code == 400 and problem_type(tcp) == "Unsupported"


async def test_wildcard_mode_refuses_a_second_host_on_one_connection(
    nursery: trio.Nursery, target: int
) -> None:
    proxy = await start_proxy(
        nursery, mode="wildcard", wildcard_domain="apps.example.test", wildcard_port=0
    )
    port = proxy.addresses.wildcard_port
    assert port is not None
    _, one = await proxy.open(target, open_to_public=True, app="one")
    _, two = await proxy.open(target, open_to_public=True, app="two")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as browser:
        first = await browser.get("/", headers={"host": urlsplit(one).netloc})
        second = await browser.get("/", headers={"host": urlsplit(two).netloc})
    assert first.status_code == 200
    assert second.status_code == 421
