"""The proxy's own HTTP/1.1 server (:mod:`bai.storage.http11`) over real sockets.

Part one drives :class:`Http11Server` with small ASGI apps of the tests: the
zero-copy extension (spans, positions, several parts), the splice receive
extension (a whole body, a hangup mid-body), keep-alive, ``Expect:
100-continue``, malformed and oversized heads, failing apps, stalled and idle
clients.  Part two drives the storage proxy's client-facing API: clients that
hang up mid-download leave no descriptor open and the listener serving, the
copying path (no zero-copy, and TLS) answers byte for byte what ``sendfile``
answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import h11
import httpx
import msgspec
import pytest
import trio

from bai.client.transfer import bulk_client, download_file
from bai.common.asgi import Receive, Scope, Send
from bai.common.storage_api import AUTH_HEADER
from bai.storage.client_api import ClientApp
from bai.storage.http11 import (
    MAX_HEAD,
    SPLICE_RECEIVE,
    ZEROCOPY_SEND,
    ASGIApp,
    ClientDisconnected,
    Http11Server,
)
from bai.storage.server import ProxyAddresses, StorageProxyService

from support.storage import storage_config

LOG = logging.getLogger("test.http11")
SECRET = "manager-secret-for-the-http11-tests"
SCOPE = "user:12345678-1234-1234-1234-123456789abc"
VFID = "0123456789abcdef0123456789abcdef"


async def _serve(
    nursery: trio.Nursery,
    app: ASGIApp,
    *,
    idle_timeout: float = 60.0,
    keep_alive_timeout: float = 5.0,
) -> int:
    """Start an Http11Server for *app* on a free loopback port; its port."""
    server = Http11Server(
        app, logger=LOG, idle_timeout=idle_timeout, keep_alive_timeout=keep_alive_timeout
    )
    bound: list[str] = await nursery.start(server.serve, "127.0.0.1", 0)
    assert bound[0].startswith("http://127.0.0.1:")
    return int(bound[0].rsplit(":", 1)[1])


async def _get(stream: trio.SocketStream) -> tuple[h11.Response, bytes]:
    """``GET /`` on *stream*, and its whole answer read with an h11 client."""
    conn = h11.Connection(h11.CLIENT)
    head = conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    await stream.send_all((head or b"") + (conn.send(h11.EndOfMessage()) or b""))
    return await _answer(conn, stream)


async def _answer(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Response, bytes]:
    response: h11.Response | None = None
    body = bytearray()
    with trio.fail_after(10):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(1 << 16))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, bytes(body)
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise AssertionError(f"unexpected {event!r}")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _fds_back_to(count: int) -> None:
    """Wait until this process has no more open descriptors than *count*."""
    with trio.fail_after(10):
        while True:
            if _open_fds() <= count:
                return
            await trio.sleep(0.02)


class _FileObject:
    """A file object as ASGI's zero-copy extension describes it: only ``fileno()``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


# ------------------------------------------------------------- the server alone


async def test_zero_copy_sends_spans_positions_and_parts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data = os.urandom(3 * 2**20 + 11)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    seen: list[dict[str, object]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["extensions"])
        fd = os.open(path, os.O_RDONLY)
        try:
            if scope["path"] == "/span":  # offset and count given: Content-Length framing
                headers = [(b"content-length", b"1000")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": ZEROCOPY_SEND, "file": fd, "offset": 5, "count": 1000})
            else:  # the file's position, then two parts, then a plain end: chunked framing
                await send({"type": "http.response.start", "status": 200, "headers": []})
                os.lseek(fd, 10, os.SEEK_SET)
                file = _FileObject(fd)  # an object with fileno() works as well as a number
                await send({"type": ZEROCOPY_SEND, "file": file, "count": 2**20, "more_body": True})
                await send({"type": ZEROCOPY_SEND, "file": fd, "more_body": True})
                await send({"type": "http.response.body", "body": b"end"})
        finally:
            os.close(fd)

    port = await _serve(nursery, app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        span = await http.get("/span")
        assert span.content == data[5:1005]
        rest = await http.get("/rest")
        assert rest.headers["transfer-encoding"] == "chunked"
        # Without an offset sendfile reads from the position and moves it on.
        assert rest.content == data[10:] + b"end"
    assert seen == [{ZEROCOPY_SEND: {}}] * 2


async def test_keep_alive_scope_and_bodies(nursery: trio.Nursery) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 100_000

    port = await _serve(nursery, app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        first = await http.put("/a%20b", params={"token": "t/1"}, content=b"y" * 3_000_000)
        assert first.text == "3000000"
        second = await http.post("/c", content=chunks())  # chunked request body
        assert second.text == "500000"
        head = await http.head("/d")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "1"
    assert [s["method"] for s in scopes] == ["PUT", "POST", "HEAD"]
    assert scopes[0]["path"] == "/a b" and scopes[0]["raw_path"] == b"/a%20b"
    assert scopes[0]["query_string"] == b"token=t%2F1"
    assert scopes[0]["http_version"] == "1.1" and scopes[0]["scheme"] == "http"
    # One connection served all three.
    assert len({s["client"] for s in scopes}) == 1
    assert "date" in dict(first.headers)


async def test_expect_100_continue(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body[::-1]})

    port = await _serve(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"PATCH /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(5):
            interim = await stream.receive_some(1024)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"hello")
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="PATCH", target="/", headers=[("host", "x")]))
        response, body = await _answer(conn, stream)
    assert response.status_code == 200 and body == b"olleh"


async def test_an_answer_before_100_continue_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body"})

    port = await _serve(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        reply = b""
        with trio.fail_after(5):  # the client may or may not send its body now: no waiting
            while chunk := await stream.receive_some(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b" 100 " not in reply.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * MAX_HEAD + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\nHost: x\r\n\r\n", 400),
    ],
)
async def test_malformed_requests_get_a_problem_and_a_close(
    nursery: trio.Nursery, request_bytes: bytes, status: int
) -> None:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    port = await _serve(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request_bytes)
        reply = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                reply += chunk  # the server closes after its answer
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"content-type: application/problem+json" in head.lower()
    assert msgspec.json.decode(body)["status"] == status
    assert not called


async def test_failing_apps_answer_500_or_cut_the_connection(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/before":
            raise RuntimeError("broken before the answer")
        if scope["path"] == "/nothing":
            return
        if scope["path"] == "/during":
            headers = [(b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            raise RuntimeError("broken mid-answer")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    port = await _serve(nursery, app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for path in ("/before", "/nothing"):
            failed = await http.get(path)
            assert failed.status_code == 500
            assert failed.headers["content-type"] == "application/problem+json"
            assert "reference" in failed.json()["detail"]  # the traceback is in the log only
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/during")  # a short body: the connection is cut
        assert (await http.get("/fine")).status_code == 204


async def test_a_stalled_reader_is_dropped_and_its_file_closed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(64 * 2**20))  # far more than the socket buffers hold
    outcome: list[BaseException | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = str(path.stat().st_size).encode()
            headers = [(b"content-length", size)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": ZEROCOPY_SEND, "file": fd, "offset": 0})
            outcome.append(None)
        except ClientDisconnected as exc:
            outcome.append(exc)
            raise
        finally:
            os.close(fd)

    port = await _serve(nursery, app, idle_timeout=0.5)
    before = _open_fds()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.receive_some(65536)  # then read nothing more
        with trio.fail_after(10):
            while True:
                if outcome:
                    break
                await trio.sleep(0.05)
    assert isinstance(outcome[0], ClientDisconnected)
    await _fds_back_to(before)
    async with httpx.AsyncClient() as http:  # the listener is still there
        response = await http.head(f"http://127.0.0.1:{port}/")
        assert response.status_code == 200 and response.content == b""


async def test_idle_connections_are_closed(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    port = await _serve(nursery, app, keep_alive_timeout=0.3)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # an unfinished head
        with trio.fail_after(5):
            assert await stream.receive_some(1024) == b""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        response, _ = await _get(stream)
        assert response.status_code == 204
        with trio.fail_after(5):  # kept alive, then closed once idle
            assert await stream.receive_some(1024) == b""


def _splice_app(
    path: Path,
    offset: int,
    results: list[tuple[bool, list[int], dict[str, object]]],
    spliced: trio.Event | None = None,
) -> ASGIApp:
    """An app that splices each request's body into *path* at *offset* (if offered);
    sets *spliced* after each splice."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        extension = scope["extensions"].get(SPLICE_RECEIVE)
        if extension is None:  # not offered: read the body the usual way
            size = 0
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = f"read {size}".encode()
        else:
            progress: list[int] = []
            fd = os.open(path, os.O_WRONLY)
            try:
                complete = await extension["splice"](fd, offset, progress.append)
            finally:
                os.close(fd)
            end = await receive()
            results.append((complete, progress, end))
            if spliced is not None:
                spliced.set()
            if not complete:
                return
            body = f"spliced {progress[-1] if progress else 0}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_splice_receive_writes_the_body_at_the_offset(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "staging.bin"
    path.write_bytes(b"k" * 1000)
    data = os.urandom(5 * 2**20 + 7)
    results: list[tuple[bool, list[int], dict[str, object]]] = []
    port = await _serve(nursery, _splice_app(path, 1000, results))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        head = conn.send(
            h11.Request(
                method="PATCH",
                target="/u",
                headers=[("host", "x"), ("content-length", str(len(data)))],
            )
        )
        # The head and the body's first bytes in one write: the server's head read takes some.
        await stream.send_all((head or b"") + data[:5000])
        await stream.send_all(data[5000:])
        conn.send(h11.Data(data=data))
        conn.send(h11.EndOfMessage())
        response, body = await _answer(conn, stream)
        assert response.status_code == 200 and body == f"spliced {len(data)}".encode()
        assert (b"connection", b"close") in response.headers  # the body went past h11
        with trio.fail_after(5):
            assert await stream.receive_some(1024) == b""  # and the connection closed
    assert path.read_bytes() == b"k" * 1000 + data
    [(complete, progress, end)] = results
    assert complete and end == {"type": "http.request", "body": b"", "more_body": False}
    assert progress == sorted(progress) and progress[-1] == len(data)
    # A chunked body is not offered the extension; the connection stays open for the next.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def chunks() -> AsyncIterator[bytes]:
            yield b"x" * 1000

        assert (await http.post("/c", content=chunks())).text == "read 1000"
        assert (await http.put("/p", content=b"abc")).text == "spliced 3"
        assert (await http.post("/c", content=chunks())).text == "read 1000"
    assert path.read_bytes()[1000:1003] == b"abc"


async def test_a_hangup_mid_splice_counts_exactly_what_arrived(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "staging.bin"
    path.write_bytes(b"")
    data = os.urandom(3 * 2**20)
    results: list[tuple[bool, list[int], dict[str, object]]] = []
    spliced = trio.Event()
    port = await _serve(nursery, _splice_app(path, 0, results, spliced))
    before = _open_fds()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = f"PATCH /u HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
        await stream.send_all(head.encode() + data[:100])
        await stream.send_all(data[100:1_500_003])
    with trio.fail_after(10):
        await spliced.wait()
    [(complete, progress, end)] = results
    assert not complete and end == {"type": "http.disconnect"}
    assert progress[-1] == 1_500_003
    assert path.read_bytes() == data[:1_500_003]
    await _fds_back_to(before)  # the pipe and the connection closed


# ------------------------------------------------------------- the proxy's client API


@dataclass
class Proxy:
    service: StorageProxyService
    addresses: ProxyAddresses
    manager: httpx.AsyncClient
    folder: Path

    async def token(self, relpath: str, archive: bool = False) -> str:
        body = {"volume": "v1", "vfid": VFID, "relpath": relpath, "archive": archive}
        response = await self.manager.post("/folder/file/download", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["token"])


@asynccontextmanager
async def _proxy(nursery: trio.Nursery, tmp_path: Path, **changes: object) -> AsyncIterator[Proxy]:
    """A proxy with volume ``v1`` holding folder VFID, *changes* made to ``[api.client]``."""
    config = storage_config(tmp_path, volumes=("v1",), secret=SECRET)
    if changes:
        client = msgspec.structs.replace(config.api.client, **changes)
        config = msgspec.structs.replace(
            config, api=msgspec.structs.replace(config.api, client=client)
        )
    service = StorageProxyService(config)
    addresses: ProxyAddresses = await nursery.start(service.serve)
    async with httpx.AsyncClient(
        base_url=addresses.manager_api, headers={AUTH_HEADER: SECRET}
    ) as manager:
        body = {"volume": "v1", "vfid": VFID, "quota_scope": SCOPE}
        assert (await manager.post("/folder/create", json=body)).status_code in (200, 204)
        mount = (await manager.post("/folder/mount", json={"volume": "v1", "vfid": VFID})).json()
        yield Proxy(service, addresses, manager, Path(mount["path"]))


async def test_hangups_mid_download_leave_nothing_open(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with _proxy(nursery, tmp_path) as proxy:
        data = os.urandom(32 * 2**20)
        (proxy.folder / "big.bin").write_bytes(data)
        token = await proxy.token("big.bin")
        port = int(proxy.addresses.client_api.rsplit(":", 1)[1])
        before = _open_fds()
        for n in range(20):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            request = f"GET /download?token={token} HTTP/1.1\r\nHost: x\r\n\r\n"
            await stream.send_all(request.encode())
            got = 0
            while got < n * 100_000 + 1:  # some of the body, a different amount each time
                got += len(await stream.receive_some(65536))
            if n % 2:
                # Close with a reset rather than a FIN.
                linger = struct.pack("ii", 1, 0)
                stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, linger)
            await stream.aclose()
        # The same for a folder streamed as a zip archive (made in a worker thread).
        (proxy.folder / "d").mkdir()
        (proxy.folder / "d" / "big.bin").write_bytes(data)
        archive = await proxy.token("d", archive=True)
        for n in range(4):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            request = f"GET /download?token={archive} HTTP/1.1\r\nHost: x\r\n\r\n"
            await stream.send_all(request.encode())
            got = 0
            while got < (n + 1) * 1_000_000:
                got += len(await stream.receive_some(65536))
            await stream.aclose()
        await _fds_back_to(before)
        async with httpx.AsyncClient(base_url=proxy.addresses.client_api) as http:
            whole = await http.get("/download", params={"token": token})
            assert whole.status_code == 200 and whole.content == data


async def _answers(
    base_url: str, token: str, verify: ssl.SSLContext | bool = True
) -> list[tuple[int, dict[str, str], bytes]]:
    """Status, headers (without Date) and body of a whole GET, a ranged GET and a HEAD."""
    answers = []
    async with httpx.AsyncClient(base_url=base_url, verify=verify) as http:
        for method, headers in (
            ("GET", {}),
            ("GET", {"Range": "bytes=1000-2999999"}),
            ("GET", {"Range": "bytes=-17"}),
            ("HEAD", {}),
        ):
            response = await http.request(
                method, "/download", params={"token": token}, headers=headers
            )
            kept = {k: v for k, v in response.headers.items() if k != "date"}
            answers.append((response.status_code, kept, response.content))
    return answers


async def test_the_copying_path_answers_what_sendfile_answers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with _proxy(nursery, tmp_path) as proxy:
        data = os.urandom(3 * 2**20 + 5)
        (proxy.folder / "f.bin").write_bytes(data)
        token = await proxy.token("f.bin")
        copying = Http11Server(ClientApp(proxy.service.ctx), logger=LOG, zerocopy=False)
        bound: list[str] = await nursery.start(copying.serve, "127.0.0.1", 0)
        zero_copy = await _answers(proxy.addresses.client_api, token)
        copied = await _answers(bound[0], token)
    assert zero_copy == copied
    assert zero_copy[0][2] == data and zero_copy[1][2] == data[1000:3000000]
    assert zero_copy[2][2] == data[-17:] and zero_copy[3][2] == b""
    assert [status for status, _, _ in zero_copy] == [200, 206, 206, 200]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_downloads_over_tls(nursery: trio.Nursery, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await trio.run_process(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    changes = {"ssl_enabled": True, "ssl_cert": cert, "ssl_privkey": key}
    async with _proxy(nursery, tmp_path, **changes) as proxy:
        assert proxy.addresses.client_api.startswith("https://127.0.0.1:")
        data = os.urandom(2 * 2**20 + 3)
        (proxy.folder / "f.bin").write_bytes(data)
        token = await proxy.token("f.bin")
        trusted = ssl.create_default_context(cafile=str(cert))
        answers = await _answers(proxy.addresses.client_api, token, verify=trusted)
        # The SDK's bulk client speaks TLS through its own streams too.
        url = f"{proxy.addresses.client_api}/download?token={token}"
        async with bulk_client(verify=trusted) as http:
            assert await download_file(http, url, tmp_path / "got.bin") == len(data)
        assert (tmp_path / "got.bin").read_bytes() == data
    assert answers[0][2] == data and answers[1][2] == data[1000:3000000]
    assert [status for status, _, _ in answers] == [200, 206, 206, 200]
