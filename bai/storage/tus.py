"""The tus 1.0 headers the proxy reads and writes, as pure functions.

The proxy speaks the core protocol the way ``aiotusclient`` (the official
client's uploader) uses it: no creation request (the token names the
upload), ``PATCH`` with ``Tus-Resumable: 1.0.0``, ``Upload-Offset`` and
``Content-Type: application/offset+octet-stream``, answered 204 with the new
``Upload-Offset``; ``HEAD`` answers the offset to resume from.  Header names
are matched case-insensitively (ASGI gives them in lower case).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bai.common.storage_api import StorageErrorType
from bai.storage.errors import StorageError

__all__ = [
    "OFFSET_CONTENT_TYPE",
    "TUS_VERSION",
    "check_patch_headers",
    "content_length",
    "parse_offset",
    "tus_headers",
]

TUS_VERSION: Final = "1.0.0"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
_MAX_DIGITS: Final = 19  # int64


def _non_negative(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_DIGITS:
        raise StorageError(
            StorageErrorType.INVALID_REQUEST,
            f"must be a non-negative integer (got {value[:40]!r})",
            field=name,
        )
    return int(text)


def parse_offset(headers: Mapping[str, str]) -> int:
    """The ``Upload-Offset`` of a PATCH; InvalidRequest naming the header if missing or bad."""
    offset = _non_negative(headers.get("upload-offset"), "Upload-Offset")
    if offset is None:
        raise StorageError(StorageErrorType.INVALID_REQUEST, "is required", field="Upload-Offset")
    return offset


def content_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` of a request, or None when the body is chunked."""
    return _non_negative(headers.get("content-length"), "Content-Length")


def check_patch_headers(headers: Mapping[str, str]) -> int:
    """Check the tus headers of a PATCH; answers its ``Upload-Offset``.

    ``Tus-Resumable`` must be 1.0.0 when present (tus clients always send
    it; plain HTTP tools may leave it out) and ``Content-Type`` must be
    ``application/offset+octet-stream``.
    """
    version = headers.get("tus-resumable")
    if version is not None and version.strip() != TUS_VERSION:
        raise StorageError(
            StorageErrorType.INVALID_REQUEST,
            f"this server speaks tus {TUS_VERSION} only (got {version[:40]!r})",
            field="Tus-Resumable",
        )
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != OFFSET_CONTENT_TYPE:
        raise StorageError(
            StorageErrorType.INVALID_REQUEST,
            f"must be {OFFSET_CONTENT_TYPE} (got {kind[:60]!r})",
            field="Content-Type",
        )
    return parse_offset(headers)


def tus_headers(**extra: int | str) -> list[tuple[bytes, bytes]]:
    """``Tus-Resumable`` plus *extra* headers (``Upload_Offset=5`` -> ``Upload-Offset: 5``)."""
    headers = [(b"tus-resumable", TUS_VERSION.encode())]
    for name, value in extra.items():
        headers.append((name.replace("_", "-").lower().encode(), str(value).encode()))
    return headers
