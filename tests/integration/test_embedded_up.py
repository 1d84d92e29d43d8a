"""``bai up``: manager, agent, SQLite and the in-process bus in one process, state in one folder."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import trio

from bai.client.envfile import read_client_env
from bai.common.types import SessionStatus
from bai.embedded import SESSION_ENV_NAME, EmbeddedHandle, client_env_name
from bai.manager.db import create_database
from bai.manager.models import sessions
from bai.manager.sessions.model import SessionRequest
from bai.manager.sessions.registry import SessionRegistry

from support.agent import alive
from support.hostile import assert_contained, parse, probe_code
from support.official import embedded_service

BAI = Path(sys.executable).with_name("bai")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def _run_code(registry: SessionRegistry, access_key: str, code: str) -> tuple[Any, str]:
    request = SessionRequest(image="python", resources={"cpu": "1", "mem": "128m"})
    queued = (await registry.enqueue_session(access_key, request)).session
    info = await registry.wait_for_start(queued.id, timeout=60)
    assert info.status is SessionStatus.RUNNING
    result = await registry.execute(info, mode="query", code=code)
    assert result["status"] == "finished"
    return info, "".join(text for kind, text in result["console"] if kind == "stdout")


async def test_bai_up_runs_sessions_and_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(embedded_service(data).serve)
        assert handle.endpoint.startswith("http://127.0.0.1:")
        root = await trio.to_thread.run_sync(_get_json, handle.endpoint + "/")
        assert root["version"] == "v6.20220615"
        admin = handle.keypairs[0]
        assert admin.role == "superadmin"
        assert {k.email for k in handle.keypairs} == {"admin@lablup.com", "user@lablup.com"}
        env = (data / "client.env").read_text()
        assert f"export BACKEND_ENDPOINT={handle.endpoint}\n" in env
        assert f"export BACKEND_ACCESS_KEY={admin.access_key}\n" in env
        assert f"export BACKEND_SECRET_KEY={admin.secret_key}\n" in env
        assert (data / "client.env").stat().st_mode & 0o077 == 0
        registry = handle.manager.ctx.registry
        info, out = await _run_code(registry, admin.access_key, 'print("hello world")')
        assert out == "hello world\n"
        pid = int(info.main_kernel.container_id or 0)
        assert alive(pid)
        nursery.cancel_scope.cancel()
    assert not alive(pid)
    assert (data / "manager.sqlite3").exists()
    # The manager recorded the end of the kernel the agent killed at shutdown.
    async with create_database(f"sqlite:///{data / 'manager.sqlite3'}") as db:
        row = (
            await db.fetch(
                sa.select(sessions.c.status, sessions.c.status_info).where(sessions.c.id == info.id)
            )
        ).one()
    assert (row.status, row.status_info) == ("TERMINATED", "agent-termination")

    # A second start on the same folder keeps the keypairs and works again.
    async with trio.open_nursery() as nursery:
        again: EmbeddedHandle = await nursery.start(embedded_service(data).serve)
        assert again.keypairs == handle.keypairs
        _, out = await _run_code(again.manager.ctx.registry, admin.access_key, "print(6 * 7)")
        assert out == "42\n"
        nursery.cancel_scope.cancel()


async def test_two_data_directories_run_side_by_side(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        first: EmbeddedHandle = await nursery.start(embedded_service(tmp_path / "one").serve)
        key = first.keypairs[0].access_key
        info, _ = await _run_code(first.manager.ctx.registry, key, "x = 1")
        # The second agent starts while the first one's kernel runs: it must not
        # take that kernel for a leftover of its own.
        second: EmbeddedHandle = await nursery.start(embedded_service(tmp_path / "two").serve)
        await _run_code(second.manager.ctx.registry, second.keypairs[0].access_key, "1")
        result = await first.manager.ctx.registry.execute(info, mode="query", code="print(x)")
        assert result["status"] == "finished"
        assert alive(int(info.main_kernel.container_id or 0))
        assert second.agent.agent_id != first.agent.agent_id
        nursery.cancel_scope.cancel()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_folder_and_the_agents_state_are_the_owners_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # What an earlier run of an older bai left: a readable folder, database and settings.
    data.mkdir(mode=0o755)
    for name in ("manager.sqlite3", "client.env"):
        (data / name).write_bytes(b"")
        (data / name).chmod(0o644)
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(embedded_service(data).serve)
        info, _ = await _run_code(handle.manager.ctx.registry, handle.keypairs[0].access_key, "1")
        kid = str(info.main_kernel.id)
        agent = data / "agent"
        secrets = [data / client_env_name(i, k) for i, k in enumerate(handle.keypairs)]
        assert [read_client_env(p).secret_key for p in secrets] == [
            k.secret_key for k in handle.keypairs
        ]
        files = [
            *secrets,
            *data.glob("manager.sqlite3*"),  # with its WAL journal
            agent / "kernels" / f"{kid}.json",  # the runner's environment
        ]
        assert len(files) > 3
        folders = [data, agent, agent / "kernels"]
        assert {p.stat().st_uid for p in files + folders} == {os.geteuid()}
        files.append(agent / "logs" / f"{kid}.log")  # the kernel may own it, to reopen it
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        assert {str(p): _mode(p) for p in folders} == {str(p): 0o700 for p in folders}
        nursery.cancel_scope.cancel()


def test_bai_up_logs_no_secret_key(tmp_path: Path) -> None:
    # As the README runs it: the output goes to a log file anyone may come across.
    data = tmp_path / "data"
    log_path = tmp_path / "bai-up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [str(BAI), "up", "--data-dir", str(data), "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "stop with Ctrl-C" not in log_path.read_text():
            assert up.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    text = log_path.read_text()
    # client-session.env names the webserver only (session mode): no key in it.
    assert "BACKEND_ENDPOINT_TYPE=session" in (data / SESSION_ENV_NAME).read_text()
    settings = sorted(p for p in data.glob("client*.env") if p.name != SESSION_ENV_NAME)
    assert [p.name for p in settings] == ["client-user@lablup.com.env", "client.env"]
    for path in settings:
        keypair = read_client_env(path)
        assert f"access key {keypair.access_key}  in {path}" in text
        assert keypair.secret_key not in text


async def test_a_users_session_cannot_read_or_reach_the_cluster(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(embedded_service(data).serve)
        user = next(k for k in handle.keypairs if k.role == "user")
        port = int(handle.endpoint.rsplit(":", 1)[1])
        secrets = [
            data / "manager.sqlite3",
            data / "client.env",
            *(data / client_env_name(i, k) for i, k in enumerate(handle.keypairs)),
            *(data / "agent").rglob("*"),
        ]
        code = probe_code([str(p) for p in secrets], listed=[str(data)], ports=[port])
        _, out = await _run_code(handle.manager.ctx.registry, user.access_key, code)
        nursery.cancel_scope.cancel()
    found = parse(out)
    # No database, no keys, no agent state, no manager API: nothing to become admin with.
    assert_contained(found)
    listing = found["listings"][str(data)]
    assert listing == 2 or set(listing) <= {"ipc"}, listing
