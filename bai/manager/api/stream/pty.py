"""``/stream/session/:id/pty``: a terminal on the session's main kernel over a WebSocket.

The protocol is the spec's (TEXT messages holding JSON):

* client -> server: ``{"type": "stdin", "chars": "<base64>"}``,
  ``{"type": "resize", "rows": R, "cols": C}``, ``{"type": "ping"}``,
  ``{"type": "restart"}``;
* server -> client: ``{"type": "out", "data": "<base64>"}`` (stdout and
  stderr merged, as on a real terminal), ``{"type": "error", "data": text}``.

Each WebSocket is its own shell in its own pseudo-terminal, served by the
kernel's intrinsic ``ttyd`` service (started on first use): the manager opens
a WebSocket to that service and relays the client's messages after checking
them.  Guarantees:

* a malformed message (not JSON, an unknown type, bad base64, rows or cols
  outside 1..:data:`MAX_TERMINAL_SIZE`) is answered with an ``error``
  message naming the field and changes nothing; the terminal stays open;
* a message over :data:`MAX_PTY_MESSAGE` bytes closes the socket with 1009;
* ``ping`` keeps the session busy and is not answered; ``restart`` restarts
  the session's kernels (files and usage kept) and reattaches the socket to
  a fresh shell;
* closing the socket ends its shell, never the session; the shell's exit
  (``exit``, Ctrl-D) closes the socket with 1000;
* messages are relayed one at a time both ways, so a slow client slows the
  shell's output instead of growing a buffer in the manager.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from typing import Any, Final

import msgspec
import trio
import trio_websocket
from quart import websocket

from bai.manager.api.helpers import current_ctx
from bai.manager.api.session.lookup import find_session, translated_errors
from bai.manager.api.stream.common import (
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    authenticate_websocket,
    close_code,
    send_json,
)
from bai.manager.sessions.services import ServiceAddress

__all__ = ["MAX_PTY_MESSAGE", "MAX_TERMINAL_SIZE", "TERMINAL_APP", "check_message", "pty"]

#: The intrinsic service that serves terminals in every kernel.
TERMINAL_APP: Final = "ttyd"
#: The largest client message, in bytes.
MAX_PTY_MESSAGE: Final = 1024 * 1024
#: The largest number of rows or columns a resize may ask for.
MAX_TERMINAL_SIZE: Final = 1000
_KERNEL_PATH: Final = "/pty"
_TYPES: Final = ("stdin", "resize", "ping", "restart")


class _Message(msgspec.Struct):
    type: str
    chars: Any = None
    rows: Any = None
    cols: Any = None


class PtyMessageError(ValueError):
    """A client message that breaks the protocol; the text names the field."""


def check_message(raw: str | bytes) -> str:
    """The type of the client message *raw*, once checked; PtyMessageError otherwise."""
    try:
        message = msgspec.json.decode(raw, type=_Message)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PtyMessageError(f"a message must be a JSON object with a 'type': {exc}") from None
    if message.type not in _TYPES:
        raise PtyMessageError(f"type: must be one of {', '.join(_TYPES)} (got {message.type!r})")
    if message.type == "stdin":
        if not isinstance(message.chars, str):
            raise PtyMessageError("chars: must be base64 text")
        try:
            base64.b64decode(message.chars, validate=True)
        except (binascii.Error, ValueError):
            raise PtyMessageError("chars: must be base64 text") from None
    elif message.type == "resize":
        for field, value in (("rows", message.rows), ("cols", message.cols)):
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 1 <= value <= MAX_TERMINAL_SIZE
            ):
                raise PtyMessageError(
                    f"{field}: must be an integer from 1 to {MAX_TERMINAL_SIZE} (got {value!r})"
                )
    return message.type


async def _error(text: str) -> None:
    await send_json({"type": "error", "data": text})


class _Terminal:
    """One client socket and the kernel terminal behind it (replaced on restart)."""

    def __init__(self, touch: Callable[[], None]) -> None:
        self.restarted = trio.Event()
        self.client_gone = False
        # Every message either way is a use of the session for the idle checker.
        self._touch = touch

    async def attach(self, address: ServiceAddress) -> None:
        """Relay between the client and a terminal at *address* until one side ends."""
        async with trio_websocket.open_websocket(
            address.host,
            address.port,
            _KERNEL_PATH,
            use_ssl=False,
            max_message_size=2 * MAX_PTY_MESSAGE,
            receive_buffer_size=65536,
            connect_timeout=10,
            disconnect_timeout=2,
        ) as kernel:
            self.restarted = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._downstream, kernel, nursery.cancel_scope)
                await self._upstream(kernel)
                nursery.cancel_scope.cancel()

    async def _downstream(
        self, kernel: trio_websocket.WebSocketConnection, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                message = await kernel.get_message()
                self._touch()
                await websocket.send(message)
        except trio_websocket.ConnectionClosed:
            pass
        # The shell ended (or the kernel went away for a restart): wait for
        # the restart's new terminal, or end the relay.
        if not self.restarted.is_set():
            scope.cancel()

    async def _upstream(self, kernel: trio_websocket.WebSocketConnection) -> None:
        while True:
            raw = await websocket.receive()
            self._touch()
            if len(raw) > MAX_PTY_MESSAGE:
                await websocket.close(CLOSE_TOO_BIG, "message too big")
                self.client_gone = True
                return
            try:
                kind = check_message(raw)
            except PtyMessageError as exc:
                await _error(str(exc))
                continue
            if kind == "ping":
                continue
            if kind == "restart":
                self.restarted.set()
                return
            try:
                await kernel.send_message(raw if isinstance(raw, str) else raw.decode())
            except trio_websocket.ConnectionClosed:
                return


async def pty(session_name: str) -> None:
    """``GET /stream/session/:id/pty`` (WebSocket): a terminal (module docs)."""
    auth = await authenticate_websocket()
    info = await find_session(session_name, auth)
    registry = current_ctx().registry
    with translated_errors():
        address = await registry.start_service(info, TERMINAL_APP)
    await websocket.accept()
    terminal = _Terminal(functools.partial(registry.activity.touch, info.id))
    try:
        while True:
            try:
                await terminal.attach(address)
            except (OSError, trio_websocket.HandshakeError) as exc:
                await _error(f"the kernel's terminal cannot be reached: {exc}")
            if terminal.client_gone or not terminal.restarted.is_set():
                break
            with translated_errors():
                info = await registry.restart_session(info)
                address = await registry.start_service(info, TERMINAL_APP)
    except Exception as exc:
        code, problem = close_code(exc)
        await _error(problem.detail or problem.title)
        await websocket.close(code, problem.title)
        return
    if not terminal.client_gone:
        await websocket.close(CLOSE_NORMAL)
