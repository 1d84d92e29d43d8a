"""The app proxy's RFC 7807 problem bodies.

Every refusal, from the API or from an app listener, is JSON
``{"type", "title", "status", "detail"}`` with ``Content-Type:
application/problem+json``; ``type`` is
:data:`~bai.common.appproxy_api.ERROR_TYPE_PREFIX` and one of
:class:`~bai.common.appproxy_api.AppProxyErrorType`.
"""

from __future__ import annotations

import http
from typing import Any, Final

import msgspec

from bai.common.appproxy_api import ERROR_STATUS, ERROR_TYPE_PREFIX, AppProxyErrorType

__all__ = ["PROBLEM_CONTENT_TYPE", "problem_body"]

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"


def problem_body(kind: AppProxyErrorType, detail: str, *, field: str | None = None) -> bytes:
    """The encoded problem of error *kind* with *detail* (naming *field* when given)."""
    status = ERROR_STATUS[kind]
    body: dict[str, Any] = {
        "type": ERROR_TYPE_PREFIX + kind.value,
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return msgspec.json.encode(body)
