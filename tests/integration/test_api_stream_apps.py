"""A session's apps over `/stream`: the list, a TCP connection per WebSocket, terminals."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from bai.common.auth import sign_request

from support.api import API_VERSION, Key
from support.api_session import Backends, Deployment, running_deployment, unique_name


def _open(deployment: Deployment, target: str, key: Key | None = None, **options: Any) -> Any:
    signer = key or deployment.api.user
    headers = sign_request(
        method="GET",
        path=target,
        host=deployment.api.host,
        api_version=API_VERSION,
        access_key=signer.access_key,
        secret_key=signer.secret_key,
        content_type="application/octet-stream",
    )
    url = deployment.api.base_url.replace("http://", "ws://") + target
    return open_websocket_url(
        url, extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()], **options
    )


async def _http_get(ws: WebSocketConnection, path: str) -> bytes:
    """One HTTP/1.0 GET through a tcpproxy socket: the whole answer."""
    await ws.send_message(f"GET {path} HTTP/1.0\r\nHost: app\r\n\r\n".encode())
    answer = b""
    with trio.fail_after(20):
        try:
            while True:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                answer += message
        except ConnectionClosed as closed:
            assert closed.reason.code == 1000
    return answer


async def _publish(deployment: Deployment, name: str, text: str) -> None:
    response = await deployment.upload(name, [("public/hello.txt", text.encode())])
    assert response.status_code in (200, 201, 204), response.text


async def test_the_apps_list_names_the_image_services_and_the_intrinsic_ones(
    deployment: Deployment,
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    user = deployment.api.user
    response = await deployment.api.call("GET", f"/stream/session/{name}/apps", key=user)
    assert response.status_code == 200, response.text
    apps = {app["name"]: app for app in response.json()}
    assert set(apps) == {"http", "sshd", "ttyd"}
    assert apps["http"]["protocol"] == "http"
    assert apps["sshd"]["protocol"] == "tcp"
    assert all(len(app["ports"]) == 1 for app in apps.values())
    legacy = await deployment.api.call("GET", f"/stream/kernel/{name}/apps", key=user)
    assert legacy.json() == response.json()
    missing = await deployment.api.call("GET", "/stream/session/no-such/apps", key=user)
    assert missing.status_code == 404


async def test_an_http_app_is_reached_through_tcpproxy_and_httpproxy(
    deployment: Deployment,
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    await _publish(deployment, name, "hello through the proxy")
    for route in ("tcpproxy", "httpproxy"):
        async with _open(deployment, f"/stream/session/{name}/{route}?app=http") as ws:
            answer = await _http_get(ws, "/hello.txt")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), head
        assert body == b"hello through the proxy"


async def test_many_concurrent_proxied_connections_all_complete(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    await _publish(deployment, name, "x" * 100_000)
    bodies: list[bytes] = []

    async def fetch() -> None:
        async with _open(deployment, f"/stream/session/{name}/tcpproxy?app=http") as ws:
            bodies.append((await _http_get(ws, "/hello.txt")).partition(b"\r\n\r\n")[2])

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(fetch)
    assert bodies == [b"x" * 100_000] * 40


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("app=nope", 404),
        ("app=http&port=1", 404),
        ("app=http&port=0", 400),
        ("app=http&envs=notjson", 400),
        ("app=http&envs=%7B%221X%22%3A%22v%22%7D", 400),
        ("app=http&arguments=%7B%22--x%22%3A%221%22%7D", 400),
        ("", 400),
    ],
)
async def test_bad_proxy_requests_are_refused_before_the_upgrade(
    deployment: Deployment, query: str, status: int
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    with pytest.raises(ConnectionRejected) as rejected:
        async with _open(deployment, f"/stream/session/{name}/tcpproxy?{query}"):
            pass
    assert rejected.value.status_code == status
    problem = json.loads(rejected.value.body or b"{}")
    assert problem["status"] == status


async def test_httpproxy_refuses_a_tcp_app_and_nobody_reaches_another_users_app(
    deployment: Deployment,
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    with pytest.raises(ConnectionRejected) as rejected:
        async with _open(deployment, f"/stream/session/{name}/httpproxy?app=sshd"):
            pass
    assert rejected.value.status_code == 400
    with pytest.raises(ConnectionRejected) as foreign:
        async with _open(
            deployment, f"/stream/session/{name}/tcpproxy?app=http", key=deployment.api.admin
        ):
            pass
    assert foreign.value.status_code == 404


# ------------------------------------------------------------------- terminals


async def _type(ws: WebSocketConnection, text: str) -> None:
    chars = base64.b64encode(text.encode()).decode()
    await ws.send_message(json.dumps({"type": "stdin", "chars": chars}))


async def _read_until(ws: WebSocketConnection, needle: str, seconds: float = 20) -> str:
    seen = ""
    with trio.fail_after(seconds):
        while needle not in seen:
            message = json.loads(await ws.get_message())
            if message["type"] == "out":
                seen += base64.b64decode(message["data"]).decode(errors="replace")
    return seen


async def test_a_terminal_echoes_resizes_and_several_run_at_once(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    target = f"/stream/session/{name}/pty"
    async with _open(deployment, target) as first, _open(deployment, target) as second:
        await _type(first, "echo hi-$((40+2))\n")
        assert "hi-42" in await _read_until(first, "hi-42")
        await first.send_message(json.dumps({"type": "resize", "rows": 33, "cols": 101}))
        await _type(first, "stty size\n")
        assert "33 101" in await _read_until(first, "33 101")
        # The second terminal is a shell of its own, with its own size.
        await _type(second, "stty size; echo second-$((1+1))\n")
        seen = await _read_until(second, "second-2")
        assert "33 101" not in seen
        await second.send_message(json.dumps({"type": "ping"}))
        await _type(second, "exit\n")
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await second.get_message()
        assert closed.value.reason.code == 1000
        await _type(first, "echo still-$((2+3))\n")
        assert "still-5" in await _read_until(first, "still-5")
    # Closing the terminals leaves the session running.
    assert (await deployment.info(name))["status"] == "RUNNING"


async def test_restart_from_a_terminal_keeps_the_files_and_gives_a_fresh_shell(
    deployment: Deployment,
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    async with _open(deployment, f"/stream/session/{name}/pty") as ws:
        await _type(ws, "echo kept > note.txt; export MARK=old; echo marked-$((1+1))\n")
        await _read_until(ws, "marked-2")
        await ws.send_message(json.dumps({"type": "restart"}))
        # The same socket goes on, attached to a shell of the restarted kernel.
        with trio.fail_after(60):
            while True:
                await _type(ws, "echo [$MARK] $(cat note.txt) alive-$((2+2))\n")
                try:
                    seen = await _read_until(ws, "alive-4", seconds=2)
                    break
                except trio.TooSlowError:
                    continue
        assert "[] kept alive-4" in seen
    info = await deployment.info(name)
    assert info["status"] == "RUNNING"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("not json", "type"),
        (json.dumps({"type": "dance"}), "type"),
        (json.dumps({"type": "stdin", "chars": "***"}), "chars"),
        (json.dumps({"type": "resize", "rows": 0, "cols": 80}), "rows"),
        (json.dumps({"type": "resize", "rows": 24, "cols": 10**6}), "cols"),
    ],
)
async def test_a_malformed_terminal_message_gets_an_error_and_the_terminal_stays(
    deployment: Deployment, message: str, field: str
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    async with _open(deployment, f"/stream/session/{name}/pty") as ws:
        await ws.send_message(message)
        with trio.fail_after(10):
            while True:
                answer = json.loads(await ws.get_message())
                if answer["type"] == "error":
                    break
        assert field in answer["data"]
        await _type(ws, "echo ok-$((3*3))\n")
        assert "ok-9" in await _read_until(ws, "ok-9")


async def test_an_oversized_terminal_message_closes_the_socket(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    huge = json.dumps({"type": "stdin", "chars": "A" * (2 * 1024 * 1024)})
    async with _open(deployment, f"/stream/session/{name}/pty") as ws:
        await ws.send_message(huge)
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    assert closed.value.reason.code == 1009
    assert (await deployment.info(name))["status"] == "RUNNING"


# ------------------------------------------------------------------- app proxy


@pytest.fixture
async def proxied(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, app_proxy=True) as running:
        yield running


async def test_start_service_hands_the_app_to_the_app_proxy(proxied: Deployment) -> None:
    name = unique_name()
    created = await proxied.create(name=name)
    await _publish(proxied, name, "hello through the app proxy")
    response = await proxied.api.call(
        "POST",
        f"/session/{name}/start-service",
        key=proxied.api.user,
        json_body={"app": "http", "login_session_token": "dummy"},
    )
    assert response.status_code == 200, response.text
    started = response.json()
    session_id = created["sessionId"]
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        added = await browser.get(
            f"{started['wsproxy_addr']}/v2/proxy/{started['token']}/{session_id}/add",
            params={"app": "http"},
        )
        assert added.status_code == 200, added.text
        url = added.json()["url"]
        # The token buys a cookie; the page itself then needs nothing more.
        page = await browser.get(url)
        assert page.status_code == 200
        base = url.split("?")[0].rstrip("/")
        fetched = await browser.get(f"{base}/hello.txt")
        assert fetched.text == "hello through the app proxy"
        # Without the cookie the app is closed to others.
        async with httpx.AsyncClient() as stranger:
            assert (await stranger.get(f"{base}/hello.txt")).status_code == 401
        # A used token does not work twice.
        again = await browser.get(
            f"{started['wsproxy_addr']}/v2/proxy/{started['token']}/{session_id}/add",
            params={"app": "http"},
        )
        assert again.status_code >= 400


async def test_the_app_proxy_drops_a_sessions_routes_when_it_ends(proxied: Deployment) -> None:
    name = unique_name()
    created = await proxied.create(name=name)
    response = await proxied.api.call(
        "POST", f"/session/{name}/start-service", key=proxied.api.user, json_body={"app": "http"}
    )
    started = response.json()
    async with httpx.AsyncClient() as browser:
        added = await browser.get(
            f"{started['wsproxy_addr']}/v2/proxy/{started['token']}/{created['sessionId']}/add",
            params={"app": "http"},
        )
        url = added.json()["url"]
        assert (await browser.get(url)).status_code in (200, 302, 303, 307)
        assert (await proxied.destroy(name)).status_code == 200
        # The route's port is given back at once, not after the proxy's idle timeout.
        with trio.fail_after(20):
            while True:
                try:
                    await browser.get(url)
                except httpx.ConnectError:
                    break
                await trio.sleep(0.1)


async def test_start_service_refuses_bad_requests(proxied: Deployment) -> None:
    name = unique_name()
    await proxied.create(name=name)
    for body, status, field in [
        ({"app": "nope"}, 404, "app"),
        ({}, 400, "app"),
        ({"app": "http", "envs": "[1]"}, 400, "envs"),
        ({"app": "http", "port": 70000}, 400, "port"),
    ]:
        response = await proxied.api.call(
            "POST", f"/session/{name}/start-service", key=proxied.api.user, json_body=body
        )
        assert response.status_code == status, (body, response.text)
        assert field in response.text
    stopped = await proxied.api.call(
        "POST",
        f"/session/{name}/shutdown-service",
        key=proxied.api.user,
        json_body={"service_name": "http"},
    )
    assert stopped.status_code == 204


async def test_an_app_that_cannot_start_gets_a_precise_error_and_the_kernel_lives_on(
    deployment: Deployment,
) -> None:
    name = unique_name()
    created = await deployment.create(name=name)
    port = next(p for p in created["servicePorts"] if p["name"] == "http")["container_ports"][0]
    # User code holds the app's port, so the service cannot listen there.
    out, _ = await deployment.run(
        name,
        "import socket\nheld = socket.socket()\n"
        f"held.bind(('127.0.0.1', {port}))\nheld.listen()\nprint('held')\n",
    )
    assert out == "held\n"
    with pytest.raises(ConnectionRejected) as rejected:
        async with _open(deployment, f"/stream/session/{name}/tcpproxy?app=http"):
            pass
    assert rejected.value.status_code == 503
    problem = json.loads(rejected.value.body or b"{}")
    assert problem["type"].endswith("/service-start-failed")
    assert f"port {port}" in problem["detail"] and "taken" in problem["detail"]
    assert await deployment.run(name, "print(6 * 7)") == ("42\n", "")


@pytest.fixture
async def bounded(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(
        backends, tmp_path, manager={"max-proxied-connections": 2}
    ) as running:
        yield running


async def test_a_flood_of_proxied_connections_to_one_session_is_bounded(
    bounded: Deployment,
) -> None:
    name = unique_name()
    await bounded.create(name=name)
    target = f"/stream/session/{name}/tcpproxy?app=sshd"
    async with _open(bounded, target), _open(bounded, target):
        with pytest.raises(ConnectionRejected) as rejected:
            async with _open(bounded, target):
                pass
        assert rejected.value.status_code == 503
        assert "2 proxied connections" in json.loads(rejected.value.body or b"{}")["detail"]
    # Once those are closed, new connections are let in again.
    with trio.fail_after(10):
        while True:
            try:
                async with _open(bounded, target):
                    break
            except ConnectionRejected:
                await trio.sleep(0.1)
