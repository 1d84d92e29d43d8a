"""The manager's storage-proxy client over real HTTP and a real shared-config table.

Each test runs small HTTP servers (quart-trio on hypercorn, loopback, port 0)
that answer the way a storage proxy's manager-facing API does: they check the
secret header, record what they were sent, and answer JSON, 204s and RFC 7807
problems.  The client under test is the real :class:`StorageProxies` with its
real ``httpx.AsyncClient`` reading the ``volumes/*`` keys from SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import trio
from quart import Response, request
from quart_trio import QuartTrio

from bai.common.errors import InvalidValue
from bai.common.storage_api import AUTH_HEADER, ListFiles, Mkdir
from bai.manager.api.errors import problem_of
from bai.manager.db import Database, create_database
from bai.manager.models import migrate
from bai.manager.models.shared_config import delete_config, put_config, put_config_many
from bai.manager.vfolders.proxies import (
    StorageProxies,
    StorageProxyError,
    proxies_from_config,
    split_host,
)

from support.net import free_port, serve_app

VFID = "0123456789abcdef0123456789abcdef"


def _problem(status: int, name: str, detail: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {
        "type": f"https://bai.dev/problems/storage/{name}",
        "title": f"title of {name}",
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return Response(
        msgspec.json.encode(body), status=status, content_type="application/problem+json"
    )


@dataclass
class TinyProxy:
    """An HTTP server answering like a proxy's manager-facing API; records every request."""

    secret: str
    volumes: list[str]
    url: str = ""
    seen: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)

    def app(self) -> QuartTrio:
        app = QuartTrio("tiny-proxy")

        @app.route("/<path:route>", methods=["GET", "POST"])
        async def handle(route: str) -> Response:
            raw = await request.get_data(as_text=False)
            body = msgspec.json.decode(raw) if raw else None
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.seen.append((request.method, "/" + route, headers, body))
            if request.headers.get(AUTH_HEADER) != self.secret:
                return _problem(401, "Unauthorized", "wrong secret")
            if request.method == "GET" and route == "volumes":
                volumes = [
                    {"name": n, "backend": "vfs", "path": f"/v/{n}", "capabilities": ["vfolder"]}
                    for n in self.volumes
                ]
                return Response(msgspec.json.encode({"volumes": volumes}), 200)
            if route == "folder/file/list":
                return Response(msgspec.json.encode({"items": [], "echo": body}), 200)
            if route == "folder/file/mkdir":
                return Response(b"", status=204)
            if route == "folder/file/delete":
                return _problem(404, "FileNotFound", "no such file: a/b")
            if route == "bad-path":
                return _problem(400, "InvalidPath", "the path leaves the folder", "relpath")
            if route == "bad-index":
                return _problem(400, "InvalidPath", "a link", "relpaths[2]")
            if route == "too-big":
                return _problem(413, "UploadTooLarge", "over max-upload-size", "size")
            if route == "unsupported":
                return _problem(501, "OperationNotSupported", "no metric on vfs")
            if route == "crash":
                return Response(b"Internal Server Error", status=500)
            if route == "html-404":
                return Response(b"<html>nope</html>", status=404, content_type="text/html")
            if route == "not-json":
                return Response(b"<html>hello</html>", status=200, content_type="text/html")
            if route == "slow":
                await trio.sleep(30)
                return Response(b"", status=204)
            return _problem(404, "VolumeNotFound", f"no route {route}")

        return app

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(serve_app, self.app())
            task_status.started(self.url)


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    async with create_database("sqlite://") as database:
        await migrate.upgrade(database)
        yield database


@pytest.fixture
async def storage(db: Database) -> AsyncIterator[StorageProxies]:
    proxies = StorageProxies(db)
    try:
        yield proxies
    finally:
        await proxies.aclose()


async def _start(nursery: trio.Nursery, secret: str, volumes: list[str]) -> TinyProxy:
    proxy = TinyProxy(secret, volumes)
    await nursery.start(proxy.serve)
    return proxy


async def _configure(db: Database, name: str, proxy: TinyProxy | str, secret: str) -> None:
    url = proxy if isinstance(proxy, str) else proxy.url
    async with db.begin() as conn:
        await put_config_many(
            conn,
            {
                f"volumes/proxies/{name}/manager_api": url,
                f"volumes/proxies/{name}/client_api": url.replace("127.0.0.1", "localhost") + "/",
                f"volumes/proxies/{name}/secret": secret,
                f"volumes/proxies/{name}/ssl_verify": False,
            },
        )


# ------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("host", "expected"),
    [("local:local", ("local", "local")), ("seoul-1:nfs.v2_a", ("seoul-1", "nfs.v2_a"))],
)
def test_split_host_accepts_proxy_colon_volume(host: str, expected: tuple[str, str]) -> None:
    assert split_host(host) == expected


@pytest.mark.parametrize(
    "host", ["local", ":vol", "proxy:", "a:b:c", "a/b:c", "a:../c", "-x:y", "a:" + "v" * 65, ""]
)
def test_split_host_refuses_anything_else_naming_the_field(host: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        split_host(host, field="folder_host")
    assert caught.value.field == "folder_host"


def test_config_is_read_from_leaves_and_from_objects() -> None:
    usable, broken, default = proxies_from_config(
        {
            "volumes/default_host": "a:vol",
            "volumes/proxies/a/manager_api": "http://h:1/",
            "volumes/proxies/a/client_api": "https://h:2",
            "volumes/proxies/a/secret": "s",
            "volumes/proxies/b": {
                "manager_api": "http://b:1",
                "client_api": "http://b:2",
                "secret": "t",
                "ssl_verify": "false",
            },
            "volumes/proxies/c/manager_api": "ftp://c",
            "volumes/proxies/c/client_api": "http://c",
            "volumes/proxies/c/secret": "u",
            "volumes/proxies/d/manager_api": "http://d",
            "volumes/proxies/d/client_api": "http://d",
            "volumes/proxies/e/manager_api": "http://e",
            "volumes/proxies/e/client_api": "http://e",
            "volumes/proxies/e/secret": "v",
            "volumes/proxies/e/ssl_verify": "maybe",
            "volumes/something/else": 1,
        }
    )
    assert default == "a:vol"
    assert sorted(usable) == ["a", "b"]
    assert usable["a"].manager_api == "http://h:1" and usable["a"].client_api == "https://h:2"
    assert usable["a"].ssl_verify is True and usable["b"].ssl_verify is False
    assert sorted(broken) == ["c", "d", "e"]
    assert "secret" in broken["d"] and "ssl_verify" in broken["e"] and "URL" in broken["c"]


# ------------------------------------------------------------------------- over HTTP


async def test_call_posts_the_struct_with_the_secret_and_reads_the_reply(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    proxy = await _start(nursery, "s3cret", ["vol"])
    await _configure(db, "p", proxy, "s3cret")
    reply = await storage.call("p", "/folder/file/list", ListFiles(volume="vol", vfid=VFID))
    assert reply == {"items": [], "echo": {"volume": "vol", "vfid": VFID, "relpath": "."}}
    assert (
        await storage.call("p", "folder/file/mkdir", Mkdir(volume="vol", vfid=VFID, relpath="d"))
        is None
    )
    methods = [(method, route) for method, route, _, _ in proxy.seen]
    assert methods == [("POST", "/folder/file/list"), ("POST", "/folder/file/mkdir")]
    assert all(headers[AUTH_HEADER.lower()] == "s3cret" for _, _, headers, _ in proxy.seen)
    assert proxy.seen[1][3] == {
        "volume": "vol",
        "vfid": VFID,
        "relpath": "d",
        "parents": False,
        "exist_ok": False,
    }


async def test_hosts_lists_every_volume_of_every_proxy_and_skips_one_that_is_down(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    first = await _start(nursery, "one", ["vol1", "vol2"])
    second = await _start(nursery, "two", ["data"])
    await _configure(db, "first", first, "one")
    await _configure(db, "second", second, "two")
    await _configure(db, "gone", f"http://127.0.0.1:{free_port()}", "x")
    assert await storage.hosts() == ["first:vol1", "first:vol2", "second:data"]
    assert [v["name"] for v in await storage.volumes("first")] == ["vol1", "vol2"]
    assert await storage.names() == ["first", "gone", "second"]
    assert first.seen[0][:2] == ("GET", "/volumes")


async def test_a_proxy_error_is_relayed_with_its_status_name_and_field(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    proxy = await _start(nursery, "s", ["vol"])
    await _configure(db, "p", proxy, "s")
    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/bad-path", ListFiles(volume="vol", vfid=VFID))
    problem = problem_of(caught.value)
    body = problem.body()
    assert (problem.status, body["type"]) == (
        400,
        "https://api.backend.ai/probs/storage/InvalidPath",
    )
    assert body["field"] == "relpath" and body["detail"] == "the path leaves the folder"
    assert body["title"] == "title of InvalidPath"

    with pytest.raises(StorageProxyError) as caught:
        await storage.call(
            "p", "/bad-path", ListFiles(volume="vol", vfid=VFID), fields={"relpath": "path"}
        )
    assert problem_of(caught.value).field == "path"

    renames = {"relpaths": "files", "relpath": "path"}
    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/bad-index", ListFiles(volume="vol", vfid=VFID), fields=renames)
    assert caught.value.field == "files.2"
    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/bad-index", ListFiles(volume="vol", vfid=VFID))
    assert caught.value.field == "relpaths[2]"

    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/folder/file/delete", ListFiles(volume="vol", vfid=VFID))
    assert (caught.value.http_status, caught.value.name) == (404, "FileNotFound")
    assert problem_of(caught.value).field is None

    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/too-big", ListFiles(volume="vol", vfid=VFID))
    assert (caught.value.http_status, caught.value.name, caught.value.field) == (
        413,
        "UploadTooLarge",
        "size",
    )

    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/unsupported", ListFiles(volume="vol", vfid=VFID))
    assert (caught.value.http_status, caught.value.name) == (501, "OperationNotSupported")

    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/html-404", ListFiles(volume="vol", vfid=VFID))
    assert (caught.value.http_status, caught.value.name) == (404, "StorageProxyRefused")


async def test_a_wrong_secret_is_the_operators_problem_not_the_callers(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    proxy = await _start(nursery, "right", ["vol"])
    await _configure(db, "p", proxy, "wrong")
    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/volumes")
    assert caught.value.http_status == 503
    assert "volumes/proxies/p/secret" in str(caught.value)
    assert proxy.seen[0][2][AUTH_HEADER.lower()] == "wrong"


async def test_failures_of_the_proxy_are_never_a_500(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    proxy = await _start(nursery, "s", ["vol"])
    await _configure(db, "p", proxy, "s")
    await _configure(db, "down", f"http://127.0.0.1:{free_port()}", "s")
    body = ListFiles(volume="vol", vfid=VFID)
    cases: list[tuple[str, str, int, str]] = [
        ("p", "/crash", 502, "StorageProxyFailed"),
        ("p", "/not-json", 502, "StorageProxyFailed"),
        ("down", "/volumes", 503, "StorageProxyUnavailable"),
        ("nobody", "/volumes", 404, "ProxyNotFound"),
    ]
    for name, route, status, error in cases:
        with pytest.raises(StorageProxyError) as caught:
            await storage.call(name, route, body if route != "/volumes" else None)
        assert (caught.value.http_status, caught.value.name) == (status, error), route
        assert problem_of(caught.value).status == status

    with trio.fail_after(10), pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/slow", body, timeout=0.5)
    assert (caught.value.http_status, caught.value.name) == (503, "StorageProxyUnavailable")
    assert "in time" in str(caught.value)


async def test_a_misconfigured_proxy_answers_503_naming_the_key(
    db: Database, storage: StorageProxies
) -> None:
    async with db.begin() as conn:
        await put_config(conn, "volumes/proxies/half/manager_api", "http://127.0.0.1:1")
    with pytest.raises(StorageProxyError) as caught:
        await storage.call("half", "/volumes")
    assert caught.value.http_status == 503
    assert "volumes/proxies/half" in str(caught.value)


async def test_a_config_change_applies_to_the_next_call(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    old = await _start(nursery, "s", ["old"])
    new = await _start(nursery, "s", ["new"])
    await _configure(db, "p", old, "s")
    assert await storage.hosts() == ["p:old"]
    assert await storage.default_host() is None
    await _configure(db, "p", new, "s")
    async with db.begin() as conn:
        await put_config(conn, "volumes/default_host", "p:new")
    assert await storage.hosts() == ["p:new"]
    assert await storage.default_host() == "p:new"
    assert (
        await storage.client_url("p", "/upload")
        == new.url.replace("127.0.0.1", "localhost") + "/upload"
    )
    async with db.begin() as conn:
        await delete_config(conn, "volumes/proxies/p", prefix=True)
    assert await storage.hosts() == []
    with pytest.raises(StorageProxyError) as caught:
        await storage.client_url("p", "/download")
    assert caught.value.http_status == 404


async def test_a_closed_client_answers_503(
    db: Database, storage: StorageProxies, nursery: trio.Nursery
) -> None:
    proxy = await _start(nursery, "s", ["vol"])
    await _configure(db, "p", proxy, "s")
    assert await storage.hosts() == ["p:vol"]
    await storage.aclose()
    with pytest.raises(StorageProxyError) as caught:
        await storage.call("p", "/volumes")
    assert caught.value.http_status == 503
