"""The SDK's bulk download client (:func:`bai.client.transfer.bulk_client`) over real sockets.

Its reads ask the socket for :data:`~bai.client.transfer.READ_SIZE` bytes
instead of httpcore's 64 KiB; over plain TCP it reads an answer's head
exactly, so that :func:`download_file` splices the body from the socket into
the file; and it downloads, resumes and keeps the validators exactly as any
httpx client does.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from bai.client.transfer import (
    READ_SIZE,
    RetryPolicy,
    _body_socket,
    _LargeReadBackend,
    _LargeReadStream,
    bulk_client,
    download_file,
)

from support.transferserver import TransferServer, content, proxy

__all__ = ["proxy"]

FAST = RetryPolicy(max_retries=5, initial_delay=0.01, max_delay=0.05)
SIZE = 5 * 1024 * 1024 + 777


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


async def test_reads_ask_for_more_than_httpcore_does(nursery: trio.Nursery) -> None:
    sent = os.urandom(4 * 1024 * 1024)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve_once(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(sent)

    nursery.start_soon(trio.serve_listeners, serve_once, listeners)
    stream = await _LargeReadBackend().connect_tcp("127.0.0.1", port, timeout=5)
    sizes: list[int] = []
    received = bytearray()
    try:
        with trio.fail_after(10):
            await trio.sleep(0.1)  # let the socket buffers fill
            while len(received) < len(sent):
                data = await stream.read(64 * 1024, timeout=5)  # what httpcore asks for
                assert data
                sizes.append(len(data))
                received += data
    finally:
        await stream.aclose()
    assert bytes(received) == sent
    assert max(sizes) > 64 * 1024
    assert max(sizes) <= READ_SIZE
    nursery.cancel_scope.cancel()


async def test_bulk_download_resumes_and_keeps_the_validator(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    proxy.etags = True
    url = proxy.offer_download("d1", source)
    proxy.drop_download_after = [1_000_000, 2_500_000]
    dest = tmp_path / "out" / "file.bin"
    resumed: list[tuple[int, int]] = []
    seen: list[tuple[int, int | None]] = []
    async with bulk_client(headers={"User-Agent": "bai-test"}) as http:
        size = await download_file(
            http,
            url,
            dest,
            retry=FAST,
            progress=lambda done, total: seen.append((done, total)),
            on_resume=lambda n, offset, exc: resumed.append((n, offset)),
        )
    assert size == SIZE
    assert content(dest) == content(source)
    assert resumed == [(1, 1_000_000), (2, 3_500_000)]
    first, second, third = proxy.requests
    assert first.headers["user-agent"] == "bai-test"
    assert first.headers["accept-encoding"] == "identity"
    assert second.headers["range"] == "bytes=1000000-"
    assert third.headers["range"] == "bytes=3500000-"
    assert second.headers["if-range"].startswith('"')  # the strong ETag
    assert seen[-1] == (SIZE, SIZE)


async def _one_answer(nursery: trio.Nursery, *parts: bytes) -> int:
    """A server that answers one request with *parts*, written apart; its port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            for part in parts:
                await stream.send_all(part)
                await trio.sleep(0.05)

    nursery.start_soon(trio.serve_listeners, answer, listeners)
    return int(listeners[0].socket.getsockname()[1])


CRLF_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"  # 38 bytes
LF_HEAD = b"HTTP/1.1 200 OK\nContent-Length: 8\n\n"  # bare line feeds, as h11 accepts


@pytest.mark.parametrize(
    ("head", "split"),
    [(CRLF_HEAD, split) for split in (0, 10, 35, 36, 37, 38, 39)]
    + [(LF_HEAD, split) for split in (0, 34, 35, 36)],
)
async def test_an_answers_head_is_read_exactly(
    nursery: trio.Nursery, head: bytes, split: int
) -> None:
    body = b"ab\r\n\r\ncd"  # a blank line in the body is not the head's end
    answer = head + body
    parts = (answer[:split], answer[split:]) if split else (answer,)
    port = await _one_answer(nursery, *parts)
    stream = await _LargeReadBackend().connect_tcp("127.0.0.1", port, timeout=5)
    assert isinstance(stream, _LargeReadStream)
    try:
        await stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        got = b""
        with trio.fail_after(5):
            while len(got) < len(head):
                assert stream.body_socket() is None  # not before the head's end
                got += await stream.read(65536, timeout=5)
        assert got == head  # not a byte of the body
        sock = stream.body_socket()
        assert sock is not None
        rest = b""
        with trio.fail_after(5):
            while len(rest) < len(body):
                rest += await sock.recv(65536)
        assert rest == body
    finally:
        await stream.aclose()
    nursery.cancel_scope.cancel()


async def test_bodies_are_spliced_only_from_plain_whole_answers(
    proxy: TransferServer, source: Path
) -> None:
    url = proxy.offer_download("d1", source)
    async with bulk_client() as http, http.stream("GET", url) as response:
        assert _body_socket(response) is not None
    async with httpx.AsyncClient() as http, http.stream("GET", url) as response:
        assert _body_socket(response) is None  # httpx's own streams: not ours to splice
    async with bulk_client() as http:
        async with http.stream("GET", url) as response:
            await response.aread()
        # A second request on the same connection reads its head exactly again.
        async with http.stream("GET", url) as response:
            assert _body_socket(response) is not None
            await response.aread()
            assert response.content == content(source)
