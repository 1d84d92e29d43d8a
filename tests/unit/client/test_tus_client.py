"""tus uploads and ranged downloads against a real HTTP server that drops connections.

The server (``support.transferserver``) speaks the storage proxy's
client-facing API over loopback TCP and closes connections after a chosen
number of body bytes; the tests check that the client resumes where the
server stands and that the result is byte-identical to the source.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from bai.client import BackendClientError, Unauthorized
from bai.client.transfer import PART_SUFFIX, RetryPolicy, download_file
from bai.client.tus import tus_upload

from support.transferserver import TransferServer, content, proxy

__all__ = ["proxy"]


FAST = RetryPolicy(max_retries=5, initial_delay=0.01, max_delay=0.05)
SIZE = 2 * 1024 * 1024 + 12345


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "httpx"])
async def test_upload_in_chunks_is_byte_identical(
    proxy: TransferServer, source: Path, sendfile: bool
) -> None:
    dest = proxy.root / "out.bin"
    url = proxy.expect_upload("t1", dest, SIZE)
    seen: list[tuple[int, int | None]] = []
    async with httpx.AsyncClient() as http:
        sent = await tus_upload(
            http,
            url,
            source,
            chunk_size=512 * 1024,
            progress=lambda d, t: seen.append((d, t)),
            sendfile=sendfile,
        )
    assert sent == SIZE
    assert content(dest) == content(source)
    assert proxy.requests[0].method == "HEAD"
    patches = [r for r in proxy.requests if r.method == "PATCH"]
    assert len(patches) == 5  # 4 full chunks of 512 KiB and the rest
    offsets = [int(r.headers["upload-offset"]) for r in patches]
    assert offsets == [i * 512 * 1024 for i in range(5)]
    for request in patches:
        assert request.headers["tus-resumable"] == "1.0.0"
        assert request.headers["content-type"] == "application/offset+octet-stream"
        assert int(request.headers["content-length"]) <= 512 * 1024
        assert "transfer-encoding" not in request.headers
    assert seen[-1] == (SIZE, SIZE)
    assert all(total == SIZE for _, total in seen)


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "httpx"])
async def test_upload_resumes_after_a_dropped_connection(
    proxy: TransferServer, source: Path, sendfile: bool
) -> None:
    dest = proxy.root / "out.bin"
    url = proxy.expect_upload("t1", dest, SIZE)
    proxy.drop_patch_after = [700_001, 300_000]
    resumed: list[tuple[int, int]] = []
    async with httpx.AsyncClient() as http:
        await tus_upload(
            http,
            url,
            source,
            retry=FAST,
            on_resume=lambda n, offset, exc: resumed.append((n, offset)),
            sendfile=sendfile,
        )
    assert content(dest) == content(source)
    # Each drop is followed by HEAD, which tells where the proxy stands.
    assert resumed == [(1, 700_001), (2, 1_000_001)]
    assert [r.method for r in proxy.requests] == ["HEAD", "PATCH"] * 3
    patches = [r for r in proxy.requests if r.method == "PATCH"]
    assert [int(r.headers["upload-offset"]) for r in patches] == [0, 700_001, 1_000_001]
    assert [int(r.headers["content-length"]) for r in patches] == [
        SIZE,
        SIZE - 700_001,
        SIZE - 1_000_001,
    ]


async def test_upload_gives_up_after_its_retries(proxy: TransferServer, source: Path) -> None:
    dest = proxy.root / "out.bin"
    url = proxy.expect_upload("t1", dest, SIZE)
    proxy.drop_patch_after = [1000, 1000, 1000]
    policy = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.01)
    async with httpx.AsyncClient() as http:
        with pytest.raises(BackendClientError, match="after 2 resumptions"):
            await tus_upload(http, url, source, retry=policy)
    assert not dest.exists()
    assert proxy.count("PATCH") == 3
    assert proxy.uploads["t1"].offset == 3000


async def test_an_empty_file_needs_no_request(proxy: TransferServer, tmp_path: Path) -> None:
    """The proxy completes an empty upload when it issues the token; it refuses it after."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    dest = proxy.root / "empty"
    url = proxy.expect_upload("t0", dest, 0)
    seen: list[tuple[int, int | None]] = []
    async with httpx.AsyncClient() as http:
        assert await tus_upload(http, url, empty, progress=lambda d, t: seen.append((d, t))) == 0
    assert content(dest) == b""
    assert proxy.requests == []
    assert seen == [(0, 0)]


async def test_an_upload_continues_where_the_proxy_stands(
    proxy: TransferServer, source: Path
) -> None:
    """A proxy already holding part of the file (an earlier run) gets only the rest."""
    dest = proxy.root / "out.bin"
    url = proxy.expect_upload("t1", dest, SIZE)
    proxy.uploads["t1"].staging.write_bytes(content(source)[:4096])
    proxy.uploads["t1"].offset = 4096
    async with httpx.AsyncClient() as http:
        await tus_upload(http, url, source)
    assert content(dest) == content(source)
    patch = proxy.requests[-1]
    assert (patch.headers["upload-offset"], patch.headers["content-length"]) == (
        "4096",
        str(SIZE - 4096),
    )


async def test_a_refused_token_is_not_retried(proxy: TransferServer, source: Path) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(Unauthorized) as caught:
            await tus_upload(http, f"{proxy.url}/upload?token=nope", source, retry=FAST)
    # A HEAD answer has no body: only the status tells what went wrong.
    assert caught.value.status == 401
    assert [r.method for r in proxy.requests] == ["HEAD"]


async def test_a_size_the_proxy_does_not_expect_is_refused(
    proxy: TransferServer, source: Path
) -> None:
    url = proxy.expect_upload("t1", proxy.root / "out.bin", SIZE + 1)
    async with httpx.AsyncClient() as http:
        with pytest.raises(BackendClientError, match=f"expects {SIZE + 1} bytes"):
            await tus_upload(http, url, source)
    assert proxy.count("PATCH") == 0


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "httpx"])
async def test_a_file_that_shrinks_while_it_is_sent_is_refused(
    proxy: TransferServer, source: Path, sendfile: bool
) -> None:
    url = proxy.expect_upload("t1", proxy.root / "out.bin", SIZE + 10)
    async with httpx.AsyncClient() as http:
        with pytest.raises(BackendClientError, match="shrank"):
            await tus_upload(http, url, source, size=SIZE + 10, sendfile=sendfile)
    assert not (proxy.root / "out.bin").exists()


# ------------------------------------------------------------------ downloads


async def test_download_streams_to_a_part_file_then_renames(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    url = proxy.offer_download("d1", source)
    dest = tmp_path / "got" / "file.bin"
    seen: list[tuple[int, int | None]] = []

    def progress(done: int, total: int | None) -> None:
        # The file appears only once complete.
        assert not dest.exists()
        seen.append((done, total))

    async with httpx.AsyncClient() as http:
        assert await download_file(http, url, dest, progress=progress) == SIZE
    assert content(dest) == content(source)
    assert not dest.with_name(dest.name + PART_SUFFIX).exists()
    assert seen[0] == (0, None)
    assert seen[-1] == (SIZE, SIZE)
    assert proxy.requests[0].headers["accept-encoding"] == "identity"
    assert "range" not in proxy.requests[0].headers


async def test_download_resumes_with_range_and_if_range(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    url = proxy.offer_download("d1", source)
    proxy.drop_download_after = [1_000_000, 500_000]
    dest = tmp_path / "file.bin"
    resumed: list[tuple[int, int]] = []
    async with httpx.AsyncClient() as http:
        await download_file(
            http, url, dest, retry=FAST, on_resume=lambda n, off, exc: resumed.append((n, off))
        )
    assert content(dest) == content(source)
    assert resumed == [(1, 1_000_000), (2, 1_500_000)]
    first, second, third = proxy.requests
    modified = first.headers.get("if-range")
    assert modified is None
    assert second.headers["range"] == "bytes=1000000-"
    assert third.headers["range"] == "bytes=1500000-"
    assert second.headers["if-range"] == third.headers["if-range"]
    assert second.headers["if-range"].endswith("GMT")


async def test_a_strong_etag_is_the_preferred_validator(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    proxy.etags = True
    url = proxy.offer_download("d1", source)
    proxy.drop_download_after = [1_000_000]
    dest = tmp_path / "file.bin"
    async with httpx.AsyncClient() as http:
        await download_file(http, url, dest, retry=FAST)
    assert content(dest) == content(source)
    assert proxy.requests[1].headers["if-range"].startswith('"')
    assert proxy.requests[1].headers["range"] == "bytes=1000000-"


async def test_a_changed_file_restarts_the_download_from_zero(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    url = proxy.offer_download("d1", source)
    new_content = os.urandom(SIZE // 2)

    def change() -> None:
        source.write_bytes(new_content)
        stat = source.stat()
        os.utime(source, (stat.st_atime, stat.st_mtime + 100))

    proxy.drop_download_after = [1_000_000]
    proxy.on_drop = change
    dest = tmp_path / "file.bin"
    seen: list[int] = []
    async with httpx.AsyncClient() as http:
        size = await download_file(
            http, url, dest, retry=FAST, progress=lambda d, t: seen.append(d)
        )
    assert size == len(new_content)
    assert content(dest) == new_content
    # The If-Range validator no longer matched: a 200 answer, and progress went back to 0.
    assert proxy.requests[1].headers["range"] == "bytes=1000000-"
    assert 0 in seen[seen.index(1_000_000) :]


async def test_an_existing_file_is_kept_unless_overwrite(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    url = proxy.offer_download("d1", source)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"mine")
    async with httpx.AsyncClient() as http:
        with pytest.raises(BackendClientError, match="exists already"):
            await download_file(http, url, dest)
        assert content(dest) == b"mine"
        assert proxy.requests == []
        await download_file(http, url, dest, overwrite=True)
    assert content(dest) == content(source)


async def test_a_refused_download_leaves_nothing(proxy: TransferServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with httpx.AsyncClient() as http:
        with pytest.raises(Unauthorized) as caught:
            await download_file(
                http, f"{proxy.url}/download?token=nope", out / "file.bin", retry=FAST
            )
    assert caught.value.error_type == "InvalidToken"
    assert list(out.iterdir()) == []
    assert len(proxy.requests) == 1


async def test_download_gives_up_after_its_retries_and_removes_the_part(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    url = proxy.offer_download("d1", source)
    proxy.drop_download_after = [100_000] * 3
    policy = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.01)
    out = tmp_path / "out"
    out.mkdir()
    async with httpx.AsyncClient() as http:
        with pytest.raises(BackendClientError, match="after 2 resumptions"):
            await download_file(http, url, out / "file.bin", retry=policy)
    assert list(out.iterdir()) == []
    assert len(proxy.requests) == 3


async def test_cancelling_a_download_removes_the_part(
    proxy: TransferServer, source: Path, tmp_path: Path
) -> None:
    url = proxy.offer_download("d1", source)
    dest = tmp_path / "file.bin"
    part = dest.with_name(dest.name + PART_SUFFIX)
    async with httpx.AsyncClient() as http:
        with trio.CancelScope() as scope:

            def progress(done: int, total: int | None) -> None:
                if done >= 1 << 20:
                    assert part.exists()
                    scope.cancel()

            await download_file(http, url, dest, progress=progress)
    assert scope.cancelled_caught
    assert not part.exists()
    assert not dest.exists()


async def test_a_proxy_in_the_environment_sends_through_httpx(
    proxy: TransferServer, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No byte may bypass a configured HTTP proxy: then every PATCH goes through httpx
    # (this client does not read the environment, so it still reaches the server).
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    dest = proxy.root / "out.bin"
    url = proxy.expect_upload("t1", dest, SIZE)
    async with httpx.AsyncClient(trust_env=False) as http:
        assert await tus_upload(http, url, source) == SIZE
    assert content(dest) == content(source)
    patches = [r for r in proxy.requests if r.method == "PATCH"]
    assert patches and all("user-agent" in r.headers for r in patches)  # httpx sends one
