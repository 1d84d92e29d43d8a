"""``bai shell SESSION``: this terminal attached to a new shell in the session's main kernel.

It opens ``/stream/session/{name}/pty`` (:func:`bai.client.stream.stream_pty`)
and relays keystrokes and output until the shell exits -- something the
official client offers only through SSH.

* On a terminal (stdin is a TTY), the terminal is put in raw mode, so every
  key (Ctrl-C, arrows, Tab) goes to the remote shell; the window size is sent
  at the start and on every ``SIGWINCH``.  The shell's exit (``exit``,
  Ctrl-D) ends the command and restores the terminal -- always, also on an
  error or ``SIGTERM``/``SIGHUP``.  ``~.`` typed at the start of a line
  leaves at once, as in ssh (``~~`` types one ``~``).
* Otherwise (pipe mode), stdin's bytes are typed into the shell as they come;
  at stdin's end the line is finished and Ctrl-D typed, again every
  :data:`EOF_REPEAT` seconds until the shell exits (a Ctrl-D typed while a
  command runs is that command's end of input, or is lost when the shell's
  line editor takes the terminal back), so the shell exits after running
  everything and the command ends when it has: ``echo 'ls' | bai shell
  mysess`` prints the listing (with the terminal's echo and prompts, as a
  terminal would show them).

Output goes to stdout as the terminal sends it (``\\r\\n`` line ends, escape
sequences).  The terminal pings the server every :data:`PING_INTERVAL`
seconds, so an idle shell keeps the session in use.  The exit status is 0
when the shell ended (or was left with ``~.``), 1 when the connection failed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import click

from bai.cli.commands.params import owner_option
from bai.cli.commands.pretty import print_info
from bai.cli.commands.runtime import run_client

if TYPE_CHECKING:
    import trio

    from bai.client import APIClient, ComputeSession, PtyError, PtyStream

__all__ = ["EscapeFilter", "attach", "shell", "window_size"]

#: Seconds between two pings while the terminal is attached.
PING_INTERVAL: Final = 30.0
#: Seconds between two Ctrl-D after stdin ended (pipe mode), until the shell exits.
EOF_REPEAT: Final = 0.5
#: Bytes read from stdin at once.
_READ_SIZE: Final = 64 * 1024
#: The size a pipe-mode terminal gets when stdout is not a terminal either.
_DEFAULT_SIZE: Final = (24, 80)
_MAX_SIZE: Final = 1000
_TILDE: Final = ord("~")
_DOT: Final = ord(".")
_LINE_ENDS: Final = (ord("\r"), ord("\n"))
_EOT: Final = b"\x04"


class EscapeFilter:
    """Finds the escape ``~.`` typed at the start of a line, as ssh does.

    :meth:`feed` returns the bytes to send and whether the user asked to
    leave.  A ``~`` at the start of a line is held back until the next key:
    ``.`` leaves, ``~`` sends one ``~``, anything else sends both.
    """

    def __init__(self) -> None:
        self._line_start = True
        self._tilde = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for byte in data:
            if self._tilde:
                self._tilde = False
                if byte == _DOT:
                    return bytes(out), True
                if byte != _TILDE:
                    out.append(_TILDE)
            elif self._line_start and byte == _TILDE:
                self._tilde = True
                continue
            out.append(byte)
            self._line_start = byte in _LINE_ENDS
        return bytes(out), False


def window_size(fds: tuple[int, ...]) -> tuple[int, int] | None:
    """(rows, cols) of the first of *fds* that is a terminal, clamped to 1..1000."""
    for fd in fds:
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.lines > 0 and size.columns > 0:
            return min(size.lines, _MAX_SIZE), min(size.columns, _MAX_SIZE)
    return None


@contextmanager
def _raw_mode(fd: int) -> Iterator[None]:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pollable(fd: int) -> bool:
    """Whether the event loop can wait for *fd* (epoll refuses regular files)."""
    import stat

    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def _read(fd: int, pollable: bool) -> bytes:
    """The next bytes of *fd*; ``b""`` at its end (or when it broke)."""
    import trio

    try:
        if pollable:
            # The fd stays blocking (it is shared with the parent shell); a
            # read after readiness returns what is there without waiting.
            await trio.lowlevel.wait_readable(fd)
            return os.read(fd, _READ_SIZE)
        return await trio.to_thread.run_sync(os.read, fd, _READ_SIZE)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> None:
    import select

    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


async def _keepalive(pty: PtyStream) -> None:
    import trio

    from bai.client import StreamClosed

    while True:
        await trio.sleep(PING_INTERVAL)
        try:
            await pty.ping()
        except StreamClosed:
            return


async def _follow_resizes(pty: PtyStream, fds: tuple[int, ...]) -> None:
    import signal

    import trio

    from bai.client import StreamClosed

    with trio.open_signal_receiver(signal.SIGWINCH) as changes:
        async for _ in changes:
            size = window_size(fds)
            if size is not None:
                try:
                    await pty.resize(*size)
                except StreamClosed:
                    return


async def _type_input(
    pty: PtyStream, fd: int, *, interactive: bool, cancel: trio.CancelScope, left: list[bool]
) -> None:
    """Send stdin to the terminal (see the module docstring for its end)."""
    import trio

    from bai.client import StreamClosed

    pollable = _pollable(fd)
    escapes = EscapeFilter() if interactive else None
    last = b"\n"
    try:
        while data := await _read(fd, pollable):
            if escapes is not None:
                data, leave = escapes.feed(data)
                if leave:
                    left.append(True)
                    cancel.cancel()
                    return
            if data:
                await pty.send_stdin(data)
                last = data[-1:]
        if interactive:
            # The terminal itself went away (hang-up): nobody is left to type.
            cancel.cancel()
            return
        # Finish a last unterminated line, then Ctrl-D until the shell exits.
        await pty.send_stdin((b"" if last in (b"\n", b"\r") else b"\n") + _EOT)
        while True:
            await trio.sleep(EOF_REPEAT)
            await pty.send_stdin(_EOT)
    except StreamClosed:
        pass  # the output side reports how the terminal ended


async def _end_on_signals(cancel: trio.CancelScope) -> None:
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as received:
        async for _ in received:
            cancel.cancel()
            return


async def _relay(pty: PtyStream, stdin_fd: int, stdout_fd: int, *, interactive: bool) -> bool:
    """Relay until the shell exits; whether the user left with ``~.``."""
    import trio

    left: list[bool] = []
    size_fds = (stdout_fd, stdin_fd, 2)
    async with trio.open_nursery() as nursery:
        size = window_size(size_fds) or _DEFAULT_SIZE
        await pty.resize(*size)
        nursery.start_soon(
            lambda: _type_input(
                pty, stdin_fd, interactive=interactive, cancel=nursery.cancel_scope, left=left
            )
        )
        nursery.start_soon(_keepalive, pty)
        nursery.start_soon(_end_on_signals, nursery.cancel_scope)
        if interactive:
            nursery.start_soon(_follow_resizes, pty, size_fds)
        try:
            async for data in pty:
                await trio.to_thread.run_sync(_write_all, stdout_fd, data)
        except BrokenPipeError:
            pass  # stdout's reader is gone (e.g. `| head`): nothing more to show
        nursery.cancel_scope.cancel()
    return bool(left)


async def attach(session: ComputeSession, *, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Attach *stdin_fd* / *stdout_fd* to a new shell of *session* until it exits (see
    the module docstring); returns the exit status."""
    from bai.client import stream_pty

    interactive = os.isatty(stdin_fd)

    def show_error(error: PtyError) -> None:
        # In raw mode a line feed does not return the carriage.
        line_end = "\r\n" if interactive else "\n"
        sys.stderr.write(f"{line_end}bai shell: the server refused a message: {error.message}")
        sys.stderr.write(line_end)
        sys.stderr.flush()

    async with stream_pty(session, on_error=show_error) as pty:
        if interactive:
            with _raw_mode(stdin_fd):
                left = await _relay(pty, stdin_fd, stdout_fd, interactive=True)
        else:
            left = await _relay(pty, stdin_fd, stdout_fd, interactive=False)
    if left:
        print_info("Left the terminal; its shell ends.")
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", metavar="SESSION")
@owner_option
def shell(name: str, owner: str | None) -> None:
    """Open a shell in SESSION's main kernel in this terminal.

    Every key goes to the remote shell; leave with `exit` or Ctrl-D (or
    `~.` at the start of a line).  With stdin not a terminal, its lines are
    typed into the shell and the command ends after the last one ran.
    """

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession

        return await attach(ComputeSession(api, name, owner_access_key=owner))

    run_client(main)
