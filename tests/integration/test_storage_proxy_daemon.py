"""``bai storage-proxy`` as a process, and the owner of what the proxy creates.

The daemon: reads its config, writes and removes its pid file, serves both
APIs, exits 0 on SIGTERM and 2 on a bad config.  Ownership: with
``[storage-proxy] user``/``group`` set, every folder, directory and file the
proxy creates (and its own records under ``.bai/``) belongs to them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from bai.common.storage_api import AUTH_HEADER
from bai.storage.server import ProxyAddresses, StorageProxyService

from support.net import free_port
from support.storage import VOLUME, storage_config, storage_toml

SECRET = "daemon-test-manager-secret"
SCOPE = "user:12345678-1234-1234-1234-123456789abc"
VFID = "00112233445566778899aabbccddeeff"
BAI = [str(Path(sys.executable).parent / "bai")]


def _write_config(tmp_path: Path, manager_port: int, client_port: int) -> Path:
    config = tmp_path / "storage-proxy.toml"
    config.write_text(
        storage_toml(
            tmp_path,
            secret=SECRET,
            manager_port=manager_port,
            client_port=client_port,
            pid_file=tmp_path / "proxy.pid",
        )
    )
    return config


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    manager_port, client_port = free_port(), free_port()
    config = _write_config(tmp_path, manager_port, client_port)
    process = subprocess.Popen(
        [*BAI, "storage-proxy", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, manager_port, client_port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_until_up(port: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", headers={AUTH_HEADER: SECRET})
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_daemon_serves_and_stops_on_sigterm(
    daemon: tuple[subprocess.Popen[bytes], int, int], tmp_path: Path
) -> None:
    process, manager_port, client_port = daemon
    status = _wait_until_up(manager_port)
    assert status.status_code == 200 and status.json()["status"] == "running"
    assert (tmp_path / "proxy.pid").read_text().strip() == str(process.pid)
    options = httpx.options(f"http://127.0.0.1:{client_port}/upload")
    assert options.status_code == 204 and options.headers["Tus-Resumable"] == "1.0.0"
    created = httpx.post(
        f"http://127.0.0.1:{manager_port}/folder/create",
        headers={AUTH_HEADER: SECRET},
        json={"volume": "local", "vfid": VFID, "quota_scope": SCOPE},
    )
    assert created.status_code == 204
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not (tmp_path / "proxy.pid").exists()
    assert (tmp_path / VOLUME / VFID[:2] / VFID[2:4] / VFID[4:]).is_dir()


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "storage-proxy.toml"
    config.write_text('[storage-proxy]\nusage-scan-interval = "0s"\n')
    done = subprocess.run(
        [*BAI, "storage-proxy", "--config", str(config)], capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"usage-scan-interval" in done.stdout + done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
async def test_everything_created_belongs_to_the_configured_owner(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    owner = (4321, 4322)
    config = storage_config(tmp_path, volumes=("v",), owner=owner, secret=SECRET)
    addresses: ProxyAddresses = await nursery.start(StorageProxyService(config).serve)
    args = {"volume": "v", "vfid": VFID}
    async with (
        httpx.AsyncClient(base_url=addresses.manager_api, headers={AUTH_HEADER: SECRET}) as m,
        httpx.AsyncClient(base_url=addresses.client_api) as c,
    ):
        assert (await m.post("/folder/create", json={**args, "quota_scope": SCOPE})).is_success
        assert (await m.post("/folder/quota/update", json={**args, "quota": 10**6})).is_success
        scope = {"volume": "v", "quota_scope": SCOPE, "limit": 10**7}
        assert (await m.post("/quota-scope/update", json=scope)).is_success
        mkdir = {**args, "relpath": "made/by/mkdir", "parents": True}
        assert (await m.post("/folder/file/mkdir", json=mkdir)).is_success
        upload = {**args, "relpath": "new/dirs/file.bin", "size": 4}
        token = (await m.post("/folder/file/upload", json=upload)).json()["token"]
        patched = await c.patch(
            "/upload",
            params={"token": token},
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            content=b"data",
        )
        assert patched.status_code == 204
        clone = {**args, "dst_volume": "v", "dst_vfid": "f" * 32, "dst_quota_scope": SCOPE}
        assert (await m.post("/folder/clone", json=clone)).is_success
    volume = tmp_path / "v"
    created = [p for p in volume.rglob("*")]
    assert any(p.name == "file.bin" for p in created)
    assert len([p for p in created if p.name == "file.bin"]) == 2  # the clone's too
    wrong = [
        (str(p.relative_to(volume)), p.lstat().st_uid, p.lstat().st_gid)
        for p in created
        if (p.lstat().st_uid, p.lstat().st_gid) != owner
    ]
    assert wrong == []
    nursery.cancel_scope.cancel()
