"""The SDK's streams and `bai shell`, `bai app`, `bai ssh`, `bai scp` against a real manager
and agent, in both deployments.

The CLI runs as separate `bai` processes with the user's keypair in
``BACKEND_*``, as a user runs it; `bai app` runs until the test sends it
SIGINT.  The python image's `http` app serves the kernel's ``public`` folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from bai.client import (
    APIClient,
    BackendAPIError,
    ComputeSession,
    NotFound,
    open_tcpproxy,
    stream_execute,
    stream_pty,
)

from support.api import Key
from support.api_session import Deployment, unique_name

BAI = Path(sys.executable).with_name("bai")


def _env(deployment: Deployment, key: Key | None = None) -> dict[str, str]:
    signer = key or deployment.api.user
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(
        BACKEND_ENDPOINT=deployment.api.base_url,
        BACKEND_ACCESS_KEY=signer.access_key,
        BACKEND_SECRET_KEY=signer.secret_key,
    )
    return env


async def _bai(
    deployment: Deployment, *args: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(90):
        return await trio.run_process(
            [str(BAI), *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            env=_env(deployment),
            cwd=cwd,
            check=False,
        )


async def _session(deployment: Deployment, public: dict[str, bytes] | None = None) -> str:
    name = unique_name()
    await deployment.create(name=name)
    if public:
        files = [(f"public/{path}", data) for path, data in public.items()]
        response = await deployment.upload(name, files)
        assert response.status_code in (200, 201, 204), response.text
    return name


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, f"the process ended its output after {line!r}"
        line += chunk
    return line


@asynccontextmanager
async def _bai_app(deployment: Deployment, name: str, app: str) -> AsyncIterator[str]:
    """`bai app NAME APP -b 127.0.0.1:0` running for the block; yields its URL; checks its
    clean end on SIGINT."""
    process = await trio.lowlevel.open_process(
        [str(BAI), "app", name, app, "-b", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(deployment),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(60):
            url = (await _read_line(process.stdout)).decode().strip()
        yield url
        process.send_signal(signal.SIGINT)
        errors = b""
        with trio.fail_after(30):
            while chunk := await process.stderr.receive_some():
                errors += chunk
            assert await process.wait() == 0, errors
        assert f'The local proxy to "{app}" has terminated.'.encode() in errors
        assert b"Traceback" not in errors and b"failed" not in errors, errors
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------- the SDK


async def test_the_sdk_lists_apps_types_into_a_terminal_and_streams_a_run(
    deployment: Deployment,
) -> None:
    name = await _session(deployment)
    async with APIClient(deployment.sdk_config(deployment.api.user)) as api:
        session = ComputeSession(api, name)
        apps = {app.name: app for app in await session.apps()}
        assert {"http", "sshd", "ttyd"} <= set(apps)
        assert apps["http"].protocol == "http" and len(apps["http"].ports) == 1

        async with stream_pty(session) as pty:
            await pty.resize(33, 101)
            await pty.send_stdin(b"stty size; echo hi-$((40+2))\r")
            seen = b""
            with trio.fail_after(30):
                while b"hi-42" not in seen:
                    seen += await anext(pty)
            assert b"33 101" in seen
            await pty.send_stdin(b"exit\r")
            # The shell's exit ends the iteration (the server's close 1000).
            with trio.fail_after(30):
                async for _ in pty:
                    pass
            assert pty.errors == []

        async with stream_execute(session, "print(input('name? '))") as run:
            statuses = []
            async for result in run:
                statuses.append(result.status)
                if result.status == "waiting-input":
                    await run.send_input("Lablup")
            assert statuses[-1] == "finished" and "waiting-input" in statuses

        with pytest.raises(NotFound):
            async with open_tcpproxy(session, "no-such-app"):
                pass


async def test_a_tunnel_reaches_the_http_app(deployment: Deployment) -> None:
    name = await _session(deployment, {"hello.txt": b"hello through the tunnel"})
    async with APIClient(deployment.sdk_config(deployment.api.user)) as api:
        session = ComputeSession(api, name)
        async with open_tcpproxy(session, "http") as tunnel:
            await tunnel.send_all(b"GET /hello.txt HTTP/1.0\r\nHost: app\r\n\r\n")
            answer = b""
            with trio.fail_after(30):
                while chunk := await tunnel.receive_some():
                    answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    assert body == b"hello through the tunnel"


async def test_another_users_session_has_no_streams(deployment: Deployment) -> None:
    name = await _session(deployment)
    async with APIClient(deployment.sdk_config(deployment.api.admin)) as api:
        session = ComputeSession(api, name)
        with pytest.raises(NotFound):
            await session.apps()
        with pytest.raises(NotFound):
            async with stream_pty(session):
                pass
        # Naming the owner, the superadmin reaches it.
        owned = ComputeSession(api, name, owner_access_key=deployment.api.user.access_key)
        async with stream_pty(owned) as pty:
            await pty.send_stdin(b"exit\r")
            with trio.fail_after(30):
                async for _ in pty:
                    pass


# ---------------------------------------------------------------- the CLI


async def test_bai_shell_in_pipe_mode_runs_the_lines_and_ends(deployment: Deployment) -> None:
    name = await _session(deployment)
    done = await _bai(deployment, "shell", name, stdin=b"echo hi-$((40+2))\nstty size\n")
    assert done.returncode == 0, done.stderr
    # What a terminal shows, less its control sequences (bash's bracketed-paste mode).
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout.decode(errors="replace"))
    lines = text.replace("\r", "").splitlines()
    assert "hi-42" in lines
    assert "24 80" in lines  # the size a terminal gets when bai has none
    # The terminal closed; the session did not.
    assert (await deployment.info(name))["status"] == "RUNNING"


async def test_bai_app_tunnels_http_and_many_connections_at_once(deployment: Deployment) -> None:
    body = os.urandom(200_000)
    name = await _session(deployment, {"blob.bin": body, "hello.txt": b"hello"})
    async with _bai_app(deployment, name, "http") as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            first = await http.get("/hello.txt")
            assert first.status_code == 200 and first.content == b"hello"
            results: list[bytes] = []

            async def fetch() -> None:
                # A connection of its own each time: each is its own tunnel.
                response = await http.get("/blob.bin", headers={"Connection": "close"})
                assert response.status_code == 200
                results.append(response.content)

            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for _ in range(30):
                        nursery.start_soon(fetch)
            assert results == [body] * 30


async def test_bai_app_refuses_an_unknown_app(deployment: Deployment) -> None:
    name = await _session(deployment)
    done = await _bai(deployment, "app", name, "jupyter", "-b", "127.0.0.1:0")
    assert done.returncode == 1
    assert b'The app "jupyter" is not supported' in done.stderr


def _key_folders() -> set[Path]:
    """The private folders `bai ssh` / `bai scp` download the session's key into."""
    return set(Path(tempfile.gettempdir()).glob("bai-ssh-*"))


def _need_openssh() -> None:
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.skip("OpenSSH's client is not installed")


async def test_bai_ssh_runs_a_command_and_scp_copies_both_ways(
    deployment: Deployment, tmp_path: Path
) -> None:
    _need_openssh()
    name = await _session(deployment)
    keys_before = await trio.to_thread.run_sync(_key_folders)
    done = await _bai(deployment, "ssh", name, "--", "echo", "hi-$((40+2))", "&&", "pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["hi-42", "/home/work"]
    assert done.stderr == b""  # no warning about the session's throw-away host key
    failed = await _bai(deployment, "ssh", name, "--", "exit", "3")
    assert failed.returncode == 3
    # Options before `--` are ssh's own.
    verbose = await _bai(deployment, "ssh", name, "-v", "--", "true")
    assert verbose.returncode == 0 and b"debug1:" in verbose.stderr

    local = tmp_path / "up.txt"
    local.write_bytes(b"uploaded by scp\n")
    up = await _bai(deployment, "scp", name, str(local), ":copied.txt")
    assert up.returncode == 0, up.stderr
    out, _ = await deployment.run(name, "print(open('copied.txt').read(), end='')")
    assert out == "uploaded by scp\n"
    down = await _bai(deployment, "scp", name, f"{name}:copied.txt", "back.txt", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "back.txt").read_bytes() == b"uploaded by scp\n"
    # The downloaded key went with each command.
    assert await trio.to_thread.run_sync(_key_folders) <= keys_before


async def test_a_stream_of_a_terminated_session_is_refused(deployment: Deployment) -> None:
    name = await _session(deployment)
    response = await deployment.destroy(name)
    assert response.status_code in (200, 204), response.text
    async with APIClient(deployment.sdk_config(deployment.api.user)) as api:
        with pytest.raises(BackendAPIError) as refused:
            async with stream_pty(ComputeSession(api, name)):
                pass
    assert refused.value.status in (404, 409)
