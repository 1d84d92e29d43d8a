"""The vfolder SDK: the wire of every /folders route, and transfers through a real proxy stand-in.

Requests go to the signature-checking fake manager (``support.fakemanager``);
``request-upload`` / ``request-download`` hand out tokens of a real tus and
range-serving HTTP server (``support.transferserver``), so uploads and
downloads move real bytes, and the tests check route paths and body keys
against what the official client sends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from quart import Response

from bai.client import (
    APIClient,
    BackendClientError,
    MalformedResponse,
    NotFound,
    SyncAPIClient,
)
from bai.client.bgtask import TaskProgress
from bai.client.vfolder import (
    FolderEntry,
    VFolder,
    parse_entries,
    plan_folder_upload,
    transfer_url,
)
from bai.common.errors import InvalidValue

from support.fakemanager import FakeManager, Recorded, json_response, manager, sse_response
from support.transferserver import TransferServer, content, proxy, wire_folder

__all__ = ["manager", "proxy"]

FOLDER_ID = "b4b1b16c-d07f-4f1f-b60e-da9449aa60a6"
TASK_ID = "0f9a1c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


# ------------------------------------------------------------------ folders


async def test_create_sends_the_official_keys(manager: FakeManager) -> None:
    manager.answer("POST", "/folders", {"id": FOLDER_ID, "name": "data", "host": "local:local"})
    async with APIClient(manager.config()) as api:
        created = await VFolder.create(api, "data", "local:local", quota=1 << 30, cloneable=True)
        await VFolder.create(api, "other")
    assert created["id"] == FOLDER_ID
    first, second = manager.bodies("POST", "/folders")
    assert first == {
        "name": "data",
        "host": "local:local",
        "usage_mode": "general",
        "permission": "rw",
        "quota": str(1 << 30),
        "cloneable": True,
    }
    # Unset options are left out, for the manager's defaults.
    assert second == {
        "name": "other",
        "usage_mode": "general",
        "permission": "rw",
        "cloneable": False,
    }


async def test_list_sends_its_parameters_in_the_query_and_the_body(manager: FakeManager) -> None:
    items = [{"name": "data", "id": FOLDER_ID, "host": "local:local", "permission": "rw"}]
    manager.answer("GET", "/folders", items)
    async with APIClient(manager.config()) as api:
        assert await VFolder.list(api) == items
        assert await VFolder.list(api, all=True, group_id="g1") == items
    plain, everything = [r for r in manager.requests if r.path == "/folders"]
    assert plain.query == {"all": ["false"]}
    assert plain.json() == {"all": False}
    assert everything.query == {"all": ["true"], "group_id": ["g1"]}
    assert everything.json() == {"all": True, "group_id": "g1"}


async def test_a_list_answer_of_another_shape_is_malformed(manager: FakeManager) -> None:
    manager.answer("GET", "/folders", {"items": "nope"})
    async with APIClient(manager.config()) as api:
        with pytest.raises(MalformedResponse) as caught:
            await VFolder.list(api)
    assert caught.value.field == "folder list"


async def test_hosts_and_types(manager: FakeManager) -> None:
    manager.answer(
        "GET", "/folders/_/hosts", {"default": "local:local", "allowed": ["local:local"]}
    )
    manager.answer("GET", "/folders/_/all_hosts", {"default": "local:local", "allowed": ["a:b"]})
    manager.answer("GET", "/folders/_/allowed_types", ["user", "group"])
    async with APIClient(manager.config()) as api:
        assert (await VFolder.list_hosts(api))["default"] == "local:local"
        assert (await VFolder.list_all_hosts(api))["allowed"] == ["a:b"]
        assert await VFolder.list_allowed_types(api) == ["user", "group"]


async def test_one_folder_routes(manager: FakeManager) -> None:
    manager.answer("GET", "/folders/my data", {"id": FOLDER_ID, "name": "my data"})
    manager.answer("POST", "/folders/my data/rename", {})
    manager.answer("POST", "/folders/new/update-options", {})
    manager.answer("DELETE", "/folders/new", {})
    manager.answer("DELETE", "/folders", {})
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "my data")
        assert folder.path == "/folders/my%20data"
        assert (await folder.info())["id"] == FOLDER_ID
        await folder.rename("new")
        assert folder.name == "new"
        await folder.update_options(cloneable=True)
        await folder.delete()
        await VFolder.delete_by_id(api, FOLDER_ID)
    assert manager.requests[-5].raw_target == "/folders/my%20data"
    assert manager.bodies("POST", "/folders/my data/rename") == [{"new_name": "new"}]
    assert manager.bodies("POST", "/folders/new/update-options") == [{"cloneable": True}]
    assert manager.bodies("DELETE", "/folders/new") == [None]
    assert manager.bodies("DELETE", "/folders") == [{"id": FOLDER_ID}]


async def test_a_missing_folder_is_not_found(manager: FakeManager) -> None:
    async with APIClient(manager.config()) as api:
        with pytest.raises(NotFound):
            await VFolder(api, "nope").info()


async def test_the_trash(manager: FakeManager) -> None:
    trashed = [{"id": FOLDER_ID, "name": "old", "host": "local:local"}]
    manager.answer("GET", "/folders/_/trash", {"items": trashed})
    manager.answer("POST", "/folders/_/restore", {"id": FOLDER_ID, "name": "old"})
    manager.answer("POST", "/folders/_/purge", {})
    async with APIClient(manager.config()) as api:
        assert await VFolder.trash(api) == trashed
        assert (await VFolder.restore(api, FOLDER_ID))["name"] == "old"
        await VFolder.purge(api, FOLDER_ID)
    assert manager.bodies("POST", "/folders/_/restore") == [{"id": FOLDER_ID}]
    assert manager.bodies("POST", "/folders/_/purge") == [{"id": FOLDER_ID}]


async def test_usage_and_quota(manager: FakeManager) -> None:
    manager.answer("GET", "/folders/_/usage", {"file_count": 3, "used_bytes": 10})
    manager.answer("GET", "/folders/_/quota", {"size_bytes": 100})
    manager.answer("POST", "/folders/_/quota", {"size_bytes": 200})
    async with APIClient(manager.config()) as api:
        assert (await VFolder.usage(api, "local:local", FOLDER_ID))["used_bytes"] == 10
        assert (await VFolder.quota(api, "local:local", FOLDER_ID))["size_bytes"] == 100
        await VFolder.set_quota(api, "local:local", FOLDER_ID, 200)
    usage = next(r for r in manager.requests if r.path == "/folders/_/usage")
    assert usage.query == {"folder_host": ["local:local"], "id": [FOLDER_ID]}
    assert manager.bodies("POST", "/folders/_/quota") == [
        {"folder_host": "local:local", "id": FOLDER_ID, "input": {"size_bytes": 200}}
    ]


# ------------------------------------------------------------------ files


async def test_file_routes_send_the_official_keys(manager: FakeManager) -> None:
    for method, route in [
        ("POST", "mkdir"),
        ("POST", "rename-file"),
        ("POST", "move-file"),
        ("DELETE", "delete-files"),
    ]:
        manager.answer(method, f"/folders/data/{route}", {})
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "data")
        await folder.mkdir("a/b", parents=True)
        await folder.rename_file("a/b", "c")
        await folder.move_file("a/c", "d")
        await folder.delete_files(["d", "e"], recursive=True)
    assert manager.bodies("POST", "/folders/data/mkdir") == [
        {"path": "a/b", "parents": True, "exist_ok": False}
    ]
    assert manager.bodies("POST", "/folders/data/rename-file") == [
        {"target_path": "a/b", "new_name": "c"}
    ]
    assert manager.bodies("POST", "/folders/data/move-file") == [{"src": "a/c", "dst": "d"}]
    assert manager.bodies("DELETE", "/folders/data/delete-files") == [
        {"files": ["d", "e"], "recursive": True}
    ]


async def test_list_files_reads_items_and_the_legacy_files(manager: FakeManager) -> None:
    items = {
        "items": [
            {
                "name": "sub",
                "type": "DIRECTORY",
                "size": 4096,
                "mode": 0o755,
                "created": "2024-01-02T03:04:05+00:00",
                "modified": "2024-01-02T03:04:05Z",
            },
            {"name": "a.txt", "type": "FILE", "size": 3, "mode": "644", "modified": ""},
        ]
    }
    legacy = {
        "files": json.dumps(
            [{"filename": "a.txt", "size": 3, "mode": "-rw-r--r--", "mtime": 1700000000.5}]
        )
    }
    manager.answer_each("GET", "/folders/data/files", [items, legacy])
    async with APIClient(manager.config()) as api:
        new = await VFolder(api, "data").list_files("x/y")
        old = await VFolder(api, "data").list_files()
    assert new == [
        FolderEntry("sub", "DIRECTORY", 4096, "drwxr-xr-x", 1704164645.0),
        FolderEntry("a.txt", "FILE", 3, "-rw-r--r--", None),
    ]
    assert new[0].is_dir and not new[1].is_dir
    assert old == [FolderEntry("a.txt", "", 3, "-rw-r--r--", 1700000000.5)]
    first = manager.requests[-2]
    assert first.query == {"path": ["x/y"]}
    assert first.json() == {"path": "x/y"}


@pytest.mark.parametrize(
    "answer",
    [[], {"items": {}}, {"files": "not json"}, {"items": [{"size": 1}]}, {"items": [None]}],
)
def test_malformed_listings_are_refused(answer: Any) -> None:
    with pytest.raises(MalformedResponse):
        parse_entries(answer)


# ------------------------------------------------------------------ transfers


async def test_upload_and_download_through_the_proxy(
    manager: FakeManager, proxy: TransferServer, tmp_path: Path
) -> None:
    stored = wire_folder(manager, proxy, "data")
    local = tmp_path / "local"
    (local / "sub" / "deeper").mkdir(parents=True)
    (local / "top.bin").write_bytes(os.urandom(300_000))
    (local / "sub" / "a.txt").write_bytes(b"alpha")
    (local / "sub" / "deeper" / "empty").write_bytes(b"")
    manager.answer("POST", "/folders/data/mkdir", {})
    seen: dict[str, int] = {}
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "data")
        sent = await folder.upload(
            ["top.bin", "sub"],
            basedir=local,
            recursive=True,
            chunk_size=100_000,
            progress=lambda rel, done, total: seen.__setitem__(rel, done),
        )
        assert [(t.relpath, t.size) for t in sent] == [
            ("top.bin", 300_000),
            ("sub/a.txt", 5),
            ("sub/deeper/empty", 0),
        ]
        assert seen == {"top.bin": 300_000, "sub/a.txt": 5, "sub/deeper/empty": 0}
        for rel in ("top.bin", "sub/a.txt", "sub/deeper/empty"):
            assert content(stored / rel) == content(local / rel)
        assert manager.bodies("POST", "/folders/data/mkdir") == [
            {"path": "sub", "parents": True, "exist_ok": True},
            {"path": "sub/deeper", "parents": True, "exist_ok": True},
        ]
        assert manager.bodies("POST", "/folders/data/request-upload")[0] == {
            "path": "top.bin",
            "size": 300_000,
        }

        back = tmp_path / "back"
        got = await folder.download(["top.bin", "./sub/a.txt"], basedir=back)
        assert [(t.relpath, t.local, t.size) for t in got] == [
            ("top.bin", back / "top.bin", 300_000),
            ("sub/a.txt", back / "sub" / "a.txt", 5),
        ]
        assert content(back / "top.bin") == content(local / "top.bin")
        assert content(back / "sub" / "a.txt") == b"alpha"
        assert manager.bodies("POST", "/folders/data/request-download") == [
            {"path": "top.bin"},
            {"path": "sub/a.txt"},
        ]
    # The transfers themselves carried the tokens to the proxy, not to the manager;
    # the empty file (up3) was complete once its token existed.
    assert {r.query["token"][0] for r in proxy.requests} == {"up1", "up2", "down4", "down5"}


async def test_transfers_resume_after_dropped_connections(
    manager: FakeManager, proxy: TransferServer, tmp_path: Path
) -> None:
    stored = wire_folder(manager, proxy, "data")
    data = os.urandom(1_500_000)
    (tmp_path / "big.bin").write_bytes(data)
    resumed: list[tuple[str, int, int]] = []
    proxy.drop_patch_after = [600_000]
    proxy.drop_download_after = [900_000]
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "data")
        await folder.upload(
            ["big.bin"],
            basedir=tmp_path,
            on_resume=lambda rel, n, offset, exc: resumed.append((rel, n, offset)),
        )
        assert content(stored / "big.bin") == data
        await folder.download(
            ["big.bin"],
            basedir=tmp_path / "back",
            on_resume=lambda rel, n, offset, exc: resumed.append((rel, n, offset)),
        )
    assert content(tmp_path / "back" / "big.bin") == data
    assert resumed == [("big.bin", 1, 600_000), ("big.bin", 1, 900_000)]


async def test_bad_paths_are_refused_before_anything_is_sent(
    manager: FakeManager, proxy: TransferServer, tmp_path: Path
) -> None:
    wire_folder(manager, proxy, "data")
    (tmp_path / "inside").mkdir()
    (tmp_path / "outside.txt").write_bytes(b"x")
    (tmp_path / "inside" / "dir").mkdir()
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "data")
        with pytest.raises(InvalidValue, match="outside of the base directory"):
            await folder.upload(["../outside.txt"], basedir=tmp_path / "inside")
        with pytest.raises(InvalidValue, match="is a directory"):
            await folder.upload(["dir"], basedir=tmp_path / "inside")
        with pytest.raises(InvalidValue, match="cannot be read"):
            await folder.upload(["missing"], basedir=tmp_path / "inside")
        for bad in ("../../etc/passwd", "/etc/passwd", "a\x00b", "."):
            with pytest.raises(InvalidValue):
                await folder.download([bad], basedir=tmp_path / "inside")
    assert manager.requests == []
    assert proxy.requests == []


async def test_download_keeps_existing_files_and_archives_directories(
    manager: FakeManager, proxy: TransferServer, tmp_path: Path
) -> None:
    stored = wire_folder(manager, proxy, "data")
    (stored / "f.txt").write_bytes(b"new")
    (tmp_path / "f.txt").write_bytes(b"mine")
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "data")
        with pytest.raises(BackendClientError, match="exists already"):
            await folder.download(["f.txt"], basedir=tmp_path)
        assert manager.requests == []
        await folder.download(["f.txt"], basedir=tmp_path, overwrite=True)
        assert content(tmp_path / "f.txt") == b"new"
        with pytest.raises(NotFound):
            await folder.download(["missing.txt"], basedir=tmp_path)

        async def archive(recorded: Recorded) -> Response:
            assert recorded.json() == {"path": ".", "archive": True}
            proxy.offer_download("zip", stored / "f.txt")
            return json_response({"token": "zip", "url": f"{proxy.url}/download"})

        manager.add("POST", "/folders/data/request-download", archive)
        got = await folder.download(["."], basedir=tmp_path, archive=True)
    assert got[0].local == tmp_path / "data.zip"
    assert not (tmp_path / "missing.txt").exists()


def test_transfer_url_adds_the_token_and_applies_the_address_map() -> None:
    answer = {"token": "a b", "url": "http://proxy.internal:6021/upload"}
    assert str(transfer_url(answer)) == "http://proxy.internal:6021/upload?token=a+b"
    mapped = transfer_url(answer, {answer["url"]: "http://127.0.0.1:9/upload"})
    assert str(mapped) == "http://127.0.0.1:9/upload?token=a+b"
    with pytest.raises(BackendClientError, match="not among the overridden"):
        transfer_url(answer, {"http://other/": "http://x/"})
    for bad in ({"url": answer["url"]}, {"token": "t", "url": "/upload"}, ["x"]):
        with pytest.raises(MalformedResponse):
            transfer_url(bad)


def test_plan_skips_linked_directories_and_sends_linked_files(tmp_path: Path) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_bytes(b"f")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "g").write_bytes(b"gg")
    (tmp_path / "tree" / "linkdir").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "tree" / "linkfile").symlink_to(tmp_path / "elsewhere" / "g")
    (tmp_path / "tree" / "dangling").symlink_to(tmp_path / "nowhere")
    dirs, files = plan_folder_upload(["tree"], tmp_path, recursive=True)
    assert dirs == ["tree", "tree/sub"]
    assert [(f.name, f.size) for f in files] == [("tree/linkfile", 2), ("tree/sub/f", 1)]


async def test_the_blocking_facade(
    manager: FakeManager, proxy: TransferServer, tmp_path: Path
) -> None:
    stored = wire_folder(manager, proxy, "data")
    (tmp_path / "f.txt").write_bytes(b"hello")
    manager.answer("GET", "/folders", [{"name": "data", "id": FOLDER_ID}])
    manager.answer("GET", "/folders/data/files", {"items": []})
    config = manager.config()

    def script() -> tuple[list[dict[str, Any]], list[FolderEntry], bytes]:
        with SyncAPIClient(config) as client:
            listed = client.call(VFolder.list, client.api)
            folder = client.vfolder("data")
            folder.upload(["f.txt"], basedir=tmp_path)
            entries = folder.list_files()
            folder.download(["f.txt"], basedir=tmp_path / "back")
        return listed, entries, (tmp_path / "back" / "f.txt").read_bytes()

    listed, entries, back = await trio.to_thread.run_sync(script)
    assert listed == [{"name": "data", "id": FOLDER_ID}]
    assert entries == []
    assert back == content(stored / "f.txt") == b"hello"


# ------------------------------------------------------------------ sharing and cloning


async def test_sharing_routes_send_the_official_keys(manager: FakeManager) -> None:
    manager.answer("POST", "/folders/data/invite", {"invited_ids": ["b@x"]})
    manager.answer("GET", "/folders/invitations/list", {"invitations": [{"id": "i1"}]})
    manager.answer("POST", "/folders/invitations/accept", {})
    manager.answer("DELETE", "/folders/invitations/delete", {})
    manager.answer("POST", "/folders/data/share", {"shared_emails": ["b@x"]})
    manager.answer("DELETE", "/folders/data/unshare", {"unshared_emails": ["b@x"]})
    manager.answer("POST", "/folders/data/leave", {})
    async with APIClient(manager.config()) as api:
        folder = VFolder(api, "data")
        assert (await folder.invite("ro", ["b@x"]))["invited_ids"] == ["b@x"]
        assert await VFolder.invitations(api) == [{"id": "i1"}]
        await VFolder.accept_invitation(api, "i1")
        await VFolder.delete_invitation(api, "i2")
        assert (await folder.share("rw", ["b@x"]))["shared_emails"] == ["b@x"]
        assert (await folder.unshare(["b@x"]))["unshared_emails"] == ["b@x"]
        await folder.leave()
    assert manager.bodies("POST", "/folders/data/invite") == [{"perm": "ro", "user_ids": ["b@x"]}]
    assert manager.bodies("POST", "/folders/invitations/accept") == [{"inv_id": "i1"}]
    assert manager.bodies("DELETE", "/folders/invitations/delete") == [{"inv_id": "i2"}]
    assert manager.bodies("POST", "/folders/data/share") == [
        {"permission": "rw", "emails": ["b@x"]}
    ]
    assert manager.bodies("DELETE", "/folders/data/unshare") == [{"emails": ["b@x"]}]
    assert manager.bodies("POST", "/folders/data/leave") == [{}]


async def test_clone_and_follow_its_task(manager: FakeManager) -> None:
    manager.answer("POST", "/folders/data/clone", {"bgtask_id": TASK_ID})

    async def events(recorded: Recorded) -> Response:
        assert recorded.query == {"task_id": [TASK_ID]}
        return sse_response(
            [
                ("task_updated", {"task_id": TASK_ID, "current_progress": 1, "total_progress": 2}),
                ("task_done", {"task_id": TASK_ID, "message": None}),
                ("server_close", {}),
            ]
        )

    manager.add("GET", "/events/background-task", events)
    updates: list[TaskProgress] = []
    async with APIClient(manager.config()) as api:
        answer = await VFolder(api, "data").clone("copy", target_host="local:local")
        outcome = await VFolder.wait_cloned(
            api, answer["bgtask_id"], target="copy", on_progress=updates.append, poll_interval=30
        )
    assert outcome.ok
    assert updates == [TaskProgress(1, 2, None)]
    assert manager.bodies("POST", "/folders/data/clone") == [
        {
            "target_name": "copy",
            "target_host": "local:local",
            "usage_mode": "general",
            "permission": "rw",
        }
    ]


async def test_a_failed_clone_task_says_why(manager: FakeManager) -> None:
    manager.add(
        "GET",
        "/events/background-task",
        lambda r: _answer(sse_response([("bgtask_failed", {"message": "disk full"})])),
    )
    async with APIClient(manager.config()) as api:
        outcome = await VFolder.wait_cloned(api, TASK_ID, target="copy", poll_interval=30)
    assert (outcome.status, outcome.message) == ("failed", "disk full")


async def test_a_clone_that_ended_before_its_events_is_seen_by_polling(
    manager: FakeManager,
) -> None:
    """The manager keeps no result of a finished task: the folder list tells instead."""
    manager.add(
        "GET", "/events/background-task", lambda r: _answer(sse_response([], hold_open=True))
    )
    other = {"id": FOLDER_ID.replace("-", ""), "name": "copy", "status": "cloning"}
    clone = {"id": TASK_ID.replace("-", ""), "name": "copy", "status": "cloning"}
    manager.answer_each(
        "GET",
        "/folders",
        [[other, clone], [other, {**clone, "status": "ready"}], [other], [other]],
    )
    async with APIClient(manager.config()) as api:
        # Found by id (with or without dashes), not by the name another folder has too.
        with trio.fail_after(10):
            outcome = await VFolder.wait_cloned(api, TASK_ID, target=TASK_ID, poll_interval=0.05)
        assert outcome.ok
        with trio.fail_after(10):
            gone = await VFolder.wait_cloned(api, TASK_ID, target=TASK_ID, poll_interval=0.05)
    assert gone.status == "failed"
    assert gone.message is not None and "gone" in gone.message
    # The folder's info is not asked: it would ask the proxy about a half-copied folder.
    assert not [r for r in manager.requests if r.path.startswith("/folders/")]


async def _answer(response: Response) -> Response:
    return response
