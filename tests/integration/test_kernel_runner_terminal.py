"""The ``ttyd`` intrinsic service: the runner's web terminal, driven by a real WebSocket client."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from bai.kernel.client import RunnerClient, RunnerProcess
from bai.kernel.terminal import MAX_MESSAGE, MAX_TERMINALS

from support.net import free_port


class Refused(Exception):
    """The server answered the upgrade with an HTTP error."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class Terminal:
    """A browser's side of ``/pty``: JSON messages over a WebSocket (wsproto, blocking)."""

    def __init__(self, port: int, *, connect: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.seen = b""
        self.errors: list[str] = []
        self.closed: CloseConnection | None = None
        self.pongs: list[bytes] = []
        self._partial = ""
        if connect:
            self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target="/pty")))
            self._handshake()

    def _handshake(self) -> None:
        status, body = 0, b""
        while True:
            for event in self._receive(10):
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise Refused(status, body)

    def _receive(self, timeout: float) -> list[Event]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(message))))

    def type(self, data: bytes) -> None:
        self.send({"type": "stdin", "chars": base64.b64encode(data).decode()})

    def resize(self, rows: int, cols: int) -> None:
        self.send({"type": "resize", "rows": rows, "cols": cols})

    def pump(self, timeout: float) -> bool:
        """Read what arrives within *timeout* s; False once the connection has ended."""
        if self.closed is not None:
            return False
        try:
            events = self._receive(timeout)
        except TimeoutError:
            return True
        for event in events:
            if isinstance(event, TextMessage):
                # wsproto hands a message over in pieces as they arrive.
                self._partial += event.data
                if not event.message_finished:
                    continue
                message = json.loads(self._partial)
                self._partial = ""
                if message["type"] == "out":
                    self.seen += base64.b64decode(message["data"])
                else:
                    assert message["type"] == "error", message
                    self.errors.append(message["data"])
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.closed = event
                if self.ws.state.name == "REMOTE_CLOSING":
                    with contextlib.suppress(OSError):  # the server may have hung up already
                        self.sock.sendall(self.ws.send(event.response()))
                return False
            elif isinstance(event, BytesMessage):
                raise AssertionError(f"the server sent a BINARY message: {event.data!r}")
        return True

    def expect(self, pattern: bytes, timeout: float = 10.0) -> re.Match[bytes]:
        """Wait until *pattern* shows up in output not consumed before."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.seen)
            if match:
                self.seen = self.seen[match.end() :]
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.pump(remaining):
                raise AssertionError(
                    f"{pattern!r} never appeared (closed: {self.closed}); "
                    f"the terminal shows {self.seen[-500:]!r}"
                )

    def expect_error(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.errors:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.pump(remaining):
                raise AssertionError(f"no error message came (closed: {self.closed})")
        return self.errors.pop(0)

    def wait_closed(self, timeout: float = 10.0) -> CloseConnection:
        deadline = time.monotonic() + timeout
        while self.pump(max(deadline - time.monotonic(), 0.01)):
            if time.monotonic() > deadline:
                raise AssertionError("the server never closed the WebSocket")
        assert self.closed is not None, "the connection ended without a close frame"
        return self.closed

    def shell_pid(self) -> int:
        self.type(b"echo pid=$$\n")
        return int(self.expect(rb"pid=(\d+)\r\n").group(1))

    def close(self) -> None:
        self.sock.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.02)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def runner(tmp_path: Path, port: int) -> Iterator[RunnerProcess]:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "SHELL": "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh",
        "TERM": "dumb",  # the web terminal's shells get TERM=xterm whatever the kernel's is
    }
    with RunnerProcess(
        str(tmp_path), runtime="app", env=env, extra_args=["--service-ports", f"ttyd:http:{port}"]
    ) as process:
        yield process
    assert process.session_pids() == []


def _start(kernel: RunnerClient, **payload: Any) -> dict[str, Any]:
    return kernel.request("start-service", "service-result", within=30, name="ttyd", **payload)


@pytest.fixture
def ttyd(kernel: RunnerClient, port: int) -> int:
    result = _start(kernel)
    assert (result["status"], result["error"], result["ports"]) == ("started", None, [port])
    return port


@pytest.fixture
def terminal(ttyd: int) -> Iterator[Terminal]:
    term = Terminal(ttyd)
    yield term
    term.close()


def _http(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_ttyd_starts_without_a_definition_and_is_listed(kernel: RunnerClient, port: int) -> None:
    assert _start(kernel)["status"] == "started"
    assert _start(kernel)["status"] == "running"
    apps = kernel.request("get-apps", "apps-result")["apps"]
    assert apps == [
        {
            "name": "ttyd",
            "protocol": "http",
            "ports": [port],
            "url_template": "http://{host}:{port}/",
            "running": True,
        }
    ]
    assert kernel.request("status", "status")["services"] == ["ttyd"]


def test_the_page_and_http_errors(ttyd: int) -> None:
    status, headers, body = _http(ttyd, "GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert body.startswith(b"<!doctype html>")
    assert _http(ttyd, "GET", "/index.html?x=1")[0] == 200
    assert _http(ttyd, "GET", "/missing")[:1] == (404,)
    status, headers, _ = _http(ttyd, "POST", "/")
    assert (status, headers["Allow"]) == (405, "GET")
    status, _, body = _http(ttyd, "GET", "/pty")  # no upgrade
    assert (status, body) == (400, b"expected the header Upgrade: websocket\n")


def test_a_wrong_websocket_version_gets_426(ttyd: int) -> None:
    with socket.create_connection(("127.0.0.1", ttyd), timeout=10) as sock:
        sock.sendall(
            b"GET /pty HTTP/1.1\r\nHost: k\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 426 Upgrade Required\r\n")


def test_typed_text_is_echoed_by_a_shell_in_the_working_directory(
    terminal: Terminal, tmp_path: Path
) -> None:
    terminal.type(b"echo h''i; pwd; echo term=$TERM\n")
    # The quotes keep the echoed command line from matching: only the output does.
    terminal.expect(rb"hi\r\n" + re.escape(str(tmp_path).encode()) + rb"\r\nterm=xterm\r\n")


def test_the_services_envs_reach_its_shells(kernel: RunnerClient, port: int) -> None:
    assert _start(kernel, envs={"BAI_TERM_PROBE": "set by start-service"})["status"] == "started"
    term = Terminal(port)
    term.type(b'echo "probe=$BAI_TERM_PROBE"\n')
    term.expect(rb"probe=set by start-service\r\n")
    term.close()


def test_resize_changes_what_stty_reports(terminal: Terminal) -> None:
    terminal.type(b"stty size\n")
    terminal.expect(rb"\b24 80\r\n")
    terminal.resize(33, 101)
    terminal.type(b"stty size\n")
    terminal.expect(rb"\b33 101\r\n")


def test_two_terminals_are_independent(ttyd: int) -> None:
    first, second = Terminal(ttyd), Terminal(ttyd)
    try:
        first.resize(10, 40)
        second.resize(50, 120)
        assert first.shell_pid() != second.shell_pid()
        first.type(b"tty; stty size; echo fir''st\n")
        second.type(b"tty; stty size; echo sec''ond\n")
        tty1 = first.expect(rb"(/dev/pts/\d+)\r\n10 40\r\nfirst\r\n").group(1)
        tty2 = second.expect(rb"(/dev/pts/\d+)\r\n50 120\r\nsecond\r\n").group(1)
        assert tty1 != tty2
        # Neither saw the other's output.
        second.pump(0.3)
        assert b"first" not in first.seen + second.seen
        assert b"second" not in first.seen
    finally:
        first.close()
        second.close()


def test_bad_messages_get_errors_naming_the_field_and_the_socket_stays_open(
    terminal: Terminal,
) -> None:
    terminal.sock.sendall(terminal.ws.send(TextMessage("{not json")))
    assert terminal.expect_error().startswith("message: not JSON")
    terminal.send({"type": "exec"})
    assert terminal.expect_error().startswith('type: expected one of "stdin", "resize"')
    terminal.send({"type": "resize", "rows": 0, "cols": 80})
    assert terminal.expect_error() == "rows: expected an integer 1..1000 (got 0)"
    terminal.send({"type": "resize", "rows": 24, "cols": 5000})
    assert terminal.expect_error() == "cols: expected an integer 1..1000 (got 5000)"
    terminal.send({"type": "stdin", "chars": "%%%"})
    assert terminal.expect_error().startswith("chars: not valid base64")
    terminal.send({"type": "restart"})
    assert "manager" in terminal.expect_error()
    terminal.sock.sendall(terminal.ws.send(BytesMessage(b"\x00\x01")))
    assert terminal.expect_error() == "message: expected a TEXT message holding JSON"
    terminal.send({"type": "ping"})
    terminal.sock.sendall(terminal.ws.send(Ping(b"are you there")))
    terminal.type(b"echo st''ill open\n")
    terminal.expect(rb"still open\r\n")
    assert terminal.pongs == [b"are you there"]
    assert terminal.errors == []


def test_an_oversized_message_closes_with_1009_and_ends_the_shell(terminal: Terminal) -> None:
    pid = terminal.shell_pid()
    terminal.send({"type": "stdin", "chars": "A" * MAX_MESSAGE})
    closed = terminal.wait_closed()
    assert (closed.code, closed.reason) == (1009, f"a message over {MAX_MESSAGE} bytes")
    _wait_gone(pid)


def test_a_broken_frame_closes_with_1002(terminal: Terminal) -> None:
    pid = terminal.shell_pid()
    terminal.sock.sendall(b"\x81\x02hi")  # an unmasked frame: clients must mask
    closed = terminal.wait_closed()
    assert (closed.code, closed.reason) == (1002, "a client frame must be masked")
    _wait_gone(pid)


def test_when_the_shell_exits_the_socket_closes_with_1000(terminal: Terminal) -> None:
    pid = terminal.shell_pid()
    terminal.type(b"echo bye''bye; exit 3\n")
    closed = terminal.wait_closed()
    assert (closed.code, closed.reason) == (1000, "the shell exited")
    assert b"byebye\r\n" in terminal.seen  # its last words arrived before the close
    _wait_gone(pid)


def test_a_client_close_ends_the_shell(terminal: Terminal) -> None:
    pid = terminal.shell_pid()
    terminal.sock.sendall(terminal.ws.send(CloseConnection(code=1000)))
    closed = terminal.wait_closed()
    assert closed.code == 1000
    _wait_gone(pid)


def test_a_vanished_client_hangs_up_the_shell_and_kills_one_ignoring_it(ttyd: int) -> None:
    polite, stubborn = Terminal(ttyd), Terminal(ttyd)
    polite_pid = polite.shell_pid()
    stubborn.type(b"trap '' HUP; echo tr''apped\n")
    stubborn.expect(rb"trapped\r\n")
    stubborn_pid = stubborn.shell_pid()
    polite.close()
    stubborn.close()
    _wait_gone(polite_pid, timeout=0.9)  # SIGHUP: at once
    _wait_gone(stubborn_pid, timeout=3.0)  # SIGKILL: after the 1 s grace


def test_at_most_32_terminals_and_the_33rd_gets_503(ttyd: int) -> None:
    terminals = [Terminal(ttyd) for _ in range(MAX_TERMINALS)]
    try:
        with pytest.raises(Refused) as caught:
            Terminal(ttyd)
        assert caught.value.status == 503
        assert caught.value.body == b"at most 32 terminals at once\n"
        pid = terminals[0].shell_pid()
        terminals[0].type(b"exit\n")
        terminals[0].wait_closed()
        _wait_gone(pid)
        deadline = time.monotonic() + 5
        while True:  # the slot frees once the shell is reaped
            try:
                terminals[0] = Terminal(ttyd)
                break
            except Refused:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        terminals[0].type(b"echo ag''ain\n")
        terminals[0].expect(rb"again\r\n")
    finally:
        for term in terminals:
            term.close()


def test_a_slow_request_head_does_not_block_others(ttyd: int) -> None:
    with socket.create_connection(("127.0.0.1", ttyd), timeout=10) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        term = Terminal(ttyd)
        term.type(b"echo fa''st\n")
        term.expect(rb"fast\r\n")
        term.close()


def test_an_oversized_request_head_gets_431(ttyd: int) -> None:
    with socket.create_connection(("127.0.0.1", ttyd), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 431 ")


def test_shutdown_closes_terminals_with_1001_and_frees_the_port(
    kernel: RunnerClient, ttyd: int
) -> None:
    term = Terminal(ttyd)
    pid = term.shell_pid()
    result = kernel.request("shutdown-service", "service-result", name="ttyd", within=30)
    assert (result["status"], result["ports"]) == ("stopped", [ttyd])
    closed = term.wait_closed()
    assert (closed.code, closed.reason) == (1001, "the terminal service stopped")
    _wait_gone(pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ttyd), timeout=2).close()
    assert _start(kernel)["status"] == "started"  # and it starts again on the same port
    again = Terminal(ttyd)
    again.type(b"echo ba''ck\n")
    again.expect(rb"back\r\n")
    again.close()


def test_the_runner_stopping_ends_every_shell(runner: RunnerProcess, ttyd: int) -> None:
    terms = [Terminal(ttyd) for _ in range(3)]
    pids = [term.shell_pid() for term in terms]
    runner.stop()
    for term, pid in zip(terms, pids, strict=True):
        assert term.wait_closed().code == 1001
        _wait_gone(pid)
        term.close()


def test_a_busy_port_fails_with_a_precise_error(kernel: RunnerClient) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        result = _start(kernel, ports=[busy])
    assert result["status"] == "failed"
    assert result["error"] == (
        f"ports: the terminal server cannot listen on 127.0.0.1:{busy} "
        f"(Address already in use) (got [{busy}])"
    )
    assert kernel.request("status", "status")["services"] == []


def test_an_images_own_ttyd_definition_wins(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    port = free_port()
    command = ["{runtime_path}", "-m", "http.server", "{ports[0]}", "--bind", "127.0.0.1"]
    (defs / "ttyd.json").write_text(json.dumps({"command": command}))
    with (
        RunnerProcess(
            str(tmp_path),
            runtime="app",
            extra_args=["--service-ports", f"ttyd:http:{port}", "--service-defs", str(defs)],
        ) as process,
        process.client() as client,
    ):
        client.wait_ready()
        assert _start(client)["status"] == "started"
        status, headers, _ = _http(port, "GET", "/")
        assert status == 200
        assert headers["Server"].startswith("SimpleHTTP")
    assert process.session_pids() == []
