"""The client-facing API: downloads and tus uploads with transfer tokens (plain ASGI).

Routes (the token is the only credential; ``dst_dir`` in the query is ignored):

* ``GET /download?token=T`` streams the file the token names, with
  ``Content-Length``, ``Last-Modified``, ``ETag`` and ``Accept-Ranges: bytes``;
  ``Range`` (and ``If-Range``) answer 206 with the span asked for
  (:mod:`bai.storage.ranges`).  A folder token made with ``archive`` streams a
  zip of the folder (no length, no ranges).  ``HEAD`` answers the headers.
* ``OPTIONS /upload`` answers the tus discovery headers.
* ``HEAD /upload?token=T`` answers ``Upload-Offset`` and ``Upload-Length``.
* ``PATCH /upload?token=T`` appends its body at ``Upload-Offset`` (which must
  be the session's current offset, else 409) and answers 204 with the new
  ``Upload-Offset``; the file appears at its path, atomically, once all its
  bytes arrived.  One PATCH per session at a time (409 for a second); a
  dropped connection keeps what arrived.  Bytes past the announced size are
  refused (413) and the request then keeps nothing; the quotas and
  ``max-upload-size`` are checked again on every PATCH.

Throughput: served by :class:`bai.storage.http11.Http11Server`, a ``PATCH``
body with a ``Content-Length`` goes from the socket into the staging file at
the upload's offset with the server's splice receive (``os.splice`` through a
pipe, in a worker thread; the bytes never enter Python), which counts the
bytes in the file as they land, so a client that hangs up leaves exactly
those.  Elsewhere (TLS, chunked bodies, another ASGI server) body pieces
arrive up to 1 MiB each and are gathered, uncopied, into batches of
:data:`WRITE_CHUNK` bytes that a worker thread writes with one ``pwritev``
while the next batch fills.  A file download goes with the server's zero-copy
send (``os.sendfile`` from the file to the socket) when the scope offers it
(plain TCP), else as :data:`READ_CHUNK` blocks read one ahead of the socket
(TLS, or another ASGI server).  Served as a bare ASGI callable: no framework
work per piece.  No answer starts before the request's body has ended
(:meth:`_Request.drain`); a client that hangs up mid-answer ends only its
request, quietly.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, quote

import msgspec
import trio

from bai.common.asgi import Message, Receive, Scope, Send, serve_lifespan
from bai.common.errors import sole_exception
from bai.common.fileio import pwrite_all
from bai.common.storage_api import StorageErrorType, TokenClaims
from bai.storage import ranges, tus
from bai.storage.archive import write_zip
from bai.storage.context import StorageContext
from bai.storage.errors import PROBLEM_CONTENT_TYPE, StorageError, http_problem, problem_of
from bai.storage.http11 import SPLICE_RECEIVE, ZEROCOPY_SEND, ClientDisconnected
from bai.storage.volumes.base import Volume
from bai.storage.volumes.uploads import UploadSession
from bai.storage.volumes.walk import close_quietly

__all__ = ["READ_CHUNK", "WRITE_CHUNK", "ClientApp"]

log = logging.getLogger(__name__)

#: Bytes gathered from a PATCH body before one write to the staging file.
WRITE_CHUNK: Final = 4 * 1024 * 1024
#: Bytes read from a file per body message of a download.
READ_CHUNK: Final = 1024 * 1024
#: Most body pieces gathered for one write (well below IOV_MAX, 1024 on Linux).
_MAX_PIECES: Final = 256
#: Most bytes of a refused request's body read (and dropped) before the refusal is sent.
MAX_DRAIN: Final = 64 * 1024 * 1024

_T = StorageErrorType
_UPLOAD_METHODS: Final = "OPTIONS, HEAD, PATCH"
_DOWNLOAD_METHODS: Final = "GET, HEAD"


class _ClientGone(Exception):
    """The client disconnected before the answer could start: there is no one to answer."""


class _Request:
    """The ASGI receive side of one request, remembering whether its body has ended."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.ended = False
        self.disconnected = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.ended = self.disconnected = True
        elif not message.get("more_body", False):
            self.ended = True
        return message

    async def drain(self) -> None:
        """Read and drop what is left of the body (up to :data:`MAX_DRAIN` bytes).

        An answer is only sent once the body has ended: a client still
        sending may not read an early answer before the connection closes
        (and under hypercorn 0.18 its reader and writer could race on the
        socket when the client then hung up), and a client that hangs up
        before the end gets no answer at all (:class:`_ClientGone`).
        """
        left = MAX_DRAIN
        while not self.ended and left > 0:
            left -= len((await self.receive()).get("body", b""))
        if self.disconnected:
            raise _ClientGone


class _Reply:
    """The ASGI send side of one request, remembering whether the answer has started."""

    def __init__(self, send: Send, request: _Request, method: str) -> None:
        self._send = send
        self._request = request
        self.head_only = method == "HEAD"
        self.started = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._request.drain()
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = False) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        """The whole body: *count* bytes of *fd* from *offset* (the zero-copy extension)."""
        await self._send({"type": ZEROCOPY_SEND, "file": fd, "offset": offset, "count": count})

    async def stream(
        self, produce: Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]], *, buffer: int
    ) -> None:
        """Send, as the body, the parts *produce* puts in a channel holding *buffer* parts
        (closed when *produce* returns), then end the body."""
        send_part, receive_part = trio.open_memory_channel[bytes](buffer)

        async def producer() -> None:
            async with send_part:
                await produce(send_part)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            async with receive_part:
                async for part in receive_part:
                    await self.body(part, more=True)
        await self.body(b"")

    async def whole(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        data: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        if content_type is not None:
            headers = [*headers, (b"content-type", content_type.encode())]
        if not self.head_only:
            headers = [*headers, (b"content-length", str(len(data)).encode())]
        await self.start(status, headers)
        await self.body(b"" if self.head_only else data)

    async def problem(self, exc: BaseException) -> None:
        status, body, extra = problem_of(exc)
        headers = [(name.lower().encode(), value.encode()) for name, value in extra.items()]
        headers += tus.tus_headers() if isinstance(exc, StorageError) else []
        await self.whole(status, headers, msgspec.json.encode(body), PROBLEM_CONTENT_TYPE)

    async def refuse(self, status: int, detail: str, allow: str | None = None) -> None:
        headers = [(b"allow", allow.encode())] if allow else []
        await self.whole(
            status, headers, msgspec.json.encode(http_problem(status, detail)), PROBLEM_CONTENT_TYPE
        )


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _token(scope: Scope) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


@dataclass
class _StagedWrite:
    """One request's bytes going into an upload's staging file, from *start*."""

    fd: int
    start: int
    #: Where the bytes that are in the file end (the writers move it forward).
    written: int


@asynccontextmanager
async def _staged_write(volume: Volume, session: UploadSession) -> AsyncIterator[_StagedWrite]:
    """Open *session*'s staging file for one request's bytes, at the upload's offset.

    If the block fails (refused, a write failed, cancelled), nothing of this
    request is kept: the file is cut back to where it began.  Either way the
    session's offset becomes what is in the file, and the file is closed.
    """
    path = volume.uploads.staging / session.id
    fd = await trio.to_thread.run_sync(os.open, path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    staged = _StagedWrite(fd, session.offset, session.offset)
    try:
        yield staged
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(os.ftruncate, fd, staged.start)
        staged.written = staged.start
        raise
    finally:
        session.offset = staged.written
        session.last_active = time.monotonic()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close_quietly, fd)


class ClientApp:
    """The ASGI app of the client-facing API of proxy *ctx*."""

    def __init__(self, ctx: StorageContext) -> None:
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = _Request(receive)
        reply = _Reply(send, request, scope["method"])
        path = scope["path"]
        try:
            await self._dispatch(scope, request.receive, reply)
        except Exception as raised:
            exc = sole_exception(raised)
            if isinstance(exc, _ClientGone | ClientDisconnected):
                return  # no one is left to answer: the client hung up or stalled
            if reply.started:
                # Headers are out: the only honest signal left is a broken connection.
                log.warning("client API: %s %s failed mid-answer: %r", scope["method"], path, exc)
                raise
            try:
                await reply.problem(exc)
            except _ClientGone:
                return

    async def _dispatch(self, scope: Scope, receive: Receive, reply: _Reply) -> None:
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        if path == "/upload":
            if method == "OPTIONS":
                await self._options(reply)
            elif method == "HEAD":
                await self._head_upload(scope, reply)
            elif method == "PATCH":
                await self._patch(scope, receive, reply)
            else:
                await reply.refuse(405, f"{method} is not allowed here", _UPLOAD_METHODS)
        elif path == "/download":
            if method in ("GET", "HEAD"):
                await self._download(scope, reply)
            else:
                await reply.refuse(405, f"{method} is not allowed here", _DOWNLOAD_METHODS)
        else:
            await reply.refuse(404, f"no route {path!r}")

    # ------------------------------------------------------------------ uploads

    async def _options(self, reply: _Reply) -> None:
        headers = tus.tus_headers(
            Tus_Version=tus.TUS_VERSION,
            Tus_Max_Size=int(self.ctx.config.storage_proxy.max_upload_size),
            Access_Control_Allow_Methods=_UPLOAD_METHODS,
        )
        await reply.start(204, headers)
        await reply.body(b"")

    async def _session(self, claims: TokenClaims) -> tuple[Volume, UploadSession]:
        volume = self.ctx.volume(claims.volume)
        session = volume.uploads.get(claims.session)
        if session is None or (session.record.vfid, session.record.relpath) != (
            claims.vfid,
            claims.relpath,
        ):
            if await trio.to_thread.run_sync(volume.uploads.is_done, claims.session):
                detail = "this upload has completed; ask for a new token to upload again"
            else:
                detail = "this upload session is gone (expired or superseded by a newer upload)"
            raise StorageError(_T.INVALID_TOKEN, detail, field="token")
        return volume, session

    async def _head_upload(self, scope: Scope, reply: _Reply) -> None:
        claims = self.ctx.signer.verify(_token(scope), "upload")
        _, session = await self._session(claims)
        headers = tus.tus_headers(
            Upload_Offset=session.offset,
            Upload_Length=session.record.size,
            Cache_Control="no-store",
        )
        await reply.start(200, headers)
        await reply.body(b"")

    async def _patch(self, scope: Scope, receive: Receive, reply: _Reply) -> None:
        claims = self.ctx.signer.verify(_token(scope), "upload")
        headers = _headers(scope)
        offset = tus.check_patch_headers(headers)
        length = tus.content_length(headers)
        volume, session = await self._session(claims)
        if session.busy:
            raise StorageError(
                _T.UPLOAD_CONFLICT, "another request is writing this upload now", field="token"
            )
        if offset != session.offset:
            raise StorageError(
                _T.UPLOAD_CONFLICT,
                f"the upload is at offset {session.offset}, not {offset}: resume from there",
                field="Upload-Offset",
                headers={"Upload-Offset": str(session.offset)},
            )
        room = session.record.size - offset
        if length is not None and length > room:
            raise StorageError(
                _T.UPLOAD_TOO_LARGE,
                f"{length} bytes at offset {offset} exceed the upload's {session.record.size}",
                field="Content-Length",
            )
        session.busy = True
        try:
            self.ctx.check_upload_size(session.record.size)
            await volume.check_upload_room(session.id)
            splice = scope["extensions"].get(SPLICE_RECEIVE) if length is not None else None
            if splice is not None:
                complete = await self._splice(volume, session, splice["splice"])
            else:
                complete = await self._receive(volume, session, receive, room)
            if complete is None:
                return  # the client went away: what arrived is kept, no one to answer
            if session.offset == session.record.size:
                await volume.finish_upload(session.id)
        finally:
            session.busy = False
        await reply.start(204, tus.tus_headers(Upload_Offset=session.offset))
        await reply.body(b"")

    async def _splice(
        self, volume: Volume, session: UploadSession, splice: Callable[..., Awaitable[bool]]
    ) -> bool | None:
        """Splice the body (its ``Content-Length``, checked against the room left) into the
        staging file; None if the client disconnected (what arrived is kept)."""
        async with _staged_write(volume, session) as staged:

            def progress(moved: int) -> None:
                staged.written = staged.start + moved  # these bytes are in the file

            complete = await splice(staged.fd, staged.start, progress)
        return True if complete else None

    async def _receive(
        self, volume: Volume, session: UploadSession, receive: Receive, room: int
    ) -> bool | None:
        """Append the request body to the staging file; None if the client disconnected.

        Raises UploadTooLarge (and truncates back, keeping nothing) when more
        than *room* bytes arrive.
        """
        disconnected = False
        async with _staged_write(volume, session) as staged:
            send_chunk, receive_chunk = trio.open_memory_channel[list[bytes]](1)

            async def writer() -> None:
                async with receive_chunk:
                    async for pieces in receive_chunk:
                        at = staged.written
                        moved = await trio.to_thread.run_sync(pwrite_all, staged.fd, pieces, at)
                        staged.written = at + moved

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                async with send_chunk:
                    # The body's pieces as they came, written with one pwritev: no copy here.
                    pieces: list[bytes] = []
                    gathered = received = 0
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            disconnected = True
                            break
                        data = message.get("body", b"")
                        received += len(data)
                        if received > room:
                            raise StorageError(
                                _T.UPLOAD_TOO_LARGE,
                                f"more bytes than the {session.record.size} the upload announced",
                                field="Content-Length",
                            )
                        if data:
                            pieces.append(data)
                            gathered += len(data)
                        more = message.get("more_body", False)
                        if gathered >= WRITE_CHUNK or len(pieces) >= _MAX_PIECES:
                            await send_chunk.send(pieces)
                            pieces, gathered = [], 0
                        if not more:
                            break
                    if pieces:
                        await send_chunk.send(pieces)
        return None if disconnected else True

    # ------------------------------------------------------------------ downloads

    async def _download(self, scope: Scope, reply: _Reply) -> None:
        claims = self.ctx.signer.verify(_token(scope), "download")
        volume = self.ctx.volume(claims.volume)
        fd, st = await volume.open_download(claims.vfid, claims.relpath)
        try:
            if stat.S_ISDIR(st.st_mode) or claims.archive:
                if not claims.archive:
                    raise StorageError(
                        _T.INVALID_REQUEST,
                        f"{claims.relpath} is a folder: ask for an archive",
                        field="token",
                    )
                await self._archive(fd, st, claims, reply)
            else:
                await self._file(fd, st, scope, reply)
        finally:
            await trio.to_thread.run_sync(close_quietly, fd)

    async def _file(self, fd: int, st: os.stat_result, scope: Scope, reply: _Reply) -> None:
        span = ranges.requested_range(_headers(scope), st)
        out = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(span.length).encode()),
            (b"last-modified", ranges.last_modified(st).encode()),
            (b"etag", ranges.etag(st).encode()),
            (b"accept-ranges", b"bytes"),
            (b"cache-control", b"no-store"),
        ]
        if span.partial:
            out.append((b"content-range", span.content_range().encode()))
        await reply.start(206 if span.partial else 200, out)
        if reply.head_only or span.length == 0:
            await reply.body(b"")
            return
        if ZEROCOPY_SEND in scope.get("extensions", {}):
            # The server sends the span from the page cache: no byte passes through here.
            await reply.sendfile(fd, span.start, span.length)
            return

        async def reader(send_block: trio.MemorySendChannel[bytes]) -> None:
            at = span.start
            while at < span.end:
                block = await trio.to_thread.run_sync(
                    os.pread, fd, min(READ_CHUNK, span.end - at), at
                )
                if not block:
                    raise StorageError(_T.FILE_NOT_FOUND, "the file shrank while it was sent")
                at += len(block)
                await send_block.send(block)

        await reply.stream(reader, buffer=1)

    async def _archive(
        self, fd: int, st: os.stat_result, claims: TokenClaims, reply: _Reply
    ) -> None:
        name = claims.relpath.rsplit("/", 1)[-1] if claims.relpath != "." else claims.vfid
        disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}.zip"
        await reply.start(
            200,
            [
                (b"content-type", b"application/zip"),
                (b"content-disposition", disposition.encode()),
                (b"last-modified", ranges.last_modified(st).encode()),
                (b"accept-ranges", b"none"),
                (b"cache-control", b"no-store"),
            ],
        )
        if reply.head_only:
            await reply.body(b"")
            return

        async def zipper(send_part: trio.MemorySendChannel[bytes]) -> None:
            def emit(part: bytes) -> None:
                trio.from_thread.run(send_part.send, part)

            await trio.to_thread.run_sync(write_zip, fd, emit)

        await reply.stream(zipper, buffer=2)
