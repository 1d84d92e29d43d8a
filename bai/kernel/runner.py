"""The kernel runner process: sockets, the run queue, and dispatch of every op.

``python -m bai.kernel [options]`` listens on the addresses of
:mod:`bai.kernel.protocol` and serves until SIGTERM or SIGINT.  Options (each
also read from the environment variable in brackets; the option wins):

``--input ADDR``          [BAI_KERNEL_INPUT]       default ``tcp://0.0.0.0:2000``
``--output ADDR``         [BAI_KERNEL_OUTPUT]      default ``tcp://0.0.0.0:2001``
``--pty-input ADDR``      [BAI_KERNEL_PTY_INPUT]   PTY mode when both PTY
``--pty-output ADDR``     [BAI_KERNEL_PTY_OUTPUT]  addresses are given
``--runtime NAME``        [BAI_KERNEL_RUNTIME]     ``python`` (default), ``shell`` or ``app``
``--runtime-path PATH``   [BAI_KERNEL_RUNTIME_PATH] the language runtime
                          (``ai.backend.runtime-path``), default: this Python
``--service-ports LABEL`` [BAI_KERNEL_SERVICE_PORTS] the ``ai.backend.service-ports`` label
``--service-defs DIR``    [BAI_KERNEL_SERVICE_DEFS] default ``/etc/backend.ai/service-defs``
``--bootstrap PATH``      [BAI_KERNEL_BOOTSTRAP]   a shell script to run before serving
``--bootstrap-timeout S`` [BAI_KERNEL_BOOTSTRAP_TIMEOUT] its time limit, default 240 s

Runtimes: ``python`` runs query mode in a persistent Python process and batch
mode in the shell; ``shell`` runs each query-mode snippet as a shell command
(no state kept between runs, the exit code is the command's) and batch mode
the same way; ``app`` runs no code (run ops finish with -1) and only manages
service ports.  Commands run in the working directory the runner was started
in (the kernel's ``/home/work``).

The bootstrap script runs first, before the runner answers anything (see
:mod:`bai.kernel.protocol`); when it fails the runner exits with
:data:`~bai.kernel.protocol.BOOTSTRAP_FAILED_EXIT` and says why on stderr.

Threads: the main thread waits for a signal; one thread receives and
dispatches inbound messages (never blocking on a run); one executes the run
queue; the outbox sends; services start in threads of their own.  Shutdown
interrupts the active run, ends the Python process, services and the shell,
flushes the outbox for up to a second and exits 0.  Processes that user code
left running in the background are not hunted down: the agent ends the
kernel's session (or cgroup), which holds them all.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections import deque

from bai.kernel import sockets
from bai.kernel.output import Outbox
from bai.kernel.protocol import (
    BOOTSTRAP_FAILED_EXIT,
    DEFAULT_BOOTSTRAP_TIMEOUT,
    DEFAULT_INPUT_ADDR,
    DEFAULT_OUTPUT_ADDR,
    FINISH_OP,
    MAX_MESSAGE_SIZE,
    Message,
    ProtocolError,
    decode_inbound,
    error_context,
)
from bai.kernel.runtimes.batch import ShellCommands, default_build_command, run_bootstrap
from bai.kernel.runtimes.python import PythonRuntime

# Every module a kernel start imports costs start-up time (typing alone ~3 ms),
# so typing is imported for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Final

    from bai.kernel.pty import PtyBridge
    from bai.kernel.service import ServiceManager

RUNTIMES: Final = ("python", "shell", "app")
DEFAULT_SERVICE_DEFS: Final = "/etc/backend.ai/service-defs"
_TERMINAL = re.compile(r"\s*%(resize|ping)\b(.*)", re.DOTALL)
#: Failed builds remembered for their exec step (oldest forgotten first).
_FAILED_BUILDS_KEPT = 256


class RunnerConfig:
    """Where the runner listens and what it runs (see the module docstring)."""

    __slots__ = (
        "bootstrap",
        "bootstrap_timeout",
        "input_addr",
        "output_addr",
        "pty_input_addr",
        "pty_output_addr",
        "runtime",
        "runtime_path",
        "service_defs",
        "service_ports",
    )

    def __init__(
        self,
        input_addr: str = DEFAULT_INPUT_ADDR,
        output_addr: str = DEFAULT_OUTPUT_ADDR,
        pty_input_addr: str | None = None,
        pty_output_addr: str | None = None,
        runtime: str = "python",
        runtime_path: str = sys.executable,
        service_ports: str = "",
        service_defs: str = DEFAULT_SERVICE_DEFS,
        bootstrap: str | None = None,
        bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
    ) -> None:
        self.input_addr = input_addr
        self.output_addr = output_addr
        self.pty_input_addr = pty_input_addr
        self.pty_output_addr = pty_output_addr
        self.runtime = runtime
        self.runtime_path = runtime_path
        self.service_ports = service_ports
        self.service_defs = service_defs
        self.bootstrap = bootstrap
        self.bootstrap_timeout = bootstrap_timeout

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunnerConfig) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"RunnerConfig({fields})"


#: Option -> (environment variable suffix, RunnerConfig field).
_OPTIONS: Final = {
    "--input": ("INPUT", "input_addr"),
    "--output": ("OUTPUT", "output_addr"),
    "--pty-input": ("PTY_INPUT", "pty_input_addr"),
    "--pty-output": ("PTY_OUTPUT", "pty_output_addr"),
    "--runtime": ("RUNTIME", "runtime"),
    "--runtime-path": ("RUNTIME_PATH", "runtime_path"),
    "--service-ports": ("SERVICE_PORTS", "service_ports"),
    "--service-defs": ("SERVICE_DEFS", "service_defs"),
    "--bootstrap": ("BOOTSTRAP", "bootstrap"),
    "--bootstrap-timeout": ("BOOTSTRAP_TIMEOUT", "bootstrap_timeout"),
}
_USAGE: Final = "usage: python -m bai.kernel " + " ".join(
    f"[{option} {env}]" for option, (env, _) in _OPTIONS.items()
)


def _usage_error(message: str) -> SystemExit:
    print(f"{_USAGE}\npython -m bai.kernel: error: {message}", file=sys.stderr)
    return SystemExit(2)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> RunnerConfig:
    """Build the configuration from the command line, falling back to the environment.

    Options take their value as the next argument or after ``=``; an empty
    environment variable counts as unset.  Bad usage prints the usage and the
    problem to stderr and raises ``SystemExit(2)``; ``-h``/``--help`` prints
    the usage and raises ``SystemExit(0)``.  (A hand-written parser, not
    argparse: importing argparse would add about 8 ms to every kernel start.)
    """
    values: dict[str, str] = {}
    for env, field in _OPTIONS.values():
        value = environ.get(f"BAI_KERNEL_{env}")
        if value:
            values[field] = value
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(f"{_USAGE}\n\nbai kernel runner; options default to $BAI_KERNEL_<NAME>.")
            raise SystemExit(0)
        option, has_value, value = arg.partition("=")
        if option not in _OPTIONS:
            raise _usage_error(f"unrecognized arguments: {arg}")
        if not has_value:
            if not args:
                raise _usage_error(f"argument {option}: expected one argument")
            value = args.pop(0)
        values[_OPTIONS[option][1]] = value
    runtime = values.get("runtime", "python")
    if runtime not in RUNTIMES:
        choices = ", ".join(repr(name) for name in RUNTIMES)
        raise _usage_error(
            f"argument --runtime: invalid choice: {runtime!r} (choose from {choices})"
        )
    if ("pty_input_addr" in values) != ("pty_output_addr" in values):
        raise _usage_error("--pty-input and --pty-output go together")
    timeout = DEFAULT_BOOTSTRAP_TIMEOUT
    if "bootstrap_timeout" in values:
        text = values.pop("bootstrap_timeout")
        try:
            timeout = float(text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise _usage_error(
                f"argument --bootstrap-timeout: not a positive number of seconds: {text!r}"
            )
    return RunnerConfig(**values, bootstrap_timeout=timeout)


class _Job:
    __slots__ = ("op", "run_id", "text")

    def __init__(self, op: str, run_id: str, text: str | None) -> None:
        self.op = op
        self.run_id = run_id
        self.text = text


class Runner:
    """One kernel's runner; :meth:`serve` runs it until :meth:`stop`."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self._pull = sockets.pull(config.input_addr, recv_max_size=MAX_MESSAGE_SIZE)
        try:
            self._push = sockets.push(config.output_addr, send_timeout_ms=500)
        except BaseException:
            self._pull.close()
            raise
        self._stopping = threading.Event()
        self.outbox = Outbox(self._send)
        self._python = (
            PythonRuntime(config.runtime_path, self.outbox) if config.runtime == "python" else None
        )
        self._shell = ShellCommands(self.outbox)
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._active: _Job | None = None
        self._failed_builds: dict[str, None] = {}
        self._services: ServiceManager | None = None
        self._pty: PtyBridge | None = None
        if config.pty_input_addr and config.pty_output_addr:
            from bai.kernel.pty import PtyBridge

            self._pty = PtyBridge(config.pty_input_addr, config.pty_output_addr)
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "code": self._on_code,
            "input": self._on_input,
            "continue": self._on_continue,
            "interrupt": self._on_interrupt,
            "complete": self._on_complete,
            "status": self._on_status,
            "start-service": self._on_start_service,
            "shutdown-service": self._on_shutdown_service,
            "get-apps": self._on_get_apps,
        }

    # -- life cycle -----------------------------------------------------------

    def serve(self) -> int:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT when run by :func:`main`); returns 0.

        Runs the bootstrap script first: when it fails, returns
        :data:`BOOTSTRAP_FAILED_EXIT` without serving.
        """
        if self.config.bootstrap:
            problem = run_bootstrap(
                self.config.bootstrap, self.config.bootstrap_timeout, self._stopping
            )
            if problem is not None or self._stopping.is_set():
                self._pull.close()
                self._push.close()
                if problem is None:
                    return 0
                print(f"bai.kernel: {problem}", file=sys.stderr, flush=True)
                return BOOTSTRAP_FAILED_EXIT
        self.outbox.start()
        if self._pty is not None:
            self._pty.start()
        threading.Thread(target=self._receive, name="receive", daemon=True).start()
        executor = threading.Thread(target=self._execute, name="execute", daemon=True)
        executor.start()
        while not self._stopping.wait(0.5):
            pass
        self._shutdown(executor)
        return 0

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down (safe from signal handlers and other threads)."""
        self._stopping.set()

    def _shutdown(self, executor: threading.Thread) -> None:
        self._pull.close()
        with self._cond:
            self._queue.clear()
            self._cond.notify_all()
        self._interrupt_active()
        self._shell.kill()
        if self._python is not None:
            self._python.close()
        executor.join(2.0)
        if self._services is not None:
            self._services.close()
        if self._pty is not None:
            self._pty.close()
        self.outbox.close(1.0)
        self._push.close()

    def _send(self, data: bytes) -> None:
        while True:
            try:
                self._push.send(data)
                return
            except sockets.Timeout:
                if self._stopping.is_set():
                    raise

    # -- inbound messages -----------------------------------------------------

    def _receive(self) -> None:
        while True:
            try:
                raw = self._pull.recv()
            except sockets.Closed:
                return
            try:
                message = decode_inbound(raw)
            except ProtocolError as exc:
                self._reject(raw, exc)
                continue
            try:
                self._dispatch(message)
            except Exception as exc:  # a bug must not take the kernel down with it
                self._error(message.op, message.payload, f"internal error: {exc!r}")

    def _reject(self, raw: bytes, exc: ProtocolError) -> None:
        op, run_id, request_id = error_context(raw)
        self.outbox.record(
            "error", {"op": op, "run_id": run_id, "request_id": request_id, "message": str(exc)}
        )
        if op in FINISH_OP and run_id is not None:
            self.outbox.record(FINISH_OP[op], {"run_id": run_id, "exit_code": -1})

    def _dispatch(self, message: Message) -> None:
        if message.op in ("clean", "build", "exec"):
            self._enqueue(_Job(message.op, message.payload["run_id"], message.payload["command"]))
        else:
            self._handlers[message.op](message.payload)

    def _error(self, op: str, payload: dict[str, Any], text: str) -> None:
        self.outbox.record(
            "error",
            {
                "op": op,
                "run_id": payload.get("run_id"),
                "request_id": payload.get("request_id"),
                "message": text,
            },
        )

    def _enqueue(self, job: _Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()

    def _on_code(self, payload: dict[str, Any]) -> None:
        match = _TERMINAL.match(payload["code"])
        if match is None:
            self._enqueue(_Job("code", payload["run_id"], payload["code"]))
            return
        run_id = payload["run_id"]
        code = 0
        if match.group(1) == "resize":
            code = self._resize(run_id, match.group(2).split())
        self.outbox.record("finished", {"run_id": run_id, "exit_code": code})

    def _resize(self, run_id: str, args: list[str]) -> int:
        if len(args) != 2 or not all(a.isdecimal() and 0 < int(a) < 65536 for a in args):
            self.outbox.write(run_id, "stderr", "usage: %resize ROWS COLS\n")
            return 1
        if self._pty is None:
            self.outbox.write(run_id, "stderr", "this kernel has no terminal to resize\n")
            return 1
        self._pty.resize(int(args[0]), int(args[1]))
        return 0

    def _on_input(self, payload: dict[str, Any]) -> None:
        run_id = payload["run_id"]
        if self._python is not None and self._python.feed_input(run_id, payload["text"]):
            self.outbox.new_window()
        else:
            self._error("input", payload, f"run {run_id!r} is not waiting for input")

    def _on_continue(self, payload: dict[str, Any]) -> None:
        with self._cond:
            active = self._active
        if active is not None and active.run_id == payload["run_id"]:
            self.outbox.new_window()

    def _on_interrupt(self, payload: dict[str, Any]) -> None:
        with self._cond:
            active = self._active
        if active is not None and payload["run_id"] in (None, active.run_id):
            self._interrupt_active()

    def _interrupt_active(self) -> None:
        with self._cond:
            active = self._active
        if active is None:
            return
        if active.op == "code" and self._python is not None:
            self._python.interrupt()
        else:
            self._shell.interrupt()

    def _on_complete(self, payload: dict[str, Any]) -> None:
        options = payload["options"]
        if "line" in options:
            line = options["line"]
            text = line[: options.get("col", len(line))]
        else:
            text = payload["code"]
        if self._python is not None:
            self._python.complete(payload["request_id"], text)
        else:
            self.outbox.record("completion", {"request_id": payload["request_id"], "matches": []})

    def _on_status(self, payload: dict[str, Any]) -> None:
        with self._cond:
            active = self._active
            queued = [job.run_id for job in self._queue]
        self.outbox.record(
            "status",
            {
                "request_id": payload["request_id"],
                "runtime": self.config.runtime,
                "pid": os.getpid(),
                "active_run": active.run_id if active else None,
                "waiting_input": bool(self._python and self._python.waiting_input),
                "queued": queued,
                "services": self._services.running if self._services else [],
                "pty": self._pty is not None,
            },
        )

    def _service_manager(self) -> ServiceManager:
        with self._cond:
            if self._services is None:
                from bai.kernel.service import ServiceManager

                self._services = ServiceManager(
                    self.outbox,
                    label=self.config.service_ports,
                    defs_dir=self.config.service_defs,
                    runtime_path=self.config.runtime_path,
                )
            return self._services

    def _on_start_service(self, payload: dict[str, Any]) -> None:
        services = self._service_manager()
        threading.Thread(
            target=services.start,
            args=(payload["request_id"], payload["name"]),
            kwargs={
                "ports": payload["ports"],
                "timeout": payload["timeout"],
                "envs": payload["envs"],
                "definition": payload["definition"],
            },
            name=f"start-{payload['name']}",
            daemon=True,
        ).start()

    def _on_shutdown_service(self, payload: dict[str, Any]) -> None:
        services = self._service_manager()
        threading.Thread(
            target=services.shutdown,
            args=(payload["request_id"], payload["name"]),
            name=f"stop-{payload['name']}",
            daemon=True,
        ).start()

    def _on_get_apps(self, payload: dict[str, Any]) -> None:
        apps = self._service_manager().apps()
        self.outbox.record("apps-result", {"request_id": payload["request_id"], "apps": apps})

    # -- the run queue ----------------------------------------------------------

    def _execute(self) -> None:
        if self._python is not None:
            self._python.start()
        while True:
            with self._cond:
                while not self._queue and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                job = self._active = self._queue.popleft()
            self.outbox.begin_run(job.run_id)
            try:
                code = self._run(job)
            except Exception as exc:  # a bug must not take the kernel down with it
                self.outbox.write(job.run_id, "stderr", f"\n[bai: internal error: {exc!r}]\n")
                code = -1
            with self._cond:
                self._active = None
            self.outbox.end_run()
            self.outbox.record(FINISH_OP[job.op], {"run_id": job.run_id, "exit_code": code})

    def _run(self, job: _Job) -> int:
        if self.config.runtime == "app":
            self.outbox.write(
                job.run_id, "stderr", "this kernel's runtime ('app') does not run code\n"
            )
            return -1
        command = job.text
        if job.op == "code":
            if self._python is not None:
                return self._python.run_query(job.run_id, command or "")
            return self._shell.run(job.run_id, command) if command else 0
        if job.op == "exec" and job.run_id in self._failed_builds:
            del self._failed_builds[job.run_id]
            return 127  # the spec's "command not found" for the exec step of a failed build
        if job.op == "clean" and command == "*":
            return 0  # the spec's default clean does nothing, to protect the user's files
        if job.op == "build" and command == "*":
            command = default_build_command(os.getcwd(), self.config.runtime_path)
            chosen = f"default build: {command}" if command else "default build: nothing to build"
            self.outbox.log("info", "bai.kernel", chosen)
        if not command:
            return 0
        code = self._shell.run(job.run_id, command)
        if job.op == "build" and code != 0:
            self._failed_builds[job.run_id] = None
            while len(self._failed_builds) > _FAILED_BUILDS_KEPT:
                del self._failed_builds[next(iter(self._failed_builds))]
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bai.kernel``."""
    config = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        runner = Runner(config)
    except sockets.NNGError as exc:
        print(f"bai.kernel: cannot listen: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: object) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return runner.serve()
