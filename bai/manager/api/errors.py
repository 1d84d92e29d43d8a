"""RFC 7807 problem details for every failure the manager's API answers.

Every error response is ``application/problem+json`` with a body the
official Backend.AI client can show::

    {"type": "https://api.backend.ai/probs/invalid-api-params",
     "title": "Missing or invalid API parameters.",
     "status": 400,
     "detail": "key: a config key must be a string (got 1)",
     "msg": "key: a config key must be a string (got 1)",
     "field": "key",
     "data": {"key": "a config key must be a string"}}

``type`` and ``title`` are always there; ``detail`` (RFC 7807) and ``msg``
(what ``backend.ai-client`` prints under the title) carry the same message;
``field`` names the offending input when it is known, and ``data`` holds
structured extras (for bad input, ``{field: problem}``, which the official
client lists line by line).

How an exception becomes a problem (:func:`problem_of`):

* an exception with an ``http_status`` attribute (every :class:`ApiError`,
  and any :class:`~bai.common.errors.BaiError` subclass that declares
  ``http_status`` and a kebab-case ``error_type``, optionally
  ``error_title`` and an ``extra_data`` attribute) gets that status;
* a missing ``Authorization`` header or a wrong signature is 401; other
  malformed authentication headers (bad date, date skew, unknown sign
  method...) are 400 ``invalid-auth-params`` naming the header;
* any other :class:`~bai.common.errors.InvalidValue` is 400
  ``invalid-api-params`` naming the field;
* an unreachable, slow or locked database is 503 (SQLAlchemy's
  ``OperationalError`` and ``InterfaceError`` included);
* werkzeug's HTTP errors (unknown route 404, 405 with ``Allow``, 413) keep
  their status;
* anything else is a 500 whose body says only that an error was logged under
  a reference id: no exception text, no traceback.
"""

from __future__ import annotations

import dataclasses
import http
import logging
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import msgspec
import sqlalchemy as sa
from quart import Quart, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from bai.common.auth import AuthError, MissingCredentials, SignatureMismatch
from bai.common.errors import BaiError, InvalidValue, describe_value
from bai.manager.db import DatabaseClosed, DatabaseTimeout, DatabaseUnavailable

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPE_BASE",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "RateLimitExceeded",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedApiVersion",
    "problem_of",
    "problem_response",
    "register_error_handlers",
]

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE: Final = "https://api.backend.ai/probs/"
PROBLEM_CONTENT_TYPE: Final = "application/problem+json"


class ApiError(BaiError):
    """An error with a fixed HTTP status, problem type and title.

    Raise a subclass (or define one) from a route; *detail* is the
    human-readable message, *data* any JSON-encodable extras the client may
    read (the official client reads ``data.existingSessionId`` of
    ``session-already-exists`` and ``data.matches`` of
    ``too-many-sessions-matched``), *headers* extra response headers.
    """

    http_status: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal-server-error"
    error_title: ClassVar[str] = "Internal server error."

    def __init__(
        self,
        detail: str | None = None,
        *,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.error_title)
        self.detail = detail
        self.extra_data = data
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """The request cannot be served as sent (400)."""

    http_status = 400
    error_type = "generic-bad-request"
    error_title = "Bad request."


class UnsupportedApiVersion(BadRequest):
    """``X-BackendAI-Version`` names a version this server does not speak (400)."""

    error_type = "unsupported-api-version"
    error_title = "Unsupported API version."


class Unauthorized(ApiError):
    """The credentials were missing, wrong, unknown or disabled (401)."""

    http_status = 401
    error_type = "unauthorized"
    error_title = "Credential/signature mismatch."


class Forbidden(ApiError):
    """The caller is known but may not do this (403)."""

    http_status = 403
    error_type = "forbidden"
    error_title = "Forbidden operation."


class NotFound(ApiError):
    """A named object does not exist, or the caller may not see it (404)."""

    http_status = 404
    error_type = "object-not-found"
    error_title = "No such object."


class Conflict(ApiError):
    """The request conflicts with the current state (409)."""

    http_status = 409
    error_type = "conflict"
    error_title = "Conflict with the current state."


class PayloadTooLarge(ApiError):
    """The request body is larger than the route accepts (413)."""

    http_status = 413
    error_type = "request-too-large"
    error_title = "Request body too large."


class RateLimitExceeded(ApiError):
    """The caller used up its requests of the rate-limit window (429)."""

    http_status = 429
    error_type = "too-many-requests"
    error_title = "Rate limit exceeded."


class ServiceUnavailable(ApiError):
    """A service the request needs is down or too slow (503)."""

    http_status = 503
    error_type = "service-unavailable"
    error_title = "Service unavailable."


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One RFC 7807 problem: what :func:`problem_response` sends."""

    status: int
    error_type: str
    title: str
    detail: str | None = None
    field: str | None = None
    data: Any = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body (see the module docs for the keys)."""
        out: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.error_type,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            out["detail"] = self.detail
            out["msg"] = self.detail
        if self.field is not None:
            out["field"] = self.field
        if self.data is not None:
            out["data"] = self.data
        return out


_WERKZEUG_TYPES: Final[dict[int, tuple[str, str]]] = {
    400: ("generic-bad-request", "Bad request."),
    404: ("generic-not-found", "Unknown URL path."),
    405: ("method-not-allowed", "HTTP method not allowed."),
    413: ("request-too-large", "Request body too large."),
}


def _kebab(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        return "http-error"
    return "-".join(phrase.lower().replace("'", "").split())


def _title(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase + "."
    except ValueError:
        return "HTTP error."


def _invalid_value(
    exc: InvalidValue, status: int, error_type: str, title: str, data: Any = None
) -> Problem:
    if data is None and exc.field:
        data = {exc.field: exc.problem}
    return Problem(status, error_type, title, str(exc), exc.field, data)


def _unavailable(detail: str) -> Problem:
    return Problem(503, ServiceUnavailable.error_type, ServiceUnavailable.error_title, detail)


def _http_exception(exc: HTTPException) -> Problem:
    status = exc.code or 500
    error_type, title = _WERKZEUG_TYPES.get(status, (_kebab(status), _title(status)))
    headers: dict[str, str] = {}
    if status == 404:
        detail = f"no route for {describe_value(request.path)}"
    elif isinstance(exc, MethodNotAllowed):
        allowed = sorted(exc.valid_methods or ())
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed here (allowed: {', '.join(allowed)})"
    else:
        detail = exc.description or title
    return Problem(status, error_type, title, detail, headers=headers)


def problem_of(exc: BaseException) -> Problem:
    """The problem an exception answers with (rules in the module docs).

    Unexpected exceptions are logged here with a reference id that the
    answer repeats, so an operator can find the traceback.
    """
    status = getattr(exc, "http_status", None)
    if isinstance(status, int) and 400 <= status <= 599:
        error_type = str(getattr(exc, "error_type", None) or _kebab(status))
        title = str(getattr(exc, "error_title", None) or _title(status))
        data = getattr(exc, "extra_data", None)
        headers = getattr(exc, "headers", None)
        if isinstance(exc, InvalidValue):
            return _invalid_value(exc, status, error_type, title, data)
        detail = getattr(exc, "detail", None) if isinstance(exc, ApiError) else str(exc)
        # An error relayed from another service (a storage proxy) may name the offending input.
        field = getattr(exc, "field", None)
        return Problem(
            status,
            error_type,
            title,
            detail or None,
            field if isinstance(field, str) else None,
            data=data,
            headers=dict(headers) if isinstance(headers, Mapping) else {},
        )
    if isinstance(exc, AuthError):
        if isinstance(exc, MissingCredentials | SignatureMismatch):
            return Problem(401, Unauthorized.error_type, Unauthorized.error_title, str(exc))
        if isinstance(exc, InvalidValue):
            return _invalid_value(
                exc, 400, "invalid-auth-params", "Missing or invalid authorization parameters."
            )
    if isinstance(exc, InvalidValue):
        return _invalid_value(exc, 400, "invalid-api-params", "Missing or invalid API parameters.")
    if isinstance(exc, DatabaseTimeout):
        return _unavailable("the database did not answer in time")
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        # Lost connections and locked databases: the request may succeed later.
        log.warning("database error answering a request: %s", exc)
        return _unavailable("the database is not available")
    if isinstance(exc, DatabaseUnavailable | DatabaseClosed):
        return _unavailable("the database is not available")
    if isinstance(exc, HTTPException) and exc.code is not None and exc.code >= 400:
        original = getattr(exc, "original_exception", None)
        if exc.code == 500 and original is not None:
            return problem_of(original)
        if exc.code < 500:
            return _http_exception(exc)
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error answering a request (reference %s)", reference, exc_info=exc)
    return Problem(
        500,
        "internal-server-error",
        "Internal server error.",
        f"an unexpected error occurred; the server logged it under reference {reference}",
    )


def problem_response(exc: BaseException) -> Response:
    """An ``application/problem+json`` response for *exc* (see :func:`problem_of`)."""
    problem = problem_of(exc)
    response: Response = current_app.response_class(
        msgspec.json.encode(problem.body()),
        status=problem.status,
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


async def _handle(exc: Exception) -> Response:
    return problem_response(exc)


def register_error_handlers(app: Quart) -> None:
    """Make every exception a request raises (HTTP errors included) a problem response."""
    app.register_error_handler(Exception, _handle)
