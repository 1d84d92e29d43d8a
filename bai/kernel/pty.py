"""PTY mode: a shell in a pseudo-terminal, bridged byte for byte to two NNG sockets.

Bytes received on the PTY input socket are written to the terminal as they
are; everything the terminal prints is sent on the PTY output socket as it
comes (stdout and stderr are one stream, as in a real terminal).  Nothing is
transformed: the web terminal interprets the control sequences.

Guarantees:

* the shell (``$SHELL``, else bash, else sh) starts in the runner's working
  directory with ``TERM=xterm`` unless TERM is set, and is started again
  whenever it exits (after a pause that grows to 5 s if it keeps dying
  at once), so the user never faces a dead terminal;
* :meth:`PtyBridge.resize` sets the terminal size (the shell gets SIGWINCH),
  also for shells started later;
* output waits for the agent (``Push0`` back-pressure) instead of piling up:
  the shell blocks on a full terminal buffer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import struct
import termios
import threading
import time

from bai.kernel import sockets
from bai.kernel.runtimes import yield_to_oom_killer

MAX_RESPAWN_DELAY = 5.0


def _default_shell() -> str:
    shell = os.environ.get("SHELL", "")
    if shell and os.access(shell, os.X_OK):
        return shell
    return shutil.which("bash") or "/bin/sh"


class PtyBridge:
    """The shell, its terminal and the two sockets; threads pump both directions."""

    def __init__(self, input_addr: str, output_addr: str) -> None:
        self._pull = sockets.pull(input_addr, recv_max_size=0)
        try:
            self._push = sockets.push(output_addr, send_timeout_ms=500)
        except BaseException:
            self._pull.close()
            raise
        self._closed = threading.Event()
        # Guards _pid/_master: the output thread replaces them, the others use them.
        self._lock = threading.Lock()
        self._size = (24, 80)
        self._pid = 0
        self._master = -1
        self._shell = _default_shell()
        self._output_thread = threading.Thread(
            target=self._pump_output, name="pty-out", daemon=True
        )

    def start(self) -> None:
        """Start the shell and the pumping threads."""
        self._spawn()
        self._output_thread.start()
        threading.Thread(target=self._pump_input, name="pty-in", daemon=True).start()

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.setdefault("TERM", "xterm")
        argv = [self._shell]
        pid, master = os.forkpty()
        if pid == 0:  # the child: exec at once, touching no lock another thread might hold
            try:
                yield_to_oom_killer(os.getpid())
                os.execve(self._shell, argv, env)
            finally:
                os._exit(127)
        os.set_blocking(master, False)
        with self._lock:
            self._pid, self._master = pid, master
            self._apply_size()

    def _apply_size(self) -> None:
        rows, cols = self._size
        fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal to *rows* x *cols* characters."""
        with self._lock:
            self._size = (rows, cols)
            if self._master >= 0:
                # OSError: the shell is being replaced; the new one gets the size.
                with contextlib.suppress(OSError):
                    self._apply_size()

    def _pump_input(self) -> None:
        while True:
            try:
                data = self._pull.recv()
            except sockets.Closed:
                return
            view = memoryview(data)
            while view and not self._closed.is_set():
                with self._lock:
                    master = self._master
                    try:
                        view = view[os.write(master, view) :] if master >= 0 else view[:0]
                        continue
                    except BlockingIOError:
                        pass  # the terminal's input buffer is full: wait below, lock released
                    except OSError:
                        break  # the shell is gone: what it was sent is lost with it
                select.select([], [master], [], 0.2)

    def _send(self, data: bytes) -> bool:
        while not self._closed.is_set():
            try:
                self._push.send(data)
                return True
            except sockets.Timeout:
                continue
            except sockets.Closed:
                return False
        return False

    def _pump_output(self) -> None:
        delay = 0.1
        while not self._closed.is_set():
            started = time.monotonic()
            self._pump_one_shell()
            self._reap()
            if self._closed.is_set():
                return
            delay = min(delay * 2, MAX_RESPAWN_DELAY) if time.monotonic() - started < 1.0 else 0.1
            if self._closed.wait(delay):
                return
            self._spawn()

    def _pump_one_shell(self) -> None:
        """Forward the terminal's output until the shell exits (or the bridge closes)."""
        master, pid = self._master, self._pid
        while not self._closed.is_set():
            readable, _, _ = select.select([master], [], [], 0.5)
            if not readable:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    with self._lock:
                        self._pid = 0  # reaped: a background job may still hold the terminal
                    return
                continue
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                return  # EIO: nothing holds the terminal open any more
            if not data or not self._send(data):
                return

    def _reap(self) -> None:
        with self._lock:
            pid, master = self._pid, self._master
            self._pid, self._master = 0, -1
        if master >= 0:
            os.close(master)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGHUP)
            os.waitpid(pid, 0)

    def close(self) -> None:
        """Stop the threads and end the shell (SIGHUP to its session, SIGKILL after 1 s)."""
        self._closed.set()
        self._pull.close()
        self._push.close()
        with self._lock:
            pid = self._pid
        if not pid:
            return
        for signum in (signal.SIGHUP, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)
        self._output_thread.join(1.0)
        if self._output_thread.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
