"""API versions, the request front door, and ``GET /``.

Versions are ``v<major>.<yyyymmdd>`` (the spec's "API Versioning").  This
server speaks :data:`API_VERSION` and accepts requests that declare any
version from :data:`MIN_API_VERSION` up to major :data:`MAX_MAJOR` in
``X-BackendAI-Version``; others get 400 ``unsupported-api-version``.  The
official client 23.9.10 first asks ``GET /`` without the header, then signs
every request with the older of its own version and ours (v6.20220615).

:class:`FrontDoor` is ASGI middleware that runs before routing:

* it keeps the request target exactly as the client sent it (percent-encoded
  path plus ``?query``) under ``scope["bai.raw_target"]``: that, not the
  decoded path, is what request signatures cover.  The one thing the ASGI
  scope loses is a bare ``?`` with no query after it, so authentication
  checks a target without a query in both forms;
* it strips a ``/v4`` .. ``/v6`` path prefix (``/v6/session`` is
  ``/session``; ``/v6`` alone is ``/``, whose answer then names that
  major's revision); other majors are left alone, so their routes are 404 as
  the spec says;
* a ``POST`` with ``X-Method-Override: <method>`` is routed as that method
  (so the signature must cover the overriding method); an override on
  another method, or naming an unknown method, is refused with 400 by
  :func:`check_method_override`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from quart import Blueprint, Response, g, request

import bai
from bai.common.errors import InvalidValue
from bai.manager.api.auth import public
from bai.manager.api.errors import UnsupportedApiVersion
from bai.manager.api.helpers import json_response

__all__ = [
    "API_VERSION",
    "LATEST_REVISIONS",
    "MAX_MAJOR",
    "MIN_API_VERSION",
    "OVERRIDABLE_METHODS",
    "RAW_TARGET",
    "ApiVersion",
    "FrontDoor",
    "blueprint",
    "check_method_override",
    "current_api_version",
    "negotiate_version",
    "parse_api_version",
    "raw_target",
]

VERSION_HEADER: Final = "X-BackendAI-Version"
#: Scope keys the front door sets.
RAW_TARGET: Final = "bai.raw_target"
PATH_MAJOR: Final = "bai.path_major"
OVERRIDE_REFUSED: Final = "bai.override_refused"

#: The methods ``X-Method-Override`` may ask for.
OVERRIDABLE_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "REPORT"})

_VERSION_RE: Final = re.compile(r"v(\d{1,4})\.(\d{8})")
_PREFIX_RE: Final = re.compile(r"/v(\d{1,4})(?=/|$)")


@dataclass(frozen=True, order=True, slots=True)
class ApiVersion:
    """A parsed API version; ordered by major, then revision date."""

    major: int
    revision: str

    def __str__(self) -> str:
        return f"v{self.major}.{self.revision}"


#: The newest revision of each major this server answers for.
LATEST_REVISIONS: Final[dict[int, str]] = {4: "20190615", 5: "20191215", 6: "20220615"}
API_VERSION: Final = ApiVersion(6, LATEST_REVISIONS[6])
#: The oldest version accepted: resource presets and ``owner_access_key`` arrived in it.
MIN_API_VERSION: Final = ApiVersion(4, "20190315")
MAX_MAJOR: Final = max(LATEST_REVISIONS)


@functools.lru_cache(maxsize=256)
def parse_api_version(text: str) -> ApiVersion:
    """Parse and check an ``X-BackendAI-Version`` value.

    Raises :class:`~bai.common.errors.InvalidValue` naming the header when
    it is not ``vX.yyyymmdd`` with a real date, and
    :class:`~bai.manager.api.errors.UnsupportedApiVersion` when it is older
    than :data:`MIN_API_VERSION` or its major is above :data:`MAX_MAJOR`.
    Accepted values are remembered: clients send the same one every time.
    """
    value = text.strip()
    match = _VERSION_RE.fullmatch(value)
    if match is None:
        raise InvalidValue("must look like v6.20220615", value=text, field=VERSION_HEADER)
    try:
        datetime.strptime(match[2], "%Y%m%d")
    except ValueError:
        raise InvalidValue(
            "the revision must be a date (yyyymmdd)", value=text, field=VERSION_HEADER
        ) from None
    version = ApiVersion(int(match[1]), match[2])
    if version < MIN_API_VERSION or version.major > MAX_MAJOR:
        raise UnsupportedApiVersion(
            f"{VERSION_HEADER} {value} is not supported: this server speaks "
            f"{MIN_API_VERSION} to {API_VERSION}"
        )
    return version


def negotiate_version() -> ApiVersion:
    """The version of the current request (its header's, else :data:`API_VERSION`).

    Stores it for :func:`current_api_version`; raises as :func:`parse_api_version`.
    """
    header = request.headers.get(VERSION_HEADER)
    version = API_VERSION if header is None else parse_api_version(header)
    g.bai_api_version = version
    return version


def current_api_version() -> ApiVersion:
    """The API version the current request declared (:data:`API_VERSION` if none)."""
    version = g.get("bai_api_version")
    return version if isinstance(version, ApiVersion) else API_VERSION


def check_method_override() -> None:
    """Refuse the request if the front door refused its ``X-Method-Override``."""
    refused = _scope().get(OVERRIDE_REFUSED)
    if refused is not None:
        raise InvalidValue(
            f"must name one of {', '.join(sorted(OVERRIDABLE_METHODS))} on a POST request",
            value=refused,
            field="X-Method-Override",
        )


def raw_target() -> str:
    """The current request's target exactly as the client sent it (path and ``?query``)."""
    target = _scope().get(RAW_TARGET)
    if not isinstance(target, str):
        raise RuntimeError("the API app must be served through its FrontDoor")
    return target


def _scope() -> Mapping[str, Any]:
    return cast(Mapping[str, Any], request.scope)


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class FrontDoor:
    """ASGI middleware: raw target, version prefixes, method override (module docs)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
            query = scope.get("query_string") or b""
            target = bytes(raw_path) + (b"?" + bytes(query) if query else b"")
            scope[RAW_TARGET] = target.decode("ascii", "replace")
            prefix = _PREFIX_RE.match(scope["path"])
            if prefix is not None and int(prefix[1]) in LATEST_REVISIONS:
                scope["path"] = scope["path"][prefix.end() :] or "/"
                scope[PATH_MAJOR] = int(prefix[1])
            override = _header(scope, b"x-method-override") if scope["type"] == "http" else None
            if override is not None:
                method = override.decode("latin-1").strip().upper()
                if scope["method"] == "POST" and method in OVERRIDABLE_METHODS:
                    scope["method"] = method
                else:
                    scope[OVERRIDE_REFUSED] = override.decode("latin-1")
        await self._app(scope, receive, send)


blueprint = Blueprint("version", __name__)


@blueprint.route("/", methods=["GET"])
@public
async def hello() -> Response:
    """``GET /`` (and ``GET /v4`` .. ``/v6``): the API version and the manager's version."""
    major = _scope().get(PATH_MAJOR)
    version = f"v{major}.{LATEST_REVISIONS[major]}" if isinstance(major, int) else str(API_VERSION)
    return json_response({"version": version, "manager": bai.__version__})
