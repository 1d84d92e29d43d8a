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
``PATCH`` requests of at most *chunk_size* bytes.  Over plain HTTP on
Linux, with no proxy set for the host in the environment, each ``PATCH``
goes on a connection of its own whose body is sent with ``os.sendfile``
from the file to the socket in a worker thread (h11 frames the request and
reads the answer; the file's bytes never enter Python, and the storage
proxy splices them from its socket into the staging file).  Elsewhere (TLS,
a proxy) the body goes through the httpx client, streamed from disk in
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

import errno
import os
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import h11
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
#: Bytes read from the socket at a time for the answer to a sendfile ``PATCH``.
_ANSWER_READ: Final = 64 * 1024
#: Most bytes of the answer to a ``PATCH`` read (its body is a short error, if any).
_MAX_ANSWER: Final = 1 << 20
#: Whether a ``PATCH`` body can go with ``os.sendfile`` (Linux, and most Unixes).
_CAN_SENDFILE: Final = hasattr(os, "sendfile")


class _FileSpan:
    """A body part of *count* bytes, for h11's data passthrough (its bytes go with sendfile)."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


def _sendfile_target(url: httpx.URL) -> tuple[str, int] | None:
    """(host, port) of *url* if a ``PATCH`` to it may go with sendfile: plain HTTP, no proxy."""
    if not _CAN_SENDFILE or url.scheme != "http" or not url.host:
        return None
    proxies = urllib.request.getproxies_environment()
    if ("http" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(url.host):
        return None
    return url.host, url.port or 80


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
    sendfile: bool = True

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
        url = httpx.URL(self.url)
        target = _sendfile_target(url) if self.sendfile else None
        if target is not None:
            response = await self._sendfile_patch(url, target, headers, offset, count)
        else:
            response = await self.http.request(
                "PATCH",
                url,
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

    async def _sendfile_patch(
        self,
        url: httpx.URL,
        target: tuple[str, int],
        headers: dict[str, str],
        offset: int,
        count: int,
    ) -> httpx.Response:
        """One ``PATCH`` on a connection of its own, its body sent with ``os.sendfile``.

        Failures come as httpx's transport errors (so they resume as
        through httpx); the answer comes back whole, as an httpx response.
        """
        timeout = self.timeout
        connect = float("inf") if timeout.connect is None else timeout.connect
        try:
            with trio.fail_after(connect):
                stream = await trio.open_tcp_stream(*target)
        except trio.TooSlowError as exc:
            raise httpx.ConnectTimeout(f"connecting to {url.host} took over {connect} s") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        try:
            connection = h11.Connection(h11.CLIENT)
            request_headers = [
                ("Host", url.netloc.decode("ascii")),
                ("Accept-Encoding", "identity"),
                *headers.items(),
            ]
            head = connection.send(
                h11.Request(method="PATCH", target=url.raw_path, headers=request_headers)
            )
            # h11 frames the body by its length; its bytes go from the file with sendfile.
            connection.send_with_data_passthrough(h11.Data(data=cast(bytes, _FileSpan(count))))
            connection.send(h11.EndOfMessage())
            await self._send(stream, head or b"")
            await self._sendfile(stream.socket, offset, count)
            return await self._answer(connection, stream, url)
        finally:
            await trio.aclose_forcefully(stream)

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        idle = self.timeout.write
        try:
            with trio.fail_after(float("inf") if idle is None else idle):
                await stream.send_all(data)
        except trio.TooSlowError as exc:
            raise httpx.WriteTimeout(f"the storage proxy read nothing for {idle} s") from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.WriteError(str(exc)) from exc

    async def _sendfile(self, sock: trio.socket.SocketType, offset: int, count: int) -> None:
        """Send *count* bytes of the file from *offset* with ``os.sendfile`` (worker threads)."""
        idle = self.timeout.write
        position, end = offset, offset + count
        while position < end:
            with trio.move_on_after(float("inf") if idle is None else idle) as waited:
                await trio.lowlevel.wait_writable(sock)
            if waited.cancelled_caught:
                raise httpx.WriteTimeout(f"the storage proxy read nothing for {idle} s")
            try:
                # The socket is non-blocking: each call sends what fits in its buffer now.
                sent = await trio.to_thread.run_sync(
                    os.sendfile, sock.fileno(), self.fd, position, end - position
                )
            except BlockingIOError:
                continue
            except OSError as exc:
                if isinstance(exc, ConnectionError) or exc.errno in (
                    errno.EPIPE,
                    errno.ECONNRESET,
                    errno.ENOTCONN,
                    errno.ETIMEDOUT,
                ):
                    raise httpx.WriteError(str(exc)) from exc
                raise BackendClientError(f"cannot read {self.path}: {exc.strerror}") from exc
            if sent == 0:
                raise BackendClientError(f"{self.path} shrank while it was being uploaded")
            position += sent
            self.report(position)

    async def _answer(
        self, connection: h11.Connection, stream: trio.SocketStream, url: httpx.URL
    ) -> httpx.Response:
        """Read the answer (its head and its short body) into an httpx response."""
        idle = self.timeout.read
        head: h11.Response | None = None
        body: list[bytes] = []
        size = 0
        try:
            with trio.fail_after(float("inf") if idle is None else idle):
                while True:
                    event: Any = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(await stream.receive_some(_ANSWER_READ))
                    elif isinstance(event, h11.Response):
                        head = event
                    elif isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > _MAX_ANSWER:
                            raise httpx.RemoteProtocolError("the answer to a PATCH is too long")
                        body.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
                    # InformationalResponse (100 Continue): read on
        except trio.TooSlowError as exc:
            raise httpx.ReadTimeout(f"the storage proxy answered nothing for {idle} s") from exc
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.ReadError(str(exc)) from exc
        if head is None:
            raise httpx.RemoteProtocolError("the storage proxy closed without an answer")
        return httpx.Response(
            head.status_code,
            headers=[(name, value) for name, value in head.headers],
            content=b"".join(body),
            request=httpx.Request("PATCH", url),
        )

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
    sendfile: bool = True,
) -> int:
    """Upload the local file *source* to the tus *url*; returns the bytes the proxy confirmed.

    *size* is the size announced to the manager (default: the file's size
    now).  *progress* is called with (bytes sent, size) as blocks go out and
    with the proxy's offset after each answer and each resumption.
    *http_timeout* defaults to :func:`~bai.client.transfer.transfer_timeout` ``(10, 60)``.
    With *sendfile* False every ``PATCH`` goes through *http*, even where
    ``os.sendfile`` could send it.
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
            sendfile=sendfile,
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
