"""How bai's HTTP servers run hypercorn's Trio worker: its config, one fix, one tuning.

Each hypercorn server (the manager's API, the storage proxy's manager-facing
API, the app proxy's API; the storage proxy's client-facing API runs on
:mod:`bai.storage.http11` instead) builds its config with :func:`hypercorn_config`, which also calls
:func:`prepare_hypercorn`: that changes hypercorn's module state, once per
process, and is idempotent.

* **A client that hangs up must not stop the server.**  In hypercorn 0.18,
  when a client closes its connection while its request body is still
  arriving and the application answers at that moment, the connection's
  shutdown (``send_eof``) and the answer (``send_all``) meet on the socket
  and trio raises :class:`trio.BusyResourceError`; hypercorn lets it
  escape the connection's task, which ends the whole listener (measured:
  300 such connections stopped ``bai up``).  The peer is gone either way,
  so the answer is dropped and the connection is treated as closed, which
  is what hypercorn does for a peer that reset the connection.
* **Large reads.**  Hypercorn reads sockets 64 KiB at a time and every
  piece costs a round through h11 and the ASGI queue; :data:`RECV_SIZE`
  pieces took a vfolder upload (then served by hypercorn) from about 215
  to about 530 MiB/s on the reference machine.  Requests with small bodies are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event
from hypercorn.trio import tcp_server

__all__ = ["RECV_SIZE", "base_url", "hypercorn_config", "prepare_hypercorn"]

#: Bytes hypercorn reads from a socket at once.
RECV_SIZE: Final = 1024 * 1024

_Send = Callable[[tcp_server.TCPServer, Event], Coroutine[Any, Any, None]]


def _tolerate_shutdown_race(send: _Send) -> _Send:
    async def protocol_send(self: tcp_server.TCPServer, event: Event) -> None:
        try:
            await send(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    protocol_send.__bai_fixed__ = True  # type: ignore[attr-defined]
    return protocol_send


def prepare_hypercorn() -> None:
    """Apply the fix and the tuning of the module docstring (once per process)."""
    tcp_server.MAX_RECV = max(tcp_server.MAX_RECV, RECV_SIZE)
    if not getattr(tcp_server.TCPServer.protocol_send, "__bai_fixed__", False):
        tcp_server.TCPServer.protocol_send = _tolerate_shutdown_race(  # type: ignore[method-assign,assignment]
            tcp_server.TCPServer.protocol_send
        )


def hypercorn_config(
    bind: object,
    *,
    ssl_enabled: bool,
    certfile: object,
    keyfile: object,
    logger: str,
    graceful_timeout: float,
) -> Config:
    """A server's config: listen on *bind* (TLS with *certfile*/*keyfile* when
    *ssl_enabled*), errors to logger *logger*, no access log and no ``Server``
    header; hypercorn is prepared (module docstring) before it is returned."""
    prepare_hypercorn()
    config = Config()
    config.bind = [str(bind)]
    if ssl_enabled:
        config.certfile = str(certfile)
        config.keyfile = str(keyfile)
    config.accesslog = None
    config.errorlog = logging.getLogger(logger)
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    return config


def base_url(bound: list[str]) -> str:
    """The URL to reach a listener that hypercorn reports bound at *bound*.

    A wildcard address (``0.0.0.0``, ``[::]``) is answered as the loopback
    address of its family, which reaches it from this host.
    """
    url = bound[0]
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
