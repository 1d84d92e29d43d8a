"""The app proxy's API (plain ASGI on hypercorn): registrations from managers, adds from users.

The routes, their bodies and replies are the contract's
(:mod:`bai.common.appproxy_api`).  This module only parses and answers;
what a route does is :class:`ProxyControl`'s (the service implements it).

* The manager-only routes compare :data:`SECRET_HEADER
  <bai.common.appproxy_api.SECRET_HEADER>` with the secret in constant time;
  a request without it, or with another one, is answered 401 and changes
  nothing.
* A body over :data:`MAX_BODY` bytes is refused (413) before it is parsed;
  a body that is not the contract's JSON is a 400 naming the key.
* ``GET /v2/proxy/...`` answers ``Access-Control-Allow-Origin: *``: the
  web UI calls it from another origin, and the token in the path is the
  only credential.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Final, Protocol
from urllib.parse import parse_qs

import msgspec

from bai.appproxy.errors import PROBLEM_CONTENT_TYPE, problem_body
from bai.appproxy.routes import RouteError
from bai.common.appproxy_api import (
    ERROR_STATUS,
    SECRET_HEADER,
    AddReply,
    AppProxyErrorType,
    AppRegistration,
    RouteInfo,
)
from bai.common.asgi import Receive, Scope, Send, serve_lifespan
from bai.common.validation import InvalidField, bracketed, invalid_value

__all__ = ["MAX_BODY", "ApiApp", "ProxyControl"]


#: Largest request body the API reads.
MAX_BODY: Final = 64 * 1024

_T = AppProxyErrorType
_SECRET_HEADER_BYTES: Final = SECRET_HEADER.lower().encode("latin-1")


class ProxyControl(Protocol):
    """What the API asks of the proxy service."""

    @property
    def mode(self) -> str:
        """``port`` or ``wildcard``."""
        ...

    def register(self, registration: AppRegistration) -> str:
        """A registration token for *registration*."""
        ...

    async def add(self, token: str, session_id: uuid.UUID, app: str) -> AddReply:
        """Spend *token*: the route of *session_id*'s *app* and its browser URL."""
        ...

    async def drop_session(self, session_id: uuid.UUID) -> int:
        """Drop the routes of *session_id*; how many there were."""
        ...

    def routes(self) -> list[RouteInfo]:
        """Every route."""
        ...


class _Refusal(Exception):
    def __init__(
        self,
        kind: AppProxyErrorType,
        detail: str,
        *,
        field: str | None = None,
        status: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.field = field
        self.status = status or ERROR_STATUS[kind]
        self.headers = headers or []


class ApiApp:
    """The ASGI app of the API of *control*, guarded by *secret*."""

    def __init__(self, control: ProxyControl, secret: str) -> None:
        self.control = control
        self._secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body, headers = await self._dispatch(scope, receive)
            content_type = b"application/json"
        except _Refusal as refusal:
            status, headers = refusal.status, refusal.headers
            body = problem_body(refusal.kind, refusal.detail, field=refusal.field)
            content_type = PROBLEM_CONTENT_TYPE.encode()
        except RouteError as exc:
            status, headers = exc.status, []
            body = problem_body(exc.kind, exc.detail)
            content_type = PROBLEM_CONTENT_TYPE.encode()
        headers = [
            *headers,
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _check_secret(self, scope: Scope) -> None:
        for name, value in scope["headers"]:
            if name == _SECRET_HEADER_BYTES and hmac.compare_digest(value, self._secret):
                return
        raise _Refusal(_T.UNAUTHORIZED, f"this route needs the managers' secret in {SECRET_HEADER}")

    async def _read_body(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _Refusal(_T.INVALID_REQUEST, f"the body is over {MAX_BODY} bytes", status=413)
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    async def _dispatch(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method: str = scope["method"]
        parts = [part for part in scope["path"].split("/") if part]
        if parts == ["v2", "status"]:
            _allow(method, "GET")
            return 200, msgspec.json.encode({"status": "running", "mode": self.control.mode}), []
        if parts == ["v2", "conf"]:
            _allow(method, "POST")
            self._check_secret(scope)
            registration = _parse_registration(await self._read_body(receive))
            token = self.control.register(registration)
            return 200, msgspec.json.encode({"token": token}), []
        if len(parts) == 3 and parts[:2] == ["v2", "conf"]:
            _allow(method, "DELETE")
            self._check_secret(scope)
            dropped = await self.control.drop_session(_session_id(parts[2]))
            return 200, msgspec.json.encode({"dropped": dropped}), []
        if parts == ["v2", "routes"]:
            _allow(method, "GET")
            self._check_secret(scope)
            return 200, msgspec.json.encode({"routes": self.control.routes()}), []
        if len(parts) == 5 and parts[:2] == ["v2", "proxy"] and parts[4] == "add":
            _allow(method, "GET")
            cors = [(b"access-control-allow-origin", b"*")]
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            apps = query.get("app")
            if not apps or not apps[0]:
                raise _Refusal(
                    _T.INVALID_REQUEST, "the app to open is required (?app=NAME)", field="app"
                )
            try:
                reply = await self.control.add(parts[2], _session_id(parts[3]), apps[0])
            except (_Refusal, RouteError) as exc:
                if isinstance(exc, _Refusal):
                    exc.headers += cors
                    raise
                raise _Refusal(exc.kind, exc.detail, headers=cors) from None
            return 200, msgspec.json.encode(reply), cors
        raise _Refusal(_T.NOT_FOUND, f"no route for {scope['path']!r}")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Refusal(
            _T.METHOD_NOT_ALLOWED,
            f"{method} is not allowed here (allowed: {allowed})",
            headers=[(b"allow", allowed.encode())],
        )


def _session_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise _Refusal(
            _T.INVALID_REQUEST, f"not a session id: {text[:80]!r}", field="session_id"
        ) from None


class _InvalidBody(InvalidField):
    pass


def _parse_registration(body: bytes) -> AppRegistration:
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise _Refusal(_T.INVALID_REQUEST, "the body is not JSON") from None
    try:
        return msgspec.convert(document, AppRegistration)
    except msgspec.ValidationError as exc:
        error = invalid_value(
            exc, document, where="the body", error=_InvalidBody, notation=bracketed
        )
        raise _Refusal(_T.INVALID_REQUEST, str(error), field=error.field) from None
