"""HTTP range requests of a download, as pure functions (RFC 9110 section 14).

:func:`requested_range` reads ``Range`` and ``If-Range`` against the file's
size and validators and answers the byte span to send: the whole file (200),
one satisfiable span (206), or RangeNotSatisfiable (416).  Only single
ranges are honoured: a multi-range request gets the whole file, as the RFC
allows.  ``If-Range`` naming another ``Last-Modified`` or ``ETag`` (the file
changed since the client's first part) also gets the whole file, so a
resumed download never mixes two versions.
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Mapping
from dataclasses import dataclass

from bai.common.storage_api import StorageErrorType
from bai.storage.errors import StorageError

__all__ = ["Span", "etag", "last_modified", "requested_range"]


@dataclass(frozen=True)
class Span:
    """Bytes ``start`` to ``end`` (exclusive) of a file of ``size`` bytes; partial for 206."""

    start: int
    end: int
    size: int
    partial: bool

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def last_modified(st: os.stat_result) -> str:
    """The ``Last-Modified`` value of a file (IMF-fixdate, whole seconds)."""
    return email.utils.formatdate(int(st.st_mtime), usegmt=True)


def etag(st: os.stat_result) -> str:
    """A strong ``ETag`` of a file's version: inode, size and modification time."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _parse(spec: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of one ``first-last`` or ``-suffix`` spec; None if malformed."""
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0:
            return (size, size)  # unsatisfiable
        return (max(size - suffix, 0), size)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    return (start, end)


def requested_range(headers: Mapping[str, str], st: os.stat_result) -> Span:
    """The span of the file described by *st* that the request with *headers* asks for."""
    size = st.st_size
    whole = Span(0, size, size, partial=False)
    header = headers.get("range")
    if header is None:
        return whole
    if_range = headers.get("if-range")
    if if_range is not None and if_range.strip() not in (last_modified(st), etag(st)):
        return whole
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in specs:
        return whole
    parsed = _parse(specs, size)
    if parsed is None:
        return whole  # a malformed Range is ignored (RFC 9110 14.2)
    start, end = parsed
    if start >= size or start >= end:
        raise StorageError(
            StorageErrorType.RANGE_NOT_SATISFIABLE,
            f"the file has {size} bytes; {header[:60]!r} asks for none of them",
            field="Range",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return Span(start, end, size, partial=True)
