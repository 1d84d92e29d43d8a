"""Folders mounted into sessions through the API: the manager, a storage proxy, real kernels.

The folders are made as the folder routes make them (a ``vfolders`` row and
the proxy's ``folder/create``), so these tests follow a session's mounts
from ``POST /session`` to a file on the volume, whoever wrote the routes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.storage_api import CreateFolder, FolderArgs
from bai.manager.fixtures.populate import populate
from bai.manager.models.identity import users
from bai.manager.models.session import sessions
from bai.manager.models.vfolder import vfolder_permissions, vfolders

from support.agent import is_root
from support.api import Key
from support.api_session import Backends, Deployment, problem, running_deployment, unique_name

pytestmark = pytest.mark.skipif(not is_root(), reason="kernels with mounts need root and bwrap")


@pytest.fixture
async def deployment(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, storage=True) as running:
        yield running


async def make_folder(deployment: Deployment, owner: Key, name: str) -> Path:
    """A ``ready`` folder of *owner* on ``local:local``; returns its root on the host."""
    folder_id = uuid.uuid4()
    scope = f"user:{owner.user_id}"
    storage = deployment.cluster.ctx.storage
    vfid = folder_id.hex
    create = CreateFolder(volume="local", vfid=vfid, quota_scope=scope)
    await storage.call("local", "/folder/create", create)
    async with deployment.db.begin() as conn:
        await conn.execute(
            sa.insert(vfolders).values(
                id=folder_id,
                host="local:local",
                quota_scope_id=scope,
                name=name,
                ownership_type="user",
                user=owner.user_id,
                creator=owner.email,
            )
        )
    info = await storage.call("local", "/folder/mount", FolderArgs(volume="local", vfid=vfid))
    return Path(info["path"])


async def grant(deployment: Deployment, folder: str, owner: Key, to: Key, permission: str) -> None:
    """*to* may use *owner*'s *folder* with *permission* (what an accepted invitation leaves)."""
    async with deployment.db.begin() as conn:
        folder_id = await conn.scalar(
            sa.select(vfolders.c.id).where(
                vfolders.c.user == owner.user_id, vfolders.c.name == folder
            )
        )
        await conn.execute(
            sa.insert(vfolder_permissions).values(
                vfolder=folder_id, user=to.user_id, permission=permission
            )
        )


async def second_user(deployment: Deployment) -> Key:
    """A plain user besides ``user@lablup.com``, with a keypair (the superadmin would reach
    every folder as ``wd``)."""
    email = f"reader-{uuid.uuid4().hex[:6]}@lablup.com"
    access_key = "AKIA" + uuid.uuid4().hex[:16].upper()
    secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    await populate(
        deployment.db,
        {
            "users": [
                {
                    "email": email,
                    "username": email.split("@")[0],
                    "domain_name": "default",
                    "role": "user",
                    "resource_policy": "default",
                    "groups": ["default"],
                }
            ],
            "keypairs": [
                {
                    "user": email,
                    "access_key": access_key,
                    "secret_key": secret_key,
                    "resource_policy": "default",
                }
            ],
        },
    )
    (row,) = await deployment.db.fetch(sa.select(users.c.uuid).where(users.c.email == email))
    return Key(access_key, secret_key, email, row.uuid)


async def stored_mounts(deployment: Deployment, session_id: str) -> list[dict[str, Any]]:
    rows = await deployment.db.fetch(
        sa.select(sessions.c.vfolder_mounts).where(sessions.c.id == uuid.UUID(session_id))
    )
    mounts: list[dict[str, Any]] = rows[0].vfolder_mounts
    return mounts


_TRY_WRITE = r"""
import json, os
def attempt(path):
    try:
        with open(path, 'w') as f:
            f.write('from the reader')
        return 0
    except OSError as exc:
        return exc.errno
print(json.dumps({'read': open(READ).read(), 'write': attempt(WRITE)}))
"""


async def test_a_folder_written_by_one_session_is_read_only_to_an_invited_reader(
    deployment: Deployment,
) -> None:
    owner, reader = deployment.api.user, await second_user(deployment)
    host = await make_folder(deployment, owner, "shared")
    await grant(deployment, "shared", owner, reader, "ro")

    writer = unique_name()
    created = await deployment.create(
        name=writer, config={"resources": {"cpu": "1", "mem": "256m"}, "mounts": ["shared"]}
    )
    assert created["status"] == "RUNNING", created
    (entry,) = await stored_mounts(deployment, created["sessionId"])
    assert entry["name"] == "shared" and entry["mode"] == "rw" and entry["host"] == "local:local"
    assert entry["host_path"] == str(host) and entry["kernel_path"] == "/home/work/shared"
    out, err = await deployment.run(
        writer, "open('/home/work/shared/result.txt', 'w').write('from the writer')\nprint('ok')"
    )
    assert out == "ok\n", err
    assert (host / "result.txt").read_text() == "from the writer"

    reading = unique_name()
    created = await deployment.create(
        key=reader,
        name=reading,
        config={
            "resources": {"cpu": "1", "mem": "256m"},
            "mounts": ["shared"],
            "mount_map": {"shared": "/data/shared"},
        },
    )
    assert created["status"] == "RUNNING", created
    (entry,) = await stored_mounts(deployment, created["sessionId"])
    assert entry["mode"] == "ro" and entry["kernel_path"] == "/data/shared"
    code = "READ = '/data/shared/result.txt'\nWRITE = '/data/shared/result.txt'\n" + _TRY_WRITE
    out, err = await deployment.run(reading, code, key=reader)
    assert json.loads(out) == {"read": "from the writer", "write": 30}, err  # EROFS
    assert (host / "result.txt").read_text() == "from the writer"


async def test_dot_folders_are_mounted_in_every_session_of_their_owner(
    deployment: Deployment,
) -> None:
    owner, other = deployment.api.user, deployment.api.admin
    local = await make_folder(deployment, owner, ".local")
    await make_folder(deployment, other, ".cache")
    name = unique_name()
    created = await deployment.create(name=name)
    assert created["status"] == "RUNNING", created
    (entry,) = await stored_mounts(deployment, created["sessionId"])
    assert (entry["name"], entry["kernel_path"], entry["mode"]) == (
        ".local",
        "/home/work/.local",
        "rw",
    )
    out, err = await deployment.run(
        name,
        "import os\nos.makedirs('/home/work/.local/lib', exist_ok=True)\n"
        "open('/home/work/.local/lib/pkg.py', 'w').write('x = 1')\n"
        "print(os.path.exists('/home/work/.cache'))\n",
    )
    assert out == "False\n", err
    assert (local / "lib" / "pkg.py").read_text() == "x = 1"


async def test_mounts_the_owner_cannot_have_are_refused_naming_the_entry(
    deployment: Deployment,
) -> None:
    owner, other = deployment.api.user, deployment.api.admin
    await make_folder(deployment, owner, "mine")
    await make_folder(deployment, owner, "also-mine")
    await make_folder(deployment, other, "private")
    before = await deployment.table_counts()
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"mounts": ["mine", "private"]}, 404, "vfolder-not-found", "config.mounts.1"),
        ({"mounts": ["mine", "mine"]}, 400, "invalid-api-params", "config.mounts.1"),
        (
            {"mounts": ["mine", "also-mine"], "mount_map": {"also-mine": "mine"}},
            400,
            "invalid-api-params",
            "config.mount_map.also-mine",
        ),
        (
            {
                "mounts": ["mine", "also-mine"],
                "mount_map": {"mine": "/data", "also-mine": "/data/x"},
            },
            400,
            "invalid-api-params",
            "config.mount_map.also-mine",
        ),
        (
            {"mounts": ["mine"], "mount_map": {"mine": "/home/work/../../etc"}},
            400,
            "invalid-api-params",
            "config.mount_map.mine",
        ),
    ]
    for config, status, kind, field in cases:
        response = await deployment.api.call(
            "POST",
            "/session",
            key=owner,
            json_body={"image": "python", "name": unique_name(), "config": config},
        )
        problem(response, status, kind, field)
    assert await deployment.table_counts() == before
