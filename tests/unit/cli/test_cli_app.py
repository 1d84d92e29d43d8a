"""`bai apps`, `bai app`, `bai ssh` and `bai scp`: their arguments, and the local proxy as a
user runs it.

`bai app` runs as a real `bai` process against the signature-checking fake
manager (`support.fakemanager`) whose tcpproxy route relays to a real local
TCP service (`support.fakestreams`); the tests read its URL line, connect
through it and stop it with SIGINT as a user would with Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
import trio
from test_cli_session import invoke

from bai.cli.commands.app import (
    parse_app_arguments,
    parse_bind,
    scp_operand,
    ssh_command,
)

from support.fakemanager import FakeManager, manager
from support.fakestreams import echo_service, relay_to, start_service

__all__ = ["manager"]

BAI = Path(sys.executable).with_name("bai")
APPS = [
    {"name": "echo", "protocol": "tcp", "ports": [7000]},
    {"name": "web", "protocol": "http", "ports": [8080], "allowed_envs": ["TOKEN"]},
]


def test_bind_addresses() -> None:
    assert parse_bind("9900") == ("127.0.0.1", 9900)
    assert parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_bind("[::1]:0") == ("::1", 0)
    assert parse_bind("localhost:65535") == ("localhost", 65535)
    for bad in ("", "web", ":80", "1.2.3.4:65536", "1.2.3.4:-1", "host:"):
        with pytest.raises(click.BadParameter):
            parse_bind(bad)


def test_service_arguments_as_the_official_client_reads_them() -> None:
    assert parse_app_arguments(
        ["--debug", "--port 8888", "--token='a b'", "--dirs a 'b c'", "--flag="]
    ) == {
        "--debug": None,
        "--port": "8888",
        "--token": "a b",
        "--dirs": ["a", "b c"],
        "--flag": "",
    }
    for bad in ("", "   ", "--x 'unclosed"):
        with pytest.raises(click.BadParameter):
            parse_app_arguments([bad])


def test_scp_paths_name_the_session() -> None:
    remote = "work@127.0.0.1:"
    assert scp_operand("mysess:data/x.csv", "mysess") == (remote + "data/x.csv", True)
    assert scp_operand(":out/", "mysess") == (remote + "out/", True)
    assert scp_operand(":", "mysess") == (remote, True)
    assert scp_operand("work@localhost:tmp2/", "mysess") == (remote + "tmp2/", True)
    assert scp_operand("local.txt", "mysess") == ("local.txt", False)
    assert scp_operand("./a:b", "mysess") == ("./a:b", False)
    assert scp_operand("/abs/a:b", "mysess") == ("/abs/a:b", False)
    for bad in ("other:path", "root@example.com:x", "someone@mysess:x"):
        with pytest.raises(click.BadParameter):
            scp_operand(bad, "mysess")


def test_the_ssh_command_line() -> None:
    argv = ssh_command(Path("/tmp/k/id_container"), 40022, ["-v", "ls", "-la"])
    assert argv[0] == "ssh"
    assert argv[argv.index("-i") + 1] == "/tmp/k/id_container"
    assert argv[argv.index("-p") + 1] == "40022"
    assert "StrictHostKeyChecking=no" in argv and "UserKnownHostsFile=/dev/null" in argv
    # The destination comes before the user's words: options first, then the command.
    assert argv[-4:] == ["work@127.0.0.1", "-v", "ls", "-la"]


async def test_apps_lists_a_table_and_names(manager: FakeManager) -> None:
    manager.answer("GET", "/stream/session/s1/apps", APPS)
    listed = await invoke(manager, "apps", "s1")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [
        "Name\tProtocol\tPorts\tArguments\tEnvironment",
        "echo\ttcp\t7000\t-\t-",
        'web\thttp\t8080\t-\t["TOKEN"]',
    ]
    names = await invoke(manager, "apps", "s1", "-l")
    assert names.exit_code == 0
    assert "This session provides the following app services: echo, web" in names.stderr
    one = await invoke(manager, "apps", "s1", "web")
    assert one.stdout.splitlines()[1:] == ['web\thttp\t8080\t-\t["TOKEN"]']
    missing = await invoke(manager, "apps", "s1", "jupyter")
    assert missing.exit_code == 1 and "offers no app jupyter" in missing.stderr


async def test_scp_refuses_paths_before_connecting(manager: FakeManager) -> None:
    no_remote = await invoke(manager, "scp", "s1", "a.txt", "b.txt")
    assert no_remote.exit_code == 2 and "Name a remote path" in no_remote.output
    foreign = await invoke(manager, "scp", "s1", "a.txt", "host:b.txt")
    assert foreign.exit_code == 2 and "names the host 'host'" in foreign.output
    assert not any(r.path.startswith("/session") for r in manager.requests)


def _env(fake: FakeManager) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(fake.env())
    return env


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, f"the process ended its output after {line!r}"
        line += chunk
    return line


async def test_app_tunnels_connections_until_ctrl_c(
    manager: FakeManager, nursery: trio.Nursery
) -> None:
    manager.answer("GET", "/stream/session/s1/apps", APPS)
    manager.add_websocket(
        "/stream/session/s1/tcpproxy",
        relay_to({"echo": await start_service(nursery, echo_service)}),
    )
    process = await trio.lowlevel.open_process(
        [str(BAI), "app", "s1", "echo", "-b", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(manager),
    )
    assert process.stdout is not None and process.stderr is not None
    with trio.fail_after(30):
        url = (await _read_line(process.stdout)).decode().strip()
        assert url.startswith("tcp://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        for size in (1, 70_000):
            payload = os.urandom(size)
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(payload)
                received = b""
                while len(received) < size:
                    received += await stream.receive_some()
            assert received == payload
        # A tunnel still open at Ctrl-C is closed with the rest.
        held = await trio.open_tcp_stream("127.0.0.1", port)
        await held.send_all(b"ping")
        echoed = b""
        while len(echoed) < 4:
            echoed += await held.receive_some()
        assert echoed == b"ping"
        process.send_signal(signal.SIGINT)
        errors = b""
        while chunk := await process.stderr.receive_some():
            errors += chunk
        assert await process.wait() == 0
        assert await held.receive_some() == b""
        await held.aclose()
    text = errors.decode()
    assert 'A local proxy to the application "echo" provided by the session "s1"' in text
    assert 'The local proxy to "echo" has terminated.' in text
    assert "Traceback" not in text and "failed" not in text
    tunnels = [r for r in manager.requests if r.path == "/stream/session/s1/tcpproxy"]
    assert len(tunnels) == 3 and all(r.query["app"] == ["echo"] for r in tunnels)


async def test_app_refuses_an_unknown_app_and_a_busy_port(manager: FakeManager) -> None:
    manager.answer("GET", "/stream/session/s1/apps", APPS)
    unknown = await invoke(manager, "app", "s1", "jupyter", "-b", "0")
    assert unknown.exit_code == 1
    assert 'The app "jupyter" is not supported by the session s1 (its apps: echo, web)' in (
        unknown.stderr
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = await invoke(manager, "app", "s1", "echo", "-b", f"127.0.0.1:{port}")
    assert taken.exit_code == 1 and f"Cannot listen on 127.0.0.1:{port}" in taken.stderr
