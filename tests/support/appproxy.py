"""The app proxy in tests: a real app to put behind it, and a proxy with calls of its API.

:func:`serve_target` serves :func:`target_app` (an ASGI app on hypercorn) on
a free loopback port: ``/headers`` answers the request's headers as JSON,
``/count`` the size and SHA-256 of the body, ``/echo`` streams the body
back as it arrives (the answer starts first), ``/big?n=N`` streams N bytes
(with a ``Content-Length``),
a WebSocket on any path echoes every message, any other path answers
``hello from PATH?QUERY`` with a ``Set-Cookie: app=1``.  :func:`start_proxy`
runs an :class:`AppProxyService` (port-mapping mode on a free port range
unless told otherwise) in the caller's nursery; :class:`Proxy` registers
and adds apps as a manager and a user's client do.
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import hypercorn.config
import hypercorn.trio
import trio

from bai.appproxy.server import AppProxyAddresses, AppProxyService
from bai.common.appproxy_api import SECRET_HEADER
from bai.common.config import AppProxyConfig, parse_config

from support.net import free_port

__all__ = [
    "SECRET",
    "MiB",
    "Proxy",
    "free_range",
    "origin",
    "pattern",
    "proxy_config",
    "serve_target",
    "start_proxy",
    "target_app",
]

#: The secret of every proxy :func:`proxy_config` makes.
SECRET = "test-appproxy-secret"
MiB = 1024 * 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def pattern(size: int) -> bytes:
    """*size* bytes that are not all alike (a shifted piece would show)."""
    block = bytes(range(256)) * 4096
    return (block * (size // len(block) + 1))[:size]


# ---------------------------------------------------------------- the app


async def target_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the proxy (see the module docstring for its routes)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send(
                {
                    "type": "websocket.send",
                    "bytes": message.get("bytes"),
                    "text": message.get("text"),
                }
            )
    path = scope["path"]

    async def answer(status: int, body: bytes, headers: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    if path == "/echo":
        # The answer starts before the body is read, and follows it piece by piece.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            if message.get("body"):
                await send(
                    {"type": "http.response.body", "body": message["body"], "more_body": True}
                )
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/count":
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            digest.update(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await answer(200, json.dumps({"size": size, "sha256": digest.hexdigest()}).encode())
        return
    while True:  # read (and drop) any body
        message = await receive()
        if not message.get("more_body", False):
            break
    if path == "/headers":
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode(), []).append(value.decode())
        await answer(200, json.dumps(headers).encode(), [(b"content-type", b"application/json")])
    elif path == "/big":
        size = int(parse_qs(scope["query_string"].decode())["n"][0])
        data = pattern(size)
        length = [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        for offset in range(0, size, MiB):
            await send(
                {
                    "type": "http.response.body",
                    "body": data[offset : offset + MiB],
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b""})
    else:
        query = scope["query_string"].decode()
        await answer(200, f"hello from {path}?{query}".encode(), [(b"set-cookie", b"app=1")])


async def serve_target(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn.trio.serve(target_app, config, task_status=task_status, mode="asgi")  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        bound: list[str] = await nursery.start(run)
        task_status.started(int(bound[0].rsplit(":", 1)[1]))


# ---------------------------------------------------------------- the proxy


def free_range(size: int) -> tuple[int, int]:
    """*size* consecutive loopback ports that were free a moment ago."""
    for _ in range(200):
        low = free_port()
        if low + size - 1 > 65535:
            continue
        probes: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free port range")


def proxy_config(**keys: Any) -> AppProxyConfig:
    settings: dict[str, Any] = {
        "service-addr": "127.0.0.1:0",
        "secret": SECRET,
        "port-range": list(free_range(8)),
    }
    settings.update({name.replace("_", "-"): value for name, value in keys.items()})
    lines = [f"{name} = {json.dumps(value)}" for name, value in settings.items()]
    return parse_config(AppProxyConfig, "[appproxy]\n" + "\n".join(lines) + "\n")


class Proxy:
    """A running proxy and calls of its API, as a manager and as a user's client make them."""

    def __init__(self, service: AppProxyService, addresses: AppProxyAddresses) -> None:
        self.service = service
        self.api = addresses.api
        self.addresses = addresses

    async def register(self, target_port: int, **fields: Any) -> tuple[uuid.UUID, str]:
        body = {
            "session_id": str(fields.pop("session_id", uuid.uuid4())),
            "kernel_host": "127.0.0.1",
            "kernel_port": target_port,
            "app": "web",
            "protocol": "http",
            "user_id": str(uuid.uuid4()),
            "access_key": "AKIATESTAPPPROXY",
            "open_to_public": False,
            "login_session_token": None,
            **fields,
        }
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.api}/v2/conf", json=body, headers={SECRET_HEADER: SECRET}
            )
        assert response.status_code == 200, response.text
        return uuid.UUID(body["session_id"]), response.json()["token"]

    async def add(self, token: str, session_id: uuid.UUID, app: str = "web") -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"{self.api}/v2/proxy/{token}/{session_id}/add?app={app}")

    async def open(self, target_port: int, **fields: Any) -> tuple[uuid.UUID, str]:
        """Register an app and add it: its session id and browser URL."""
        app = fields.get("app", "web")
        session_id, token = await self.register(target_port, **fields)
        response = await self.add(token, session_id, app)
        assert response.status_code == 200, response.text
        reply = response.json()
        assert reply["code"] == 200
        return session_id, reply["url"]


async def start_proxy(nursery: trio.Nursery, **keys: Any) -> Proxy:
    service = AppProxyService(proxy_config(**keys))
    addresses: AppProxyAddresses = await nursery.start(service.serve)
    return Proxy(service, addresses)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
