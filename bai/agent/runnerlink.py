"""The agent's side of the kernel runner protocol, from Trio, with the execute long-poll.

:class:`RunnerLink` dials a runner's input (``Push0`` -> runner's ``Pull0``)
and output (``Pull0`` <- runner's ``Push0``) channels with bai's own SP wire
(:mod:`bai.common._nng`), so a message costs one syscall and no thread hop.
Its reader task (:meth:`RunnerLink.serve`) routes every record:

* records of a run (``run_id``) go to that run's buffer, a :class:`Run`,
  until an ``execute`` call collects them;
* replies with a ``request_id`` (``completion``, ``service-result``,
  ``apps-result``, ``status``) wake the :meth:`RunnerLink.request` waiting
  for them;
* output of no run goes to a small ring buffer read by ``get_logs``.

The execute long-poll (:meth:`RunnerLink.collect`): records are gathered until
the run finishes, waits for input, or ends a batch step, or until the flush
timeout passes (status ``continued``); adjacent ``stdout``/``stderr`` text is
merged, and each stream is cut at :data:`~bai.kernel.protocol.OUTPUT_LIMIT`
characters per call with one truncation notice.

Memory stays bounded whatever a kernel prints: the runner forwards at most
``OUTPUT_LIMIT`` characters per stream per output window, and each run's
buffer here keeps at most :data:`RUN_BUFFER_LIMIT` bytes of console records
(later ones are dropped, with a notice, until the next collect); at most
:data:`MAX_RUNS` runs are remembered per kernel, and the exit codes of at most
:data:`MAX_RUNS` finished ones (a ``continue`` on a run collected to its end
answers ``finished`` with its exit code again).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Final

import trio

from bai.common import _nng
from bai.common.agent_api import ExecutionResult
from bai.common.errors import BaiError
from bai.kernel.protocol import (
    OUTPUT_LIMIT,
    TRUNCATION_MARKER,
    ProtocolError,
    decode_outbound,
    encode,
)

log = logging.getLogger(__name__)

PROTO_PUSH0: Final = 0x50
PROTO_PULL0: Final = 0x51
#: Bytes of console records kept per run between two collects.
RUN_BUFFER_LIMIT: Final = 16 * 1024 * 1024
#: Runs remembered per kernel (the oldest idle ones are forgotten first).
MAX_RUNS: Final = 256
#: Largest record accepted from a runner (a media record carries a whole image).
MAX_RECORD_SIZE: Final = 64 * 1024 * 1024
#: Characters of run-less output kept for ``get_logs``.
LOG_TAIL_CHARS: Final = 64 * 1024

STEP_END: Final = frozenset({"finished", "clean-finished", "build-finished", "waiting-input"})
_CONSOLE: Final = frozenset({"stdout", "stderr", "media", "html", "log"})
_REPLIES: Final = frozenset({"completion", "service-result", "apps-result", "status"})
_DROPPED_NOTICE: Final = "\n[bai: output dropped: the run produced more than the agent buffers]\n"


class RunnerLinkError(BaiError):
    """The runner cannot be reached, went away, or did not answer in time."""


class RunError(BaiError):
    """An execute call that does not fit the run's state (unknown run, not waiting for input)."""


def _socket_exists(addr: str) -> bool:
    """False for an ``ipc://`` address whose socket file is not there yet (True otherwise)."""
    return not addr.startswith("ipc://") or os.path.exists(addr[len("ipc://") :])


def _size(op: str, payload: dict[str, Any]) -> int:
    if op in ("stdout", "stderr"):
        return len(payload.get("text", "")) + 16
    if op == "media":
        return len(payload.get("data", "")) + 64
    if op == "html":
        return len(payload.get("html", "")) + 16
    return 256


class Run:
    """The agent's view of one run: records not yet collected and where the run stands."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.records: deque[tuple[str, dict[str, Any]]] = deque()
        self.size = 0
        self.dropped = False
        self.changed = trio.Event()
        #: The last step-end status returned to a caller (None before the first).
        self.step: str | None = None
        #: The ``options`` of the last ``waiting-input`` (``{"is_password": bool}``).
        self.input_options: dict[str, Any] | None = None
        self.done = False
        self.collecting = False
        self.touched = time.monotonic()

    def push(self, op: str, payload: dict[str, Any]) -> None:
        if op in _CONSOLE:
            size = _size(op, payload)
            if self.size + size > RUN_BUFFER_LIMIT:
                self.dropped = True
                return
            self.size += size
        self.records.append((op, payload))
        self.changed.set()

    @property
    def waiting_input(self) -> bool:
        return self.step == "waiting-input"


class _Console:
    """The console of one execute call: merged text, each stream cut at OUTPUT_LIMIT."""

    def __init__(self) -> None:
        self.items: list[list[Any]] = []
        self._chars = {"stdout": 0, "stderr": 0}
        self._cut = {"stdout": False, "stderr": False}

    def text(self, stream: str, text: str) -> None:
        room = OUTPUT_LIMIT - self._chars[stream]
        if len(text) > room:
            text = text[: max(room, 0)]
            if not self._cut[stream]:
                self._cut[stream] = True
                text += f"\n{TRUNCATION_MARKER}\n"
        self._chars[stream] += len(text)
        if not text:
            return
        if self.items and self.items[-1][0] == stream:
            self.items[-1][1] += text
        else:
            self.items.append([stream, text])

    def add(self, op: str, payload: dict[str, Any]) -> None:
        if op in ("stdout", "stderr"):
            self.text(op, payload.get("text", ""))
        elif op == "media":
            self.items.append(["media", [payload.get("mime", ""), payload.get("data", "")]])
        elif op == "html":
            self.items.append(["html", payload.get("html", "")])
        elif op == "log":
            self.items.append(
                [
                    "log",
                    [
                        payload.get("level", "info"),
                        payload.get("time", ""),
                        payload.get("logger", ""),
                        payload.get("message", ""),
                    ],
                ]
            )


class RunnerLink:
    """A connection to one kernel runner (see the module docstring)."""

    def __init__(self, input_addr: str, output_addr: str) -> None:
        self.input_addr = input_addr
        self.output_addr = output_addr
        self._push: _nng.FrameStream | None = None
        self._pull: _nng.FrameStream | None = None
        self._runs: dict[str, Run] = {}
        # Exit codes of runs collected to their end, newest last: a caller that
        # died before it read that answer (a manager resuming a batch job) asks again.
        self._finished: OrderedDict[str, int | None] = OrderedDict()
        # Runs sent to the runner and not finished, oldest first: the runner runs them FIFO.
        self._order: deque[str] = deque()
        self._waiters: dict[str, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._log: deque[str] = deque()
        self._log_chars = 0
        #: Set once the output channel ended (the runner exited or closed it).
        self.lost = trio.Event()
        self.closed_reason = ""

    # -- connection -------------------------------------------------------------

    async def connect(self, timeout: float) -> None:  # noqa: ASYNC109 - the start deadline
        """Dial both channels, retrying while the runner is not listening yet.

        Raises :class:`RunnerLinkError` after *timeout* seconds.
        """
        deadline = trio.current_time() + timeout
        self._pull = await self._dial(self.output_addr, PROTO_PULL0, PROTO_PUSH0, deadline)
        self._push = await self._dial(self.input_addr, PROTO_PUSH0, PROTO_PULL0, deadline)

    @staticmethod
    async def _dial(addr: str, own: int, peer: int, deadline: float) -> _nng.FrameStream:
        delay = 0.002
        last = "its socket does not exist yet"
        with trio.move_on_at(deadline):
            while True:
                # A stat is far cheaper than a refused connect: dial once the socket exists.
                if _socket_exists(addr):
                    try:
                        return await _nng.dial(addr, own, peer)
                    except (OSError, _nng.TransportError) as exc:
                        last = str(exc)
                await trio.sleep(delay)
                delay = min(delay * 1.2, 0.02)
        raise RunnerLinkError(f"the kernel runner did not listen at {addr} in time ({last})")

    def close(self, reason: str = "closed") -> None:
        """Close both channels; the reader ends and every waiter is woken."""
        if not self.closed_reason:
            self.closed_reason = reason
        for stream in (self._push, self._pull):
            if stream is not None:
                stream.close()
        self._wake_all()

    def _wake_all(self) -> None:
        for event, _ in self._waiters.values():
            event.set()
        for run in self._runs.values():
            run.changed.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and route records until the output channel ends; sets :attr:`lost`."""
        assert self._pull is not None, "connect() first"
        task_status.started()
        try:
            while True:
                try:
                    frame = await self._pull.receive_frame(MAX_RECORD_SIZE)
                except _nng.TransportError as exc:
                    if not self.closed_reason:
                        self.closed_reason = f"the runner's output channel ended ({exc})"
                    return
                if isinstance(frame, _nng.Oversized):
                    log.warning("dropped a %d-byte record from %s", frame.size, self.output_addr)
                    continue
                try:
                    op, payload = decode_outbound(frame)
                except ProtocolError as exc:
                    log.warning("bad record from %s: %s", self.output_addr, exc)
                    continue
                self._route(op, payload)
        finally:
            self.lost.set()
            self._wake_all()

    def _route(self, op: str, payload: dict[str, Any]) -> None:
        request_id = payload.get("request_id")
        if op in _REPLIES and isinstance(request_id, str):
            waiter = self._waiters.get(request_id)
            if waiter is not None:
                waiter[1].append(payload)
                waiter[0].set()
            return
        run_id = payload.get("run_id")
        if op == "error":
            message = f"[bai: the kernel runner refused a message: {payload.get('message', '')}]\n"
            if isinstance(run_id, str) and run_id in self._runs:
                self._runs[run_id].push("stderr", {"text": message})
            else:
                self._append_log(message)
            return
        if not isinstance(run_id, str):
            # The runner stamps its own log records without a run; they belong to the
            # run it is executing, which is the oldest unfinished one.
            if op == "log" and self._order:
                run_id = self._order[0]
            else:
                if op in ("stdout", "stderr"):
                    self._append_log(payload.get("text", ""))
                return
        run = self._runs.get(run_id)
        if run is None:
            # A run started before the agent (re)connected: collectable with `continue`.
            run = self._new_run(run_id)
        run.push(op, payload)
        if op == "finished":
            self._retire(run_id)

    def _retire(self, run_id: str) -> None:
        with contextlib.suppress(ValueError):
            self._order.remove(run_id)

    def _append_log(self, text: str) -> None:
        self._log.append(text)
        self._log_chars += len(text)
        while self._log_chars > LOG_TAIL_CHARS and len(self._log) > 1:
            self._log_chars -= len(self._log.popleft())

    @property
    def log_tail(self) -> str:
        """Recent output of no run (background processes of the kernel)."""
        return "".join(self._log)

    def _new_run(self, run_id: str) -> Run:
        if len(self._runs) >= MAX_RUNS:
            idle = sorted(
                (r for r in self._runs.values() if not r.collecting), key=lambda r: r.touched
            )
            for old in idle[: len(self._runs) - MAX_RUNS + 1]:
                del self._runs[old.run_id]
                self._retire(old.run_id)
        run = self._runs[run_id] = Run(run_id)
        return run

    # -- sending ------------------------------------------------------------------

    async def send(self, op: str, payload: dict[str, Any]) -> None:
        """Send one message to the runner; raises :class:`RunnerLinkError` if it is gone."""
        if self._push is None or self.closed_reason:
            raise RunnerLinkError(self.closed_reason or "not connected to the kernel runner")
        try:
            await self._push.send_frame(encode(op, payload))
        except _nng.TransportError as exc:
            raise RunnerLinkError(f"the kernel runner went away ({exc})") from None

    async def request(
        self,
        op: str,
        payload: dict[str, Any],
        timeout: float,  # noqa: ASYNC109 - each request has its own bound
    ) -> dict[str, Any]:
        """Send *op* with a fresh ``request_id`` and wait for its reply."""
        request_id = f"a{next(self._ids)}"
        event = trio.Event()
        replies: list[dict[str, Any]] = []
        self._waiters[request_id] = (event, replies)
        try:
            await self.send(op, {**payload, "request_id": request_id})
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            del self._waiters[request_id]
        if replies:
            return replies[0]
        if self.lost.is_set() or self.closed_reason:
            raise RunnerLinkError(self.closed_reason or "the kernel runner went away")
        raise RunnerLinkError(f"the kernel runner did not answer {op!r} within {timeout} s")

    # -- runs ---------------------------------------------------------------------

    def run(self, run_id: str) -> Run | None:
        """The run called *run_id*, if the agent knows it."""
        return self._runs.get(run_id)

    def finished_run(self, run_id: str) -> Run | None:
        """A run that says ``finished`` again if *run_id* was collected to its end.

        It carries the run's exit code and no console.
        """
        if run_id not in self._finished:
            return None
        run = Run(run_id)
        run.push("finished", {"run_id": run_id, "exit_code": self._finished[run_id]})
        return run

    def adopt_runs(self, status: dict[str, Any]) -> None:
        """Take over the runs a ``status`` reply names (after an agent restart).

        The active run and the queued ones become collectable with
        ``continue``; an active run waiting for input accepts ``input``.
        """
        active = status.get("active_run")
        queued = status.get("queued") or []
        for run_id in [active, *queued] if isinstance(active, str) else queued:
            if not isinstance(run_id, str) or run_id in self._runs:
                continue
            run = self._new_run(run_id)
            self._order.append(run_id)
            if run_id == active and status.get("waiting_input"):
                run.step = "waiting-input"
                run.input_options = {"is_password": False}

    async def start_run(self, run_id: str, messages: Iterable[tuple[str, dict[str, Any]]]) -> Run:
        """Register run *run_id* and send its ops; raises :class:`RunError` if it exists."""
        existing = self._runs.get(run_id)
        if existing is not None and not existing.done:
            raise RunError(f"run {run_id!r} is already in progress in this kernel")
        self._runs.pop(run_id, None)
        self._finished.pop(run_id, None)
        run = self._new_run(run_id)
        self._order.append(run_id)
        try:
            for op, payload in messages:
                await self.send(op, payload)
        except BaseException:
            self._runs.pop(run_id, None)
            self._retire(run_id)
            raise
        return run

    def end_runs(self, exit_code: int, message: str) -> None:
        """The kernel is gone: every unfinished run ends with *message* and *exit_code*."""
        for run in list(self._runs.values()):
            if run.done or any(op == "finished" for op, _ in run.records):
                continue
            if message:
                run.push("stderr", {"text": message})
            run.records.append(("finished", {"run_id": run.run_id, "exit_code": exit_code}))
            run.changed.set()
        self._order.clear()

    async def collect(self, run: Run, flush_timeout: float) -> ExecutionResult:
        """One execute call's Execution Result Object (see the module docstring)."""
        if run.collecting:
            raise RunError(f"another execute call is already waiting on run {run.run_id!r}")
        run.collecting = True
        console = _Console()
        status = "continued"
        exit_code: int | None = None
        options: dict[str, Any] | None = None
        deadline = trio.current_time() + flush_timeout
        try:
            while True:
                while run.records:
                    op, payload = run.records.popleft()
                    if op in _CONSOLE:
                        run.size -= _size(op, payload)
                        console.add(op, payload)
                        continue
                    if op in STEP_END:
                        status = op
                        if op == "waiting-input":
                            options = {"is_password": bool(payload.get("is_password", False))}
                        else:
                            code = payload.get("exit_code")
                            exit_code = code if isinstance(code, int) else None
                        break
                if run.dropped:
                    run.dropped = False
                    console.text("stderr", _DROPPED_NOTICE)
                if status != "continued":
                    break
                run.changed = trio.Event()
                with trio.move_on_at(deadline):
                    await run.changed.wait()
                    continue
                break
        finally:
            run.collecting = False
            run.touched = time.monotonic()
        run.step = status
        if status == "waiting-input":
            run.input_options = options
        if status == "finished":
            run.done = True
            self._runs.pop(run.run_id, None)
            self._retire(run.run_id)
            self._finished[run.run_id] = exit_code
            self._finished.move_to_end(run.run_id)
            if len(self._finished) > MAX_RUNS:
                self._finished.popitem(last=False)
        return {
            "runId": run.run_id,
            "status": status,
            "exitCode": exit_code,
            "console": console.items,
            "options": options,
        }
