"""The HTTP layer: one signed request to the manager's REST API.

:class:`APIClient` owns an ``httpx.AsyncClient`` (Trio-native through anyio)
and turns calls like ``await api.fetch_json("GET", "/session/x")`` into
requests signed with :func:`bai.common.auth.sign_request`.  The signature
covers the exact ``Host`` header and the exact request target (path, with
its percent-encoding and query string) that httpx puts on the wire, because
the request is built first and signed from what was built.

Guarantees:

* every answer with status >= 400 raises a typed
  :class:`~bai.client.exceptions.BackendAPIError` built from its RFC 7807
  body; transport failures (refused connection, timeout, broken stream)
  raise :class:`~bai.client.exceptions.BackendClientError` naming the endpoint;
* requests that need a keypair are refused locally, before anything is sent,
  when the config has none (``anonymous=True`` requests are sent unsigned);
* streamed responses (:meth:`APIClient.stream`, :meth:`APIClient.events`)
  are closed when their ``async with`` block exits, also on cancellation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx

from bai import __version__
from bai.client.exceptions import BackendClientError, MalformedResponse, error_from_response
from bai.client.settings import APIConfig
from bai.client.sse import SSEEvent, SSEParser
from bai.common.auth import sign_request

__all__ = ["APIClient", "APIResponse", "QueryParams"]

#: Value types accepted for query parameters (lists repeat the key).
QueryValue = str | int | float | bool | None
QueryParams = Mapping[str, QueryValue | Sequence[str]]

_JSON: Final = "application/json"
_MISSING_CREDENTIALS: Final = (
    "no keypair configured: set BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY "
    "(after `bai up`, `source DATA_DIR/client.env` sets them)"
)


@dataclass(frozen=True, slots=True)
class APIResponse:
    """A complete (buffered) successful response."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON; :class:`MalformedResponse` if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise MalformedResponse(
                "is not JSON", value=self.body[:200], field="response body"
            ) from None


def _encode_params(params: QueryParams | None) -> list[tuple[str, QueryValue]]:
    pairs: list[tuple[str, QueryValue]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, str | int | float):
            pairs.append((key, str(value)))
        else:
            pairs.extend((key, str(item)) for item in value)
    return pairs


class APIClient:
    """An async connection to one manager, signing every request with one keypair.

    Use as ``async with APIClient(config) as api: ...``; the underlying
    connection pool lives as long as the block.  *transport* replaces the
    network transport (an ``httpx.AsyncBaseTransport``), e.g. to talk over a
    unix socket.
    """

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = APIConfig.from_env() if config is None else config
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def _timeout(self, *, endless: bool = False) -> httpx.Timeout:
        config = self.config
        return httpx.Timeout(
            connect=config.connection_timeout,
            read=None if endless else config.read_timeout,
            write=config.read_timeout,
            pool=config.connection_timeout,
        )

    async def __aenter__(self) -> APIClient:
        config = self.config
        self._http = httpx.AsyncClient(
            base_url=config.endpoint,
            timeout=self._timeout(),
            verify=not config.skip_sslcert_validation,
            headers={"User-Agent": config.user_agent or f"bai-client/{__version__}"},
            transport=self._transport,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise BackendClientError("APIClient used outside its `async with` block")
        return self._http

    def build_request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json_body: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        content_type: str | None = None,
        content_length: int | None = None,
        anonymous: bool = False,
        endless: bool = False,
        host: str | None = None,
    ) -> httpx.Request:
        """Build the signed request (nothing is sent).

        ``json_body`` (any JSON value; ``None`` sends no body) and ``content``
        (raw bytes or an async byte stream with its ``content_type``) are
        exclusive.  An *endless* request (an event stream) waits for data
        without a read timeout.  *host* replaces the ``Host`` header httpx
        derives from the endpoint (and is what gets signed): for a library
        that writes its own, such as the WebSocket client.  Raises
        :class:`BackendClientError` when the request needs a keypair and the
        config has none.
        """
        if not anonymous and not self.config.has_credentials:
            raise BackendClientError(_MISSING_CREDENTIALS)
        headers: dict[str, str] = {}
        if json_body is not None:
            if content is not None:
                raise BackendClientError("a request has either a JSON body or raw content")
            content = json.dumps(json_body, ensure_ascii=False).encode()
            content_type = _JSON
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        if host is not None:
            headers["Host"] = host
        request = self.http.build_request(
            method,
            path,
            params=_encode_params(params),
            content=content,
            headers=headers,
            timeout=self._timeout(endless=endless),
        )
        # Every request names a content type: the signature covers it, and an
        # absent header would be signed as application/octet-stream.
        request.headers["Content-Type"] = content_type or _JSON
        if not anonymous:
            signed = sign_request(
                method=method,
                path=request.url.raw_path.decode("ascii"),
                host=request.headers["Host"],
                api_version=self.config.api_version,
                access_key=self.config.access_key,
                secret_key=self.config.secret_key,
                content_type=request.headers["Content-Type"],
                hash_name=self.config.hash_type,
            )
            request.headers.update(signed)
        else:
            request.headers["X-BackendAI-Version"] = self.config.api_version
        return request

    async def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            response = await self.http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise BackendClientError(
                f"timed out talking to {self.config.endpoint} ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise BackendClientError(
                f"cannot reach {self.config.endpoint}: {exc or type(exc).__name__}"
            ) from exc
        if response.status_code >= 400:
            try:
                body = await response.aread()
            except httpx.TransportError as exc:
                body = str(exc).encode()
            finally:
                await response.aclose()
            raise error_from_response(response.status_code, response.reason_phrase, body)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json_body: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        content_type: str | None = None,
        content_length: int | None = None,
        anonymous: bool = False,
    ) -> APIResponse:
        """Send one request and return the whole successful response.

        Raises :class:`BackendAPIError` (status >= 400) or
        :class:`BackendClientError` (no usable answer).
        """
        request = self.build_request(
            method,
            path,
            params=params,
            json_body=json_body,
            content=content,
            content_type=content_type,
            content_length=content_length,
            anonymous=anonymous,
        )
        response = await self._send(request, stream=True)
        try:
            body = await response.aread()
        except httpx.HTTPError as exc:
            raise BackendClientError(
                f"response from {self.config.endpoint} broke off: {exc}"
            ) from exc
        finally:
            await response.aclose()
        return APIResponse(response.status_code, response.headers, body)

    async def fetch_json(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json_body: Any = None,
        anonymous: bool = False,
    ) -> Any:
        """Send one request and return its JSON body (``None`` for an empty body)."""
        response = await self.request(
            method, path, params=params, json_body=json_body, anonymous=anonymous
        )
        if not response.body.strip():
            return None
        return response.json()

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json_body: Any = None,
        endless: bool = False,
    ) -> AsyncIterator[httpx.Response]:
        """Send one request and yield the successful response unread.

        Read it with ``response.aiter_bytes()``; it is closed when the block
        exits.  Errors are raised before the block is entered.  *endless*
        drops the read timeout (for event streams).
        """
        request = self.build_request(
            method, path, params=params, json_body=json_body, endless=endless
        )
        response = await self._send(request, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:
            raise BackendClientError(
                f"response from {self.config.endpoint} broke off: {exc}"
            ) from exc
        finally:
            await response.aclose()

    @asynccontextmanager
    async def events(
        self, path: str, *, params: QueryParams | None = None
    ) -> AsyncIterator[AsyncIterator[SSEEvent]]:
        """Open a Server-Sent Events stream and yield an async iterator of its events.

        The iterator ends when the server closes the stream.  Raises
        :class:`MalformedResponse` if the answer is not ``text/event-stream``.
        """
        async with self.stream("GET", path, params=params, endless=True) as response:
            mime = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if mime != "text/event-stream":
                raise MalformedResponse(
                    f"is not text/event-stream (from {path})", value=mime, field="Content-Type"
                )
            events = _iterate_events(response)
            try:
                yield events
            finally:
                await events.aclose()

    async def hello(self) -> dict[str, Any]:
        """``GET /``: the server's API version and manager version (needs no keypair)."""
        data = await self.fetch_json("GET", "/", anonymous=True)
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise MalformedResponse("has no version", value=data, field="answer to GET /")
        return data


async def _iterate_events(response: httpx.Response) -> AsyncGenerator[SSEEvent, None]:
    parser = SSEParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            yield event
