"""The storage proxy's errors and their RFC 7807 bodies.

Every refusal the proxy answers is a :class:`StorageError` carrying one of
the contract's :class:`~bai.common.storage_api.StorageErrorType` values; its
HTTP status is the contract's (:data:`~bai.common.storage_api.ERROR_STATUS`).
:func:`problem_of` turns any exception into ``(status, body, headers)``:

* a :class:`StorageError` keeps its type, detail, field and headers;
* :class:`~bai.common.storage_api.InvalidRequest` and
  :class:`~bai.common.storage_api.InvalidPath` (the contract's parse errors)
  become those types, naming the field;
* any other exception is a 500 whose body names only a reference id that the
  log carries with the traceback (no exception text leaks).

:func:`os_error` maps an ``OSError`` of a folder operation to the 4xx it
means (missing file, not a folder, folder not empty, ...), so file-system
failures caused by the request never surface as 500s.
"""

from __future__ import annotations

import errno
import http
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Final

from bai.common.errors import BaiError
from bai.common.storage_api import (
    ERROR_STATUS,
    ERROR_TYPE_PREFIX,
    InvalidPath,
    InvalidRequest,
    StorageErrorType,
)

__all__ = ["PROBLEM_CONTENT_TYPE", "StorageError", "http_problem", "os_error", "problem_of"]

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

T = StorageErrorType


class StorageError(BaiError):
    """A refusal of the proxy: one contract error type, a message, maybe the field at fault."""

    def __init__(
        self,
        error_type: StorageErrorType,
        detail: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.error_type = error_type
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        """The HTTP status the contract gives this error's type."""
        return ERROR_STATUS[self.error_type]


_ERRNO_TYPES: Final[dict[int, tuple[StorageErrorType, str]]] = {
    errno.ENOENT: (T.FILE_NOT_FOUND, "no such file or folder"),
    errno.ENOTDIR: (T.NOT_A_DIRECTORY, "a component of the path is not a folder"),
    errno.EISDIR: (T.FILE_EXISTS, "a folder is in the way"),
    errno.EEXIST: (T.FILE_EXISTS, "something already exists there"),
    errno.ENOTEMPTY: (T.DIRECTORY_NOT_EMPTY, "the folder is not empty"),
    errno.ELOOP: (T.INVALID_PATH, "a symbolic link is in the way"),
    errno.ENAMETOOLONG: (T.INVALID_PATH, "a name is too long for the file system"),
    errno.EINVAL: (T.INVALID_PATH, "a folder cannot be moved into itself"),
    errno.EXDEV: (T.OPERATION_NOT_SUPPORTED, "source and target are on different file systems"),
    errno.ENOSPC: (T.QUOTA_EXCEEDED, "no space left on the volume"),
    errno.EDQUOT: (T.QUOTA_EXCEEDED, "the volume's disk quota is exceeded"),
    errno.EACCES: (T.INVALID_PATH, "permission denied"),
    errno.EPERM: (T.INVALID_PATH, "operation not permitted"),
    errno.EBUSY: (T.INVALID_PATH, "the file is busy (a mount point?)"),
}


def os_error(exc: OSError, relpath: str, *, field: str = "relpath") -> StorageError | OSError:
    """The :class:`StorageError` that *exc*, met while working on *relpath*, stands for.

    An errno that no request can cause (I/O error, bad descriptor) is given
    back unchanged, to be answered as a logged 500.
    """
    known = _ERRNO_TYPES.get(exc.errno or 0)
    if known is None:
        return exc
    error_type, reason = known
    return StorageError(error_type, f"{relpath}: {reason}", field=field)


def _body(status: int, error_type: str, detail: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": error_type,
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return body


def problem_of(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, RFC 7807 body, extra headers)`` of the answer to *exc*."""
    if isinstance(exc, StorageError):
        body = _body(exc.status, ERROR_TYPE_PREFIX + exc.error_type, exc.detail, exc.field)
        return exc.status, body, exc.headers
    if isinstance(exc, InvalidRequest | InvalidPath):
        kind = T.INVALID_PATH if isinstance(exc, InvalidPath) else T.INVALID_REQUEST
        status = ERROR_STATUS[kind]
        return status, _body(status, ERROR_TYPE_PREFIX + kind, str(exc), exc.field), {}
    reference = uuid.uuid4().hex
    log.error("internal error %s", reference, exc_info=exc)
    detail = f"an internal error was logged under reference {reference}"
    return 500, _body(500, "about:blank", detail), {}


def http_problem(status: int, detail: str) -> dict[str, Any]:
    """The body of a plain HTTP refusal (unknown route, wrong method): type ``about:blank``."""
    return _body(status, "about:blank", detail)
