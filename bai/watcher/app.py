"""The watcher's HTTP API, as plain ASGI; the routes and answers of the original watcher.

* ``GET /``: ``{"agent-status": STATE, "watcher-status": "active"}``;
* ``POST /agent/start``, ``/agent/stop``, ``/agent/restart``:
  ``{"result": "ok"}`` once done.

Every request must carry ``X-BackendAI-Watcher-Token`` with the configured
token (compared in constant time): 403 otherwise, and nothing happens.  A
control that fails answers 503 ``{"message": …}`` (the official client prints
a ``message``); an unknown path 404, another method 405.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

import msgspec

from bai.common.asgi import Receive, Scope, Send, serve_lifespan
from bai.watcher.control import AgentControl, ControlError

__all__ = ["TOKEN_HEADER", "WatcherApp"]

#: The header managers put the watcher token in.
TOKEN_HEADER: Final = "X-BackendAI-Watcher-Token"
_TOKEN_KEY: Final = TOKEN_HEADER.lower().encode()


class WatcherApp:
    """The API over one :class:`~bai.watcher.control.AgentControl` (module docs)."""

    def __init__(self, control: AgentControl, token: str) -> None:
        self._control = control
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, body = await self._answer(scope)
        payload = msgspec.json.encode(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope) -> tuple[int, Any]:
        given = next((v for k, v in scope["headers"] if k == _TOKEN_KEY), b"")
        if not hmac.compare_digest(given, self._token):
            return 403, {"message": f"{TOKEN_HEADER} is missing or wrong"}
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        actions = {
            "/agent/start": self._control.start,
            "/agent/stop": self._control.stop,
            "/agent/restart": self._control.restart,
        }
        if path == "/":
            if method != "GET":
                return 405, {"message": "use GET"}
            return 200, {"agent-status": await self._control.status(), "watcher-status": "active"}
        action = actions.get(path)
        if action is None:
            return 404, {"message": f"no route {path}"}
        if method != "POST":
            return 405, {"message": "use POST"}
        try:
            await action()
        except ControlError as exc:
            return 503, {"message": str(exc)}
        return 200, {"result": "ok"}
