"""Virtual folders in the distributed mode: ``bai manager``, ``bai storage-proxy`` and
``bai agent`` as processes of their own on PostgreSQL and Redis.

The operator announces the proxy with ``bai manager config put volumes/...``
(the shared configuration), as the spec's etcd keys do; the manager finds it
there, users move files straight to the proxy's client-facing API, and
kernels on the agent mount the folders the proxy made.  The harness is
:mod:`support.distributed`.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bai.client import APIClient, APIConfig
from bai.client.exceptions import BackendAPIError
from bai.client.vfolder import VFolder

from support.distributed import (
    Deployment,
    deploy,
    keys_of,
    output_of,
    private_redis_db,
    start_session,
    wait_for_agents,
    wait_until_serving,
)
from support.storage import HOST

#: The sessions of this test: "dist-data" mounted, 256 MiB and a minute to start.
WITH_DIST_DATA: dict[str, Any] = {
    "mounts": ["dist-data"],
    "resources": {"cpu": 1, "mem": "256m"},
    "max_wait": 60,
}


@pytest.fixture
async def deployment(pg_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with (
        private_redis_db(redis_url) as redis_db,
        deploy(pg_url, tmp_path, redis_db=redis_db, agents=1) as found,
    ):
        yield found


async def test_folders_move_files_and_mount_into_sessions_across_processes(
    deployment: Deployment, pg_url: str, tmp_path: Path
) -> None:
    d = deployment
    await d.cli("fixture", "populate", "default")
    await d.announce_storage()
    admin = await keys_of(pg_url, "admin@lablup.com")
    user = await keys_of(pg_url, "user@lablup.com")
    manager = d.manager(0, "manager")
    proxy = d.storage_proxy()
    agent = d.agent(0, "agent1")
    for daemon in (proxy, manager, agent):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    # The manager-facing API answers 401 without the secret: it serves.
    await wait_until_serving(d.storage_manager_api, d.daemons, statuses=(401,))
    admin_config = APIConfig(endpoint=d.endpoint, access_key=admin[0], secret_key=admin[1])
    user_config = APIConfig(endpoint=d.endpoint, access_key=user[0], secret_key=user[1])

    payload = os.urandom(5 * 1024 * 1024 + 3)
    local = tmp_path / "local"
    local.mkdir()
    (local / "input.bin").write_bytes(payload)
    async with APIClient(admin_config) as api:
        await wait_for_agents(api, {d.agent_ids[0]: "ALIVE"}, d.daemons)
        hosts = await VFolder.list_hosts(api)
        assert hosts["default"] == HOST and HOST in hosts["allowed"]
        await VFolder.create(api, "dist-data", HOST)
        folder = VFolder(api, "dist-data")
        await folder.upload(["input.bin"], basedir=local)
        assert [e.name for e in await folder.list_files()] == ["input.bin"]
        await folder.invite("ro", ["user@lablup.com"])

        session = await start_session(d, api, "writer", **WITH_DIST_DATA)
        assert session.status == "RUNNING", session.status
        code = (
            "import hashlib\n"
            "data = open('/home/work/dist-data/input.bin', 'rb').read()\n"
            "open('/home/work/dist-data/result.txt', 'w').write(hashlib.sha256(data).hexdigest())\n"
            "print(len(data))\n"
        )
        assert (await output_of(session, code)).strip() == str(len(payload))
        # A folder a live session mounts cannot be deleted.
        with pytest.raises(BackendAPIError) as refused:
            await folder.delete()
        assert refused.value.status == 409
        await session.destroy()

        out = tmp_path / "out"
        out.mkdir()
        await folder.download(["result.txt"], basedir=out)
        assert (out / "result.txt").read_text() == hashlib.sha256(payload).hexdigest()

    async with APIClient(user_config) as api:
        invitations = await VFolder.invitations(api)
        (invitation,) = [i for i in invitations if i["vfolder_name"] == "dist-data"]
        await VFolder.accept_invitation(api, invitation["id"])
        session = await start_session(d, api, "reader", **WITH_DIST_DATA)
        code = (
            "print(open('/home/work/dist-data/result.txt').read())\n"
            "try:\n"
            "    open('/home/work/dist-data/mine.txt', 'w')\n"
            "except OSError:\n"
            "    print('read-only')\n"
        )
        out_text = await output_of(session, code)
        assert "read-only" in out_text and hashlib.sha256(payload).hexdigest() in out_text
        await session.destroy()
        with pytest.raises(BackendAPIError) as denied:
            await VFolder(api, "dist-data").mkdir("not-allowed")
        assert denied.value.status == 403

    for daemon in (agent, manager, proxy):
        assert await daemon.stop(signal.SIGTERM) == 0
