"""``/stream/session/:id/execute``: one run of the execute loop over a WebSocket.

This is what the official client's ``backend.ai run`` uses.  The protocol:

1. the client opens the WebSocket with a signed ``GET`` (the same keypair
   signature as every REST call; ``owner_access_key`` in the query string
   for admins acting for someone else) and sends one JSON text message
   ``{"mode": "query" | "batch", "code": "...", "options": {...}}``
   (``runId`` optional), within :data:`FIRST_MESSAGE_TIMEOUT` seconds;
2. the server drives the run (:meth:`~bai.manager.sessions.registry.SessionRegistry.execute`
   with ``continue`` calls in between) and sends each Execution Result Object
   (``{"runId", "status", "exitCode", "console", "options"}``) as a JSON text
   message as soon as it has output or a step ends, at most every
   :data:`STREAM_FLUSH_TIMEOUT` seconds while the code prints;
3. on ``waiting-input`` the client answers with a text message holding the
   input (within :data:`INPUT_TIMEOUT` seconds);
4. after ``finished`` (or ``exec-timeout``) the server closes the socket
   normally.

A request that fails authentication, names no session of the caller, or
declares an unsupported ``X-BackendAI-Version`` is refused before the upgrade
with the usual RFC 7807 answer.  A failure during the run (the session
stopped, malformed first message, no input in time) is sent as one message
``{"status": "error", "type", "title", "msg"}`` and the socket is closed with
code 1011 (server error) or 1008 (policy: bad client messages).  WebSocket
requests are not counted against the keypair's rate limit.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import msgspec
import trio
from quart import websocket

from bai.manager.api.helpers import InvalidParameter, current_ctx
from bai.manager.api.session.lookup import find_session, translated_errors
from bai.manager.api.session.schema import batch_options
from bai.manager.api.stream.common import (
    CLOSE_NORMAL,
    ClientMistake,
    authenticate_websocket,
    close_code,
    send_json,
)
from bai.manager.sessions.model import SessionInfo

__all__ = ["FIRST_MESSAGE_TIMEOUT", "INPUT_TIMEOUT", "STREAM_FLUSH_TIMEOUT", "execute"]

#: Seconds the client has to send the run's parameters after the upgrade.
FIRST_MESSAGE_TIMEOUT: Final = 30.0
#: Seconds the run waits for the user's input on ``waiting-input``.
INPUT_TIMEOUT: Final = 3600.0
#: Seconds of output gathered into one message while the code runs.
STREAM_FLUSH_TIMEOUT: Final = 0.5
_FINAL: Final = frozenset({"finished", "exec-timeout"})


class _StreamRequest(msgspec.Struct, kw_only=True):
    mode: str
    code: str | None = None
    options: dict[str, Any] | None = None
    run_id: str | None = msgspec.field(default=None, name="runId")


async def _receive_text(timeout: float, what: str) -> str:  # noqa: ASYNC109 - per-step deadline
    with trio.move_on_after(timeout):
        message = await websocket.receive()
        if isinstance(message, bytes):
            try:
                return message.decode()
            except UnicodeDecodeError:
                raise ClientMistake(f"{what} is not UTF-8 text", field=what) from None
        return message
    raise ClientMistake(f"no {what} within {timeout:g} seconds", field=what)


async def _run(info: SessionInfo) -> None:
    raw = await _receive_text(FIRST_MESSAGE_TIMEOUT, "execute request")
    try:
        params = msgspec.json.decode(raw, type=_StreamRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ClientMistake(
            f"the first message must be an execute request: {exc}", field="request"
        ) from None
    if params.mode not in ("query", "batch"):
        raise InvalidParameter("a streamed run starts in query or batch mode", field="mode")
    mode = params.mode
    code = params.code or ""
    options = batch_options(params.options) if mode == "batch" else None
    run_id = params.run_id or secrets.token_hex(8)
    registry = current_ctx().registry
    while True:
        with translated_errors():
            result = await registry.execute(
                info,
                mode=mode,
                code=code,
                run_id=run_id,
                options=options,
                flush_timeout=STREAM_FLUSH_TIMEOUT,
            )
        status = result.get("status")
        if status != "continued" or result.get("console"):
            await send_json(result)
        if status in _FINAL:
            return
        if status == "waiting-input":
            mode, code = "input", await _receive_text(INPUT_TIMEOUT, "input")
        else:
            mode, code = "continue", ""
        options = None


async def execute(session_name: str) -> None:
    """``GET /stream/session/:id/execute`` (WebSocket): one streamed run (module docs)."""
    auth = await authenticate_websocket()
    info = await find_session(session_name, auth)
    await websocket.accept()
    try:
        await _run(info)
    except Exception as exc:
        code, problem = close_code(exc)
        await send_json(
            {
                "status": "error",
                "type": problem.body()["type"],
                "title": problem.title,
                "msg": problem.detail,
            }
        )
        await websocket.close(code, problem.title)
        return
    await websocket.close(CLOSE_NORMAL)
