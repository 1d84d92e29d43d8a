"""A stand-in manager for the client's tests, and the tests of request signing.

The real manager's REST API is written in parallel with the client, so the
client's unit tests talk to :class:`FakeManager`: a real HTTP server
(quart-trio on hypercorn, bound to a free loopback port) that checks every
request's signature with :func:`bai.common.auth.verify_request` exactly as the
manager does, records what arrived, and answers with canned spec-shaped
responses registered per route by each test.  WebSocket routes are served the
same way (:meth:`FakeManager.add_websocket`): the handshake's signature is
checked, and the test's handler runs in Quart's ``websocket`` context.

The client and CLI unit tests import it (``from support.fakemanager import
FakeManager, manager``); it holds no tests itself.  The tests of request
signing against it are in ``tests/unit/client/test_client_fakemanager.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from bai.client import APIConfig
from bai.common.auth import AuthError, verify_request

from support.net import serve_app

ACCESS_KEY = "AKIATESTTESTTESTTEST"
SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnopqr"


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str  # decoded path, without the query
    raw_target: str  # the request target exactly as sent (what the signature covers)
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    form_files: list[tuple[str, str, bytes]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Recorded], Awaitable[Response]]
#: Runs a WebSocket route (accept, talk, close through ``quart.websocket``);
#: a returned Response refuses the handshake with it.
WebSocketHandler = Callable[[Recorded], Awaitable[Response | None]]


def problem(status: int, error_type: str, title: str, detail: str | None = None) -> Response:
    """An RFC 7807 answer, as the manager sends them."""
    body: dict[str, Any] = {
        "type": f"https://api.backend.ai/probs/{error_type}",
        "title": title,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    return Response(json.dumps(body), status=status, content_type="application/problem+json")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def result(status: str, console: list[Any], run_id: str = "r1", **extra: Any) -> dict[str, Any]:
    """An answer of the execute API."""
    return {"result": {"runId": run_id, "status": status, "console": console, **extra}}


class FakeManager:
    """A signature-checking HTTP server with per-route canned answers."""

    def __init__(self, *, secret_key: str = SECRET_KEY) -> None:
        self.secret_key = secret_key
        self.requests: list[Recorded] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self.websocket_routes: dict[str, WebSocketHandler] = {}
        self.url = ""
        self.app = QuartTrio(__name__)
        self.app.add_url_rule(
            "/",
            "root",
            self._dispatch,
            defaults={"path": ""},
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        )
        self.app.add_url_rule(
            "/<path:path>",
            "any",
            self._dispatch,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        )
        self.app.add_websocket("/<path:path>", "any_websocket", self._dispatch_websocket)
        self.add("GET", "/", self._hello)

    async def _hello(self, recorded: Recorded) -> Response:
        return json_response({"version": "v6.20220615", "manager": "fake"})

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` (decoded path, no query) with *handler*."""
        self.routes[(method, path)] = handler

    def add_websocket(self, path: str, handler: WebSocketHandler) -> None:
        """Serve WebSocket handshakes for *path* (decoded, no query) with *handler*."""
        self.websocket_routes[path] = handler

    def answer(self, method: str, path: str, data: Any, status: int = 200) -> None:
        """Answer ``method path`` with a fixed JSON body."""

        async def handler(recorded: Recorded) -> Response:
            return json_response(data, status)

        self.add(method, path, handler)

    def answer_each(self, method: str, path: str, answers: list[Any]) -> None:
        """Answer ``method path`` with the JSON bodies *answers*, one per request, in order."""
        queue = list(answers)

        async def handler(recorded: Recorded) -> Response:
            return json_response(queue.pop(0))

        self.add(method, path, handler)

    def config(self, **overrides: Any) -> APIConfig:
        """A client config pointing at this server with the test keypair."""
        values: dict[str, Any] = {
            "endpoint": self.url,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        }
        values.update(overrides)
        return APIConfig(**values)

    def env(self) -> dict[str, str]:
        """``BACKEND_*`` variables pointing at this server (for CLI runs)."""
        return {
            "BACKEND_ENDPOINT": self.url,
            "BACKEND_ACCESS_KEY": ACCESS_KEY,
            "BACKEND_SECRET_KEY": SECRET_KEY,
        }

    def bodies(self, method: str, path: str) -> list[Any]:
        """The JSON bodies (``None`` for an empty one) of the ``method path`` requests, in order."""
        return [
            r.json() if r.body else None
            for r in self.requests
            if (r.method, r.path) == (method, path)
        ]

    def last(self, method: str | None = None) -> Recorded:
        found = [r for r in self.requests if method is None or r.method == method]
        assert found, f"no {method or ''} request arrived"
        return found[-1]

    async def _dispatch(self, path: str) -> Response:
        raw_path = request.scope["raw_path"].decode("ascii")
        query_string = request.scope["query_string"].decode("ascii")
        target = f"{raw_path}?{query_string}" if query_string else raw_path
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        recorded = Recorded(
            method=request.method,
            path=unquote(raw_path),
            raw_target=target,
            query=parse_qs(query_string, keep_blank_values=True),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        if recorded.headers.get("content-type", "").startswith("multipart/form-data"):
            files = await request.files
            for name, storage in files.items(multi=True):
                recorded.form_files.append((name, storage.filename or "", storage.read()))
        self.requests.append(recorded)
        public = (request.method, recorded.path) == ("GET", "/")
        if not public:
            try:
                verify_request(
                    method=request.method,
                    path=target,
                    headers=request.headers,
                    secret_key=self.secret_key,
                )
            except AuthError as exc:
                return problem(401, "auth-failed", "Authentication failed", str(exc))
        handler = self.routes.get((request.method, recorded.path))
        if handler is None:
            return problem(404, "not-found", "Unknown route", f"{request.method} {recorded.path}")
        return await handler(recorded)

    async def _dispatch_websocket(self, path: str) -> Response | None:
        raw_path = websocket.scope["raw_path"].decode("ascii")
        query_string = websocket.scope["query_string"].decode("ascii")
        target = f"{raw_path}?{query_string}" if query_string else raw_path
        recorded = Recorded(
            method="GET",
            path=unquote(raw_path),
            raw_target=target,
            query=parse_qs(query_string, keep_blank_values=True),
            headers={k.lower(): v for k, v in websocket.headers.items()},
            body=b"",
        )
        self.requests.append(recorded)
        try:
            verify_request(
                method="GET", path=target, headers=websocket.headers, secret_key=self.secret_key
            )
        except AuthError as exc:
            return problem(401, "auth-failed", "Authentication failed", str(exc))
        handler = self.websocket_routes.get(recorded.path)
        if handler is None:
            return problem(404, "not-found", "Unknown route", f"WebSocket {recorded.path}")
        return await handler(recorded)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(serve_app, self.app)
            task_status.started(self.url)


def sse_response(events: list[tuple[str, Any]], *, hold_open: bool = False) -> Response:
    """A ``text/event-stream`` answer sending *events* (name, JSON data)."""

    async def body() -> AsyncIterator[bytes]:
        for name, data in events:
            yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        if hold_open:
            await trio.sleep_forever()

    response = Response(body(), content_type="text/event-stream")
    response.timeout = None
    return response


@pytest.fixture
async def manager(nursery: trio.Nursery) -> FakeManager:
    fake = FakeManager()
    await nursery.start(fake.serve)
    return fake
