"""The ``/folders`` routes on whole folders through the real manager API and storage proxy.

Both deployments (embedded: SQLite, in-process bus; distributed: PostgreSQL,
Redis) with a storage proxy serving the ``vfs`` volume ``local:local``
(:mod:`support.vfolders`).  Checked: create / list / info / rename / options
with the keys the official client reads, hosts and types, bad input refused
with the field named and nothing written, the policies' limits and allowed
hosts, the trash (delete, restore, purge), a mounted folder that cannot be
deleted, clone through a background task, quota and usage, and a change of
owner.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from bai.client import APIClient
from bai.common.storage_api import FolderArgs
from bai.manager.models.identity import domains
from bai.manager.models.session import sessions
from bai.manager.models.vfolder import vfolders
from bai.manager.vfolders.proxies import StorageProxyError

from support.api import Key
from support.api_session import Backends, Deployment, problem, running_deployment, unique_name
from support.vfolders import HOST, call, deployment, new_folder, ok

__all__ = ["deployment"]


async def names(d: Deployment, key: Key | None = None, **args: Any) -> list[str]:
    listed = await ok(d, "GET", "/folders", key, args or None)
    return [item["name"] for item in listed]


async def row_count(d: Deployment) -> int:
    return int((await d.db.fetch(sa.select(sa.func.count()).select_from(vfolders))).scalar())


# -------------------------------------------------------------------------- tests


async def test_create_list_info_rename_and_options(deployment: Deployment) -> None:
    d = deployment
    hosts = await ok(d, "GET", "/folders/_/hosts")
    assert hosts["default"] == HOST and HOST in hosts["allowed"]
    assert hosts["volume_info"][HOST]["backend"] == "vfs"
    for path in ("/folders/_/allowed-types", "/folders/_/allowed_types"):
        assert set(await ok(d, "GET", path)) == {"user", "group"}

    # Exactly what the official client sends; the host comes from volumes/default_host.
    official = {
        "name": unique_name("o"),
        "host": None,
        "unmanaged_path": None,
        "group": None,
        "usage_mode": "general",
        "permission": "rw",
        "quota": "0",
        "cloneable": False,
    }
    created = await ok(d, "POST", "/folders", body=official, status=201)
    assert created["name"] == official["name"] and created["host"] == HOST
    assert uuid.UUID(hex=created["id"]).hex == created["id"]
    assert created["ownership_type"] == "user" and created["group"] is None
    assert created["user"] == str(d.api.user.user_id)
    assert created["creator"] == d.api.user.email and created["max_size"] is None

    # The official client sends GET parameters as a JSON body.
    listed = await ok(d, "GET", "/folders", body={"all": False})
    mine = next(item for item in listed if item["name"] == official["name"])
    assert mine["is_owner"] is True and mine["permission"] == "wd"
    assert mine["type"] == mine["ownership_type"] == "user"
    assert mine["user_email"] == d.api.user.email and mine["status"] == "ready"

    info = await ok(d, "GET", f"/folders/{official['name']}")
    for key in ("name", "id", "is_owner", "permission", "status", "numFiles", "type"):
        assert key in info, key
    assert (info["numFiles"], info["used_bytes"], info["cloneable"]) == (0, 0, False)
    assert info["usage_mode"] == "general" and info["group"] is None
    assert (await ok(d, "GET", f"/folders/{created['id']}"))["name"] == official["name"]

    new_name = unique_name("r")
    assert (
        await ok(
            d,
            "POST",
            f"/folders/{official['name']}/rename",
            body={"new_name": new_name},
            status=201,
        )
        == {}
    )
    problem(await call(d, "GET", f"/folders/{official['name']}"), 404, "vfolder-not-found")
    await ok(
        d,
        "POST",
        f"/folders/{new_name}/update-options",
        body={"cloneable": True, "permission": "ro"},
        status=201,
    )
    info = await ok(d, "GET", f"/folders/{new_name}")
    assert info["cloneable"] is True and info["permission"] == "wd"

    # Only admins list all folders; the superadmin sees the user's.
    problem(await call(d, "GET", "/folders", body={"all": True}), 403, "forbidden")
    assert new_name in await names(d, d.api.admin, all=True)
    assert new_name not in await names(d, d.api.admin)
    assert new_name in await names(d, d.api.admin, owner_user_email=d.api.user.email)
    problem(
        await call(d, "GET", "/folders", body={"owner_user_email": d.api.admin.email}),
        403,
        "forbidden",
    )
    problem(await call(d, "GET", "/folders/_/all-hosts"), 403, "forbidden")
    for path in ("/folders/_/all-hosts", "/folders/_/all_hosts"):
        assert await ok(d, "GET", path, d.api.admin) == {"default": HOST, "allowed": [HOST]}


async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    deployment: Deployment,
) -> None:
    d = deployment
    taken = (await new_folder(d))["name"]
    before = await row_count(d)
    bad_names = ["a/b", "/abs", "..", ".", ".bai", ".bashrc", "", "x" * 65, "a b", "tab\there"]
    for name in bad_names:
        response = await call(d, "POST", "/folders", body={"name": name, "host": HOST})
        problem(response, 400, "invalid-api-params", "name")
    problem(
        await call(d, "POST", "/folders", body={"name": taken, "host": HOST}),
        400,
        "vfolder-already-exists",
        "name",
    )
    fresh = unique_name("n")
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"host": "nope:vol"}, 400, "invalid-api-params", "host"),
        ({"host": "no-colon"}, 400, "invalid-api-params", "host"),
        ({"permission": "rx"}, 400, "invalid-api-params", "permission"),
        ({"usage_mode": "weird"}, 400, "invalid-api-params", "usage_mode"),
        ({"quota": "lots"}, 400, "invalid-api-params", "quota"),
        ({"quota": -1}, 400, "invalid-api-params", "quota"),
        ({"group": "no-such-project"}, 400, "invalid-api-params", "group"),
        ({"unmanaged_path": "/etc"}, 400, "invalid-api-params", "unmanaged_path"),
        ({"cloneable": "yes"}, 400, "invalid-api-params", "cloneable"),
        # Only admins create project folders.
        ({"group": "default"}, 403, "vfolder-permission-denied", None),
    ]
    for extra, status, kind, field in cases:
        response = await call(d, "POST", "/folders", body={"name": fresh, "host": HOST, **extra})
        problem(response, status, kind, field)
    problem(
        await call(d, "POST", "/folders", body={"host": HOST}), 400, "invalid-api-params", "name"
    )
    # A dot-named folder is private: never a project folder.
    problem(
        await call(
            d, "POST", "/folders", d.api.admin, {"name": ".local", "host": HOST, "group": "default"}
        ),
        400,
        "invalid-api-params",
        "name",
    )
    for new_name in ("a/b", "..", taken):
        response = await call(d, "POST", f"/folders/{taken}/rename", body={"new_name": new_name})
        kind = "vfolder-already-exists" if new_name == taken else "invalid-api-params"
        if new_name == taken:
            assert response.status_code == 201  # renaming to its own name changes nothing
            continue
        problem(response, 400, kind, "new_name")
    other = (await new_folder(d))["name"]
    problem(
        await call(d, "POST", f"/folders/{other}/rename", body={"new_name": taken}),
        400,
        "vfolder-already-exists",
        "new_name",
    )
    assert await row_count(d) == before + 1
    problem(await call(d, "GET", "/folders/no-such-folder"), 404, "vfolder-not-found")
    problem(await call(d, "DELETE", "/folders/no-such-folder"), 404, "vfolder-not-found")


async def test_policy_limits_and_allowed_hosts(deployment: Deployment) -> None:
    d = deployment
    await d.set_policy(max_vfolder_count=1, max_vfolder_size=2**20)
    first = await new_folder(d)
    assert first["max_size"] == 1 and first["quota"] == 2**20
    problem(
        await call(d, "POST", "/folders", body={"name": unique_name(), "host": HOST}),
        406,
        "vfolder-limit-exceeded",
        "name",
    )
    await d.set_policy(max_vfolder_count=0)
    problem(
        await call(
            d, "POST", "/folders", body={"name": unique_name(), "host": HOST, "quota": "2m"}
        ),
        400,
        "invalid-api-params",
        "quota",
    )
    smaller = await new_folder(d, quota="512k")
    assert smaller["quota"] == 512 * 1024
    await d.set_policy(max_vfolder_size=0)

    # A domain that names only a host no proxy serves leaves nothing allowed.
    async with d.db.begin() as conn:
        await conn.execute(
            sa.update(domains)
            .where(domains.c.name == "default")
            .values(allowed_vfolder_hosts=["elsewhere:vol"])
        )
    hosts = await ok(d, "GET", "/folders/_/hosts")
    assert hosts == {"default": None, "allowed": [], "volume_info": {}}
    problem(
        await call(d, "POST", "/folders", body={"name": unique_name(), "host": HOST}),
        403,
        "vfolder-permission-denied",
    )
    async with d.db.begin() as conn:
        await conn.execute(
            sa.update(domains)
            .where(domains.c.name == "default")
            .values(allowed_vfolder_hosts={HOST: ["create-vfolder"]})
        )
    assert (await ok(d, "GET", "/folders/_/hosts"))["allowed"] == [HOST]
    await new_folder(d)


async def test_trash_restore_and_purge(deployment: Deployment) -> None:
    d = deployment
    folder = await new_folder(d)
    name, folder_id = folder["name"], folder["id"]
    await ok(d, "POST", f"/folders/{name}/mkdir", body={"path": "kept"}, status=201)

    assert await ok(d, "DELETE", f"/folders/{name}", status=204) is None
    assert name not in await names(d)
    problem(await call(d, "GET", f"/folders/{name}"), 404, "vfolder-not-found")
    trash = await ok(d, "GET", "/folders/_/trash")
    assert [(t["id"], t["status"]) for t in trash] == [(folder_id, "delete-pending")]

    # The name is free again, so restoring under it is refused, and works under another.
    again = await new_folder(d, name=name)
    problem(
        await call(d, "POST", "/folders/_/restore", body={"id": folder_id}),
        400,
        "vfolder-already-exists",
        "id",
    )
    problem(
        await call(d, "POST", "/folders/_/restore", body={"id": folder_id, "name": name}),
        400,
        "vfolder-already-exists",
        "name",
    )
    restored = await ok(
        d, "POST", "/folders/_/restore", body={"id": folder_id, "name": name + "-old"}
    )
    assert restored["name"] == name + "-old" and restored["status"] == "ready"
    listing = await ok(d, "GET", f"/folders/{name}-old/files", params={"path": ""})
    assert [item["name"] for item in listing["items"]] == ["kept"]
    assert await ok(d, "GET", "/folders/_/trash") == []

    # Purge removes it for good, data included.
    await ok(d, "DELETE", f"/folders/{again['id']}", status=204)
    problem(
        await call(d, "POST", "/folders/_/purge", body={"id": folder_id}), 404, "vfolder-not-found"
    )
    await ok(d, "POST", "/folders/_/purge", body={"id": again["id"]}, status=204)
    assert await ok(d, "GET", "/folders/_/trash") == []
    with pytest.raises(StorageProxyError) as caught:
        await d.api.ctx.storage.call(
            "local", "/folder/usage", FolderArgs(volume="local", vfid=again["id"])
        )
    assert caught.value.http_status == 404
    problem(
        await call(d, "POST", "/folders/_/purge", body={"id": str(uuid.uuid4())}),
        404,
        "vfolder-not-found",
    )
    problem(
        await call(d, "POST", "/folders/_/purge", body={"id": "not-a-uuid"}),
        400,
        "invalid-api-params",
        "id",
    )

    # Another user's trash is not yours; DELETE /folders by id is for superadmins.
    theirs = await new_folder(d, d.api.admin)
    problem(await call(d, "DELETE", "/folders", body={"id": theirs["id"]}), 403, "forbidden")
    await ok(d, "DELETE", "/folders", d.api.admin, {"id": theirs["id"]}, status=204)
    problem(
        await call(d, "POST", "/folders/_/restore", body={"id": theirs["id"]}),
        404,
        "vfolder-not-found",
    )
    assert await ok(d, "GET", "/folders/_/trash") == []
    await ok(d, "POST", "/folders/_/restore", d.api.admin, {"id": theirs["id"]})


async def test_a_folder_mounted_by_a_live_session_cannot_be_deleted(
    backends: Backends, tmp_path: Path
) -> None:
    # An agent registers the image; the session waits for its start time, so it stays live.
    async with running_deployment(backends, tmp_path, agent_count=1, storage=True) as d:
        folder = await new_folder(d)
        dot = await new_folder(d, name=".local")
        later: dict[str, Any] = {
            "type": "batch",
            "startupCommand": "true",
            "starts_at": "1h",
            "enqueueOnly": True,
        }
        resources = {"cpu": "1", "mem": "256m"}
        # The same folder twice, by name and by id, is refused.
        response = await call(
            d,
            "POST",
            "/session",
            body={
                "image": "python",
                **later,
                "config": {"resources": resources, "mounts": [folder["name"], folder["id"]]},
            },
        )
        problem(response, 400, "invalid-api-params", "config.mounts.1")
        session = await d.create(
            name=unique_name("s"),
            **later,
            config={
                "resources": resources,
                "mounts": [folder["name"]],
                "mount_map": {folder["name"]: "/data/in"},
            },
        )
        rows = await d.db.fetch(sa.select(sessions.c.vfolder_mounts))
        mounts = [m for row in rows for m in row[0]]
        # The named folder where the map says, and the private dot-folder on its own.
        assert [(m["vfid"], m["mode"], m["kernel_path"]) for m in mounts] == [
            (folder["id"], "rw", "/data/in"),
            (dot["id"], "rw", "/home/work/.local"),
        ]
        assert all(m["host"] == HOST and m["host_path"].startswith("/") for m in mounts)
        response = await call(d, "DELETE", f"/folders/{folder['name']}")
        detail = problem(response, 409, "vfolder-in-use")
        assert session["sessionName"] in detail
        assert response.json()["data"]["sessions"][0]["name"] == session["sessionName"]
        assert folder["name"] in await names(d)
        destroyed = await d.destroy(session["sessionId"])
        assert destroyed.status_code == 200, destroyed.text
        # A pending session that is destroyed is cancelled at once: the folder is free.
        await ok(d, "DELETE", f"/folders/{folder['name']}", status=204)
        # A trashed folder cannot be mounted.
        response = await call(
            d,
            "POST",
            "/session",
            body={"image": "python", "config": {"mounts": [folder["name"]]}},
        )
        problem(response, 404, "vfolder-not-found")


async def test_clone_runs_as_a_background_task(deployment: Deployment) -> None:
    d = deployment
    source = await new_folder(d)
    name = source["name"]
    await ok(d, "POST", f"/folders/{name}/mkdir", body={"path": "a/b", "parents": True}, status=201)
    target = unique_name("c")
    problem(
        await call(d, "POST", f"/folders/{name}/clone", body={"target_name": target}),
        403,
        "vfolder-permission-denied",
    )
    await ok(d, "POST", f"/folders/{name}/update-options", body={"cloneable": True}, status=201)
    for body, field in (
        ({"target_name": name}, "target_name"),
        ({"target_name": "a/b"}, "target_name"),
        ({"target_name": target, "target_host": "other:local"}, "target_host"),
    ):
        response = await call(d, "POST", f"/folders/{name}/clone", body=body)
        kind = "vfolder-already-exists" if body["target_name"] == name else "invalid-api-params"
        problem(response, 400, kind, field)

    official = {
        "target_name": target,
        "target_host": HOST,
        "usage_mode": "general",
        "permission": "rw",
    }
    cloned = await ok(d, "POST", f"/folders/{name}/clone", body=official, status=201)
    assert cloned["name"] == target and cloned["host"] == HOST
    task_id = cloned["bgtask_id"]
    # Followed after it may well have ended: the outcome is still reported.
    async with (
        APIClient(d.sdk_config(d.api.user)) as api,
        api.events("/events/background-task", params={"task_id": task_id}) as events,
    ):
        seen = []
        with trio.fail_after(30):
            async for event in events:
                seen.append(event.event)
    assert "task_done" in seen and seen[-1] == "server_close", seen
    info = await ok(d, "GET", f"/folders/{target}")
    assert info["status"] == "ready" and info["is_owner"]
    listing = await ok(d, "GET", f"/folders/{target}/files", params={"path": "a"})
    assert [item["name"] for item in listing["items"]] == ["b"]


async def test_quota_usage_and_a_change_of_owner(deployment: Deployment) -> None:
    d = deployment
    folder = await new_folder(d)
    where = {"folder_host": HOST, "id": folder["id"]}
    assert await ok(d, "GET", "/folders/_/quota", body=where) == {"quota": None, "size_bytes": 0}
    set_to = await ok(d, "POST", "/folders/_/quota", body={**where, "input": {"size_bytes": "1m"}})
    assert set_to["size_bytes"] == 2**20
    assert (await ok(d, "GET", "/folders/_/quota", params=where))["quota"] == 2**20
    assert (await ok(d, "GET", f"/folders/{folder['name']}"))["max_size"] == 1
    problem(
        await call(d, "GET", "/folders/_/quota", body={**where, "folder_host": "local:other"}),
        400,
        "invalid-api-params",
        "folder_host",
    )
    problem(
        await call(d, "POST", "/folders/_/quota", body={**where, "input": {"size_bytes": "x"}}),
        400,
        "invalid-api-params",
        "input.size_bytes",
    )

    problem(await call(d, "GET", "/folders/_/usage", body=where), 403, "forbidden")
    usage = await ok(d, "GET", "/folders/_/usage", d.api.admin, where)
    assert usage == {"file_count": 0, "used_bytes": 0}
    for path in ("/folders/_/used-bytes", "/folders/_/used_bytes"):
        assert await ok(d, "GET", path, d.api.admin, where) == {"used_bytes": 0}

    body = {"vfolder": folder["id"], "user_email": d.api.admin.email}
    problem(await call(d, "POST", "/folders/_/change-ownership", body=body), 403, "forbidden")
    problem(
        await call(
            d,
            "POST",
            "/folders/_/change-ownership",
            d.api.admin,
            {**body, "user_email": "nobody@example.com"},
        ),
        400,
        "vfolder-user-not-found",
        "user_email",
    )
    assert await ok(d, "POST", "/folders/_/change-ownership", d.api.admin, body) == {}
    problem(await call(d, "GET", f"/folders/{folder['name']}"), 404, "vfolder-not-found")
    info = await ok(d, "GET", f"/folders/{folder['name']}", d.api.admin)
    assert info["is_owner"] and info["user"] == str(d.api.admin.user_id)
