"""The agent watcher: its own API (token, status, start/stop/restart of a real process),
the manager's ``/resource/watcher`` relay, and ``bai watcher`` running a real ``bai agent``."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from bai.common.config import HostPort
from bai.watcher import WatcherService
from bai.watcher.control import ProcessControl

from support.agent import agent_config
from support.api_session import Deployment
from support.net import free_port

TOKEN = "watcher-test-token"
BAI = Path(sys.executable).with_name("bai")


def _config(tmp_path: Path, port: int = 0, token: str | None = TOKEN) -> Any:
    config = agent_config(tmp_path)
    watcher = msgspec.structs.replace(
        config.watcher, service_addr=HostPort("127.0.0.1", port), token=token
    )
    return msgspec.structs.replace(config, watcher=watcher)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


class Watched:
    """A watcher whose "agent" is a ``sleep`` process, running for a test."""

    def __init__(self, url: str, control: ProcessControl) -> None:
        self.url = url
        self.control = control

    @property
    def pid(self) -> int:
        process = self.control._process
        assert process is not None
        return process.pid

    async def call(self, method: str, path: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {} if token is None else {"X-BackendAI-Watcher-Token": token}
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.request(method, f"{self.url}{path}", headers=headers)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    control = ProcessControl(None, command=["sleep", "600"])
    service = WatcherService(_config(tmp_path), None, control=control)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(service.serve)
        yield Watched(url, control)
        first = control._process
        nursery.cancel_scope.cancel()
    # The watcher's end stops its agent: nothing outlives it.
    assert first is not None and first.returncode is not None


async def test_the_watcher_reports_and_controls_its_agent(watched: Watched) -> None:
    status = await watched.call("GET", "/")
    assert status.status_code == 200
    assert status.json() == {"agent-status": "active", "watcher-status": "active"}
    first = watched.pid
    assert (await watched.call("POST", "/agent/stop")).json() == {"result": "ok"}
    assert not _alive(first)
    assert (await watched.call("GET", "/")).json()["agent-status"] == "inactive"
    assert (await watched.call("POST", "/agent/start")).json() == {"result": "ok"}
    second = watched.pid
    assert second != first and _alive(second)
    assert (await watched.call("POST", "/agent/restart")).json() == {"result": "ok"}
    assert watched.pid != second and not _alive(second) and _alive(watched.pid)


async def test_the_watcher_refuses_strangers_and_bad_requests(watched: Watched) -> None:
    for token in (None, "wrong"):
        response = await watched.call("POST", "/agent/stop", token=token)
        assert response.status_code == 403
        assert "X-BackendAI-Watcher-Token" in response.json()["message"]
    assert _alive(watched.pid)
    assert (await watched.call("GET", "/agent/stop")).status_code == 405
    assert (await watched.call("POST", "/")).status_code == 405
    assert (await watched.call("GET", "/nowhere")).status_code == 404


async def _set_config(deployment: Deployment, key: str, value: object) -> None:
    response = await deployment.api.call(
        "POST", "/config/set", key=deployment.api.admin, json_body={"key": key, "value": value}
    )
    assert response.status_code == 200, response.text


async def test_the_manager_relays_to_an_agents_watcher(
    deployment: Deployment, watched: Watched
) -> None:
    agent = deployment.cluster.agents[0].agent_id
    call = deployment.api.call
    admin = deployment.api.admin
    # No token configured yet: the watcher cannot be asked.
    response = await call("GET", "/resource/watcher", key=admin, params={"agent_id": agent})
    assert response.status_code == 503
    assert response.json()["type"].endswith("watcher-not-configured")
    await _set_config(deployment, "config/watcher/token", TOKEN)
    port = int(watched.url.rsplit(":", 1)[1])
    await _set_config(deployment, f"nodes/agents/{agent}/watcher_port", port)
    response = await call("GET", "/resource/watcher", key=admin, params={"agent_id": agent})
    assert response.status_code == 200, response.text
    assert response.json()["agent-status"] == "active"
    first = watched.pid
    response = await call(
        "POST", "/resource/watcher/agent/restart", key=admin, json_body={"agent": agent}
    )
    assert response.json() == {"result": "ok"}
    assert watched.pid != first
    # Only superadmins; an unknown agent is 404; the agent must be named.
    response = await call(
        "POST", "/resource/watcher/agent/stop", key=deployment.api.user, json_body={"agent": agent}
    )
    assert response.status_code == 403
    assert _alive(watched.pid)
    response = await call("GET", "/resource/watcher", key=admin, params={"agent_id": "i-nobody"})
    assert response.status_code == 404
    response = await call("POST", "/resource/watcher/agent/stop", key=admin, json_body={})
    assert response.status_code == 400 and response.json()["field"] == "agent_id"
    # A watcher that does not answer is a 503, not a hang.
    await _set_config(deployment, f"nodes/agents/{agent}/watcher_port", free_port())
    response = await call("GET", "/resource/watcher", key=admin, params={"agent_id": agent})
    assert response.status_code == 503
    assert response.json()["type"].endswith("watcher-unavailable")


def _toml(config_path: Path, port: int, token: str | None) -> Path:
    tmp = config_path.parent
    config = _config(tmp, port, token)
    token_line = f'token = "{token}"\n' if token else ""
    config_path.write_text(
        f"""
[agent]
id = "{config.agent.id}"
rpc-listen-addr = "tcp://127.0.0.1:{free_port()}"
var-base-path = "{config.agent.var_base_path}"
ipc-base-path = "{config.agent.ipc_base_path}"
image-catalog = "{config.agent.image_catalog}"
allow-compute-plugins = []
[container]
scratch-root = "{config.container.scratch_root}"
port-range = [{config.container.port_range[0]}, {config.container.port_range[1]}]
[resource]
reserved-cpu = 0
reserved-mem = "512m"
[watcher]
service-addr = "127.0.0.1:{port}"
{token_line}"""
    )
    return config_path


async def test_bai_watcher_runs_a_real_agent_and_stops_it_with_itself(tmp_path: Path) -> None:
    missing = _toml(tmp_path / "no-token.toml", free_port(), None)
    with trio.fail_after(60):
        refused = await trio.run_process(
            [str(BAI), "watcher", "--config", str(missing)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert refused.returncode == 2
    assert b"[watcher] token is not set" in refused.stdout + refused.stderr
    port = free_port()
    config = _toml(tmp_path / "agent.toml", port, TOKEN)
    log = (tmp_path / "watcher.log").open("wb")
    process = await trio.lowlevel.open_process(
        [str(BAI), "watcher", "--config", str(config)], stdout=log, stderr=log
    )
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            headers = {"X-BackendAI-Watcher-Token": TOKEN}
            with trio.fail_after(60):
                while True:
                    try:
                        answer = await http.get(f"http://127.0.0.1:{port}/", headers=headers)
                        if answer.json()["agent-status"] == "active":
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.2)
        children = _children(process.pid)
        assert children, "the watcher runs no agent"
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await process.wait() == 0
        assert not any(_alive(pid) for pid in children)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found
