"""Protocol handlers for ``support.fakemanager``'s WebSocket routes, and local TCP services.

The client and CLI tests of the ``/stream`` WebSocket clients register these
on a :class:`~support.fakemanager.FakeManager`:

* :func:`upper_terminal` -- a terminal route that echoes typed bytes in upper
  case, reports resizes as output, refuses ``restart`` with an ``error``
  message, and closes with 1000 on ``exit\\r`` or Ctrl-D (``\\x04``), with
  1011 on ``crash\\r``;
* :func:`relay_to` -- a tcpproxy route that opens one real TCP connection per
  WebSocket to the service registered for the ``app`` query parameter (404
  problem otherwise) and closes with 1000 when the service closes;
* :func:`echo_service`, :func:`greeter_service` and :func:`start_service`:
  real loopback TCP services for the tunnels to reach.

It holds no tests itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart import Response, websocket

from support.fakemanager import Recorded, problem

__all__ = ["echo_service", "greeter_service", "relay_to", "start_service", "upper_terminal"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def upper_terminal(recorded: Recorded) -> None:
    """The terminal route of the module docstring."""
    await websocket.accept()
    while True:
        message = json.loads(await websocket.receive())
        if message["type"] == "stdin":
            data = base64.b64decode(message["chars"])
            if data == b"exit\r" or data.endswith(b"\x04"):
                if data.endswith(b"\x04"):
                    await websocket.send(
                        json.dumps({"type": "out", "data": _b64(data[:-1].upper())})
                    )
                await websocket.close(1000)
                return
            if data == b"crash\r":
                await websocket.close(1011, "kernel gone")
                return
            await websocket.send(json.dumps({"type": "out", "data": _b64(data.upper())}))
        elif message["type"] == "resize":
            size = f"{message['rows']}x{message['cols']}".encode()
            await websocket.send(json.dumps({"type": "out", "data": _b64(size)}))
        elif message["type"] == "restart":
            await websocket.send(json.dumps({"type": "error", "data": "no restart here"}))
        else:
            await websocket.send(json.dumps({"type": "pong-ish", "data": "ignored"}))


def relay_to(services: dict[str, tuple[str, int]]) -> Callable[[Recorded], Awaitable[Any]]:
    """A tcpproxy route: one TCP connection to ``services[app]`` per WebSocket."""

    async def handler(recorded: Recorded) -> Response | None:
        app = recorded.query.get("app", [""])[0]
        if app not in services:
            return problem(404, "app-not-found", "Unknown app", f"no app {app!r}")
        stream = await trio.open_tcp_stream(*services[app])
        await websocket.accept()
        async with stream, trio.open_nursery() as nursery:

            async def to_service() -> None:
                while True:
                    data = await websocket.receive()
                    await stream.send_all(data if isinstance(data, bytes) else data.encode())

            nursery.start_soon(to_service)
            while data := await stream.receive_some(65536):
                await websocket.send(data)
            await websocket.close(1000)
            nursery.cancel_scope.cancel()
        return None

    return handler


async def echo_service(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def greeter_service(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.send_all(b"hello\n")


async def start_service(nursery: trio.Nursery, handler: Any) -> tuple[str, int]:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port: int = listeners[0].socket.getsockname()[1]
    return ("127.0.0.1", port)
