"""What every ``/stream`` WebSocket route shares: the caller's check and how a failure ends it.

A WebSocket request is authenticated before its upgrade exactly as the REST
gate authenticates HTTP calls (the keypair signature over ``GET`` and the raw
target, ``owner_access_key`` for admins), so a refused request gets the usual
RFC 7807 answer.  After the upgrade, a failure is sent as one JSON message
and the socket is closed with :data:`CLOSE_POLICY` (the client broke the
protocol) or :data:`CLOSE_ERROR` (the server side failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
from quart import current_app, websocket

from bai.common.errors import InvalidValue
from bai.manager.api.auth import (
    AUTH_CACHE_TTL,
    AuthContext,
    KeypairCache,
    authenticate,
    resolve_owner,
)
from bai.manager.api.errors import Problem, problem_of
from bai.manager.api.helpers import current_ctx
from bai.manager.api.version import RAW_TARGET, VERSION_HEADER, parse_api_version

__all__ = [
    "CLOSE_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "ClientMistake",
    "authenticate_websocket",
    "close_code",
    "send_json",
]

CLOSE_NORMAL: Final = 1000
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_ERROR: Final = 1011
_KEYPAIRS_KEY: Final = "bai.stream_keypairs"


class ClientMistake(InvalidValue):
    """The client sent something the protocol does not allow."""


async def authenticate_websocket() -> AuthContext:
    """The caller of the WebSocket request, checked as the REST gate checks HTTP callers."""
    header = websocket.headers.get(VERSION_HEADER)
    if header is not None:
        parse_api_version(header)
    keypairs = current_app.extensions.get(_KEYPAIRS_KEY)
    if not isinstance(keypairs, KeypairCache):
        keypairs = current_app.extensions[_KEYPAIRS_KEY] = KeypairCache(AUTH_CACHE_TTL)
    scope: Mapping[str, Any] = websocket.scope
    auth = await authenticate(
        current_ctx().db,
        keypairs,
        method="GET",
        raw_target=str(scope[RAW_TARGET]),
        headers=websocket.headers,
    )
    return await resolve_owner(auth, websocket.args.get("owner_access_key"))


async def send_json(data: Any) -> None:
    """Send *data* as one JSON text message."""
    await websocket.send(msgspec.json.encode(data).decode())


def close_code(exc: BaseException) -> tuple[int, Problem]:
    """The close code and problem that end a socket after *exc*."""
    problem = problem_of(exc)
    return (CLOSE_POLICY if isinstance(exc, ClientMistake) else CLOSE_ERROR), problem
