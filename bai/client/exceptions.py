"""What the client raises.

* :class:`BackendAPIError`: the server answered with a 4xx/5xx status.  It
  carries the HTTP status and reason and the fields of the RFC 7807 problem
  body (``type``, ``title``, ``detail``), plus the whole body as ``data``.
  Subclasses name the common cases by status so callers can catch them.
* :class:`BackendClientError`: the request never got a usable answer (the
  endpoint is unreachable, it timed out, or the response was not what the API
  promises) or the client was asked for something it cannot send.

GraphQL answers (``POST /admin/gql``) fail in two ways of their own:
:class:`GraphQLError` when the answer carries ``errors`` (a
:class:`BackendAPIError` of type ``.../graphql-error``, though the HTTP
status was 200), and :class:`MutationFailed` when a mutation ran but answered
``ok: false`` with its ``msg``.

All derive from :class:`BackendError`, itself a
:class:`~bai.common.errors.BaiError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from bai.common.errors import BaiError, InvalidValue

__all__ = [
    "GENERIC_PROBLEM_TYPE",
    "GRAPHQL_ERROR_TYPE",
    "BackendAPIError",
    "BackendClientError",
    "BackendError",
    "Conflict",
    "Forbidden",
    "GraphQLError",
    "InvalidAPIParameters",
    "MalformedResponse",
    "MutationFailed",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "error_from_response",
]

#: The problem type used when a failure response carries no RFC 7807 body.
GENERIC_PROBLEM_TYPE: Final = "https://api.backend.ai/probs/generic-error"
#: The problem type of :class:`GraphQLError` (the manager's legacy endpoint uses it too).
GRAPHQL_ERROR_TYPE: Final = "https://api.backend.ai/probs/graphql-error"
#: Non-JSON error bodies are quoted in the message up to this many characters.
_MAX_QUOTED_BODY: Final = 500


class BackendError(BaiError):
    """Base of every error the client raises."""


class BackendClientError(BackendError):
    """No usable answer: connection failure, timeout, malformed response, bad argument."""


class MalformedResponse(BackendClientError, InvalidValue):
    """A successful answer did not have the shape the API promises.

    ``field`` names the part of the answer (``result.status``, a header...)
    and ``value`` the offending value.
    """


class BackendAPIError(BackendError):
    """The API answered with an error status.

    ``type`` is the problem-type URI, ``title`` its human-readable summary and
    ``detail`` the explanation of this occurrence (the official manager's
    ``msg`` is read as ``detail`` too); ``data`` is the whole parsed body.
    """

    def __init__(self, status: int, reason: str, data: Mapping[str, Any]) -> None:
        self.status = status
        self.reason = reason
        self.data: dict[str, Any] = dict(data)
        self.type = _text(data.get("type")) or GENERIC_PROBLEM_TYPE
        self.title = _text(data.get("title")) or reason
        self.detail = _text(data.get("detail")) or _text(data.get("msg"))
        super().__init__(self._message())

    @property
    def error_type(self) -> str:
        """The last segment of :attr:`type` (``.../probs/session-not-found`` -> that)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]

    def _message(self) -> str:
        text = f"{self.status} {self.reason}: {self.title}"
        if self.detail and self.detail != self.title:
            text += f" ({self.detail})"
        return text


class InvalidAPIParameters(BackendAPIError):
    """400: the request's parameters were rejected."""


class Unauthorized(BackendAPIError):
    """401: missing or wrong credentials."""


class Forbidden(BackendAPIError):
    """403: the keypair may not do this."""


class NotFound(BackendAPIError):
    """404: no such session, file or route."""


class Conflict(BackendAPIError):
    """409: the request clashes with the current state (e.g. a duplicate name)."""


class RateLimited(BackendAPIError):
    """429: the keypair's rate limit is used up."""


class ServerError(BackendAPIError):
    """5xx: the server failed."""


class GraphQLError(BackendAPIError):
    """A GraphQL answer listed ``errors`` (syntax, validation, permission, input).

    Built as the official client builds it: status 400, problem type
    :data:`GRAPHQL_ERROR_TYPE`, the joined messages as ``detail`` and the
    error list as ``data["data"]`` (:attr:`messages` has them one by one).
    """

    def __init__(self, errors: list[Any]) -> None:
        self.messages = [
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
        ]
        super().__init__(
            400,
            "Bad Request",
            {
                "type": GRAPHQL_ERROR_TYPE,
                "title": "GraphQL-generated error",
                "detail": "; ".join(self.messages),
                "data": errors,
            },
        )


class MutationFailed(BackendError):
    """A GraphQL mutation answered ``ok: false``; nothing was changed.

    ``mutation`` is the mutation's name (``create_user``...), ``msg`` the
    reason the manager gave.
    """

    def __init__(self, mutation: str, msg: str) -> None:
        self.mutation = mutation
        self.msg = msg
        super().__init__(f"{mutation} failed: {msg or 'no reason given'}")


_BY_STATUS: Final[Mapping[int, type[BackendAPIError]]] = {
    400: InvalidAPIParameters,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_from_response(status: int, reason: str, body: bytes) -> BackendAPIError:
    """Build the typed error for a failure response with raw *body*.

    A JSON object body is taken as the problem description; anything else
    becomes a generic problem whose detail quotes the start of the body.
    """
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
    data: dict[str, Any]
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict):
        data = parsed
    else:
        text = body.decode("utf-8", "replace").strip()
        if len(text) > _MAX_QUOTED_BODY:
            text = text[:_MAX_QUOTED_BODY] + "..."
        data = {"type": GENERIC_PROBLEM_TYPE, "title": reason}
        if text:
            data["detail"] = text
    if status >= 500:
        return ServerError(status, reason, data)
    return _BY_STATUS.get(status, BackendAPIError)(status, reason, data)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
