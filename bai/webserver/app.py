"""The console server's routes (plain ASGI): login sessions and the relay to the manager API.

The routes, cookie and answers are the original console server's (Backend.AI
23.09 ``ai.backend.web``), which the official client in session mode
(``BACKEND_ENDPOINT_TYPE=session``) and the Web UI speak:

* ``POST /server/login`` ``{"username", "password", ...}``: the manager's
  ``POST /auth/authorize`` (``type: "keypair"``, the configured domain, any
  extra keys passed on) trades them for the user's keypair, which the new
  session keeps.  It answers ``{"authenticated": true, "data": {"access_key",
  "role", "status"}}`` with the cookie ``AIOHTTP_SESSION=<id>`` (``HttpOnly``,
  ``Path=/``, ``Max-Age`` = ``[session] max-age``) and the header
  ``X-BackendAI-SessionID: <id>``; the secret key never leaves the server.
  Refused credentials answer 200 ``{"authenticated": false, "data": {"type",
  "title", "details"}}`` and count as a failure of that user name:
  ``login-allowed-fail-count`` failures in a row, each within
  ``login-block-time`` of the one before, make the next attempts 429 until that
  time has passed.  A session that is already logged in gets 400.
* ``POST /server/login-check``: ``{"authenticated", "data", "session_id"}``.
* ``POST /server/logout``: the session is forgotten and the cookie cleared (200).
* ``POST /server/update-password-no-auth``: the manager's
  ``/auth/update-password-no-auth`` for an expired password, with the domain.
* ``/func/{path}`` (every method): relayed to ``<api endpoint>/{path}``,
  signed with the session's keypair; the client's ``Authorization`` and
  cookies are not passed on.  Bodies stream both ways (an upload or a
  download is never held whole), so Server-Sent Events pass as they come.
  ``GET /func/stream/...`` WebSockets are relayed message by message.
  ``GET /func/`` (the version probe), ``/func/auth/signup`` (the domain is
  set) and the tus upload routes (their token is the credential) go
  unsigned; ``GET /func/ping`` answers here.

Not served (yet): the Web UI's static files and ``/config.toml``, ``/server/token-login``,
``/pipeline/`` (404 naming it), login bodies encrypted with ``X-BackendAI-Encoded`` (400
naming it) and CORS.

A session is found by the ``X-BackendAI-SessionID`` header or else the
cookie.  An id this server did not issue, one that expired or was logged out,
or no id at all, is a 401 ``auth-failed`` whose detail says which, and
changes nothing; so is an id of the wrong shape, never looked up.  Ids are
128 random bits.  Upstream failures are 502 and a store failure 503, both
RFC 7807 bodies.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from email.utils import formatdate
from typing import Any, Final

import httpx
import trio
import trio_websocket

from bai import __version__
from bai.common.asgi import Receive, Scope, Send, serve_lifespan
from bai.common.auth import sign_request
from bai.common.config import WebserverConfig
from bai.webserver.store import LoginHistory, SessionStore, StoreUnavailable

__all__ = ["COOKIE_NAME", "DEFAULT_API_VERSION", "SESSION_HEADER", "WebserverApp"]

log = logging.getLogger(__name__)

#: The session cookie's name (the original's).
COOKIE_NAME: Final = "AIOHTTP_SESSION"
#: The request header that may name the session instead of the cookie.
SESSION_HEADER: Final = "X-BackendAI-SessionID"
#: The API version relayed requests declare when the client declared none.
DEFAULT_API_VERSION: Final = "v6.20220615"
#: Largest body of the routes answered here (login and the like).
MAX_FORM_BODY: Final = 64 * 1024
_PROBLEM_BASE: Final = "https://api.backend.ai/probs/"
_SESSION_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
#: Paths under ``/func/`` relayed without a signature (the original's anonymous routes).
_ANONYMOUS_PREFIXES: Final = (
    "folders/_/tus/upload/",
    "cloud/",
    "custom-auth/",
    "openid/",
    "saml/",
)
#: Request headers passed on upstream besides the body's own.
_FORWARDED_HEADERS: Final = frozenset({b"accept", b"accept-language"})
#: Response headers not passed back: hop-by-hop ones, and those the server writes itself.
_DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"date",
        b"server",
    }
)

Headers = list[tuple[bytes, bytes]]


class _Answer(Exception):
    """A complete answer raised from anywhere below a route."""

    def __init__(self, status: int, body: dict[str, Any], headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


def _problem(status: int, kind: str, title: str, detail: str | None = None) -> _Answer:
    body: dict[str, Any] = {"type": _PROBLEM_BASE + kind, "title": title}
    if detail is not None:
        body["detail"] = detail
    return _Answer(status, body, [(b"content-type", b"application/problem+json")])


def _unauthorized(detail: str) -> _Answer:
    return _problem(401, "auth-failed", "Unauthorized access", detail)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            found, sep, text = part.strip().partition("=")
            if sep and found == name:
                return text.strip().strip('"')
    return None


async def _send_json(send: Send, answer: _Answer) -> None:
    body = json.dumps(answer.body).encode()
    headers = answer.headers
    if not any(name == b"content-type" for name, _ in headers):
        headers = [*headers, (b"content-type", b"application/json")]
    headers = [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_small_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BODY:
            raise _problem(
                413, "request-too-large", "Request body too large", f"over {MAX_FORM_BODY} bytes"
            )
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        raise _problem(
            400, "invalid-api-params", "Missing or invalid API parameters.", "the body is not JSON"
        ) from None
    if not isinstance(document, dict):
        raise _problem(
            400,
            "invalid-api-params",
            "Missing or invalid API parameters.",
            "the body must be a JSON object",
        )
    return document


def _required_text(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise _problem(400, "invalid-api-params", f"You must provide the {field} field.", field)
    return value


class WebserverApp:
    """The ASGI app of one console server; see the module docstring.

    *client* is the HTTP client to the manager API at ``[api] endpoint``;
    *store* keeps the sessions.
    """

    def __init__(self, config: WebserverConfig, store: SessionStore, client: httpx.AsyncClient):
        self.config = config
        self.store = store
        self.client = client
        self.endpoint = httpx.URL(config.api.endpoint.rstrip("/"))
        self._max_age = float(config.session.max_age)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except _Answer as answer:
                await _send_json(send, answer)
            except StoreUnavailable as exc:
                log.warning("webserver: session store unavailable: %s", exc)
                await _send_json(
                    send,
                    _problem(503, "service-unavailable", "Session store unavailable", str(exc)),
                )

    # ------------------------------------------------------------ routing

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if path.startswith("/server/"):
            handler = {
                "/server/login": self._login,
                "/server/login-check": self._login_check,
                "/server/logout": self._logout,
                "/server/update-password-no-auth": self._update_password_no_auth,
            }.get(path)
            if handler is None:
                raise _problem(404, "generic-not-found", "Not Found", f"no route {path}")
            if method != "POST":
                raise _Answer(
                    405,
                    {
                        "type": _PROBLEM_BASE + "method-not-allowed",
                        "title": "Method Not Allowed",
                        "detail": f"{method} is not allowed here (allowed: POST)",
                    },
                    [(b"content-type", b"application/problem+json"), (b"allow", b"POST")],
                )
            await handler(scope, receive, send)
            return
        if path.startswith("/func/"):
            relpath = path[len("/func/") :]
            if relpath == "ping" and method == "GET":
                raise _Answer(200, {"version": __version__, "details": "Success"})
            if (relpath == "" and method == "GET") or relpath.startswith(_ANONYMOUS_PREFIXES):
                await self._relay(scope, receive, send, keypair=None)
            elif relpath == "auth/signup" and method == "POST":
                await self._signup(scope, receive, send)
            else:
                token = await self._authenticated_token(scope)
                await self._relay(scope, receive, send, keypair=token)
            return
        if path.startswith("/pipeline/"):
            raise _problem(
                404, "generic-not-found", "Not Found", "no pipeline service is configured"
            )
        raise _problem(404, "generic-not-found", "Not Found", f"no route {path}")

    # ------------------------------------------------------------ sessions

    def _requested_session_id(self, scope: Scope) -> str | None:
        return _header(scope, SESSION_HEADER.lower().encode()) or _cookie(scope, COOKIE_NAME)

    async def _live_session(self, session_id: str | None) -> dict[str, Any] | None:
        """The stored session named *session_id* if it is live, else ``None``."""
        if session_id is None or not _SESSION_ID_RE.fullmatch(session_id):
            return None
        data = await self.store.load(session_id)
        if data is None:
            return None
        created = data.get("created")
        session = data.get("session")
        if not isinstance(created, int | float) or not isinstance(session, dict):
            return None
        if time.time() - created > self._max_age:
            return None
        return session

    async def _authenticated_token(self, scope: Scope) -> dict[str, Any]:
        """The keypair of the request's logged-in session; a precise 401 otherwise."""
        session_id = self._requested_session_id(scope)
        if session_id is None:
            raise _unauthorized("no session: log in first (POST /server/login)")
        session = await self._live_session(session_id)
        if session is None:
            raise _unauthorized("the session is unknown, expired or logged out: log in again")
        token = session.get("token")
        if not session.get("authenticated") or not isinstance(token, dict):
            raise _unauthorized("the session is not logged in: log in again")
        if token.get("type") != "keypair":
            raise _problem(400, "invalid-auth-params", "Incompatible auth token type.")
        return token

    def _cookie_header(self, session_id: str, max_age: int) -> tuple[bytes, bytes]:
        expires = formatdate(time.time() + max_age, usegmt=True)
        parts = [
            f"{COOKIE_NAME}={session_id}",
            f"expires={expires}",
            "HttpOnly",
            f"Max-Age={max_age}",
            "Path=/",
        ]
        if self.config.session.cookie_secure:
            parts.append("Secure")
        return b"set-cookie", "; ".join(parts).encode("latin-1")

    # ------------------------------------------------------------ /server routes

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._live_authenticated(scope):
            raise _problem(400, "generic-bad-request", "You have already logged in.")
        if (_header(scope, b"x-backendai-encoded") or "").lower() in ("1", "true", "yes"):
            raise _problem(
                400,
                "invalid-api-params",
                "Missing or invalid API parameters.",
                "encrypted login bodies (X-BackendAI-Encoded) are not supported: send plain JSON",
            )
        creds = _json_object(await _read_small_body(receive))
        username = _required_text(creds, "username")
        password = _required_text(creds, "password")
        session_config = self.config.session
        block_time = float(session_config.login_block_time)
        now = time.time()
        history = await self.store.history(username)
        fail_count = history.login_fail_count
        if now - history.last_login_attempt > block_time:
            fail_count = 0
        if fail_count >= session_config.login_allowed_fail_count:
            log.info("login of %r refused: %d failures in a row", username, fail_count)
            await self.store.set_history(username, LoginHistory(now, fail_count), block_time)
            raise _problem(
                429,
                "too-many-requests",
                "Too many failed login attempts",
                f"try again in {block_time:g} s",
            )
        extra = {k: v for k, v in creds.items() if k not in ("username", "password")}
        body = {
            **extra,
            "type": "keypair",
            "domain": self.config.api.domain,
            "username": username,
            "password": password,
        }
        status, reply = await self._anonymous_json(scope, "/auth/authorize", body)
        data = reply.get("data") if isinstance(reply, dict) else None
        if status // 100 != 2 or not isinstance(data, dict):
            log.info("login of %r failed (%d)", username, status)
            await self.store.set_history(username, LoginHistory(now, fail_count + 1), block_time)
            raise _Answer(200, {"authenticated": False, "data": _failure_of(reply)})
        token = {
            "type": "keypair",
            "access_key": data["access_key"],
            "secret_key": data["secret_key"],
            "role": data.get("role"),
            "status": data.get("status"),
        }
        session_id = secrets.token_hex(16)
        max_age = max(1, round(self._max_age))
        await self.store.save(
            session_id,
            {"created": int(now), "session": {"authenticated": True, "token": token}},
            self._max_age,
        )
        await self.store.set_history(username, LoginHistory(now, 0), block_time)
        log.info("login of %r succeeded", username)
        public = {k: token[k] for k in ("access_key", "role", "status")}
        raise _Answer(
            200,
            {"authenticated": True, "data": public},
            [
                self._cookie_header(session_id, max_age),
                (SESSION_HEADER.encode(), session_id.encode()),
            ],
        )

    async def _live_authenticated(self, scope: Scope) -> dict[str, Any] | None:
        session = await self._live_session(self._requested_session_id(scope))
        if session is None or not session.get("authenticated"):
            return None
        return session

    async def _login_check(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = self._requested_session_id(scope)
        session = await self._live_authenticated(scope)
        token = session.get("token") if session is not None else None
        if not isinstance(token, dict):
            raise _Answer(200, {"authenticated": False, "data": None, "session_id": None})
        public = {k: token.get(k) for k in ("access_key", "role", "status")}
        raise _Answer(200, {"authenticated": True, "data": public, "session_id": session_id})

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = self._requested_session_id(scope)
        if session_id is not None and _SESSION_ID_RE.fullmatch(session_id):
            await self.store.delete(session_id)
        cleared = (
            b"set-cookie",
            f'{COOKIE_NAME}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/'.encode(),
        )
        raise _Answer(200, {}, [cleared])

    async def _update_password_no_auth(self, scope: Scope, receive: Receive, send: Send) -> None:
        creds = _json_object(await _read_small_body(receive))
        for field in ("username", "current_password", "new_password"):
            _required_text(creds, field)
        body = {
            "domain": self.config.api.domain,
            "username": creds["username"],
            "current_password": creds["current_password"],
            "new_password": creds["new_password"],
        }
        status, reply = await self._anonymous_json(scope, "/auth/update-password-no-auth", body)
        if status // 100 == 2 and isinstance(reply, dict):
            raise _Answer(200, reply)
        raise _Answer(200, {"data": _failure_of(reply), "password_changed_at": None})

    async def _signup(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = _json_object(await _read_small_body(receive))
        body["domain"] = self.config.api.domain
        content = json.dumps(body).encode()

        async def replay() -> AsyncIterator[bytes]:
            await trio.lowlevel.checkpoint()
            yield content

        headers = [(b"content-type", b"application/json")]
        await self._relay(scope, receive, send, keypair=None, body=(replay(), headers))

    # ------------------------------------------------------------ upstream

    def _forwarding_headers(self, scope: Scope) -> dict[str, str]:
        client = scope.get("client")
        peer = _header(scope, b"x-forwarded-for") or (client[0] if client else None)
        headers = {
            "X-Forwarded-Host": _header(scope, b"x-forwarded-host")
            or _header(scope, b"host")
            or "",
            "X-Forwarded-Proto": _header(scope, b"x-forwarded-proto")
            or scope.get("scheme", "http"),
        }
        if peer:
            headers["X-Forwarded-For"] = peer
        return headers

    async def _anonymous_json(
        self, scope: Scope, path: str, body: dict[str, Any]
    ) -> tuple[int, Any]:
        """POST *body* to the API's *path* unsigned: (status, decoded JSON or ``None``)."""
        headers = {
            **self._forwarding_headers(scope),
            "Content-Type": "application/json",
            "X-BackendAI-Version": _header(scope, b"x-backendai-version") or DEFAULT_API_VERSION,
        }
        try:
            response = await self.client.post(
                self.endpoint.join(path), headers=headers, content=json.dumps(body).encode()
            )
        except httpx.HTTPError as exc:
            raise _bad_gateway(exc) from None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    def _signed_headers(
        self, method: str, target: str, content_type: str, api_version: str, token: dict[str, Any]
    ) -> dict[str, str]:
        return sign_request(
            method=method,
            path=target,
            host=self.endpoint.netloc.decode("ascii"),
            api_version=api_version,
            access_key=token["access_key"],
            secret_key=token["secret_key"],
            content_type=content_type,
        )

    def _target(self, scope: Scope, prefix: bytes) -> str:
        """The upstream request target: the raw path after *prefix*, with the query."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = "/" + raw_path[len(prefix) :].decode("latin-1")
        query: bytes = scope.get("query_string", b"")
        return target + ("?" + query.decode("latin-1") if query else "")

    async def _relay(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        keypair: dict[str, Any] | None,
        body: tuple[AsyncIterator[bytes], Headers] | None = None,
    ) -> None:
        """Relay the request to the API (signed with *keypair* unless ``None``) and
        stream the answer back; *body* replaces the request's body and body headers."""
        method: str = scope["method"]
        target = self._target(scope, b"/func")
        api_version = _header(scope, b"x-backendai-version") or DEFAULT_API_VERSION
        headers = self._forwarding_headers(scope)
        headers["X-BackendAI-Version"] = api_version
        body_headers: Iterable[tuple[bytes, bytes]]
        if body is None:
            content: AsyncIterator[bytes] | None = (
                _request_body(receive) if _has_body(scope) else None
            )
            body_headers = [
                (k, v) for k, v in scope["headers"] if k in (b"content-type", b"content-length")
            ]
        else:
            content, body_headers = body
        for name, value in [
            *body_headers,
            *((k, v) for k, v in scope["headers"] if k in _FORWARDED_HEADERS),
        ]:
            headers[name.decode("latin-1").title()] = bytes(value).decode("latin-1")
        content_type = headers.get("Content-Type") or "application/json"
        if keypair is not None:
            headers.update(self._signed_headers(method, target, content_type, api_version, keypair))
        url = self.endpoint.copy_with(raw_path=target.encode("latin-1"))
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            response = await self.client.send(request, stream=True)
        except _ClientGone:
            return
        except httpx.HTTPError as exc:
            raise _bad_gateway(exc) from None
        try:
            out = [
                (name.lower(), value)
                for name, value in response.headers.raw
                if name.lower() not in _DROPPED_RESPONSE_HEADERS
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                # The status line is out: all that is left is to end the answer early.
                log.warning(
                    "webserver: the API's answer to %s %s broke off: %r", method, target, exc
                )
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    # ------------------------------------------------------------ WebSockets

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            if not path.startswith("/func/stream/"):
                raise _problem(404, "generic-not-found", "Not Found", f"no WebSocket at {path}")
            token = await self._authenticated_token(scope)
            await self._relay_websocket(scope, receive, send, token)
        except _Answer as answer:
            await _deny(scope, send, answer)
        except StoreUnavailable as exc:
            await _deny(
                scope,
                send,
                _problem(503, "service-unavailable", "Session store unavailable", str(exc)),
            )

    async def _relay_websocket(
        self, scope: Scope, receive: Receive, send: Send, token: dict[str, Any]
    ) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        target = self._target(scope, b"/func")
        api_version = _header(scope, b"x-backendai-version") or DEFAULT_API_VERSION
        headers = self._forwarding_headers(scope)
        headers["X-BackendAI-Version"] = api_version
        headers.update(self._signed_headers("GET", target, "application/json", api_version, token))
        extra = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
        host = self.endpoint.host
        port = self.endpoint.port or (443 if self.endpoint.scheme == "https" else 80)
        use_ssl = self.endpoint.scheme == "https"
        try:
            async with trio_websocket.open_websocket(
                host, port, target, use_ssl=use_ssl, extra_headers=extra
            ) as upstream:
                await send({"type": "websocket.accept"})
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump_down, upstream, send, nursery.cancel_scope)
                    await _pump_up(receive, upstream)
                    nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionRejected as exc:
            body = exc.body or b""
            try:
                problem = json.loads(body) if body else {}
            except ValueError:
                problem = {}
            if not isinstance(problem, dict):
                problem = {}
            await _deny(scope, send, _Answer(exc.status_code or 502, problem))
        except (OSError, trio_websocket.HandshakeError) as exc:
            await _deny(scope, send, _bad_gateway(exc))


async def _pump_up(receive: Receive, upstream: trio_websocket.WebSocketConnection) -> None:
    """Client → API until the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await upstream.aclose()
            return
        if message["type"] != "websocket.receive":
            continue
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        try:
            await upstream.send_message(data or b"")
        except trio_websocket.ConnectionClosed:
            return


async def _pump_down(
    upstream: trio_websocket.WebSocketConnection, send: Send, scope: trio.CancelScope
) -> None:
    """API → client until the API closes; then the client's side closes with its code."""
    try:
        while True:
            data = await upstream.get_message()
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})
    except trio_websocket.ConnectionClosed as exc:
        reason = exc.reason
        code = reason.code if reason is not None else 1000
        text = (reason.reason if reason is not None else None) or ""
        await send({"type": "websocket.close", "code": code, "reason": text})
    finally:
        scope.cancel()


async def _deny(scope: Scope, send: Send, answer: _Answer) -> None:
    """Refuse a WebSocket handshake with *answer* as an HTTP response where the server
    can send one, else with a bare close."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps(answer.body).encode()
    headers = answer.headers or [(b"content-type", b"application/problem+json")]
    await send(
        {
            "type": "websocket.http.response.start",
            "status": answer.status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


class _ClientGone(Exception):
    """The client hung up while its request body was being relayed."""


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _bad_gateway(exc: BaseException) -> _Answer:
    log.warning("webserver: the API is unreachable: %r", exc)
    return _problem(
        502, "bad-gateway", "The proxy target server is inaccessible.", type(exc).__name__
    )


def _failure_of(reply: Any) -> dict[str, Any]:
    """The original's ``data`` of a refused login: the API's problem in three keys."""
    problem = reply if isinstance(reply, dict) else {}
    return {
        "type": problem.get("type"),
        "title": problem.get("title"),
        "details": problem.get("msg") or problem.get("detail") or problem.get("title"),
    }
