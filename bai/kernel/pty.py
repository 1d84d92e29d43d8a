"""Shells in pseudo-terminals: :class:`PtyShell`, and PTY mode's :class:`PtyBridge`.

:class:`PtyShell` is one shell in its own pseudo-terminal and session, the
piece both terminals of a kernel share: PTY mode here and the ``ttyd`` web
terminal (:mod:`bai.kernel.terminal`).  It spawns, resizes and ends the
shell; reading and writing the terminal is the caller's.

PTY mode bridges one shell byte for byte to two NNG sockets.  Bytes received
on the PTY input socket are written to the terminal as they are; everything
the terminal prints is sent on the PTY output socket as it comes (stdout and
stderr are one stream, as in a real terminal).  Nothing is transformed: the
web terminal interprets the control sequences.

Guarantees:

* a shell (``$SHELL``, else bash, else sh) starts in the runner's working
  directory with ``TERM=xterm`` unless TERM is set (or the caller names a
  TERM), already at its terminal's size, and is the OOM killer's choice
  before the runner;
* PTY mode's shell is started again whenever it exits (after a pause that
  grows to 5 s if it keeps dying at once), so the user never faces a dead
  terminal;
* :meth:`PtyBridge.resize` sets the terminal size (the shell gets SIGWINCH),
  also for shells started later;
* PTY mode's output waits for the agent (``Push0`` back-pressure) instead of
  piling up: the shell blocks on a full terminal buffer.
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
from collections.abc import Mapping

from bai.kernel import sockets
from bai.kernel.runtimes import yield_to_oom_killer

MAX_RESPAWN_DELAY = 5.0
#: Seconds a shell has to end after SIGHUP before it gets SIGKILL.
HANGUP_GRACE = 1.0


def default_shell() -> str:
    """``$SHELL`` when it is executable, else bash, else ``/bin/sh``."""
    shell = os.environ.get("SHELL", "")
    if shell and os.access(shell, os.X_OK):
        return shell
    return shutil.which("bash") or "/bin/sh"


def _winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


class PtyShell:
    """One shell in its own pseudo-terminal and session (its pid is its process group).

    ``master`` is the terminal's non-blocking master side, open until
    :meth:`close_master`.  Once the shell is reaped (:meth:`poll`,
    :meth:`wait`) it is never signalled again, so a reused pid is safe.
    Methods may be called from several threads; :meth:`close_master` must not
    race a read or write of ``master`` (the caller orders those).
    """

    def __init__(self, pid: int, master: int) -> None:
        self.pid = pid
        self.master = master
        self.returncode: int | None = None
        self._reap_lock = threading.Lock()

    @classmethod
    def spawn(
        cls,
        shell: str,
        rows: int = 24,
        cols: int = 80,
        *,
        term: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> PtyShell:
        """Start *shell* (a login-less interactive shell) in a new terminal of *rows* x *cols*.

        Its environment is the runner's with *environ* over it; TERM is *term*
        when given, else that environment's TERM, else ``xterm``.  Raises
        :class:`OSError` when no terminal or process can be made.
        """
        env = {**os.environ, **(environ or {})}
        if term is not None:
            env["TERM"] = term
        else:
            env.setdefault("TERM", "xterm")
        argv = [shell]
        master, slave = os.openpty()  # both close-on-exec: no other shell inherits them
        try:
            # Set before the fork, so the shell never sees another size.
            fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(rows, cols))
            pid = os.fork()
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        if pid == 0:  # the child: exec at once, touching no lock another thread might hold
            try:
                os.login_tty(slave)  # new session, the terminal its controlling tty, fds 0-2
                yield_to_oom_killer(os.getpid())
                os.execve(shell, argv, env)
            finally:
                os._exit(127)
        os.close(slave)
        os.set_blocking(master, False)
        return cls(pid, master)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal to *rows* x *cols* (the shell gets SIGWINCH); OSError once closed."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, _winsize(rows, cols))

    def close_master(self) -> None:
        """Close the terminal's master side (idempotent); the shell then reads EOF / gets EIO."""
        master, self.master = self.master, -1
        if master >= 0:
            os.close(master)

    def poll(self) -> int | None:
        """The shell's wait status once it ended (reaping it), else None."""
        with self._reap_lock:
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = status
            return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to *timeout* seconds (forever for None) for the shell to end; its status."""
        if timeout is None:
            with self._reap_lock:
                if self.returncode is None:
                    self.returncode = os.waitpid(self.pid, 0)[1]
                return self.returncode
        deadline = time.monotonic() + timeout
        pidfd = self.pidfd()
        try:
            while (code := self.poll()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if pidfd >= 0:
                    poller = select.poll()  # not select(): the fd may be past FD_SETSIZE
                    poller.register(pidfd, select.POLLIN)
                    poller.poll(remaining * 1000)
                else:  # a kernel without pidfds (before Linux 5.3): poll, off the data path
                    time.sleep(min(remaining, 0.01))
            return code
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def pidfd(self) -> int:
        """A new pidfd of the shell (readable once it ends; the caller closes it), or -1."""
        if self.returncode is not None or not hasattr(os, "pidfd_open"):
            return -1
        try:
            return os.pidfd_open(self.pid)
        except OSError:
            return -1

    def signal(self, signum: int) -> None:
        """Send *signum* to the shell's process group, unless the shell was reaped."""
        with self._reap_lock:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signum)

    def hang_up(self) -> None:
        """SIGHUP (and SIGCONT, so a stopped job sees it) to the shell's process group."""
        self.signal(signal.SIGHUP)
        self.signal(signal.SIGCONT)

    def end(self, grace: float = HANGUP_GRACE) -> int:
        """Close the terminal, hang up, SIGKILL after *grace* seconds; reap. The wait status."""
        self.close_master()
        if self.poll() is None:
            self.hang_up()
            if self.wait(grace) is None:
                self.signal(signal.SIGKILL)
        code = self.wait()
        assert code is not None
        return code


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
        # Guards _current and its master fd: the output thread replaces and closes
        # them, the others use them.
        self._lock = threading.Lock()
        self._size = (24, 80)
        self._current: PtyShell | None = None
        self._shell = default_shell()
        self._output_thread = threading.Thread(
            target=self._pump_output, name="pty-out", daemon=True
        )

    def start(self) -> None:
        """Start the shell and the pumping threads."""
        self._spawn()
        self._output_thread.start()
        threading.Thread(target=self._pump_input, name="pty-in", daemon=True).start()

    def _spawn(self) -> None:
        with self._lock:
            size = self._size
        shell = PtyShell.spawn(self._shell, *size)
        with self._lock:
            self._current = shell
            if self._size != size:  # resized meanwhile: the new size wins
                with contextlib.suppress(OSError):
                    shell.resize(*self._size)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal to *rows* x *cols* characters."""
        with self._lock:
            self._size = (rows, cols)
            if self._current is not None and self._current.master >= 0:
                # OSError: the shell is being replaced; the new one gets the size.
                with contextlib.suppress(OSError):
                    self._current.resize(rows, cols)

    def _pump_input(self) -> None:
        while True:
            try:
                data = self._pull.recv()
            except sockets.Closed:
                return
            view = memoryview(data)
            while view and not self._closed.is_set():
                with self._lock:
                    master = self._current.master if self._current is not None else -1
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
            shell = self._current
            assert shell is not None
            self._pump_one_shell(shell)
            with self._lock:
                self._current = None
                shell.close_master()
            shell.end()
            if self._closed.is_set():
                return
            delay = min(delay * 2, MAX_RESPAWN_DELAY) if time.monotonic() - started < 1.0 else 0.1
            if self._closed.wait(delay):
                return
            self._spawn()

    def _pump_one_shell(self, shell: PtyShell) -> None:
        """Forward the terminal's output until the shell exits (or the bridge closes)."""
        master = shell.master
        while not self._closed.is_set():
            readable, _, _ = select.select([master], [], [], 0.5)
            if not readable:
                if shell.poll() is not None:
                    return  # reaped: a background job may still hold the terminal
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

    def close(self) -> None:
        """Stop the threads and end the shell (SIGHUP to its session, SIGKILL after 1 s)."""
        self._closed.set()
        self._pull.close()
        self._push.close()
        with self._lock:
            shell = self._current
        if shell is None:
            return
        shell.hang_up()
        self._output_thread.join(HANGUP_GRACE + 1.0)
        if self._output_thread.is_alive():
            shell.signal(signal.SIGKILL)
