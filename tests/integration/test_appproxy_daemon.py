"""``bai app-proxy`` as a process: its config, its pid file, a signal to stop, a bad config."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bai.common.appproxy_api import SECRET_HEADER

from support.appproxy import free_range
from support.net import free_port

SECRET = "daemon-test-appproxy-secret"
BAI = [str(Path(sys.executable).parent / "bai")]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, tuple[int, int]]]:
    api_port = free_port()
    low, high = free_range(4)
    config = tmp_path / "app-proxy.toml"
    config.write_text(
        f'[appproxy]\nservice-addr = "127.0.0.1:{api_port}"\nsecret = "{SECRET}"\n'
        f'port-range = [{low}, {high}]\npid-file = "{tmp_path / "app-proxy.pid"}"\n'
    )
    process = subprocess.Popen(
        [*BAI, "app-proxy", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, api_port, (low, high)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_until_up(port: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/status")
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_daemon_serves_and_stops_on_sigterm(
    daemon: tuple[subprocess.Popen[bytes], int, tuple[int, int]], tmp_path: Path
) -> None:
    process, api_port, (low, _) = daemon
    assert _wait_until_up(api_port).json() == {"status": "running", "mode": "port"}
    assert (tmp_path / "app-proxy.pid").read_text().strip() == str(process.pid)
    session_id = uuid.uuid4()
    registered = httpx.post(
        f"http://127.0.0.1:{api_port}/v2/conf",
        headers={SECRET_HEADER: SECRET},
        json={
            "session_id": str(session_id),
            "kernel_host": "127.0.0.1",
            "kernel_port": free_port(),
            "app": "ttyd",
            "protocol": "http",
            "user_id": str(uuid.uuid4()),
            "access_key": "AK",
            "open_to_public": False,
            "login_session_token": None,
        },
    )
    assert registered.status_code == 200
    token = registered.json()["token"]
    added = httpx.get(f"http://127.0.0.1:{api_port}/v2/proxy/{token}/{session_id}/add?app=ttyd")
    assert added.status_code == 200
    assert added.json()["url"].startswith(f"http://127.0.0.1:{low}/?bai_app_token=")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not (tmp_path / "app-proxy.pid").exists()


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "app-proxy.toml"
    config.write_text('[appproxy]\nmode = "wildcard"\n')
    done = subprocess.run(
        [*BAI, "app-proxy", "--config", str(config)], capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"wildcard-domain" in done.stdout + done.stderr
