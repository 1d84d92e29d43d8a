"""A blocking client for the kernel runner protocol, and a runner child process.

The reference driver of :mod:`bai.kernel.protocol` outside the agent: the
tests, ``bench/kernel_runner.py`` and manual debugging use it.  (The agent
speaks the same protocol from Trio: :mod:`bai.agent.runnerlink`.)

* :class:`RunnerProcess` starts ``python -I -m bai.kernel`` in its own session
  with ``ipc://`` sockets in a fresh short directory under ``/tmp`` and, on
  :meth:`~RunnerProcess.stop`, leaves no process of that session behind.
* :class:`RunnerClient` sends ops and collects records; :meth:`RunnerClient.collect`
  returns what one ``execute`` call would: the console gathered until the run
  finishes, waits for input, ends a batch step, or the flush timeout passes
  (``continued``), with adjacent stdout/stderr merged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynng

from bai.kernel.protocol import decode_outbound, encode

#: Records that end one execute call of a run.
STEP_END = frozenset({"finished", "clean-finished", "build-finished", "waiting-input"})


@dataclass
class Step:
    """What one execute call returns: the status, exit code and console items."""

    run_id: str
    status: str
    exit_code: int | None = None
    console: list[list[Any]] = field(default_factory=list)
    options: dict[str, Any] | None = None

    def add(self, op: str, payload: Mapping[str, Any]) -> None:
        """Append one console record, merging adjacent text of one stream."""
        if op in ("stdout", "stderr"):
            if self.console and self.console[-1][0] == op:
                self.console[-1][1] += payload["text"]
            else:
                self.console.append([op, payload["text"]])
        elif op == "media":
            self.console.append(["media", [payload["mime"], payload["data"]]])
        elif op == "html":
            self.console.append(["html", payload["html"]])
        elif op == "log":
            self.console.append(
                ["log", [payload["level"], payload["time"], payload["logger"], payload["message"]]]
            )

    def text(self, stream: str) -> str:
        """All text of *stream* in this step."""
        return "".join(item[1] for item in self.console if item[0] == stream)


class RunnerClient:
    """Dials a runner's input and output channels and speaks its protocol."""

    def __init__(self, input_addr: str, output_addr: str) -> None:
        self._push = pynng.Push0(send_timeout=10_000, reconnect_time_min=2, reconnect_time_max=20)
        self._pull = pynng.Pull0(recv_max_size=0, reconnect_time_min=2, reconnect_time_max=20)
        self._push.dial(input_addr, block=False)
        self._pull.dial(output_addr, block=False)
        self._backlog: deque[tuple[str, dict[str, Any]]] = deque()

    def close(self) -> None:
        """Close both sockets."""
        self._push.close()
        self._pull.close()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, op: str, payload: Mapping[str, Any]) -> None:
        """Send one ``[op, payload]`` message (blocks until the runner is connected)."""
        self._push.send(encode(op, payload))

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for testing how the runner treats bad messages)."""
        self._push.send(data)

    def recv(self, timeout: float) -> tuple[str, dict[str, Any]]:
        """The next record; raises :class:`TimeoutError` after *timeout* seconds."""
        if self._backlog:
            return self._backlog.popleft()
        self._pull.recv_timeout = max(int(timeout * 1000), 1)
        try:
            return decode_outbound(self._pull.recv())
        except pynng.Timeout:
            raise TimeoutError(f"no record from the kernel runner in {timeout} s") from None

    def wait_for(self, op: str, *, timeout: float, **match: Any) -> dict[str, Any]:
        """The next *op* record whose payload has the *match* fields; others are kept."""
        deadline = time.monotonic() + timeout
        skipped: list[tuple[str, dict[str, Any]]] = []
        try:
            while True:
                record = self.recv(max(deadline - time.monotonic(), 0.001))
                if record[0] == op and all(record[1].get(k) == v for k, v in match.items()):
                    return record[1]
                skipped.append(record)
        finally:
            self._backlog.extend(skipped)

    def request(
        self, op: str, reply: str, *, within: float = 10.0, **payload: Any
    ) -> dict[str, Any]:
        """Send *op* with *payload* and a fresh ``request_id``; wait *within* s for its *reply*."""
        request_id = uuid.uuid4().hex
        self.send(op, {**payload, "request_id": request_id})
        return self.wait_for(reply, timeout=within, request_id=request_id)

    def wait_ready(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the runner answers ``status``; returns the status payload."""
        return self.request("status", "status", within=timeout)

    def collect(
        self, run_id: str, *, timeout: float = 30.0, flush_timeout: float | None = None
    ) -> Step:
        """Gather *run_id*'s records into one :class:`Step` like an execute call.

        Ends at a :data:`STEP_END` record, or with status ``continued`` once
        *flush_timeout* seconds passed; raises :class:`TimeoutError` after
        *timeout* seconds without either.  Records of other runs are kept for
        later calls.
        """
        start = time.monotonic()
        step = Step(run_id, "continued")
        skipped: list[tuple[str, dict[str, Any]]] = []
        try:
            while True:
                now = time.monotonic()
                if flush_timeout is not None and now - start >= flush_timeout:
                    return step
                limit = timeout if flush_timeout is None else min(timeout, flush_timeout)
                remaining = start + limit - now
                if remaining <= 0:
                    raise TimeoutError(f"run {run_id} did not finish in {timeout} s: {step}")
                try:
                    op, payload = self.recv(remaining)
                except TimeoutError:
                    if flush_timeout is not None:
                        return step
                    raise TimeoutError(
                        f"run {run_id} did not finish in {timeout} s: {step}"
                    ) from None
                if payload.get("run_id") != run_id:
                    skipped.append((op, payload))
                    continue
                if op in STEP_END:
                    step.status = op
                    if op == "waiting-input":
                        step.options = {"is_password": payload["is_password"]}
                    else:
                        step.exit_code = payload["exit_code"]
                    return step
                step.add(op, payload)
        finally:
            self._backlog.extend(skipped)

    def execute(self, code: str, *, run_id: str | None = None, timeout: float = 30.0) -> Step:
        """Run *code* in query mode and collect until it finishes or waits for input."""
        run_id = run_id or uuid.uuid4().hex[:16]
        self.send("code", {"run_id": run_id, "code": code})
        return self.collect(run_id, timeout=timeout)

    def batch(
        self,
        *,
        clean: str | None = None,
        build: str | None = None,
        exec: str | None = None,
        timeout: float = 60.0,
    ) -> list[Step]:
        """Run one batch-mode run; returns the clean, build and exec steps."""
        run_id = uuid.uuid4().hex[:16]
        for op, command in (("clean", clean), ("build", build), ("exec", exec)):
            self.send(op, {"run_id": run_id, "command": command})
        return [self.collect(run_id, timeout=timeout) for _ in range(3)]


class RunnerProcess:
    """``python -I -m bai.kernel`` as a child in its own session, with ipc:// sockets.

    ``-I`` (isolated mode), as the agent starts it: the working directory
    (the user's files) is not put on the runner's ``sys.path``, and
    ``PYTHON*`` variables do not affect the runner; *python_options* are
    further interpreter options (``-X pycache_prefix=DIR``, ``-B``).  The
    kernel's own Python (``runtime_path``) still gets *env* as it is.
    """

    def __init__(
        self,
        workdir: str,
        *,
        runtime: str = "python",
        runtime_path: str | None = None,
        pty: bool = False,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        python_options: Sequence[str] = (),
    ) -> None:
        self.sockdir = tempfile.mkdtemp(prefix="bk-", dir="/tmp")
        self.input_addr = f"ipc://{self.sockdir}/in"
        self.output_addr = f"ipc://{self.sockdir}/out"
        self.pty_input_addr = f"ipc://{self.sockdir}/pin"
        self.pty_output_addr = f"ipc://{self.sockdir}/pout"
        argv = [
            python,
            "-I",
            *python_options,
            "-m",
            "bai.kernel",
            "--input",
            self.input_addr,
            "--output",
            self.output_addr,
            "--runtime",
            runtime,
            "--runtime-path",
            runtime_path or python,
        ]
        if pty:
            argv += ["--pty-input", self.pty_input_addr, "--pty-output", self.pty_output_addr]
        argv += list(extra_args)
        self._argv = argv
        self._workdir = workdir
        self._env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the runner (clients may dial before: they connect once it listens)."""
        self._proc = subprocess.Popen(
            self._argv, cwd=self._workdir, env=self._env, start_new_session=True
        )

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The runner process (after :meth:`start`)."""
        if self._proc is None:
            raise RuntimeError("the runner has not been started")
        return self._proc

    def client(self) -> RunnerClient:
        """A client dialed to this runner's input and output channels."""
        return RunnerClient(self.input_addr, self.output_addr)

    def session_pids(self) -> list[int]:
        """Live processes of the runner's session (the runner, its Python, commands, services)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdecimal():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.proc.pid and fields[0] != "Z":  # the session id; not zombies
                pids.append(int(entry))
        return pids

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the runner, then SIGKILL whatever of its session is left; remove the sockets."""
        if self._proc is None:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        for _ in range(50):
            pids = self.session_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def __enter__(self) -> RunnerProcess:
        if self._proc is None:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
