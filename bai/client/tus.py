"""tus 1.0 uploads to the storage proxy, resumed after dropped connections.

The manager's ``request-upload`` answers a ``url`` and a ``token`` for one
upload of a known size; the upload URL is ``url?token=...``.  The proxy
speaks the core tus protocol as the official client (aiotusclient) uses it:

* ``HEAD`` answers ``Upload-Offset`` (bytes it holds so far) and
  ``Upload-Length`` (the size the token announced);
* ``PATCH`` with ``Upload-Offset: N``, ``Content-Type:
  application/offset+octet-stream`` and ``Content-Length`` appends the body
  at byte N and answers ``204`` with the new ``Upload-Offset``; the file
  appears in the folder, atomically, once ``Upload-Length`` bytes arrived;
* every request carries ``Tus-Resumable: 1.0.0``.

:func:`tus_upload` asks ``HEAD`` where to start, then sends the file in
``PATCH`` requests of at most *chunk_size* bytes, each streamed from disk in
blocks of :data:`READ_BLOCK` bytes read in Trio's thread pool (the file is
never read whole, and the event loop never blocks on it).  The proxy keeps
what arrived before a connection dropped, so after a drop (or a timeout, or
a ``409`` while the proxy still finishes the broken request, or a retryable
status such as 503) the client waits (:class:`~bai.client.transfer.RetryPolicy`),
asks ``HEAD`` again and continues from the proxy's offset (*on_resume* is
called then, with that offset).

Guarantees: the upload ends only when the proxy confirmed ``Upload-Offset ==
size``, except for a 0-byte file, which the proxy completes when it issues
the token: nothing is sent for it (as with the official client); a local file that
shrinks while it is sent, or a proxy that expects another size, raises
:class:`~bai.client.exceptions.BackendClientError`; error statuses that
retrying cannot fix raise the typed
:class:`~bai.client.exceptions.BackendAPIError` at once; after
``max_retries`` resumptions the last failure is raised as a
``BackendClientError``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import trio

from bai.client.exceptions import BackendAPIError, BackendClientError, MalformedResponse
from bai.client.transfer import (
    ResumeCallback,
    RetryPolicy,
    TransferProgress,
    is_retryable,
    raise_for_status,
    transfer_timeout,
)

__all__ = ["DEFAULT_CHUNK_SIZE", "READ_BLOCK", "TUS_VERSION", "tus_upload"]

TUS_VERSION: Final = "1.0.0"
#: Bytes sent per ``PATCH`` request by default.
DEFAULT_CHUNK_SIZE: Final = 64 << 20
#: Bytes read from disk at a time.
READ_BLOCK: Final = 1 << 20
_OFFSET_CONTENT: Final = "application/offset+octet-stream"


def _header_int(response: httpx.Response, name: str) -> int:
    value = response.headers.get(name, "")
    if not value.isdigit():
        raise MalformedResponse("is missing or not a byte count", value=value, field=name)
    return int(value)


@dataclass
class _Upload:
    """One upload: where its bytes come from and where they go."""

    http: httpx.AsyncClient
    url: str | httpx.URL
    path: Path
    fd: int
    size: int
    chunk_size: int
    timeout: httpx.Timeout
    progress: TransferProgress | None

    def report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.size)

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, **extra}

    async def offset(self) -> int:
        """``HEAD``: the bytes the proxy holds; checks it expects this file's size."""
        response = await self.http.request(
            "HEAD", self.url, headers=self._headers(), timeout=self.timeout
        )
        await raise_for_status(response)
        length = response.headers.get("Upload-Length")
        if length is not None and length.strip() != str(self.size):
            raise BackendClientError(
                f"the storage proxy expects {length} bytes for {self.path.name}, not {self.size}"
            )
        offset = _header_int(response, "Upload-Offset")
        if offset > self.size:
            raise MalformedResponse(
                f"is past the end of the {self.size}-byte file", value=offset, field="Upload-Offset"
            )
        return offset

    async def patch(self, offset: int) -> int:
        """One ``PATCH`` of up to ``chunk_size`` bytes from *offset*; the proxy's new offset."""
        count = min(self.chunk_size, self.size - offset)
        headers = self._headers(
            **{
                "Upload-Offset": str(offset),
                "Content-Type": _OFFSET_CONTENT,
                "Content-Length": str(count),
            }
        )
        response = await self.http.request(
            "PATCH",
            self.url,
            headers=headers,
            content=self._blocks(offset, count),
            timeout=self.timeout,
        )
        await raise_for_status(response)
        new_offset = _header_int(response, "Upload-Offset")
        # Progress, or (for an empty PATCH) the same offset; never back or past the body.
        if not (offset < new_offset <= offset + count or new_offset == offset == offset + count):
            raise MalformedResponse(
                f"does not follow a PATCH of {count} bytes at {offset}",
                value=new_offset,
                field="Upload-Offset",
            )
        return new_offset

    async def _blocks(self, offset: int, count: int) -> AsyncIterator[bytes]:
        position, end = offset, offset + count
        while position < end:
            block = await trio.to_thread.run_sync(
                os.pread, self.fd, min(READ_BLOCK, end - position), position
            )
            if not block:
                raise BackendClientError(f"{self.path} shrank while it was being uploaded")
            position += len(block)
            yield block
            self.report(position)


async def tus_upload(
    http: httpx.AsyncClient,
    url: str | httpx.URL,
    source: str | os.PathLike[str],
    *,
    size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: TransferProgress | None = None,
    on_resume: ResumeCallback | None = None,
    retry: RetryPolicy | None = None,
    http_timeout: httpx.Timeout | None = None,
) -> int:
    """Upload the local file *source* to the tus *url*; returns the bytes the proxy confirmed.

    *size* is the size announced to the manager (default: the file's size
    now).  *progress* is called with (bytes sent, size) as blocks go out and
    with the proxy's offset after each answer and each resumption.
    *http_timeout* defaults to :func:`~bai.client.transfer.transfer_timeout` ``(10, 60)``.
    """
    if chunk_size <= 0:
        raise BackendClientError(f"the chunk size must be positive, not {chunk_size}")
    policy = retry or RetryPolicy()
    path = Path(source)
    try:
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
    except OSError as exc:
        raise BackendClientError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if size is None:
            size = (await trio.to_thread.run_sync(os.fstat, fd)).st_size
        if size == 0:
            # The proxy completes an empty upload when it issues the token (the
            # official client sends nothing for one); a request now would be refused.
            if progress is not None:
                progress(0, 0)
            return 0
        upload = _Upload(
            http=http,
            url=url,
            path=path,
            fd=fd,
            size=size,
            chunk_size=chunk_size,
            timeout=http_timeout or transfer_timeout(10.0, 60.0),
            progress=progress,
        )
        return await _drive(upload, policy, on_resume)
    except httpx.HTTPError as exc:
        raise BackendClientError(f"uploading {path.name} failed: {exc}") from exc
    finally:
        os.close(fd)


async def _drive(upload: _Upload, policy: RetryPolicy, on_resume: ResumeCallback | None) -> int:
    retries = streak = 0
    confirmed = 0
    offset: int | None = None  # unknown until HEAD answers
    interrupted: BaseException | None = None
    while True:
        before = confirmed
        try:
            if offset is None:
                offset = confirmed = await upload.offset()
                upload.report(offset)
                if interrupted is not None and on_resume is not None:
                    on_resume(retries, offset, interrupted)
                interrupted = None
            while offset < upload.size:
                offset = confirmed = await upload.patch(offset)
                upload.report(offset)
            return offset
        except (httpx.HTTPError, BackendAPIError) as exc:
            if not _resumable(exc):
                raise
            failure: BaseException = exc
            interrupted = exc
        retries += 1
        streak = 1 if confirmed > before else streak + 1
        if retries > policy.max_retries:
            raise BackendClientError(
                f"uploading {upload.path.name} failed after {policy.max_retries} resumptions: "
                f"{str(failure) or type(failure).__name__}"
            ) from failure
        await trio.sleep(policy.delay(streak))
        offset = None


def _resumable(exc: BaseException) -> bool:
    # 409: the proxy may still be finishing the request whose connection broke,
    # or holds another offset than the one sent; HEAD tells where it stands.
    return is_retryable(exc) or (isinstance(exc, BackendAPIError) and exc.status == 409)
