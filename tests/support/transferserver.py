"""A small storage proxy client API for the client's transfer tests: tus uploads, ranged downloads.

:class:`TransferServer` speaks real HTTP/1.1 over loopback TCP (Trio sockets
and h11, no framework in between, so a test controls every byte) and serves
the client-facing routes of :mod:`bai.common.storage_api`:

* ``OPTIONS /upload``: the tus discovery headers;
* ``HEAD /upload?token=T``: ``Upload-Offset`` and ``Upload-Length``;
* ``PATCH /upload?token=T``: appends the body at ``Upload-Offset`` (409 on
  another offset), keeps what arrived when the connection drops, and moves
  the staged file into place once ``Upload-Length`` bytes arrived (an empty
  upload at once, as the real proxy does); a token whose upload completed is
  refused (401);
* ``GET /download?token=T``: the file with ``Last-Modified`` (and a strong
  ``ETag`` with :attr:`TransferServer.etags`); ``Range: bytes=N-`` answers
  206 when ``If-Range`` is absent or matches the validator, 200 (the whole
  file) when it does not, 416 past the end.

Faults: :attr:`TransferServer.drop_patch_after` and
:attr:`TransferServer.drop_download_after` hold byte counts; each PATCH (or
GET) takes the next one, if any, and the server closes the connection once
that many body bytes went through, as a broken network would.
:attr:`TransferServer.on_drop` runs after each such drop (to change the file
under a download, say).  Every request is recorded.

Tokens are plain strings registered by the test (:meth:`expect_upload`,
:meth:`offer_download`), or handed out by a ``support.fakemanager`` through
:func:`wire_folder`; the signed-token rules belong to the real proxy's tests.
The fixture :func:`proxy` is one running in the test's nursery, its files
under ``tmp_path / "proxy"``; :func:`content` reads a file the tests compare.
It holds no tests itself.
"""

from __future__ import annotations

import email.utils
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h11
import pytest
import trio
from quart import Response

from support.fakemanager import FakeManager, json_response, problem
from support.fakemanager import Recorded as ManagerRequest

__all__ = ["Recorded", "TransferServer", "content", "proxy", "wire_folder"]

_BLOCK = 64 * 1024


@dataclass
class Recorded:
    """One request as the server read it (its body is not kept)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _Upload:
    dest: Path
    staging: Path
    length: int
    offset: int = 0
    done: bool = False


class _Dropped(Exception):
    """The fault injection closed the connection."""


@dataclass
class TransferServer:
    """The client-facing API of a storage proxy, for tests (see the module docstring)."""

    root: Path
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    drop_patch_after: list[int] = field(default_factory=list)
    drop_download_after: list[int] = field(default_factory=list)
    on_drop: Callable[[], None] | None = None
    #: Send a strong ETag with downloads (and accept it in If-Range).
    etags: bool = False
    uploads: dict[str, _Upload] = field(default_factory=dict)
    downloads: dict[str, Path] = field(default_factory=dict)

    def expect_upload(self, token: str, dest: Path, length: int) -> str:
        """Accept one upload of *length* bytes to *dest* with *token*; its URL."""
        staging = self.root / f".staging-{token}"
        staging.write_bytes(b"")
        upload = self.uploads[token] = _Upload(dest=dest, staging=staging, length=length)
        if length == 0:
            # As the real proxy does: an empty upload is complete at once.
            staging.replace(dest)
            upload.done = True
        return f"{self.url}/upload?token={token}"

    def offer_download(self, token: str, path: Path) -> str:
        """Serve *path* with *token*; its URL."""
        self.downloads[token] = path
        return f"{self.url}/download?token={token}"

    def count(self, method: str) -> int:
        return sum(1 for r in self.requests if r.method == method)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._connection, listeners)

    # ------------------------------------------------------------ HTTP plumbing

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next(conn, stream)
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                await self._handle(conn, stream, event)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                # Drain what is left of the request (an unread body) before reusing.
                while conn.their_state is not h11.DONE:
                    if isinstance(await self._next(conn, stream), h11.ConnectionClosed):
                        return
                conn.start_next_cycle()
        except (_Dropped, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await stream.aclose()

    async def _next(self, conn: h11.Connection, stream: trio.SocketStream) -> object:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_BLOCK)
                conn.receive_data(data)  # b"" tells h11 the peer closed
                continue
            return event

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        event: h11.Response | h11.Data | h11.EndOfMessage,
    ) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)

    async def _respond(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        headers: dict[str, str],
        body: bytes = b"",
    ) -> None:
        if status != 204:  # a 204 has no body and so no length (RFC 9110)
            headers = {"Content-Length": str(len(body)), **headers}
        await self._send(
            conn, stream, h11.Response(status_code=status, headers=list(headers.items()))
        )
        if body:
            await self._send(conn, stream, h11.Data(data=body))
        await self._send(conn, stream, h11.EndOfMessage())

    async def _problem(
        self, conn: h11.Connection, stream: trio.SocketStream, status: int, kind: str, detail: str
    ) -> None:
        body = json.dumps(
            {
                "type": f"https://bai.dev/problems/storage/{kind}",
                "title": kind,
                "status": status,
                "detail": detail,
            }
        ).encode()
        await self._respond(
            conn, stream, status, {"Content-Type": "application/problem+json"}, body
        )

    def _drop(self) -> None:
        if self.on_drop is not None:
            self.on_drop()
        raise _Dropped

    # ------------------------------------------------------------ routes

    async def _handle(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        target = urlsplit(request.target.decode())
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        method = request.method.decode()
        query = parse_qs(target.query)
        self.requests.append(Recorded(method, target.path, query, headers))
        token = query.get("token", [""])[0]
        tus = {"Tus-Resumable": "1.0.0"}
        if (method, target.path) == ("OPTIONS", "/upload"):
            extra = {"Tus-Version": "1.0.0", "Tus-Extension": "", "Tus-Max-Size": str(1 << 40)}
            await self._respond(conn, stream, 204, {**tus, **extra})
        elif target.path == "/upload" and method in ("HEAD", "PATCH"):
            upload = self.uploads.get(token)
            if upload is None or upload.done:
                await self._problem(conn, stream, 401, "InvalidToken", "no such upload")
            elif method == "HEAD":
                offsets = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length)}
                await self._respond(
                    conn, stream, 200, {**tus, **offsets, "Cache-Control": "no-store"}
                )
            else:
                await self._patch(conn, stream, headers, upload, tus)
        elif (method, target.path) == ("GET", "/download"):
            path = self.downloads.get(token)
            if path is None:
                await self._problem(conn, stream, 401, "InvalidToken", "no such download")
            else:
                await self._download(conn, stream, headers, path)
        else:
            await self._problem(conn, stream, 404, "NotFound", f"{method} {target.path}")

    async def _patch(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        headers: dict[str, str],
        upload: _Upload,
        tus: dict[str, str],
    ) -> None:
        if headers.get("upload-offset") != str(upload.offset):
            await self._problem(
                conn, stream, 409, "UploadConflict", f"the offset is {upload.offset}"
            )
            return
        if headers.get("content-type") != "application/offset+octet-stream":
            await self._problem(conn, stream, 400, "InvalidRequest", "wrong content type")
            return
        budget = self.drop_patch_after.pop(0) if self.drop_patch_after else None
        with upload.staging.open("r+b") as staging:
            staging.seek(upload.offset)
            while True:
                event = await self._next(conn, stream)
                if isinstance(event, h11.EndOfMessage):
                    break
                if isinstance(event, h11.ConnectionClosed):
                    raise _Dropped
                assert isinstance(event, h11.Data)
                data = bytes(event.data)
                if budget is not None and len(data) >= budget:
                    staging.write(data[:budget])
                    upload.offset += budget
                    staging.flush()
                    self._drop()
                if budget is not None:
                    budget -= len(data)
                staging.write(data)
                upload.offset += len(data)
                if upload.offset > upload.length:
                    await self._problem(conn, stream, 413, "UploadTooLarge", "too many bytes")
                    return
        if upload.offset == upload.length:
            upload.staging.replace(upload.dest)
            upload.done = True
        await self._respond(conn, stream, 204, {**tus, "Upload-Offset": str(upload.offset)})

    async def _download(
        self, conn: h11.Connection, stream: trio.SocketStream, headers: dict[str, str], path: Path
    ) -> None:
        info = await trio.to_thread.run_sync(path.stat)
        size = info.st_size
        modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
        start = 0
        wanted = headers.get("range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            if_range = headers.get("if-range")
            if if_range is None or if_range == (etag if self.etags else modified):
                start = int(wanted[len("bytes=") : -1])
        base = {"Last-Modified": modified, "Accept-Ranges": "bytes"}
        if self.etags:
            base["ETag"] = etag
        if start >= size and start:
            await self._respond(conn, stream, 416, {**base, "Content-Range": f"bytes */{size}"})
            return
        status, extra = 200, {}
        if start:
            status, extra = 206, {"Content-Range": f"bytes {start}-{size - 1}/{size}"}
        head = {**base, **extra, "Content-Type": "application/octet-stream"}
        head["Content-Length"] = str(size - start)
        await self._send(conn, stream, h11.Response(status_code=status, headers=list(head.items())))
        budget = self.drop_download_after.pop(0) if self.drop_download_after else None
        with path.open("rb") as source:
            source.seek(start)
            while block := source.read(_BLOCK):
                if budget is not None and len(block) >= budget:
                    await self._send(conn, stream, h11.Data(data=block[:budget]))
                    self._drop()
                if budget is not None:
                    budget -= len(block)
                await self._send(conn, stream, h11.Data(data=block))
        await self._send(conn, stream, h11.EndOfMessage())


def wire_folder(manager: FakeManager, server: TransferServer, name: str) -> Path:
    """Let *manager* hand out transfer tokens of *server* for the folder *name*.

    ``POST /folders/NAME/request-upload`` and ``.../request-download`` answer
    ``{"token", "url"}`` as the manager does; the folder's files live in the
    returned directory.  Downloading a missing file answers 404.
    """
    folder = server.root / name
    folder.mkdir(parents=True, exist_ok=True)
    tokens = itertools.count(1)

    async def request_upload(recorded: ManagerRequest) -> Response:
        body = recorded.json()
        dest = folder / body["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        token = f"up{next(tokens)}"
        server.expect_upload(token, dest, body["size"])
        return json_response({"token": token, "url": f"{server.url}/upload"})

    async def request_download(recorded: ManagerRequest) -> Response:
        path = folder / recorded.json()["path"]
        if not path.is_file():
            return problem(404, "file-not-found", "File not found", str(path))
        token = f"down{next(tokens)}"
        server.offer_download(token, path)
        return json_response({"token": token, "url": f"{server.url}/download"})

    manager.add("POST", f"/folders/{name}/request-upload", request_upload)
    manager.add("POST", f"/folders/{name}/request-download", request_download)
    return folder


def content(path: Path) -> bytes:
    """The bytes of a (small) test file."""
    return path.read_bytes()


@pytest.fixture
async def proxy(nursery: trio.Nursery, tmp_path: Path) -> TransferServer:
    """A running :class:`TransferServer` with its root at ``tmp_path / "proxy"``."""
    root = tmp_path / "proxy"
    root.mkdir()
    server = TransferServer(root)
    await nursery.start(server.serve)
    return server
