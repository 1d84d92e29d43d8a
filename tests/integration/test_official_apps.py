"""The official client's app commands against ``bai up``, unchanged: apps, app, ssh, scp.

One embedded cluster per test, the client's CLI as a separate process
(:mod:`support.official`); ``backend.ai app`` runs in the background until
the test sends it SIGINT, as a user's Ctrl+C would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from bai.embedded import EmbeddedHandle

from support.official import embedded_cluster, official, official_cli_path


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(handle: EmbeddedHandle, home: Path) -> dict[str, str]:
    key = handle.keypairs[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(
        HOME=str(home),
        BACKEND_ENDPOINT=handle.endpoint,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    return env


async def ok(cli: Path, handle: EmbeddedHandle, cwd: Path, *args: str) -> str:
    code, out, err = await official(cli, handle, cwd, *args)
    assert code == 0, (args, out, err)
    assert "Traceback" not in err, (args, err)
    return out + err


@asynccontextmanager
async def app_tunnel(
    cli: Path, handle: EmbeddedHandle, cwd: Path, session: str, app: str
) -> AsyncIterator[int]:
    """``backend.ai app SESSION APP -b 127.0.0.1:PORT`` until the block ends: the port."""
    port = _free_port()
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                [str(cli), "app", session, app, "-b", f"127.0.0.1:{port}"],
                cwd=cwd,
                env=_env(handle, cwd),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        )
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(60):
            while f"127.0.0.1:{port}".encode() not in seen:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        try:
            yield port
        finally:
            process.send_signal(signal.SIGINT)
            with trio.move_on_after(10):
                await process.wait()
            process.kill()


async def _http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: app\r\n\r\n".encode())
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


async def test_apps_and_an_app_tunnel(official_cli: Path, tmp_path: Path) -> None:
    async with embedded_cluster(tmp_path / "data") as up:
        await ok(official_cli, up, tmp_path, "session", "create", "-t", "apps-1", "python")
        listed = await ok(official_cli, up, tmp_path, "apps", "apps-1", "-l")
        for name in ("http", "sshd", "ttyd"):
            assert name in listed
        async with app_tunnel(official_cli, up, tmp_path, "apps-1", "http") as port:
            answers: list[bytes] = []

            async def fetch() -> None:
                answers.append(await _http_get(port, "/"))

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for _ in range(8):
                        nursery.start_soon(fetch)
        assert len(answers) == 8
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers), answers[0][:200]


def _children(pid: int) -> list[int]:
    """The processes whose parent is *pid*."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _command(pid: int) -> str:
    """The command name of *pid* (empty once it is gone)."""
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


async def through_sshd(cli: Path, handle: EmbeddedHandle, cwd: Path, *args: str) -> str:
    """``backend.ai ssh|scp ARGS``, which must succeed: its output.

    The client ends its ``app`` tunnel with one SIGINT; when that signal lands
    while the tunnel runs a finalizer, Python drops the KeyboardInterrupt and
    the tunnel (and the command waiting for it) never ends.  As a user would
    press Ctrl-C again, the tunnel gets another SIGINT every few seconds once
    the command should be over.
    """
    output = bytearray()
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                [str(cli), *args],
                cwd=cwd,
                env=_env(handle, cwd),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        )
        assert process.stdout is not None

        async def collect() -> None:
            assert process.stdout is not None
            while chunk := await process.stdout.receive_some(65536):
                output.extend(chunk)

        nursery.start_soon(collect)
        with trio.fail_after(90):
            with trio.move_on_after(5):
                await process.wait()
            while process.poll() is None:
                children = _children(process.pid)
                # Only once ssh or scp is over: on a loaded host it may take longer than 5 s.
                if not any(_command(child) in ("ssh", "scp") for child in children):
                    for child in children:
                        os.kill(child, signal.SIGINT)
                with trio.move_on_after(3):
                    await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, (args, text)
    assert "Traceback" not in text, (args, text)
    return text


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client on this host")
async def test_ssh_and_scp_through_the_sshd_app(official_cli: Path, tmp_path: Path) -> None:
    # The client moves the key into ~/.ssh, which it expects to exist, as a user's does.
    (tmp_path / ".ssh").mkdir(mode=0o700)
    async with embedded_cluster(tmp_path / "data") as up:
        await ok(official_cli, up, tmp_path, "session", "create", "-t", "ssh-1", "python")
        port = str(_free_port())
        out = await through_sshd(
            official_cli, up, tmp_path, "ssh", "ssh-1", "-p", port, "--", "echo", "via-ssh"
        )
        assert "via-ssh" in out
        (tmp_path / "local.txt").write_text("copied by scp")
        await through_sshd(
            official_cli,
            up,
            tmp_path,
            "scp",
            "ssh-1",
            "-p",
            str(_free_port()),
            "local.txt",
            "work@localhost:remote.txt",
        )
        out = await through_sshd(
            official_cli, up, tmp_path, "ssh", "ssh-1", "-p", port, "--", "cat", "remote.txt"
        )
        assert "copied by scp" in out
