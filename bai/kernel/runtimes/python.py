"""Query mode for Python: one long-lived Python process holding the namespace.

The runner never runs user code itself.  It starts ``_pyworker.py`` with the
kernel's Python (``ai.backend.runtime-path``) and talks to it over pipes, so
user code cannot break the runner, a crash or an OOM kill of the user's
process leaves the kernel answering, and the image's own interpreter and
packages are the ones the user gets.

Guarantees:

* one global namespace across runs, until the Python process dies; then the
  run finishes with 128 + signal (or the exit status), the user is told on
  stderr, and the next run starts a fresh process;
* console output arrives in print order, also around ``input()`` prompts and
  media items; output of subprocesses and C code (file descriptors 1 and 2)
  is captured too, ordered as well as two pipes allow;
* ``interrupt`` raises KeyboardInterrupt in the running code only.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import selectors
import subprocess
import threading
import time

from bai.kernel.output import Outbox
from bai.kernel.runtimes import yield_to_oom_killer

TYPE_CHECKING = False  # typing for the type checker only: it slows every kernel start
if TYPE_CHECKING:
    from typing import Any, Final

WORKER_FILE: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pyworker.py")
#: The directory holding the ``bai`` package, so user code can import bai.kernel.display.
BAI_PARENT: Final = os.path.normpath(os.path.join(os.path.dirname(WORKER_FILE), "..", "..", ".."))
#: A control line longer than this is dropped (only user code writing to the channel does that).
MAX_LINE: Final = 64 * 1024 * 1024


class _Worker:
    def __init__(
        self, proc: subprocess.Popen[bytes], cmd: int, ctl: int, out: int, err: int
    ) -> None:
        self.proc = proc
        self.cmd = cmd
        self.ctl = ctl
        self.out = out
        self.err = err
        self.write_lock = threading.Lock()
        self.cmd_closed = False

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode("ascii") + b"\n"
        view = memoryview(data)
        with self.write_lock:
            if self.cmd_closed:
                raise BrokenPipeError("the Python process is gone")
            while view:
                view = view[os.write(self.cmd, view) :]

    def close_cmd(self) -> None:
        """Close the command pipe (the worker exits when it sees the end of it)."""
        with self.write_lock:
            if not self.cmd_closed:
                self.cmd_closed = True
                os.close(self.cmd)


class PythonRuntime:
    """Runs query-mode snippets in a persistent Python process (see module docstring)."""

    name: Final = "python"

    def __init__(self, runtime_path: str, outbox: Outbox) -> None:
        self._runtime_path = runtime_path
        self._outbox = outbox
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._run_id: str | None = None
        self._active = False
        self._waiting = False
        self._exit_code = 0
        self._done = threading.Event()

    @property
    def waiting_input(self) -> bool:
        """Whether the active run is blocked in ``input()``/``getpass()``."""
        return self._waiting

    def start(self) -> None:
        """Start the Python process ahead of the first run (errors wait for that run)."""
        with self._lock, contextlib.suppress(OSError):
            self._ensure_worker()

    def _ensure_worker(self) -> _Worker:
        if self._worker is not None:
            return self._worker
        cmd_r, cmd_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [self._runtime_path, "-u", WORKER_FILE, str(cmd_r), str(ctl_w), BAI_PARENT],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(cmd_r, ctl_w),
            )
        except OSError:
            for fd in (cmd_r, cmd_w, ctl_r, ctl_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        for fd in (cmd_r, ctl_w, out_w, err_w):
            os.close(fd)
        # In time: the worker runs no user code before its first run message.
        yield_to_oom_killer(proc.pid)
        worker = _Worker(proc, cmd_w, ctl_r, out_r, err_r)
        self._worker = worker
        threading.Thread(
            target=self._read, args=(worker,), name="python-worker", daemon=True
        ).start()
        return worker

    def run_query(self, run_id: str, code: str) -> int:
        """Run *code* and return its exit code once it finished (0 unless the process died)."""
        with self._lock:
            try:
                worker = self._ensure_worker()
            except OSError as exc:
                self._outbox.write(
                    run_id,
                    "stderr",
                    f"cannot start the Python runtime {self._runtime_path}: {exc}\n",
                )
                return -1
            self._run_id = run_id
            self._active = True
            self._waiting = False
            self._exit_code = 0
            self._done.clear()
        # OSError: the process died; its reader thread ends the run.
        with contextlib.suppress(OSError):
            worker.send({"t": "run", "code": code})
        self._done.wait()
        with self._lock:
            self._active = False
            self._run_id = None
            return self._exit_code

    def feed_input(self, run_id: str, text: str) -> bool:
        """Answer the active run's input request; False if *run_id* is not waiting."""
        with self._lock:
            worker = self._worker
            if not (self._active and self._waiting and self._run_id == run_id and worker):
                return False
            self._waiting = False
        with contextlib.suppress(OSError):
            worker.send({"t": "input", "text": text})
        return True

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running code (a no-op between runs)."""
        with self._lock:
            worker = self._worker if self._active else None
        if worker is not None:
            with contextlib.suppress(OSError):
                worker.send({"t": "interrupt"})

    def complete(self, request_id: str | None, text: str) -> None:
        """Queue a ``completion`` record for the text before the cursor."""
        with self._lock:
            worker = self._worker
        if worker is not None:
            try:
                worker.send({"t": "complete", "id": request_id, "text": text})
                return
            except OSError:
                pass
        self._outbox.record("completion", {"request_id": request_id, "matches": []})

    def close(self) -> None:
        """End the Python process: closing its channel makes it exit; SIGKILL after 1 s."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.close_cmd()
        try:
            worker.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()

    # -- the reader thread of one worker ------------------------------------

    def _read(self, worker: _Worker) -> None:
        decoders: dict[int, tuple[str, codecs.IncrementalDecoder]] = {
            worker.out: ("stdout", codecs.getincrementaldecoder("utf-8")("replace")),
            worker.err: ("stderr", codecs.getincrementaldecoder("utf-8")("replace")),
        }
        selector = selectors.DefaultSelector()
        for fd in (worker.ctl, worker.out, worker.err):
            selector.register(fd, selectors.EVENT_READ)
        pending = bytearray()
        skipping = False
        ctl_open = True
        while ctl_open:
            ready = [key.fd for key, _ in selector.select(0.5)]
            if not ready and worker.proc.poll() is not None:
                break  # it died but a grandchild still holds the channel open
            # Raw descriptors first: what the worker wrote there before a
            # control message is already in the pipe when that message arrives.
            for fd in sorted(ready, key=lambda fd: fd == worker.ctl):
                data = os.read(fd, 65536)
                if fd == worker.ctl:
                    if not data:
                        ctl_open = False
                        break
                    pending += data
                    skipping = self._handle_lines(pending, skipping)
                elif data:
                    stream, decoder = decoders[fd]
                    self._outbox.write(self._run_id, stream, decoder.decode(data))
                else:
                    selector.unregister(fd)
        self._drain(selector, worker, decoders)
        selector.close()
        self._worker_died(worker)

    def _handle_lines(self, pending: bytearray, skipping: bool) -> bool:
        while True:
            end = pending.find(b"\n")
            if end < 0:
                if len(pending) > MAX_LINE:
                    pending.clear()
                    return True
                return skipping
            line = bytes(pending[:end])
            del pending[: end + 1]
            if skipping:
                skipping = False
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue  # user code wrote to the channel; nothing to deliver
            if isinstance(message, dict):
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        run_id = self._run_id
        if kind == "out" and message.get("s") in ("stdout", "stderr"):
            self._outbox.write(run_id, message["s"], str(message.get("x", "")))
        elif kind == "media":
            self._outbox.record(
                "media",
                {"run_id": run_id, "mime": message.get("mime"), "data": message.get("data")},
            )
        elif kind == "html":
            self._outbox.record("html", {"run_id": run_id, "html": message.get("html")})
        elif kind == "input":
            with self._lock:
                if not self._active:
                    return
                self._waiting = True
            self._outbox.record(
                "waiting-input", {"run_id": run_id, "is_password": bool(message.get("password"))}
            )
        elif kind == "completion":
            self._outbox.record(
                "completion", {"request_id": message.get("id"), "matches": message.get("matches")}
            )
        elif kind == "done":
            with self._lock:
                self._waiting = False
                self._exit_code = 0
            self._done.set()

    def _drain(
        self,
        selector: selectors.BaseSelector,
        worker: _Worker,
        decoders: dict[int, tuple[str, codecs.IncrementalDecoder]],
    ) -> None:
        """Forward what the dead worker left in its stdout/stderr pipes."""
        deadline = time.monotonic() + 0.2
        selector.unregister(worker.ctl)
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(0.05):
                data = os.read(key.fd, 65536)
                if data:
                    stream, decoder = decoders[key.fd]
                    self._outbox.write(self._run_id, stream, decoder.decode(data))
                else:
                    selector.unregister(key.fd)
        for fd in (worker.ctl, worker.out, worker.err):
            os.close(fd)

    def _worker_died(self, worker: _Worker) -> None:
        try:
            code = worker.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            code = worker.proc.wait()
        with self._lock:
            if self._worker is worker:
                self._worker = None
            worker.close_cmd()
            active, run_id = self._active, self._run_id
            if active:
                self._exit_code = code if code >= 0 else 128 - code
                self._waiting = False
        if active:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self._outbox.write(
                run_id,
                "stderr",
                f"\n[bai: the Python process of this kernel {how}; its variables are lost"
                " and the next run starts a fresh one]\n",
            )
            self._done.set()
