"""Shell commands for batch mode (clean, build, exec), the shell query mode and the bootstrap.

Each command runs as ``bash -c COMMAND`` (``sh -c`` where bash is missing) in
the runner's working directory, in its own process group, with stdin from
``/dev/null``.  Its stdout and stderr stream to the outbox as they come.
Guarantees:

* the exit code is the command's status, or 128 + N when signal N killed it;
* an interrupt sends SIGINT to the whole process group and SIGKILL
  :data:`KILL_AFTER` seconds later if the command still runs;
* once the command exits, output still in its pipes is forwarded for at most
  :data:`DRAIN_TIME` seconds more, so a background process that keeps the
  pipes open cannot hold the run open.

:func:`run_bootstrap` runs the kernel's bootstrap script the same way, except
that its output goes straight to the runner's stdout and stderr (the kernel's
log) rather than to a run.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time

from bai.kernel.output import Outbox
from bai.kernel.runtimes import yield_to_oom_killer

TYPE_CHECKING = False  # typing for the type checker only: it slows every kernel start
if TYPE_CHECKING:
    from typing import Final

KILL_AFTER: Final = 3.0
DRAIN_TIME: Final = 0.2
#: Flags of the spec's default C build ("-pthread -lm -lrt -ldl").
C_LINK_FLAGS: Final = "-pthread -lm -lrt -ldl"


def _shell() -> str:
    """bash, or sh where bash is missing."""
    import shutil  # here, not at the top: it drags in compression modules start-up can do without

    return shutil.which("bash") or "/bin/sh"


def shell_argv(command: str) -> list[str]:
    """The argv that runs *command* with bash, or sh where bash is missing."""
    return [_shell(), "-c", command]


def run_bootstrap(path: str, timeout: float, stopping: threading.Event) -> str | None:
    """Run the shell script *path* to its end; None when it succeeded, else why it failed.

    The script inherits the runner's environment, working directory, stdout
    and stderr, and gets its own process group: after *timeout* seconds, or
    as soon as *stopping* is set (the runner is shutting down; None is
    returned), the whole group is killed.  What a successful script left
    running in the background (a daemon it started) keeps running.  A
    missing *path* succeeds: the user may have removed the script before a
    restart.
    """
    if not os.path.isfile(path):
        return None
    try:
        proc = subprocess.Popen([_shell(), path], stdin=subprocess.DEVNULL, process_group=0)
    except OSError as exc:
        return f"cannot run the bootstrap script {path}: {exc}"
    yield_to_oom_killer(proc.pid)
    deadline = time.monotonic() + timeout
    code: int | None = None
    try:
        while code is None:
            try:
                code = proc.wait(0.1)
            except subprocess.TimeoutExpired:
                if stopping.is_set():
                    return None
                if time.monotonic() >= deadline:
                    return f"the bootstrap script {path} did not finish within {timeout:g} s"
    finally:
        if code is None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    if code == 0:
        return None
    if code < 0:
        return f"the bootstrap script {path} was killed by signal {-code}"
    return f"the bootstrap script {path} exited with code {code}"


def default_build_command(workdir: str, python: str) -> str | None:
    """The build command ``"*"`` stands for, from the files in *workdir*; None: nothing to build.

    The first rule that matches the top level of *workdir* wins:

    ==============================  =================================================
    file                            command
    ==============================  =================================================
    ``Makefile`` (any spelling)     ``make``
    ``CMakeLists.txt``              ``cmake -S . -B build && cmake --build build``
    ``pyproject.toml``/``setup.py`` ``<python> -m pip install .``
    ``requirements.txt``            ``<python> -m pip install -r requirements.txt``
    ``Cargo.toml``                  ``cargo build --release``
    ``go.mod``                      ``go build -o main .``
    ``*.c``                         ``cc -O2 -Wall -o main *.c -pthread -lm -lrt -ldl``
    ``*.cpp``/``*.cc``/``*.cxx``    the same with ``c++``
    ==============================  =================================================

    ``<python>`` is the kernel's runtime path; pip falls back to a user
    install by itself where site-packages is read-only.
    """
    import shlex  # here, not at the top: only batch runs need it, every kernel start would pay

    try:
        names = set(os.listdir(workdir))
    except OSError:
        return None
    py = shlex.quote(python)
    if names & {"Makefile", "makefile", "GNUmakefile"}:
        return "make"
    if "CMakeLists.txt" in names:
        return "cmake -S . -B build && cmake --build build"
    if names & {"pyproject.toml", "setup.py"}:
        return f"{py} -m pip install ."
    if "requirements.txt" in names:
        return f"{py} -m pip install -r requirements.txt"
    if "Cargo.toml" in names:
        return "cargo build --release"
    if "go.mod" in names:
        return "go build -o main ."
    for compiler, suffixes in (("cc", (".c",)), ("c++", (".cpp", ".cc", ".cxx"))):
        sources = sorted(n for n in names if n.endswith(suffixes) and not n.startswith("."))
        if sources:
            files = " ".join(shlex.quote(n) for n in sources)
            return f"{compiler} -O2 -Wall -o main {files} {C_LINK_FLAGS}"
    return None


class ShellCommands:
    """Runs one shell command at a time, streaming its output; interruptible from any thread."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._interrupted_at: float | None = None

    def run(self, run_id: str, command: str) -> int:
        """Run *command* to completion and return its exit code (-1: could not start it)."""
        try:
            proc = subprocess.Popen(
                shell_argv(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
            )
        except OSError as exc:
            self._outbox.write(run_id, "stderr", f"cannot run the shell: {exc}\n")
            return -1
        yield_to_oom_killer(proc.pid)
        with self._lock:
            self._proc = proc
            self._interrupted_at = None
        try:
            self._pump(run_id, proc)
            while True:
                try:
                    code = proc.wait(0.1)
                    break
                except subprocess.TimeoutExpired:
                    self._escalate(proc, time.monotonic())
        finally:
            with self._lock:
                self._proc = None
        return code if code >= 0 else 128 - code

    def _pump(self, run_id: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        streams = {
            proc.stdout.fileno(): ("stdout", codecs.getincrementaldecoder("utf-8")("replace")),
            proc.stderr.fileno(): ("stderr", codecs.getincrementaldecoder("utf-8")("replace")),
        }
        selector = selectors.DefaultSelector()
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        exited_at: float | None = None
        try:
            while selector.get_map():
                for key, _ in selector.select(0.1):
                    data = os.read(key.fd, 65536)
                    stream, decoder = streams[key.fd]
                    if data:
                        self._outbox.write(run_id, stream, decoder.decode(data))
                    else:
                        self._outbox.write(run_id, stream, decoder.decode(b"", final=True))
                        selector.unregister(key.fd)
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > DRAIN_TIME:
                    break
                self._escalate(proc, now)
        finally:
            selector.close()
            proc.stdout.close()
            proc.stderr.close()

    def _escalate(self, proc: subprocess.Popen[bytes], now: float) -> None:
        with self._lock:
            started = self._interrupted_at
        if started is not None and now - started > KILL_AFTER and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)

    def interrupt(self) -> None:
        """SIGINT to the running command's process group (SIGKILL follows if it ignores it)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                _signal_group(self._proc.pid, signal.SIGINT)
                if self._interrupted_at is None:
                    self._interrupted_at = time.monotonic()

    def kill(self) -> None:
        """SIGKILL the running command's process group (runner shutdown)."""
        with self._lock:
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
