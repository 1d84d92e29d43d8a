"""PTY mode: a shell in a pseudo-terminal behind two raw byte sockets."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pynng
import pytest

from bai.kernel.client import RunnerClient, RunnerProcess


class Terminal:
    """The agent's side of the PTY channels: raw bytes in, raw bytes out."""

    def __init__(self, runner: RunnerProcess) -> None:
        self.keys = pynng.Push0(send_timeout=5000, reconnect_time_min=2, reconnect_time_max=20)
        self.screen = pynng.Pull0(recv_max_size=0, reconnect_time_min=2, reconnect_time_max=20)
        self.keys.dial(runner.pty_input_addr, block=False)
        self.screen.dial(runner.pty_output_addr, block=False)
        self.seen = b""

    def type(self, data: bytes) -> None:
        self.keys.send(data)

    def expect(self, pattern: bytes, timeout: float = 10.0) -> re.Match[bytes]:
        """Wait until *pattern* (a regex) shows up in output not consumed before."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.seen)
            if match:
                self.seen = self.seen[match.end() :]
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{pattern!r} never appeared; the terminal shows {self.seen[-500:]!r}"
                )
            self.screen.recv_timeout = max(int(remaining * 1000), 1)
            try:
                self.seen += self.screen.recv()
            except pynng.Timeout:
                continue

    def close(self) -> None:
        self.keys.close()
        self.screen.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "SHELL": "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh",
    }
    with RunnerProcess(str(tmp_path), pty=True, env=env) as process:
        yield process
    assert process.session_pids() == []


@pytest.fixture
def kernel(runner: RunnerProcess) -> Iterator[RunnerClient]:
    with runner.client() as client:
        assert client.wait_ready()["pty"] is True
        yield client


@pytest.fixture
def terminal(runner: RunnerProcess, kernel: RunnerClient) -> Iterator[Terminal]:
    term = Terminal(runner)
    yield term
    term.close()


def test_typed_bytes_reach_the_shell_and_its_output_comes_back(
    terminal: Terminal, tmp_path: Path
) -> None:
    terminal.type(b"echo hel''lo; pwd\n")
    # The quotes keep the echoed command line from matching: only the output does.
    terminal.expect(rb"hello\r\n" + re.escape(str(tmp_path).encode()) + rb"\r\n")


def test_resize_changes_the_terminal_size(terminal: Terminal, kernel: RunnerClient) -> None:
    step = kernel.execute("%resize 33 101")
    assert (step.status, step.exit_code, step.console) == ("finished", 0, [])
    terminal.type(b"stty size\n")
    terminal.expect(rb"\b33 101\r\n")


def test_bad_terminal_commands_are_answered(kernel: RunnerClient) -> None:
    step = kernel.execute("%resize tall")
    assert (step.exit_code, step.console) == (1, [["stderr", "usage: %resize ROWS COLS\n"]])
    step = kernel.execute("%ping")
    assert (step.status, step.exit_code, step.console) == ("finished", 0, [])


def test_control_characters_pass_through_untouched(terminal: Terminal) -> None:
    terminal.type(b"sleep 100\n")
    terminal.expect(rb"sleep 100\r\n")
    time.sleep(0.3)
    terminal.type(b"\x03")  # Ctrl-C, interpreted by the terminal, not by the runner
    terminal.type(b"echo after''-interrupt\n")
    terminal.expect(rb"after-interrupt\r\n")


def test_the_shell_is_the_oom_killers_choice_before_the_runner(terminal: Terminal) -> None:
    terminal.type(b"echo score=$(cat /proc/$$/oom_score_adj)\n")
    terminal.expect(rb"score=1000\r\n")


def test_the_shell_is_started_again_when_it_exits(terminal: Terminal) -> None:
    terminal.type(b"echo pid=$$\n")
    first = terminal.expect(rb"pid=(\d+)\r\n").group(1)
    terminal.type(b"exit\n")
    time.sleep(0.5)
    terminal.type(b"echo pid=$$\n")
    second = terminal.expect(rb"pid=(\d+)\r\n").group(1)
    assert first != second


def test_without_a_pty_resize_is_refused(tmp_path: Path) -> None:
    with RunnerProcess(str(tmp_path)) as runner, runner.client() as client:
        assert client.wait_ready()["pty"] is False
        step = client.execute("%resize 24 80")
        assert (step.exit_code, step.console) == (
            1,
            [["stderr", "this kernel has no terminal to resize\n"]],
        )
    assert runner.session_pids() == []
