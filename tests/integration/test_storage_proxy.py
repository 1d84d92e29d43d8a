"""The storage proxy as a real service: both HTTP APIs on port 0, driven with httpx.

Covers every manager-facing route, the shared secret, tus uploads (resume
after a dropped connection, wrong offsets, concurrent writers, two sessions
of one path, reused tokens, quotas and size limits), ranged and archived
downloads, the usage scan, and path traversal in every path argument with
nothing written outside the folder.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from bai.common.storage_api import AUTH_HEADER, ERROR_TYPE_PREFIX
from bai.storage.manager_api import ROUTES
from bai.storage.server import ProxyAddresses, StorageProxyService

from support.storage import storage_config

SECRET = "manager-secret-for-the-storage-proxy-tests"
USER_SCOPE = "user:12345678-1234-1234-1234-123456789abc"
OTHER_SCOPE = "project:87654321-4321-4321-4321-cba987654321"
VFID = "0123456789abcdef0123456789abcdef"
VFID2 = "fedcba9876543210fedcba9876543210"
TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


@dataclass
class Proxy:
    addresses: ProxyAddresses
    manager: httpx.AsyncClient
    client: httpx.AsyncClient
    volume: Path
    outside: Path

    async def call(self, route: str, body: dict[str, Any] | None = None) -> httpx.Response:
        if body is None:
            return await self.manager.get(route)
        return await self.manager.post(route, json=body)

    async def ok(self, route: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.call(route, body)
        assert response.status_code in (200, 204), response.text
        return response.json() if response.status_code == 200 else None

    async def folder(self, vfid: str = VFID, **extra: Any) -> Path:
        await self.ok(
            "/folder/create", {"volume": "v1", "vfid": vfid, "quota_scope": USER_SCOPE, **extra}
        )
        mount = await self.ok("/folder/mount", {"volume": "v1", "vfid": vfid})
        return Path(mount["path"])

    async def upload_token(self, relpath: str, size: int, vfid: str = VFID) -> str:
        body = {"volume": "v1", "vfid": vfid, "relpath": relpath, "size": size}
        return str((await self.ok("/folder/file/upload", body))["token"])

    async def download_token(self, relpath: str, archive: bool = False) -> str:
        body = {"volume": "v1", "vfid": VFID, "relpath": relpath, "archive": archive}
        return str((await self.ok("/folder/file/download", body))["token"])

    async def patch(self, token: str, offset: int, data: bytes) -> httpx.Response:
        headers = {**TUS, "Upload-Offset": str(offset)}
        return await self.client.patch(
            "/upload", params={"token": token}, headers=headers, content=data
        )

    async def offset(self, token: str) -> int:
        response = await self.client.head("/upload", params={"token": token})
        assert response.status_code == 200, response.headers
        return int(response.headers["Upload-Offset"])


async def _start(nursery: trio.Nursery, tmp_path: Path, extra: str = "") -> Proxy:
    config = storage_config(
        tmp_path,
        volumes=("v1", "v2"),
        node_id="test-proxy",
        secret=SECRET,
        extra=f"""
secret = "token-secret-for-the-storage-proxy-tests"
max-upload-size = "1m"
scandir-limit = 50
{extra}""",
    )
    addresses: ProxyAddresses = await nursery.start(StorageProxyService(config).serve)
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("secret")
    return Proxy(
        addresses,
        httpx.AsyncClient(base_url=addresses.manager_api, headers={AUTH_HEADER: SECRET}),
        httpx.AsyncClient(base_url=addresses.client_api),
        tmp_path / "v1",
        outside,
    )


@pytest.fixture
async def proxy(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Proxy]:
    started = await _start(nursery, tmp_path)
    async with started.manager, started.client:
        yield started
    nursery.cancel_scope.cancel()


def _problem(response: httpx.Response, status: int, kind: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == ERROR_TYPE_PREFIX + kind, body
    assert body["status"] == status
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert body.get("field") == field, body


def _tree(place: Path) -> list[str]:
    return sorted(str(p.relative_to(place)) for p in place.rglob("*"))


# ---------------------------------------------------------------- manager-facing


async def test_status_and_volumes(proxy: Proxy) -> None:
    assert await proxy.ok("/") == {"status": "running", "node_id": "test-proxy", "api_version": 1}
    volumes = (await proxy.ok("/volumes"))["volumes"]
    assert [v["name"] for v in volumes] == ["v1", "v2"]
    assert volumes[0]["backend"] == "vfs"
    assert volumes[0]["path"] == str(proxy.volume)
    assert set(volumes[0]["capabilities"]) == {"vfolder", "quota", "metric"}


@pytest.mark.parametrize("secret", [None, "wrong", SECRET + "x", ""])
async def test_every_route_needs_the_secret(proxy: Proxy, secret: str | None) -> None:
    headers = {} if secret is None else {AUTH_HEADER: secret}
    body = {"volume": "v1", "vfid": VFID, "quota_scope": USER_SCOPE}
    async with httpx.AsyncClient(base_url=proxy.addresses.manager_api, headers=headers) as raw:
        for path, kind, _ in ROUTES:
            if kind is None:
                response = await raw.get(path)
            else:
                response = await raw.post(path, json=body)
            _problem(response, 401, "Unauthorized")
        _problem(await raw.post("/no/such/route", json={}), 401, "Unauthorized")
    assert not (proxy.volume / VFID[:2]).exists()


async def test_bodies_are_checked(proxy: Proxy) -> None:
    _problem(
        await proxy.manager.post("/folder/create", content=b"{"), 400, "InvalidRequest", "body"
    )
    _problem(await proxy.manager.post("/folder/create", json=[1]), 400, "InvalidRequest", "body")
    base = {"volume": "v1", "vfid": VFID, "quota_scope": USER_SCOPE}
    _problem(await proxy.call("/folder/create", {**base, "x": 1}), 400, "InvalidRequest", "x")
    _problem(
        await proxy.call("/folder/create", {**base, "vfid": "ABC"}), 400, "InvalidRequest", "vfid"
    )
    _problem(
        await proxy.call("/folder/create", {**base, "quota_scope": "user:me"}),
        400,
        "InvalidRequest",
        "quota_scope",
    )
    _problem(await proxy.call("/folder/create", {**base, "volume": "nope"}), 404, "VolumeNotFound")
    response = await proxy.manager.get("/folder/create")
    assert response.status_code == 405


async def test_folder_life_cycle(proxy: Proxy) -> None:
    root = await proxy.folder(quota=1000)
    assert root == proxy.volume / VFID[:2] / VFID[2:4] / VFID[4:]
    assert root.is_dir()
    args = {"volume": "v1", "vfid": VFID}
    _problem(
        await proxy.call("/folder/create", {**args, "quota_scope": USER_SCOPE}),
        409,
        "FolderExists",
    )
    assert await proxy.ok("/folder/quota", args) == {"quota": 1000}
    await proxy.ok("/folder/quota/update", {**args, "quota": None})
    assert await proxy.ok("/folder/quota", args) == {"quota": None}
    (root / "a.bin").write_bytes(b"x" * 10)
    (root / "sub").mkdir()
    assert await proxy.ok("/folder/usage", args) == {"file_count": 2, "used_bytes": 10}

    clone = {**args, "dst_volume": "v2", "dst_vfid": VFID2, "dst_quota_scope": OTHER_SCOPE}
    await proxy.ok("/folder/clone", clone)
    _problem(await proxy.call("/folder/clone", clone), 409, "FolderExists")
    cloned = await proxy.ok("/folder/mount", {"volume": "v2", "vfid": VFID2})
    assert (Path(cloned["path"]) / "a.bin").read_bytes() == b"x" * 10
    assert await proxy.ok("/quota-scope", {"volume": "v2", "quota_scope": OTHER_SCOPE}) == {
        "used_bytes": 10,
        "limit_bytes": None,
    }

    await proxy.ok("/folder/delete", args)
    assert not root.exists()
    for route in ("/folder/delete", "/folder/mount", "/folder/usage", "/folder/quota"):
        _problem(await proxy.call(route, args), 404, "FolderNotFound", "vfid")
    _problem(await proxy.call("/folder/clone", clone), 404, "FolderNotFound")
    # What the proxy keeps for itself stays out of every folder.
    assert sorted(os.listdir(proxy.volume / ".bai")) == [
        "clones",
        "done",
        "folders",
        "scopes",
        "trash",
        "uploads",
    ]
    assert os.listdir(proxy.volume / ".bai" / "trash") == []


async def test_quota_scopes(proxy: Proxy) -> None:
    await proxy.folder(VFID)
    root2 = await proxy.folder(VFID2)
    scope = {"volume": "v1", "quota_scope": USER_SCOPE}
    assert await proxy.ok("/quota-scope", scope) == {"used_bytes": 0, "limit_bytes": None}
    assert await proxy.ok("/quota-scope/update", {**scope, "limit": 100}) == {
        "used_bytes": 0,
        "limit_bytes": 100,
    }
    (root2 / "f").write_bytes(b"y" * 60)
    await proxy.ok("/folder/usage", {"volume": "v1", "vfid": VFID2})
    assert (await proxy.ok("/quota-scope", scope))["used_bytes"] == 60
    # The scope's budget spans both folders: 60 used in one leaves 40 for the other.
    await proxy.upload_token("ok.bin", 40)
    token_refused = await proxy.call(
        "/folder/file/upload", {"volume": "v1", "vfid": VFID, "relpath": "no.bin", "size": 1}
    )
    _problem(token_refused, 413, "QuotaExceeded", "size")
    await proxy.ok("/quota-scope/update", {**scope, "limit": None})
    assert (await proxy.ok("/quota-scope", scope))["limit_bytes"] is None


async def test_performance_metric(proxy: Proxy) -> None:
    metric = (await proxy.ok("/volume/performance-metric", {"volume": "v1"}))["metric"]
    assert metric["capacity_bytes"] > 0
    assert 0 <= metric["available_bytes"] <= metric["capacity_bytes"]
    for key in ("iops_read", "iops_write", "io_bytes_read", "io_bytes_write"):
        assert metric[key] >= 0
    assert metric["interval_s"] > 0


async def test_file_operations(proxy: Proxy) -> None:
    root = await proxy.folder()
    args = {"volume": "v1", "vfid": VFID}
    await proxy.ok("/folder/file/mkdir", {**args, "relpath": "a/b/c", "parents": True})
    _problem(await proxy.call("/folder/file/mkdir", {**args, "relpath": "a/b"}), 409, "FileExists")
    await proxy.ok("/folder/file/mkdir", {**args, "relpath": "a/b", "exist_ok": True})
    _problem(
        await proxy.call("/folder/file/mkdir", {**args, "relpath": "x/y"}), 404, "FileNotFound"
    )
    (root / "a" / "f.txt").write_text("hello")
    items = (await proxy.ok("/folder/file/list", {**args, "relpath": "a"}))["items"]
    assert [(i["name"], i["type"]) for i in items] == [("b", "DIRECTORY"), ("f.txt", "FILE")]
    assert items[1]["stat"]["size"] == 5
    assert items[1]["stat"]["modified"].endswith("+00:00")
    _problem(
        await proxy.call("/folder/file/list", {**args, "relpath": "a/f.txt"}),
        409,
        "NotADirectory",
    )
    for n in range(60):
        (root / f"many{n:02}").touch()
    listed = (await proxy.ok("/folder/file/list", args))["items"]
    assert len(listed) == 50  # scandir-limit
    assert [i["name"] for i in listed] == sorted(i["name"] for i in listed)

    await proxy.ok("/folder/file/rename", {**args, "relpath": "a/f.txt", "new_name": "g.txt"})
    assert (root / "a" / "g.txt").read_text() == "hello"
    _problem(
        await proxy.call("/folder/file/rename", {**args, "relpath": "a/g.txt", "new_name": "b"}),
        409,
        "FileExists",
        "new_name",
    )
    await proxy.ok("/folder/file/move", {**args, "src_relpath": "a/g.txt", "dst_relpath": "a/b"})
    assert (root / "a" / "b" / "g.txt").exists()
    await proxy.ok("/folder/file/move", {**args, "src_relpath": "a/b/g.txt", "dst_relpath": "h"})
    assert (root / "h").read_text() == "hello"
    _problem(
        await proxy.call("/folder/file/move", {**args, "src_relpath": "a", "dst_relpath": "a/b"}),
        400,
        "InvalidPath",
    )
    _problem(
        await proxy.call("/folder/file/delete", {**args, "relpaths": ["h", "a"]}),
        409,
        "DirectoryNotEmpty",
        "relpaths[1]",
    )
    assert (root / "h").exists()
    await proxy.ok("/folder/file/delete", {**args, "relpaths": ["h", "a"], "recursive": True})
    assert not (root / "h").exists() and not (root / "a").exists()
    _problem(
        await proxy.call("/folder/file/delete", {**args, "relpaths": ["h"]}), 404, "FileNotFound"
    )


# ---------------------------------------------------------------- uploads


async def test_upload_in_chunks_then_the_token_is_spent(proxy: Proxy) -> None:
    root = await proxy.folder()
    data = os.urandom(300_000)
    token = await proxy.upload_token("deep/er/file.bin", len(data))
    options = await proxy.client.options("/upload")
    assert options.status_code == 204 and options.headers["Tus-Version"] == "1.0.0"
    assert await proxy.offset(token) == 0
    offset = 0
    for size in (100_000, 150_000, 50_000):
        response = await proxy.patch(token, offset, data[offset : offset + size])
        assert response.status_code == 204, response.text
        offset += size
        assert int(response.headers["Upload-Offset"]) == offset
        assert response.headers["Tus-Resumable"] == "1.0.0"
        # A partial upload is never visible at its path.
        assert (root / "deep/er/file.bin").exists() == (offset == len(data))
    assert (root / "deep/er/file.bin").read_bytes() == data
    _problem(await proxy.patch(token, offset, b""), 401, "InvalidToken", "token")
    response = await proxy.client.head("/upload", params={"token": token})
    assert response.status_code == 401
    usage = await proxy.ok("/folder/usage", {"volume": "v1", "vfid": VFID})
    assert usage["used_bytes"] == len(data)


async def test_an_empty_upload_is_complete_at_once(proxy: Proxy) -> None:
    root = await proxy.folder()
    token = await proxy.upload_token("empty", 0)
    assert (root / "empty").read_bytes() == b""
    _problem(await proxy.patch(token, 0, b""), 401, "InvalidToken")


async def test_upload_replaces_a_file_but_not_a_folder(proxy: Proxy) -> None:
    root = await proxy.folder()
    (root / "f").write_text("old")
    (root / "d").mkdir()
    token = await proxy.upload_token("f", 3)
    assert (await proxy.patch(token, 0, b"new")).status_code == 204
    assert (root / "f").read_text() == "new"
    response = await proxy.call(
        "/folder/file/upload", {"volume": "v1", "vfid": VFID, "relpath": "d", "size": 1}
    )
    _problem(response, 409, "FileExists", "relpath")


async def _raw_patch(proxy: Proxy, token: str, offset: int, length: int) -> trio.SocketStream:
    port = int(proxy.addresses.client_api.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = (
        f"PATCH /upload?token={token} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    await stream.send_all(head.encode())
    return stream


async def _settled_offset(proxy: Proxy, token: str, at_least: int) -> int:
    """The offset once the dropped request's bytes are all written."""
    with trio.fail_after(10):
        while True:
            offset = await proxy.offset(token)
            if offset >= at_least:
                return offset
            await trio.sleep(0.02)


async def test_resume_after_a_dropped_connection(proxy: Proxy) -> None:
    root = await proxy.folder()
    data = os.urandom(200_000)
    token = await proxy.upload_token("f.bin", len(data))
    stream = await _raw_patch(proxy, token, 0, len(data))
    await stream.send_all(data[:70_000])
    await stream.aclose()  # the connection drops mid-body
    offset = await _settled_offset(proxy, token, 70_000)
    assert offset == 70_000
    assert not (root / "f.bin").exists()
    _problem(await proxy.patch(token, 0, data), 409, "UploadConflict", "Upload-Offset")
    with trio.fail_after(10):
        for _ in range(500):  # the dropped request may still be winding down: 409 until done
            response = await proxy.patch(token, offset, data[offset:])
            if response.status_code != 409:
                break
            await trio.sleep(0.02)
    assert response.status_code == 204, response.text
    assert (root / "f.bin").read_bytes() == data


async def test_one_writer_per_upload(proxy: Proxy) -> None:
    root = await proxy.folder()
    data = os.urandom(100_000)
    token = await proxy.upload_token("f.bin", len(data))
    stream = await _raw_patch(proxy, token, 0, len(data))
    await stream.send_all(data[:10])
    await trio.sleep(0.2)
    _problem(await proxy.patch(token, 0, data), 409, "UploadConflict", "token")
    await stream.send_all(data[10:])
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += await stream.receive_some(4096)
    await stream.aclose()
    assert reply.startswith(b"HTTP/1.1 204"), reply
    assert (root / "f.bin").read_bytes() == data


async def test_two_uploads_of_one_path_at_once(proxy: Proxy) -> None:
    await proxy.folder()
    first = await proxy.upload_token("same.bin", 10)
    body = {"volume": "v1", "vfid": VFID, "relpath": "./same.bin", "size": 10}
    _problem(await proxy.call("/folder/file/upload", body), 409, "UploadConflict", "relpath")
    assert (await proxy.patch(first, 0, b"0123456789")).status_code == 204
    # Once the first completed the path is free again.
    await proxy.upload_token("same.bin", 10)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_bytes_beyond_the_announced_size_keep_nothing(proxy: Proxy) -> None:
    root = await proxy.folder()
    token = await proxy.upload_token("f", 10)
    assert (await proxy.patch(token, 0, b"abc")).status_code == 204
    _problem(await proxy.patch(token, 3, b"x" * 8), 413, "UploadTooLarge")
    stream = await _raw_patch(proxy, token, 3, 8)  # chunked bodies have no length to check
    await stream.aclose()
    assert await _settled_offset(proxy, token, 3) == 3
    response = await proxy.client.patch(
        "/upload",
        params={"token": token},
        headers={**TUS, "Upload-Offset": "3"},
        content=_chunks(b"x" * 4, b"y" * 4),  # chunked, 8 bytes > 7 left
    )
    _problem(response, 413, "UploadTooLarge")
    assert await proxy.offset(token) == 3
    assert (await proxy.patch(token, 3, b"defghij")).status_code == 204
    assert (root / "f").read_bytes() == b"abcdefghij"


async def test_upload_size_and_quota_limits(proxy: Proxy) -> None:
    root = await proxy.folder(quota=1000)
    args = {"volume": "v1", "vfid": VFID}
    too_big = await proxy.call("/folder/file/upload", {**args, "relpath": "f", "size": 2**20 + 1})
    _problem(too_big, 413, "UploadTooLarge", "size")
    over = await proxy.call("/folder/file/upload", {**args, "relpath": "f", "size": 1001})
    _problem(over, 413, "QuotaExceeded", "size")
    token = await proxy.upload_token("f", 600)
    # The running upload reserves its size: a second one cannot take the same bytes.
    second = await proxy.call("/folder/file/upload", {**args, "relpath": "g", "size": 600})
    _problem(second, 413, "QuotaExceeded")
    # The quota is checked again on every PATCH.
    await proxy.ok("/folder/quota/update", {**args, "quota": 500})
    _problem(await proxy.patch(token, 0, b"x" * 600), 413, "QuotaExceeded")
    assert await proxy.offset(token) == 0
    await proxy.ok("/folder/quota/update", {**args, "quota": 1000})
    assert (await proxy.patch(token, 0, b"x" * 600)).status_code == 204
    # Past the quota, mkdir is refused too.
    (root / "kernel-wrote").write_bytes(b"k" * 500)
    await proxy.ok("/folder/usage", args)
    _problem(await proxy.call("/folder/file/mkdir", {**args, "relpath": "d"}), 413, "QuotaExceeded")
    assert not (root / "d").exists()


async def test_the_usage_scan_sees_what_kernels_wrote(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    proxy = await _start(nursery, tmp_path, 'usage-scan-interval = "200ms"')
    async with proxy.manager, proxy.client:
        root = await proxy.folder(quota=100)
        await proxy.upload_token("a", 100)  # fits now, and is left idle
        (root / "from-kernel").write_bytes(b"k" * 50)  # written by a kernel, not the proxy
        with trio.fail_after(10):
            while True:
                body = {"volume": "v1", "vfid": VFID, "relpath": "b", "size": 1}
                response = await proxy.call("/folder/file/upload", body)
                if response.status_code == 413:
                    break
                await trio.sleep(0.05)
        _problem(response, 413, "QuotaExceeded")
    nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- downloads


async def test_download_with_ranges(proxy: Proxy) -> None:
    root = await proxy.folder()
    data = os.urandom(3 * 2**20 + 17)
    (root / "f.bin").write_bytes(data)
    token = await proxy.download_token("f.bin")
    whole = await proxy.client.get("/download", params={"token": token, "dst_dir": "/x"})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Content-Length"] == str(len(data))
    assert whole.headers["Accept-Ranges"] == "bytes"
    modified = whole.headers["Last-Modified"]
    # As the official client resumes: Range from where it stopped, If-Range the validator.
    resumed = await proxy.client.get(
        "/download",
        params={"token": token},
        headers={"Range": "bytes=1000-", "If-Range": modified},
    )
    assert resumed.status_code == 206
    assert resumed.content == data[1000:]
    assert resumed.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert resumed.headers["Content-Length"] == str(len(data) - 1000)
    stale = await proxy.client.get(
        "/download",
        params={"token": token},
        headers={"Range": "bytes=1000-", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
    )
    assert stale.status_code == 200 and stale.content == data
    beyond = await proxy.client.get(
        "/download", params={"token": token}, headers={"Range": f"bytes={len(data)}-"}
    )
    _problem(beyond, 416, "RangeNotSatisfiable")
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    head = await proxy.client.head("/download", params={"token": token})
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    upload = await proxy.upload_token("u", 1)
    _problem(await proxy.client.get("/download", params={"token": upload}), 401, "InvalidToken")
    _problem(await proxy.patch(token, 0, b"x"), 401, "InvalidToken")
    _problem(await proxy.client.get("/download"), 401, "InvalidToken")
    (root / "f.bin").unlink()
    _problem(await proxy.client.get("/download", params={"token": token}), 404, "FileNotFound")


async def test_download_a_folder_as_a_zip(proxy: Proxy) -> None:
    root = await proxy.folder()
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "a.txt").write_text("a")
    (root / "d" / "e" / "b.bin").write_bytes(b"b" * 100_000)
    os.symlink(proxy.outside, root / "d" / "escape")
    body = {"volume": "v1", "vfid": VFID, "relpath": "d"}
    _problem(await proxy.call("/folder/file/download", body), 400, "InvalidRequest", "archive")
    token = await proxy.download_token("d", archive=True)
    response = await proxy.client.get("/download", params={"token": token})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["a.txt", "e/", "e/b.bin"]
    assert archive.read("e/b.bin") == b"b" * 100_000


# ---------------------------------------------------------------- traversal

BAD_PATHS = [
    ("..", "InvalidPath"),
    ("a/../../x", "InvalidPath"),
    ("/etc/passwd", "InvalidPath"),
    ("a\x00b", "InvalidPath"),
    ("n" * 256, "InvalidPath"),
    ("d/" * 2049, "InvalidRequest"),  # over MAX_RELPATH: refused by the body's schema
    ("link/x", "InvalidPath"),  # through a link planted by a kernel, leading out
]


def _path_cases(relpath: str) -> list[tuple[str, dict[str, Any], str]]:
    args: dict[str, Any] = {"volume": "v1", "vfid": VFID}
    return [
        ("/folder/file/mkdir", {**args, "relpath": relpath, "parents": True}, "relpath"),
        ("/folder/file/list", {**args, "relpath": relpath}, "relpath"),
        ("/folder/file/rename", {**args, "relpath": relpath, "new_name": "z"}, "relpath"),
        ("/folder/file/move", {**args, "src_relpath": relpath, "dst_relpath": "z"}, "src_relpath"),
        ("/folder/file/move", {**args, "src_relpath": "f", "dst_relpath": relpath}, "dst_relpath"),
        ("/folder/file/delete", {**args, "relpaths": ["f", relpath]}, "relpaths[1]"),
        ("/folder/file/upload", {**args, "relpath": relpath, "size": 1}, "relpath"),
        ("/folder/file/download", {**args, "relpath": relpath}, "relpath"),
    ]


@pytest.mark.parametrize(("relpath", "kind"), BAD_PATHS)
async def test_traversal_in_every_path_argument(proxy: Proxy, relpath: str, kind: str) -> None:
    root = await proxy.folder()
    (root / "f").write_text("f")
    os.symlink(proxy.outside, root / "link")
    outside_before = _tree(proxy.outside)
    volume_before = _tree(proxy.volume)
    for route, body, field in _path_cases(relpath):
        response = await proxy.call(route, body)
        assert response.status_code == 400, (route, body, response.text)
        body_json = response.json()
        assert body_json["type"] == ERROR_TYPE_PREFIX + kind, (route, body_json)
        if kind == "InvalidPath":
            assert body_json["field"] == field, (route, body_json)
    assert _tree(proxy.outside) == outside_before
    assert _tree(proxy.volume) == volume_before
    assert (proxy.outside / "secret.txt").read_text() == "secret"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x\x00", "n" * 256, ""])
async def test_rename_to_a_bad_name(proxy: Proxy, name: str) -> None:
    root = await proxy.folder()
    (root / "f").write_text("f")
    response = await proxy.call(
        "/folder/file/rename", {"volume": "v1", "vfid": VFID, "relpath": "f", "new_name": name}
    )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "new_name"
    assert os.listdir(root) == ["f"]


async def test_deleting_a_folder_ends_its_uploads(proxy: Proxy) -> None:
    await proxy.folder()
    token = await proxy.upload_token("f", 6)
    assert (await proxy.patch(token, 0, b"abc")).status_code == 204
    await proxy.ok("/folder/delete", {"volume": "v1", "vfid": VFID})
    _problem(await proxy.patch(token, 3, b"def"), 401, "InvalidToken", "token")
    assert os.listdir(proxy.volume / ".bai" / "uploads") == []
