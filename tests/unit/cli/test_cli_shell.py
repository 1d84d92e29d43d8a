"""`bai shell`: a real `bai` process attached to a terminal route of the fake manager.

The route (`support.fakestreams.upper_terminal`) answers typed bytes in upper
case and reports resizes as output.  Pipe mode runs `bai shell` with pipes;
terminal mode gives it a real pseudo-terminal as its controlling terminal, so
raw mode, SIGWINCH and the restoring of the terminal are the real thing.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import trio

from bai.cli.commands.shell import EscapeFilter, window_size

from support.fakemanager import FakeManager, manager
from support.fakestreams import upper_terminal

__all__ = ["manager"]

BAI = Path(sys.executable).with_name("bai")
PTY = "/stream/session/s1/pty"


def test_the_escape_is_tilde_dot_at_the_start_of_a_line() -> None:
    escapes = EscapeFilter()
    assert escapes.feed(b"ls ~/x\r") == (b"ls ~/x\r", False)
    assert escapes.feed(b"~") == (b"", False)  # held back until the next key
    assert escapes.feed(b"~") == (b"~", False)  # ~~ types one ~
    assert escapes.feed(b"a\r~b") == (b"a\r~b", False)
    assert escapes.feed(b"\r~.rest") == (b"\r", True)
    fresh = EscapeFilter()
    assert fresh.feed(b"~.") == (b"", True)  # the start counts as a line start
    assert EscapeFilter().feed(b"x~.") == (b"x~.", False)


def test_window_size_of_no_terminal_is_none() -> None:
    read_end, write_end = os.pipe()
    try:
        assert window_size((read_end, write_end)) is None
    finally:
        os.close(read_end)
        os.close(write_end)


def _env(fake: FakeManager) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(fake.env())
    return env


async def test_pipe_mode_types_stdin_and_ends_after_it(manager: FakeManager) -> None:
    manager.add_websocket(PTY, upper_terminal)
    for typed in (b"echo hi\n", b"echo hi"):
        with trio.fail_after(30):
            done = await trio.run_process(
                [str(BAI), "shell", "s1"],
                stdin=typed,
                capture_stdout=True,
                capture_stderr=True,
                env=_env(manager),
                check=False,
            )
        assert done.returncode == 0, done.stderr
        # The size a terminal gets without one here, then the typed line.
        assert done.stdout == b"24x80ECHO HI\n"


async def test_a_refused_terminal_fails_with_the_servers_reason(manager: FakeManager) -> None:
    done = await trio.run_process(
        [str(BAI), "shell", "nobody"],
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        env=_env(manager),
        check=False,
    )
    assert done.returncode == 1
    assert b"Unknown route" in done.stderr and b"/stream/session/nobody/pty" in done.stderr


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _read_until(master: int, wanted: bytes, seen: bytearray) -> None:
    with trio.fail_after(20):
        while wanted not in seen:
            await trio.lowlevel.wait_readable(master)
            try:
                seen += os.read(master, 65536)
            except BlockingIOError:
                continue


async def test_terminal_mode_is_raw_follows_resizes_and_restores_the_terminal(
    manager: FakeManager,
) -> None:
    manager.add_websocket(PTY, upper_terminal)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    _set_size(slave, 30, 100)
    before = termios.tcgetattr(slave)

    def controlling_terminal() -> None:
        # After setsid (start_new_session): make the terminal this session's.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        for leave in (b"\r~.", b"exit\r"):
            seen = bytearray()
            process = await trio.lowlevel.open_process(
                [str(BAI), "shell", "s1"],
                stdin=slave,
                stdout=slave,
                stderr=subprocess.PIPE,
                env=_env(manager),
                start_new_session=True,
                preexec_fn=controlling_terminal,
            )
            await _read_until(master, b"30x100", seen)
            # Raw mode: Ctrl-C is a byte for the remote shell, not a signal for bai.
            os.write(master, b"hi\x03")
            await _read_until(master, b"HI\x03", seen)
            _set_size(master, 40, 120)  # the kernel sends SIGWINCH
            await _read_until(master, b"40x120", seen)
            os.write(master, leave)
            with trio.fail_after(20):
                assert await process.wait() == 0
            assert process.stderr is not None
            errors = await process.stderr.receive_some()
            if leave == b"\r~.":
                assert b"Left the terminal" in errors
            assert termios.tcgetattr(slave) == before
            _set_size(slave, 30, 100)
    finally:
        os.close(master)
        os.close(slave)
