"""The ``/folders`` file routes through the real manager API and a real storage proxy.

Both deployments (embedded: SQLite, in-process bus; distributed: PostgreSQL,
Redis) with a storage proxy serving the ``vfs`` volume ``local:local``
(:mod:`support.vfolders`).  Transfers go the way clients send them: the
manager hands out a token and the proxy's URL, and plain httpx calls speak
tus (``HEAD`` / ``PATCH``) and ranged ``GET`` to the proxy.  Checked:

* every file route's answer, and that it did what it says (listing, bytes);
* a read-only invitee reads and downloads but cannot mkdir, upload, move,
  rename or delete (403, nothing changed);
* traversal in every path argument (``path``, ``src``, ``dst``,
  ``target_path``, ``files.N``, ``new_name``) is a 400 from the manager naming
  the argument, and a symbolic link leading out of the folder, made behind
  the API's back as a kernel could, is refused by the proxy with the
  argument's name;
* quotas, a proxy that cannot be reached, and the superadmin views.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from bai.common.storage_api import FolderArgs, vfid_of
from bai.manager.models.shared_config import get_config, put_config

from support.api import Key
from support.api_session import Deployment, problem, unique_name
from support.storage import start_storage_proxy
from support.vfolders import HOST, call, deployment, invite_and_accept, new_folder, ok

__all__ = ["deployment"]

TUS = {"Tus-Resumable": "1.0.0"}


# ------------------------------------------------------------------------- helpers


async def host_path(d: Deployment, folder_id: str) -> Path:
    """The folder's directory on the proxy's volume, as the proxy reports it to managers."""
    vfid = vfid_of(uuid.UUID(folder_id))
    mount = await d.api.ctx.storage.call(
        "local", "/folder/mount", FolderArgs(volume="local", vfid=vfid)
    )
    return Path(mount["path"])


async def upload(d: Deployment, name: str, path: str, data: bytes, key: Key | None = None) -> None:
    """Upload *data* to *path* through a token: two tus PATCHes with a HEAD between them."""
    grant = await ok(
        d, "POST", f"/folders/{name}/request-upload", key, {"path": path, "size": len(data)}
    )
    assert set(grant) == {"token", "url"} and grant["url"].endswith("/upload"), grant
    params = {"token": grant["token"]}
    half = len(data) // 2
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.patch(
            grant["url"],
            params=params,
            content=data[:half],
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert first.status_code == 204, first.text
        assert first.headers["Upload-Offset"] == str(half)
        head = await http.head(grant["url"], params=params, headers=TUS)
        assert head.status_code in (200, 204), head.text
        assert head.headers["Upload-Offset"] == str(half)
        assert head.headers["Upload-Length"] == str(len(data))
        second = await http.patch(
            grant["url"],
            params=params,
            content=data[half:],
            headers={
                **TUS,
                "Upload-Offset": str(half),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert second.status_code == 204, second.text
        assert second.headers["Upload-Offset"] == str(len(data))


async def download(
    d: Deployment, name: str, path: str, key: Key | None = None, **extra: Any
) -> bytes:
    grant = await ok(d, "POST", f"/folders/{name}/request-download", key, {"path": path, **extra})
    assert set(grant) == {"token", "url"} and grant["url"].endswith("/download"), grant
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(grant["url"], params={"token": grant["token"]})
        assert response.status_code == 200, response.text
        return response.content


async def listing(
    d: Deployment, name: str, path: str = "", key: Key | None = None
) -> dict[str, Any]:
    """``files`` of *path*: file name -> the official client's entry (``files`` JSON text)."""
    reply = await ok(d, "GET", f"/folders/{name}/files", key, params={"path": path})
    files = json.loads(reply["files"])
    assert [item["name"] for item in reply["items"]] == [f["filename"] for f in files]
    return {entry["filename"]: entry for entry in files}


# ------------------------------------------------------------------------- tests


async def test_every_file_route_does_what_it_says(deployment: Deployment) -> None:
    d = deployment
    folder = await new_folder(d)
    name, folder_id = folder["name"], folder["id"]
    assert await listing(d, name) == {}

    assert (
        await ok(
            d, "POST", f"/folders/{name}/mkdir", body={"path": "a/b", "parents": True}, status=201
        )
        == {}
    )
    problem(
        await call(d, "POST", f"/folders/{name}/mkdir", body={"path": "a/b"}),
        409,
        "storage/FileExists",
        "path",
    )
    await ok(
        d, "POST", f"/folders/{name}/mkdir", body={"path": "a/b", "exist_ok": True}, status=201
    )
    problem(
        await call(d, "POST", f"/folders/{name}/mkdir", body={"path": "x/y"}),
        404,
        "storage/FileNotFound",
    )

    payload = os.urandom(256 * 1024 + 3)
    await upload(d, name, "a/b/blob.bin", payload)
    entries = await listing(d, name, "a/b")
    assert list(entries) == ["blob.bin"]
    blob = entries["blob.bin"]
    assert blob["size"] == len(payload) and blob["mode"].startswith("-") and blob["type"] == "FILE"
    assert isinstance(blob["mtime"], float) and blob["mtime"] > 0
    reply = await ok(d, "GET", f"/folders/{name}/files", params={"path": "a"})
    assert reply["items"][0]["name"] == "b" and reply["items"][0]["type"] == "DIRECTORY"
    # The official client sends the parameters of GET routes as a JSON body.
    assert (
        list(
            json.loads(
                (await ok(d, "GET", f"/folders/{name}/files", body={"path": "a/b"}))["files"]
            )
        )
        != []
    )
    assert await download(d, name, "a/b/blob.bin") == payload

    grant = await ok(d, "POST", f"/folders/{name}/request-download", body={"path": "a/b/blob.bin"})
    async with httpx.AsyncClient(timeout=30) as http:
        ranged = await http.get(
            grant["url"], params={"token": grant["token"]}, headers={"Range": "bytes=100-"}
        )
    assert ranged.status_code == 206 and ranged.content == payload[100:]

    # A move, a rename, and a folder's rename through the underscore alias.
    for route, body in [
        ("move-file", {"src": "a/b/blob.bin", "dst": "moved.bin"}),
        ("rename-file", {"target_path": "moved.bin", "new_name": "r1.bin"}),
        ("rename_file", {"target_path": "a/b", "new_name": "c", "is_dir": True}),
    ]:
        assert await ok(d, "POST", f"/folders/{name}/{route}", body=body) == {}, route
    assert sorted(await listing(d, name)) == ["a", "r1.bin"]
    assert list(await listing(d, name, "a")) == ["c"]
    assert await download(d, name, "r1.bin") == payload

    problem(
        await call(d, "DELETE", f"/folders/{name}/delete-files", body={"files": ["a"]}),
        409,
        "storage/DirectoryNotEmpty",
    )
    assert await ok(d, "DELETE", f"/folders/{name}/delete-files", body={"files": ["r1.bin"]}) == {}
    # The query-string spelling, with the underscore alias.
    assert (
        await ok(
            d, "DELETE", f"/folders/{name}/delete_files", params={"files": "a", "recursive": "true"}
        )
        == {}
    )
    assert await listing(d, name) == {}
    assert list((await host_path(d, folder_id)).iterdir()) == []


async def test_a_read_only_invitee_reads_but_changes_nothing(deployment: Deployment) -> None:
    d = deployment
    owner, guest = d.api.admin, d.api.user
    folder = await new_folder(d, owner)
    name, folder_id = folder["name"], folder["id"]
    await ok(d, "POST", f"/folders/{name}/mkdir", owner, {"path": "dir"}, status=201)
    await upload(d, name, "dir/data.txt", b"shared data\n", owner)
    await invite_and_accept(d, owner, name, guest, "ro")

    assert list(await listing(d, name, "dir", guest)) == ["data.txt"]
    assert await download(d, name, "dir/data.txt", guest) == b"shared data\n"
    refused = [
        ("POST", "mkdir", {"path": "new"}),
        ("POST", "request-upload", {"path": "dir/new.txt", "size": 1}),
        ("POST", "request-upload", {"path": "dir/data.txt", "size": 1}),
        ("POST", "move-file", {"src": "dir/data.txt", "dst": "moved.txt"}),
        ("POST", "rename-file", {"target_path": "dir/data.txt", "new_name": "x.txt"}),
        ("POST", "rename_file", {"target_path": "dir", "new_name": "x", "is_dir": True}),
        ("DELETE", "delete-files", {"files": ["dir/data.txt"]}),
        ("DELETE", "delete_files", {"files": ["dir"], "recursive": True}),
    ]
    for method, route, body in refused:
        response = await call(d, method, f"/folders/{name}/{route}", guest, body)
        problem(response, 403, "vfolder-permission-denied")
    assert list(await listing(d, name, key=owner)) == ["dir"]
    assert list(await listing(d, name, "dir", owner)) == ["data.txt"]
    assert (await host_path(d, folder_id) / "dir" / "data.txt").read_bytes() == b"shared data\n"

    # A stranger does not even see the folder.
    stranger_folder = (await new_folder(d, owner))["name"]
    problem(
        await call(d, "GET", f"/folders/{stranger_folder}/files", guest, params={"path": ""}),
        404,
        "vfolder-not-found",
    )


BAD_PATHS = ["../escape", "/etc/passwd", "a/../../escape", "a/\x00b", "n" * 256 + "/x"]


async def test_traversal_is_refused_in_every_path_argument(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    folder = await new_folder(d)
    name, folder_id = folder["name"], folder["id"]
    await upload(d, name, "inside.txt", b"in")
    before = sorted(p.name for p in (await host_path(d, folder_id)).iterdir())
    for bad in BAD_PATHS:
        cases: list[tuple[str, str, dict[str, Any] | None, dict[str, str] | None, str]] = [
            ("POST", "mkdir", {"path": bad, "parents": True}, None, "path"),
            ("GET", "files", None, {"path": bad}, "path"),
            ("GET", "files", {"path": bad}, None, "path"),
            ("POST", "request-upload", {"path": bad, "size": 1}, None, "path"),
            ("POST", "request-download", {"path": bad}, None, "path"),
            ("POST", "request-download", {"path": bad, "archive": True}, None, "path"),
            ("POST", "move-file", {"src": bad, "dst": "x"}, None, "src"),
            ("POST", "move-file", {"src": "inside.txt", "dst": bad}, None, "dst"),
            ("POST", "rename-file", {"target_path": bad, "new_name": "x"}, None, "target_path"),
            ("POST", "rename_file", {"target_path": bad, "new_name": "x"}, None, "target_path"),
            ("DELETE", "delete-files", {"files": ["inside.txt", bad]}, None, "files.1"),
            ("DELETE", "delete_files", {"files": [bad], "recursive": True}, None, "files.0"),
        ]
        for method, route, body, params, field in cases:
            response = await call(d, method, f"/folders/{name}/{route}", body=body, params=params)
            # Any NUL in a JSON body is refused before the body is read (naming no field).
            nul_in_body = "\x00" in bad and body is not None
            problem(response, 400, "invalid-api-params", None if nul_in_body else field)
    for new_name in ["../x", "a/b", "..", "", "n" * 256]:
        response = await call(
            d,
            "POST",
            f"/folders/{name}/rename-file",
            body={"target_path": "inside.txt", "new_name": new_name},
        )
        problem(response, 400, "invalid-api-params", "new_name")
    # The folder's root itself is no target of a delete, rename or move.
    root_cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("DELETE", "delete-files", {"files": ["."], "recursive": True}, "files.0"),
        ("POST", "rename-file", {"target_path": "", "new_name": "x"}, "target_path"),
        ("POST", "move-file", {"src": ".", "dst": "x"}, "src"),
        ("POST", "mkdir", {"path": "."}, "path"),
    ]
    for method, route, root_body, field in root_cases:
        response = await call(d, method, f"/folders/{name}/{route}", body=root_body)
        problem(response, 400, "invalid-api-params", field)
    assert sorted(p.name for p in (await host_path(d, folder_id)).iterdir()) == before
    assert await download(d, name, "inside.txt") == b"in"

    # A link leading out of the folder, made where a kernel could make it: the proxy refuses it.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, await host_path(d, folder_id) / "link")
    for method, route, body, params, field in [
        ("GET", "files", None, {"path": "link"}, "path"),
        ("POST", "request-download", {"path": "link/secret.txt"}, None, "path"),
        ("POST", "request-upload", {"path": "link/new.txt", "size": 1}, None, "path"),
        ("POST", "mkdir", {"path": "link/new"}, None, "path"),
        ("POST", "move-file", {"src": "inside.txt", "dst": "link/inside.txt"}, None, "dst"),
        ("POST", "move-file", {"src": "link/secret.txt", "dst": "stolen.txt"}, None, "src"),
        ("DELETE", "delete-files", {"files": ["inside.txt", "link/secret.txt"]}, None, "files.1"),
    ]:
        response = await call(d, method, f"/folders/{name}/{route}", body=body, params=params)
        assert response.status_code == 400, (route, response.text)
        assert response.json()["type"].endswith("/storage/InvalidPath"), response.text
        assert response.json().get("field") == field, (route, response.text)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "secret"
    # A refused delete deletes nothing, not even the paths before the bad one.
    assert await download(d, name, "inside.txt") == b"in"


async def test_uploads_over_the_folder_quota_are_refused(deployment: Deployment) -> None:
    d = deployment
    name = (await new_folder(d, quota="1KiB"))["name"]
    problem(
        await call(
            d, "POST", f"/folders/{name}/request-upload", body={"path": "big", "size": 4096}
        ),
        413,
        "storage/QuotaExceeded",
        "size",
    )
    problem(
        await call(d, "POST", f"/folders/{name}/request-upload", body={"path": "x", "size": -1}),
        400,
        "invalid-api-params",
        "size",
    )
    problem(
        await call(d, "POST", f"/folders/{name}/request-upload", body={"path": "x"}),
        400,
        "invalid-api-params",
        "size",
    )
    await upload(d, name, "small", b"x" * 600)
    # The proxy counts what the folder holds: a second upload that would pass the quota is refused.
    problem(
        await call(
            d, "POST", f"/folders/{name}/request-upload", body={"path": "more", "size": 600}
        ),
        413,
        "storage/QuotaExceeded",
    )
    assert list(await listing(d, name)) == ["small"]


async def test_uploads_over_the_proxys_max_upload_size_are_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    await start_storage_proxy(
        d.cluster.nursery, d.db, tmp_path / "small", proxy="small", extra='max-upload-size = "1KiB"'
    )
    name = unique_name("f")
    await ok(d, "POST", "/folders", d.api.user, {"name": name, "host": "small:local"}, status=201)
    response = await call(
        d, "POST", f"/folders/{name}/request-upload", body={"path": "big", "size": 1025}
    )
    problem(response, 413, "storage/UploadTooLarge", "size")
    grant = await ok(
        d, "POST", f"/folders/{name}/request-upload", body={"path": "ok", "size": 1024}
    )
    assert grant["url"] == await d.api.ctx.storage.client_url("small", "/upload")
    assert await listing(d, name) == {}


async def test_a_proxy_that_cannot_be_reached_is_a_503(deployment: Deployment) -> None:
    d = deployment
    name = (await new_folder(d))["name"]
    key = "volumes/proxies/local/manager_api"
    async with d.db.begin() as conn:
        real = await get_config(conn, key)
        await put_config(conn, key, "http://127.0.0.1:9")
    try:
        for method, route, body, params in [
            ("GET", "files", None, {"path": ""}),
            ("POST", "mkdir", {"path": "x"}, None),
            ("POST", "request-upload", {"path": "x", "size": 1}, None),
        ]:
            response = await call(d, method, f"/folders/{name}/{route}", body=body, params=params)
            problem(response, 503, "storage/StorageProxyUnavailable")
    finally:
        async with d.db.begin() as conn:
            await put_config(conn, key, real)
    assert await listing(d, name) == {}


async def test_the_superadmin_views_of_the_volumes(deployment: Deployment) -> None:
    d = deployment
    admin, user = d.api.admin, d.api.user
    assert d.storage is not None
    volume_path = str(d.storage.volumes["local"])

    mounts = await ok(d, "GET", "/folders/_/mounts", admin)
    assert mounts["storage-proxy"]["success"] is True
    assert [HOST, volume_path] in [list(m) for m in mounts["storage-proxy"]["mounts"]]
    assert mounts["manager"]["mounts"] == [] and mounts["agents"] == {}

    fstab = await ok(d, "GET", "/folders/_/fstab", admin)
    assert (
        fstab["node"] == "manager" and HOST in fstab["content"] and volume_path in fstab["content"]
    )

    metric = await call(d, "GET", "/folders/_/perf-metric", admin, params={"folder_host": HOST})
    if metric.status_code == 200:
        # Numbers only: the official CLI prints each value with a number format.
        values = metric.json()["metric"]
        assert values and all(type(v) in (int, float) for v in values.values()), values
    else:
        problem(metric, 501, "storage/OperationNotSupported")

    # An unknown agent, a file of the caller's choosing, a host no proxy or volume serves.
    refused: list[tuple[str, dict[str, str], int, str, str | None]] = [
        ("fstab", {"agent_id": "no-such-agent"}, 404, "object-not-found", None),
        ("fstab", {"fstab_path": "/etc/shadow"}, 400, "invalid-api-params", "fstab_path"),
        ("perf-metric", {"folder_host": "nocolon"}, 400, "invalid-api-params", "folder_host"),
        ("perf-metric", {"folder_host": "nobody:vol"}, 404, "storage/ProxyNotFound", None),
        ("perf-metric", {"folder_host": "local:nope"}, 404, "storage/VolumeNotFound", None),
    ]
    for route, params, status, kind, field in refused:
        response = await call(d, "GET", f"/folders/_/{route}", admin, params=params)
        problem(response, status, kind, field)

    for route in ("mounts", "fstab", "perf-metric"):
        response = await call(d, "GET", f"/folders/_/{route}", user, params={"folder_host": HOST})
        assert response.status_code == 403, response.text
