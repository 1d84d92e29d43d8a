"""Multipart bodies: encoding file uploads, and parsing multipart responses.

Uploads (``POST /session/{name}/upload``) are ``multipart/form-data`` with one
part per file, named ``src`` like the official client's, whose ``filename`` is
the path the file gets under the session's ``/home/work``.
:class:`MultipartUpload` streams the files from disk through Trio's thread
pool (the event loop never blocks on file reads), announces the exact
``Content-Length`` up front, and reports progress per chunk.

Downloads (``GET /session/{name}/download``) answer ``multipart/mixed`` with
one tar archive per part; :class:`MultipartParser` splits such a body
incrementally, whatever the chunk boundaries, without holding a part in memory.

Guarantees: :func:`plan_upload` refuses (with
:class:`~bai.common.errors.InvalidValue` naming the path) files that are
missing, not regular files, or outside the base directory; the encoder raises
:class:`~bai.client.exceptions.BackendClientError` if a file changes size
while it is sent.  The parser raises
:class:`~bai.client.exceptions.MalformedResponse` (an ``InvalidValue``) for a
malformed body and never returns more bytes than it was fed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

import trio

from bai.client.exceptions import BackendClientError, MalformedResponse
from bai.common.errors import InvalidValue

__all__ = [
    "MultipartParser",
    "MultipartUpload",
    "Part",
    "PartData",
    "PartEnd",
    "PartStart",
    "UploadFile",
    "boundary_of",
    "plan_upload",
]

#: The form field name of each uploaded file (what the official client sends).
UPLOAD_FIELD: Final = "src"
_CHUNK: Final = 64 * 1024
#: A part's header block larger than this is refused.
MAX_HEADER_BYTES: Final = 16 * 1024

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class UploadFile:
    """One local file and the relative POSIX path it gets inside the session."""

    path: Path
    name: str
    size: int


def plan_upload(
    files: Sequence[str | os.PathLike[str]], basedir: str | os.PathLike[str] | None = None
) -> list[UploadFile]:
    """Resolve *files* against *basedir* (default: the current directory).

    Relative paths in *files* are relative to the current directory.  Each
    file's name in the session is its path relative to *basedir*; a file
    outside it, a missing file or a non-regular file raises
    :class:`~bai.common.errors.InvalidValue`.  This does blocking ``stat``
    calls: from Trio, run it through ``trio.to_thread.run_sync``.
    """
    base = Path.cwd() if basedir is None else Path(basedir).resolve()
    planned: list[UploadFile] = []
    for item in files:
        # Relative paths are relative to the current directory, as on a shell
        # command line; basedir only decides the names inside the session.
        resolved = Path(item).resolve()
        try:
            relative = resolved.relative_to(base)
        except ValueError:
            raise InvalidValue(
                f"is outside of the base directory {str(base)!r}", value=str(item), field="files"
            ) from None
        try:
            info = resolved.stat()
        except OSError as exc:
            raise InvalidValue(
                f"cannot be read: {exc.strerror}", value=str(item), field="files"
            ) from None
        if not resolved.is_file():
            raise InvalidValue("is not a regular file", value=str(item), field="files")
        planned.append(
            UploadFile(resolved, PurePosixPath(*relative.parts).as_posix(), info.st_size)
        )
    return planned


def _quote_filename(name: str) -> str:
    # HTML's form encoding: these three would break the quoted-string.
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass
class MultipartUpload:
    """A ``multipart/form-data`` body streaming *files* from disk."""

    files: Sequence[UploadFile]
    progress: ProgressCallback | None = None
    boundary: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part_header(self, item: UploadFile) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{UPLOAD_FIELD}"; '
            f'filename="{_quote_filename(item.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    def _trailer(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    @property
    def content_length(self) -> int:
        """The exact size of the body in bytes."""
        total = len(self._trailer())
        for item in self.files:
            total += len(self._part_header(item)) + item.size + 2
        return total

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for item in self.files:
            yield self._part_header(item)
            sent = 0
            async with await trio.open_file(item.path, "rb") as stream:
                while sent < item.size:
                    chunk = await stream.read(min(_CHUNK, item.size - sent))
                    if not chunk:
                        break
                    sent += len(chunk)
                    if self.progress is not None:
                        self.progress(len(chunk))
                    yield chunk
                extra = await stream.read(1)
            if sent != item.size or extra:
                raise BackendClientError(f"{str(item.path)!r} changed size while being uploaded")
            yield b"\r\n"
        yield self._trailer()


def boundary_of(content_type: str) -> str:
    """Return the ``boundary`` parameter of a multipart ``Content-Type``.

    Raises :class:`MalformedResponse` when the type is not multipart or the
    boundary is missing or invalid (RFC 2046: 1-70 characters).
    """
    mime, _, params = content_type.partition(";")
    if not mime.strip().lower().startswith("multipart/"):
        raise MalformedResponse("is not multipart", value=content_type, field="Content-Type")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if (
                1 <= len(value) <= 70
                and value.isascii()
                and "\r" not in value
                and "\n" not in value
            ):
                return value
            break
    raise MalformedResponse("has no valid boundary", value=content_type, field="Content-Type")


@dataclass(frozen=True, slots=True)
class PartStart:
    """A new part begins; ``headers`` has lower-cased names."""

    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """Some bytes of the current part's body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


Part = PartStart | PartData | PartEnd


class MultipartParser:
    """Splits a multipart body into :data:`Part` events, chunk by chunk.

    Call :meth:`feed` with each chunk and :meth:`close` at the end of the body;
    ``close`` raises if the closing delimiter never came.
    """

    def __init__(self, boundary: str) -> None:
        # Pretending the body starts with CRLF lets the first delimiter match
        # the same pattern as the others.
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._buffer = b"\r\n"
        self._state = "preamble"

    @property
    def finished(self) -> bool:
        """Whether the closing delimiter has been seen."""
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[Part]:
        """Consume *chunk*; return the part events it completes."""
        if self._state == "done":
            return []
        self._buffer += chunk
        events: list[Part] = []
        while True:
            if self._state == "preamble":
                index = self._buffer.find(self._delimiter)
                if index < 0:
                    # Keep just enough to recognise a delimiter split by the chunking.
                    self._buffer = self._buffer[-(len(self._delimiter) - 1) :]
                    return events
                self._buffer = self._buffer[index + len(self._delimiter) :]
                self._state = "after-delimiter"
            elif self._state == "after-delimiter":
                if len(self._buffer) < 2:
                    return events
                if self._buffer.startswith(b"--"):
                    self._state = "done"
                    self._buffer = b""
                    return events
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    if len(self._buffer) > MAX_HEADER_BYTES:
                        raise MalformedResponse(
                            "is not a delimiter line", value=self._buffer[:100], field="multipart"
                        )
                    return events
                if self._buffer[:line_end].strip(b" \t"):
                    raise MalformedResponse(
                        "has junk after a delimiter", value=self._buffer[:100], field="multipart"
                    )
                self._buffer = self._buffer[line_end + 2 :]
                self._state = "headers"
            elif self._state == "headers":
                if self._buffer.startswith(b"\r\n"):
                    end, header_bytes = 2, b""
                else:
                    index = self._buffer.find(b"\r\n\r\n")
                    if index < 0:
                        if len(self._buffer) > MAX_HEADER_BYTES:
                            raise MalformedResponse(
                                f"part headers exceed {MAX_HEADER_BYTES} bytes",
                                value=self._buffer[:100],
                                field="multipart",
                            )
                        return events
                    end, header_bytes = index + 4, self._buffer[:index]
                events.append(PartStart(_parse_headers(header_bytes)))
                self._buffer = self._buffer[end:]
                self._state = "body"
            else:  # body
                index = self._buffer.find(self._delimiter)
                if index < 0:
                    keep = len(self._delimiter) - 1
                    if len(self._buffer) > keep:
                        events.append(PartData(self._buffer[:-keep]))
                        self._buffer = self._buffer[-keep:]
                    return events
                if index:
                    events.append(PartData(self._buffer[:index]))
                events.append(PartEnd())
                self._buffer = self._buffer[index + len(self._delimiter) :]
                self._state = "after-delimiter"

    def close(self) -> None:
        """Check that the body ended properly; raises :class:`MalformedResponse` if not."""
        if self._state != "done":
            raise MalformedResponse(
                "ended before its closing delimiter", value=self._state, field="multipart"
            )


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in block.split(b"\r\n"):
        name, colon, value = raw.partition(b":")
        if not colon or not name.strip():
            raise MalformedResponse(
                "is not a header line", value=raw[:100], field="multipart part header"
            )
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers
