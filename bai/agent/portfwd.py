"""Host ports forwarded into a kernel's private network.

When a backend gives each kernel a network of its own, a service inside
listens on the kernel's loopback, out of the host's reach.  The agent then
listens on the service's host port itself and relays each connection to the
same port inside the kernel, opened through the backend.  Each direction
copies one bounded chunk at a time and waits for the other side to take it,
so a slow reader slows its writer instead of growing a buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

import trio

log = logging.getLogger(__name__)

_CHUNK: Final = 65536

#: Opens a connection to a port inside the kernel.
Connector = Callable[[int], Awaitable[trio.SocketStream]]


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(_CHUNK):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def _relay(connect: Connector, port: int, client: trio.SocketStream) -> None:
    async with client:
        try:
            inner = await connect(port)
        except OSError as exc:
            log.debug("port %d: the kernel does not answer (%s)", port, exc)
            return
        async with inner, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, inner)
            nursery.start_soon(_pump, inner, client)


async def forward(listeners: Sequence[trio.SocketListener], connect: Connector) -> None:
    """Relay connections to each of *listeners* into the kernel until cancelled (closing them)."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            port = listener.socket.getsockname()[1]
            nursery.start_soon(
                partial(trio.serve_listeners, partial(_relay, connect, port), [listener])
            )
