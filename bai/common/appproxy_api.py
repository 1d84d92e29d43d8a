"""The app proxy's contract with the manager and with users' clients.

The app proxy (:mod:`bai.appproxy`) puts a session's HTTP (or TCP) app in
front of browsers.  Managers find it through the resource group: the
``scaling_groups.wsproxy_addr`` column holds the base URL of its API
(``http://host:port``), and the shared configuration holds the secret every
manager presents (:data:`SECRET_CONFIG_KEY`).  One secret serves every app
proxy of a cluster.

Routes of the API
=================

``POST /v2/conf`` (manager only: :data:`SECRET_HEADER` must carry the
secret, else 401) with an :class:`AppRegistration` body answers
``{"token": T}``: a random token, good for one ``add`` within
:data:`REGISTRATION_TTL` seconds.

``GET /v2/proxy/{T}/{session_id}/add?app=NAME`` (the user's client, no
other credential) spends the token, which must have been registered for
that session and app, and answers :class:`AddReply`: ``{"code": 200, "url":
U}``.  ``U`` is where the browser goes: ``http://HOST:PORT/?bai_app_token=X``
in port-mapping mode, ``http://SHORT-APP.DOMAIN:PORT/?bai_app_token=X`` in
wildcard mode, and ``tcp://HOST:PORT`` for a ``tcp`` app (port-mapping mode
only).  The same session and app always get the same port (or host name)
while the route lives.

``DELETE /v2/conf/{session_id}`` (manager only) drops every route of the
session at once: ``{"dropped": N}``.

``GET /v2/routes`` (manager only) lists the routes (:class:`RouteInfo`).

``GET /v2/status`` (anyone) answers ``{"status": "running", "mode": M}``.

Errors are RFC 7807 JSON bodies whose ``type`` is :data:`ERROR_TYPE_PREFIX`
followed by one of :class:`AppProxyErrorType`.
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Final, Literal, TypedDict

import msgspec

__all__ = [
    "APP_NAME_PATTERN",
    "ERROR_STATUS",
    "ERROR_TYPE_PREFIX",
    "REGISTRATION_TTL",
    "SECRET_CONFIG_KEY",
    "SECRET_HEADER",
    "TOKEN_QUERY",
    "AddReply",
    "AppName",
    "AppProtocol",
    "AppProxyErrorType",
    "AppRegistration",
    "RegisterReply",
    "RouteInfo",
]

#: The header that carries the managers' shared secret.
SECRET_HEADER: Final = "X-BackendAI-AppProxy-Secret"

#: The shared-configuration key holding that secret (read by the managers).
SECRET_CONFIG_KEY: Final = "appproxy/secret"

#: The query parameter of the browser URL that carries the one-time app token.
TOKEN_QUERY: Final = "bai_app_token"

#: Seconds a registration token stays good for its one ``add``.
REGISTRATION_TTL: Final = 300.0

#: An app (service port) name, as the kernel's service ports name them.
APP_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
AppName = Annotated[str, msgspec.Meta(pattern=APP_NAME_PATTERN)]

#: ``http`` apps get HTTP with authentication; ``tcp`` apps a raw TCP port.
AppProtocol = Literal["http", "tcp"]

#: A host name or an IP address (IPv6 with or without brackets).
_KernelHost = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:\[\]-]{1,255}$")]


class AppRegistration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /v2/conf``: one app of one session, and who may open it.

    ``kernel_host:kernel_port`` is where the app answers, as seen from the
    proxy.  ``open_to_public`` lets anyone reach the app without the cookie
    (model-serving endpoints); otherwise a browser needs the app token of an
    ``add`` exchanged for a cookie.
    """

    session_id: uuid.UUID
    kernel_host: _KernelHost
    kernel_port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    app: AppName
    protocol: AppProtocol = "http"
    user_id: uuid.UUID
    access_key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    open_to_public: bool = False
    login_session_token: str | None = None


class RegisterReply(TypedDict):
    token: str


class AddReply(TypedDict):
    code: int
    url: str


class RouteInfo(TypedDict):
    session_id: str
    app: str
    protocol: str
    #: The port of the app in port-mapping mode, else ``None``.
    port: int | None
    #: The host name of the app in wildcard mode, else ``None``.
    host: str | None
    open_to_public: bool
    active_connections: int
    idle_seconds: float


class AppProxyErrorType(enum.StrEnum):
    """The error names of the proxy's problem bodies."""

    INVALID_REQUEST = "InvalidRequest"
    UNAUTHORIZED = "Unauthorized"
    INVALID_TOKEN = "InvalidToken"
    NOT_FOUND = "NotFound"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    NO_FREE_PORT = "NoFreePort"
    TOO_MANY_CONNECTIONS = "TooManyConnections"
    TOO_MANY_REGISTRATIONS = "TooManyRegistrations"
    APP_UNREACHABLE = "AppUnreachable"
    UNSUPPORTED = "Unsupported"


#: Each error's HTTP status.
ERROR_STATUS: Final[dict[AppProxyErrorType, int]] = {
    AppProxyErrorType.INVALID_REQUEST: 400,
    AppProxyErrorType.UNAUTHORIZED: 401,
    AppProxyErrorType.INVALID_TOKEN: 401,
    AppProxyErrorType.NOT_FOUND: 404,
    AppProxyErrorType.METHOD_NOT_ALLOWED: 405,
    AppProxyErrorType.NO_FREE_PORT: 503,
    AppProxyErrorType.TOO_MANY_CONNECTIONS: 503,
    AppProxyErrorType.TOO_MANY_REGISTRATIONS: 503,
    AppProxyErrorType.APP_UNREACHABLE: 502,
    AppProxyErrorType.UNSUPPORTED: 400,
}

#: What every problem ``type`` of the proxy starts with (then the error's name).
ERROR_TYPE_PREFIX: Final = "https://bai.dev/problems/appproxy/"
